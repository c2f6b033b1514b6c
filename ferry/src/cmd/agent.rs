//! `ferry agent --node NAME --source manifests:DIR`.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use ferry_agent::{Config, SourceSpec};

#[derive(clap::Args)]
pub struct Args {
    /// This node's name (as in the Node objects).
    #[arg(long)]
    node: String,
    /// Where the cluster comes from: manifests:DIR.
    #[arg(long)]
    source: SourceSpec,
    /// Health endpoints (/healthz, /readyz, /livez), as kube-proxy's --healthz-bind-address.
    #[arg(long, default_value = "0.0.0.0:10256")]
    healthz_bind_address: SocketAddr,
    /// Prometheus /metrics, as kube-proxy's --metrics-bind-address.
    #[arg(long, default_value = "127.0.0.1:10249")]
    metrics_bind_address: SocketAddr,
    /// The lab this agent belongs to (set by the lab so that it can find its processes).
    #[arg(long)]
    lab: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(ferry_agent::run(Config {
        node: args.node,
        source: args.source,
        healthz_bind: args.healthz_bind_address,
        metrics_bind: args.metrics_bind_address,
    }))?;
    Ok(ExitCode::SUCCESS)
}
