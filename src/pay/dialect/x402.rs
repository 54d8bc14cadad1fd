//! x402 (v2) on Lightning: `PAYMENT-REQUIRED: base64(JSON {x402Version, resource, accepts:
//! [{scheme, network, amount, asset, payTo, maxTimeoutSeconds, extra}]})`. The offer a
//! Lightning wallet pays is the merged `exact` scheme on `lnbtc:<genesis>`
//! (x402-foundation/x402 `specs/schemes/exact/scheme_exact_lnbtc.md`): the amount a decimal
//! string of msat, `payTo` the invoice's signer, the invoice's expiry equal to
//! `maxTimeoutSeconds`, `extra.paymentFlow: "upfront"`, `extra.assetTransferMethod` absent or
//! `"bolt11"`, and a request binding: the invoice's description hash and `extra.requestHash`
//! must both equal SHA-256(JCS(binding)) of the binding this proxy builds from the agent's own
//! request ([`binding`]). The earlier spellings of the network (`bip122:<genesis>`, Alby's
//! `lightning:<network>`) are paid only when they pass the same checks.
//!
//! The answer is `PAYMENT-SIGNATURE: base64(JSON {x402Version, accepted: <the chosen entry,
//! byte for byte>, payload: {preimage}})`, single-use; the server's `PAYMENT-RESPONSE` is read
//! back by [`settlement`]. Offers on EVM or Solana networks are not payable from a Lightning
//! wallet: the 402 passes through, with a decline saying so.

pub mod binding;

use super::{
    Credential, Dialect, Offer, Offers, RequestHead, ResponseHead, StoredCredential, Terms,
};
use crate::core::{Decline, Msat, PaymentHash, Preimage};
use crate::invoice::{Invoice, Network};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http::{HeaderMap, HeaderName};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

/// The header carrying the offers (v2).
pub const PAYMENT_REQUIRED: HeaderName = HeaderName::from_static("payment-required");
/// The header carrying the proof (v2).
pub const PAYMENT_SIGNATURE: HeaderName = HeaderName::from_static("payment-signature");
/// The header carrying the server's settlement report (v2).
pub const PAYMENT_RESPONSE: HeaderName = HeaderName::from_static("payment-response");
/// Longest `PAYMENT-REQUIRED` (or `PAYMENT-RESPONSE`) read.
const MAX_HEADER: usize = 16 * 1024;
/// How far in the future an invoice's creation time may lie (the spec's default).
pub const CREATION_SKEW_SECS: u64 = 60;

/// The x402 dialect.
#[derive(Debug, Clone, Copy, Default)]
pub struct X402;

#[derive(Deserialize)]
struct Required<'a> {
    #[serde(rename = "x402Version")]
    version: u32,
    #[serde(default)]
    resource: Option<Value>,
    #[serde(borrow)]
    accepts: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
struct Requirement {
    scheme: String,
    network: String,
    #[serde(default)]
    amount: Option<Value>,
    #[serde(default)]
    asset: Option<Value>,
    #[serde(rename = "payTo", default)]
    pay_to: Option<Value>,
    #[serde(rename = "maxTimeoutSeconds", default)]
    max_timeout: Option<Value>,
    #[serde(default)]
    extra: Option<Value>,
}

/// How an offer names its Lightning network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spelling {
    /// The merged `lnbtc:` namespace.
    Lnbtc,
    /// The draft `bip122:` / `lightning:` spellings.
    Legacy,
}

