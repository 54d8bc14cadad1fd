#!/usr/bin/env bash
# Fuzzing, bounded: installs cargo-fuzz (pinned; skipped when present), builds every target
# of fuzz/ once into fuzz/target (never the main target/), then runs each target for FUZZ_SECS
# seconds (default 20) on the committed seeds fuzz/corpus/<target>/ plus what earlier runs
# found (fuzz/target/corpus/<target>/). Prints execs, coverage and any crash; exits non-zero
# when a target crashed (panic, sanitizer report, leak, timeout, OOM), leaving the input in
# fuzz/artifacts/<target>/. See fuzz/README.md.
#
#   bash fuzz/run.sh                      # the short run (CI): 20 s per target
#   FUZZ_SECS=600 bash fuzz/run.sh        # a longer campaign
#   FUZZ_TARGETS="challenge macaroon" bash fuzz/run.sh
#
# Other knobs: FUZZ_SANITIZER (address|none; default: address when the toolchain can, else
# none), FUZZ_TARGET_DIR (default fuzz/target), FUZZ_CODEGEN_UNITS (default 16: a faster
# build on 2 cores, slightly slower runs), FUZZ_TIMEOUT (seconds one input may take; 10),
# FUZZ_RSS_MB (4096), FUZZ_ARGS (more libFuzzer flags for every target).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
FUZZ=$ROOT/fuzz
export CARGO_TERM_COLOR=never

CARGO_FUZZ_VERSION=0.13.2
SECS=${FUZZ_SECS:-20}
TARGETS=${FUZZ_TARGETS:-challenge macaroon invoice proxy_request}
TARGET_DIR=${FUZZ_TARGET_DIR:-$FUZZ/target}
CGU=${FUZZ_CODEGEN_UNITS:-16}
TIMEOUT=${FUZZ_TIMEOUT:-10}
RSS_MB=${FUZZ_RSS_MB:-4096}
read -r -a EXTRA <<<"${FUZZ_ARGS:-}"

log() { printf '\n== fuzz: %s\n' "$*"; }

