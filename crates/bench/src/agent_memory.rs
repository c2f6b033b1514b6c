//! `ferry bench memory`: the memory of one agent running the nftables
//! proxy and cluster DNS (with pod records, `--dns-pods verified`) from
//! one shared model, over a large cluster read as manifests (by default
//! issue 13's target case: 20,000 Services x 8 endpoints + 100,000 Pods).
//! Each run is a real `ferry agent` in the scratch namespace
//! `ferry-bench-memory`, measured once `/readyz` says both components
//! applied the state: its resident memory then (VmRSS) and its peak
//! (VmHWM). `--before BINARY` measures another build (today's main) in
//! the same run; `--allocators` repeats each with glibc's default arenas
//! (eight per core: the agent caps them at two unless MALLOC_ARENA_MAX is
//! set), with one arena, and with jemalloc preloaded, to show the
//! allocator's share.
//!
//! Touches: a temporary directory, the namespace `ferry-bench-memory`
//! (created and removed through `ip`), the agent processes (killed at the
//! end), `/proc`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ferry_sys::Tool;
use ferry_sys::netns::in_netns;

use crate::memory::{peak_mib, rss_mib};
use crate::procs::Proc;
use crate::synth;

const NS: &str = "ferry-bench-memory";
/// An agent that is not ready by then has failed.
const READY_DEADLINE: Duration = Duration::from_secs(300);
/// After ready: background work (the proxy's canary check, DNS swaps) settles.
const SETTLE: Duration = Duration::from_secs(5);
const JEMALLOC: &str = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2";

/// What `ferry bench memory` measures.
#[derive(Clone, Debug)]
pub struct MemoryOptions {
    pub services: usize,
    pub endpoints: usize,
    /// Pods behind the first Services' endpoints (same IPs).
    pub pods: usize,
    /// Another ferry binary measured beside this one (e.g. main's).
    pub before: Option<PathBuf>,
    /// Also glibc with its default arenas and with one, and jemalloc (LD_PRELOAD).
    pub allocators: bool,
}

struct Figures {
    ready_s: f64,
    rss: f64,
    peak: f64,
    /// The allocator's bytes in use and free in its heaps (glibc only:
    /// the agent reads them with `mallinfo2`, which jemalloc does not fill).
    heap: Option<(f64, f64)>,
}

/// The scratch namespace; removed on drop.
struct Scratch;

impl Scratch {
    fn create() -> anyhow::Result<Scratch> {
        let _ = Tool::new("ip").args(["netns", "del", NS]).output();
        Tool::new("ip")
            .args(["netns", "add", NS])
            .run()
            .context("creating the scratch namespace (root needed)")?;
        let s = Scratch;
        Tool::new("ip")
            .args(["-n", NS, "link", "set", "lo", "up"])
            .run()?;
        Ok(s)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = Tool::new("ip").args(["netns", "del", NS]).output();
    }
}

/// The agent's whole answer to `GET path` on its loopback `port`, inside
/// the scratch namespace.
fn get(port: u16, path: &str) -> Option<String> {
    in_netns(NS, || {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
            .ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        Some(text)
    })
    .ok()
    .flatten()
}

/// The agent's `ferry_heap_in_use_bytes` and `ferry_heap_free_bytes`, MiB.
fn heap_mib() -> Option<(f64, f64)> {
    let text = get(10249, "/metrics")?;
    let gauge = |name: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            .map(|b| b / f64::from(1u32 << 20))
    };
    Some((
        gauge("ferry_heap_in_use_bytes ")?,
        gauge("ferry_heap_free_bytes ")?,
    ))
}

fn ready() -> bool {
    get(10256, "/readyz")
        .is_some_and(|a| a.starts_with("HTTP/1.1 200") || a.starts_with("HTTP/1.0 200"))
}

