#!/usr/bin/env bash
# Installs what tests/dashboard.rs (the dashboard in a real browser) needs and is missing:
#   apt:  chromium (Debian's build, at /usr/bin/chromium), node + npm
#   npm:  playwright-core into tests/dashboard/node_modules, from package-lock.json (`npm ci`);
#         playwright-core drives the system Chromium: no browser is downloaded (never run
#         `npx playwright install`)
# Idempotent and quick when everything is present (no network then). Runs as root on Debian 12.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"

log() { printf 'dashboard/install.sh: %s\n' "$*" >&2; }

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
{ command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; } || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The stamp is the lock file the current node_modules was installed from.
stamp="$HERE/node_modules/.l402-installed-lock.json"
if [ ! -f "$HERE/node_modules/playwright-core/package.json" ] || ! cmp -s "$HERE/package-lock.json" "$stamp"; then
  log "npm ci in $HERE"
  # PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD: belt and braces; playwright-core has no install hook.
  (cd "$HERE" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
  cp "$HERE/package-lock.json" "$stamp"
fi
