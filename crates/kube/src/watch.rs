//! One kube-runtime `watcher` per kind, each on its own task, feeding one
//! channel. List paging, resource versions, bookmarks, `410 Gone`
//! (relist), dropped connections (watch again from the last version) and
//! backoff are the watcher's; this file only types its events and says
//! when a retry is due, so that the source can tell when an outage ended.
//!
//! Touches the network (the API server, through the kube client).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_model::Kind;
use ferry_model::k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod, Secret, Service};
use ferry_model::k8s_openapi::api::discovery::v1::EndpointSlice;
use ferry_model::k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use futures_util::StreamExt;
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, DefaultBackoff, Event};
use kube::runtime::{WatchStreamExt, watcher as watch_stream};
use kube::{Api, Client};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::fold::Change;
use crate::strip::Watched;

/// The ConfigMaps the source reads, by label: ferry's own (the lab's
/// `ferry-lab-sync` marker) and ingress-nginx's `tcp-services` /
/// `udp-services` style maps, which its Helm chart labels
/// `app.kubernetes.io/part-of: ingress-nginx`. Every other ConfigMap in
/// the cluster is neither sent nor stored.
pub const CONFIG_MAP_SELECTOR: &str = "app.kubernetes.io/part-of in (ferry,ingress-nginx)";

/// Only TLS Secrets (what an Ingress's `tls` section names).
pub const SECRET_SELECTOR: &str = "type=kubernetes.io/tls";

/// The kinds the source watches, in the order their watchers start.
pub const KINDS: &[Kind] = &[
    Kind::Namespace,
    Kind::Node,
    Kind::Service,
    Kind::EndpointSlice,
    Kind::Pod,
    Kind::Ingress,
    Kind::IngressClass,
    Kind::Secret,
    Kind::ConfigMap,
];

/// What a watcher task reports.
pub(crate) enum Report {
    Event(Kind, Change),
    /// A request failed; the watcher tries again at `retry_at`.
    Failed {
        kind: Kind,
        error: String,
        retry_at: Instant,
    },
}

/// kube-runtime's default backoff (client-go's reflector parameters:
/// 800 ms doubling to 30 s, reset after 120 s), noting when the next try is due.
struct Observed {
    inner: DefaultBackoff,
    retry_at: Arc<Mutex<Instant>>,
}

impl Iterator for Observed {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let delay = self.inner.next()?;
        if let Ok(mut at) = self.retry_at.lock() {
            *at = Instant::now() + delay;
        }
        Some(delay)
    }
}

impl Backoff for Observed {
    fn reset(&mut self) {
        self.inner.reset();
    }
}

/// Starts every kind's watcher on the current runtime.
pub(crate) fn spawn_all(client: &Client, tx: &mpsc::UnboundedSender<Report>) {
    let all = watcher::Config::default();
    spawn::<Namespace>(client, Kind::Namespace, all.clone(), tx);
    spawn::<Node>(client, Kind::Node, all.clone(), tx);
    spawn::<Service>(client, Kind::Service, all.clone(), tx);
    spawn::<EndpointSlice>(client, Kind::EndpointSlice, all.clone(), tx);
    spawn::<Pod>(client, Kind::Pod, all.clone(), tx);
    spawn::<Ingress>(client, Kind::Ingress, all.clone(), tx);
    spawn::<IngressClass>(client, Kind::IngressClass, all.clone(), tx);
    spawn::<Secret>(
        client,
        Kind::Secret,
        all.clone().fields(SECRET_SELECTOR),
        tx,
    );
    spawn::<ConfigMap>(client, Kind::ConfigMap, all.labels(CONFIG_MAP_SELECTOR), tx);
}

fn spawn<K: Watched>(
    client: &Client,
    kind: Kind,
    config: watcher::Config,
    tx: &mpsc::UnboundedSender<Report>,
) {
    let api: Api<K> = Api::all(client.clone());
    let tx = tx.clone();
    let retry_at = Arc::new(Mutex::new(Instant::now()));
    let backoff = Observed {
        inner: DefaultBackoff::default(),
        retry_at: retry_at.clone(),
    };
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(watch_stream(api, config).backoff(backoff));
        while let Some(item) = stream.next().await {
            let report = match item {
                Ok(event) => Report::Event(kind, typed(event)),
                Err(e) => Report::Failed {
                    kind,
                    error: e.to_string(),
                    retry_at: *retry_at.lock().unwrap_or_else(|p| p.into_inner()),
                },
            };
            if tx.send(report).is_err() {
                return;
            }
        }
    });
}

fn typed<K: Watched>(event: Event<K>) -> Change {
    match event {
        Event::Init => Change::Init,
        Event::InitApply(o) => Change::InitApply(o.into_object()),
        Event::InitDone => Change::InitDone,
        Event::Apply(o) => Change::Apply(o.into_object()),
        Event::Delete(o) => Change::Delete(o.into_object()),
    }
}
