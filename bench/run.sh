#!/usr/bin/env bash
# l402-proxy benchmark: the method of shared/BENCHMARKING.md, in one run, one table.
#
# nginx (1 worker, keep-alive, access_log off, 1 KiB body over HTTP and HTTPS) is the origin; the
# proxy runs pinned to core 0, nginx and the load generators share core 1. Direct and proxied
# runs are interleaved, in rounds; the table quotes medians. Everything stays on 127.0.0.1.
#
#   bench/run.sh                      # defaults: 3 rounds of 3 s per measured phase
#   BENCH_SECS=5 BENCH_ROUNDS=5 bench/run.sh
#
# Environment (all optional):
#   CARGO_TARGET_DIR   where cargo builds (default: target/ in the repo)
#   BENCH_SECS         measured seconds per phase, whole (default 3, at most 10)
#   BENCH_ROUNDS       rounds (default 3)
#   BENCH_IDLE         idle connections for the RSS figure (default 1000)
#   BENCH_PAID         paid requests (each for a new service) per round (default 100)
#   BENCH_PORT_BASE    first of the fixed ports used (default 18400: +0 proxy, +1 hudsucker peer,
#                      +2 proxy with the PostgreSQL ledger, +32 PostgreSQL, +80 nginx http,
#                      +43 nginx https)
#   BENCH_PEER_HUDSUCKER  path of a release build of shared/peers/hudsucker-bench (built outside
#                      the repo, see bench/README.md): measured in the same run and rounds, pinned
#                      like the proxy, for HTTP pass-through, HTTPS intercepted and idle RSS
#   BENCH_NO_POSTGRES=1  skip the PostgreSQL ledger parts (skipped anyway, with a note, when
#                      the server binaries initdb/postgres are not installed: Debian puts them in
#                      /usr/lib/postgresql/*/bin, package postgresql)
#   BENCH_LEDGER_PAYMENTS  payments per ledger-throughput run (default 2000; examples/ledger_bench)
#   BENCH_LEDGER_SECS  at most this many seconds per ledger-throughput run (default 15)
#   BENCH_KEEP=1       keep the work directory (configs, logs, raw results) after the run
#   BENCH_NO_INSTALL=1 do not apt-get anything (fail if wrk/nginx/openssl are missing)
# Speed is measured and printed, never asserted: the exit status says only whether the run
# itself worked.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
SECS=${BENCH_SECS:-3}
ROUNDS=${BENCH_ROUNDS:-3}
IDLE_CONNS=${BENCH_IDLE:-1000}
BASE=${BENCH_PORT_BASE:-18400}
PROXY_PORT=$((BASE + 0))
PEER_PORT=$((BASE + 1))
PGPROXY_PORT=$((BASE + 2))
PG_PORT=$((BASE + 32))
PEER_BIN=${BENCH_PEER_HUDSUCKER:-}
NGINX_HTTP=$((BASE + 80))
NGINX_HTTPS=$((BASE + 43))
WARMUP=0.5
AGENT=bench
AGENT_KEY=bench-key-$RANDOM$RANDOM
# Present only on an answer whose request paid (x-l402-proxy-token also reads `cached`/`shared`).
PAID_HEADER=x-l402-proxy-paid-msat
CLK_TCK=$(getconf CLK_TCK)

if ! [[ $SECS =~ ^[0-9]+$ ]] || ((SECS < 1 || SECS > 10)); then
  echo "BENCH_SECS must be a whole number of seconds, 1 to 10 (wrk takes whole seconds)" >&2
  exit 2
fi

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if [[ -n $PEER_BIN ]]; then
  if [[ ! -f $PEER_BIN || ! -x $PEER_BIN ]]; then
    echo "BENCH_PEER_HUDSUCKER=$PEER_BIN is not an executable file (build it as bench/README.md says)" >&2
    exit 2
  fi
  PEER_BIN=$(cd "$(dirname "$PEER_BIN")" && pwd)/$(basename "$PEER_BIN")
fi

# ---------------------------------------------------------------- tools
# PostgreSQL: only the server binaries are needed (initdb, postgres, pg_ctl, psql); nothing is
# installed for it. Without them the PostgreSQL parts are skipped and the report says why.
PG_BIN="" PG_SKIP=""
if [[ ${BENCH_NO_POSTGRES:-0} == 1 ]]; then
  PG_SKIP="BENCH_NO_POSTGRES=1"
