//! `ferry bench proxy`: both proxy modes side by side, each size and mode
//! in a fresh child process (for its peak memory) and fresh scratch
//! namespaces: a router namespace holding the rules, a client namespace (a
//! pod) and a server namespace holding the endpoints of the services
//! whose traffic is measured. Measured: full sync, one-change syncs,
//! ruleset size, memory, the first-packet latency of new connections to a
//! ClusterIP (TCP connect time through the router's rules) and new
//! connections per second; for iptables also the seeds' method (one
//! `iptables -A` process per rule). Then the time from a manifest change to
//! the rule in the kernel (nftables).

use std::fs::File;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ferry_model::{ClusterState, Update};
use ferry_proxy::iptables::{Flavor, IptablesBackend};
use ferry_proxy::nft::NftBackend;
use ferry_proxy::{Backend, Family, NodeContext, ProxyPlan, plan};
use ferry_source::{ManifestSource, ManifestWatcher};

use crate::synth;

const ROUTER: &str = "ferry-bench-proxy";
const CLIENT: &str = "ferry-bench-client";
const SERVER: &str = "ferry-bench-server";
const CLIENT_IP: &str = "10.99.0.2";
/// Connections timed per target for the first-packet latency.
const CONNECTS: usize = 1000;
/// How long new connections per second are counted.
const CPS_WINDOW: Duration = Duration::from_millis(1500);
/// One-change syncs stop after this long (iptables at 20k takes seconds each).
const CHANGES_BUDGET: Duration = Duration::from_secs(60);

