use super::binding::{self, Binding, BindingError};
use super::*;
use crate::core::PaymentHash;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use serde_json::json;
use sha2::{Digest, Sha256};

const EVM: &str = include_str!("../../../../tests/fixtures/third-party-402s/x402.headers");
const HTTP_VECTORS: &str = include_str!("../../../../tests/fixtures/x402-lnbtc/http_binding.json");
const MCP_VECTORS: &str = include_str!("../../../../tests/fixtures/x402-lnbtc/mcp_binding.json");
const CLIENT_VECTORS: &str = include_str!("../../../../tests/fixtures/x402-lnbtc/client.json");

/// The outcome the proxy takes where the spec leaves a case open (the x402 TypeScript SDK's).
fn open_outcome(question: &str) -> &'static str {
    match question {
        "http-port-zero" => "bind",
        "mcp-integer-range" => "bind_as_double",
        "client-expiry-boundary" => "reject",
        other => panic!("an open question the tests do not pin: {other}"),
    }
}

/// The expectation that applies: the case's own, or the pinned outcome of an open one.
fn expectation(expect: &Value) -> &Value {
    match expect["open"].as_str() {
        Some(q) => &expect["outcomes"][open_outcome(q)],
        None => expect,
    }
}

fn offers_for(h: &HeaderMap, request: Option<RequestHead<'_>>) -> Offers {
    let mut out = Offers::default();
    X402.offers(
        &ResponseHead {
            status: StatusCode::PAYMENT_REQUIRED,
            headers: h,
            request,
        },
        &mut out,
    );
    out
}

fn required(json: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        PAYMENT_REQUIRED,
        HeaderValue::from_str(&STANDARD.encode(json)).unwrap(),
    );
    h
}

fn http_binding(input: &Value) -> Result<Binding, BindingError> {
    let names: Vec<String> = serde_json::from_value(input["bound_headers"].clone()).unwrap();
    let lines: Vec<(String, String)> =
        serde_json::from_value(input["header_lines"].clone()).unwrap();
    let body = hex::decode(input["body_hex"].as_str().unwrap()).unwrap();
    binding::http(
        binding::HttpRequest {
            method: input["method"].as_str().unwrap(),
            url: input["url"].as_str().unwrap(),
            body: &body,
        },
        &names,
        |name| {
            lines
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_bytes())
                .collect()
        },
    )
}

/// The `params` of a vector's tool call (`params`, or `params_json` parsed strictly).
fn mcp_params(input: &Value) -> Result<Value, BindingError> {
    match input["params_json"].as_str() {
        Some(text) => serde_json::from_str(text).map_err(|e| BindingError(e.to_string())),
        None => Ok(input["params"].clone()),
    }
}

fn mcp_binding(input: &Value) -> Result<Binding, BindingError> {
    let names: Vec<String> = serde_json::from_value(input["bound_metadata"].clone()).unwrap();
    binding::mcp(
        input["server"].as_str().unwrap(),
        &mcp_params(input)?,
        &names,
    )
}

fn assert_binding(id: &str, got: Result<Binding, BindingError>, expect: &Value) {
    let expect = expectation(expect);
    match expect["request_hash"].as_str() {
        Some(hash) => {
            let got = got.unwrap_or_else(|e| panic!("{id}: {e}"));
            assert_eq!(got.hash_hex(), hash, "{id}");
            let canonical = expect["canonical_description"].as_str().unwrap();
            assert_eq!(got.canonical, canonical, "{id}");
            assert_eq!(hex::encode(Sha256::digest(canonical)), hash, "{id}");
        }
        None => {
            assert_eq!(
                expect["error"], "invalid_exact_lnbtc_request_binding",
                "{id}"
            );
            assert!(got.is_err(), "{id}: bound {got:?}");
        }
    }
}

#[test]
fn the_spec_http_binding_vectors_hash_as_published() {
    let cases: Vec<Value> = serde_json::from_str(HTTP_VECTORS).unwrap();
    assert_eq!(cases.len(), 32);
    for case in &cases {
        let id = case["id"].as_str().unwrap();
        assert_binding(id, http_binding(&case["input"]), &case["expect"]);
    }
}

