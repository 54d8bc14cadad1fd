#!/usr/bin/env bash
# l402-proxy connection load: many concurrent connections, bounded by the proxy's timeouts and caps.
# Not part of CI. Prints the proxy's RSS and open fds before, while and after the connections
# are held, and how long the header-read timeout took to close them.
#
#   bench/connections.sh
#   CONN_N=2000 CONN_TIMEOUT=3 bench/connections.sh
#
# Phases (one proxy process for 1 and 2, a fresh one for 3):
#   1. idle:      CONN_N connections, each completes one authenticated free request
#                 (Proxy-Authorization: Basic …, GET /free/x on the demo seller), then sits idle
#                 (keep-alive) until the proxy's header-read timeout closes it;
#   2. slowloris: CONN_N connections that send a partial request line and never finish it;
#   3. per-source cap: http.max_unauthenticated_per_source at its default (256), CONN_N3
#                 half-sent requests from one source (127.0.0.1): how many are refused at accept;
#                 one authenticated request from another source (127.0.0.2) must still pass.
#
# Environment (all optional):
#   CARGO_TARGET_DIR  where cargo builds (default: target/ in the repo)
#   CONN_N            connections in phases 1 and 2 (default 5000)
#   CONN_N3           half-sent requests in phase 3 (default 2000)
#   CONN_TIMEOUT      http.header_read_timeout_secs (default 5)
#   CONN_CONCURRENCY  connections being opened at once (default 64)
#   CONN_RATE         at most this many connections opened per second (default 2500: 5,000 in
#                     2 s, well inside the timeout, so all are held at once; without a rate the
#                     half-sent ones outrun the proxy's accept loop, the listen backlog (1024)
#                     fills and the kernel drops SYNs, retransmitted only after 1 s)
#   CONN_PORT_BASE    proxy on +0, its admin listener (/metrics) on +1 (default 18600)
#   CONN_KEEP=1       keep the work directory (configs, logs)
# Figures are printed, never asserted: the exit status says only whether the run worked.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
N=${CONN_N:-5000}
N3=${CONN_N3:-2000}
TIMEOUT=${CONN_TIMEOUT:-5}
CONC=${CONN_CONCURRENCY:-64}
RATE=${CONN_RATE:-2500}
BASE=${CONN_PORT_BASE:-18600}
PROXY_PORT=$((BASE + 0))
ADMIN_PORT=$((BASE + 1))
AGENT=conn
AGENT_KEY=conn-key-$RANDOM$RANDOM
ADMIN_TOKEN=conn-admin-$RANDOM$RANDOM
T_START=$(date +%s)