else
  # The newest version first (/usr/lib/postgresql/15/bin before …/13/bin).
  while read -r d; do
    if [[ -x $d/initdb && -x $d/postgres && -x $d/pg_ctl && -x $d/psql ]]; then PG_BIN=$d; break; fi
  done < <(printf '%s\n' /usr/lib/postgresql/*/bin | sort -t/ -k4 -n -r)
  if [[ -z $PG_BIN ]] && command -v initdb >/dev/null && command -v postgres >/dev/null; then
    d=$(dirname "$(readlink -f "$(command -v initdb)")")
    [[ -x $d/postgres && -x $d/pg_ctl && -x $d/psql ]] && PG_BIN=$d
  fi
  [[ -z $PG_BIN ]] && PG_SKIP="the PostgreSQL server binaries (initdb, postgres, pg_ctl, psql) are not installed: none under /usr/lib/postgresql/*/bin nor on PATH (Debian: apt-get install postgresql)"
fi
NGINX_BIN=$(command -v nginx || true)
[[ -z $NGINX_BIN && -x /usr/sbin/nginx ]] && NGINX_BIN=/usr/sbin/nginx
missing=()
[[ -z $NGINX_BIN ]] && missing+=(nginx-light)
command -v wrk >/dev/null || missing+=(wrk)
command -v openssl >/dev/null || missing+=(openssl)
command -v taskset >/dev/null || missing+=(util-linux)
if ((${#missing[@]})); then
  if [[ ${BENCH_NO_INSTALL:-0} == 1 ]]; then
    echo "missing: ${missing[*]} (and BENCH_NO_INSTALL=1)" >&2
    exit 2
  fi
  SUDO=""
  [[ $(id -u) != 0 ]] && SUDO=sudo
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null; then
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  NGINX_BIN=$(command -v nginx || echo /usr/sbin/nginx)
fi

log "building (release) into $CARGO_TARGET_DIR"
(cd "$ROOT" && cargo build --release --quiet --bin l402-proxy --example loadgen --example bench_seller --example ledger_bench)
BIN=$CARGO_TARGET_DIR/release/l402-proxy
LOADGEN=$CARGO_TARGET_DIR/release/examples/loadgen
SELLER=$CARGO_TARGET_DIR/release/examples/bench_seller
LEDGER_BENCH=$CARGO_TARGET_DIR/release/examples/ledger_bench

# ---------------------------------------------------------------- processes and cleanup
WORK=$(mktemp -d "${TMPDIR:-/tmp}/l402-bench.XXXXXX")
chmod 755 "$WORK" # nginx workers may run as another user
case $(stat -f -c %T "$WORK" 2>/dev/null) in
  tmpfs | ramfs) log "warning: $WORK is on tmpfs: fsync is free there, so the paid path and the ledger figures flatter both ledgers (set TMPDIR to a directory on disk)" ;;
esac
PIDS=()
KEEP=${BENCH_KEEP:-0}
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"
PG_DATA=""
# `program args…` as user postgres when we are root (the server refuses to run as root).
as_postgres() { if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
  local status=$?
  stop_started
  if [[ -n $PG_DATA && -f $PG_DATA/postmaster.pid ]]; then
    as_postgres "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t 20 stop >/dev/null 2>&1 || true
  fi
  remove_work
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if (($(ulimit -n) < IDLE_CONNS * 2 + 100)); then
  log "warning: open-file limit $(ulimit -n) is low for $IDLE_CONNS idle connections"
fi

PORTS=("$PROXY_PORT" "$NGINX_HTTP" "$NGINX_HTTPS")
[[ -n $PEER_BIN ]] && PORTS+=("$PEER_PORT")
[[ -z $PG_SKIP ]] && PORTS+=("$PGPROXY_PORT" "$PG_PORT")
require_free_ports BENCH_PORT_BASE "${PORTS[@]}"

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- origin: certificates and nginx
log "origin certificates (private CA → CA:FALSE leaf for localhost/127.0.0.1)"
(
  cd "$WORK"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout origin-ca-key.pem -out origin-ca.pem -days 7 -subj "/CN=l402-bench origin CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout origin-key.pem -out origin.csr -subj "/CN=localhost" 2>/dev/null
  printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
    "extendedKeyUsage=serverAuth" "subjectAltName=DNS:localhost,IP:127.0.0.1" >origin-ext.cnf
  openssl x509 -req -in origin.csr -CA origin-ca.pem -CAkey origin-ca-key.pem -CAcreateserial \
    -out origin.pem -days 7 -extfile origin-ext.cnf 2>/dev/null
  chmod 644 ./*.pem
  mkdir -p www nginx-tmp
  head -c 1024 /dev/zero | tr '\0' 'x' >www/1k
  chmod -R a+rX www nginx-tmp
)
cat >"$WORK/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  keepalive_timeout 300s;
  keepalive_requests 100000000;
  sendfile on;
  tcp_nopush on;
  client_body_temp_path $WORK/nginx-tmp/body;
  proxy_temp_path $WORK/nginx-tmp/proxy;
  fastcgi_temp_path $WORK/nginx-tmp/fastcgi;
  uwsgi_temp_path $WORK/nginx-tmp/uwsgi;
  scgi_temp_path $WORK/nginx-tmp/scgi;
  server {
    listen 127.0.0.1:$NGINX_HTTP;
    listen 127.0.0.1:$NGINX_HTTPS ssl;
    server_name localhost;
    ssl_certificate $WORK/origin.pem;
    ssl_certificate_key $WORK/origin-key.pem;
    root $WORK/www;
    location = /1k { default_type application/octet-stream; }
  }
}
EOF
log "nginx on 127.0.0.1:$NGINX_HTTP (http) and :$NGINX_HTTPS (https), core 1"
taskset -c 1 "$NGINX_BIN" -c "$WORK/nginx.conf" -p "$WORK" 2>"$WORK/nginx.stderr" &
PIDS+=($!)
wait_port "$NGINX_HTTP"
wait_port "$NGINX_HTTPS"

# ---------------------------------------------------------------- the L402 seller (own process)
log "L402 seller (examples/bench_seller), core 1"
taskset -c 1 "$SELLER" "$WORK/seller-ca.pem" >"$WORK/seller.out" 2>"$WORK/seller.err" &
SELLER_PID=$!
PIDS+=("$SELLER_PID")
for _ in $(seq 1 200); do
  grep -q '^seller http=' "$WORK/seller.out" 2>/dev/null && break
  sleep 0.05
done
SELLER_HTTP=$(sed -n 's/^seller http=\([0-9]*\) .*/\1/p' "$WORK/seller.out")
[[ -n $SELLER_HTTP ]] || { echo "seller did not start" >&2; cat "$WORK/seller.err" >&2; exit 1; }
# A second seller for the fresh-payment runs: the proxy keeps at most 16 tokens per origin and
# drops the oldest first, so paying for new services on the first seller would evict the token
# the cached-token runs use.
taskset -c 1 "$SELLER" "$WORK/seller2-ca.pem" >"$WORK/seller2.out" 2>"$WORK/seller2.err" &
SELLER2_PID=$!
PIDS+=("$SELLER2_PID")
for _ in $(seq 1 200); do
  grep -q '^seller http=' "$WORK/seller2.out" 2>/dev/null && break
  sleep 0.05
done
SELLER2_HTTP=$(sed -n 's/^seller http=\([0-9]*\) .*/\1/p' "$WORK/seller2.out")
[[ -n $SELLER2_HTTP ]] || { echo "second seller did not start" >&2; cat "$WORK/seller2.err" >&2; exit 1; }

# ---------------------------------------------------------------- the proxy
KEY_SHA=$(printf '%s' "$AGENT_KEY" | "$BIN" hash-key)
# CONNECTs to localhost are intercepted (TLS terminated with a leaf from our CA); CONNECTs to
# 127.0.0.1 are tunnelled byte for byte, which gives the tunnel row.
cat >"$WORK/proxy.yaml" <<EOF
listen: 127.0.0.1:$PROXY_PORT
tls:
  ca_cert: ca.pem
  ca_key: ca-key.pem
  intercept: ["localhost"]
  upstream_roots: ["origin-ca.pem", "seller-ca.pem"]
guard: { allow_private: true }
wallet: { backend: dev, network: regtest }
store: { path: l402-proxy.db }
agents:
  - name: $AGENT
    key_sha256: "$KEY_SHA"
EOF
log "proxy on 127.0.0.1:$PROXY_PORT, core 0"
taskset -c 0 "$BIN" run --config "$WORK/proxy.yaml" >"$WORK/proxy.out" 2>"$WORK/proxy.err" &
PROXY_PID=$!
PIDS+=("$PROXY_PID")
wait_port "$PROXY_PORT"

# ---------------------------------------------------------------- PostgreSQL, and the proxy on it
# A throw-away cluster (initdb + pg_ctl, as user postgres when root) in the work directory,
# 127.0.0.1 only, durable (fsync and synchronous_commit keep their defaults: on), on core 1 with
# the origin. A second l402-proxy, identical but for `store.backend: postgres`, runs on core 0
# beside the first (each idles while the other is measured); its rows start with g_.
PGPROXY_PID=""
PG_AS=()
[[ $(id -u) == 0 ]] && PG_AS=(runuser -u postgres --)
if [[ -z $PG_SKIP ]]; then
  PG_DIR=$WORK/pg
  mkdir -p "$PG_DIR"
  [[ $(id -u) == 0 ]] && chown postgres:postgres "$PG_DIR"
  PG_VERSION=$("$PG_BIN/postgres" --version)
  log "PostgreSQL ($PG_VERSION) on 127.0.0.1:$PG_PORT, core 1: throw-away cluster in $PG_DIR"
  if ! "${PG_AS[@]}" "$PG_BIN/initdb" -D "$PG_DIR/data" -A trust -U l402 -E UTF8 --no-sync --locale=C \
    >"$WORK/pg-initdb.log" 2>&1; then
    echo "initdb failed (see $WORK/pg-initdb.log):" >&2
    tail -5 "$WORK/pg-initdb.log" >&2
    KEEP=1
    exit 1
  fi
  PG_DATA=$PG_DIR/data
  if ! taskset -c 1 "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_DIR/server.log" -w -t 30 \
    -o "-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1" start >/dev/null; then
    echo "PostgreSQL did not start (see $PG_DIR/server.log):" >&2
    tail -5 "$PG_DIR/server.log" >&2
    KEEP=1
    exit 1
  fi
  "$PG_BIN/psql" "postgres://l402@127.0.0.1:$PG_PORT/postgres" -v ON_ERROR_STOP=1 -q -c "CREATE DATABASE l402"
  PG_URL=postgres://l402@127.0.0.1:$PG_PORT/l402
  sed -e "s|^listen: .*|listen: 127.0.0.1:$PGPROXY_PORT|" \
    -e "s|^store: .*|store:\n  backend: postgres\n  postgres: { url_env: L402_BENCH_STORE_URL, tls: disable }|" \
    "$WORK/proxy.yaml" >"$WORK/proxy-pg.yaml"
  grep -q '^  backend: postgres' "$WORK/proxy-pg.yaml" || { echo "could not write proxy-pg.yaml" >&2; exit 1; }
  log "proxy with the PostgreSQL ledger on 127.0.0.1:$PGPROXY_PORT, core 0"
  L402_BENCH_STORE_URL=$PG_URL taskset -c 0 "$BIN" run --config "$WORK/proxy-pg.yaml" \
    >"$WORK/proxy-pg.out" 2>"$WORK/proxy-pg.err" &
  PGPROXY_PID=$!
  PIDS+=("$PGPROXY_PID")
  wait_port "$PGPROXY_PORT"
fi

# ---------------------------------------------------------------- measuring helpers
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }   # cpu_ticks PID
RSS_START_KB=$(rss_kb "$PROXY_PID")

# ---------------------------------------------------------------- the hudsucker peer (optional)
# A no-op MITM proxy on hudsucker 0.25, pinned exactly like l402-proxy (core 0, one tokio worker),
# on its own port. It gets the proxy's own CA (the key re-encoded as PKCS#8 by openssl, which
# is what rcgen's KeyPair::from_pem wants), so the load generator trusts the same ca.pem for
# both, and the origin's CA to trust upstream. It does no proxy authentication: the requests
# still carry Proxy-Authorization (ignored), so both proxies receive the same bytes.
PEER_PID=""
if [[ -n $PEER_BIN ]]; then
  [[ -s $WORK/ca.pem && -s $WORK/ca-key.pem ]] || { echo "the proxy did not write ca.pem/ca-key.pem" >&2; exit 1; }
  openssl pkey -in "$WORK/ca-key.pem" -out "$WORK/peer-ca-key-pkcs8.pem"
  log "hudsucker peer on 127.0.0.1:$PEER_PORT, core 0 ($PEER_BIN)"
  HUDSUCKER_THREADS=1 taskset -c 0 "$PEER_BIN" "127.0.0.1:$PEER_PORT" "$WORK/ca.pem" \
    "$WORK/peer-ca-key-pkcs8.pem" "$WORK/origin-ca.pem" >"$WORK/peer.out" 2>"$WORK/peer.err" &
  PEER_PID=$!
  PIDS+=("$PEER_PID")
  wait_port "$PEER_PORT"
  PEER_RSS_START_KB=$(rss_kb "$PEER_PID")
fi
# Which process a proxied scenario measures: the peer's rows start with h_, the PostgreSQL-ledger
# proxy's with g_.
pid_of() {
  case $1 in
    h_*) echo "$PEER_PID" ;;
    g_*) echo "$PGPROXY_PID" ;;
    *) echo "$PROXY_PID" ;;
  esac
}

PROXY_URL=http://127.0.0.1:$PROXY_PORT
PEER_URL=http://127.0.0.1:$PEER_PORT
AUTH_B64=$(printf '%s:%s' "$AGENT" "$AGENT_KEY" | base64 -w0)
WRK_PROXY_LUA=$WORK/proxy.lua
cat >"$WRK_PROXY_LUA" <<EOF
-- absolute-form request line through the forward proxy
wrk.path = "http://127.0.0.1:$NGINX_HTTP/1k"
wrk.headers["Host"] = "127.0.0.1:$NGINX_HTTP"
wrk.headers["Proxy-Authorization"] = "Basic $AUTH_B64"
EOF

declare -A RES  # RES[scenario|c|metric] = "v1 v2 …" (one value per round)
WARNINGS=()
add() {
  RES["$1|$2|$3"]+="$4 "
  printf '%s\t%s\t%s\t%s\t%s\n' "$ROUND" "$1" "$2" "$3" "$4" >>"$WORK/results.tsv"
}
ROUND=0
warn() { WARNINGS+=("$*"); log "WARNING: $*"; }

# Converts wrk's "120.00us" / "1.20ms" / "1.00s" to µs.
to_us() {
  awk -v v="$1" 'BEGIN {
    n = v + 0
    if (v ~ /us$/) m = 1; else if (v ~ /ms$/) m = 1000; else if (v ~ /s$/) m = 1000000; else m = 1
    printf "%.1f", n * m }'
}