fn measure(binary: &Path, env: &[(&str, String)], manifests: &Path) -> anyhow::Result<Figures> {
    let _scratch = Scratch::create()?;
    let start = Instant::now();
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", NS])
        .arg(binary)
        .args(["agent", "--node", "node-0", "--source"])
        .arg(format!("manifests:{}", manifests.display()))
        .args([
            "--cluster-cidr",
            "10.128.0.0/9",
            "--dns-upstream",
            "none",
            "--dns-pods",
            "verified",
            "--health-timeout",
            "600s",
        ])
        .envs(env.iter().map(|(k, v)| (k, v)));
    // `ip netns exec` execs the agent: the child's pid is the agent's.
    let agent = Proc::spawn("ferry agent", &mut cmd, 10256)?;
    while !ready() {
        if start.elapsed() > READY_DEADLINE {
            bail!("the agent was not ready after {READY_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let ready_s = start.elapsed().as_secs_f64();
    std::thread::sleep(SETTLE);
    let pid = u64::from(agent.child.id());
    let rss = rss_mib(pid).context("the agent exited")?;
    let peak = peak_mib(pid).context("the agent exited")?;
    let heap = heap_mib();
    drop(agent);
    Ok(Figures {
        ready_s,
        rss,
        peak,
        heap,
    })
}

/// Runs the benchmark and prints its table.
pub fn run(a: MemoryOptions) -> anyhow::Result<()> {
    if cfg!(debug_assertions) {
        eprintln!("warning: this is a debug build; figures are not meaningful (use --release)");
    }
    let dir = tempfile::tempdir().context("creating a scratch directory")?;
    eprintln!(
        "writing {} Services x {} endpoints + {} Pods as manifests ...",
        a.services, a.endpoints, a.pods
    );
    std::fs::write(
        dir.path().join("cluster.yaml"),
        synth::manifests(a.services, a.endpoints),
    )?;
    std::fs::write(
        dir.path().join("pods.yaml"),
        synth::pods_manifest(a.pods.div_ceil(a.endpoints), a.endpoints),
    )?;
    let this = std::env::current_exe().context("finding the ferry binary")?;
    let mut binaries = vec![("this build".to_string(), this)];
    if let Some(b) = &a.before {
        binaries.push((format!("{}", b.display()), b.clone()));
    }
    let mut allocators: Vec<(String, Vec<(&str, String)>)> = vec![("glibc".into(), vec![])];
    if a.allocators {
        // glibc's own default: eight arenas per core.
        let default = 8 * std::thread::available_parallelism().map_or(1, |n| n.get());
        allocators.push((
            format!("glibc, MALLOC_ARENA_MAX={default}"),
            vec![("MALLOC_ARENA_MAX", default.to_string())],
        ));
        allocators.push((
            "glibc, MALLOC_ARENA_MAX=1".into(),
            vec![("MALLOC_ARENA_MAX", "1".into())],
        ));
        if Path::new(JEMALLOC).exists() {
            allocators.push((
                "jemalloc 5 (LD_PRELOAD)".into(),
                vec![("LD_PRELOAD", JEMALLOC.into())],
            ));
        }
    }
    println!(
        "ferry bench memory: one agent, nftables proxy + DNS (pod records), {} Services x {} endpoints + {} Pods as manifests",
        a.services, a.endpoints, a.pods
    );
    println!(
        "  {:<44} {:<28} {:>8} {:>10} {:>10} {:>12} {:>12}",
        "binary", "allocator", "ready", "RSS", "peak RSS", "heap in use", "heap free"
    );
    for (name, bin) in &binaries {
        for (alloc, env) in &allocators {
            eprintln!("{name}, {alloc} ...");
            let f = measure(bin, env, dir.path())?;
            let (used, free) = match f.heap {
                Some((u, f)) if !env.iter().any(|(k, _)| *k == "LD_PRELOAD") => {
                    (format!("{u:.0}MiB"), format!("{f:.0}MiB"))
                }
                _ => ("-".to_string(), "-".to_string()),
            };
            println!(
                "  {:<44} {:<28} {:>7.1}s {:>7.0}MiB {:>7.0}MiB {:>12} {:>12}",
                name, alloc, f.ready_s, f.rss, f.peak, used, free
            );
        }
    }
    Ok(())
}
