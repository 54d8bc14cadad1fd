//! The vocabulary every other module speaks: money (amounts, hashes, verified preimages), the one
//! clock, and why a payment was declined. Nothing here depends on the proxy, the ledger or a
//! wallet.

pub mod decline;
pub mod money;
pub mod text;
pub mod time;
pub mod window;

pub use decline::Decline;
pub use money::{Msat, PaymentHash, Preimage, Sats};
pub use time::Clock;