# run_wrk SCENARIO C PROXIED [CORE]  (an h_ scenario goes through the peer, the same Lua script)
run_wrk() {
  local scen=$1 c=$2 proxied=$3 core=${4:-1} out t0 t1 total rps p50 p99 non2xx errs pid url
  out=$WORK/wrk-$scen-$c.txt
  pid=$(pid_of "$scen")
  url=$PROXY_URL
  [[ $scen == h_* ]] && url=$PEER_URL
  t0=$(cpu_ticks "$pid")
  if [[ $proxied == 1 ]]; then
    taskset -c "$core" wrk -t1 -c"$c" -d"${SECS}s" --latency -s "$WRK_PROXY_LUA" "$url/" >"$out"
  else
    taskset -c "$core" wrk -t1 -c"$c" -d"${SECS}s" --latency "http://127.0.0.1:$NGINX_HTTP/1k" >"$out"
  fi
  t1=$(cpu_ticks "$pid")
  total=$(awk '/requests in/ {print $1}' "$out")
  rps=$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' "$out")
  p50=$(to_us "$(awk '$1 == "50%" {print $2}' "$out")")
  p99=$(to_us "$(awk '$1 == "99%" {print $2}' "$out")")
  non2xx=$(awk '/Non-2xx/ {print $NF}' "$out")
  errs=$(awk '/Socket errors/ {gsub(",", ""); print $4 + $6 + $8 + $10}' "$out")
  [[ -n $non2xx && $non2xx != 0 ]] && warn "$scen c=$c: $non2xx non-2xx answers"
  [[ -n $errs && $errs != 0 ]] && warn "$scen c=$c: $errs socket errors"
  add "$scen" "$c" rps "$rps"
  add "$scen" "$c" p50 "$p50"
  add "$scen" "$c" p99 "$p99"
  if [[ $proxied == 1 && ${total:-0} -gt 0 ]]; then
    add "$scen" "$c" cpu "$(awk -v d=$((t1 - t0)) -v n="$total" -v hz="$CLK_TCK" 'BEGIN {printf "%.2f", d * 1e6 / hz / n}')"
  fi
}

