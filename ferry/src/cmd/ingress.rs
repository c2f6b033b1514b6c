//! `ferry ingress --source manifests:DIR --http ADDR [--https ADDR]`: the ingress gateway
//! alone; and the `--ingress-*` flags the agent shares with it.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use ferry_ingress::access_log::AccessLogFormat;
use ferry_ingress::component::IngressConfig;
use ferry_ingress::l4::L4Config;
use ferry_ingress::{Balance, ClassConfig, ProxyConfig, RoutesConfig, ServiceRef, TlsConfig};
use ferry_model::NamespacedName;
use ferry_source::{Feed, FeedOptions, SourceSpec};

use super::agent::parse_duration;

#[derive(clap::Args)]
pub struct IngressArgs {
    /// Plain HTTP listeners of the ingress (comma-separated), as an
    /// ingress-nginx DaemonSet with host port 80.
    #[arg(
        long = "ingress-http",
        visible_alias = "http",
        value_delimiter = ',',
        default_value = "0.0.0.0:80"
    )]
    http: Vec<SocketAddr>,
    /// HTTPS listeners of the ingress (comma-separated; none unless given),
    /// e.g. 0.0.0.0:443. Certificates come from the kubernetes.io/tls
    /// Secrets the Ingresses' spec.tls name, chosen by SNI.
    #[arg(long = "ingress-https", visible_alias = "https", value_delimiter = ',')]
    https: Vec<SocketAddr>,
    /// The Secret (namespace/name, tls.crt and tls.key) whose certificate
    /// answers hosts without one; default: a self-signed certificate made at start.
    #[arg(long, value_parser = parse_secret_name)]
    ingress_default_cert: Option<NamespacedName>,
    /// IngressClasses with these spec.controller values are ferry's
    /// (comma-separated); add k8s.io/ingress-nginx to take over from ingress-nginx.
    #[arg(long, value_delimiter = ',', default_value = ferry_ingress::routes::CONTROLLER)]
    ingress_controller: Vec<String>,
    /// Class names ferry owns besides, whether or not an IngressClass exists
    /// (comma-separated), e.g. nginx.
    #[arg(long, value_delimiter = ',')]
    ingress_class: Vec<String>,
    /// Route Ingresses that name no class even when no owned IngressClass is the default.
    #[arg(long)]
    ingress_watch_without_class: bool,
    /// Where requests no rule matches go (namespace/name:port); default: a 404.
    #[arg(long)]
    ingress_default_backend: Option<ServiceRef>,
    /// Endpoint choice: round_robin or ewma.
    #[arg(long, default_value = "round_robin")]
    ingress_balance: Balance,
    /// Worker threads (each a runtime of its own accepting on every listener, as nginx workers).
    #[arg(long, default_value_t = 1)]
    ingress_workers: usize,
    /// Time to connect to an endpoint, e.g. 5s.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    ingress_connect_timeout: Duration,
    /// Time for an endpoint to answer with its response headers, e.g. 60s.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    ingress_read_timeout: Duration,
    /// Request bodies larger than this many bytes get 413 (nginx: 1 MiB).
    #[arg(long, default_value_t = 1 << 20)]
    ingress_max_body: u64,
    /// Append to the client's X-Forwarded-* headers instead of replacing them.
    #[arg(long)]
    ingress_trust_forwarded: bool,
    /// The HTTP and HTTPS listeners expect a PROXY protocol header (v1 or
    /// v2) on every connection, as ingress-nginx's use-proxy-protocol:
    /// its client address is the one forwarded and logged; a connection
    /// without a valid header is closed.
    #[arg(long)]
    ingress_proxy_protocol: bool,
    /// One line per request on stdout (ingress-nginx's upstreaminfo
    /// fields): text, json or off.
    #[arg(long, default_value = "text")]
    ingress_access_log: AccessLogFormat,
    /// The ConfigMap (namespace/name) of TCP services, in ingress-nginx's
    /// format: "PORT": "namespace/service:port[:PROXY][:PROXY]".
    #[arg(long, visible_alias = "tcp-services-configmap", value_parser = parse_namespaced)]
    ingress_tcp_services: Option<NamespacedName>,
    /// The ConfigMap (namespace/name) of UDP services, in the same format.
    #[arg(long, visible_alias = "udp-services-configmap", value_parser = parse_namespaced)]
    ingress_udp_services: Option<NamespacedName>,
    /// A UDP service's flow quiet this long is closed, e.g. 30s.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    ingress_udp_timeout: Duration,
    /// On SIGTERM: how long requests in flight may take to finish before
    /// the ingress exits (new connections are refused at once). Keep it
    /// below the Pod's terminationGracePeriodSeconds (default 30s).
    #[arg(long, default_value = "25s", value_parser = parse_duration)]
    ingress_drain_timeout: Duration,
}

