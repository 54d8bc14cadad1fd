#!/usr/bin/env bash
# l402-proxy soak: mixed traffic (free, paid for new services, cached token, HTTPS intercepted,
# blind CONNECT tunnels) from several agents for SOAK_SECS, printing the proxy's RSS and open fds
# every 10 s, then a summary and a verdict on whether both stayed bounded. Not part of CI.
#
#   bench/soak.sh                 # 10 minutes
#   SOAK_SECS=60 bench/soak.sh    # a short run
#
# Environment (all optional):
#   CARGO_TARGET_DIR  where cargo builds (default: target/ in the repo)
#   SOAK_SECS         seconds of traffic (default 600, at least 20)
#   SOAK_PORT_BASE    proxy on +0, its admin listener (/metrics) on +1 (default 18700)
#   SOAK_STREAMS      the traffic streams (default: all of "free cached paid_a paid_b https
#                     tunnel churn"; e.g. leave out paid_a paid_b to see RSS without payments)
#   SOAK_KEEP=1       keep the work directory (configs, logs, per-slot loadgen output)
# Figures are printed; the verdict is printed, never the exit status: that says only whether
# the run itself worked.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
SOAK_SECS=${SOAK_SECS:-600}
BASE=${SOAK_PORT_BASE:-18700}
PROXY_PORT=$((BASE + 0))
ADMIN_PORT=$((BASE + 1))
SLOT=10          # seconds per report line (and per loadgen run)
POOL_IDLE=5      # http.pool_idle_secs: the upstream pool empties this long after the traffic
PAID_HEADER=x-l402-proxy-paid-msat
CLK_TCK=$(getconf CLK_TCK)
AGENTS=(soak1 soak2 soak3 soak4)
declare -A KEY
for a in "${AGENTS[@]}"; do KEY[$a]=$a-key-$RANDOM$RANDOM; done
export L402_SOAK_ADMIN_TOKEN=soak-admin-$RANDOM$RANDOM

if ! [[ $SOAK_SECS =~ ^[0-9]+$ ]] || ((SOAK_SECS < 20)); then
  echo "SOAK_SECS must be a whole number of seconds, at least 20" >&2
  exit 2
