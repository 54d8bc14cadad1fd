//! l402-proxy: a transparent HTTP(S) forward proxy that pays L402 challenges for the AI agents
//! behind it, through the operator's Lightning wallet, within the operator's budgets.

pub mod admin;
pub mod agents;
pub mod budget;
pub mod clock;
pub mod config;
pub mod demo;
pub mod glob;
pub mod guard;
pub mod invoice;
pub mod l402;
pub mod metrics;
pub mod money;
pub mod proxy;
pub mod store;
#[cfg(test)]
pub(crate) mod test_vectors;
pub mod tls;
pub mod wallet;