log() { printf '[conn %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ---------------------------------------------------------------- open-file limit
# The client holds N sockets and the proxy N more (plus its upstream pool): raise soft to hard.
need=$((N + 512))
if (($(ulimit -n) < need)); then
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
fi
if (($(ulimit -n) < need)); then
  echo "open-file limit $(ulimit -n) (hard $(ulimit -Hn)) is below the $need needed for CONN_N=$N" >&2
  exit 2
fi

log "building (release) into $CARGO_TARGET_DIR"
(cd "$ROOT" && cargo build --release --quiet --bin l402-proxy --example bench_seller --example connload)
BIN=$CARGO_TARGET_DIR/release/l402-proxy
SELLER=$CARGO_TARGET_DIR/release/examples/bench_seller
CONNLOAD=$CARGO_TARGET_DIR/release/examples/connload
T_BUILT=$(date +%s)

# ---------------------------------------------------------------- processes and cleanup
WORK=$(mktemp -d "${TMPDIR:-/tmp}/l402-conn.XXXXXX")
PIDS=()
KEEP=${CONN_KEEP:-0}
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"
cleanup() {
  local status=$?
  stop_started
  remove_work
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

require_free_ports CONN_PORT_BASE "$PROXY_PORT" "$ADMIN_PORT"
# metric NAME-PREFIX: the sum of every series whose name (with labels) starts with it.
metric() {
  curl -s --max-time 2 "http://127.0.0.1:$ADMIN_PORT/metrics" |
    awk -v n="$1" 'index($1, n) == 1 {s += $2; f = 1} END {if (f) printf "%d", s; else print "?"}'
}
kv() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" <<<"$2"; }

# ---------------------------------------------------------------- the demo seller
log "L402 seller (examples/bench_seller), core 1"
taskset -c 1 "$SELLER" "$WORK/seller-ca.pem" >"$WORK/seller.out" 2>"$WORK/seller.err" &
PIDS+=($!)
for _ in $(seq 1 200); do
  grep -q '^seller http=' "$WORK/seller.out" 2>/dev/null && break
  sleep 0.05
done
SELLER_HTTP=$(sed -n 's/^seller http=\([0-9]*\) .*/\1/p' "$WORK/seller.out")
[[ -n $SELLER_HTTP ]] || { echo "seller did not start" >&2; cat "$WORK/seller.err" >&2; exit 1; }
URL=http://127.0.0.1:$SELLER_HTTP/free/x

# ---------------------------------------------------------------- the proxy
KEY_SHA=$(printf '%s' "$AGENT_KEY" | "$BIN" hash-key)
export L402_CONN_ADMIN_TOKEN=$ADMIN_TOKEN
# write_config FILE [extra http: lines…]
write_config() {
  local file=$1
  shift
  {
    cat <<EOF
listen: 127.0.0.1:$PROXY_PORT
tls:
  ca_cert: ca.pem
  ca_key: ca-key.pem
  intercept: ["localhost"]
guard: { allow_private: true }
wallet: { backend: dev, network: regtest }
store: { path: l402-proxy.db }
admin: { listen: 127.0.0.1:$ADMIN_PORT, token_env: L402_CONN_ADMIN_TOKEN }
http:
  header_read_timeout_secs: $TIMEOUT
  # The proxy's own pool to the seller empties before the "after" figures are read.
  pool_idle_secs: 2
EOF
    for line in "$@"; do printf '  %s\n' "$line"; done
    cat <<EOF
agents:
  - name: $AGENT
    key_sha256: "$KEY_SHA"
EOF
  } >"$file"
}
MAXC=$((N + N3 + 1000 > 10000 ? N + N3 + 1000 : 10000))
write_config "$WORK/proxy-high.yaml" "max_unauthenticated_per_source: $((N + 1000))" "max_connections: $MAXC"
write_config "$WORK/proxy-default.yaml"
PROXY_PID=""
start_proxy() {
  log "proxy on 127.0.0.1:$PROXY_PORT ($(basename "$1")), core 0"
  taskset -c 0 "$BIN" run --config "$1" >>"$WORK/proxy.out" 2>>"$WORK/proxy.err" &
  PROXY_PID=$!
  PIDS+=("$PROXY_PID")
  wait_port "$PROXY_PORT"
  wait_port "$ADMIN_PORT"
}
stop_proxy() {
  kill "$PROXY_PID" 2>/dev/null || true
  wait "$PROXY_PID" 2>/dev/null || true
  for _ in $(seq 1 100); do port_open "$PROXY_PORT" || break; sleep 0.05; done
}

# ---------------------------------------------------------------- one phase
# phase NAME MODE COUNT [connload args…]: before / held / after figures into R[NAME|…].
declare -A R
phase() {
  local name=$1 mode=$2 count=$3 out pid line done_line
  shift 3
  out=$WORK/connload-$name.out
  : >"$out"
  sleep 0.5
  R[$name|rss0]=$(rss_kb "$PROXY_PID")
  R[$name|fd0]=$(fds "$PROXY_PID")
  R[$name|ref0]=$(metric 'l402_proxy_unauthenticated_closed_total{why="max_unauthenticated_per_source"}')
  log "phase $name: $count connections ($mode), $CONC being opened at once, at most $RATE/s"
  taskset -c 1 "$CONNLOAD" --proxy "127.0.0.1:$PROXY_PORT" --mode "$mode" -n "$count" \
    --concurrency "$CONC" --rate "$RATE" --url "$URL" --wait $((TIMEOUT * 2 + 10)) \
    --refused-secs "$(awk -v t="$TIMEOUT" 'BEGIN {print t / 2}')" "$@" \
    >"$out" 2>"$WORK/connload-$name.err" &
  pid=$!
  PIDS+=("$pid")
  for _ in $(seq 1 1200); do
    grep -q '^ready' "$out" && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  line=$(grep '^ready' "$out" || true)
  [[ -n $line ]] || { echo "phase $name: connload never got ready: $(cat "$WORK/connload-$name.err")" >&2; exit 1; }
  # All opened: the figures while they are held.
  R[$name|rss1]=$(rss_kb "$PROXY_PID")
  R[$name|fd1]=$(fds "$PROXY_PID")
  R[$name|open1]=$(metric l402_proxy_open_connections)
  R[$name|opened]=$(kv opened "$line")
  R[$name|failed]=$(kv failed "$line")
  R[$name|ramp]=$(kv ramp_s "$line")
  wait "$pid" || { echo "phase $name: connload failed: $(cat "$WORK/connload-$name.err")" >&2; exit 1; }
  done_line=$(grep '^done' "$out")
  R[$name|probe]=$(grep '^probe' "$out" | sed 's/^probe //' || true)
  for k in refused closed still_open life_min_s life_max_s all_closed_s; do
    R[$name|$k]=$(kv "$k" "$done_line")
  done
  sleep 1 # the proxy finishes tearing the last connections down
  R[$name|rss2]=$(rss_kb "$PROXY_PID")
  R[$name|fd2]=$(fds "$PROXY_PID")
  R[$name|open2]=$(metric l402_proxy_open_connections)
  R[$name|ref2]=$(metric 'l402_proxy_unauthenticated_closed_total{why="max_unauthenticated_per_source"}')
  if [[ -s $WORK/connload-$name.err ]]; then
    log "phase $name: connload said: $(head -c 300 "$WORK/connload-$name.err")"
  fi
}

start_proxy "$WORK/proxy-high.yaml"
RSS_START=$(rss_kb "$PROXY_PID")
phase idle idle "$N" --proxy-auth "$AGENT:$AGENT_KEY"
phase slowloris slowloris "$N"
stop_proxy
start_proxy "$WORK/proxy-default.yaml"
phase cap slowloris "$N3" --source 127.0.0.1 --probe-from 127.0.0.2 --proxy-auth "$AGENT:$AGENT_KEY"
T_END=$(date +%s)

# ---------------------------------------------------------------- report
per_conn() { # KiB per held connection, from the RSS delta
  awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN { if (n > 0) printf "%.1f", (b - a) / n; else print "-" }'
}
echo
echo "l402-proxy connection load — $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, ulimit -n $(ulimit -n)"
echo "proxy: taskset -c 0, header_read_timeout_secs=$TIMEOUT, pool_idle_secs=2; client (examples/connload, $CONC opening at once, ≤ $RATE/s) and seller on core 1"
echo "proxy RSS at start: ${RSS_START} KiB"
echo
printf '| phase | conns | held | RSS KiB before / held / after | fds before / held / after | KiB per conn | closed by timeout | refused at accept | still open | idle → close s (min–max) | last closed s after ready |\n'
printf '|---|---|---|---|---|---|---|---|---|---|---|\n'
for name in idle slowloris cap; do
  case $name in
    idle) label="1 idle keep-alive (1 request each)"; count=$N ;;
    slowloris) label="2 slowloris (partial request line)"; count=$N ;;
    cap) label="3 slowloris, default per-source cap 256"; count=$N3 ;;
  esac
  held=${R[$name|open1]}
  # KiB per connection: over the connections the proxy held (its own gauge), not those refused.
  printf '| %s | %s | %s | %s / %s / %s | %s / %s / %s | %s | %s | %s | %s | %s–%s | %s |\n' \
    "$label" "$count" "$held" \
    "${R[$name|rss0]}" "${R[$name|rss1]}" "${R[$name|rss2]}" \
    "${R[$name|fd0]}" "${R[$name|fd1]}" "${R[$name|fd2]}" \
    "$(per_conn "${R[$name|rss0]}" "${R[$name|rss1]}" "$held")" \
    "${R[$name|closed]}" "${R[$name|refused]}" "${R[$name|still_open]}" \
    "${R[$name|life_min_s]}" "${R[$name|life_max_s]}" "${R[$name|all_closed_s]:--}"
