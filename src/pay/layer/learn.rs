//! What the layer learns from a replay: which paths a token covers, persisted; a token the
//! upstream refused is retired.

use super::PaymentLayer;
use crate::pay::tokens::Attached;
use http::Response;
use hyper::body::Incoming;

impl PaymentLayer {
    /// A speculative token that got through has proven itself on this path.
    pub(super) fn learn_if_worked(
        &self,
        attached: &Option<Attached>,
        response: &Response<Incoming>,
        path: &str,
    ) {
        if let Some(a) = attached {
            if !a.known && response.status().is_success() {
                self.learn(&a.token, path);
            }
        }
    }

    /// Learns where a token works, and tells the ledger what is new (off the request path).
    pub(super) fn learn(&self, token: &crate::pay::tokens::Token, path: &str) {
        for entry in token.learn(path) {
            self.persist_scope(token.payment_hash, entry);
        }
    }

    /// Records a learned scope entry in the ledger, off the request path.
    pub(super) fn persist_scope(&self, hash: crate::core::PaymentHash, entry: String) {
        let ledger = self.ledger.clone();
        tokio::spawn(async move {
            if let Err(e) = ledger.learn_scope(hash, &entry).await {
                tracing::debug!(error = %e, "could not record a learned scope");
            }
        });
    }

    /// Tells the ledger a token is no longer accepted (off the request path).
    pub(super) fn retire(&self, hash: crate::core::PaymentHash) {
        let ledger = self.ledger.clone();
        tokio::spawn(async move {
            if let Err(e) = ledger.retire_token(hash).await {
                tracing::debug!(error = %e, "could not retire a refused token");
            }
        });
    }
}
