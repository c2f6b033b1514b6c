#!/usr/bin/env bash
# Installs what ferry's build, tests and main job need on a fresh Debian
# machine with a Rust toolchain: system packages (only those missing, so a
# second run is quick) and cargo tools. Safe to run again.
set -euo pipefail

# Every program ferry starts, with the Debian package that installs it and
# who starts it: the one list. The agent checks its programs against it at
# start (crates/sys/src/tools.rs reads this block), and a test fails when
# the code starts a program that is not here. Columns: program, package,
# who starts it.
TOOLS=$(cat <<'TOOLS'
ip                        iproute2          agent lab tests
nft                       nftables          agent trace
iptables                  iptables          agent
iptables-save             iptables          agent trace
iptables-restore          iptables          agent
ip6tables                 iptables          agent
ip6tables-save            iptables          agent
ip6tables-restore         iptables          agent
iptables-nft              iptables          agent
iptables-nft-save         iptables          agent
iptables-nft-restore      iptables          agent
ip6tables-nft             iptables          agent
ip6tables-nft-save        iptables          agent
ip6tables-nft-restore     iptables          agent
iptables-legacy           iptables          agent
iptables-legacy-save      iptables          agent
iptables-legacy-restore   iptables          agent
ip6tables-legacy          iptables          agent
ip6tables-legacy-save     iptables          agent
ip6tables-legacy-restore  iptables          agent
conntrack                 conntrack         trace tests
sysctl                    procps            lab
setsid                    util-linux        lab
taskset                   util-linux        bench
curl                      curl              lab-pods tests
bash                      bash              lab-pods tests
sh                        dash              tests bench
python3                   python3           tests
dig                       bind9-dnsutils    bench tests
getent                    libc-bin          tests
dnsperf                   dnsperf           bench
unbound                   unbound           bench tests
nsd                       nsd               bench
knotd                     knot              bench
nginx                     nginx             bench
wrk                       wrk               bench
kill                      procps            tests bench
pgrep                     procps            tests
pkill                     procps            tests
sleep                     coreutils         tests
timeout                   coreutils         trace
setpriv                   util-linux        tests
bridge                    iproute2          bench tests
kubectl                   kubernetes-client tests
etcd                      etcd-server       bench tests lab
etcdctl                   etcd-client       bench tests lab
iperf3                    iperf3            bench
true                      coreutils         bench
tcpdump                   tcpdump           tests
rsvg-convert              librsvg2-bin      tests
TOOLS
)
# The package of every listed program that is not on PATH yet (a program
# already installed some other way, such as kubectl from Google's apt
# repository, is not installed again: its Debian package would conflict).
mapfile -t listed < <(printf '%s\n' "$TOOLS" | awk 'NF >= 2 {print $1, $2}' |
  while read -r program package; do
    command -v "$program" >/dev/null 2>&1 || echo "$package"
  done | sort -u)
# What the build and tests need besides (checked as packages).
# containernetworking-plugins: the reference CNI plugins in /usr/lib/cni
# (not on PATH, so not in TOOLS); the CNI tests chain Debian's portmap
# after `ferry cni`.
extra=(iproute2 procps util-linux containernetworking-plugins)

missing=("${listed[@]}")
for p in "${extra[@]}"; do
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