fi
log() { printf '[soak %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

log "building (release) into $CARGO_TARGET_DIR"
(cd "$ROOT" && cargo build --release --quiet --bin l402-proxy --example loadgen --example bench_seller)
BIN=$CARGO_TARGET_DIR/release/l402-proxy
LOADGEN=$CARGO_TARGET_DIR/release/examples/loadgen
SELLER=$CARGO_TARGET_DIR/release/examples/bench_seller

# ---------------------------------------------------------------- processes and cleanup
WORK=$(mktemp -d "${TMPDIR:-/tmp}/l402-soak.XXXXXX")
PIDS=()
KEEP=${SOAK_KEEP:-0}
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

require_free_ports SOAK_PORT_BASE "$PROXY_PORT" "$ADMIN_PORT"
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
METRICS=$WORK/metrics.txt
scrape() { curl -s --max-time 2 "http://127.0.0.1:$ADMIN_PORT/metrics" >"$METRICS" || : >"$METRICS"; }
# from_metrics NAME [LABEL-SUBSTRING]: the sum of the matching series in the last scrape.
from_metrics() {
  awk -v n="$1" -v l="${2:-}" '
    { name = $1; sub(/\{.*/, "", name) }
    name == n && index($1, l) {s += $2} END {printf "%d", s}' "$METRICS"
}

# ---------------------------------------------------------------- two demo sellers
# seller 1: /free, the cached /weather/today, HTTPS (intercepted as localhost, tunnelled as
# 127.0.0.1); seller 2: the new services paid for all along (the proxy keeps at most 16 tokens
# per origin, so they must not share seller 1's origin and evict its cached tokens).
start_seller() { # start_seller NAME → sets S_PID, S_HTTP, S_HTTPS
  taskset -c 1 "$SELLER" "$WORK/$1-ca.pem" >"$WORK/$1.out" 2>"$WORK/$1.err" &
  S_PID=$!
  PIDS+=("$S_PID")
  for _ in $(seq 1 200); do
    grep -q '^seller http=' "$WORK/$1.out" 2>/dev/null && break
    sleep 0.05
  done
  S_HTTP=$(sed -n 's/^seller http=\([0-9]*\) .*/\1/p' "$WORK/$1.out")
  S_HTTPS=$(sed -n 's/^seller .* https=\([0-9]*\).*/\1/p' "$WORK/$1.out")
  [[ -n $S_HTTP && -n $S_HTTPS ]] || { echo "$1 did not start" >&2; cat "$WORK/$1.err" >&2; exit 1; }
}
log "two L402 sellers (examples/bench_seller), core 1"
start_seller seller1
S1_PID=$S_PID S1_HTTP=$S_HTTP S1_HTTPS=$S_HTTPS
start_seller seller2
S2_PID=$S_PID S2_HTTP=$S_HTTP

# ---------------------------------------------------------------- the proxy
{
  cat <<EOF
listen: 127.0.0.1:$PROXY_PORT
tls:
  ca_cert: ca.pem
  ca_key: ca-key.pem
  intercept: ["localhost"]
  upstream_roots: ["seller1-ca.pem", "seller2-ca.pem"]
guard: { allow_private: true }
wallet:
  backend: dev
  network: regtest
  dev: { balance_sats: 100000000000 }
store: { path: l402-proxy.db }
admin: { listen: 127.0.0.1:$ADMIN_PORT, token_env: L402_SOAK_ADMIN_TOKEN }
http: { pool_idle_secs: $POOL_IDLE }
agents:
EOF
  # Limits are set (so every payment goes through the budget windows and rate buckets) but
  # high enough never to run out during the soak: a payment is 10 sats.
  for a in "${AGENTS[@]}"; do
    cat <<EOF
  - name: $a
    key_sha256: "$(printf '%s' "${KEY[$a]}" | "$BIN" hash-key)"
    limits:
      per_request_sats: 100
      hourly_sats: 1000000000
      daily_sats: 1000000000
      total_sats: 10000000000
      requests_per_minute: 10000000
      payments_per_minute: 10000000
EOF
  done
} >"$WORK/proxy.yaml"
log "proxy on 127.0.0.1:$PROXY_PORT, core 0"
taskset -c 0 "$BIN" run --config "$WORK/proxy.yaml" >"$WORK/proxy.out" 2>"$WORK/proxy.err" &
PROXY_PID=$!
PIDS+=("$PROXY_PID")
wait_port "$PROXY_PORT"
wait_port "$ADMIN_PORT"

# ---------------------------------------------------------------- the traffic
via() { echo --proxy "127.0.0.1:$PROXY_PORT" --proxy-auth "$1:${KEY[$1]}"; }
# stream NAME: the loadgen arguments of one stream (concurrency, agent, target); $SLOT_ID
# makes the paid streams' services new in every slot (loadgen adds -N per request).
# shellcheck disable=SC2046 # via's output is meant to split into words
stream_args() {
  case $1 in
    free) echo -c 4 $(via soak1) --url "http://127.0.0.1:$S1_HTTP/free/x" ;;
    cached) echo -c 4 $(via soak2) --url "http://127.0.0.1:$S1_HTTP/weather/today" --flag-header "$PAID_HEADER" ;;
    paid_a) echo -c 1 $(via soak3) --vary-service --url "http://127.0.0.1:$S2_HTTP/a$SLOT_ID/x" --flag-header "$PAID_HEADER" ;;
    paid_b) echo -c 1 $(via soak4) --vary-service --url "http://127.0.0.1:$S2_HTTP/b$SLOT_ID/x" --flag-header "$PAID_HEADER" ;;
    https) echo -c 2 $(via soak2) --url "https://localhost:$S1_HTTPS/weather/today" --cacert "$WORK/ca.pem" --flag-header "$PAID_HEADER" ;;
    tunnel) echo -c 2 $(via soak4) --url "https://127.0.0.1:$S1_HTTPS/free/x" --cacert "$WORK/seller1-ca.pem" ;;
    # Short-lived tunnels: 2 connections × 5 requests, again and again (CONNECT churn).
    churn) echo -c 2 --count 5 $(via soak1) --url "https://127.0.0.1:$S1_HTTPS/free/x" --cacert "$WORK/seller1-ca.pem" ;;
  esac
}
SLOT_ID=w
read -r -a STREAMS <<<"${SOAK_STREAMS:-free cached paid_a paid_b https tunnel churn}"
CONNS=0
for s in "${STREAMS[@]}"; do
  c=$(stream_args "$s" | awk '{print $2}')
  [[ -n $c ]] || { echo "SOAK_STREAMS: unknown stream $s" >&2; exit 2; }
  CONNS=$((CONNS + c))
done

# Warm-up: every stream once (the cached streams pay for their token here), then let the
# upstream pool empty so the baseline fds hold no pooled connection.
log "warm-up: one request per stream"
SLOT_ID=w
for s in "${STREAMS[@]}"; do
  # shellcheck disable=SC2046
  "$LOADGEN" $(stream_args "$s" | sed 's/-c [0-9]*/-c 1/; s/--count [0-9]*//') --count 1 >"$WORK/warmup-$s.txt" 2>>"$WORK/loadgen.err"
  grep -q 'errors=0 bad_status=0' "$WORK/warmup-$s.txt" || { echo "warm-up $s failed: $(cat "$WORK/warmup-$s.txt")" >&2; tail -3 "$WORK/loadgen.err" >&2; exit 1; }
