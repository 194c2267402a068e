#!/usr/bin/env bash
# Short runs of each cargo-fuzz target; fails on any crash, panic
# or oversized allocation. Installs cargo-fuzz when missing.
#   TOKENVAULT_FUZZ_SECONDS=N  seconds per target (default: 30, ops 60)
# Longer runs by hand: see docs/testing.md, "Fuzzing".
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

run() {
    local target=$1 secs=$2
    shift 2
    echo "== fuzz $target for ${secs}s"
    # New inputs go to a scratch corpus; the committed one is only read.
    mkdir -p "target/corpus/$target"
    local log="target/fuzz-$target.log" rc=0
    cargo fuzz run --sanitizer none "$target" "target/corpus/$target" "corpus/$target" -- \
        -max_total_time="$secs" -dict="dict/$target.dict" -print_final_stats=1 \
        -rss_limit_mb=2048 "$@" >"$log" 2>&1 || rc=$?
    grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|Done )' "$log" || true
    if [ "$rc" -ne 0 ]; then
        tail -n 60 "$log" >&2
        echo "fuzz target $target failed (exit $rc); the input is in fuzz/artifacts/$target/" >&2
        exit 1
    fi
}

secs=${TOKENVAULT_FUZZ_SECONDS:-}
run token_parse "${secs:-30}"
run record_decode "${secs:-30}"
run ops "${secs:-60}" -max_len=512