# run_lg SCENARIO C PROXIED [loadgen args…]
run_lg() {
  local scen=$1 c=$2 proxied=$3 out t0 t1 line total pid
  shift 3
  out=$WORK/lg-$scen-$c.txt
  pid=$(pid_of "$scen")
  t0=$(cpu_ticks "$pid")
  taskset -c 1 "$LOADGEN" -c "$c" -d "$SECS" --warmup "$WARMUP" "$@" >"$out" 2>>"$WORK/loadgen.err"
  t1=$(cpu_ticks "$pid")
  line=$(tail -1 "$out")
  kv() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" <<<"$line"; }
  total=$(kv total)
  add "$scen" "$c" rps "$(kv rps)"
  add "$scen" "$c" p50 "$(kv p50_us)"
  add "$scen" "$c" p99 "$(kv p99_us)"
  [[ $(kv errors) != 0 ]] && warn "$scen c=$c: $(kv errors) failed requests/connections"
  [[ $(kv bad_status) != 0 ]] && warn "$scen c=$c: $(kv bad_status) answers were not 200"
  [[ ($scen == e_cached || $scen == g_cached) && $(kv flagged) != 0 ]] && warn "$scen c=$c: $(kv flagged) answers carried $PAID_HEADER (a payment, not the cached token)"
  if [[ $proxied == 1 && ${total:-0} -gt 0 ]]; then
    add "$scen" "$c" cpu "$(awk -v d=$((t1 - t0)) -v n="$total" -v hz="$CLK_TCK" 'BEGIN {printf "%.2f", d * 1e6 / hz / n}')"
  fi
}

LG_PROXY=(--proxy "127.0.0.1:$PROXY_PORT" --proxy-auth "$AGENT:$AGENT_KEY")
# The peer gets the same requests, Proxy-Authorization included (it ignores it).
LG_PEER=(--proxy "127.0.0.1:$PEER_PORT" --proxy-auth "$AGENT:$AGENT_KEY")
LG_PGPROXY=(--proxy "127.0.0.1:$PGPROXY_PORT" --proxy-auth "$AGENT:$AGENT_KEY")
direct_https() { run_lg c_https "$1" 0 --url "https://localhost:$NGINX_HTTPS/1k" --cacert "$WORK/origin-ca.pem"; }
proxy_https() { run_lg d_intercept "$1" 1 "${LG_PROXY[@]}" --url "https://localhost:$NGINX_HTTPS/1k" --cacert "$WORK/ca.pem"; }
# The peer's rows; nothing when BENCH_PEER_HUDSUCKER is unset.
peer_http() { if [[ -n $PEER_BIN ]]; then run_wrk h_http "$1" 1; fi; }
peer_https() {
  if [[ -n $PEER_BIN ]]; then
    run_lg h_intercept "$1" 1 "${LG_PEER[@]}" --url "https://localhost:$NGINX_HTTPS/1k" --cacert "$WORK/ca.pem"
  fi
}
proxy_tunnel() { run_lg t_tunnel "$1" 1 "${LG_PROXY[@]}" --url "https://127.0.0.1:$NGINX_HTTPS/1k" --cacert "$WORK/origin-ca.pem"; }
paid_cached() {
  run_lg e_cached "$1" 1 "${LG_PROXY[@]}" --url "http://127.0.0.1:$SELLER_HTTP/weather/today" \
    --flag-header "$PAID_HEADER"
}
seller_free() { run_lg f_free "$1" 1 "${LG_PROXY[@]}" --url "http://127.0.0.1:$SELLER_HTTP/free/x"; }
# PAID_N requests, each for a service never paid before: 402 → the dev wallet pays → replay.
paid_fresh() {
  run_lg p_paid 1 1 "${LG_PROXY[@]}" --count "$PAID_N" --vary-service \
    --url "http://127.0.0.1:$SELLER2_HTTP/paid$1/x" --flag-header "$PAID_HEADER"
  local line
  line=$(tail -1 "$WORK/lg-p_paid-1.txt")
  grep -q "flagged=$PAID_N\$" <<<"$line" || warn "paid run $1: not every request was paid: $line"
}

