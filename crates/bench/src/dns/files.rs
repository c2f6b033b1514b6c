//! The inputs of `ferry bench dns`, written into its scratch directory:
//! the cluster as manifests (for `ferry dns`), the same names as zone files
//! (for nsd and knot), an upstream zone of names to forward, and the query
//! files dnsperf replays. Deterministic; touches only that directory.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;

use crate::synth;

/// A scratch directory on `/dev/shm` when that is a tmpfs with room (a
/// replace-by-rename there costs about 16 µs, against 0.2 ms and writeback
/// on ext4: see `churn`), else in the system's temporary directory. Says
/// which on stderr.
pub(super) fn scratch() -> anyhow::Result<tempfile::TempDir> {
    // The inputs at 20k Services and the servers' databases: under 200 MB.
    let shm = ferry_sys::memory_backed_dir(1 << 30);
    let dir = match shm {
        Some(shm) => tempfile::tempdir_in(shm),
        None => tempfile::tempdir(),
    }
    .context("creating a scratch directory")?;
    eprintln!(
        "  scratch directory {} ({})",
        dir.path().display(),
        if shm.is_some() {
            "tmpfs"
        } else {
            "no tmpfs with 1 GiB free at /dev/shm: the churn writer's renames cost more"
        }
    );
    Ok(dir)
}

pub(super) const FORWARDED_NAMES: usize = 1000;
const QUERIES: usize = 100_000;

/// From this many services on, the cluster has its Pods too.
pub(super) const PODS_FROM: usize = 20_000;

pub(super) fn write_files(dir: &Path, n: usize) -> anyhow::Result<()> {
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
