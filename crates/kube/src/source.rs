//! The running source: a thread with its own async runtime that connects
//! to the API server, runs the watchers, folds their events and publishes
//! snapshots through a [`Feed`]. The first snapshot is published only
//! once every kind has been listed; after that, events arriving within
//! [`BATCH`] of each other become one state version.
//!
//! Staleness: a failed request makes its kind *failing* (the feed's
//! [`SourceHealth`] says since when and why; the last good state keeps
//! being served). The kind is in step again when its watcher delivers an
//! event, or when the retry the backoff scheduled has passed [`GRACE`]
//! ago without failing (a watch that resumes silently, as after a dropped
//! connection, sends nothing until something changes). A server that
//! accepts connections but never answers would look recovered after the
//! grace; kube's own request timeouts then report it failing again.
//!
//! Touches the network (through the watchers) and starts a thread.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use ferry_model::Kind;
use ferry_source::{Feed, FeedOptions, SourceHealth, SourceSpec};
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::KubeError;
use crate::fold::Fold;
use crate::watch::{KINDS, Report, spawn_all};

/// Events closer together than this become one state version.
pub const BATCH: Duration = Duration::from_millis(10);

/// How long after a scheduled retry a kind counts as recovered when
/// nothing failed again.
pub const GRACE: Duration = Duration::from_secs(1);

/// How often the source checks its health and whether anyone still follows it.
const TICK: Duration = Duration::from_millis(200);

/// Starts `spec`: the Kubernetes API source here, any other through
/// [`Feed::start`]. For the API source this returns once every kind has
/// been listed (retrying with backoff meanwhile, as kube-proxy waits for
/// its caches), or with the error that makes connecting impossible (a
/// kubeconfig that does not load).
pub fn start(spec: &SourceSpec, options: FeedOptions) -> Result<Feed, KubeError> {
    match spec {
        SourceSpec::Kube { kubeconfig } => start_kube(kubeconfig.clone(), options),
        other => Ok(Feed::start(other, options)?),
    }
}

fn start_kube(kubeconfig: Option<PathBuf>, options: FeedOptions) -> Result<Feed, KubeError> {
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("source".into())
        .spawn(move || {
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
            runtime.block_on(run(kubeconfig, options, ready_tx));
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
    retry_at: Instant,
}

async fn run(
    kubeconfig: Option<PathBuf>,
    options: FeedOptions,
    ready: std::sync::mpsc::SyncSender<Result<Feed, KubeError>>,
) {
    let (client, origin) = match connect(kubeconfig.as_deref()).await {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    spawn_all(&client, &tx);
    drop(tx);
    let mut fold = Fold::new(origin.clone(), options.validation, KINDS);
    let mut failing: BTreeMap<Kind, Failing> = BTreeMap::new();

    // The first lists.
    while !fold.ready() {
        match rx.recv().await {
            Some(Report::Event(kind, change)) => {
                failing.remove(&kind);
                fold.push(kind, change);
            }
            Some(Report::Failed { kind, error, .. }) => {
                tracing::warn!(%kind, server = %origin, %error, waiting_for = ?fold.waiting_for(), "cannot list yet; retrying");
            }
            None => {
                let _ = ready.send(Err(KubeError::Stopped));
                return;
            }
        }
    }
    let Some(first) = fold.flush() else {
        unreachable!("the first flush always publishes");
    };
    tracing::info!(server = %origin, objects = first.state.len(), "listed every kind; watching");
    let (publisher, feed) = Feed::publisher(first);
    if ready.send(Ok(feed)).is_err() {
        return;
    }
    drop(ready);

    let mut batch_ends: Option<Instant> = None;
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            report = rx.recv() => match report {
                Some(Report::Event(kind, change)) => {
                    if failing.remove(&kind).is_some() {
                        tracing::info!(%kind, "watching again");
                    }
                    fold.push(kind, change);
                    batch_ends.get_or_insert_with(|| Instant::now() + BATCH);
                }
                Some(Report::Failed { kind, error, retry_at }) => {
                    if error.contains("410") {
                        tracing::info!(%kind, %error, "the watch expired; relisting");
                    } else {
                        tracing::warn!(%kind, %error, "watch failed; serving the last state meanwhile");
                    }
                    let since = failing.get(&kind).map_or_else(SystemTime::now, |f| f.since);
                    failing.insert(kind, Failing { since, error, retry_at });
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
            }
            _ = tick.tick() => {
                if publisher.is_closed() {
                    return;
                }
                let now = Instant::now();
                failing.retain(|kind, f| {
                    let recovered = now > f.retry_at + GRACE;
                    if recovered {
                        tracing::info!(%kind, "the retry did not fail; in step again");
                    }
                    !recovered
                });
            }
        }
        publisher.set_health(health(&failing));
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn health(failing: &BTreeMap<Kind, Failing>) -> SourceHealth {
    SourceHealth {
        stale_since: failing.values().map(|f| f.since).min(),
        reason: (!failing.is_empty()).then(|| {
            failing
                .iter()
                .map(|(kind, f)| format!("{kind}: {}", f.error))
                .collect::<Vec<_>>()
                .join("; ")
        }),
    }
}
