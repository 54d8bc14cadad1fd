#!/usr/bin/env bash
# Installs the official MCP TypeScript SDK (npm @modelcontextprotocol/sdk, pinned), undici (for
# its ProxyAgent) and mppx (the MPP server SDK, whose MCP transport serves a paid tool) for
# tests/paid_tools.rs, under ~/.cache; skipped when present.
# A directory of its own, so other tests pinning the SDK cannot clash with it.
#
# Env: PAID_TOOLS_SDK_DIR (default ~/.cache/l402-proxy/mcp-sdk-paid-tools).
set -euo pipefail

DIR="${PAID_TOOLS_SDK_DIR:-$HOME/.cache/l402-proxy/mcp-sdk-paid-tools}"
SDK_VERSION="1.32.2"
UNDICI_VERSION="7.30.2"
ZOD_VERSION="3.25.76"
MPPX_VERSION="0.11.0"
VIEM_VERSION="2.54.0"

installed() {
  [ -f "$DIR/node_modules/$1/package.json" ] \
    && node -e "process.exit(require('$DIR/node_modules/$1/package.json').version === '$2' ? 0 : 1)"
}

if installed @modelcontextprotocol/sdk "$SDK_VERSION" && installed undici "$UNDICI_VERSION" \
  && installed zod "$ZOD_VERSION" && installed mppx "$MPPX_VERSION" \
  && installed viem "$VIEM_VERSION"; then
  exit 0
fi
mkdir -p "$DIR"
cat > "$DIR/package.json" <<JSON
{
  "name": "l402-proxy-paid-tools-test",
  "private": true,
  "description": "The official MCP SDK client, unmodified, for tests/paid_tools.rs",
  "type": "module",
  "dependencies": {
    "@modelcontextprotocol/sdk": "$SDK_VERSION",
    "undici": "$UNDICI_VERSION",
    "zod": "$ZOD_VERSION",
    "mppx": "$MPPX_VERSION",
    "viem": "$VIEM_VERSION"
  }
}
JSON
echo "paid_tools: installing @modelcontextprotocol/sdk@$SDK_VERSION into $DIR" >&2
# mppx 0.11.0 needs its peer viem (pinned here); viem names mppx >= 0.17 as an optional peer,
# which npm cannot satisfy together with mppx 0.11.0 (the newest): peers are not resolved.
(cd "$DIR" && npm install --no-audit --no-fund --silent --legacy-peer-deps)
