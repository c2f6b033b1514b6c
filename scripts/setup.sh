#!/usr/bin/env bash
# Installs what ferry's build, tests and main job need on a fresh Debian
# machine with a Rust toolchain: system packages (only those missing, so a
# second run is quick) and cargo tools. Safe to run again.
set -euo pipefail

# System packages: every program ferry starts is in scripts/tools.txt with
# its package (one list; a test checks the code against it), plus what
# the build and tests need besides.
here="$(dirname "$0")"
mapfile -t listed < <(grep -v '^#' "$here/tools.txt" | awk 'NF >= 2 {print $2}' | sort -u)
packages=("${listed[@]}" iproute2 procps util-linux)

missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]} ..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo is missing; install a Rust toolchain (rustup) first" >&2
  exit 1
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true
if ! command -v cargo-nextest >/dev/null 2>&1; then
  echo "setup: installing cargo-nextest ..."
  cargo install --locked cargo-nextest
fi
echo "setup: ok"
