//! An agent may ask the proxy, through the proxy, what it may still spend:
//! `GET http://l402-proxy.local/balance` (or https). It only ever sees its own budget.

use super::body::{full, Body};
use crate::agents::Agent;
use crate::budget::Budget;
use http::{header, HeaderValue, Response, StatusCode};

/// The reserved host name answered by the proxy itself.
pub const SELF_HOST: &str = "l402-proxy.local";

pub fn respond(budget: &Budget, agent: &Agent, path: &str) -> Response<Body> {
    let (status, body) = match path {
        "/" | "/balance" => match serde_json::to_vec_pretty(&budget.view(agent)) {
            Ok(json) => (StatusCode::OK, json),
            Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, b"{}".to_vec()),
        },
        _ => (
            StatusCode::NOT_FOUND,
            br#"{"error":"try /balance"}"#.to_vec(),
        ),
    };
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
