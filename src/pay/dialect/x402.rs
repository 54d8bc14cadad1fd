//! x402 (v2) on Lightning: `PAYMENT-REQUIRED: base64(JSON {x402Version, resource, accepts:
//! [{scheme, network, amount, asset, payTo, maxTimeoutSeconds, extra: {invoice}}]})`. The offers
//! a Lightning wallet can pay are `scheme: exact` on `bip122:<genesis>` (the amount in msat,
//! `payTo` the payee's node key) and Alby's `lightning:<network>` variant; the answer is
//! `PAYMENT-SIGNATURE: base64(JSON {x402Version, accepted: <the chosen entry, byte for byte>,
//! payload: {preimage, paymentHash}})`, single-use. Offers on EVM or Solana networks are not
//! payable from a Lightning wallet: the 402 passes through, with a decline saying so.

use super::{Credential, Dialect, Offer, Offers, ResponseHead, StoredCredential, Terms};
use crate::core::{Decline, Msat, Preimage};
use crate::invoice::{Invoice, Network};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http::HeaderName;
use serde::Deserialize;
use serde_json::value::RawValue;

/// The header carrying the offers (v2).
pub const PAYMENT_REQUIRED: HeaderName = HeaderName::from_static("payment-required");
/// The header carrying the proof (v2).
pub const PAYMENT_SIGNATURE: HeaderName = HeaderName::from_static("payment-signature");
/// Longest `PAYMENT-REQUIRED` read.
const MAX_HEADER: usize = 16 * 1024;

/// The x402 dialect.
#[derive(Debug, Clone, Copy, Default)]
pub struct X402;

#[derive(Deserialize)]
struct Required<'a> {
    #[serde(rename = "x402Version")]
    version: u32,
    #[serde(borrow)]
    accepts: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
struct Requirement {
    scheme: String,
    network: String,
    #[serde(default)]
    amount: Option<serde_json::Value>,
    #[serde(rename = "payTo", default)]
    pay_to: Option<String>,
    #[serde(default)]
    extra: Option<serde_json::Value>,
}

/// The Lightning network an x402 network id names, if it names one.
fn lightning_network(network: &str) -> Option<Network> {
    let n = network.to_ascii_lowercase();
    match n.as_str() {
        "bip122:000000000019d6689c085ae165831e93" | "lightning:mainnet" | "lightning:bitcoin" => {
            Some(Network::Bitcoin)
        }
        "bip122:000000000933ea01ad0ee984209779ba" | "lightning:testnet" => Some(Network::Testnet),
        "bip122:00000008819873e925422c1ff0f99f7c" | "lightning:signet" => Some(Network::Signet),
        "bip122:0f9188f13cb7b2c71f2a335e3a4fc328" | "lightning:regtest" => Some(Network::Regtest),
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
        let Ok(required) = serde_json::from_slice::<Required<'_>>(&decoded) else {
            out.unsupported
                .push(("x402", "PAYMENT-REQUIRED is not x402 JSON".to_string()));
            return;
        };
        let mut networks = Vec::new();
        for raw in required.accepts {
            let Ok(req) = serde_json::from_str::<Requirement>(raw.get()) else {
                continue;
            };
            let Some(network) = lightning_network(&req.network) else {
                networks.push(req.network.clone());
                continue;
            };
            if req.scheme != "exact" {
                networks.push(format!("{} ({})", req.network, req.scheme));
                continue;
            }
            let invoice = req
                .extra
                .as_ref()
                .and_then(|e| e["invoice"].as_str())
                .filter(|s| s.bytes().all(|b| b.is_ascii_graphic()))
                .map(str::to_string);
            let amount_msat = match &req.amount {
                Some(serde_json::Value::String(s)) => s.trim().parse::<u64>().ok(),
                Some(serde_json::Value::Number(n)) => n.as_u64(),
                _ => None,
            };
            let (Some(invoice), Some(amount_msat)) = (invoice, amount_msat) else {
                networks.push(format!("{} (no invoice or amount)", req.network));
                continue;
            };
            let terms = X402Terms {
                version: required.version,
                accepted: raw.get().to_string(),
                amount: Msat(amount_msat),
                pay_to: req.pay_to.map(|p| p.to_ascii_lowercase()),
                network,
            };
            out.payable.push(Offer {
                dialect: self.name(),
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

    fn restore(&self, _stored: &StoredCredential, _proof: &Preimage) -> Option<Credential> {
        None
    }
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
    #[serde(rename = "paymentHash")]
    payment_hash: String,
}

/// A payable Lightning `exact` offer.
#[derive(Debug)]
struct X402Terms {
    version: u32,
    /// The chosen `accepts` entry exactly as received.
    accepted: String,
    amount: Msat,
    pay_to: Option<String>,
    network: Network,
}

impl Terms for X402Terms {
    fn check(&self, invoice: &Invoice, _body: &[u8], _now: u64) -> Result<(), Decline> {
        let mismatch = |what: String| Decline::OfferMismatch {
            dialect: "x402",
            what,
        };
        if invoice.amount != Some(self.amount) {
            return Err(mismatch(format!(
                "the offer asks {}, the invoice {}",
                self.amount,
                invoice
                    .amount
                    .map_or("no amount".to_string(), |a| a.to_string())
            )));
        }
        if invoice.network != self.network {
            return Err(mismatch(format!(
                "the offer is for {}, the invoice for {}",
                self.network, invoice.network
            )));
        }
        if let Some(pay_to) = &self.pay_to {
            if *pay_to != hex::encode(invoice.payee) {
                return Err(mismatch(
                    "the invoice is not signed by the offer's payTo node".to_string(),
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
                payment_hash: proof.hash().to_hex(),
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

#[cfg(test)]
mod tests;