#[test]
fn the_spec_mcp_binding_vectors_hash_as_published() {
    let cases: Vec<Value> = serde_json::from_str(MCP_VECTORS).unwrap();
    assert_eq!(cases.len(), 25);
    for case in &cases {
        let id = case["id"].as_str().unwrap();
        assert_binding(id, mcp_binding(&case["input"]), &case["expect"]);
    }
}

/// Applies the vectors' JSON-patch subset (`add`, `remove`, `replace`).
fn patched(base: &Value, ops: &Value) -> Value {
    let mut doc = base.clone();
    for op in ops.as_array().unwrap() {
        let path = op["path"].as_str().unwrap();
        let (parent, last) = path.rsplit_once('/').unwrap();
        let node = doc.pointer_mut(parent).unwrap().as_object_mut().unwrap();
        match op["op"].as_str().unwrap() {
            "remove" => {
                node.remove(last);
            }
            "add" | "replace" => {
                node.insert(last.to_string(), op["value"].clone());
            }
            other => panic!("patch op {other}"),
        }
    }
    doc
}

/// An intended request of the client vectors as the proxy sees it: method, URI, headers, body.
struct Sent {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Sent {
    fn of(intended: &Value) -> Sent {
        match intended["profile"].as_str().unwrap() {
            "http:1" => {
                let http = &intended["http"];
                let mut headers = HeaderMap::new();
                for line in http["header_lines"].as_array().unwrap() {
                    headers.append(
                        http::HeaderName::from_bytes(line[0].as_str().unwrap().as_bytes()).unwrap(),
                        HeaderValue::from_str(line[1].as_str().unwrap()).unwrap(),
                    );
                }
                Sent {
                    method: Method::from_bytes(http["method"].as_str().unwrap().as_bytes())
                        .unwrap(),
                    uri: http["url"].as_str().unwrap().parse().unwrap(),
                    headers,
                    body: hex::decode(http["body_hex"].as_str().unwrap()).unwrap(),
                }
            }
            _ => {
                let mcp = &intended["mcp"];
                let call = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": mcp["params"]});
                Sent {
                    method: Method::POST,
                    uri: mcp["server"].as_str().unwrap().parse().unwrap(),
                    headers: HeaderMap::new(),
                    body: call.to_string().into_bytes(),
                }
            }
        }
    }

    fn head(&self) -> RequestHead<'_> {
        RequestHead {
            method: &self.method,
            uri: &self.uri,
            headers: &self.headers,
            body: Some(&self.body),
        }
    }
}

/// The proxy's decline for each of the spec's client-side refusals.
fn decline_for(reason: &str) -> &'static str {
    match reason {
        "invalid_exact_lnbtc_request_mismatch" | "invalid_exact_lnbtc_request_binding" => {
            "offer-binding-mismatch"
        }
        "invalid_exact_lnbtc_invoice_expired" => "invoice-expired",
        "invalid_exact_lnbtc_invoice_created_in_future" => "invoice-from-the-future",
        other => panic!("no decline mapped for {other}"),
    }
}

