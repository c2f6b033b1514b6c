//! Where an agent's heap goes (issue 13): loads issue 13's target case
//! (by default 20,000 Services x 8 endpoints + 100,000 Pods, the same
//! synthetic manifests `ferry bench memory` writes) the way the agent
//! does, counting live heap bytes with a counting allocator after each
//! step: the decoded objects per kind, the `ClusterState` over them, the
//! manifests source, the DNS index (pod records verified), the proxy plan
//! and the nftables elements. Prints one line per step, live and peak.
//!
//! `cargo run --release -p ferry --example agent_heap [SERVICES ENDPOINTS PODS]`
//! Touches a temporary directory and memory; nothing else. The counting
//! allocator lives only here, never in the shipped binary.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicIsize, Ordering};

use ferry_bench::synth;
use ferry_model::{ClusterState, Kind, Object, ObjectKey};
use ferry_proxy::nft::elements::{Applied, SlotIds, contribution};
use ferry_proxy::{Family, NodeContext};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now =
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed) + layout.size() as isize;
        PEAK.fetch_max(now, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let delta = new_size as isize - layout.size() as isize;
        let now = LIVE.fetch_add(delta, Ordering::Relaxed) + delta;
        PEAK.fetch_max(now, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

fn mib(bytes: isize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Prints one step: what it added to the live heap, per object when `per` is given.
fn step(what: &str, before: isize, per: Option<usize>) {
    let added = live() - before;
    let each = per.map_or(String::new(), |n| {
        format!("  {:>6} B x {n}", added / n.max(1) as isize)
    });
    println!(
        "  {what:<44} {:>9.1} MiB   live {:>7.1} MiB   peak {:>7.1} MiB{each}",
        mib(added),
        mib(live()),
        mib(PEAK.load(Ordering::Relaxed)),
    );
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("SERVICES ENDPOINTS PODS are numbers"))
        .collect();
    let (services, endpoints, pods) = match args[..] {
        [s, e, p] => (s, e, p),
        [] => (20_000, 8, 100_000),
        _ => panic!("usage: agent_heap [SERVICES ENDPOINTS PODS]"),
    };
    let dir = tempfile::tempdir().expect("a scratch directory");
    let cluster = synth::manifests(services, endpoints);
    let pod_text = synth::pods_manifest(pods.div_ceil(endpoints), endpoints);
    std::fs::write(dir.path().join("cluster.yaml"), &cluster).expect("writes");
    std::fs::write(dir.path().join("pods.yaml"), &pod_text).expect("writes");
    println!("{services} Services x {endpoints} endpoints + {pods} Pods, live heap bytes:");
    println!(
        "  sizes inline: slim ObjectMeta {} B, Service {} B, EndpointSlice {} B, Pod {} B",
        size_of::<ferry_model::meta::ObjectMeta>(),
        size_of::<ferry_model::k8s_openapi::api::core::v1::Service>(),
        size_of::<ferry_model::EndpointSlice>(),
        size_of::<ferry_model::Pod>(),
    );

    // 1. The objects alone, per kind, as the decoder makes them.
    let mut by_kind: BTreeMap<Kind, Vec<Object>> = BTreeMap::new();
    for (name, text) in [("cluster.yaml", cluster), ("pods.yaml", pod_text)] {
        let decoded = ferry_model::decode(name, &text);
        assert!(decoded.errors.is_empty(), "{:?}", decoded.errors.first());
        for d in decoded.objects {
            by_kind.entry(d.object.kind()).or_default().push(d.object);
        }
    }
    for v in by_kind.values_mut() {
        v.shrink_to_fit();
    }
    let all: Vec<Object> = by_kind.values().flatten().cloned().collect();
    let before = live();
    let state = ClusterState::from_objects(all);
    step(
        "ClusterState over them (maps, views)",
        before,
        Some(state.len()),
    );
    drop(state);
    let mut objects = 0;
    for (kind, v) in std::mem::take(&mut by_kind) {
        let n = v.len();
        let before = live();
        drop(v);
        println!(
            "  {:<44} {:>9.1} MiB   {:>6} B x {n}",
            format!("{kind} objects"),
            mib(before - live()),
            (before - live()) / n.max(1) as isize,
        );
        objects += before - live();
    }
    println!("  {:<44} {:>9.1} MiB", "objects, all kinds", mib(objects));

    // 2. As the agent loads them.
    println!("as the agent loads them:");
    let before = live();
    let (source, snapshot) =
        ferry_source::ManifestSource::open(&[dir.path().to_path_buf()], false).expect("opens");
    assert!(snapshot.errors.is_empty(), "{:?}", snapshot.errors.first());
    drop(snapshot);
    let state = source.state().clone();
    step("manifests source + model", before, Some(state.len()));
    let keys: Vec<ObjectKey> = state.objects().map(Object::key).collect();
    let before_keys = live();
    drop(keys);
    println!(
        "  (one more ObjectKey per object would cost {:.1} MiB)",
        mib(before_keys - live())
    );

    let before = live();
    let mut registry = prometheus_client::registry::Registry::default();
    let dns = ferry_dns::Server::new(
        ferry_dns::Config {
            pods: ferry_dns::PodMode::Verified,
            ..Default::default()
        },
        &mut registry,
    )
    .expect("a valid DNS config");
    dns.update(&state);
    step(
        "DNS index (pod records verified)",
        before,
        Some(dns.names()),
    );

    let before = live();
    let ctx = NodeContext {
        node_name: "node-0".into(),
        zone: None,
        family: Family::V4,
    };
    let plan = ferry_proxy::plan(&state, &ctx);
    step("proxy plan", before, Some(plan.services.len()));

    let before = live();
    let mut ids = SlotIds::default();
    let mut applied = Applied::default();
    let mut contributions = BTreeMap::new();
    for (name, p) in &plan.services {
        let c = contribution(p, &mut ids);
        applied.replace(&[], &c);
        contributions.insert(name.clone(), c.into_boxed_slice());
    }
    applied.take_delta();
    step("nftables elements", before, Some(applied.len()));
    println!(
        "total live {:.1} MiB, peak {:.1} MiB",
        mib(live()),
        mib(PEAK.load(Ordering::Relaxed))
    );
    drop((contributions, applied, plan, dns, state, source));
}
