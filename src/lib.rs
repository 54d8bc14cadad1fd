//! l402-proxy: a transparent HTTP(S) forward proxy that pays HTTP 402 challenges (L402 and its
//! kin) for the AI agents behind it, through the operator's Lightning wallet, within the
//! operator's budgets.
//!
//! The layout, outside in: [`app`] assembles everything from the [`config`]; [`proxy`] accepts
//! agents and moves bytes (mechanics only); [`pay`] is the payment layer around every upstream
//! call; [`ledger`] holds the money authority behind one trait; [`wallet`] pays; [`core`] is the
//! vocabulary all of them share.

#![warn(missing_docs)]

pub mod admin;
pub mod admin_client;
pub mod agents;
pub mod alerts;
pub mod app;
pub mod body;
pub mod budget;
pub mod config;
pub mod core;
pub mod demo;
pub mod glob;
pub mod guard;
pub mod guardrails;
pub mod hosts;
pub mod invoice;
pub mod ledger;
pub mod mcp;
pub mod metrics;
pub mod pay;
pub mod proxy;
#[cfg(test)]
pub(crate) mod scratch;
#[cfg(test)]
pub(crate) mod test_vectors;
pub mod tls;
pub mod wallet;
