use super::*;
use http::{HeaderMap, Method, Uri};
use serde_json::json;

fn call_body(id: Value) -> Vec<u8> {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": "weather", "arguments": {"city": "Oslo"}, "_meta": {"progressToken": 3}}})
    .to_string()
    .into_bytes()
}

fn head<'a>(method: &'a Method, uri: &'a Uri, h: &'a HeaderMap, body: &'a [u8]) -> RequestHead<'a> {
    RequestHead {
        method,
        uri,
        headers: h,
        body: Some(body),
    }
}

#[test]
fn only_a_single_tools_call_request_is_a_tool_call() {
    let (post, uri, h) = (
        Method::POST,
        "http://mcp.test/mcp".parse().unwrap(),
        HeaderMap::new(),
    );
    let body = call_body(json!(7));
    let call = ToolCall::of(&head(&post, &uri, &h, &body)).unwrap();
    assert_eq!((call.id, call.tool.as_str()), (json!(7), "weather"));
    for other in [
        json!([{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "x"}}]),
        json!({"jsonrpc": "2.0", "method": "tools/call", "params": {"name": "x"}}),
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
    ] {
        let b = other.to_string().into_bytes();
        assert!(
            ToolCall::of(&head(&post, &uri, &h, &b)).is_none(),
            "{other}"
        );
    }
    assert!(ToolCall::of(&head(&Method::GET, &uri, &h, &body)).is_none());
}

#[test]
fn the_answer_is_found_in_an_sse_stream_among_notifications() {
    let id = json!("a-1");
    let stream = "event: message\r\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{}}\r\n\r\nid: 2\ndata: {\"jsonrpc\":\"2.0\",\"id\":\"a-1\",\ndata: \"result\":{\"content\":[]}}\n\n";
    let m = sse_message(stream.as_bytes(), &id).unwrap();
    assert_eq!(m["result"]["content"], json!([]));
    // An event not yet complete is not read.
    assert!(sse_message(&stream.as_bytes()[..stream.len() - 1], &id).is_none());
    assert!(sse_message(stream.as_bytes(), &json!("other")).is_none());
}

#[test]
fn an_mpp_requirement_is_an_offer_for_the_tool_and_its_credential_goes_in_meta() {
    let (post, uri, h) = (
        Method::POST,
        "http://mcp.test/mcp".parse().unwrap(),
        HeaderMap::new(),
    );
    let body = call_body(json!(7));
    let request = head(&post, &uri, &h, &body);
    let call = ToolCall::of(&request).unwrap();
    let challenge = json!({"id": "ch-1", "realm": "mcp.test", "method": "lightning", "intent": "charge",
        "request": {"amount": "21", "currency": "sat", "methodDetails": {"invoice": "lnbc210n1x"}}});
    let message = json!({"jsonrpc": "2.0", "id": 7, "error": {"code": -32042, "message": "Payment Required",
        "data": {"httpStatus": 402, "challenges": [
            {"id": "x", "realm": "r", "method": "tempo", "intent": "charge", "request": {"amount": "1", "currency": "usd"}},
            challenge]}}});
    let (transport, offers) = requirement(&message, &request, &call).unwrap();
    assert_eq!(transport, Transport::Mpp);
    let offer = &offers.payable[0];
    assert_eq!(offer.invoice, "lnbc210n1x");
    assert_eq!(offer.terms.service(), Some("weather"));
    let hash = crate::core::PaymentHash(<sha2::Sha256 as sha2::Digest>::digest([1u8; 32]).into());
    let proof = Preimage::verify([1; 32], &hash).unwrap();
    let credential = offer.terms.credential(&proof).unwrap();
    assert_eq!(credential.header, META_CREDENTIAL);
    let replayed: Value = serde_json::from_slice(&rewrite(&body, &credential).unwrap()).unwrap();
    assert_eq!(replayed["id"], 7, "same id");
    assert_eq!(replayed["params"]["arguments"], json!({"city": "Oslo"}));
    assert_eq!(replayed["params"]["_meta"]["progressToken"], 3);
    let sent = &replayed["params"]["_meta"][MPP_CREDENTIAL];
    assert_eq!(
        sent["challenge"], challenge,
        "the challenge echoed unchanged"
    );
    assert_eq!(sent["payload"]["preimage"], hex::encode([1u8; 32]));
    // Other errors and ordinary results ask for nothing.
    for plain in [
        json!({"jsonrpc": "2.0", "id": 7, "error": {"code": -32602, "message": "bad"}}),
        json!({"jsonrpc": "2.0", "id": 7, "result": {"content": [{"type": "text", "text": "ok"}]}}),
        json!({"jsonrpc": "2.0", "id": 7, "result": {"isError": true, "content": [{"type": "text", "text": "boom"}]}}),
    ] {
        assert!(requirement(&plain, &request, &call).is_none(), "{plain}");
    }
}

#[test]
fn an_x402_requirement_in_content_text_is_read_and_evm_is_not_payable() {
    let (post, uri, h) = (
        Method::POST,
        "http://mcp.test/mcp".parse().unwrap(),
        HeaderMap::new(),
    );
    let body = call_body(json!(7));
    let request = head(&post, &uri, &h, &body);
    let call = ToolCall::of(&request).unwrap();
    let required = json!({"x402Version": 2, "accepts": [{"scheme": "exact", "network": "eip155:84532",
        "amount": "10000", "asset": "0x0", "payTo": "0x1", "maxTimeoutSeconds": 60}]});
    let message = json!({"jsonrpc": "2.0", "id": 7, "result": {"isError": true,
        "content": [{"type": "text", "text": required.to_string()}]}});
    let (transport, offers) = requirement(&message, &request, &call).unwrap();
    assert_eq!(transport, Transport::X402);
    assert!(offers.payable.is_empty());
    assert!(
        offers.unsupported[0].1.contains("eip155:84532"),
        "{offers:?}"
    );
}

#[test]
fn an_sse_stream_split_into_tiny_frames_is_scanned_once() {
    let id = json!(5);
    let stream = format!(
        "data: {}\r\n\r\n: comment\n\ndata: {}\n\n",
        json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"pad": "x".repeat(5000)}}),
        json!({"jsonrpc": "2.0", "id": 5, "result": {"content": []}})
    );
    let bytes = stream.as_bytes();
    let mut scan = SseScan::default();
    let mut found = None;
    for end in 1..=bytes.len() {
        if let Some(m) = scan.scan(&bytes[..end], &id) {
            found = Some((end, m));
            break;
        }
    }
    let (end, m) = found.unwrap();
    assert_eq!(end, bytes.len(), "found once its event is complete");
    assert_eq!(m["result"]["content"], json!([]));
}
