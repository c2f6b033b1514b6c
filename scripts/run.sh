#!/usr/bin/env bash
# The main job: builds ferry (release) and starts the lab with the seed
# scenario (examples/nginx-web.yaml, seed 000): two nodes, three nginx-web
# pods behind the ClusterIP 172.16.255.220. Installs what it needs first.
# Needs root (network namespaces). Usage: scripts/run.sh [PATH...]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "scripts/run.sh needs root: the lab creates network namespaces (try: sudo scripts/run.sh)" >&2
  exit 1
fi
scripts/setup.sh
cargo build --release --quiet -p ferry
ferry=target/release/ferry
paths=("$@")
[ ${#paths[@]} -gt 0 ] || paths=(examples/nginx-web.yaml)
"$ferry" validate "${paths[@]}"
# Start from a clean slate: a lab left running by an earlier run goes first.
"$ferry" lab down >/dev/null
"$ferry" lab up "${paths[@]}"
cat <<TRY
Seed scenario extras:
  $ferry lab exec pod/demo/nginx-web-5d6b9c7f4-2xk8p -- curl -s 10.204.1.8/      # pod to pod, across nodes
  $ferry lab scale deployment/demo/nginx-web 5
  $ferry services /run/ferry/labs/ferry/manifests/                               # what the agents see
TRY