#[test]
fn the_spec_client_vectors_pay_only_what_binds_to_the_request() {
    let vectors: Value = serde_json::from_str(CLIENT_VECTORS).unwrap();
    let cases = vectors["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 16);
    for case in cases {
        let id = case["id"].as_str().unwrap();
        assert_eq!(case["skew"], CREATION_SKEW_SECS, "{id}");
        let doc = patched(&vectors["base"], &case["patch"]);
        let sent = Sent::of(&doc["intended_request"]);
        let h = required(&doc["payment_required"].to_string());
        let out = offers_for(&h, Some(sent.head()));
        assert_eq!(out.payable.len(), 1, "{id}: {out:?}");
        let offer = &out.payable[0];
        let invoice = crate::invoice::decode(&offer.invoice).unwrap();
        let now = case["now"].as_u64().unwrap();
        let checked = offer.terms.check(&invoice, &sent.body, now);
        let expect = expectation(&case["expect"]);
        match (expect["error"].as_str(), expect["payer_called"].as_bool()) {
            (Some(reason), Some(false)) => {
                let e = checked.expect_err(id);
                assert_eq!(e.code(), decline_for(reason), "{id}: {e}");
            }
            // Refusals of the payer's result: the invoice is paid (the check passes) and the
            // wallet's answer is verified by the purchase path (preimage against the hash).
            (Some(_), _) => checked.unwrap_or_else(|e| panic!("{id}: {e}")),
            (None, _) => {
                checked.unwrap_or_else(|e| panic!("{id}: {e}"));
                let preimage = doc["payer_result"]["preimage"].as_str().unwrap();
                let proof = Preimage::verify_hex(preimage, &invoice.payment_hash).unwrap();
                let signature = offer.terms.credential(&proof).unwrap();
                assert_eq!(signature.header, PAYMENT_SIGNATURE);
                let json: Value =
                    serde_json::from_slice(&STANDARD.decode(signature.value.as_bytes()).unwrap())
                        .unwrap();
                assert_eq!(json["payload"], json!({"preimage": expect["preimage"]}));
                assert_eq!(json["accepted"], doc["payment_required"]["accepts"][0]);
                assert_eq!(json["x402Version"], 2);
            }
        }
    }
}

#[test]
fn an_evm_offer_is_not_payable_and_says_so() {
    let line = EVM
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("payment-required:"))
        .unwrap();
    let (_, value) = line.split_once(':').unwrap();
    let mut h = HeaderMap::new();
    h.insert(
        PAYMENT_REQUIRED,
        HeaderValue::from_str(value.trim()).unwrap(),
    );
    let out = offers_for(&h, None);
    assert!(out.payable.is_empty());
    assert!(out.unsupported[0].1.contains("eip155:84532"), "{out:?}");
}

/// A bound offer for `GET http://shop.test/item?x=1` (body empty, `accept` bound) and its
/// invoice, signed by key 4, dated 1_796_000_000, expiring after 60 s.
struct Fixture {
    payee: String,
    bolt11: String,
    hash: PaymentHash,
    raw: [u8; 32],
    request_hash: String,
    sent: Sent,
}

fn fixture(description_hash: Option<[u8; 32]>) -> Fixture {
    let mut headers = HeaderMap::new();
    headers.insert("accept", HeaderValue::from_static("text/plain"));
    let sent = Sent {
        method: Method::GET,
        uri: "http://shop.test:80/item?x=1".parse().unwrap(),
        headers,
        body: Vec::new(),
    };
    let bound = binding::http(
        binding::HttpRequest {
            method: "GET",
            url: "http://shop.test/item?x=1",
            body: b"",
        },
        &["accept".to_string()],
        |_| vec![b"text/plain".as_slice()],
    )
    .unwrap();
    let key = bitcoin::secp256k1::SecretKey::from_slice(&[4; 32]).unwrap();
    let payee = bitcoin::secp256k1::PublicKey::from_secret_key(
        &bitcoin::secp256k1::Secp256k1::signing_only(),
        &key,
    );
    let raw = [8u8; 32];
    let hash = PaymentHash(Sha256::digest(raw).into());
    let bolt11 = crate::demo::mint::mint_invoice_hashed(
        &key,
        Network::Bitcoin,
        21_000,
        hash.0,
        [6; 32],
        description_hash.unwrap_or(bound.hash),
        1_796_000_000,
        60,
    )
    .unwrap();
    Fixture {
        payee: payee.to_string(),
        bolt11,
        hash,
        raw,
        request_hash: bound.hash_hex(),
        sent,
    }
}

impl Fixture {
    fn entry(&self, network: &str, amount: &str, pay_to: &str, extra: Value) -> String {
        let mut e = json!({
            "paymentFlow": "upfront",
            "requestHash": self.request_hash,
            "requestBindingProfile": "http:1",
            "requestBindingParams": {"headers": ["accept"]},
            "invoice": self.bolt11,
        });
        for (k, v) in extra.as_object().unwrap() {
            e[k] = v.clone();
        }
        json!({"scheme": "exact", "network": network, "amount": amount, "asset": "BTC",
               "payTo": pay_to, "maxTimeoutSeconds": 60, "extra": e})
        .to_string()
    }

