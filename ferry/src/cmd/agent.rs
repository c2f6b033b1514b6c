//! `ferry agent --node NAME --source manifests:DIR`.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use ferry_agent::{Config, ProxyMode, SourceSpec};

#[derive(clap::Args)]
pub struct Args {
    /// This node's name (as in the Node objects).
    #[arg(long, required_unless_present = "cleanup", default_value = "")]
    node: String,
    /// Where the cluster comes from: manifests:DIR.
    #[arg(
        long,
        required_unless_present = "cleanup",
        default_value = "manifests:/nonexistent"
    )]
    source: SourceSpec,
    /// Health endpoints (/healthz, /readyz, /livez), as kube-proxy's --healthz-bind-address.
    #[arg(long, default_value = "0.0.0.0:10256")]
    healthz_bind_address: SocketAddr,
    /// Prometheus /metrics, as kube-proxy's --metrics-bind-address.
    #[arg(long, default_value = "127.0.0.1:10249")]
    metrics_bind_address: SocketAddr,
    /// The service proxy: nftables (ferry's own `ip ferry` table) or none.
    #[arg(long, default_value = "nftables")]
    proxy_mode: ProxyMode,
    /// Pod CIDRs (comma-separated); ClusterIP traffic from other sources is
    /// masqueraded. Default: the podCIDRs of every Node.
    #[arg(long, value_delimiter = ',')]
    cluster_cidr: Vec<ipnet::Ipv4Net>,
    /// Remove everything the proxy installed, then exit.
    #[arg(long)]
    cleanup: bool,
    /// The lab this agent belongs to (set by the lab so that it can find its processes).
    #[arg(long)]
    lab: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.cleanup {
        ferry_agent::cleanup().map_err(anyhow::Error::msg)?;
        println!("removed ferry's nftables table");
        return Ok(ExitCode::SUCCESS);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(ferry_agent::run(Config {
        node: args.node,
        source: args.source,
        proxy_mode: args.proxy_mode,
        cluster_cidrs: args.cluster_cidr,
        healthz_bind: args.healthz_bind_address,
        metrics_bind: args.metrics_bind_address,
    }))?;
    Ok(ExitCode::SUCCESS)
}
