#!/usr/bin/env bash
# Builds every fuzz target once and runs each for a bounded time, starting from its committed
# corpus (fuzz/corpus/<target>/). Fails on the first crash: a panic (a broken invariant included),
# an input that runs longer than the timeout, an allocation over the malloc limit or a process
# over the RSS limit. libFuzzer saves the input that did it under fuzz/artifacts/<target>/
# (ignored by git); replay it with `cargo fuzz run <target> <file>`.
#
#   fuzz/run.sh [SECONDS [TARGET...]]    default: 30 seconds each, every target
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). cargo fuzz passes unstable rustc
# flags (the address sanitizer, coverage instrumentation); RUSTC_BOOTSTRAP=1 lets a stable
# toolchain accept them, so no nightly toolchain is needed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds="${1:-30}"
shift || true
export RUSTC_BOOTSTRAP=1

cargo fmt --manifest-path fuzz/Cargo.toml -- --check
started=$SECONDS
cargo fuzz build
echo "fuzz targets built in $((SECONDS - started)) s"
if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

failed=()
for target in "${targets[@]}"; do
    # New inputs go to a scratch directory listed first, so the committed corpus stays as it
    # was committed; grow it on purpose with `cargo fuzz cmin`.
    scratch="$(mktemp -d)"
    log="$(mktemp)"
    # -timeout: seconds per input (a hang); -malloc_limit_mb: the largest single allocation
    # (inputs are at most -max_len bytes, so anything near it is an allocation the input's
    # claims drove, not its size); -rss_limit_mb: the whole process, sanitizer included.
    if cargo fuzz run "$target" "$scratch" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -max_len=65536 \
        -malloc_limit_mb=64 -rss_limit_mb=1024 -print_final_stats=1 >"$log" 2>&1; then
        runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")"
        cov="$(grep -o 'cov: [0-9]*' "$log" | tail -1)"
        echo "fuzz $target: ${runs:-?} inputs in $seconds s, $cov, no failure"
    else
        echo "fuzz $target FAILED:" >&2
        grep -E -A4 'panicked at|ERROR: libFuzzer|^SUMMARY|^Failing input:|^Error:' "$log" | head -60 >&2
        failed+=("$target")
    fi
    rm -rf "$scratch" "$log"
done
if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz targets failed: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
