//! MPP, the `Payment` HTTP authentication scheme (draft-ryan-httpauth-payment), with the
//! Lightning `charge` intent: `WWW-Authenticate: Payment id=…, realm=…, method="lightning",
//! intent="charge", request=<base64url JSON {amount, currency, methodDetails: {invoice,
//! paymentHash?, network?}}>` (optional `expires`, `digest`, `opaque`, `description`; unknown
//! parameters ignored). The credential echoes the challenge and carries the preimage:
//! `Authorization: Payment <base64url(JSON {challenge, payload: {preimage}})>`. A charge
//! credential pays for one request: it is never cached, and its preimage is never stored.
//! The `session` intent is not paid yet (it passes through, with a decline saying so).

use super::auth_params::{self, AuthChallenge};
use super::{Credential, Dialect, Offer, Offers, ResponseHead, StoredCredential, Terms};
use crate::core::{Decline, Msat, Preimage};
use crate::invoice::{Invoice, Network};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::header;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Longest challenge read (real ones are 1–4 KB): anything longer is refused unpaid.
const MAX_CHALLENGE: usize = 16 * 1024;

/// The MPP `Payment` dialect.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mpp;

impl Dialect for Mpp {
    fn name(&self) -> &'static str {
        "payment"
    }

    fn offers(&self, response: &ResponseHead<'_>, out: &mut Offers) {
        let values = response.headers.get_all(header::WWW_AUTHENTICATE);
        let mut unsupported = None;
        for c in auth_params::challenges(values.iter().map(|v| v.as_bytes()), "Payment") {
            match MppTerms::read(&c) {
                Ok(terms) => {
                    out.payable.push(Offer {
                        dialect: self.name(),
                        invoice: terms.invoice.clone(),
                        terms: Box::new(terms),
                    });
                    // One offer per dialect: the first payable `Payment` challenge.
                    return;
                }
                Err(reason) => unsupported = unsupported.or(Some(reason)),
            }
        }
        if let Some(reason) = unsupported {
            out.unsupported.push(("payment", reason));
        }
    }

    fn restore(&self, _stored: &StoredCredential, _proof: &Preimage) -> Option<Credential> {
        // Charge credentials are single-use: nothing is ever stored to restore.
        None
    }
}

/// A readable `Payment` challenge for a Lightning charge.
#[derive(Debug)]
struct MppTerms {
    /// Every parameter to echo, as received (the `request` string byte for byte).
    echo: Map<String, Value>,
    invoice: String,
    /// `request.amount`, in sats.
    amount_sats: u64,
    payment_hash: Option<String>,
    network: Option<String>,
    /// `digest`: what the request body must hash to (RFC 9530 `sha-256=:<base64>:`).
    digest: Option<String>,
    /// `expires`, unix seconds.
    expires: Option<i64>,
}

impl MppTerms {
    /// Reads a challenge, or says why it cannot be paid.
    fn read(c: &AuthChallenge) -> Result<MppTerms, String> {
        let size: usize = c.params.iter().map(|(k, v)| k.len() + v.len()).sum();
        if size > MAX_CHALLENGE {
            return Err(format!(
                "a Payment challenge of {size} bytes, over {MAX_CHALLENGE}"
            ));
        }
        let required = |name: &str| {
            c.param(name)
                .ok_or_else(|| format!("the Payment challenge lacks its `{name}` parameter"))
        };
        let method = required("method")?;
        let intent = required("intent")?;
        required("id")?;
        required("realm")?;
        let request = required("request")?;
        if !method.eq_ignore_ascii_case("lightning") || !intent.eq_ignore_ascii_case("charge") {
            // Said by `from_request`, before the request is decoded.
            return MppTerms::from_request(method, intent, &Value::Null);
        }
        let decoded = URL_SAFE_NO_PAD
            .decode(request.trim_end_matches('='))
            .map_err(|_| "the Payment request is not base64url".to_string())?;
        let json: Value = serde_json::from_slice(&decoded)
            .map_err(|_| "the Payment request is not JSON".to_string())?;
        let mut terms = MppTerms::from_request(method, intent, &json)?;
        for (k, v) in &c.params {
            terms
                .echo
                .entry(k.clone())
                .or_insert_with(|| Value::String(v.clone()));
        }
        terms.digest = c.param("digest").map(str::to_string);
        terms.expires = c.param("expires").and_then(rfc3339);
        Ok(terms)
    }

