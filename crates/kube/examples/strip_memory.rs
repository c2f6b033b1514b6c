//! What stripping saves: decodes N Pods and N Services shaped as an API
//! server sends them (managedFields of the controller manager and the
//! kubelet on Pods; `kubectl apply`'s managedFields and
//! last-applied-configuration annotation on Services), keeps them as
//! whole k8s-openapi objects as decoded (`keep`) or as the API source
//! keeps them, ferry's slim objects (`strip`), and prints the live heap
//! bytes (a counting allocator) and the growth of the process RSS.
//!
//! `cargo run --release -p ferry-kube --example strip_memory [N] [strip|keep]`
//! (one measurement per process, so that each RSS growth is its own).
//! Touches nothing but memory.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use ferry_kube::strip::{ApiPod, ApiService, Watched};
use ferry_model::k8s_openapi::api::core::v1::{Pod, Service};

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

/// What is kept of one object: ferry's slim one, or the whole decoded one.
fn decode<K: Watched, W: serde::de::DeserializeOwned + 'static>(
    text: &str,
    strip: bool,
) -> Box<dyn std::any::Any> {
    if strip {
        let object: K = serde_json::from_str(text).expect("decodes");
        Box::new(object.into_object())
    } else {
        let whole: W = serde_json::from_str(text).expect("decodes");
        Box::new(whole)
    }
}

fn measure(n: usize, strip: bool) -> (isize, u64) {
    let pods: Vec<String> = (0..n).map(pod).collect();
    let services: Vec<String> = (0..n).map(service).collect();
    let (live0, rss0) = (LIVE.load(Ordering::Relaxed), rss_kib());
    let mut kept: Vec<Box<dyn std::any::Any>> = Vec::with_capacity(2 * n);
    for (p, s) in pods.iter().zip(&services) {
        kept.push(decode::<ApiPod, Pod>(p, strip));
        kept.push(decode::<ApiService, Service>(s, strip));
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
        "as ferry keeps them (slim)"
    } else {
        "as sent, whole (managedFields, every annotation)"
    };
    println!(
        "{n} Pods + {n} Services {what}: {} KiB heap, +{rss} KiB RSS",
        heap / 1024
    );
}
