//! `ferry bench dns`: dnsperf against `ferry dns`, nsd and knot serving the
//! same generated zone, and against ferry's and unbound's forward caches,
//! in one run. Each server is pinned to core 0 (all threads, re-pinned after
//! start), dnsperf to core 1; loopback only; every run bounded by `-l`;
//! every process killed on drop. Prints one table with ratios to nsd.

use std::fmt::Write as _;
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::bench::{median, percentile};
use super::bench_lab::rss_mib;
use crate::synth;

#[derive(clap::Args)]
pub struct DnsArgs {
    /// Cluster sizes (services; 5 endpoints each).
    #[arg(long, value_delimiter = ',', default_value = "1000,20000")]
    sizes: Vec<usize>,
    /// Saturated runs per server and size (the median is shown).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Seconds per saturated run (dnsperf -l).
    #[arg(long, default_value_t = 10)]
    seconds: u32,
}

const FORWARDED_NAMES: usize = 1000;
const QUERIES: usize = 100_000;

/// A started server, killed on drop.
struct Proc {
    name: String,
    child: Child,
    port: u16,
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Un-pin first, so a hog on core 0 cannot keep it from exiting.
        let _ = Command::new("taskset")
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

fn need(tool: &str) -> anyhow::Result<()> {
    if Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
    {
        Ok(())
    } else {
        bail!("{tool} is missing: run scripts/setup.sh")
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

fn rss_tree(pid: u32) -> f64 {
    tree(pid)
        .iter()
        .filter_map(|p| rss_mib(u64::from(*p)))
        .sum()
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
        let _ = Command::new("taskset")
            .args(["-a", "-p", "-c", "0", &pid.to_string()])
            .output();
    }
    Ok(p)
}

fn answers(port: u16, name: &str) -> bool {
    Command::new("dig")
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

struct Run {
    qps: f64,
    avg_ms: f64,
    lost: u64,
    cpu: f64,
}

fn field(out: &str, key: &str) -> Option<f64> {
    out.lines()
        .find_map(|l| l.trim().strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn dnsperf(p: &Proc, queries: &Path, seconds: u32) -> anyhow::Result<Run> {
    let cpu0 = cpu_secs(p.child.id());
    let t0 = Instant::now();
    let out = Command::new("taskset")
        .args([
            "-c",
            "1",
            "dnsperf",
            "-s",
            "127.0.0.1",
            "-p",
            &p.port.to_string(),
            "-d",
        ])
        .arg(queries)
        .args([
            "-l",
            &seconds.to_string(),
            "-c",
            "4",
            "-q",
            "200",
            "-t",
            "2",
        ])
        .output()
        .context("running dnsperf")?;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = (cpu_secs(p.child.id()) - cpu0) / wall;
    let text = String::from_utf8_lossy(&out.stdout);
    let qps = field(&text, "Queries per second:").context("dnsperf printed no qps")?;
    Ok(Run {
        qps,
        avg_ms: field(&text, "Average Latency (s):").unwrap_or(0.0) * 1000.0,
        lost: field(&text, "Queries lost:").unwrap_or(0.0) as u64,
        cpu,
    })
}

/// p50 / p99 at a fixed 20k qps (open loop), from dnsperf -v's per-query times.
fn latency(p: &Proc, queries: &Path) -> anyhow::Result<(f64, f64)> {
    let out = Command::new("taskset")
        .args([
            "-c",
            "1",
            "dnsperf",
            "-s",
            "127.0.0.1",
            "-p",
            &p.port.to_string(),
            "-d",
        ])
        .arg(queries)
        .args(["-l", "5", "-Q", "20000", "-v", "-t", "2"])
        .output()
        .context("running dnsperf -v")?;
    let mut lat: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("> "))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .map(|s| s * 1000.0)
        .collect();
    if lat.is_empty() {
        return Ok((f64::NAN, f64::NAN));
    }
    Ok((percentile(&mut lat, 0.5), percentile(&mut lat, 0.99)))
}

/// From this many services on, the cluster has its Pods too.
const PODS_FROM: usize = 20_000;

fn write_files(dir: &Path, n: usize) -> anyhow::Result<()> {
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests)?;
    std::fs::write(manifests.join("cluster.yaml"), synth::manifests(n, 5))?;
    // The largest size also carries one Pod per endpoint (100k at 20k
    // services), answered in `--pods verified` mode: the memory figure.
    if n >= PODS_FROM {
        std::fs::write(manifests.join("pods.yaml"), synth::pods_manifest(n, 5))?;
    }
    let mut zone = String::from(
        "$ORIGIN cluster.local.\n$TTL 30\n@ IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 30\n@ IN NS ns.dns\nns.dns IN A 127.0.0.1\n",
    );
    for i in 0..n {
        let name = format!("{}.{}.svc", synth::service_name(i), synth::namespace(i));
        let _ = writeln!(zone, "{name} IN A {}", synth::cluster_ip(i));
        let _ = writeln!(
            zone,
            "_http._tcp.{name} IN SRV 0 100 80 {name}.cluster.local."
        );
    }
    std::fs::write(dir.join("cluster.zone"), zone)?;
    let mut ext = String::from(
        "$ORIGIN example.test.\n$TTL 300\n@ IN SOA ns.example.test. hostmaster.example.test. 1 7200 1800 86400 300\n@ IN NS ns\nns IN A 127.0.0.1\n",
    );
    for i in 0..FORWARDED_NAMES {
        let _ = writeln!(ext, "h-{i} IN A 192.0.{}.{}", i / 250, i % 250 + 1);
    }
    std::fs::write(dir.join("example.zone"), ext)?;
    // 90 % existing services, 10 % NXDOMAIN, a fixed pseudo-random order.
    let mut x: u64 = 42;
    let mut next = |m: usize| {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (x >> 33) as usize % m
    };
    let mut q = String::new();
    let mut fq = String::new();
    for _ in 0..QUERIES {
        let i = next(n);
        if next(10) == 0 {
            let _ = writeln!(q, "nx-{i}.{}.svc.cluster.local A", synth::namespace(i));
        } else {
            let _ = writeln!(
                q,
                "{}.{}.svc.cluster.local A",
                synth::service_name(i),
                synth::namespace(i)
            );
        }
        let _ = writeln!(fq, "h-{}.example.test A", next(FORWARDED_NAMES));
    }
    std::fs::write(dir.join("q.txt"), q)?;
    std::fs::write(dir.join("fq.txt"), fq)?;
    let warm: String = (0..FORWARDED_NAMES)
        .map(|i| format!("h-{i}.example.test A\n"))
        .collect();
    std::fs::write(dir.join("warm.txt"), warm)?;
    Ok(())
}

fn nsd(dir: &Path) -> anyhow::Result<Proc> {
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

fn knot(dir: &Path) -> anyhow::Result<Proc> {
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

fn unbound(dir: &Path, upstream: u16) -> anyhow::Result<Proc> {
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

fn ferry(dir: &Path, upstream: u16) -> anyhow::Result<Proc> {
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

fn warm(p: &Proc, dir: &Path) {
    let _ = Command::new("dnsperf")
        .args(["-s", "127.0.0.1", "-p", &p.port.to_string(), "-d"])
        .arg(dir.join("warm.txt"))
        .args(["-n", "1", "-Q", "20000"])
        .output();
}

struct Row {
    server: String,
    what: String,
    qps: f64,
    range: (f64, f64),
    cpu: f64,
    per_core: f64,
    avg_ms: f64,
    p50: f64,
    p99: f64,
    lost: u64,
    rss: f64,
}

fn measure(p: &Proc, what: &str, queries: &Path, args: &DnsArgs) -> anyhow::Result<Row> {
    let mut runs = Vec::new();
    for _ in 0..args.runs.max(1) {
        runs.push(dnsperf(p, queries, args.seconds)?);
    }
    let mut qps: Vec<f64> = runs.iter().map(|r| r.qps).collect();
    let mid = median(&mut qps.clone());
    let run = runs.iter().find(|r| r.qps == mid).unwrap_or(&runs[0]);
    let (p50, p99) = latency(p, queries)?;
    qps.sort_by(f64::total_cmp);
    Ok(Row {
        server: p.name.clone(),
        what: what.to_string(),
        qps: mid,
        range: (qps[0], qps[qps.len() - 1]),
        cpu: run.cpu,
        per_core: if run.cpu > 0.0 {
            mid / run.cpu.min(1.0)
        } else {
            f64::NAN
        },
        avg_ms: run.avg_ms,
        p50,
        p99,
        lost: runs.iter().map(|r| r.lost).sum(),
        rss: rss_tree(p.child.id()),
    })
}

pub fn run(args: DnsArgs) -> anyhow::Result<std::process::ExitCode> {
    for tool in ["dnsperf", "nsd", "knotd", "unbound", "dig", "taskset"] {
        need(tool)?;
    }
    println!(
        "ferry bench dns  (dnsperf -c 4 -q 200 -l {} on core 1, median of {} runs; servers pinned to core 0;\n  latency: dnsperf -Q 20000 -l 5 -v, open loop; per core = qps / server CPU share)",
        args.seconds, args.runs
    );
    let mut rows = Vec::new();
    for &n in &args.sizes {
        let dir = tempfile::tempdir().context("creating a scratch directory")?;
        write_files(dir.path(), n)?;
        let q = dir.path().join("q.txt");
        let ns = nsd(dir.path())?;
        let t0 = Instant::now();
        let fe = ferry(dir.path(), ns.port)?;
        eprintln!(
            "  ferry dns ready with {n} services in {:.1} s",
            t0.elapsed().as_secs_f64()
        );
        let what = if n >= PODS_FROM {
            format!("{n} svc + {} pods", n * 5)
        } else {
            format!("{n} svc")
        };
        rows.push(measure(&fe, &what, &q, &args)?);
        rows.push(measure(&ns, &what, &q, &args)?);
        {
            let kn = knot(dir.path())?;
            rows.push(measure(&kn, &what, &q, &args)?);
        }
        if n == args.sizes[0] {
            let fq = dir.path().join("fq.txt");
            let ub = unbound(dir.path(), ns.port)?;
            warm(&ub, dir.path());
            warm(&fe, dir.path());
            rows.push(measure(&fe, "forwarded, cached", &fq, &args)?);
            rows.push(measure(&ub, "forwarded, cached", &fq, &args)?);
        }
    }
    println!();
    println!(
        "| server | load | qps (median) | qps min-max | server CPU | qps per server core | per core vs nsd | avg ms (sat.) | p50 / p99 ms @20k qps | lost | RSS MB |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        let nsd = rows
            .iter()
            .find(|o| o.server.starts_with("nsd") && o.what == r.what)
            .or_else(|| rows.iter().find(|o| o.server.starts_with("nsd")))
            .map_or(f64::NAN, |o| o.per_core);
        println!(
            "| {} | {} | {:.0} | {:.0}-{:.0} | {:.0}% | {:.0} | {:.2} | {:.3} | {:.3} / {:.3} | {} | {:.1} |",
            r.server,
            r.what,
            r.qps,
            r.range.0,
            r.range.1,
            r.cpu * 100.0,
            r.per_core,
            r.per_core / nsd,
            r.avg_ms,
            r.p50,
            r.p99,
            r.lost,
            r.rss
        );
    }
    Ok(std::process::ExitCode::SUCCESS)
}
