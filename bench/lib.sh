# Helpers shared by bench/run.sh, bench/soak.sh and bench/connections.sh (sourced, never run).
# The sourcing script sets WORK (its work directory), PIDS=() (what it started) and KEEP (1 keeps
# WORK at exit, for a post-mortem) before calling any of these.

# port_open PORT: whether something accepts on 127.0.0.1:PORT.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_port PORT: waits up to 10 s for a listener; keeps the work directory when none comes.
wait_port() {
  for _ in $(seq 1 200); do
    port_open "$1" && return 0
    sleep 0.05
  done
  echo "nothing listens on 127.0.0.1:$1 (see logs in $WORK)" >&2
  KEEP=1
  return 1
}

# require_free_ports HINT PORT...: exits 2, naming HINT (the variable that moves the ports),
# when any PORT is taken.
require_free_ports() {
  local hint=$1
  shift
  for p in "$@"; do
    if port_open "$p"; then
      echo "127.0.0.1:$p is already in use; set $hint" >&2
      exit 2
    fi
  done
}

# rss_kb PID / fds PID: resident memory in KiB; open file descriptors.
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
fds() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 | wc -l; }

# stop_started: stops everything in PIDS and waits for it.
stop_started() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}

# remove_work: removes WORK unless KEEP=1 (then says where it is).
remove_work() {
  if [[ ${KEEP:-0} == 1 ]]; then log "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
