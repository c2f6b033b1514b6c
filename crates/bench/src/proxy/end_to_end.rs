//! `ferry bench proxy`'s last lines: the time from a manifest file change
//! to the rule in the kernel (nftables), through the real manifests source
//! (inotify, decode, plan, netlink), and through the Kubernetes API source
//! (the same file served by `ferry apiserver` on loopback, its watch event,
//! the kube-rs watcher, the source's batching, plan, netlink). Touches a
//! temporary directory, the router namespace's `ip ferry` table, and a
//! loopback port in the root namespace (the API server).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ferry_model::{ChangeSet, ClusterState};
use ferry_proxy::nft::NftBackend;
use ferry_proxy::{Family, plan};
use ferry_source::{FeedOptions, ManifestWatcher, SourceSpec};

use super::child::ctx;
use super::scratch::ROUTER;
use crate::synth;

/// Which source carries the change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Via {
    /// The manifests directory, watched by the agent itself.
    Manifests,
    /// The Kubernetes API: `ferry apiserver` serves the directory, the
    /// agent's API source watches it.
    Api,
}

/// Blocks until the source has a state newer than the last one.
type NextState<'a> = Box<dyn FnMut() -> anyhow::Result<(ClusterState, ChangeSet)> + 'a>;

/// Manifest file change -> rule in the kernel, through `via`; one time
/// (ms) per change.
pub(super) fn end_to_end(services: usize, runs: usize, via: Via) -> anyhow::Result<Vec<f64>> {
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("cluster.yaml"),
        synth::manifests(services, 8),
    )?;
    let slice_file = dir.path().join("changing.json");
    let write_slice = |k: usize| -> anyhow::Result<()> {
        let o = synth::slice(services, 8, Some(k % 8));
        let tmp = dir.path().join(".changing.tmp");
        std::fs::write(&tmp, o.to_json()?)?;
        std::fs::rename(&tmp, &slice_file)?;
        Ok(())
    };
    std::fs::write(
        dir.path().join("svc.json"),
        synth::service(services, 80).to_json()?,
    )?;
    write_slice(0)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Kept alive for the whole measurement.
    let mut _api_server = None;
    let (first, mut next): (ClusterState, NextState) = match via {
        Via::Manifests => {
            let (mut watcher, first) = ManifestWatcher::open(
                &[dir.path().to_path_buf()],
                false,
                Duration::from_millis(1),
            )?;
            (
                first.state,
                Box::new(move || match watcher.next(Duration::from_secs(5)) {
                    Some(snap) => {
                        let snap = snap?;
                        Ok((snap.state, snap.changes))
                    }
                    None => bail!("no change seen within 5 s"),
                }),
            )
        }
        Via::Api => {
            let (server, kubeconfig) = api_server(dir.path())?;
            _api_server = Some(server);
            let feed = ferry_kube::start(
                &SourceSpec::Kube {
                    kubeconfig: Some(kubeconfig),
                },
                FeedOptions::default(),
            )
            .context("starting the API source")?;
            let mut follower = feed.follow();
            // The source may publish before its first lists are in (the
            // agent starts while the API server is away): wait for them.
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut first = follower
                .try_next()
                .context("the API source published no first state")?;
            while first.state.len() < services {
                let left = deadline.saturating_duration_since(Instant::now());
                first = runtime
                    .block_on(async { tokio::time::timeout(left, follower.next()).await })
                    .context("the API source did not list the Services within 30 s")?
                    .context("the API source stopped")?;
            }
            (
                first.state.clone(),
                Box::new(move || {
                    let _feed = &feed;
                    let snap = runtime
                        .block_on(async {
                            tokio::time::timeout(Duration::from_secs(5), follower.next()).await
                        })
                        .context("no change seen within 5 s")?
                        .context("the API source stopped")?;
                    Ok((snap.state.clone(), snap.changes.clone()))
                }),
            )
        }
    };
    let c = ctx();
    let cidrs = vec!["10.128.0.0/9".parse()?];
    let mut p = plan(&first, &c);
    let mut backend = NftBackend::in_netns(ROUTER, Family::V4);
    backend.full_sync(&p, &cidrs)?;
    let mut out = Vec::new();
    for k in 1..=runs {
        let t = Instant::now();
        write_slice(k)?;
        loop {
            let (state, changes) = next()?;
            let changed = p.update(&state, &changes, &c);
            backend.sync(&p, &changed.changed, &cidrs)?;
            if !changed.changed.is_empty() {
                break;
            }
        }
        out.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(out)
}

/// `ferry apiserver` serving `dir` on a free loopback port, on a thread of
/// its own (stopped when the returned guard drops), and a kubeconfig for it.
fn api_server(dir: &std::path::Path) -> anyhow::Result<(ApiServerThread, std::path::PathBuf)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let listen: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let manifests = dir.to_path_buf();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("bench-apiserver".into())
        .spawn(move || -> anyhow::Result<()> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                tokio::select! {
                    r = ferry_apiserver::run(ferry_apiserver::Config {
                        manifests,
                        listen,
                        patches_file: None,
                        resource_version_file: None,
                        max_events: 10_000,
                        bookmark_interval: Duration::from_secs(60),
                    }) => r.map_err(anyhow::Error::from),
                    _ = stop_rx => Ok(()),
                }
            })
        })?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(listen).is_err() {
        if thread.is_finished() || Instant::now() > deadline {
            let why = match thread.join() {
                Ok(Err(e)) => e.to_string(),
                _ => "not listening after 30 s".into(),
            };
            bail!("the bench's API server on {listen}: {why}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let kubeconfig = dir.join("..").join(format!("bench-kubeconfig-{port}"));
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: bench\n  cluster:\n    server: http://{listen}\ncontexts:\n- name: bench\n  context:\n    cluster: bench\n    user: bench\nusers:\n- name: bench\n  user: {{}}\ncurrent-context: bench\n"
        ),
    )?;
    Ok((
        ApiServerThread {
            stop: Some(stop_tx),
            kubeconfig: kubeconfig.clone(),
        },
        kubeconfig,
    ))
}

/// Stops the bench's API server and removes its kubeconfig on drop.
pub(super) struct ApiServerThread {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    kubeconfig: std::path::PathBuf,
}

impl Drop for ApiServerThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = std::fs::remove_file(&self.kubeconfig);
    }
}
