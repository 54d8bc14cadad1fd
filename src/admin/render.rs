//! How the admin API writes what it answers: JSON, CSV (cells that a spreadsheet would run as
//! formulas are neutralised), RFC 3339 times beside unix seconds.

use crate::body::{full, Body};
use crate::core::text::{shown, shown_json, TEXT_MAX};
use crate::ledger::{AuditEntry, DeclineRecord, PaymentRecord};
use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use serde_json::{json, Value};

pub use crate::core::time::rfc3339;

/// One payment as the API shows it (never its token or preimage).
pub fn payment(r: &PaymentRecord) -> Value {
    json!({
        "payment_hash": r.hash.to_hex(),
        "agent": r.agent,
        "host": r.host,
        "dialect": r.dialect,
        "service": r.service,
        "amount_msat": r.amount.get(),
        "fee_msat": r.fee.map(|f| f.get()),
        "status": r.state.as_str(),
        "created_at": r.created_at,
        "created_at_rfc3339": rfc3339(r.created_at),
        "updated_at": r.updated_at,
        "failure": r.failure,
    })
}

/// One recorded refusal.
pub fn decline(d: &DeclineRecord) -> Value {
    json!({
        "agent": d.agent,
        "host": d.host,
        "path": d.path,
        "code": d.code,
        "reason": d.detail,
        "amount_msat": d.amount.map(|a| a.get()),
        "count": d.count,
        "created_at": d.created_at,
        "created_at_rfc3339": rfc3339(d.created_at),
    })
}

/// One audit log entry.
pub fn audit(e: &AuditEntry) -> Value {
    json!({
        "at": e.at,
        "at_rfc3339": rfc3339(e.at),
        "who": e.who,
        "action": e.action,
        "agent": e.agent,
        "detail": e.detail,
    })
}

/// Payments as CSV.
pub fn payments_csv(rows: &[PaymentRecord]) -> String {
    // The first seven columns are the contract's, in its order; new ones come after.
    let mut csv = String::from(
        "payment_hash,agent,host,amount_msat,fee_msat,status,created_at,created_at_rfc3339,dialect,failure\n",
    );
    for r in rows {
        let fields = [
            r.hash.to_hex(),
            r.agent.clone(),
            r.host.clone(),
            r.amount.get().to_string(),
            r.fee.map(|f| f.get().to_string()).unwrap_or_default(),
            r.state.as_str().to_string(),
            r.created_at.to_string(),
            rfc3339(r.created_at),
            r.dialect.clone(),
            r.failure.clone().unwrap_or_default(),
        ];
        line(&mut csv, &fields);
    }
    csv
}

/// Declines as CSV.
pub fn declines_csv(rows: &[DeclineRecord]) -> String {
    let mut csv = String::from(
        "agent,host,path,code,reason,amount_msat,count,created_at,created_at_rfc3339\n",
    );
    for d in rows {
        let fields = [
            d.agent.clone(),
            d.host.clone(),
            d.path.clone(),
            d.code.clone(),
            d.detail.clone(),
            d.amount.map(|a| a.get().to_string()).unwrap_or_default(),
            d.count.to_string(),
            d.created_at.to_string(),
            rfc3339(d.created_at),
        ];
        line(&mut csv, &fields);
    }
    csv
}

fn line(csv: &mut String, fields: &[String]) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            csv.push(',');
        }
        // Cells can hold seller-chosen text: cleaned as everything shown to the operator.
        csv.push_str(&csv_field(&shown(f, TEXT_MAX)));
    }
    csv.push('\n');
}

/// Quotes a CSV field when it holds a separator, a quote or a line break, and neutralises a
/// leading `=`, `+`, `-`, `@`, tab or carriage return (a spreadsheet would evaluate it).
pub fn csv_field(s: &str) -> String {
    let neutral = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if neutral.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", neutral.replace('"', "\"\""))
    } else {
        neutral
    }
}

/// A CSV response.
pub fn csv(body: String) -> Response<Body> {
    let mut resp = Response::new(full(body));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    resp
}

/// A JSON response.
/// Every string in it is cleaned and capped ([`shown_json`]): API answers carry seller-chosen
/// text (service names, upstream reasons) to the operator's screen.
pub fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let body = match serde_json::to_value(value) {
        Ok(mut v) => {
            shown_json(&mut v, TEXT_MAX);
            serde_json::to_vec_pretty(&v).unwrap_or_else(|_| b"{}".to_vec())
        }
        Err(_) => b"{}".to_vec(),
    };
    let mut r = Response::new(full(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// `{"error": message}` with `status`.
pub fn error(status: StatusCode, message: &str) -> Response<Body> {
    json(status, &json!({ "error": message }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_are_quoted_and_formulas_neutralised() {
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_field("+1"), "'+1");
        assert_eq!(csv_field("-2"), "'-2");
        assert_eq!(csv_field("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(rfc3339(1_796_083_200), "2026-12-01T00:00:00Z");
    }

    #[tokio::test]
    async fn seller_text_is_cleaned_in_csv_and_json() {
        let mut csv = String::new();
        line(&mut csv, &["a\u{202E}b\u{1b}[2J".into(), "x".repeat(2000)]);
        assert!(csv.starts_with("a\u{FFFD}b\u{FFFD}[2J,"), "{csv:?}");
        assert!(csv.chars().count() <= 3 + 8 + TEXT_MAX, "capped");
        let r = json(StatusCode::OK, &json!({"service": "pay\u{2067}me\u{7}"}));
        use http_body_util::BodyExt;
        let bytes = r.into_body().collect().await.unwrap().to_bytes();
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["service"], "pay\u{FFFD}me\u{FFFD}");
    }
}
