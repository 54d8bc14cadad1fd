//! Refusals as the agent sees them: the upstream's own 402 with the reason, recorded.

use super::{Answer, PaymentLayer};
use crate::agents::Agent;
use crate::body::Body;
use crate::core::Decline;
use crate::ledger::DeclineRecord;
use crate::metrics::Outcome;
use crate::pay::headers;
use crate::pay::purchase::{Destination, Refused};
use http::{HeaderMap, HeaderValue, Response};
use hyper::body::Incoming;

impl PaymentLayer {
    /// The upstream's own 402, streamed back, with our reason for not paying; counted, logged
    /// and recorded for the operator.
    pub(super) fn declined(
        &self,
        response: Response<Incoming>,
        agent: &Agent,
        to: Destination<'_>,
        path: &str,
        refused: Refused,
    ) -> Answer {
        self.declined_answer(Ok(response), agent, to, path, refused)
    }

    /// [`PaymentLayer::declined`], for an upstream answer already read (`Err`: rebuilt).
    pub(super) fn declined_answer(
        &self,
        response: Result<Response<Incoming>, Response<Body>>,
        agent: &Agent,
        to: Destination<'_>,
        path: &str,
        refused: Refused,
    ) -> Answer {
        let decline = &refused.decline;
        self.metrics.request(Outcome::Declined);
        self.metrics.decline(decline.code());
        tracing::info!(agent = %agent.name, host = %to.host, path, code = decline.code(), detail = %crate::core::text::shown(&decline.to_string(), crate::core::text::TEXT_MAX), "declined to pay");
        let record = DeclineRecord {
            agent: agent.name.to_string(),
            host: to.host_port(),
            path: path.to_string(),
            code: decline.code().to_string(),
            detail: decline.to_string(),
            amount: refused.amount,
            created_at: self.clock.now(),
            count: 1,
        };
        let ledger = self.ledger.clone();
        tokio::spawn(async move {
            if let Err(e) = ledger.record_decline(record).await {
                tracing::warn!(error = %e, "could not record a decline");
            }
        });
        let mut extra = HeaderMap::new();
        headers::declined(&mut extra, decline);
        if let Decline::PurchaseUnresolved { retry_after_secs } = decline {
            // The seller's 402 as it came, with when to come back for what was bought.
            extra.insert(
                http::header::RETRY_AFTER,
                HeaderValue::from(*retry_after_secs),
            );
        }
        if let Some(secs) = decline.retry_after() {
            // Over a rate limit: a 429 the agent's client knows to wait on, not the 402.
            drop(response);
            let mut own = crate::proxy::responses::text(
                http::StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                &decline.to_string(),
            );
            own.headers_mut()
                .insert(http::header::RETRY_AFTER, http::HeaderValue::from(secs));
            return Answer {
                response: Err(own),
                headers: extra,
            };
        }
        Answer {
            response,
            headers: extra,
        }
    }
}
