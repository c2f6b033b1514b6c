//! One list-then-watch loop per kind, each on its own task, feeding one
//! channel, as client-go's reflector runs them: list (paged, 500 a page),
//! then watch from the list's resourceVersion with bookmarks; a watch that
//! ends is resumed from the last version seen; `410 Gone` relists; a
//! failed request is retried after client-go's backoff (800 ms doubling to
//! 30 s), or at once when another kind's watcher got through again (the
//! server is back: nobody waits out a long backoff step). kube-runtime's `watcher` does the same but keeps the list's
//! version and bookmarks to itself; the source needs both to say how far
//! each kind is known ([`Report::Progress`]), which is what lets the lab
//! (or anyone) wait until a node has seen a given write.
//!
//! Touches the network (the API server, through the kube client).

use std::sync::Arc;
use std::time::Duration;

use ferry_model::Kind;
use ferry_model::k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Secret};
use ferry_model::k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use futures_util::StreamExt;
use kube::api::{ListParams, WatchEvent, WatchParams};
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::DefaultBackoff;
use kube::{Api, Client, ResourceExt};
use tokio::sync::{Notify, mpsc};

use crate::fold::Change;
use crate::strip::{ApiEndpointSlice, ApiPod, ApiService, Watched};

/// The ConfigMaps the source reads, by label: ferry's own (the lab's
/// `ferry-lab-sync` marker) and ingress-nginx's `tcp-services` /
/// `udp-services` style maps, which its Helm chart labels
/// `app.kubernetes.io/part-of: ingress-nginx`. Every other ConfigMap in
/// the cluster is neither sent nor stored.
pub const CONFIG_MAP_SELECTOR: &str = "app.kubernetes.io/part-of in (ferry,ingress-nginx)";

/// Only TLS Secrets (what an Ingress's `tls` section names).
pub const SECRET_SELECTOR: &str = "type=kubernetes.io/tls";

/// client-go's list page size.
const PAGE_SIZE: u32 = 500;

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
#[derive(Debug)]
pub(crate) enum Report {
    Event(Kind, Change),
    /// Every change of the kind up to this resourceVersion has been sent
    /// (a list's version after its last item, an event's, a bookmark's).
    Progress(Kind, u64),
    /// A request succeeded after failures: the kind is in step again.
    Connected(Kind),
    /// A request failed; the watcher tries again after `retry_in`.
    Failed {
        kind: Kind,
        error: String,
        retry_in: Duration,
    },
}

/// Which objects of a kind are asked for.
#[derive(Clone, Default)]
struct Selectors {
    labels: Option<&'static str>,
    fields: Option<&'static str>,
}

/// Starts every kind's watcher on the current runtime.
pub(crate) fn spawn_all(client: &Client, tx: &mpsc::UnboundedSender<Report>) {
    let back = Arc::new(Notify::new());
    let all = Selectors::default();
    spawn::<Namespace>(client, Kind::Namespace, all.clone(), tx, &back);
    spawn::<Node>(client, Kind::Node, all.clone(), tx, &back);
    spawn::<ApiService>(client, Kind::Service, all.clone(), tx, &back);
    spawn::<ApiEndpointSlice>(client, Kind::EndpointSlice, all.clone(), tx, &back);
    spawn::<ApiPod>(client, Kind::Pod, all.clone(), tx, &back);
    spawn::<Ingress>(client, Kind::Ingress, all.clone(), tx, &back);
    spawn::<IngressClass>(client, Kind::IngressClass, all, tx, &back);
    let tls = Selectors {
        fields: Some(SECRET_SELECTOR),
        ..Selectors::default()
    };
    spawn::<Secret>(client, Kind::Secret, tls, tx, &back);
    let ours = Selectors {
        labels: Some(CONFIG_MAP_SELECTOR),
        ..Selectors::default()
    };
    spawn::<ConfigMap>(client, Kind::ConfigMap, ours, tx, &back);
}

fn spawn<K: Watched>(
    client: &Client,
    kind: Kind,
    selectors: Selectors,
    tx: &mpsc::UnboundedSender<Report>,
    back: &Arc<Notify>,
) {
    let watcher = Watcher::<K> {
        back: back.clone(),
        api: Api::all(client.clone()),
        kind,
        selectors,
        tx: tx.clone(),
        backoff: DefaultBackoff::default(),
        failing: false,
    };
    tokio::spawn(watcher.run());
}

/// Why a loop turn ended early.
enum Stop {
    /// The channel is gone: the source stopped.
    Closed,
    /// The server no longer has the version asked for: list again.
    Expired,
    /// A request failed: back off, then go on.
    Failed(String),
}

struct Watcher<K: Watched> {
    api: Api<K>,
    kind: Kind,
    selectors: Selectors,
    tx: mpsc::UnboundedSender<Report>,
    backoff: DefaultBackoff,
    /// The last request failed (so the next success is reported).
    failing: bool,
    /// Shared by every kind's watcher: one that gets through after
    /// failing wakes the others from their backoff.
    back: Arc<Notify>,
}

/// A watch that ends this soon without moving is resumed only after this long.
const QUICK_CLOSE: Duration = Duration::from_secs(1);