# The same two runs through the proxy with the PostgreSQL ledger; nothing when PG is skipped.
pg_cached() {
  if [[ -z $PG_SKIP ]]; then
    run_lg g_cached "$1" 1 "${LG_PGPROXY[@]}" --url "http://127.0.0.1:$SELLER_HTTP/weather/today" \
      --flag-header "$PAID_HEADER"
  fi
}
# The newest transaction id the server handed out: write transactions (each one durable commit)
# move it by one; reading it moves nothing.
pg_xid() { "$PG_BIN/psql" "$PG_URL" -Atq -c "SELECT pg_snapshot_xmax(pg_current_snapshot())"; }
pg_paid() {
  [[ -z $PG_SKIP ]] || return 0
  local x0
  x0=$(pg_xid)
  run_lg g_paid 1 1 "${LG_PGPROXY[@]}" --count "$PAID_N" --vary-service \
    --url "http://127.0.0.1:$SELLER2_HTTP/gpaid$1/x" --flag-header "$PAID_HEADER"
  local line
  line=$(tail -1 "$WORK/lg-g_paid-1.txt")
  add g_paid 1 xacts "$(awk -v a="$x0" -v b="$(pg_xid)" -v n="$PAID_N" 'BEGIN {printf "%.1f", (b - a) / n}')"
  grep -q "flagged=$PAID_N\$" <<<"$line" || warn "PostgreSQL paid run $1: not every request was paid: $line"
}

# hold_idle LABEL [PID PORT]: opens $IDLE_CONNS connections through the proxy (or the peer at
# PID/PORT), one after the other, each sending one plain-HTTP request to nginx and then staying
# idle; records VmRSS and open fds.
declare -A IDLE_RSS IDLE_FDS
hold_idle() {
  local label=$1 target=${2:-$PROXY_PID} port=${3:-$PROXY_PORT} pid
  log "holding $IDLE_CONNS idle keep-alive connections through 127.0.0.1:$port ($label)"
  : >"$WORK/idle-$label.out"
  taskset -c 1 "$LOADGEN" --idle "$IDLE_CONNS" --hold 120 --proxy "127.0.0.1:$port" --proxy-auth "$AGENT:$AGENT_KEY" \
    --url "http://127.0.0.1:$NGINX_HTTP/1k" >"$WORK/idle-$label.out" 2>"$WORK/idle-$label.err" &
  pid=$!
  PIDS+=("$pid")
  for _ in $(seq 1 600); do
    grep -q '^ready' "$WORK/idle-$label.out" && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if grep -q '^ready' "$WORK/idle-$label.out"; then
    sleep 1
    IDLE_RSS[$label]=$(rss_kb "$target")
    IDLE_FDS[$label]=$(find "/proc/$target/fd" -mindepth 1 -maxdepth 1 | wc -l)
    grep -q 'bad_status=0' "$WORK/idle-$label.out" || warn "idle phase ($label): $(cat "$WORK/idle-$label.out")"
  else
    IDLE_RSS[$label]=""
    IDLE_FDS[$label]=""
    warn "idle phase ($label) failed: $(head -c 300 "$WORK/idle-$label.err")"
  fi
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  sleep 0.5 # let the proxy see the connections close
}

# ---------------------------------------------------------------- idle connections (fresh proxy)
hold_idle fresh
RSS_FRESH_AFTER_KB=$(rss_kb "$PROXY_PID")
if [[ -n $PEER_BIN ]]; then
  hold_idle peer_fresh "$PEER_PID" "$PEER_PORT"
  PEER_RSS_FRESH_AFTER_KB=$(rss_kb "$PEER_PID")
fi

# ---------------------------------------------------------------- sanity and the first payment
log "checking every path once"
"$LOADGEN" -c 1 -d 0.2 --warmup 0 "${LG_PROXY[@]}" --url "http://127.0.0.1:$NGINX_HTTP/1k" >/dev/null
"$LOADGEN" -c 1 -d 0.2 --warmup 0 "${LG_PROXY[@]}" --url "https://localhost:$NGINX_HTTPS/1k" --cacert "$WORK/ca.pem" >/dev/null
first=$("$LOADGEN" -c 1 --count 1 "${LG_PROXY[@]}" --url "http://127.0.0.1:$SELLER_HTTP/weather/today" \
  --flag-header "$PAID_HEADER")
if ! { grep -q 'flagged=1' <<<"$first" && grep -q 'bad_status=0' <<<"$first"; }; then
  warn "the first /weather/today was not paid as expected: $first"
fi
log "first paid request: $first"
if [[ -z $PG_SKIP ]]; then
  first=$("$LOADGEN" -c 1 --count 1 "${LG_PGPROXY[@]}" --url "http://127.0.0.1:$SELLER_HTTP/weather/today" \
    --flag-header "$PAID_HEADER")
  if ! { grep -q 'flagged=1' <<<"$first" && grep -q 'bad_status=0' <<<"$first"; }; then
    warn "the first /weather/today through the PostgreSQL-ledger proxy was not paid as expected: $first"
  fi
  log "first paid request, PostgreSQL ledger: $first"
fi
if [[ -n $PEER_BIN ]]; then
  for u in "http://127.0.0.1:$NGINX_HTTP/1k" "https://localhost:$NGINX_HTTPS/1k"; do
    check=$("$LOADGEN" -c 1 -d 0.2 --warmup 0 "${LG_PEER[@]}" --url "$u" --cacert "$WORK/ca.pem" 2>&1 | tail -1 || true)
    grep -q 'errors=0 bad_status=0' <<<"$check" || warn "hudsucker peer, $u: $check (see $WORK/peer.err)"
  done
fi

# ---------------------------------------------------------------- rounds
CONCS=(1 16 64)
PAID_CONCS=(1 16)
PAID_N=${BENCH_PAID:-100}
PHASES=20 PEER_PHASES=0 PG_PHASES=0
[[ -n $PEER_BIN ]] && PHASES=$((PHASES + 6)) PEER_PHASES=1
[[ -z $PG_SKIP ]] && PHASES=$((PHASES + 3)) PG_PHASES=1
est=$(awk -v r="$ROUNDS" -v s="$SECS" -v w="$WARMUP" -v p="$PEER_PHASES" -v g="$PG_PHASES" \
  'BEGIN {printf "%.0f", r * (16 * s + 10 * (s + w) + 4 * (s + w) + 1 + p * (3 * s + 3 * (s + w)) + g * (2 * (s + w) + 1))}')