    fn check(&self, entry: &str) -> Result<(), Decline> {
        let h = required(&format!(
            r#"{{"x402Version":2,"resource":{{"url":"http://shop.test/item?x=1"}},"accepts":[{{"scheme":"exact","network":"eip155:8453","amount":"1"}},{entry}]}}"#
        ));
        let out = offers_for(&h, Some(self.sent.head()));
        let invoice = crate::invoice::decode(&self.bolt11).unwrap();
        out.payable[0]
            .terms
            .check(&invoice, &self.sent.body, 1_796_000_010)
    }
}

#[test]
fn a_bound_lnbtc_offer_is_checked_and_answered_byte_for_byte() {
    let f = fixture(None);
    let good = f.entry(
        "lnbtc:000000000019d6689c085ae165831e93",
        "21000",
        &f.payee,
        json!({}),
    );
    f.check(&good).unwrap();
    let h = required(&format!(
        r#"{{"x402Version":2,"resource":{{"url":"http://shop.test/item?x=1"}},"accepts":[{good}]}}"#
    ));
    let out = offers_for(&h, Some(f.sent.head()));
    let proof = Preimage::verify(f.raw, &f.hash).unwrap();
    let signature = out.payable[0].terms.credential(&proof).unwrap();
    let json = String::from_utf8(STANDARD.decode(signature.value.as_bytes()).unwrap()).unwrap();
    assert!(
        json.contains(&good),
        "the accepted entry is echoed byte for byte: {json}"
    );
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["payload"], json!({"preimage": hex::encode(f.raw)}));
    // The draft spellings pass the same checks, and keep sending the payment hash.
    for legacy in [
        "bip122:000000000019d6689c085ae165831e93",
        "lightning:mainnet",
    ] {
        let entry = f.entry(legacy, "21000", &f.payee, json!({}));
        f.check(&entry).unwrap();
        let h = required(&format!(
            r#"{{"x402Version":2,"resource":{{"url":"http://shop.test/item?x=1"}},"accepts":[{entry}]}}"#
        ));
        let out = offers_for(&h, Some(f.sent.head()));
        let sig = out.payable[0].terms.credential(&proof).unwrap();
        let v: Value =
            serde_json::from_slice(&STANDARD.decode(sig.value.as_bytes()).unwrap()).unwrap();
        assert_eq!(v["payload"]["paymentHash"], f.hash.to_hex());
    }
}

