//! `mcp:` — the agents' MCP server's own listener.

use serde::Deserialize;
use std::net::SocketAddr;

/// `mcp:` — the MCP server agents (language models) call for their balance, quotes, paid
/// fetches and history. Through the proxy it needs no setting; `listen` serves it on its own
/// address too, for MCP hosts that cannot use a proxy (`Authorization: Bearer <agent>:<key>`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct McpConfig {
    /// Where the MCP listener binds (path `/mcp`). Absent (the default): no listener of its
    /// own; the server stays reachable through the proxy.
    pub listen: Option<SocketAddr>,
}
