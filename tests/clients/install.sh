#!/usr/bin/env bash
# Installs what tests/clients.rs (the "every agent's HTTP client" matrix) needs and is missing:
#   apt:  wget, golang-go (Go net/http), a JDK 17 (javac), curl, python3, node + npm
#   pip:  requests, httpx, aiohttp (pinned below)
#   npm:  undici into tests/clients/node_modules, from package-lock.json (`npm ci`)
# Idempotent and quick when everything is present (no network then). Runs as root on Debian 12
# without sudo; pip falls back to --break-system-packages on an externally managed Python.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
PY_PINS=("requests" "httpx==0.28.1" "aiohttp==3.14.5")

log() { printf 'clients/install.sh: %s\n' "$*" >&2; }

# --- Debian packages -------------------------------------------------------------------------
missing=()
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v wget >/dev/null 2>&1 || missing+=(wget)
command -v go >/dev/null 2>&1 || missing+=(golang-go)
{ command -v javac >/dev/null 2>&1 && command -v java >/dev/null 2>&1; } || missing+=(openjdk-17-jdk-headless)
if ! command -v python3 >/dev/null 2>&1; then
  missing+=(python3 python3-pip)
elif ! python3 -m pip --version >/dev/null 2>&1; then
  missing+=(python3-pip)
fi
{ command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; } || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- Python packages ---------------------------------------------------------------------------
# Exit 0 when every pin is satisfied (a bare name: any version).
if ! python3 - "${PY_PINS[@]}" <<'EOF'
import sys
from importlib.metadata import version, PackageNotFoundError
for pin in sys.argv[1:]:
    name, _, want = pin.partition("==")
    try:
        have = version(name)
    except PackageNotFoundError:
        sys.exit(1)
    if want and have != want:
        sys.exit(1)
EOF
then
  log "pip install ${PY_PINS[*]}"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "${PY_PINS[@]}" \
    || python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --break-system-packages "${PY_PINS[@]}"
fi

# --- npm: undici for the Node client ----------------------------------------------------------------
# The stamp is the lock file the current node_modules was installed from.
stamp="$HERE/node_modules/.l402-installed-lock.json"
if [ ! -f "$HERE/node_modules/undici/package.json" ] || ! cmp -s "$HERE/package-lock.json" "$stamp"; then
  log "npm ci in $HERE"
  (cd "$HERE" && npm ci --no-audit --no-fund --loglevel=error)
  cp "$HERE/package-lock.json" "$stamp"
fi
