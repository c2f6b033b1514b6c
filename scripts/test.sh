#!/usr/bin/env bash
# Runs every check ferry has: formatting, clippy, the whole test suite
# (cargo-nextest) and a short fuzz run of the manifest loader.
# Installs what it needs first. Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo nextest"
cargo nextest run --workspace --no-fail-fast
echo "== the lab's proxy (both modes) and DNS suites again, on the Kubernetes API source"
# Every agent reads the lab's API server instead of its manifests (about 2 min).
FERRY_LAB_SOURCE=kube cargo nextest run -p ferry --no-fail-fast --test lab_proxy --test lab_dns
echo "== fuzz (manifest loader)"
scripts/fuzz.sh "${FERRY_FUZZ_SECONDS:-30}"
echo "== fuzz (DNS request path)"
scripts/fuzz.sh "${FERRY_FUZZ_SECONDS:-30}" dns_request