done
echo
echo "opening: idle ${R[idle|opened]} ok / ${R[idle|failed]} failed in ${R[idle|ramp]} s;" \
  "slowloris ${R[slowloris|opened]} in ${R[slowloris|ramp]} s; cap ${R[cap|opened]} in ${R[cap|ramp]} s"
refused_metric="?"
if [[ ${R[cap|ref2]} != "?" && ${R[cap|ref0]} != "?" ]]; then refused_metric=$((R[cap|ref2] - R[cap|ref0])); fi
echo "phase 3: l402_proxy_unauthenticated_closed_total{why=\"max_unauthenticated_per_source\"} +$refused_metric;" \
  "another source meanwhile: ${R[cap|probe]:-not probed}"
echo "open connections (proxy gauge) after each phase: idle ${R[idle|open2]}, slowloris ${R[slowloris|open2]}, cap ${R[cap|open2]}"
echo "wall time: $((T_END - T_BUILT)) s after the build ($((T_END - T_START)) s in all)"
for name in idle slowloris cap; do
  [[ ${R[$name|still_open]} == 0 ]] || echo "WARNING: phase $name: ${R[$name|still_open]} connections were still open after $((TIMEOUT * 2 + 10)) s"
done
[[ ${R[idle|failed]} == 0 ]] || echo "WARNING: phase idle: ${R[idle|failed]} connections failed their request (see $WORK/connload-idle.err; CONN_KEEP=1 keeps it)"
