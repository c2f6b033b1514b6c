//! The running source: a thread with its own async runtime that connects
//! to the API server, runs the watchers, folds their events and publishes
//! snapshots through a [`Feed`]. The first snapshot is published only
//! once every kind has been listed; after that, events arriving within
//! [`BATCH`] of each other become one state version. After each batch the
//! source also publishes its progress: the lowest resourceVersion every
//! kind's watcher has reached (lists, events and bookmarks move it), and
//! the state version that holds everything up to it.
//!
//! Staleness: a failed request makes its kind *failing* (the feed's
//! [`SourceHealth`] says since when and why; the last good state keeps
//! being served). The kind is in step again when its watcher's next
//! request goes through (a list, or a watch the server accepted: it
//! replays everything since the version it resumes from). Before the first
//! lists the source is stale from the start, and the feed has no state.
//!
//! Touches the network (through the watchers) and starts a thread.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use ferry_model::Kind;
use ferry_source::{Feed, FeedOptions, Publisher, SourceHealth, SourceProgress, SourceSpec};
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::KubeError;
use crate::fold::Fold;
use crate::watch::{KINDS, Report, spawn_all};

/// Events closer together than this become one state version.
pub const BATCH: Duration = Duration::from_millis(10);

/// How often the source checks its health and whether anyone still follows it.
const TICK: Duration = Duration::from_millis(200);

/// Starts `spec`: the Kubernetes API source here, any other through
/// [`Feed::start`]. For the API source this returns once every kind has
/// been listed (retrying with backoff meanwhile, as kube-proxy waits for
/// its caches), or with the error that makes connecting impossible (a
/// kubeconfig that does not load).
pub fn start(spec: &SourceSpec, options: FeedOptions) -> Result<Feed, KubeError> {
    match spec {
        SourceSpec::Kube { kubeconfig } => start_kube(kubeconfig.clone(), options, Wait::Listed),
        other => Ok(Feed::start(other, options)?),
    }
}

/// As [`start`], but the API source returns as soon as its configuration
/// is loaded: the feed has no state until the first lists arrive
/// ([`Feed::has_state`]), and says it is stale meanwhile. The agent starts
/// this way, so that it serves its health endpoints during an API outage.
pub fn start_in_background(spec: &SourceSpec, options: FeedOptions) -> Result<Feed, KubeError> {
    match spec {
        SourceSpec::Kube { kubeconfig } => start_kube(kubeconfig.clone(), options, Wait::Connected),
        other => Ok(Feed::start(other, options)?),
    }
}

/// When [`start_kube`] returns.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// The configuration is loaded and the client made.
    Connected,
    /// Every kind has been listed.
    Listed,
}

fn start_kube(
    kubeconfig: Option<PathBuf>,
    options: FeedOptions,
    wait: Wait,
) -> Result<Feed, KubeError> {
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("source".into())
        .spawn(move || {
            options.on_source_thread();
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    let _ = ready_tx.send(Err(KubeError::Thread(e.to_string())));
                    return;
                }
            };
            runtime.block_on(run(kubeconfig, options, wait, ready_tx));
        })
        .map_err(|e| KubeError::Thread(e.to_string()))?;
    ready_rx.recv().unwrap_or(Err(KubeError::Stopped))
}

pub(crate) async fn connect(kubeconfig: Option<&Path>) -> Result<(Client, String), KubeError> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).map_err(|source| KubeError::Kubeconfig {
                path: path.to_path_buf(),
                source,
            })?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|source| KubeError::Kubeconfig {
                    path: path.to_path_buf(),
                    source,
                })?
        }
        None => kube::Config::infer().await?,
    };
    let origin = config.cluster_url.to_string();
    let client = Client::try_from(config).map_err(|source| KubeError::Client {
        url: origin.clone(),
        source,
    })?;
    Ok((client, origin))
}

/// A kind whose last request failed.
struct Failing {
    since: SystemTime,
    error: String,
}

/// What the source knows of its watchers' health.
#[derive(Default)]
struct Health {
    failing: BTreeMap<Kind, Failing>,
    /// Before the first lists: since when the source has been waiting.
    waiting_since: Option<SystemTime>,
}

impl Health {
    fn failed(&mut self, kind: Kind, error: String) {
        let since = self
            .failing
            .get(&kind)
            .map_or_else(SystemTime::now, |f| f.since);
        self.failing.insert(kind, Failing { since, error });
    }

    /// True when the kind was failing.
    fn in_step(&mut self, kind: Kind) -> bool {
        self.failing.remove(&kind).is_some()
    }

