//! One proxy mode at one size, measured in a child process of its own (so
//! its peak memory is the model, plan and backend of that size alone):
//! full syncs of a cold ruleset, one-change syncs, ruleset size, the
//! first-packet latency and new connections per second through the
//! router's rules, and for iptables the seeds' method (one `iptables -A`
//! process per rule). Touches the router namespace's nftables/iptables
//! rules, through ferry-proxy's backends and `ferry_sys::Tool`.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ferry_model::{ClusterState, Update};
use ferry_proxy::iptables::{Flavor, IptablesBackend};
use ferry_proxy::nft::NftBackend;
use ferry_proxy::{Backend, Family, NodeContext, ProxyPlan, plan};
use ferry_sys::Tool;

use super::CONNECTS;
use super::scratch::{ROUTER, connect_times, serve};
use crate::memory::peak_rss_mib;
use crate::stats::{median, percentile};
use crate::synth;

/// One-change syncs stop after this long (iptables at 20k takes seconds each).
const CHANGES_BUDGET: Duration = Duration::from_secs(60);
/// The seeds' one `iptables -A` may wait for the xtables lock and rewrite a
/// large table; it is not the thing under a deadline here.
const SEED_RULE_DEADLINE: Duration = Duration::from_secs(600);

pub(super) fn ctx() -> NodeContext {
    NodeContext {
        node_name: "node-0".into(),
        zone: None,
        family: Family::V4,
    }
}

#[derive(Clone, Copy, PartialEq)]
pub(super) enum Mode {
    Nftables,
    Iptables(Flavor),
}

pub(super) fn parse_mode(s: &str) -> anyhow::Result<Mode> {
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
        Mode::Nftables => Tool::new("nft")
            .netns(Some(ROUTER))
            .args(["delete", "table", "ip", "ferry"])
            .run()
            .map(drop)
            .map_err(Into::into),
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
        Tool::new(&tool)
            .netns(Some(ROUTER))
            .args([
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
            ])
            .timeout(SEED_RULE_DEADLINE)
            .run()?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(median(&mut times))
}

/// One mode and size, in this (child) process; prints one JSON line.
pub fn child(mode: &str, services: usize, runs: usize) -> anyhow::Result<()> {
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
    let full_s = median(&mut fulls);
    // Kernel hash tables resize in the background after a bulk load.
    std::thread::sleep(Duration::from_secs(2));

    // Data plane: the first and the last service (the last is the end of
    // KUBE-SERVICES in iptables mode, its worst case).
    let first = target(&p, false)?;
    let last = target(&p, true)?;
    let endpoints: Vec<IpAddr> = first
        .endpoints
        .iter()
        .chain(&last.endpoints)
        .copied()
        .collect();
    serve(&endpoints)?;
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
    // The first change after the bulk load pays the model's first
    // copy-on-write of the freshly built state: shown apart.
    let one_first = one.first().copied().unwrap_or(f64::NAN);
    println!(
        "{}",
        serde_json::json!({
            "full_s": full_s, "full_runs": fulls.len(), "size": size,
            "one_first_ms": one_first,
            "one_p50_ms": median(&mut one), "one_p99_ms": percentile(&mut one, 0.99),
            "one_runs": one.len(),
            "first_p50_us": median(&mut first_us), "first_p99_us": percentile(&mut first_us, 0.99),
            "last_p50_us": median(&mut last_us), "last_p99_us": percentile(&mut last_us, 0.99),
            "cps": cps, "seed_rule_ms": seed_ms,
            "peak_rss_mib": peak_rss_mib(),
        })
    );
    Ok(())
}
