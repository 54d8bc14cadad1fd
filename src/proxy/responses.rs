//! Responses the proxy writes itself. Each says what went wrong in a header (for programs) and
//! in the body (for people).

use crate::body::{full, Body};
use http::{header, HeaderValue, Response, StatusCode};

/// Header naming why the proxy refused or failed a request.
pub const ERROR_HEADER: &str = "x-l402-proxy-error";

/// 407 with the `Proxy-Authenticate` challenge .NET and Java clients need before they send
/// credentials.
pub fn proxy_auth_required(reason: &str) -> Response<Body> {
    let mut r = text(
        StatusCode::PROXY_AUTHENTICATION_REQUIRED,
        "proxy-auth-required",
        reason,
    );
    r.headers_mut().insert(
        header::PROXY_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"l402-proxy\""),
    );
    // The connection closes after it: a peer without credentials cannot hold it open by
    // sending request after request (clients reconnect with credentials).
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// A response with a plain-text explanation and the machine-readable code in a header.
pub fn text(status: StatusCode, code: &'static str, detail: &str) -> Response<Body> {
    let mut r = Response::new(full(format!("l402-proxy: {detail}\n")));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(ERROR_HEADER, HeaderValue::from_static(code));
    r
}

/// The proxy's own answer to a request over a rate limit: 429 with `Retry-After` and the
/// decline's code and sentence (the request never went upstream).
pub fn rate_limited(
    shared: &super::Shared,
    agent: &str,
    decline: &crate::core::Decline,
) -> Response<Body> {
    shared.metrics.request(crate::metrics::Outcome::Declined);
    shared.metrics.decline(decline.code());
    // Recorded like every refusal (repeats fold into one row), off the request path.
    let record = crate::ledger::DeclineRecord {
        agent: agent.to_string(),
        host: String::new(),
        path: String::new(),
        code: decline.code().to_string(),
        detail: decline.to_string(),
        amount: None,
        created_at: shared.clock.now(),
        count: 1,
    };
    let ledger = shared.ledger.clone();
    tokio::spawn(async move {
        if let Err(e) = ledger.record_decline(record).await {
            tracing::debug!(error = %e, "could not record a decline");
        }
    });
    tracing::info!(%agent, code = decline.code(), detail = %decline, "request refused by a rate limit");
    let mut r = text(
        StatusCode::TOO_MANY_REQUESTS,
        "rate-limited",
        &decline.to_string(),
    );
    let h = r.headers_mut();
    crate::pay::headers::declined(h, decline);
    if let Some(secs) = decline.retry_after() {
        h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    r
}
