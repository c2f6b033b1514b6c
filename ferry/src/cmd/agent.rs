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
    /// The service proxy: nftables (ferry's own `ip ferry` table), iptables
    /// (kube-proxy's iptables-mode chains) or none.
    #[arg(long, default_value = "nftables")]
    proxy_mode: ProxyMode,
    /// The iptables binaries iptables mode runs: system (`iptables`, the
    /// host's choice), nft (`iptables-nft`) or legacy (`iptables-legacy`).
    #[arg(long, default_value = "system")]
    iptables_flavor: ferry_proxy::iptables::Flavor,
    /// Pod CIDRs (comma-separated); ClusterIP traffic from other sources is
    /// masqueraded. Default: the podCIDRs of every Node.
    #[arg(long, value_delimiter = ',')]
    cluster_cidr: Vec<ipnet::IpNet>,
    /// Changes closer together than this are programmed together (kube-proxy's --min-sync-period), e.g. 1s.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    min_sync_period: std::time::Duration,
    /// Remove everything the proxy installed, then exit.
    #[arg(long)]
    cleanup: bool,
    /// The lab this agent belongs to (set by the lab so that it can find its processes).
    #[arg(long)]
    lab: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.cleanup {
        for what in ferry_agent::cleanup(args.iptables_flavor).map_err(anyhow::Error::msg)? {
            println!("removed {what}");
        }
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
        iptables_flavor: args.iptables_flavor,
        cluster_cidrs: args.cluster_cidr,
        min_sync_period: args.min_sync_period,
        healthz_bind: args.healthz_bind_address,
        metrics_bind: args.metrics_bind_address,
    }))?;
    Ok(ExitCode::SUCCESS)
}

/// `500ms`, `1s`, `2m`.
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let (number, unit) = s.split_at(
        s.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len()),
    );
    let n: f64 = number
        .parse()
        .map_err(|_| format!("{s:?}: expected a duration such as 500ms, 1s or 2m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        _ => return Err(format!("{s:?}: unit must be ms, s or m")),
    };
    Ok(std::time::Duration::from_secs_f64(secs))
}