/// The Lightning network an x402 network id names, if it names one. `lnbtc:` takes the
/// BIP-122 reference (the first 32 hex characters of the genesis hash); the spec lists mainnet
/// and testnet, signet and regtest follow the same convention.
fn lightning_network(network: &str) -> Option<(Network, Spelling)> {
    use Spelling::*;
    let n = network.to_ascii_lowercase();
    let (namespace, reference) = n.split_once(':')?;
    let by_genesis = |r: &str| match r {
        "000000000019d6689c085ae165831e93" => Some(Network::Bitcoin),
        "000000000933ea01ad0ee984209779ba" => Some(Network::Testnet),
        "00000008819873e925422c1ff0f99f7c" => Some(Network::Signet),
        "0f9188f13cb7b2c71f2a335e3a4fc328" => Some(Network::Regtest),
        _ => None,
    };
    match namespace {
        // The spec's identifiers are lowercase: another case is not the merged scheme.
        "lnbtc" if network.starts_with("lnbtc:") => by_genesis(reference).map(|n| (n, Lnbtc)),
        "bip122" => by_genesis(reference).map(|n| (n, Legacy)),
        "lightning" => match reference {
            "mainnet" | "bitcoin" => Some((Network::Bitcoin, Legacy)),
            "testnet" => Some((Network::Testnet, Legacy)),
            "signet" => Some((Network::Signet, Legacy)),
            "regtest" => Some((Network::Regtest, Legacy)),
            _ => None,
        },
        _ => None,
    }
}

impl Dialect for X402 {
    fn name(&self) -> &'static str {
        "x402"
    }

    fn offers(&self, response: &ResponseHead<'_>, out: &mut Offers) {
        let Some(header) = response.headers.get(&PAYMENT_REQUIRED) else {
            return;
        };
        if header.len() > MAX_HEADER {
            out.too_large(format!("a PAYMENT-REQUIRED header over {MAX_HEADER} bytes"));
            return;
        }
        let Some(decoded) = super::decode_base64_any(header.to_str().unwrap_or("").trim()) else {
            out.unsupported
                .push(("x402", "PAYMENT-REQUIRED is not base64".to_string()));
            return;
        };
        required_offers(&decoded, response.request.as_ref(), out);
    }

    fn restore(&self, _stored: &StoredCredential, _proof: &Preimage) -> Option<Credential> {
        None
    }
}

/// The payable offer of a `PaymentRequired` JSON document (from `PAYMENT-REQUIRED`, or from an
/// MCP tool result), bound against `request`; or why none is payable.
pub fn required_offers(json: &[u8], request: Option<&RequestHead<'_>>, out: &mut Offers) {
    let Ok(required) = serde_json::from_slice::<Required<'_>>(json) else {
        out.unsupported
            .push(("x402", "PaymentRequired is not x402 JSON".to_string()));
        return;
    };
    let resource_url = required
        .resource
        .as_ref()
        .and_then(|r| r["url"].as_str())
        .map(str::to_string);
    let mut networks = Vec::new();
    for raw in required.accepts {
        let Ok(req) = serde_json::from_str::<Requirement>(raw.get()) else {
            continue;
        };
        let Some((network, spelling)) = lightning_network(&req.network) else {
            networks.push(req.network.clone());
            continue;
        };
        if req.scheme != "exact" {
            networks.push(format!("{} ({})", req.network, req.scheme));
            continue;
        }
        let extra = req.extra.as_ref().and_then(Value::as_object);
        let method = extra.and_then(|e| e.get("assetTransferMethod"));
        if method.is_some_and(|m| m != "bolt11") {
            networks.push(format!(
                "{} (assetTransferMethod {}: only bolt11 is paid)",
                req.network,
                method.map(Value::to_string).unwrap_or_default()
            ));
            continue;
        }
        let invoice = extra
            .and_then(|e| e.get("invoice"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic()))
            .map(str::to_string);
        let Some(invoice) = invoice else {
            networks.push(format!("{} (no invoice)", req.network));
            continue;
        };
        let terms = X402Terms {
            version: required.version,
            accepted: raw.get().to_string(),
            network,
            spelling,
            offer: parse_offer(&req),
            binding: bind(&req, resource_url.as_deref(), request),
        };
        out.payable.push(Offer {
            dialect: "x402",
            invoice,
            terms: Box::new(terms),
        });
        return;
    }
    if !networks.is_empty() {
        out.unsupported.push((
            "x402",
            format!(
                "x402 offers on {} are not payable from a Lightning wallet",
                networks.join(", ")
            ),
        ));
    }
}