#[test]
fn an_offer_disagreeing_with_its_invoice_or_request_is_refused() {
    let f = fixture(None);
    let net = "lnbtc:000000000019d6689c085ae165831e93";
    let other_key = bitcoin::secp256k1::PublicKey::from_secret_key(
        &bitcoin::secp256k1::Secp256k1::signing_only(),
        &bitcoin::secp256k1::SecretKey::from_slice(&[5; 32]).unwrap(),
    )
    .to_string();
    for (entry, code, why) in [
        (
            f.entry(net, "20000", &f.payee, json!({})),
            "offer-invoice-mismatch",
            "asks",
        ),
        (
            f.entry(net, "21000", &other_key, json!({})),
            "offer-invoice-mismatch",
            "payTo",
        ),
        (
            f.entry(net, "21000", &f.payee.to_uppercase(), json!({})),
            "challenge-invalid",
            "payTo",
        ),
        (
            f.entry(
                "lnbtc:0f9188f13cb7b2c71f2a335e3a4fc328",
                "21000",
                &f.payee,
                json!({}),
            ),
            "offer-invoice-mismatch",
            "offer is for regtest",
        ),
        (
            f.entry(net, "021000", &f.payee, json!({})),
            "challenge-invalid",
            "amount",
        ),
        (
            f.entry(net, "21000", &f.payee, json!({"paymentFlow": "deferred"})),
            "challenge-invalid",
            "paymentFlow",
        ),
        (
            f.entry(
                net,
                "21000",
                &f.payee,
                json!({"requestHash": "00".repeat(32)}),
            ),
            "offer-binding-mismatch",
            "requestHash",
        ),
        (
            f.entry(
                net,
                "21000",
                &f.payee,
                json!({"requestBindingParams": {"headers": []}}),
            ),
            "offer-binding-mismatch",
            "requestHash",
        ),
        (
            f.entry(
                net,
                "21000",
                &f.payee,
                json!({"requestBindingParams": {"headers": [], "x": 1}}),
            ),
            "offer-binding-mismatch",
            "exactly",
        ),
        (
            f.entry(
                net,
                "21000",
                &f.payee,
                json!({"requestBindingProfile": "grpc:1"}),
            ),
            "offer-binding-mismatch",
            "unknown",
        ),
    ] {
        let e = f.check(&entry).unwrap_err();
        assert_eq!(e.code(), code, "{why}: {e}");
        assert!(e.to_string().contains(why), "{why}: {e}");
    }
    // The draft shape without any binding is not paid either.
    let bare = json!({"scheme": "exact", "network": "bip122:000000000019d6689c085ae165831e93",
        "amount": "21000", "asset": "BTC", "payTo": f.payee, "maxTimeoutSeconds": 60,
        "extra": {"paymentFlow": "upfront", "invoice": f.bolt11}})
    .to_string();
    let e = f.check(&bare).unwrap_err();
    assert_eq!(e.code(), "offer-binding-mismatch", "{e}");
    // An invoice committing to another request, under an offer stating this request's digest.
    let other = fixture(Some([9; 32]));
    let entry = other.entry(net, "21000", &other.payee, json!({}));
    let e = other.check(&entry).unwrap_err();
    assert_eq!(e.code(), "offer-binding-mismatch", "{e}");
    assert!(e.to_string().contains("description hash"), "{e}");
    // Without the request, nothing binds.
    let h = required(&format!(
        r#"{{"x402Version":2,"resource":{{"url":"http://shop.test/item?x=1"}},"accepts":[{}]}}"#,
        f.entry(net, "21000", &f.payee, json!({}))
    ));
    let out = offers_for(&h, None);
    let invoice = crate::invoice::decode(&f.bolt11).unwrap();
    let e = out.payable[0]
        .terms
        .check(&invoice, b"", 1_796_000_010)
        .unwrap_err();
    assert_eq!(e.code(), "offer-binding-mismatch");
}

#[test]
fn a_settlement_report_is_read_back() {
    let hash = PaymentHash([5; 32]);
    let mut h = HeaderMap::new();
    assert_eq!(settlement(&h), None);
    let report = json!({"success": true, "transaction": hash.to_hex(), "network": "lnbtc:000000000019d6689c085ae165831e93"});
    h.insert(
        PAYMENT_RESPONSE,
        HeaderValue::from_str(&STANDARD.encode(report.to_string())).unwrap(),
    );
    let s = settlement(&h).unwrap();
    assert!(s.confirms(&hash));
    assert!(!s.confirms(&PaymentHash([6; 32])));
    h.insert(
        PAYMENT_RESPONSE,
        HeaderValue::from_static("not base64 json"),
    );
    assert_eq!(settlement(&h), None);
}

#[test]
fn json_with_a_member_name_twice_is_outside_the_binding_model() {
    assert!(binding::parse_strict(br#"{"a":1,"b":{"c":[1,{"d":2}]}}"#).is_ok());
    for dup in [
        r#"{"a":1,"a":2}"#,
        r#"{"params":{"arguments":{"x":1,"x":1}}}"#,
        r#"[{"k":null,"k":null}]"#,
        r#"{"a":1} trailing"#,
    ] {
        assert!(binding::parse_strict(dup.as_bytes()).is_err(), "{dup}");
    }
    // A tool call whose arguments repeat a name is not one the proxy can bind (or pay).
    let body = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"x":1,"x":2}}}"#;
    let (m, u, h) = (
        Method::POST,
        "http://mcp.test/mcp".parse::<Uri>().unwrap(),
        HeaderMap::new(),
    );
    let head = RequestHead {
        method: &m,
        uri: &u,
        headers: &h,
        body: Some(body),
    };
    assert!(head.tool_call().is_none());
}
