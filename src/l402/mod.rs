//! L402: the challenge grammar, read-only macaroon decoding, the token cache, the payment
//! policy and the engine that turns a challenge into a paid token.

pub mod challenge;
pub mod engine;
pub mod macaroon;
pub mod payment;
pub mod policy;
pub mod reconcile;
pub mod tokens;
