//! What stripping saves: decodes N Pods and N Services shaped as an API
//! server sends them (managedFields of the controller manager and the
//! kubelet on Pods; `kubectl apply`'s managedFields and
//! last-applied-configuration annotation on Services), keeps them as
//! ferry objects as decoded or stripped, and prints the live heap bytes
//! (a counting allocator) and the growth of the process RSS.
//!
//! `cargo run --release -p ferry-kube --example strip_memory [N] [strip|keep]`
//! (one measurement per process, so that each RSS growth is its own).
//! Touches nothing but memory.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use ferry_kube::strip::{ApiPod, Watched};
use ferry_model::Object;
use ferry_model::k8s_openapi::api::core::v1::Service;

mod shapes;
use shapes::{pod, service};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

fn decode<K: Watched>(text: &str, strip: bool) -> Object {
    let mut object: K = serde_json::from_str(text).expect("decodes");
    let meta = kube::Resource::meta_mut(&mut object);
    let saved = (meta.managed_fields.take(), meta.annotations.take());
    let mut o = object.into_object();
    // What would be stored without stripping. Pods are decoded into the
    // model's slim metadata, which has no place for either.
    if !strip && let Object::Service(s) = &mut o {
        let meta = &mut std::sync::Arc::make_mut(s).metadata;
        (meta.managed_fields, meta.annotations) = saved;
    }
    o
}

fn measure(n: usize, strip: bool) -> (isize, u64) {
    let pods: Vec<String> = (0..n).map(pod).collect();
    let services: Vec<String> = (0..n).map(service).collect();
    let (live0, rss0) = (LIVE.load(Ordering::Relaxed), rss_kib());
    let mut kept: Vec<Object> = Vec::with_capacity(2 * n);
    for (p, s) in pods.iter().zip(&services) {
        kept.push(decode::<ApiPod>(p, strip));
        kept.push(decode::<Service>(s, strip));
    }
    let out = (
        LIVE.load(Ordering::Relaxed) - live0,
        rss_kib().saturating_sub(rss0),
    );
    drop(kept);
    out
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2500);
    // One measurement per process, so that the RSS growth is its own.
    let strip = match args.next().as_deref() {
        Some("keep") => false,
        Some("strip") | None => true,
        Some(other) => panic!("{other:?}: expected strip or keep"),
    };
    let (heap, rss) = measure(n, strip);
    let what = if strip {
        "stripped"
    } else {
        "as sent (managedFields, every annotation)"
    };
    println!(
        "{n} Pods + {n} Services {what}: {} KiB heap, +{rss} KiB RSS",
        heap / 1024
    );
}