# ---- cargo-fuzz, pinned ----
if [ "$(cargo fuzz --version 2>/dev/null || true)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
  log "installing cargo-fuzz $CARGO_FUZZ_VERSION into ~/.cargo/bin"
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

# ---- toolchain: nightly if rustup has one, else stable with RUSTC_BOOTSTRAP=1 ----
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  TOOLCHAIN=(+nightly)
else
  TOOLCHAIN=()
  export RUSTC_BOOTSTRAP=1
fi
RUSTC_VERSION=$(rustc "${TOOLCHAIN[@]}" -V)
HOST=$(rustc "${TOOLCHAIN[@]}" -vV | sed -n 's/^host: //p')

# ---- sanitizer: AddressSanitizer when this toolchain can build and run with it ----
probe_asan() {
  local dir
  dir=$(mktemp -d)
  printf 'fn main() { let v = vec![1u8; 8]; std::process::exit(i32::from(v[7] != 1)); }\n' >"$dir/p.rs"
  if rustc "${TOOLCHAIN[@]}" -Zsanitizer=address --target "$HOST" -o "$dir/p" "$dir/p.rs" >/dev/null 2>&1 \
    && "$dir/p" >/dev/null 2>&1; then
    rm -rf "$dir"
    return 0
  fi
  rm -rf "$dir"
  return 1
}
if [ -n "${FUZZ_SANITIZER:-}" ]; then
  SANITIZER=$FUZZ_SANITIZER
elif probe_asan; then
  SANITIZER=address
else
  SANITIZER=none
fi
log "toolchain: $RUSTC_VERSION${RUSTC_BOOTSTRAP:+ (RUSTC_BOOTSTRAP=1)}; sanitizer: $SANITIZER; target dir: $TARGET_DIR"

# ---- build every target once ----
LOCK_BEFORE=$(sha256sum "$FUZZ/Cargo.lock")
log "cargo fuzz build (codegen units $CGU)"
BUILD_START=$(date +%s)
cargo "${TOOLCHAIN[@]}" fuzz build --fuzz-dir "$FUZZ" --target-dir "$TARGET_DIR" \
  --sanitizer "$SANITIZER" --codegen-units "$CGU" --target "$HOST"
echo "build: $(($(date +%s) - BUILD_START)) s"
if [ "$(sha256sum "$FUZZ/Cargo.lock")" != "$LOCK_BEFORE" ]; then
  # The main crate's dependencies changed since the lock was committed; cargo updated it.
  echo "warning: fuzz/Cargo.lock was updated by the build (the main crate's dependencies" \
    "changed): commit it. To take the main lock's versions: cp Cargo.lock fuzz/Cargo.lock" \
    "&& (cd fuzz && cargo metadata --format-version 1 >/dev/null)" >&2
fi
BIN_DIR=$TARGET_DIR/$HOST/release
# As `cargo fuzz run` sets it: the bundled SQLite is compiled with gcc's -fsanitize=address
# (libsqlite3-sys follows the Rust sanitizer), whose function-local statics of the same name
# (`aiOff`, twice) ASan's ODR check reports at start-up; that is no bug of ours.
export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_odr_violation=0

# proxy_request moves itself into a private network namespace (see its header): that needs
# root; where it cannot, the target is skipped rather than run with a way out.
netns_ok() { command -v unshare >/dev/null 2>&1 && unshare -n true 2>/dev/null; }

# ---- run each target for SECS seconds ----
mkdir -p "$TARGET_DIR/logs"
passed=0 failed=0 skipped=0
summary=()
for t in $TARGETS; do
  bin=$BIN_DIR/$t
  [ -x "$bin" ] || { echo "no fuzz target $t ($bin)" >&2; exit 2; }
  if [ "$t" = proxy_request ] && ! netns_ok; then
    log "$t: SKIPPED, cannot create a network namespace here (needs root)"
    skipped=$((skipped + 1))
    summary+=("$t: skipped (no network namespace)")
    continue
  fi
  work=$TARGET_DIR/corpus/$t
  mkdir -p "$work" "$FUZZ/artifacts/$t"
  args=(-max_total_time="$SECS" -timeout="$TIMEOUT" -rss_limit_mb="$RSS_MB" -print_final_stats=1
    -artifact_prefix="$FUZZ/artifacts/$t/")
  if [ -f "$FUZZ/dict/$t.dict" ]; then args+=(-dict="$FUZZ/dict/$t.dict"); fi
  case $t in
    challenge | proxy_request) args+=(-max_len=8192) ;;
  esac
  log "$t: ${SECS} s"
  tlog=$TARGET_DIR/logs/$t.log
  rc=0
  # New inputs go to the first directory (the work corpus); the committed seeds are only read.
  "$bin" "${args[@]}" "${EXTRA[@]}" "$work" "$FUZZ/corpus/$t" >"$tlog" 2>&1 || rc=$?
  final=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$tlog" | tail -n 1 || true)
  [ -n "$final" ] || final=$(grep -E '^#[0-9]+[[:space:]]' "$tlog" | tail -n 1 || true)
  stat() { sed -n "s/^stat::$1:[[:space:]]*//p" "$tlog" | tail -n 1; }
  execs=$(stat number_of_executed_units)
  rate=$(stat average_exec_per_sec)
  new=$(stat new_units_added)
  cov=$(sed -n 's/.* cov: \([0-9]*\) .*/\1/p' <<<"$final")
  ft=$(sed -n 's/.* ft: \([0-9]*\) .*/\1/p' <<<"$final")
  corp=$(sed -n 's/.* corp: \([^ ]*\) .*/\1/p' <<<"$final")
  echo "$final"
  line="$t: ${execs:-?} execs, ${rate:-?}/s, cov ${cov:-?}, ft ${ft:-?}, corpus ${corp:-?} (${new:-0} new)"
  if [ "$rc" -eq 0 ]; then
    passed=$((passed + 1))
    summary+=("$line, no crash")
  else
    failed=$((failed + 1))
    artifact=$(grep -oE "Test unit written to [^ ]+" "$tlog" | tail -n 1 | awk '{print $NF}' || true)
    summary+=("$line, CRASH (exit $rc): ${artifact:-see $tlog}")
    echo "---- $t crashed (exit $rc); the end of its log ($tlog):"
    grep -vE '^#[0-9]+[[:space:]]+(NEW|REDUCE|pulse|INITED|RELOAD)' "$tlog" | tail -n 80
    if [ -n "${artifact:-}" ]; then
      echo "input: $artifact (hex: $(head -c 512 "$artifact" | od -An -tx1 | tr -d ' \n'))"
      echo "reproduce: $bin $artifact"
    fi
  fi
done

log "summary ($RUSTC_VERSION, sanitizer $SANITIZER, ${SECS} s per target)"
printf '%s\n' "${summary[@]}"
if [ "$skipped" -gt 0 ]; then
  echo "fuzz: $passed passed, $failed failed, $skipped skipped"
else
  echo "fuzz: $passed passed, $failed failed"
fi
[ "$failed" -eq 0 ]
