//! `ferry bench overlay`: the pod network, in one run. (1) Pod-to-pod TCP
//! throughput (iperf3) and round trips across two nodes over VXLAN and
//! over host-gw, as ratios to two plain namespaces on the same switch;
//! (2) the time to program 1,000 remote peers from scratch and one more,
//! ferry's netlink (pipelined and one at a time) against one `ip`/`bridge`
//! command per entry; (3) CNI ADD and DEL per pod, `ferry cni` against
//! Debian's `bridge` + `host-local`; (4) lease allocation throughput
//! against a real etcd and the file store. Runs are interleaved (every
//! measurement once per run) and each cell is the median over runs.
//! Touches the kernel (namespaces `ferry-bench-ov-*`, all deleted when
//! done or failed), processes (`ip`, `bridge`, `sysctl`, `iperf3`, the
//! CNI plugins, `etcd`, `etcdctl`) and temporary files.

mod cni;
mod leases;
mod peers;
mod scratch;
mod traffic;

use anyhow::Context;

use crate::stats::{median, percentile};
use traffic::{Cpus, Path};

/// What `ferry bench overlay` measures.
#[derive(Clone, Debug)]
pub struct OverlayOptions {
    /// Whole runs (each cell is the median over them).
    pub runs: usize,
    /// Seconds per iperf3 throughput test.
    pub seconds: u32,
    /// Remote peers programmed from scratch.
    pub peers: usize,
    /// Pods added and deleted per CNI plugin and run.
    pub pods: usize,
    /// Nodes taking leases per store and run.
    pub nodes: usize,
    /// Threads the nodes acquire from.
    pub threads: usize,
}

fn med(v: &[f64]) -> f64 {
    median(&mut v.to_vec())
}

/// Runs the benchmark and prints its tables.
pub fn run(o: OverlayOptions) -> anyhow::Result<()> {
    let runs = o.runs.max(1);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "ferry bench overlay  (median of {runs} runs; load average at start: {})",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    traffic_table(&o, runs).context("pod-to-pod traffic")?;
    peers_table(&o, runs).context("programming peers")?;
    cni_table(&o, runs).context("CNI ADD and DEL")?;
    leases_table(&o, runs).context("lease allocation")?;
    Ok(())
}

fn traffic_table(o: &OverlayOptions, runs: usize) -> anyhow::Result<()> {
    let paths = [Path::Limit, Path::HostGw, Path::Vxlan];
    // Two CPUs are needed to give each node one; otherwise only shared.
    let two_cpus = std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2);
    let arrangements: &[Cpus] = if two_cpus {
        &[Cpus::PerNode, Cpus::Shared]
    } else {
        &[Cpus::Shared]
    };
    let mut topo = traffic::Topology::create()?;
    // Per arrangement and path: Gbit/s each run. Per path: median RTT µs each run.
    let mut gbps = vec![vec![vec![]; 3]; arrangements.len()];
    let mut rtt = vec![vec![]; 3];
    let mut mtu = [0u32; 3];
    for run in 1..=runs {
        for (i, &path) in paths.iter().enumerate() {
            topo.set_path(path)?;
            mtu[i] = topo.pod_mtu;
            for (a, &cpus) in arrangements.iter().enumerate() {
                eprintln!(
                    "traffic: run {run}/{runs}: {}, {}",
                    path.label(),
                    cpus.label()
                );
                topo.set_cpus(cpus)?;
                gbps[a][i].push(topo.throughput(path, o.seconds, cpus)?);
            }
            rtt[i].push(med(&topo.round_trips(path)?));
        }
    }
    drop(topo);
    println!();
    println!(
        "pod-to-pod across two nodes: iperf3 TCP for {} s, and a 1-byte TCP ping-pong (underlay MTU 1500)",
        o.seconds
    );
    let ratio = |a: &[f64], b: &[f64]| -> f64 {
        med(&a.iter().zip(b).map(|(x, y)| x / y).collect::<Vec<_>>())
    };
    for (a, cpus) in arrangements.iter().enumerate() {
        println!("  {}:", cpus.label());
        println!(
            "  {:<40} {:>8} {:>10} {:>9} {:>10} {:>9}",
            "path", "pod MTU", "Gbit/s", "of limit", "RTT µs", "of limit"
        );
        for (i, path) in paths.iter().enumerate() {
            println!(
                "  {:<40} {:>8} {:>10.2} {:>8.0}% {:>10.1} {:>8.2}x",
                path.label(),
                mtu[i],
                med(&gbps[a][i]),
                ratio(&gbps[a][i], &gbps[a][0]) * 100.0,
                med(&rtt[i]),
                ratio(&rtt[i], &rtt[0]),
            );
        }
        let each: Vec<String> = gbps[a][2]
            .iter()
            .zip(&gbps[a][1])
            .map(|(v, g)| format!("{:.0}", v / g * 100.0))
            .collect();
        println!(
            "  VXLAN throughput is {:.0}% of host-gw's (runs: {} %; target: at least 90%)",
            ratio(&gbps[a][2], &gbps[a][1]) * 100.0,
            each.join(", ")
        );
    }
    if !two_cpus {
        println!("  (one CPU only: the nodes cannot have one each)");
    }
    Ok(())
}

