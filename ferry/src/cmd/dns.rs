//! `ferry dns --source manifests:DIR|kube[:KUBECONFIG] --listen ADDR:PORT`:
//! the cluster DNS server on its own, following a manifests directory or
//! the Kubernetes API.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use ferry_dns::{Config, Listener, PodMode, Server};
use ferry_source::{FeedOptions, SourceSpec};

/// How often `ferry dns` says it follows changes, at most.
const LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(clap::Args)]
pub struct Args {
    /// Where the cluster comes from: manifests:DIR (watched for changes),
    /// kube (in-cluster config) or kube:KUBECONFIG (the Kubernetes API).
    #[arg(long)]
    source: SourceSpec,
    /// Address to serve on, UDP and TCP (repeat for several).
    #[arg(long, required = true)]
    listen: Vec<SocketAddr>,
    /// Cluster zone (repeat for several; the first names PTR targets).
    #[arg(long = "zone", default_value = "cluster.local")]
    zones: Vec<String>,
    /// Upstream resolver for other names, IP:PORT (repeat for several).
    #[arg(long = "upstream", conflicts_with = "resolv_conf")]
    upstreams: Vec<SocketAddr>,
    /// Read upstream resolvers from the nameserver lines of this file.
    #[arg(long)]
    resolv_conf: Option<PathBuf>,
    /// TTL of cluster records in seconds (0-3600; CoreDNS's default is 5).
    #[arg(long, default_value_t = ferry_dns::DEFAULT_TTL)]
    ttl: u32,
    /// Pod records a-b-c-d.NS.pod.ZONE: disabled, insecure or verified.
    #[arg(long, default_value = "disabled")]
    pods: PodMode,
    /// Serve only these namespaces (repeat); default all.
    #[arg(long = "namespace")]
    namespaces: Vec<String>,
    /// Most answers the forward cache keeps (0 disables it).
    #[arg(long, default_value_t = 10_000)]
    cache_size: usize,
    /// Addresses of ns.dns.ZONE (the apex NS glue).
    #[arg(long = "nameserver-ip")]
    nameserver_ips: Vec<IpAddr>,
    /// /metrics, /health and /ready on this address.
    #[arg(long)]
    metrics: Option<SocketAddr>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let upstreams = match &args.resolv_conf {
        Some(path) => ferry_dns::read_resolv_conf(path)?,
        None => args.upstreams.clone(),
    };
    let config = Config {
        zones: args.zones.clone(),
        ttl: args.ttl,
        pods: args.pods,
        namespaces: (!args.namespaces.is_empty()).then(|| args.namespaces.clone()),
        upstreams: upstreams.clone(),
        cache_entries: args.cache_size,
        nameserver_ips: args.nameserver_ips.clone(),
        ..Config::default()
    };
    let mut registry = prometheus_client::registry::Registry::default();
    let server = Server::new(config, &mut registry)?;
    let mut listeners = Vec::new();
    for addr in &args.listen {
        listeners.extend(Listener::bind(*addr)?);
    }
    let bound: Vec<String> = listeners
        .iter()
        .step_by(2)
        .filter_map(|l| l.local_addr().ok())
        .map(|a| a.to_string())
        .collect();
    // One thread serves: the figures in the README are per core. Its
    // blocking threads make only index updates, and answers come first:
    // they yield the core to the thread that answers.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_start(|| {
            let _ = ferry_sys::yield_to_others();
        })
        .build()
        .context("starting the async runtime")?;
    // The source's thread yields the core too.
    let options = FeedOptions {
        yield_to_others: true,
        ..FeedOptions::default()
    };
    let feed = ferry_kube::start(&args.source, options)
        .with_context(|| format!("reading {}", args.source))?;
    let mut follower = feed.follow();
    // The follower's first state: a change made meanwhile comes next.
    let first = follower
        .try_next()
        .context("the source published no state")?;
    for e in &first.errors {
        eprintln!("warning: {e}");
    }
    server.update(&first.state);
    println!(
        "ferry dns: serving {} on {} (udp+tcp): {} services, {} names; other names {}",
        args.zones.join(", "),
        bound.join(", "),
        first.state.service_count(),
        server.names(),
        if upstreams.is_empty() {
            "refused (no upstream)".to_string()
        } else {
            format!(
                "forwarded to {}",
                upstreams
                    .iter()
                    .map(|u| u.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    let updater = server.clone();
    runtime.block_on(async {
        server.serve(listeners)?;
        tokio::spawn(async move {
            // One line a second at most: under endpoint churn (a hundred
            // changes a second) a line per update is noise.
            let mut said = std::time::Instant::now() - LOG_EVERY;
            let mut unsaid = 0u64;
            while let Some(snap) = follower.next().await {
                for e in &snap.errors {
                    eprintln!("warning: {e}");
                }
                let s = updater.clone();
                let (state, changes) = (snap.state.clone(), snap.changes.clone());
                let _ = tokio::task::spawn_blocking(move || s.apply(&state, &changes)).await;
                unsaid += 1;
                if said.elapsed() >= LOG_EVERY {
                    println!(
                        "ferry dns: updated ({unsaid} change sets): {} services, {} names",
                        snap.state.service_count(),
                        updater.names()
                    );
                    said = std::time::Instant::now();
                    unsaid = 0;
                }
            }
        });
        if let Some(addr) = args.metrics {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} for metrics"))?;
            tokio::spawn(ferry_dns::serve_http(l, server.clone(), Arc::new(registry)));
        }
        tokio::signal::ctrl_c().await.ok();
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
