//! The agent's own interface for language models: an MCP server (Model Context Protocol,
//! streamable HTTP transport) with the tools `balance`, `quote`, `fetch`, `payments`,
//! `declines` and `approvals`.
//!
//! It is reached two ways, and is the same server either way:
//! - through the proxy, at `http://l402-proxy.local/mcp` (or `https://`), with the agent's
//!   usual proxy credentials, like `/balance` — an MCP client given the agent's
//!   `HTTP(S)_PROXY` needs nothing else;
//! - on its own listener (`mcp.listen`, off by default) with
//!   `Authorization: Bearer <agent name>:<agent key>`, for MCP hosts that cannot use a proxy.
//!
//! Either way the agent sees only itself, and whatever it spends goes through the payment
//! layer like a proxied request. The layers: [`transport`] (HTTP), [`protocol`] (JSON-RPC and
//! the MCP methods), [`tools`] (the catalogue and the read-only tools), [`requests`] (`quote`
//! and `fetch`), [`listener`] (`mcp.listen`).

pub mod listener;
pub mod protocol;
pub mod requests;
pub mod tools;
pub mod transport;

/// The path the server answers on, through the proxy and on its own listener.
pub const PATH: &str = "/mcp";
