//! The seller's plain answers: text and typed bodies, the Fewsats-style offers 402, the event
//! stream, the echoing upgrade, and the query parameters they read.

use crate::body::{self, Body, BoxError};
use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::Duration;

/// Switches protocols (`Upgrade: echo`) and echoes every byte back: a paid WebSocket-like stream
/// without the framing, enough to prove upgrades cross the proxy.
pub(super) fn echo_upgrade(mut req: Request<Incoming>) -> Response<Body> {
    let wants = req
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"echo"));
    if !wants {
        return text(StatusCode::BAD_REQUEST, "send Upgrade: echo\n");
    }
    let on = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        if let Ok(upgraded) = on.await {
            let mut io = TokioIo::new(upgraded);
            let (mut r, mut w) = tokio::io::split(&mut io);
            let _ = tokio::io::copy(&mut r, &mut w).await;
        }
    });
    let mut r = Response::new(body::empty());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    r.headers_mut()
        .insert(header::UPGRADE, HeaderValue::from_static("echo"));
    r
}

pub(super) fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

pub(super) fn offers_402() -> Response<Body> {
    let body = r#"{"version":"0.2.2","payment_request_url":"http://127.0.0.1/pay","payment_context_token":"x","offers":[{"offer_id":"o1","amount":1,"currency":"USD"}]}"#;
    response(
        StatusCode::PAYMENT_REQUIRED,
        "application/json",
        Bytes::from_static(body.as_bytes()),
    )
}

pub(super) fn sse(query: &str, gate: Option<Arc<tokio::sync::Semaphore>>) -> Response<Body> {
    let n: u32 = query_param(query, "n")
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .min(1000);
    let ms: u64 = query_param(query, "ms")
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
        .min(10_000);
    let events = futures_util::stream::unfold(0u32, move |i| {
        let gate = gate.clone();
        async move {
            if i >= n {
                return None;
            }
            if i > 0 {
                match gate {
                    Some(gate) => gate.acquire().await.ok()?.forget(),
                    None => tokio::time::sleep(Duration::from_millis(ms)).await,
                }
            }
            let frame = Frame::data(Bytes::from(format!("id: {i}\ndata: event {i}\n\n")));
            Some((Ok::<_, BoxError>(frame), i + 1))
        }
    });
    let mut r = Response::new(StreamBody::new(events).boxed());
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

pub(super) fn text(status: StatusCode, body: &str) -> Response<Body> {
    response(
        status,
        "text/plain; charset=utf-8",
        Bytes::from(body.to_string()),
    )
}

pub(super) fn response(
    status: StatusCode,
    content_type: &'static str,
    bytes: Bytes,
) -> Response<Body> {
    let mut r = Response::new(body::full(bytes));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}
