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
    /// Which components run, comma-separated: proxy, dns, ingress (each on
    /// its own thread; the proxy also needs a --proxy-mode other than none,
    /// DNS also needs --dns-addresses other than none).
    #[arg(long, value_delimiter = ',', default_value = "proxy,dns")]
    components: Vec<ferry_agent::Component>,
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
    /// /healthz answers 503 when a change has waited this long to be
    /// programmed (kube-proxy: twice its sync period), e.g. 60s.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    health_timeout: std::time::Duration,
    /// NodePorts outside this range are refused as the API server refuses
    /// them (its --service-node-port-range), e.g. 30000-32767.
    #[arg(long, default_value = "30000-32767")]
    service_node_port_range: ferry_model::NodePortRange,
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
    /// Node-local cluster DNS addresses (comma-separated; served on port 53
    /// from a dummy interface, without conntrack), e.g. the link-local
    /// default and the cluster DNS Service's ClusterIP; `none`: no DNS.
    #[arg(long, value_delimiter = ',', default_value = "169.254.20.10")]
    dns_addresses: Vec<String>,
    /// Cluster DNS zones (the first is the primary one).
    #[arg(long = "dns-zone", default_value = "cluster.local")]
    dns_zones: Vec<String>,
    /// Where names outside the cluster zones go (comma-separated IP:PORT);
    /// `none`: refused. Default: the nameservers of --dns-resolv-conf.
    #[arg(long, value_delimiter = ',')]
    dns_upstream: Vec<String>,
    /// resolv.conf-style file naming the upstream resolvers.
    #[arg(long, default_value = "/etc/resolv.conf")]
    dns_resolv_conf: std::path::PathBuf,
    /// TTL of cluster records, seconds (CoreDNS's default: 5).
    #[arg(long, default_value_t = ferry_dns::DEFAULT_TTL)]
    dns_ttl: u32,
    /// Pod records (a-b-c-d.ns.pod.zone): disabled, insecure (kubeadm's CoreDNS default) or verified.
    #[arg(long, default_value = "insecure")]
    dns_pods: ferry_dns::PodMode,
    /// Cluster DNS `/health` and `/ready` (CoreDNS serves them on 8080 and 8181); off by default.
    #[arg(long)]
    dns_health_bind_address: Option<SocketAddr>,
    #[command(flatten)]
    ingress: Box<super::ingress::IngressArgs>,
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
    let dns = dns_config(&args)?;
    let ingress = args.ingress.config()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(ferry_agent::run(Config {
        node: args.node,
        components: args.components,
        source: args.source,
        proxy_mode: args.proxy_mode,
        iptables_flavor: args.iptables_flavor,
        cluster_cidrs: args.cluster_cidr,
        min_sync_period: args.min_sync_period,
        healthz_bind: args.healthz_bind_address,
        health_timeout: args.health_timeout,
        service_node_port_range: args.service_node_port_range,
        metrics_bind: args.metrics_bind_address,
        dns,
        ingress,
    }));
    // The source loop runs on a blocking thread that never returns by
    // itself; every kernel change it makes is one atomic transaction, so
    // stopping between or during them is safe.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    result?;
    Ok(ExitCode::SUCCESS)
}

fn dns_config(args: &Args) -> anyhow::Result<Option<ferry_agent::DnsConfig>> {
    if args.dns_addresses.iter().any(|a| a == "none") {
        return Ok(None);
    }
    let addresses = args
        .dns_addresses
        .iter()
        .map(|a| {
            a.parse::<std::net::IpAddr>()
                .with_context(|| format!("--dns-addresses: {a:?} is not an IP address"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let upstreams = if args.dns_upstream.iter().any(|u| u == "none") {
        Vec::new()
    } else if !args.dns_upstream.is_empty() {
        args.dns_upstream
            .iter()
            .map(|u| {
                u.parse::<SocketAddr>()
                    .with_context(|| format!("--dns-upstream: {u:?} is not IP:PORT"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?
    } else {
        match ferry_dns::read_resolv_conf(&args.dns_resolv_conf) {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(error = %e, "no upstream resolvers: names outside the cluster zones will be refused");
                Vec::new()
            }
        }
    };
    Ok(Some(ferry_agent::DnsConfig {
        server: ferry_dns::Config {
            zones: args.dns_zones.clone(),
            ttl: args.dns_ttl,
            pods: args.dns_pods,
            upstreams,
            nameserver_ips: addresses.clone(),
            ..ferry_dns::Config::default()
        },
        addresses,
        health_bind: args.dns_health_bind_address,
    }))
}

/// `500ms`, `1s`, `2m`.
pub(super) fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
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