log "$ROUNDS rounds × $PHASES phases of ${SECS}s (≈ ${est}s)"
for r in $(seq 1 "$ROUNDS"); do
  ROUND=$r
  log "round $r/$ROUNDS"
  for c in "${CONCS[@]}"; do
    # Alternate which side goes first, so drift does not favour one.
    if ((r % 2)); then
      run_wrk a_http "$c" 0; run_wrk b_http "$c" 1; peer_http "$c"
      direct_https "$c"; proxy_https "$c"; peer_https "$c"; proxy_tunnel "$c"
    else
      peer_http "$c"; run_wrk b_http "$c" 1; run_wrk a_http "$c" 0
      proxy_tunnel "$c"; peer_https "$c"; proxy_https "$c"; direct_https "$c"
    fi
  done
  for c in "${PAID_CONCS[@]}"; do
    if ((r % 2)); then
      paid_cached "$c"; seller_free "$c"; pg_cached "$c"
    else
      pg_cached "$c"; seller_free "$c"; paid_cached "$c"
    fi
  done
  if ((r % 2)); then paid_fresh "$r"; pg_paid "$r"; else pg_paid "$r"; paid_fresh "$r"; fi
  # Calibration: the same direct run with wrk on the proxy's core, so every request crosses
  # cores once each way, as each hop of a proxied request does.
  run_wrk x_cross 1 0 0
done
RSS_LOADED_KB=$(rss_kb "$PROXY_PID")
[[ -n $PEER_BIN ]] && PEER_RSS_LOADED_KB=$(rss_kb "$PEER_PID")

# ---------------------------------------------------------------- idle connections (after load)
hold_idle after_load
RSS_IDLE_KB=${IDLE_RSS[after_load]}
PROXY_FDS=${IDLE_FDS[after_load]}
[[ -n $PEER_BIN ]] && hold_idle peer_after_load "$PEER_PID" "$PEER_PORT"

# ---------------------------------------------------------------- ledger throughput
# examples/ledger_bench: the ledgers alone, no proxy: durable begin + settle per payment at
# concurrency 1, 8, 64; SQLite and PostgreSQL (a throw-away cluster of its own) interleaved.
# Unpinned (both cores), after every proxy measurement; its files go in the work directory.
LEDGER_ARGS=("${BENCH_LEDGER_PAYMENTS:-2000}" --max-secs "${BENCH_LEDGER_SECS:-15}" --concurrency "1,8,64" --dir "$WORK")
if [[ -z $PG_SKIP ]]; then LEDGER_ARGS+=(--store both); else LEDGER_ARGS+=(--store sqlite); fi
log "ledger throughput: examples/ledger_bench ${LEDGER_ARGS[*]}"
if ! RUST_BACKTRACE=0 "$LEDGER_BENCH" "${LEDGER_ARGS[@]}" >"$WORK/ledger-bench.txt" 2>"$WORK/ledger-bench.err"; then
  warn "ledger_bench failed: $(tail -3 "$WORK/ledger-bench.err" | tr '\n' ' ')"
fi

# ---------------------------------------------------------------- report
median() { tr ' ' '\n' | awk 'NF' | sort -g | awk '{a[NR] = $1} END {if (NR) print a[int((NR + 1) / 2)]; else print ""}'; }
spread() { # (max-min)/median in %, across rounds
  tr ' ' '\n' | awk 'NF' | sort -g |
    awk '{a[NR] = $1} END {m = a[int((NR + 1) / 2)]; if (NR > 1 && m > 0) printf "%.0f%%", (a[NR] - a[1]) * 100 / m; else print "-"}'
}
get() { median <<<"${RES["$1|$2|$3"]:-}"; }
spr() { spread <<<"${RES["$1|$2|$3"]:-}"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a != "" && b != "" && b > 0) printf "%.2f", a / b; else print "-" }'; }
diffv2() { awk -v a="$1" -v b="$2" 'BEGIN { if (a != "" && b != "" && a != "-" && b != "-") printf "%+.2f", a - b; else print "-" }'; }
diffv() { awk -v a="$1" -v b="$2" 'BEGIN { if (a != "" && b != "") printf "%+.0f", a - b; else print "-" }'; }
mib() { awk -v k="$1" 'BEGIN { if (k != "") printf "%.1f MiB", k / 1024; else print "-" }'; }

declare -A NAME=(
  [a_http]="(a) direct nginx, HTTP (wrk)"
  [b_http]="(b) via proxy, HTTP pass-through (wrk)"
  [c_https]="(c) direct nginx, HTTPS (loadgen)"
  [d_intercept]="(d) via proxy, HTTPS intercepted (loadgen)"
  [t_tunnel]="(t) via proxy, HTTPS CONNECT tunnel (loadgen)"
  [e_cached]="(e) via proxy, L402 cached token (loadgen)"
  [f_free]="(f) via proxy, seller /free pass-through"
  [p_paid]="(p) via proxy, new service: 402→pay→replay"
  [g_cached]="(ge) PG-ledger proxy, L402 cached token"
  [g_paid]="(gp) PG-ledger proxy, new service, paid"
  [x_cross]="(x) direct nginx, HTTP, wrk on core 0"
  [h_http]="(hb) hudsucker, HTTP pass-through (wrk)"
  [h_intercept]="(hd) hudsucker, HTTPS intercepted (loadgen)"
)
declare -A BASELINE=([b_http]=a_http [x_cross]=a_http [d_intercept]=c_https [t_tunnel]=c_https [e_cached]=f_free [p_paid]=f_free
  [h_http]=a_http [h_intercept]=c_https [g_cached]=e_cached [g_paid]=f_free)

echo
REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "unknown revision")
if [[ $REV != unknown* ]] && ! git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null; then
  REV="$REV + uncommitted changes in src/"
