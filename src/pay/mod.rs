//! The payment layer around the upstream call: the dialects servers ask to be paid in, the
//! token cache, single flight, the policy an invoice must pass, the payment book every payment
//! walks, and reconciliation. The proxy hands each request to [`layer::PaymentLayer`]; nothing
//! here knows how connections are accepted or tunnels spliced.

pub mod book;
pub mod dialect;
pub mod flight;
pub mod headers;
pub mod kept;
pub mod layer;
pub mod mcp;
pub mod policy;
pub mod purchase;
pub mod reconcile;
pub mod tokens;

pub use layer::{Answer, Outgoing, PaymentLayer, Requester, Upstream};
pub use purchase::{Destination, Obtained, PaidInfo, Purchases};