fn sh(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("running {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The three scratch namespaces and the links between them; removed on drop.
struct Scratch;

impl Scratch {
    fn create() -> anyhow::Result<Scratch> {
        Scratch::remove();
        for ns in [ROUTER, CLIENT, SERVER] {
            sh(&["ip", "netns", "add", ns])
                .context("creating scratch network namespaces (root needed)")?;
        }
        let scratch = Scratch;
        let ip = |ns: &str, rest: &str| -> anyhow::Result<()> {
            let mut args = vec!["ip", "-n", ns];
            args.extend(rest.split_whitespace());
            sh(&args)
        };
        for ns in [ROUTER, CLIENT, SERVER] {
            ip(ns, "link set lo up")?;
        }
        ip(
            ROUTER,
            &format!("link add r0 type veth peer name c0 netns {CLIENT}"),
        )?;
        ip(
            ROUTER,
            &format!("link add r1 type veth peer name s0 netns {SERVER}"),
        )?;
        ip(ROUTER, "addr add 10.99.0.1/24 dev r0")?;
        ip(ROUTER, "addr add 10.98.0.1/24 dev r1")?;
        ip(ROUTER, "link set r0 up")?;
        ip(ROUTER, "link set r1 up")?;
        ip(ROUTER, "route add 10.128.0.0/9 via 10.98.0.2")?;
        ip(CLIENT, &format!("addr add {CLIENT_IP}/24 dev c0"))?;
        ip(CLIENT, "link set c0 up")?;
        ip(CLIENT, "route add default via 10.99.0.1")?;
        ip(SERVER, "addr add 10.98.0.2/24 dev s0")?;
        ip(SERVER, "link set s0 up")?;
        ip(SERVER, "route add default via 10.98.0.1")?;
        sh(&[
            "ip",
            "netns",
            "exec",
            ROUTER,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ])?;
        sh(&[
            "ip",
            "netns",
            "exec",
            CLIENT,
            "sysctl",
            "-qw",
            "net.ipv4.ip_local_port_range=1024 65535",
        ])?;
        Ok(scratch)
    }

    fn remove() {
        for ns in [ROUTER, CLIENT, SERVER] {
            if std::path::Path::new("/run/netns").join(ns).exists() {
                let _ = Command::new("ip").args(["netns", "del", ns]).output();
            }
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        Scratch::remove();
    }
}

/// Runs `f` on a thread inside network namespace `ns`.
fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> anyhow::Result<std::thread::JoinHandle<anyhow::Result<T>>> {
    let file = File::open(format!("/run/netns/{ns}")).with_context(|| format!("netns {ns}"))?;
    Ok(std::thread::spawn(move || {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| anyhow::anyhow!("setns: {e}"))?;
        Ok(f())
    }))
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn ctx() -> NodeContext {
    NodeContext {
        node_name: "node-0".into(),
        zone: None,
        family: Family::V4,
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Nftables,
    Iptables(Flavor),
}

fn parse_mode(s: &str) -> anyhow::Result<Mode> {
    Ok(match s {
        "nftables" => Mode::Nftables,
        "iptables-legacy" => Mode::Iptables(Flavor::Legacy),
        "iptables-nft" => Mode::Iptables(Flavor::Nft),
        other => bail!("{other:?}: mode is nftables, iptables-legacy or iptables-nft"),
    })
}

fn backend(mode: Mode) -> Box<dyn Backend> {
    match mode {
        Mode::Nftables => Box::new(NftBackend::in_netns(ROUTER, Family::V4)),
        Mode::Iptables(f) => Box::new(IptablesBackend::in_netns(ROUTER, Family::V4, f)),
    }
}

/// Removes what a full sync loaded, so the next one starts cold.
fn unload(mode: Mode) -> anyhow::Result<()> {
    match mode {
        Mode::Nftables => sh(&[
            "ip", "netns", "exec", ROUTER, "nft", "delete", "table", "ip", "ferry",
        ]),
        Mode::Iptables(f) => IptablesBackend::cleanup(Family::V4, f, Some(ROUTER))
            .map(drop)
            .map_err(Into::into),
    }
}

/// A ClusterIP and its endpoints, for the data-plane measurement.
struct Target {
    vip: IpAddr,
    endpoints: Vec<IpAddr>,
}

fn target(p: &ProxyPlan, last: bool) -> anyhow::Result<Target> {
    let s = if last {
        p.services.values().next_back()
    } else {
        p.services.values().next()
    }
    .context("no services")?;
    Ok(Target {
        vip: s.cluster_ips[0],
        endpoints: s.cluster_endpoints.iter().map(|e| e.ip).collect(),
    })
}

/// Connect times (µs) to `vip:80` from the client namespace, and new
/// connections per second over [`CPS_WINDOW`].
fn connect_times(vip: IpAddr, count: usize, cps: bool) -> anyhow::Result<(Vec<f64>, f64)> {
    let addr = SocketAddr::new(vip, 80);
    in_netns(CLIENT, move || -> anyhow::Result<(Vec<f64>, f64)> {
        let mut times = Vec::with_capacity(count);
        for _ in 0..count {
            let t = Instant::now();
            let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                .with_context(|| format!("connecting to {addr}"))?;
            times.push(t.elapsed().as_secs_f64() * 1e6);
            drop(s);
        }
        let mut rate = f64::NAN;
        if cps {
            let start = Instant::now();
            let mut n = 0u64;
            while start.elapsed() < CPS_WINDOW {
                let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                    .with_context(|| format!("connecting to {addr}"))?;
                drop(s);
                n += 1;
            }
            rate = n as f64 / start.elapsed().as_secs_f64();
        }
        Ok((times, rate))
    })?
    .join()
    .map_err(|_| anyhow::anyhow!("client thread panicked"))??
}

/// Serves the targets' endpoints: their IPs on the server's link and a
/// listener on :8080 that accepts and closes (the process ends it).
fn serve(targets: &[&Target]) -> anyhow::Result<()> {
    for t in targets {
        for ip in &t.endpoints {
            sh(&[
                "ip",
                "-n",
                SERVER,
                "addr",
                "add",
                &format!("{ip}/32"),
                "dev",
                "s0",
            ])?;
        }
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let _ = in_netns(SERVER, move || {
        let listener = match TcpListener::bind("0.0.0.0:8080") {
            Ok(l) => l,
            Err(e) => {
                let _ = tx.send(Err(e.to_string()));
                return;
            }
        };
        let _ = tx.send(Ok(()));
        for conn in listener.incoming() {
            drop(conn);
        }
    })?;
    rx.recv_timeout(Duration::from_secs(5))
        .context("server thread")?
        .map_err(anyhow::Error::msg)
}

/// The seeds' method: one `iptables -A` process adding one rule to the
/// loaded ruleset (median of 3, ms).
fn one_rule_at_a_time(flavor: Flavor, p: &ProxyPlan) -> anyhow::Result<f64> {
    let chain = {
        let s = p.services.values().next().context("no services")?;
        let spn = ferry_proxy::iptables::rules::service_port_string(&s.name);
        format!(
            "KUBE-SVC-{}",
            ferry_proxy::iptables::hash::port_proto_hash(&spn, "tcp")
        )
    };
    let tool = flavor.binary(Family::V4, "");
    let mut times = Vec::new();
    for k in 0..3 {
        let vip = format!("10.255.0.{}/32", k + 1);
        let t = Instant::now();
        sh(&[
            "ip",
            "netns",
            "exec",
            ROUTER,
            &tool,
            "-w",
            "5",
            "-t",
            "nat",
            "-A",
            "KUBE-SERVICES",
            "-m",
            "comment",
            "--comment",
            "seed method",
            "-m",
            "tcp",
            "-p",
            "tcp",
            "-d",
            &vip,
            "--dport",
            "80",
            "-j",
            &chain,
        ])?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(pct(&mut times, 0.5))
}

/// One mode and size, in this (child) process; prints one JSON line.
pub fn child(mode: &str, services: usize, runs: usize) -> anyhow::Result<ExitCode> {
    let mode = parse_mode(mode)?;
    let cidrs = vec!["10.128.0.0/9".parse()?, "10.99.0.0/24".parse()?];
    let mut state = ClusterState::from_objects(synth::objects(services, 8));
    let c = ctx();
    let mut p = plan(&state, &c);
    // Full syncs of a cold ruleset: three when they are quick, else one.
    let mut fulls = Vec::new();
    let mut b = backend(mode);
    let mut size = 0;
    for run in 0..3 {
        if run > 0 {
            if fulls.iter().sum::<f64>() > 20.0 {
                break;
            }
            unload(mode)?;
            b = backend(mode);
        }
        let t = Instant::now();
        b.full_sync(&p, &cidrs).context("full sync")?;
        fulls.push(t.elapsed().as_secs_f64());
        size = b.size();
    }
    let full_s = pct(&mut fulls, 0.5);
    // Kernel hash tables resize in the background after a bulk load.
    std::thread::sleep(Duration::from_secs(2));

    // Data plane: the first and the last service (the last is the end of
    // KUBE-SERVICES in iptables mode, its worst case).
    let first = target(&p, false)?;
    let last = target(&p, true)?;
    serve(&[&first, &last])?;
    connect_times(first.vip, 50, false).context("warm-up")?;
    let (mut first_us, _) = connect_times(first.vip, CONNECTS, false)?;
    let (mut last_us, cps) = connect_times(last.vip, CONNECTS, true)?;

    let seed_ms = match mode {
        Mode::Iptables(f) => one_rule_at_a_time(f, &p)?,
        Mode::Nftables => f64::NAN,
    };

    let mut one = Vec::new();
    let budget = Instant::now();
    for k in 0..runs {
        if budget.elapsed() > CHANGES_BUDGET && one.len() >= 5 {
            break;
        }
        let i = (k * 7919) % services;
        let t = Instant::now();
        let (next, changes) = state.apply([Update::Apply(synth::slice(i, 8, Some(k % 8)))]);
        state = next;
        let changed = p.update(&state, &changes, &c);
        let s = b
            .sync(&p, &changed.changed, &cidrs)
            .context("one-change sync")?;
        one.push(t.elapsed().as_secs_f64() * 1000.0);
        if s.full {
            bail!("expected a partial sync, got {s:?}");
        }
    }
    println!(
        "{}",
        serde_json::json!({
            "full_s": full_s, "full_runs": fulls.len(), "size": size,
            "one_p50_ms": pct(&mut one, 0.5), "one_p99_ms": pct(&mut one, 0.99),
            "one_runs": one.len(),
            "first_p50_us": pct(&mut first_us, 0.5), "first_p99_us": pct(&mut first_us, 0.99),
            "last_p50_us": pct(&mut last_us, 0.5), "last_p99_us": pct(&mut last_us, 0.99),
            "cps": cps, "seed_rule_ms": seed_ms,
            "peak_rss_mib": peak_rss_mib(),
        })
    );
    Ok(ExitCode::SUCCESS)
}

/// Manifest file change -> rule in the kernel, through the real manifests source.
fn end_to_end(services: usize, runs: usize) -> anyhow::Result<Vec<f64>> {
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("cluster.yaml"),
        synth::manifests(services, 8),
    )?;
    let slice_file = dir.path().join("changing.json");
    let write_slice = |k: usize| -> anyhow::Result<()> {
        let o = synth::slice(services, 8, Some(k % 8));
        let tmp = dir.path().join(".changing.tmp");
        std::fs::write(&tmp, o.to_json()?)?;
        std::fs::rename(&tmp, &slice_file)?;
        Ok(())
    };
    std::fs::write(
        dir.path().join("svc.json"),
        synth::service(services, 80).to_json()?,
    )?;
    write_slice(0)?;
    let (source, first) = ManifestSource::open(&[dir.path().to_path_buf()], false)?;
    let c = ctx();
    let cidrs = vec!["10.128.0.0/9".parse()?];
    let mut p = plan(&first.state, &c);
    let mut backend = NftBackend::in_netns(ROUTER, Family::V4);
    backend.full_sync(&p, &cidrs)?;
    let mut watcher = ManifestWatcher::new(source, Duration::from_millis(1))?;
    let mut out = Vec::new();
    for k in 1..=runs {
        let t = Instant::now();
        write_slice(k)?;
        loop {
            let Some(snap) = watcher.next(Duration::from_secs(5)) else {
                bail!("no change seen within 5 s")
            };
            let snap = snap?;
            let changed = p.update(&snap.state, &snap.changes, &c);
            backend.sync(&p, &changed.changed, &cidrs)?;
            if !changed.changed.is_empty() {
                break;
            }
        }
        out.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(out)
}

fn f(v: &serde_json::Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or(f64::NAN)
}

pub fn run(
    sizes: &[usize],
    changes: usize,
    modes: &[String],
    max_predicted_s: f64,
) -> anyhow::Result<ExitCode> {
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: this is a debug build; figures are not meaningful (use cargo run --release)"
        );
    }
    for m in modes {
        parse_mode(m)?;
    }
    let exe = std::env::current_exe()?;
    println!("ferry bench proxy: nftables and iptables modes side by side, in scratch namespaces");
    println!(
        "(8 endpoints per service; full sync = cold ruleset, median of up to 3; one change = model apply + replan + sync of\n one EndpointSlice update; first packet = TCP connect time from a client namespace to a ClusterIP through the\n router namespace's rules, first and last service, {CONNECTS} connections each; conn/s = new connections per second\n to the last service, one client thread; seed = one `iptables -A` process adding one rule; RSS = the process\n holding model, plan and backend; for iptables, iptables-restore's own memory is not in it)\n"
    );
    println!(
        "  {:>7}  {:<16} {:>9} {:>9} {:>10} {:>10} {:>15} {:>15} {:>8} {:>8} {:>8}",
        "services",
        "mode",
        "rules/el",
        "full",
        "1-chg p50",
        "1-chg p99",
        "first svc p50/99",
        "last svc p50/99",
        "conn/s",
        "RSS",
        "seed"
    );
    let mut results: std::collections::BTreeMap<(usize, String), serde_json::Value> =
        Default::default();
    let mut last_full: std::collections::BTreeMap<String, (usize, f64)> = Default::default();
    for &n in sizes {
        for m in modes {
            if let Some((prev_n, prev_s)) = last_full.get(m) {
                let predicted = prev_s * (n as f64 / *prev_n as f64).powi(2);
                if predicted > max_predicted_s {
                    println!(
                        "  {n:>7}  {m:<16} not run: its full sync at {prev_n} took {prev_s:.1} s, which predicts ~{predicted:.0} s here (limit {max_predicted_s:.0} s)"
                    );
                    continue;
                }
            }
            eprintln!("{m}: {n} services ...");
            let scratch = Scratch::create()?;
            let out = Command::new(&exe)
                .args([
                    "bench",
                    "proxy-child",
                    m,
                    &n.to_string(),
                    &changes.to_string(),
                ])
                .output()?;
            drop(scratch);
            if !out.status.success() {
                bail!(
                    "{m} at {n} services: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let v: serde_json::Value = serde_json::from_slice(&out.stdout)
                .with_context(|| String::from_utf8_lossy(&out.stdout).into_owned())?;
            last_full.insert(m.clone(), (n, f(&v, "full_s")));
            println!(
                "  {:>7}  {:<16} {:>9} {:>8.2}s {:>8.2}ms {:>8.2}ms {:>7.0}/{:<5.0}us {:>7.0}/{:<5.0}us {:>8.0} {:>5.0}MiB {:>6}",
                n,
                m,
                v["size"],
                f(&v, "full_s"),
                f(&v, "one_p50_ms"),
                f(&v, "one_p99_ms"),
                f(&v, "first_p50_us"),
                f(&v, "first_p99_us"),
                f(&v, "last_p50_us"),
                f(&v, "last_p99_us"),
                f(&v, "cps"),
                f(&v, "peak_rss_mib"),
                if f(&v, "seed_rule_ms").is_nan() {
                    "-".to_string()
                } else {
                    format!("{:.0}ms", f(&v, "seed_rule_ms"))
                },
            );
            results.insert((n, m.clone()), v);
        }
    }
    println!("\n  ratios, iptables / nftables, same run (above 1: nftables is better):");
    println!(
        "  {:>7}  {:<16} {:>9} {:>10} {:>16} {:>14} {:>10}",
        "services", "iptables", "full", "1-chg p50", "last svc p50", "conn/s (n/i)", "RSS"
    );
    for &n in sizes {
        let Some(nft) = results.get(&(n, "nftables".to_string())) else {
            continue;
        };
        for m in modes.iter().filter(|m| m.starts_with("iptables")) {
            let Some(ipt) = results.get(&(n, m.clone())) else {
                continue;
            };
            let r = |k: &str| f(ipt, k) / f(nft, k);
            println!(
                "  {:>7}  {:<16} {:>8.1}x {:>9.1}x {:>15.2}x {:>13.2}x {:>9.2}x",
                n,
                m,
                r("full_s"),
                r("one_p50_ms"),
                r("last_p50_us"),
                f(nft, "cps") / f(ipt, "cps"),
                r("peak_rss_mib"),
            );
            let seed = f(ipt, "seed_rule_ms");
            if !seed.is_nan() {
                println!(
                    "  {:>7}  {:<16} seeds' method: one rule {seed:.0} ms; a whole service (~35 rules, 9 chains) ~{:.1} s; {n} services one rule at a time ~{:.0} min (extrapolated, not run)",
                    "",
                    "",
                    seed * 35.0 / 1000.0,
                    seed * 35.0 * n as f64 / 60_000.0
                );
            }
        }
    }
    let _cleanup = Scratch;
    sh(&["ip", "netns", "add", ROUTER])?;
    let mut e2e = end_to_end(1000, 50);
    let e2e = e2e
        .as_mut()
        .map_err(|e| anyhow::anyhow!("end to end: {e}"))?;
    println!(
        "\n  manifest change -> rule in the kernel (nftables, 1000 services, inotify + decode + plan + netlink): p50 {:.1} ms, p99 {:.1} ms over {} changes",
        pct(e2e, 0.5),
        pct(e2e, 0.99),
        e2e.len()
    );
    Ok(ExitCode::SUCCESS)
}