/// The payment terms of an offer, validated: amount, signer, timeout.
#[derive(Debug)]
struct OfferTerms {
    amount: Msat,
    pay_to: [u8; 33],
    max_timeout: u64,
}

/// Reads the payment terms, or says what is malformed (the spec's client step 1 and 2).
fn parse_offer(req: &Requirement) -> Result<OfferTerms, String> {
    if req.asset.as_ref().and_then(Value::as_str) != Some("BTC") {
        return Err("asset is not \"BTC\"".into());
    }
    let amount = match &req.amount {
        Some(Value::String(s))
            if !s.is_empty() && !s.starts_with('0') && s.bytes().all(|b| b.is_ascii_digit()) =>
        {
            s.parse::<u64>()
                .map_err(|_| format!("amount {s} is out of range"))?
        }
        other => {
            return Err(format!(
                "amount {} is not a positive decimal string of msat",
                other.as_ref().map(Value::to_string).unwrap_or_default()
            ))
        }
    };
    let pay_to = req.pay_to.as_ref().and_then(Value::as_str).unwrap_or("");
    let key: Option<[u8; 33]> = (pay_to.len() == 66
        && pay_to
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
    .then(|| hex::decode(pay_to).ok())
    .flatten()
    .and_then(|k| k.try_into().ok())
    .filter(|k: &[u8; 33]| bitcoin::secp256k1::PublicKey::from_slice(k).is_ok());
    let Some(pay_to) = key else {
        return Err(format!(
            "payTo {pay_to:?} is not a compressed public key in lowercase hex"
        ));
    };
    let max_timeout = req
        .max_timeout
        .as_ref()
        .and_then(Value::as_u64)
        .filter(|t| *t > 0)
        .ok_or("maxTimeoutSeconds is not a positive integer")?;
    let flow = req.extra.as_ref().and_then(|e| e.get("paymentFlow"));
    if flow.and_then(Value::as_str) != Some("upfront") {
        return Err("extra.paymentFlow is not \"upfront\"".into());
    }
    Ok(OfferTerms {
        amount: Msat::new(amount),
        pay_to,
        max_timeout,
    })
}

/// What the proxy computed from the agent's request, against what the offer states.
#[derive(Debug)]
struct Bound {
    /// The digest of the binding built from the agent's request.
    hash: [u8; 32],
    /// The profile used (for messages).
    profile: &'static str,
}

/// The request binding of an offer: the digest this request must carry, or why the offer does
/// not bind this request (a missing or malformed binding, a profile for another kind of
/// request, a `requestHash` or `resource.url` for another request). Never built from what the
/// server echoes: the server's fields are only compared.
fn bind(
    req: &Requirement,
    resource_url: Option<&str>,
    request: Option<&RequestHead<'_>>,
) -> Result<Bound, String> {
    let extra = req.extra.as_ref().and_then(Value::as_object);
    let field = |name: &str| extra.and_then(|e| e.get(name));
    let stated = field("requestHash")
        .and_then(Value::as_str)
        .filter(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .ok_or("the offer carries no requestHash (64 lowercase hex)")?;
    let profile = field("requestBindingProfile")
        .and_then(Value::as_str)
        .ok_or("the offer names no requestBindingProfile")?;
    let params = field("requestBindingParams")
        .and_then(Value::as_object)
        .ok_or("the offer carries no requestBindingParams object")?;
    let request = request.ok_or("the request to bind is unknown")?;
    let names = |key: &str| -> Result<Vec<String>, String> {
        params
            .get(key)
            .and_then(Value::as_array)
            .and_then(|a| {
                a.iter()
                    .map(|v| v.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
            })
            .ok_or(format!(
                "requestBindingParams.{key} is not an array of names"
            ))
    };
    let url = request.target_uri();
    let tool_call = request.tool_call();
    let bound = match profile {
        "http:1" => {
            if tool_call.is_some() {
                return Err(
                    "the offer binds with http:1, but the request is an MCP tool call (mcp:1)"
                        .into(),
                );
            }
            if params.len() != 1 {
                return Err("http:1 requestBindingParams must hold exactly `headers`".into());
            }
            let headers = names("headers")?;
            if resource_url != Some(url.as_str()) {
                return Err(format!(
                    "resource.url {:?} is not the request's URL {url:?}",
                    resource_url.unwrap_or("")
                ));
            }
            let body = request.body.unwrap_or_default();
            let lines = |name: &str| {
                request
                    .headers
                    .get_all(name)
                    .iter()
                    .map(|v| v.as_bytes())
                    .collect::<Vec<_>>()
            };
            binding::http(
                binding::HttpRequest {
                    method: request.method.as_str(),
                    url: &url,
                    body,
                },
                &headers,
                lines,
            )
            .map_err(|e| e.to_string())?
        }
        "mcp:1" => {
            let Some(params_of_call) = tool_call else {
                return Err(
                    "the offer binds with mcp:1, but the request is not an MCP tool call".into(),
                );
            };
            if params.len() != 2 {
                return Err(
                    "mcp:1 requestBindingParams must hold exactly `server` and `metadata`".into(),
                );
            }
            let server = params
                .get("server")
                .and_then(Value::as_str)
                .ok_or("requestBindingParams.server is not a string")?;
            // The server identity is the endpoint the agent called, never the echo.
            if server != url {
                return Err(format!(
                    "requestBindingParams.server {server:?} is not the MCP endpoint called ({url:?})"
                ));
            }
            let metadata = names("metadata")?;
            binding::mcp(&url, &params_of_call, &metadata).map_err(|e| e.to_string())?
        }
        other => return Err(format!("unknown requestBindingProfile {other:?}")),
    };
    if bound.hash_hex() != stated {
        return Err(format!(
            "requestHash {stated} is not the {profile} digest of this request ({})",
            bound.hash_hex()
        ));
    }
    Ok(Bound {
        hash: bound.hash,
        profile: if profile == "http:1" {
            "http:1"
        } else {
            "mcp:1"
        },
    })
}

/// The `PAYMENT-SIGNATURE` JSON: the accepted entry echoed byte for byte.
#[derive(serde::Serialize)]
struct Signature<'a> {
    #[serde(rename = "x402Version")]
    version: u32,
    accepted: &'a RawValue,
    payload: Proof,
}

#[derive(serde::Serialize)]
struct Proof {
    preimage: String,
    /// Sent only on the draft spellings, whose servers read it.
    #[serde(rename = "paymentHash", skip_serializing_if = "Option::is_none")]
    payment_hash: Option<String>,
}

/// A payable Lightning `exact` offer, with what it must agree with.
#[derive(Debug)]
struct X402Terms {
    version: u32,
    /// The chosen `accepts` entry exactly as received.
    accepted: String,
    network: Network,
    spelling: Spelling,
    /// The payment terms, or what is malformed about them.
    offer: Result<OfferTerms, String>,
    /// The request binding, or why it does not bind this request.
    binding: Result<Bound, String>,
}

impl Terms for X402Terms {
    fn check(&self, invoice: &Invoice, _body: &[u8], now: u64) -> Result<(), Decline> {
        let mismatch = |what: String| Decline::OfferMismatch {
            dialect: "x402",
            what,
        };
        let offer = self
            .offer
            .as_ref()
            .map_err(|reason| Decline::ChallengeInvalid {
                reason: format!("x402 lnbtc offer: {reason}"),
            })?;
        let bound = self
            .binding
            .as_ref()
            .map_err(|what| Decline::OfferBindingMismatch {
                dialect: "x402",
                what: what.clone(),
            })?;
        if invoice.description_hash != Some(bound.hash) {
            return Err(Decline::OfferBindingMismatch {
                dialect: "x402",
                what: format!(
                    "the invoice's description hash is not the {} digest of this request",
                    bound.profile
                ),
            });
        }
        if invoice.payee != offer.pay_to {
            return Err(mismatch(
                "the invoice is not signed by the offer's payTo node".to_string(),
            ));
        }
        if invoice.network != self.network {
            return Err(mismatch(format!(
                "the offer is for {}, the invoice for {}",
                self.network, invoice.network
            )));
        }
        if invoice.amount != Some(offer.amount) {
            return Err(mismatch(format!(
                "the offer asks {}, the invoice {}",
                offer.amount,
                invoice
                    .amount
                    .map_or("no amount".to_string(), |a| a.to_string())
            )));
        }
        if invoice.expiry_secs != offer.max_timeout {
            return Err(mismatch(format!(
                "the invoice expires after {} s, the offer's maxTimeoutSeconds is {}",
                invoice.expiry_secs, offer.max_timeout
            )));
        }
        if invoice.timestamp > now.saturating_add(CREATION_SKEW_SECS) {
            return Err(Decline::InvoiceFromTheFuture {
                timestamp: invoice.timestamp,
            });
        }
        if invoice.is_expired_at(now) {
            return Err(Decline::InvoiceExpired {
                at: invoice.expires_at(),
            });
        }
        Ok(())
    }

    fn service(&self) -> Option<&str> {
        None
    }

    fn expires_at(&self) -> Option<u64> {
        None
    }

    fn reusable(&self) -> bool {
        false
    }

    fn credential(&self, proof: &Preimage) -> Result<Credential, Decline> {
        let accepted = RawValue::from_string(self.accepted.clone()).map_err(|e| {
            Decline::ChallengeInvalid {
                reason: e.to_string(),
            }
        })?;
        let signature = Signature {
            version: self.version,
            accepted: &accepted,
            payload: Proof {
                preimage: proof.to_hex(),
                payment_hash: (self.spelling == Spelling::Legacy).then(|| proof.hash().to_hex()),
            },
        };
        let json = serde_json::to_string(&signature).map_err(|e| Decline::ChallengeInvalid {
            reason: e.to_string(),
        })?;
        Credential::new(PAYMENT_SIGNATURE, &STANDARD.encode(json))
    }

    fn stored(&self) -> Option<StoredCredential> {
        None
    }
}

/// A server's `PAYMENT-RESPONSE` (x402 v2 `SettlementResponse`), as read back after the paid
/// replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    /// `success`.
    pub success: bool,
    /// `transaction`: for Lightning, the invoice's payment hash in lowercase hex.
    pub transaction: String,
    /// `network`.
    pub network: String,
    /// `errorReason`, when the server gives one.
    pub error_reason: Option<String>,
}

impl Settlement {
    /// Whether it reports success for the payment `hash` (its `transaction`).
    pub fn confirms(&self, hash: &PaymentHash) -> bool {
        self.success && self.transaction == hash.to_hex()
    }
}

/// Reads `PAYMENT-RESPONSE` from a response's headers; `None` when absent or not the x402
/// JSON (a hostile server's header never fails the request: it is only reported).
pub fn settlement(headers: &HeaderMap) -> Option<Settlement> {
    let value = headers.get(&PAYMENT_RESPONSE)?;
    if value.len() > MAX_HEADER {
        return None;
    }
    let decoded = super::decode_base64_any(value.to_str().ok()?.trim())?;
    let json: Value = serde_json::from_slice(&decoded).ok()?;
    let text = |k: &str| json.get(k).and_then(Value::as_str).map(str::to_string);
    Some(Settlement {
        success: json.get("success")?.as_bool()?,
        transaction: text("transaction").unwrap_or_default(),
        network: text("network").unwrap_or_default(),
        error_reason: text("errorReason"),
    })
}

#[cfg(test)]
mod tests;