fn version_number(rv: &str) -> Option<u64> {
    rv.parse().ok()
}

impl<K: Watched> Watcher<K> {
    async fn run(mut self) {
        // The version to watch from; `None`: list first.
        let mut from: Option<String> = None;
        loop {
            let turn = match &from {
                None => self.list().await,
                // A watch that ends is started again from its last version;
                // one that a server (or a proxy before it) closes at once,
                // with nothing on it, is started again only after a pause,
                // not in a tight loop.
                Some(rv) => {
                    let started = tokio::time::Instant::now();
                    let turn = self.watch(rv).await;
                    if matches!(&turn, Ok(last) if last == rv) && started.elapsed() < QUICK_CLOSE {
                        tokio::time::sleep(QUICK_CLOSE).await;
                    }
                    turn
                }
            };
            match turn {
                Ok(rv) => from = Some(rv),
                Err(Stop::Closed) => return,
                Err(Stop::Expired) => {
                    from = None;
                    self.fail("410 Gone: the watch expired; relisting".into())
                        .await;
                }
                Err(Stop::Failed(error)) => {
                    if !self.fail(error).await {
                        return;
                    }
                }
            }
        }
    }

    /// Reports a failure and waits the backoff; false when nobody listens.
    async fn fail(&mut self, error: String) -> bool {
        self.failing = true;
        let retry_in = self.backoff.next().unwrap_or(Duration::from_secs(30));
        let report = Report::Failed {
            kind: self.kind,
            error,
            retry_in,
        };
        if self.tx.send(report).is_err() {
            return false;
        }
        tokio::select! {
            () = tokio::time::sleep(retry_in) => {}
            () = self.back.notified() => {}
        }
        true
    }

    fn send(&self, report: Report) -> Result<(), Stop> {
        self.tx.send(report).map_err(|_| Stop::Closed)
    }

    /// A request went through: the backoff starts again from its first step.
    fn succeeded(&mut self) -> Result<(), Stop> {
        self.backoff.reset();
        if std::mem::take(&mut self.failing) {
            self.back.notify_waiters();
            self.send(Report::Connected(self.kind))?;
        }
        Ok(())
    }

    /// Lists every page, then sends the whole list; returns its version.
    async fn list(&mut self) -> Result<String, Stop> {
        let mut params = ListParams::default().limit(PAGE_SIZE);
        params.label_selector = self.selectors.labels.map(str::to_string);
        params.field_selector = self.selectors.fields.map(str::to_string);
        let mut items = Vec::new();
        let version = loop {
            let page = self
                .api
                .list(&params)
                .await
                .map_err(|e| Stop::Failed(format!("list: {e}")))?;
            items.extend(page.items);
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params.continue_token = Some(token),
                None => break page.metadata.resource_version.unwrap_or_default(),
            }
        };
        self.succeeded()?;
        self.send(Report::Event(self.kind, Change::Init))?;
        for item in items {
            self.send(Report::Event(
                self.kind,
                Change::InitApply(item.into_object()),
            ))?;
        }
        // The list's version before its end, so that the state made at
        // the end of the first lists already comes with its progress.
        if let Some(n) = version_number(&version) {
            self.send(Report::Progress(self.kind, n))?;
        }
        self.send(Report::Event(self.kind, Change::InitDone))?;
        Ok(version)
    }

    /// Watches from `from` until the stream ends; returns the last version seen.
    async fn watch(&mut self, from: &str) -> Result<String, Stop> {
        let params = WatchParams {
            label_selector: self.selectors.labels.map(str::to_string),
            field_selector: self.selectors.fields.map(str::to_string),
            ..WatchParams::default()
        };
        let stream = self.api.watch(&params, from).await.map_err(|e| match &e {
            kube::Error::Api(status) if status.code == 410 => Stop::Expired,
            _ => Stop::Failed(format!("watch: {e}")),
        })?;
        self.succeeded()?;
        let mut stream = std::pin::pin!(stream);
        let mut last = from.to_string();
        while let Some(event) = stream.next().await {
            let (change, version) = match event {
                Ok(WatchEvent::Added(o) | WatchEvent::Modified(o)) => {
                    let rv = o.resource_version();
                    (Some(Change::Apply(o.into_object())), rv)
                }
                Ok(WatchEvent::Deleted(o)) => {
                    let rv = o.resource_version();
                    (Some(Change::Delete(o.into_object())), rv)
                }
                Ok(WatchEvent::Bookmark(b)) => (None, Some(b.metadata.resource_version)),
                Ok(WatchEvent::Error(status)) if status.code == 410 => return Err(Stop::Expired),
                Ok(WatchEvent::Error(status)) => {
                    return Err(Stop::Failed(format!("watch: {}", status.message)));
                }
                Err(e) => return Err(Stop::Failed(format!("watch stream: {e}"))),
            };
            if let Some(change) = change {
                self.send(Report::Event(self.kind, change))?;
            }
            if let Some(rv) = version.filter(|v| !v.is_empty()) {
                if let Some(n) = version_number(&rv) {
                    self.send(Report::Progress(self.kind, n))?;
                }
                last = rv;
            }
        }
        Ok(last)
    }
}
