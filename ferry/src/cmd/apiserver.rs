//! `ferry apiserver --manifests DIR --listen ADDR`: a small Kubernetes API
//! server over a manifests directory (the lab runs one in its control-plane
//! namespace; it also lets kubectl and API clients read any directory).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

#[derive(clap::Args)]
pub struct Args {
    /// The manifests directory to serve (watched for changes).
    #[arg(long)]
    manifests: PathBuf,
    /// Where to listen (plain HTTP): loopback or a lab namespace's address.
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Keep writes made through the API (Node annotations, Ingress status) in this file.
    #[arg(long)]
    patches_file: Option<PathBuf>,
    /// Watch events kept for resuming; a watch from an older version gets 410 Gone.
    #[arg(long, default_value_t = 10_000)]
    max_events: usize,
    /// Seconds between BOOKMARK events on idle watches that allow them.
    #[arg(long, default_value_t = 10)]
    bookmark_seconds: u64,
    /// Keep the last resourceVersion in this file; a restarted server
    /// numbers on from it and answers older watches with 410 Gone.
    #[arg(long)]
    resource_version_file: Option<PathBuf>,
    /// The lab this server belongs to (set by the lab so that it can find its processes).
    #[arg(long)]
    lab: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let _ = args.lab;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(ferry_apiserver::run(ferry_apiserver::Config {
        manifests: args.manifests,
        listen: args.listen,
        patches_file: args.patches_file,
        max_events: args.max_events,
        bookmark_interval: Duration::from_secs(args.bookmark_seconds.max(1)),
        resource_version_file: args.resource_version_file,
    }))?;
    Ok(ExitCode::SUCCESS)
}