fi
echo "l402-proxy benchmark — $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $REV"
echo "medians of $ROUNDS rounds × ${SECS}s (spread = (max−min)/median across rounds); 1 KiB body, keep-alive;"
echo "proxy on core 0, origin + load generator on core 1; ratio and Δp50 are against the row's baseline"
if [[ -n $PEER_BIN ]]; then
  echo "((b),(x),(hb)→(a), (d),(t),(hd)→(c), (e),(p)→(f)); proxy CPU = (utime+stime) delta ÷ every request of the run."
else
  echo "((b),(x)→(a), (d),(t)→(c), (e),(p)→(f)); proxy CPU = (utime+stime) delta ÷ every request of the run."
fi
echo "(x) is a calibration row, no proxy: what crossing cores costs on this machine at c=1; a proxied"
echo "request crosses twice as often. (p): $PAID_N requests per round, each paying for a new service."
if [[ -z $PG_SKIP ]]; then
  echo "(ge),(gp): a second l402-proxy, the same but for store.backend: postgres (a throw-away durable"
  echo "cluster, $PG_VERSION, on core 1), also on core 0, in the same rounds: (ge)→(e), (gp)→(f)."
fi
echo "load average before the run: $LOAD_BEFORE; after: $(cut -d' ' -f1-3 /proc/loadavg) (the run itself keeps ≈ 2 busy;"
echo "other work on the machine before it shows up as spread and latency)"
if [[ -n $PEER_BIN ]]; then
  echo "(hb),(hd): the no-op hudsucker peer, pinned like the proxy (core 0, 1 worker), same origin, same"
  echo "requests (Proxy-Authorization sent, ignored), interleaved in the same rounds: $PEER_BIN"
fi
echo
printf '%-46s %3s %9s %6s %6s %9s %9s %7s %10s %6s\n' scenario c "req/s" spread ratio "p50 µs" "p99 µs" "Δp50" "CPU µs/req" "cpu÷"
printf '%s\n' "$(printf '%.0s-' $(seq 1 121))"
SCENS=(a_http x_cross b_http c_https d_intercept t_tunnel e_cached f_free p_paid)
[[ -n $PEER_BIN ]] && SCENS=(a_http x_cross b_http h_http c_https d_intercept h_intercept t_tunnel e_cached f_free p_paid)
[[ -z $PG_SKIP ]] && SCENS+=(g_cached g_paid)
for scen in "${SCENS[@]}"; do
  concs=("${CONCS[@]}")
  [[ $scen == e_cached || $scen == f_free || $scen == g_cached ]] && concs=("${PAID_CONCS[@]}")
  [[ $scen == x_cross || $scen == p_paid || $scen == g_paid ]] && concs=(1)
  for c in "${concs[@]}"; do
    rps=$(get "$scen" "$c" rps)
    p50=$(get "$scen" "$c" p50)
    p99=$(get "$scen" "$c" p99)
    cpu=$(get "$scen" "$c" cpu)
    base=${BASELINE[$scen]:-}
    rr="" dp="" cr=""
    if [[ -n $base ]]; then
      rr=$(ratio "$rps" "$(get "$base" "$c" rps)")
      dp=$(diffv "$p50" "$(get "$base" "$c" p50)")
      [[ $scen == e_cached || $scen == g_cached ]] && cr=$(ratio "$cpu" "$(get "$base" "$c" cpu)")
    fi
    printf '%-46s %3s %9s %6s %6s %9s %9s %7s %10s %6s\n' "${NAME[$scen]}" "$c" "${rps:--}" "$(spr "$scen" "$c" rps)" \
      "${rr:--}" "${p50:--}" "${p99:--}" "${dp:--}" "${cpu:--}" "${cr:--}"
  done
done
echo
sub_kb() { awk -v a="$1" -v b="$2" 'BEGIN { if (a != "" && b != "") print a - b; else print "" }'; }
echo "proxy RSS (VmRSS): at start $(mib "$RSS_START_KB");"
echo "  fresh, with $IDLE_CONNS idle keep-alive connections: $(mib "${IDLE_RSS[fresh]}") (+$(mib "$(sub_kb "${IDLE_RSS[fresh]}" "$RSS_START_KB")"), proxy fds open: ${IDLE_FDS[fresh]:--}); after they closed: $(mib "$RSS_FRESH_AFTER_KB")"
echo "  after all the load: $(mib "$RSS_LOADED_KB"); then with $IDLE_CONNS idle connections: $(mib "$RSS_IDLE_KB") (+$(mib "$(sub_kb "$RSS_IDLE_KB" "$RSS_LOADED_KB")"), fds open: ${PROXY_FDS:--})"
echo
echo "ledger throughput (examples/ledger_bench ${LEDGER_ARGS[*]}; no proxy, both cores, after the rounds):"
if [[ -s $WORK/ledger-bench.txt ]]; then sed 's/^/  /' "$WORK/ledger-bench.txt"; else echo "  - (failed, see warnings)"; fi
[[ -n $PG_SKIP ]] && echo "  PostgreSQL skipped: $PG_SKIP"
if [[ -n $PEER_BIN ]]; then
  echo "hudsucker RSS (VmRSS): at start $(mib "$PEER_RSS_START_KB");"
  echo "  fresh, with $IDLE_CONNS idle keep-alive connections: $(mib "${IDLE_RSS[peer_fresh]}") (+$(mib "$(sub_kb "${IDLE_RSS[peer_fresh]}" "$PEER_RSS_START_KB")"), fds open: ${IDLE_FDS[peer_fresh]:--}); after they closed: $(mib "$PEER_RSS_FRESH_AFTER_KB")"
  echo "  after all the load: $(mib "$PEER_RSS_LOADED_KB"); then with $IDLE_CONNS idle connections: $(mib "${IDLE_RSS[peer_after_load]}") (+$(mib "$(sub_kb "${IDLE_RSS[peer_after_load]}" "$PEER_RSS_LOADED_KB")"), fds open: ${IDLE_FDS[peer_after_load]:--})"
  echo
  echo "l402-proxy ÷ hudsucker, proxy CPU per request, same run, c=16 (target ≤ 0.70):" \
    "HTTP pass-through (b)/(hb) $(ratio "$(get b_http 16 cpu)" "$(get h_http 16 cpu)")," \
    "HTTPS intercepted (d)/(hd) $(ratio "$(get d_intercept 16 cpu)" "$(get h_intercept 16 cpu)")"
