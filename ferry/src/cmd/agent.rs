//! `ferry agent --node NAME --source manifests:DIR|kube [--kubeconfig FILE]`.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use ferry_agent::{Config, ProxyMode, SourceSpec};

#[derive(clap::Args)]
pub struct Args {
    /// This node's name (as in the Node objects); default: $NODE_NAME,
    /// else the host name (lower-cased), as kube-proxy's --hostname-override.
    #[arg(long, env = "NODE_NAME", default_value = "")]
    node: String,
    /// Which components run, comma-separated: proxy, dns, overlay, ingress
    /// (each on its own thread; the proxy also needs a --proxy-mode other
    /// than none, DNS also needs --dns-addresses other than none, the
    /// overlay a --lease-store).
    #[arg(long, value_delimiter = ',', default_value = "proxy,dns")]
    components: Vec<ferry_agent::Component>,
    /// Where the cluster comes from: manifests:DIR, kube (the Kubernetes
    /// API: in-cluster config, or --kubeconfig) or kube:KUBECONFIG.
    #[arg(
        long,
        required_unless_present = "cleanup",
        default_value = "manifests:/nonexistent"
    )]
    source: SourceSpec,
    /// With --source kube: the kubeconfig to use instead of the in-cluster config.
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<std::path::PathBuf>,
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
    /// The overlay's lease store: file:DIR (a directory shared by the
    /// nodes of one machine; its `config` is flannel's network config) or
    /// etcd:http://HOST:2379[,...] (flannel's keys, as flanneld's
    /// --etcd-endpoints).
    #[arg(long)]
    lease_store: Option<ferry_overlay::component::StoreSpec>,
    /// flannel's network config file for --lease-store kube, as flanneld's
    /// --net-config-path (the kube-flannel-cfg ConfigMap's net-conf.json).
    #[arg(long, default_value = ferry_overlay::component::DEFAULT_NET_CONF)]
    net_config_path: std::path::PathBuf,
    /// The etcd key prefix, as flanneld's --etcd-prefix.
    #[arg(long, default_value = ferry_overlay::etcd::DEFAULT_PREFIX)]
    etcd_prefix: String,
    /// The interface that reaches the other nodes, by name or address, as
    /// flanneld's --iface. Default: the default route's.
    #[arg(long)]
    iface: Option<String>,
    /// The address other nodes send pod traffic to, as flanneld's --public-ip.
    /// Default: the --iface address.
    #[arg(long)]
    public_ip: Option<std::net::Ipv4Addr>,
    /// Where the node's subnet is written for CNI plugins (flannel's file and format).
    #[arg(long, default_value = "/run/flannel/subnet.env")]
    subnet_file: std::path::PathBuf,
    /// Install the CNI conflist (`10-ferry.conflist`: ferry, then portmap)
    /// here when the overlay runs, as flannel's DaemonSet installs its own,
    /// e.g. /etc/cni/net.d.
    #[arg(long)]
    cni_conf_dir: Option<std::path::PathBuf>,
    /// The CNI plugin's IPAM state directory written into the conflist
    /// (default: the plugin's, /var/lib/cni/networks).
    #[arg(long)]
    cni_data_dir: Option<std::path::PathBuf>,
    /// Masquerade pod traffic leaving the pod network, as flanneld's
    /// --ip-masq (which every flannel manifest sets).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    ip_masq: bool,
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
    let source = match (args.source, args.kubeconfig) {
        (SourceSpec::Kube { kubeconfig: None }, Some(path)) => SourceSpec::Kube {
            kubeconfig: Some(path),
        },
        (source, None) => source,
        (source, Some(_)) => anyhow::bail!("--kubeconfig needs --source kube, not {source}"),
    };
    let node = if args.node.is_empty() {
        hostname()?
    } else {
        args.node
    };
    let overlay = args
        .lease_store
        .clone()
        .map(|mut store| {
            match &mut store {
                ferry_overlay::component::StoreSpec::Etcd(o) => o.prefix = args.etcd_prefix.clone(),
                ferry_overlay::component::StoreSpec::Kube { net_conf } => {
                    *net_conf = args.net_config_path.clone()
                }
                ferry_overlay::component::StoreSpec::File(_) => {}
            }
            store
        })
        .map(|store| ferry_overlay::component::OverlayConfig {
            node: node.clone(),
            store,
            iface: args.iface.clone(),
            public_ip: args.public_ip,
            subnet_file: args.subnet_file.clone(),
            ip_masq: args.ip_masq,
            poll: std::time::Duration::from_millis(200),
            // Set by the agent from the API source (--lease-store kube).
            annotator: None,
        });
    if args.components.contains(&ferry_agent::Component::Overlay) && overlay.is_none() {
        anyhow::bail!("--components overlay needs --lease-store (e.g. file:/var/lib/ferry/leases)");
    }
    let ingress = args.ingress.config()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(ferry_agent::run(Config {
        node,
        components: args.components,
        source,
        proxy_mode: args.proxy_mode,
        iptables_flavor: args.iptables_flavor,
        cluster_cidrs: args.cluster_cidr,
        min_sync_period: args.min_sync_period,
        healthz_bind: args.healthz_bind_address,
        health_timeout: args.health_timeout,
        service_node_port_range: args.service_node_port_range,
        metrics_bind: args.metrics_bind_address,
        dns,
        overlay,
        cni: args
            .cni_conf_dir
            .clone()
            .map(|conf_dir| ferry_agent::CniInstall {
                conf_dir,
                data_dir: args.cni_data_dir.clone(),
            }),
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

/// The host name, lower-cased, as kube-proxy takes it when no node name is given.
fn hostname() -> anyhow::Result<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .context("no --node, no NODE_NAME, and the host name cannot be read")?;
    Ok(name.trim().to_lowercase())
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