    /// The terms of a Lightning charge `request` (decoded), with nothing to echo yet.
    fn from_request(method: &str, intent: &str, json: &Value) -> Result<MppTerms, String> {
        if !method.eq_ignore_ascii_case("lightning") {
            return Err(format!(
                "MPP method {method:?} is not payable from a Lightning wallet"
            ));
        }
        if !intent.eq_ignore_ascii_case("charge") {
            return Err(format!(
                "MPP intent {intent:?} is not paid yet (only charge); the 402 passes through"
            ));
        }
        let currency = json["currency"].as_str().unwrap_or("");
        if !currency.eq_ignore_ascii_case("sat") {
            return Err(format!(
                "the Payment request's currency is {currency:?}, not sat"
            ));
        }
        let amount_sats = match &json["amount"] {
            Value::String(s) => s.trim().parse::<u64>().ok(),
            Value::Number(n) => n.as_u64(),
            _ => None,
        }
        .ok_or_else(|| "the Payment request has no whole amount in sats".to_string())?;
        let details = &json["methodDetails"];
        let invoice = details["invoice"]
            .as_str()
            .filter(|s| s.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or_else(|| "the Payment request names no invoice".to_string())?
            .to_string();
        Ok(MppTerms {
            echo: Map::new(),
            invoice,
            amount_sats,
            payment_hash: details["paymentHash"].as_str().map(str::to_ascii_lowercase),
            network: details["network"].as_str().map(str::to_ascii_lowercase),
            digest: None,
            expires: None,
        })
    }
}

/// The payable offer of one challenge of an MPP JSON-RPC `-32042` error (the MCP transport,
/// draft-payment-transport-mcp-00): the challenge is a native JSON object (`request` too), echoed
/// unchanged in the credential; or why it cannot be paid.
pub fn json_offer(challenge: &Value) -> Result<Offer, String> {
    let Some(c) = challenge.as_object() else {
        return Err("a Payment challenge that is not an object".into());
    };
    let size = challenge.to_string().len();
    if size > MAX_CHALLENGE {
        return Err(format!(
            "a Payment challenge of {size} bytes, over {MAX_CHALLENGE}"
        ));
    }
    let text = |name: &str| c.get(name).and_then(Value::as_str);
    let required = |name: &str| {
        text(name).ok_or_else(|| format!("the Payment challenge lacks its `{name}` member"))
    };
    required("id")?;
    required("realm")?;
    let (method, intent) = (required("method")?, required("intent")?);
    let Some(request) = c.get("request").filter(|r| r.is_object()) else {
        return Err("the Payment challenge's request is not a JSON object".into());
    };
    let mut terms = MppTerms::from_request(method, intent, request)?;
    terms.echo = c.clone();
    terms.expires = text("expires").and_then(rfc3339);
    Ok(Offer {
        dialect: "payment",
        invoice: terms.invoice.clone(),
        terms: Box::new(terms),
    })
}

/// Unix seconds of an RFC 3339 timestamp.
fn rfc3339(s: &str) -> Option<i64> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

/// The MPP network names (`mainnet`, …) of our networks.
fn network_name(n: Network) -> &'static [&'static str] {
    match n {
        Network::Bitcoin => &["mainnet", "bitcoin"],
        Network::Testnet => &["testnet"],
        Network::Signet => &["signet", "mutinynet"],
        Network::Regtest => &["regtest"],
    }
}

impl Terms for MppTerms {
    fn check(&self, invoice: &Invoice, body: &[u8], now: u64) -> Result<(), Decline> {
        let mismatch = |what: String| Decline::OfferMismatch {
            dialect: "payment",
            what,
        };
        if invoice.amount != Some(Msat::from_sats(self.amount_sats)) {
            return Err(mismatch(format!(
                "the request asks {} sat, the invoice {}",
                self.amount_sats,
                invoice
                    .amount
                    .map_or("no amount".to_string(), |a| a.to_string())
            )));
        }
        if let Some(h) = &self.payment_hash {
            if *h != invoice.payment_hash.to_hex() {
                return Err(mismatch(
                    "the request's paymentHash is not the invoice's".to_string(),
                ));
            }
        }
        if let Some(n) = &self.network {
            if !network_name(invoice.network).contains(&n.as_str()) {
                return Err(mismatch(format!(
                    "the request says network {n:?}, the invoice is for {}",
                    invoice.network
                )));
            }
        }
        if let Some(expires) = self.expires {
            if now as i64 >= expires {
                return Err(Decline::ChallengeExpired { at: expires });
            }
        }
        if let Some(digest) = &self.digest {
            if !digest_matches(digest, body) {
                return Err(mismatch(
                    "the challenge's digest does not match the request body".to_string(),
                ));
            }
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
        let mut credential = Map::new();
        credential.insert("challenge".into(), Value::Object(self.echo.clone()));
        let mut payload = Map::new();
        payload.insert("preimage".into(), Value::String(proof.to_hex()));
        credential.insert("payload".into(), Value::Object(payload));
        let json = serde_json::to_vec(&Value::Object(credential)).map_err(|e| {
            Decline::ChallengeInvalid {
                reason: e.to_string(),
            }
        })?;
        Credential::new(
            header::AUTHORIZATION,
            &format!("Payment {}", URL_SAFE_NO_PAD.encode(json)),
        )
    }

    fn stored(&self) -> Option<StoredCredential> {
        None
    }
}

/// RFC 9530 `Content-Digest`-style `sha-256=:<base64>:` (and `sha-512`) against `body`.
fn digest_matches(digest: &str, body: &[u8]) -> bool {
    digest.split(',').any(|item| {
        let Some((alg, value)) = item.trim().split_once('=') else {
            return false;
        };
        let value = value.trim().trim_matches(':');
        let want = base64::engine::general_purpose::STANDARD.decode(value);
        match (alg.trim().to_ascii_lowercase().as_str(), want) {
            ("sha-256", Ok(want)) => Sha256::digest(body).as_slice() == want.as_slice(),
            ("sha-512", Ok(want)) => sha2::Sha512::digest(body).as_slice() == want.as_slice(),
            _ => false,
        }
    })
}

#[cfg(test)]
mod tests;
