#!/usr/bin/env bash
# Runs a fuzz target for a bounded time (default 60 s): manifest_decode
# (the manifest loader, default) or dns_request (the DNS request path).
# Builds with libFuzzer instrumentation on stable Rust, with the flags
# cargo-fuzz uses for `--sanitizer none`, so no nightly and no cargo-fuzz
# install are needed. Usage: scripts/fuzz.sh [SECONDS] [TARGET]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
name=${2:-manifest_decode}
target=$(rustc -vV | sed -n 's/^host: //p')
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
echo "fuzz: building $name (instrumented) ..."
cargo build --quiet --release --manifest-path fuzz/Cargo.toml --target "$target" --bin "$name"
corpus=$(mktemp -d)
trap 'rm -rf "$corpus"' EXIT
mkdir -p "fuzz/corpus/$name"
if [ "$name" = manifest_decode ]; then cp examples/*.yaml examples/broken/*.yaml "$corpus"/; fi
echo "fuzz: running for ${seconds}s ..."
"fuzz/target/$target/release/$name" -max_total_time="$seconds" -timeout=10 \
  -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 "$corpus" "fuzz/corpus/$name" 2>&1 | tail -n 12
echo "fuzz: no crash in ${seconds}s"