done
sleep $((POOL_IDLE + 2))
RSS_START=$(rss_kb "$PROXY_PID")
FDS_START=$(fds "$PROXY_PID")
scrape
PAY0=$(from_metrics l402_proxy_payments_total 'outcome="succeeded"')

# One RSS sample a second, for the peak.
(
  while kill -0 "$PROXY_PID" 2>/dev/null; do
    rss_kb "$PROXY_PID" 2>/dev/null || true
    sleep 1
  done
) >"$WORK/rss.log" &
PIDS+=($!)

# run_stream NAME SECS: one loadgen run (or, for churn, runs back to back) for SECS seconds.
run_stream() {
  local s=$1 secs=$2 out=$WORK/slot-$SLOT_ID-$1.txt
  if [[ $s == churn ]]; then
    local until=$(($(date +%s%N) + secs * 1000000000))
    while (($(date +%s%N) < until)); do
      # shellcheck disable=SC2046
      taskset -c 1 "$LOADGEN" $(stream_args "$s") | tail -1 >>"$out"
    done
  else
    # shellcheck disable=SC2046
    taskset -c 1 "$LOADGEN" $(stream_args "$s") -d "$secs" --warmup 0 | tail -1 >"$out"
  fi
} 2>>"$WORK/loadgen.err"

OK=0 ERR=0 UNPAID=0 PAIDCACHED=0
REF_AT=$((SOAK_SECS / 2 < 60 ? SOAK_SECS / 2 : 60))
REF_AT=$(((REF_AT + SLOT - 1) / SLOT * SLOT)) # the first report line at or after it
RSS_REF="" LAST_RSS=""
log "soak: ${SOAK_SECS}s of ${STREAMS[*]} ($CONNS connections at a time); a line every ${SLOT}s"
printf '%8s %9s %6s %10s %8s %9s %7s %6s %5s\n' elapsed rss_KiB fds ok errors payments req/s cpu% conns
T0=$(date +%s)
elapsed=0
slot=0
while ((elapsed < SOAK_SECS)); do
  secs=$((SOAK_SECS - elapsed < SLOT ? SOAK_SECS - elapsed : SLOT))
  SLOT_ID=$slot
  c0=$(cpu_ticks "$PROXY_PID")
  w0=$(date +%s%N)
  jobs_=()
  for s in "${STREAMS[@]}"; do
    run_stream "$s" "$secs" &
    jobs_+=($!)
  done
  for j in "${jobs_[@]}"; do wait "$j" || true; done
  w1=$(date +%s%N)
  c1=$(cpu_ticks "$PROXY_PID")
  slot_ok=0
  for s in "${STREAMS[@]}"; do
    f=$WORK/slot-$SLOT_ID-$s.txt
    [[ -s $f ]] || { ERR=$((ERR + 1)); log "slot $slot: $s printed nothing"; continue; }
    read -r t e b g < <(awk '{
        for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] += kv[2] }
      } END { printf "%d %d %d %d\n", v["total"], v["errors"], v["bad_status"], v["flagged"] }' "$f")
    slot_ok=$((slot_ok + t - b))
    ERR=$((ERR + e + b))
    case $s in
      paid_*) UNPAID=$((UNPAID + t - g)) ;;       # every request must have paid
      cached | https) PAIDCACHED=$((PAIDCACHED + g)) ;; # none should have
    esac
  done
  OK=$((OK + slot_ok))
  elapsed=$(($(date +%s) - T0))
  scrape
  rss=$(rss_kb "$PROXY_PID")
  LAST_RSS=$rss
  pay=$(($(from_metrics l402_proxy_payments_total 'outcome="succeeded"') - PAY0))
  if [[ -z $RSS_REF && $elapsed -ge $REF_AT ]]; then RSS_REF=$rss PAY_REF=$pay T_REF=$elapsed; fi
  LAST_PAY=$pay LAST_T=$elapsed
  printf '%7ds %9s %6s %10s %8s %9s %7s %6s %5s\n' "$elapsed" "$rss" "$(fds "$PROXY_PID")" "$OK" "$ERR" "$pay" \
    "$(awk -v n="$slot_ok" -v a="$w0" -v b="$w1" 'BEGIN {printf "%.0f", n / ((b - a) / 1e9)}')" \
    "$(awk -v d=$((c1 - c0)) -v a="$w0" -v b="$w1" -v hz="$CLK_TCK" 'BEGIN {printf "%.0f", 100 * d / hz / ((b - a) / 1e9)}')" \
    "$(from_metrics l402_proxy_open_connections)"
  slot=$((slot + 1))
