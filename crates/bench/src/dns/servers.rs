//! The DNS servers `ferry bench dns` measures: `ferry dns`, nsd, knot and
//! unbound, each started on a free loopback port with a config written into
//! the scratch directory, pinned to core 0 (all threads, re-pinned once it
//! answers), and killed on drop; and their CPU and memory from `/proc`.
//! Long-running servers stay `std::process::Command` children; the short
//! `dig` probes and `taskset -p` go through `ferry_sys::Tool`.

use std::net::UdpSocket;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ferry_sys::Tool;

use crate::memory::rss_mib;

/// A started server, killed on drop.
pub(super) struct Proc {
    pub(super) name: String,
    child: Child,
    pub(super) port: u16,
}

impl Proc {
    /// CPU seconds (user + system) the server has used so far.
    pub(super) fn cpu_secs(&self) -> f64 {
        cpu_secs(self.child.id())
    }

    /// Resident memory of the server and its children, MiB.
    pub(super) fn rss_mib(&self) -> f64 {
        tree(self.child.id())
            .iter()
            .filter_map(|p| rss_mib(u64::from(*p)))
            .sum()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Un-pin first, so a hog on core 0 cannot keep it from exiting.
        let _ = Tool::new("taskset")
            .args(["-a", "-p", "-c", "0,1", &self.child.id().to_string()])
            .output();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    loop {
        let u = UdpSocket::bind("127.0.0.1:0").expect("a loopback port");
        let port = u.local_addr().map_or(0, |a| a.port());
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Every process of the tree rooted at `pid` (nsd forks its workers).
fn tree(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        if let Ok(dirs) = std::fs::read_dir("/proc") {
            for d in dirs.flatten() {
                let Ok(p) = d.file_name().to_string_lossy().parse::<u32>() else {
                    continue;
                };
                if let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat"))
                    && let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r)
                    && rest.split_whitespace().nth(1) == Some(&parent.to_string())
                    && !out.contains(&p)
                {
                    out.push(p);
                }
            }
        }
        i += 1;
    }
    out
}

/// CPU seconds (user + system) used so far by the tree.
fn cpu_secs(pid: u32) -> f64 {
    tree(pid)
        .iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .filter_map(|s| {
            let rest = s.rsplit_once(')')?.1.to_string();
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?)
        })
        .sum::<f64>()
        / 100.0
}

fn start(name: &str, cmd: &mut Command, port: u16, probe: &str) -> anyhow::Result<Proc> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    let p = Proc {
        name: name.to_string(),
        child,
        port,
    };
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
            .args(["-a", "-p", "-c", "0", &pid.to_string()])
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
        .is_ok_and(|o| !o.stdout.is_empty())
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
            .args(["-c", "0", "nsd", "-d", "-c"])
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
            .args(["-c", "0", "knotd", "-c"])
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
            .args(["-c", "0", "unbound", "-d", "-c"])
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
            .args(["-c", "0"])
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
