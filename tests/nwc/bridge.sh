#!/usr/bin/env bash
# Runs the NIP-47 wallet service of tests/nwc/bridge.cjs (npm @getalby/sdk, pinned by
# package-lock.json here) against a relay and an LNbits instance, for tests/nwc.rs.
#
#   bridge.sh install                               npm ci into the cache dir (idempotent; CI calls it)
#   bridge.sh start DIR RELAY_URL LNBITS_URL KEYS   start it; KEYS = comma-separated LNbits admin
#                                                   keys, one NWC connection each. Writes
#                                                   DIR/bridge.env (NWC_URI_<i>=…, BRIDGE_PGID=…).
#   bridge.sh stop DIR                              kill its process group
#
# Env: BRIDGE_NO_INFO (connection indexes whose kind-13194 info event is not published, so
# clients fall back to NIP-04), NWC_NODE_DIR (default ~/.cache/l402-proxy/nwc-node), BRIDGE_WATCH_PID (when set, the
# bridge ends itself once that process is gone, so a killed test run leaves nothing behind).
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
NODE_DIR="${NWC_NODE_DIR:-$HOME/.cache/l402-proxy/nwc-node}"

log() { printf 'nwc-bridge: %s\n' "$*" >&2; }

install() {
  if [ -d "$NODE_DIR/node_modules/@getalby/sdk" ] && cmp -s "$HERE/package-lock.json" "$NODE_DIR/package-lock.json"; then
    return 0
  fi
  command -v npm >/dev/null 2>&1 || { log "npm (Node 20+) is required"; exit 1; }
  log "npm ci into $NODE_DIR"
  mkdir -p "$NODE_DIR"
  cp "$HERE/package.json" "$HERE/package-lock.json" "$NODE_DIR/"
  # The SDK declares node>=22 but runs on Node 20 with the `ws` global the bridge installs.
  (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error --engine-strict=false)
}

start() {
  local dir="$1" relay="$2" lnbits="$3" keys="$4"
  install
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  rm -f "$dir/bridge.env" "$dir/bridge.out"
  # setsid: own process group, so `stop` (or the watcher) ends node and the watcher loop.
  RELAY_URL="$relay" LNBITS_URL="$lnbits" BRIDGE_KEYS="$keys" BRIDGE_NO_INFO="${BRIDGE_NO_INFO:-}" \
    NODE_PATH="$NODE_DIR/node_modules" BRIDGE="$HERE/bridge.cjs" \
    BRIDGE_WATCH_PID="${BRIDGE_WATCH_PID:-}" OUT="$dir/bridge.out" \
    setsid bash -c '
      node "$BRIDGE" >"$OUT" &
      child=$!
      if [ -n "$BRIDGE_WATCH_PID" ]; then
        while kill -0 "$BRIDGE_WATCH_PID" 2>/dev/null && kill -0 "$child" 2>/dev/null; do sleep 1; done
        kill -TERM -- "-$$" 2>/dev/null
      fi
      wait "$child"
    ' </dev/null >/dev/null 2>"$dir/bridge.log" &
  local leader=$!
  # setsid makes the child lead its own group (pgid == its pid), but only once it has run:
  # reading the group too early would record OUR group, and `stop` would then kill the
  # caller (the test binary, cargo, CI). Wait for it, and record nothing else.
  local pgid="" i
  for i in $(seq 1 200); do
    pgid="$(ps -o pgid= -p "$leader" 2>/dev/null | tr -d ' ')"
    [ "$pgid" = "$leader" ] && break
    sleep 0.025
  done
  if [ "$pgid" != "$leader" ]; then
    log "did not get its own process group (pgid '$pgid', pid $leader)"
    kill -TERM "$leader" 2>/dev/null || true
    exit 1
  fi
  echo "$pgid" >"$dir/bridge.pid"
  local i
  for i in $(seq 1 300); do
    grep -q '^BRIDGE_READY$' "$dir/bridge.out" 2>/dev/null && break
    if ! kill -0 "$leader" 2>/dev/null; then
      log "exited during startup; log follows"; cat "$dir/bridge.log" >&2; exit 1
    fi
    sleep 0.1
  done
  if ! grep -q '^BRIDGE_READY$' "$dir/bridge.out" 2>/dev/null; then
    log "not ready after 30 s"; cat "$dir/bridge.log" >&2
    kill -TERM -- "-$pgid" 2>/dev/null || true; exit 1
  fi
  { grep '^NWC_URI_' "$dir/bridge.out"; echo "BRIDGE_PGID=$pgid"; } >"$dir/bridge.env.tmp"
  mv "$dir/bridge.env.tmp" "$dir/bridge.env"
  log "ready (pgid $pgid)"
}

stop() {
  local dir="$1" pgid
  [ -f "$dir/bridge.pid" ] || return 0
  pgid="$(cat "$dir/bridge.pid")"
  # Never our own group (or a bogus id): that would take the caller down with it.
  case "$pgid" in ''|*[!0-9]*|0|1) return 0 ;; esac
  [ "$pgid" = "$(ps -o pgid= -p $$ | tr -d ' ')" ] && return 0
  kill -TERM -- "-$pgid" 2>/dev/null || return 0
}

case "${1:-}" in
  install) install ;;
  start) start "${2:?dir}" "${3:?relay url}" "${4:?lnbits url}" "${5:?admin keys}" ;;
  stop) stop "${2:?dir}" ;;
  *) echo "usage: $0 install | start DIR RELAY_URL LNBITS_URL KEYS | stop DIR" >&2; exit 2 ;;
esac
