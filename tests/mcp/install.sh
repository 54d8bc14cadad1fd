#!/usr/bin/env bash
# Installs what tests/mcp.rs needs and is missing: the official MCP TypeScript SDK
# (npm @modelcontextprotocol/sdk), unmodified, with undici (the proxy through HTTP(S)_PROXY) and
# zod, pinned by tests/mcp/package-lock.json, under ~/.cache/l402-proxy/mcp-sdk (`npm ci` there).
# Idempotent and quick when the installed lock file is the current one (no network then).
# Runs as root on Debian 12; node + npm come from apt when missing.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
DEST="${L402_MCP_SDK_DIR:-$HOME/.cache/l402-proxy/mcp-sdk}"

log() { printf 'mcp/install.sh: %s\n' "$*" >&2; }

if ! { command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; }; then
  log "apt-get install nodejs npm"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi

# The stamp is the lock file the current node_modules was installed from.
stamp="$DEST/node_modules/.l402-installed-lock.json"
if [ ! -f "$DEST/node_modules/@modelcontextprotocol/sdk/package.json" ] || ! cmp -s "$HERE/package-lock.json" "$stamp"; then
  log "npm ci in $DEST"
  mkdir -p "$DEST"
  cp "$HERE/package.json" "$HERE/package-lock.json" "$DEST/"
  (cd "$DEST" && npm ci --no-audit --no-fund --loglevel=error)
  cp "$HERE/package-lock.json" "$stamp"
fi
