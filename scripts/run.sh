#!/usr/bin/env bash
# The main job: builds ferry (release) and shows the seed scenario the way
# the data plane sees it. Installs what it needs first.
# Usage: scripts/run.sh [PATH...]   (default: examples/nginx-web.yaml)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --quiet -p ferry
paths=("$@")
[ ${#paths[@]} -gt 0 ] || paths=(examples/nginx-web.yaml)
./target/release/ferry validate "${paths[@]}"
echo
./target/release/ferry services "${paths[@]}"
