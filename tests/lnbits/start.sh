#!/usr/bin/env bash
# Runs a throwaway LNbits 1.6.2 (PyPI) for the wallet tests: FakeWallet funding (or another
# LNbits as funding source), SQLite in a fresh data dir, bootstrapped without the UI.
#
#   start.sh install                      create/refresh the venv only (idempotent; CI calls it)
#   start.sh start DIR [FUNDING_ENV]      start an instance with DIR as its data dir; writes
#                                         DIR/lnbits.env (URL, keys, pgid). With FUNDING_ENV
#                                         (the lnbits.env of another instance), this one is funded
#                                         by that instance's "funder" wallet (LNbitsWallet class).
#   start.sh stop DIR                     kill the instance's process group
#
# Env: LNBITS_VENV (default ~/.cache/l402-proxy/lnbits-venv), LNBITS_WATCH_PID (when set, the
# instance kills itself once that process is gone, so a killed test run leaves nothing behind).
# Facts behind every step: shared/BACKENDS.md (LNbits 1.6.2, measured).
set -euo pipefail

VENV="${LNBITS_VENV:-$HOME/.cache/l402-proxy/lnbits-venv}"
PY="$VENV/bin/python"
LNBITS_VERSION="1.6.2"

log() { printf 'lnbits: %s\n' "$*" >&2; }

install() {
  if [ -x "$PY" ] && "$PY" -c "import importlib.metadata as m, sys; sys.exit(m.version('lnbits') != '$LNBITS_VERSION')" 2>/dev/null; then
    return 0
  fi
  local python="${LNBITS_PYTHON:-python3}"
  log "installing lnbits==$LNBITS_VERSION into $VENV"
  mkdir -p "$(dirname "$VENV")"
  if ! "$python" -m venv "$VENV" 2>/dev/null; then
    # Debian's python3 needs python3-venv for ensurepip.
    if command -v apt-get >/dev/null 2>&1; then
      log "python3 -m venv failed: installing python3-venv"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
    fi
    rm -rf "$VENV"
    "$python" -m venv "$VENV"
  fi
  # bitstring 5 breaks bolt11 2.1.1 (ImportError ConstBitStream).
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "lnbits==$LNBITS_VERSION" "bitstring<5"
}

