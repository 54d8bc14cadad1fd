//! The protocol test vectors, compiled into the unit tests from `tests/fixtures/` (a copy kept in
//! the repository, with its provenance in `tests/fixtures/README.md`), so no test reads a file
//! outside the tree.

use serde_json::Value;

/// The L402 vectors: challenges, authorizations, macaroons, BOLT11 invoices, MPP.
pub const L402_VECTORS: &str = include_str!("../tests/fixtures/l402-vectors.json");

/// The vectors parsed; a broken fixture fails the test that asked, with the reason.
pub fn l402() -> Value {
    serde_json::from_str(L402_VECTORS)
        .unwrap_or_else(|e| panic!("tests/fixtures/l402-vectors.json is not valid JSON: {e}"))
}