/// `namespace/name`.
fn parse_namespaced(s: &str) -> Result<NamespacedName, String> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok(NamespacedName::new(ns, name))
        }
        _ => Err(format!("{s:?}: a ConfigMap is named namespace/name")),
    }
}

impl IngressArgs {
    pub fn config(&self) -> anyhow::Result<IngressConfig> {
        Ok(IngressConfig {
            http: self.http.clone(),
            https: self.https.clone(),
            tls: TlsConfig {
                default_certificate: self.ingress_default_cert.clone(),
            },
            routes: RoutesConfig {
                classes: ClassConfig {
                    controllers: self.ingress_controller.clone(),
                    extra_classes: self.ingress_class.clone(),
                    without_class: self.ingress_watch_without_class,
                },
                default_backend: self.ingress_default_backend.clone(),
            },
            proxy: ProxyConfig {
                connect_timeout: self.ingress_connect_timeout,
                read_timeout: self.ingress_read_timeout,
                max_body: self.ingress_max_body,
                balance: self.ingress_balance,
                trust_forwarded: self.ingress_trust_forwarded,
                proxy_protocol: self.ingress_proxy_protocol,
                ..ProxyConfig::default()
            },
            workers: self.ingress_workers,
            access_log: self.ingress_access_log,
            l4: L4Config {
                tcp_services: self.ingress_tcp_services.clone(),
                udp_services: self.ingress_udp_services.clone(),
                udp_idle_timeout: self.ingress_udp_timeout,
            },
            drain_timeout: self.ingress_drain_timeout,
        })
    }
}

/// `namespace/name` of a Secret.
fn parse_secret_name(s: &str) -> Result<NamespacedName, String> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok(NamespacedName::new(ns, name))
        }
        _ => Err(format!("{s:?}: a Secret is namespace/name")),
    }
}

#[derive(clap::Args)]
pub struct Args {
    /// Where the cluster comes from: manifests:DIR.
    #[arg(long)]
    source: SourceSpec,
    /// Serve /healthz (200 once routing by the source, 503 before and while
    /// draining) and /metrics here, as ingress-nginx's port 10254 (loopback
    /// or a pod address; off by default).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
    #[command(flatten)]
    ingress: IngressArgs,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = args.ingress.config()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let feed = Feed::start(&args.source, FeedOptions::default())
            .with_context(|| format!("reading {}", args.source))?;
        let mut registry = prometheus_client::registry::Registry::default();
        let handle = std::sync::Arc::new(ferry_ingress::component::start(
            config,
            feed.follow(),
            &mut registry,
        )?);
        eprintln!(
            "ferry ingress: serving HTTP on {:?}, HTTPS on {:?}",
            handle.http, handle.https
        );
        if let Some(addr) = args.metrics {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} for /healthz and /metrics"))?;
            eprintln!("ferry ingress: /healthz and /metrics on {addr}");
            tokio::spawn(ferry_ingress::status::serve(
                l,
                handle.clone(),
                std::sync::Arc::new(registry),
            ));
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("watching for SIGTERM")?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        // In flight requests finish; the drain's outcome is logged, and
        // exiting after it is the graceful stop either way.
        handle.drain().await;
        drop(feed);
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