    fn report(&self, fold: &Fold) -> SourceHealth {
        let mut reasons: Vec<String> = self
            .failing
            .iter()
            .map(|(kind, f)| format!("{kind}: {}", f.error))
            .collect();
        let mut since = self.failing.values().map(|f| f.since).min();
        if let Some(waiting) = self.waiting_since {
            let kinds: Vec<String> = fold.waiting_for().iter().map(ToString::to_string).collect();
            reasons.insert(0, format!("not listed yet: {}", kinds.join(", ")));
            since = Some(since.map_or(waiting, |s| s.min(waiting)));
        }
        SourceHealth {
            stale_since: since,
            reason: (!reasons.is_empty()).then(|| reasons.join("; ")),
        }
    }
}

async fn run(
    kubeconfig: Option<PathBuf>,
    options: FeedOptions,
    wait: Wait,
    ready: std::sync::mpsc::SyncSender<Result<Feed, KubeError>>,
) {
    let (client, origin) = match connect(kubeconfig.as_deref()).await {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let (publisher, feed) = Feed::publisher_pending();
    let mut feed = Some(feed);
    if wait == Wait::Connected
        && let Some(feed) = feed.take()
        && ready.send(Ok(feed)).is_err()
    {
        return;
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    spawn_all(&client, &tx);
    drop(tx);
    let mut fold = Fold::new(origin.clone(), options.validation, KINDS);
    let mut health = Health {
        waiting_since: Some(SystemTime::now()),
        ..Health::default()
    };
    publisher.set_health(health.report(&fold));

    // The first lists.
    while !fold.ready() {
        match rx.recv().await {
            Some(Report::Event(kind, change)) => {
                health.in_step(kind);
                fold.push(kind, change);
            }
            Some(Report::Progress(kind, rv)) => fold.progress(kind, rv),
            Some(Report::Connected(kind)) => {
                health.in_step(kind);
            }
            Some(Report::Failed { kind, error, .. }) => {
                tracing::warn!(%kind, server = %origin, %error, waiting_for = ?fold.waiting_for(), "cannot list yet; retrying");
                health.failed(kind, error);
            }
            None => {
                if let Some(feed) = feed.take() {
                    drop(feed);
                    let _ = ready.send(Err(KubeError::Stopped));
                }
                return;
            }
        }
        publisher.set_health(health.report(&fold));
    }
    let Some(first) = fold.flush() else {
        unreachable!("the first flush always publishes");
    };
    tracing::info!(server = %origin, objects = first.state.len(), "listed every kind; watching");
    publisher.publish(first);
    health.waiting_since = None;
    publisher.set_health(health.report(&fold));
    publish_progress(&publisher, &fold);
    if let Some(feed) = feed.take()
        && ready.send(Ok(feed)).is_err()
    {
        return;
    }
    drop(ready);

    let mut batch_ends: Option<Instant> = None;
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            report = rx.recv() => match report {
                Some(Report::Event(kind, change)) => {
                    if health.in_step(kind) {
                        tracing::info!(%kind, "watching again");
                    }
                    fold.push(kind, change);
                    batch_ends.get_or_insert_with(|| Instant::now() + BATCH);
                }
                Some(Report::Progress(kind, rv)) => {
                    fold.progress(kind, rv);
                    batch_ends.get_or_insert_with(|| Instant::now() + BATCH);
                }
                Some(Report::Connected(kind)) => {
                    if health.in_step(kind) {
                        tracing::info!(%kind, "watching again");
                    }
                }
                Some(Report::Failed { kind, error, retry_in }) => {
                    if error.contains("410") {
                        tracing::info!(%kind, %error, "the watch expired; relisting");
                    } else {
                        tracing::warn!(%kind, %error, ?retry_in, "watch failed; serving the last state meanwhile");
                    }
                    health.failed(kind, error);
                }
                None => {
                    tracing::error!("every watcher stopped; the source ends");
                    return;
                }
            },
            _ = sleep_until(batch_ends) => {
                batch_ends = None;
                if let Some(snapshot) = fold.flush() {
                    publisher.publish(snapshot);
                }
                publish_progress(&publisher, &fold);
            }
            _ = tick.tick() => {
                if publisher.is_closed() {
                    return;
                }
            }
        }
        publisher.set_health(health.report(&fold));
    }
}

/// After a flush: the state just made holds every change up to the
/// lowest version every kind has reached.
fn publish_progress(publisher: &Publisher, fold: &Fold) {
    if let Some(resource_version) = fold.resource_version() {
        publisher.set_progress(SourceProgress {
            state_version: fold.state_version(),
            resource_version,
        });
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