free_port() {
  "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

start() {
  local dir="$1" funding_env="${2:-}"
  install
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  local data="$dir/data"
  rm -rf "$data" "$dir/lnbits.env"
  mkdir -p "$data/ext"
  local port site
  port="$(free_port)"
  # LNbits resolves lnbits/static and lnbits/templates relative to its working directory.
  site="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"

  local funding=(LNBITS_BACKEND_WALLET_CLASS=FakeWallet)
  if [ -n "$funding_env" ]; then
    # shellcheck disable=SC1090
    local f_url f_key
    f_url="$(. "$funding_env" && echo "$LNBITS_URL")"
    f_key="$(. "$funding_env" && echo "$LNBITS_FUNDER_ADMIN_KEY")"
    funding=(LNBITS_BACKEND_WALLET_CLASS=LNbitsWallet LNBITS_FUNDING=LNbitsWallet
      "LNBITS_ENDPOINT=$f_url" "LNBITS_KEY=$f_key")
  fi

  # setsid: the instance gets its own process group, so `stop` (or the watcher) ends all of it.
  # Price feeds and manifests off (no internet: they add 200 ms-3 s per payment), rate limit up.
  env "${funding[@]}" \
    LNBITS_DATA_FOLDER="$data" LNBITS_EXTENSIONS_PATH="$data/ext" \
    HOST=127.0.0.1 PORT="$port" \
    LNBITS_PRICE_AGGREGATOR_ENABLED=false LNBITS_EXCHANGE_RATE_PROVIDERS='[]' \
    LNBITS_EXTENSIONS_MANIFESTS='[]' LNBITS_WASM_EXTENSIONS_MANIFESTS='[]' \
    LNBITS_RATE_LIMIT_NO=1000000 ENABLE_LOG_TO_FILE=false \
    LNBITS_WATCH_PID="${LNBITS_WATCH_PID:-}" PY="$PY" PORT_ARG="$port" SITE="$site" \
    setsid bash -c '
      cd "$SITE"
      "$PY" -m uvicorn lnbits.__main__:app --host 127.0.0.1 --port "$PORT_ARG" --loop uvloop --no-access-log &
      child=$!
      if [ -n "$LNBITS_WATCH_PID" ]; then
        while kill -0 "$LNBITS_WATCH_PID" 2>/dev/null && kill -0 "$child" 2>/dev/null; do sleep 1; done
        kill -TERM -- "-$$" 2>/dev/null
      fi
      wait "$child"
    ' </dev/null >"$dir/lnbits.log" 2>&1 &
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
  echo "$pgid" >"$dir/lnbits.pid"

  local url="http://127.0.0.1:$port"
  local code=000 i
  for i in $(seq 1 300); do
    code="$(curl -s -o /dev/null -w '%{http_code}' "$url/api/v1/health" || true)"
    [ "$code" = 200 ] || [ "$code" = 307 ] && break
    if ! kill -0 "$leader" 2>/dev/null; then
      log "exited during startup; log follows"; cat "$dir/lnbits.log" >&2; exit 1
    fi
    sleep 0.1
  done
  if [ "$code" != 200 ] && [ "$code" != 307 ]; then
    log "not up after 30 s (last status $code)"; tail -50 "$dir/lnbits.log" >&2
    kill -TERM -- "-$pgid" 2>/dev/null || true; exit 1
  fi

  # Bootstrap: superuser password (opens the first-install gate), wallets, credit.
  "$PY" - "$url" "$dir/lnbits.env" "$pgid" <<'EOF'
import json, sys, urllib.request
url, out, pgid = sys.argv[1], sys.argv[2], sys.argv[3]

def call(method, path, body=None, headers=None):
    req = urllib.request.Request(url + path, method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json", **(headers or {})})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)

token = call("PUT", "/api/v1/auth/first_install",
             {"username": "admin", "password": "secret1234", "password_repeat": "secret1234"})["access_token"]
env = {"LNBITS_URL": url, "LNBITS_PGID": pgid}
for role, credit in (("seller", 0), ("payer", 1_000_000), ("funder", 1_000_000)):
    w = call("POST", "/api/v1/account", {"name": role})
    if credit:
        call("PUT", "/users/api/v1/balance", {"id": w["id"], "amount": credit},
             {"Authorization": "Bearer " + token})
    up = role.upper()
    env[f"LNBITS_{up}_WALLET_ID"] = w["id"]
    env[f"LNBITS_{up}_ADMIN_KEY"] = w["adminkey"]
    env[f"LNBITS_{up}_INVOICE_KEY"] = w["inkey"]
with open(out + ".tmp", "w") as f:
    f.write("".join(f"{k}={v}\n" for k, v in env.items()))
EOF
  mv "$dir/lnbits.env.tmp" "$dir/lnbits.env"
  log "up at $url (pgid $pgid)"
}

stop() {
  local dir="$1" pgid
  [ -f "$dir/lnbits.pid" ] || return 0
  pgid="$(cat "$dir/lnbits.pid")"
  # Never our own group (or a bogus id): that would take the caller down with it.
  case "$pgid" in ''|*[!0-9]*|0|1) return 0 ;; esac
  [ "$pgid" = "$(ps -o pgid= -p $$ | tr -d ' ')" ] && return 0
  kill -TERM -- "-$pgid" 2>/dev/null || return 0
  for _ in $(seq 1 50); do
    kill -0 -- "-$pgid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL -- "-$pgid" 2>/dev/null || true
}

case "${1:-}" in
  install) install ;;
  start) start "${2:?data dir}" "${3:-}" ;;
  stop) stop "${2:?data dir}" ;;
  *) echo "usage: $0 install | start DIR [FUNDING_ENV] | stop DIR" >&2; exit 2 ;;
esac