fi
echo
echo "against the targets (shared/BENCHMARKING.md; c=16 unless said):"
printf '  %-58s %10s   target %s\n' \
  "proxy CPU µs/req, HTTP pass-through (b)" "$(get b_http 16 cpu)" "≤ 12" \
  "proxy CPU µs/req, HTTPS intercepted (d)" "$(get d_intercept 16 cpu)" "≤ 12" \
  "HTTP req/s via proxy ÷ direct (b/a)" "$(ratio "$(get b_http 16 rps)" "$(get a_http 16 rps)")" "≥ 0.65" \
  "p50 at c=1, HTTP via proxy (b), µs" "$(get b_http 1 p50)" "≤ 30 (peers quote p50 itself)" \
  "p50 added at c=1, HTTP (b − a), µs" "$(diffv "$(get b_http 1 p50)" "$(get a_http 1 p50)")" "≤ 30" \
  "RSS with $IDLE_CONNS idle connections, fresh proxy" "$(mib "${IDLE_RSS[fresh]}")" "≤ 20 MiB" \
  "RSS with $IDLE_CONNS idle connections, after the load" "$(mib "$RSS_IDLE_KB")" "≤ 20 MiB" \
  "cached-token CPU ÷ pass-through CPU (e/f)" "$(ratio "$(get e_cached 16 cpu)" "$(get f_free 16 cpu)")" "≤ 1.05" \
  "cached-token req/s ÷ pass-through req/s (e/f)" "$(ratio "$(get e_cached 16 rps)" "$(get f_free 16 rps)")" "≥ 0.95" \
  "paid request (p), c=1: p50 / p99, µs" "$(get p_paid 1 p50) / $(get p_paid 1 p99)" "p99 ≤ 2000 + wallet pay time (dev: ≈ 0) + (f) p99 $(get f_free 1 p99)" \
  "paid p99 beyond the wallet's pay time, SQLite ((p) − (f)), µs" "$(diffv "$(get p_paid 1 p99)" "$(get f_free 1 p99)")" "≤ 2000 (the dev wallet pays at once)"
if [[ -z $PG_SKIP ]]; then
  printf '  %-58s %10s   target %s\n' \
    "paid request, PostgreSQL ledger (gp), c=1: p50 / p99, µs" "$(get g_paid 1 p50) / $(get g_paid 1 p99)" "p99 ≤ 5000 + wallet pay time (dev: ≈ 0) + (f) p99 $(get f_free 1 p99)" \
    "paid p99 beyond the wallet's pay time, PostgreSQL ((gp) − (f)), µs" "$(diffv "$(get g_paid 1 p99)" "$(get f_free 1 p99)")" "≤ 5000 (the dev wallet pays at once)" \
    "cached-token CPU, PostgreSQL ÷ SQLite ledger (ge/e)" "$(ratio "$(get g_cached 16 cpu)" "$(get e_cached 16 cpu)")" "≈ 1.00 (never waits on the database)" \
    "cached-token req/s, PostgreSQL ÷ SQLite ledger (ge/e)" "$(ratio "$(get g_cached 16 rps)" "$(get e_cached 16 rps)")" "≈ 1.00"
  printf '  %-58s %10s   %s\n' \
    "paid p50 / p99, PostgreSQL − SQLite ledger ((gp) − (p)), µs" \
    "$(diffv "$(get g_paid 1 p50)" "$(get p_paid 1 p50)") / $(diffv "$(get g_paid 1 p99)" "$(get p_paid 1 p99)")" "(reference, no target)" \
    "PostgreSQL write transactions per paid request (gp)" "$(get g_paid 1 xacts)" "(reference: each a durable commit, heartbeats included)"
else
  echo "  PostgreSQL ledger skipped: $PG_SKIP"
fi
if [[ -n $PEER_BIN ]]; then
  printf '  %-58s %10s   target %s\n' \
    "proxy CPU ÷ hudsucker's, HTTP pass-through (b/hb)" "$(ratio "$(get b_http 16 cpu)" "$(get h_http 16 cpu)")" "≤ 0.70" \
    "proxy CPU ÷ hudsucker's, HTTPS intercepted (d/hd)" "$(ratio "$(get d_intercept 16 cpu)" "$(get h_intercept 16 cpu)")" "≤ 0.70" \
    "HTTP req/s ÷ direct, l402-proxy − hudsucker (b/a − hb/a)" \
    "$(diffv2 "$(ratio "$(get b_http 16 rps)" "$(get a_http 16 rps)")" "$(ratio "$(get h_http 16 rps)" "$(get a_http 16 rps)")")" "≥ +0.05" \
    "p50 at c=1, HTTP, l402-proxy ÷ hudsucker (b/hb)" "$(ratio "$(get b_http 1 p50)" "$(get h_http 1 p50)")" "≤ 0.80 (hb: $(get h_http 1 p50) µs)"
  printf '  %-58s %10s   %s\n' \
    "HTTP req/s via hudsucker ÷ direct (hb/a)" "$(ratio "$(get h_http 16 rps)" "$(get a_http 16 rps)")" "(reference, no target)" \
    "RSS with $IDLE_CONNS idle connections, hudsucker after the load" "$(mib "${IDLE_RSS[peer_after_load]}")" "(reference, no target)"
fi
echo
echo "peers (BENCHMARKING.md): hudsucker 16.8 µs/req HTTP, 15.5 HTTPS, 0.51 of direct, p50 42 µs, 34.6 MiB;"
echo "squid 41.4 / 12.7 (tunnel), 0.19, 73 µs, 50.2 MiB. Differences below the spread column are noise."
if [[ -z $PEER_BIN ]]; then
  echo "hudsucker peer skipped: set BENCH_PEER_HUDSUCKER=/path/to/hudsucker-bench (a release build, see bench/README.md) to measure it in this run."
fi
if ((${#WARNINGS[@]})); then
  echo
  echo "warnings:"
  printf '  - %s\n' "${WARNINGS[@]}"
fi
kill "$SELLER_PID" "$SELLER2_PID" 2>/dev/null || true
wait "$SELLER_PID" "$SELLER2_PID" 2>/dev/null || true
echo
PROXIES=1
[[ -z $PG_SKIP ]] && PROXIES=2
echo "seller counters: (e)/(f) seller: $(sed -n 's/^seller challenges=/challenges=/p' "$WORK/seller.out") (expected $PROXIES challenge(s), $PROXIES paid: one per proxy);"
echo "                 (p) seller: $(sed -n 's/^seller challenges=/challenges=/p' "$WORK/seller2.out") (expected $((PAID_N * ROUNDS * PROXIES)) paid)"