done
[[ -n $RSS_REF ]] || { RSS_REF=$LAST_RSS PAY_REF=$LAST_PAY T_REF=$LAST_T; }

# ---------------------------------------------------------------- summary
log "traffic stopped; waiting $((POOL_IDLE + 3))s for the upstream pool to empty"
sleep $((POOL_IDLE + 3))
RSS_END=$(rss_kb "$PROXY_PID")
FDS_END=$(fds "$PROXY_PID")
RSS_PEAK=$(sort -n "$WORK/rss.log" | tail -1)
scrape
PAYMENTS=$(($(from_metrics l402_proxy_payments_total 'outcome="succeeded"') - PAY0))
PAY_FAILED=$(from_metrics l402_proxy_payments_total 'outcome="failed"')
DECLINES=$(from_metrics l402_proxy_declines_total)
TUNNELS=$(from_metrics l402_proxy_connects_total 'mode="tunnel"')
INTERCEPTS=$(from_metrics l402_proxy_connects_total 'mode="intercept"')
DB_KB=$(du -k "$WORK/l402-proxy.db" 2>/dev/null | cut -f1)
for p in "$S1_PID" "$S2_PID"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
SELLER2_PAID=$(sed -n 's/^seller .*paid=\([0-9]*\).*/\1/p' "$WORK/seller2.out")

echo
echo "l402-proxy soak — $(date -u +%Y-%m-%dT%H:%M:%SZ), ${SOAK_SECS}s, $(nproc) cores; proxy on core 0, sellers and loadgen on core 1"
echo "streams: ${STREAMS[*]} ($CONNS connections at a time, agents ${AGENTS[*]})"
echo
echo "| figure | value |"
echo "|---|---|"
echo "| RSS KiB: start (after warm-up) / at ${REF_AT}s / peak / last under load / end (settled) | $RSS_START / $RSS_REF / $RSS_PEAK / $LAST_RSS / $RSS_END |"
echo "| RSS growth from ${T_REF}s to the last line under load | $(awk -v a="$RSS_REF" -v b="$LAST_RSS" -v t0="$T_REF" -v t1="$LAST_T" -v p0="$PAY_REF" -v p1="$LAST_PAY" 'BEGIN {
    d = b - a; printf "%+d KiB", d
    if (t1 > t0) printf ", %+.0f KiB/min", d * 60 / (t1 - t0)
    if (p1 > p0) printf ", %+.0f bytes per payment", d * 1024 / (p1 - p0) }') |"
echo "| open fds: start / end (settled) | $FDS_START / $FDS_END |"
echo "| requests ok / errors (failed + non-200) | $OK / $ERR |"
echo "| payments after the warm-up (proxy: l402_proxy_payments_total succeeded) ; seller 2 counted, warm-up included | $PAYMENTS ; $SELLER2_PAID |"
echo "| paid-stream requests not paid / cached-stream requests that paid | $UNPAID / $PAIDCACHED |"
echo "| payments failed / declines (whole run) | $PAY_FAILED / $DECLINES |"
echo "| CONNECTs: tunnelled / intercepted (whole run) | $TUNNELS / $INTERCEPTS |"
echo "| ledger file (SQLite) | ${DB_KB:-?} KiB |"
echo
rss_ok=$(awk -v e="$LAST_RSS" -v s="$RSS_END" -v r="$RSS_REF" 'BEGIN {m = e > s ? e : s; print (m <= 1.5 * r) ? 1 : 0}')
fd_ok=$(((FDS_END - FDS_START) <= 10 && (FDS_START - FDS_END) <= 10 ? 1 : 0))
verdict="bounded"
((rss_ok && fd_ok)) || verdict="NOT bounded"
echo "verdict: $verdict — RSS $(awk -v e="$LAST_RSS" -v s="$RSS_END" -v r="$RSS_REF" 'BEGIN {m = e > s ? e : s; printf "%.2f", m / r}')× the RSS at ${REF_AT}s (limit 1.5×), fds $FDS_START → $FDS_END (limit ±10); errors $ERR"
((ERR == 0)) || echo "WARNING: $ERR requests failed or were not 200 (see $WORK/loadgen.err; SOAK_KEEP=1 keeps it)"
((UNPAID == 0)) || echo "WARNING: $UNPAID paid-stream requests did not pay"
((PAIDCACHED == 0)) || echo "WARNING: $PAIDCACHED cached-token requests paid again"