fn peers_table(o: &OverlayOptions, runs: usize) -> anyhow::Result<()> {
    let bench = peers::Bench::create()?;
    let mut all = vec![vec![]; 3];
    let mut more = vec![vec![]; 3];
    let mut extrapolated = [false; 3];
    for run in 1..=runs {
        for (i, &way) in peers::Way::ALL.iter().enumerate() {
            eprintln!("peers: run {run}/{runs}: {}", way.label());
            let t = bench.run(way, o.peers)?;
            all[i].push(t.all.as_secs_f64() * 1e3);
            more[i].push(t.one_more.as_secs_f64() * 1e3);
            extrapolated[i] |= t.extrapolated;
        }
    }
    drop(bench);
    println!();
    println!(
        "programming {} remote peers from scratch (route + neighbour + FDB entry each, {} entries), then one more",
        o.peers,
        o.peers * 3
    );
    println!(
        "  {:<48} {:>12} {:>10} {:>12}",
        "how", "all, ms", "vs ferry", "one more, ms"
    );
    let ferry = med(&all[0]);
    for (i, way) in peers::Way::ALL.iter().enumerate() {
        let a = med(&all[i]);
        println!(
            "  {:<48} {:>11.1}{} {:>9.1}x {:>12.3}",
            way.label(),
            a,
            if extrapolated[i] { "~" } else { " " },
            a / ferry,
            med(&more[i]),
        );
    }
    println!("  (target: 1,000 peers under 100 ms; ~ = cut at 60 s and extrapolated)");
    Ok(())
}

fn cni_table(o: &OverlayOptions, runs: usize) -> anyhow::Result<()> {
    let bench = cni::Bench::create(o.pods)?;
    let (mut f_add, mut f_del, mut r_add, mut r_del, mut exec) =
        (vec![], vec![], vec![], vec![], vec![]);
    for run in 1..=runs {
        eprintln!("cni: run {run}/{runs}: {} pods per plugin", o.pods);
        let (f, r) = bench.run()?;
        f_add.extend(f.add);
        f_del.extend(f.del);
        r_add.extend(r.add);
        r_del.extend(r.del);
        exec.extend(bench.runtime_share()?);
    }
    drop(bench);
    println!();
    println!(
        "CNI calls per pod ({} pods x {runs} runs per plugin; each call under `ip netns exec NODE`, as runtimes run them)",
        o.pods
    );
    println!(
        "  {:<40} {:>10} {:>10} {:>10} {:>10}",
        "plugin", "ADD p50", "ADD p90", "DEL p50", "DEL p90"
    );
    let row = |name: &str, add: &mut Vec<f64>, del: &mut Vec<f64>| {
        println!(
            "  {:<40} {:>8.1}ms {:>8.1}ms {:>8.1}ms {:>8.1}ms",
            name,
            percentile(add, 0.5),
            percentile(add, 0.9),
            percentile(del, 0.5),
            percentile(del, 0.9),
        );
    };
    row("ferry cni", &mut f_add, &mut f_del);
    row("Debian bridge + host-local (1.1.1)", &mut r_add, &mut r_del);
    println!(
        "  (`ip netns exec NODE true` alone: {:.1} ms p50, in every call above)",
        percentile(&mut exec, 0.5)
    );
    Ok(())
}

fn leases_table(o: &OverlayOptions, runs: usize) -> anyhow::Result<()> {
    let etcd = leases::Etcd::start()?;
    let (mut e, mut f) = (vec![], vec![]);
    for run in 1..=runs {
        eprintln!("leases: run {run}/{runs}: {} nodes", o.nodes);
        e.push(leases::etcd_run(&etcd, run, o.nodes, o.threads)?);
        f.push(leases::file_run(o.nodes, o.threads)?);
    }
    drop(etcd);
    println!();
    println!(
        "lease allocation: {} nodes take a /24 each with store::acquire, from {} threads",
        o.nodes, o.threads
    );
    println!("  {:<40} {:>12}", "store", "leases/s");
    println!(
        "  {:<40} {:>12.0}",
        "etcd (etcd-server on loopback)",
        med(&e)
    );
    println!("  {:<40} {:>12.0}", "file store", med(&f));
    Ok(())
}
