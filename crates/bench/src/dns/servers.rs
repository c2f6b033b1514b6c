//! The DNS servers `ferry bench dns` measures: `ferry dns`, nsd, knot and
//! unbound, each started on a free loopback port with a config written into
//! the scratch directory, pinned to core 0 (all threads, re-pinned once it
//! answers), and killed on drop; and their CPU and memory from `/proc`.
//! Long-running servers stay `std::process::Command` children; the short
//! `dig` probes and `taskset -p` go through `ferry_sys::Tool`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ferry_sys::Tool;

use crate::procs::{Proc, free_port, tree};

/// The core every server runs on (`taskset -c`); the client has the other.
pub(super) const SERVER_CORE: &str = "0";

fn start(name: &str, cmd: &mut Command, port: u16, probe: &str) -> anyhow::Result<Proc> {
    let p = Proc::spawn(name, cmd, port)?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !answers(port, probe) {
        if Instant::now() > deadline {
            bail!("{name} did not answer {probe} on port {port}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // knotd moves its UDP worker by itself; pin every thread again.
    for pid in tree(p.child.id()) {
        let _ = Tool::new("taskset")
            .args(["-a", "-p", "-c", SERVER_CORE, &pid.to_string()])
            .output();
    }
    Ok(p)
}

fn answers(port: u16, name: &str) -> bool {
    Tool::new("dig")
        .args([
            "@127.0.0.1",
            "-p",
            &port.to_string(),
            "+time=1",
            "+tries=1",
            "+short",
            name,
        ])
        .output()
        .is_ok_and(|o| answered(&o.stdout))
}

/// Whether `dig +short` printed an address: it prints its errors
/// (`;; communications error ... connection refused` while nothing is bound
/// yet, a timeout) on standard output too.
fn answered(short: &str) -> bool {
    short
        .lines()
        .any(|l| l.trim().parse::<std::net::IpAddr>().is_ok())
}

pub(super) fn nsd(dir: &Path) -> anyhow::Result<Proc> {
    let port = free_port();
    let d = dir.display();
    let conf = format!(
        "server:\n  ip-address: 127.0.0.1@{port}\n  do-ip6: no\n  server-count: 1\n  username: \"\"\n  zonesdir: \"{d}\"\n  pidfile: \"{d}/nsd.pid\"\n  xfrdfile: \"{d}/xfrd.state\"\n  zonelistfile: \"{d}/zone.list\"\n  database: \"\"\n  logfile: \"{d}/nsd.log\"\n  rrl-ratelimit: 0\n  verbosity: 0\nremote-control:\n  control-enable: no\nzone:\n  name: cluster.local\n  zonefile: cluster.zone\nzone:\n  name: example.test\n  zonefile: example.zone\n"
    );
    std::fs::write(dir.join("nsd.conf"), conf)?;
    start(
        "nsd 4",
        Command::new("taskset")
            .args(["-c", SERVER_CORE, "nsd", "-d", "-c"])
            .arg(dir.join("nsd.conf")),
        port,
        "ns.dns.cluster.local",
    )
}

pub(super) fn knot(dir: &Path) -> anyhow::Result<Proc> {
    let port = free_port();
    let d = dir.display();
    let kdir = dir.join("knot");
    std::fs::create_dir_all(&kdir)?;
    let conf = format!(
        "server:\n  listen: 127.0.0.1@{port}\n  rundir: \"{d}/knot\"\n  udp-workers: 1\n  tcp-workers: 1\n  background-workers: 1\ndatabase:\n  storage: \"{d}/knot\"\nlog:\n  - target: stderr\n    any: error\nzone:\n  - domain: cluster.local\n    storage: \"{d}\"\n    file: cluster.zone\n"
    );
    std::fs::write(dir.join("knot.conf"), conf)?;
    start(
        "knot 3",
        Command::new("taskset")
            .args(["-c", SERVER_CORE, "knotd", "-c"])
            .arg(dir.join("knot.conf")),
        port,
        "ns.dns.cluster.local",
    )
}

pub(super) fn unbound(dir: &Path, upstream: u16) -> anyhow::Result<Proc> {
    let port = free_port();
    let d = dir.display();
    let conf = format!(
        "server:\n  interface: 127.0.0.1\n  port: {port}\n  do-daemonize: no\n  username: \"\"\n  chroot: \"\"\n  directory: \"{d}\"\n  pidfile: \"\"\n  use-syslog: no\n  logfile: \"\"\n  verbosity: 0\n  num-threads: 1\n  do-ip6: no\n  access-control: 127.0.0.0/8 allow\n  module-config: \"iterator\"\n  do-not-query-localhost: no\n  msg-cache-size: 64m\n  rrset-cache-size: 128m\n  prefetch: no\n  local-zone: \"test.\" nodefault\nforward-zone:\n  name: \"example.test.\"\n  forward-addr: 127.0.0.1@{upstream}\n"
    );
    std::fs::write(dir.join("unbound.conf"), conf)?;
    start(
        "unbound 1 (cache)",
        Command::new("taskset")
            .args(["-c", SERVER_CORE, "unbound", "-d", "-c"])
            .arg(dir.join("unbound.conf")),
        port,
        "h-1.example.test",
    )
}

pub(super) fn ferry(dir: &Path, upstream: u16) -> anyhow::Result<Proc> {
    let port = free_port();
    let exe = std::env::current_exe().context("finding the ferry binary")?;
    start(
        "ferry dns",
        Command::new("taskset")
            .args(["-c", SERVER_CORE])
            .arg(exe)
            .arg("dns")
            .arg(format!(
                "--source=manifests:{}",
                dir.join("manifests").display()
            ))
            .args(["--listen", &format!("127.0.0.1:{port}"), "--ttl", "30"])
            .args(["--upstream", &format!("127.0.0.1:{upstream}")])
            .args(["--pods", "verified"]),
        port,
        "svc-0.ns-0.svc.cluster.local",
    )
}

#[cfg(test)]
mod tests {
    use super::answered;

    #[test]
    fn only_an_address_is_an_answer() {
        assert!(answered("10.96.0.1\n"));
        assert!(!answered(""));
        assert!(!answered(
            ";; communications error to 127.0.0.1#5353: connection refused\n"
        ));
        assert!(!answered(
            ";; connection timed out; no servers could be reached\n"
        ));
    }
}
