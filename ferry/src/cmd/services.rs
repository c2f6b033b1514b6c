//! `ferry services PATH... | --source SPEC [--json] [--watch]`: the
//! normalized service table, from manifests or from a cluster's API.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ferry_model::{ClusterState, Endpoint, ServicePortView, ServiceType, ServiceView};
use ferry_source::{Feed, FeedOptions};
use serde::Serialize;

#[derive(clap::Args)]
pub struct Args {
    /// Manifest files or directories.
    #[arg(required_unless_present = "source", conflicts_with = "source")]
    paths: Vec<PathBuf>,
    /// Read a source instead of PATHS: manifests:DIR, kube (in-cluster
    /// config) or kube:KUBECONFIG (the Kubernetes API, as the agent reads it).
    #[arg(long)]
    source: Option<ferry_source::SourceSpec>,
    /// Also read subdirectories.
    #[arg(short = 'R', long)]
    recursive: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Keep watching the files; print what changed after each edit.
    #[arg(long)]
    watch: bool,
    /// With --watch: stop after this many seconds (default: run until interrupted).
    #[arg(long, value_name = "SECONDS", requires = "watch")]
    watch_for: Option<u64>,
}

#[derive(Serialize)]
struct ServiceJson<'a> {
    #[serde(flatten)]
    service: &'a ServiceView,
    service_ports: Vec<&'a ServicePortView>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let options = FeedOptions {
        recursive: args.recursive,
        ..FeedOptions::default()
    };
    let feed = match &args.source {
        // Returns once every kind has been listed.
        Some(spec) => {
            ferry_kube::start(spec, options).with_context(|| format!("reading {spec}"))?
        }
        None => Feed::manifests(&args.paths, options).context("cannot read manifests")?,
    };
    let mut follower = feed.follow();
    let Some(snap) = follower.try_next() else {
        anyhow::bail!("the source published no state");
    };
    for e in &snap.errors {
        tracing::warn!("{e}");
    }
    print_state(&snap.state, args.json)?;
    if !args.watch {
        return Ok(ExitCode::SUCCESS);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .context("starting the async runtime")?;
    let deadline = args
        .watch_for
        .map(|s| std::time::Instant::now() + Duration::from_secs(s));
    loop {
        let wait = match deadline {
            Some(d) => d.saturating_duration_since(std::time::Instant::now()),
            None => Duration::from_secs(3600),
        };
        if wait.is_zero() {
            return Ok(ExitCode::SUCCESS);
        }
        let Ok(next) =
            runtime.block_on(async { tokio::time::timeout(wait, follower.next()).await })
        else {
            continue;
        };
        let Some(snap) = next else {
            return Ok(ExitCode::SUCCESS);
        };
        for e in &snap.errors {
            tracing::warn!("{e}");
        }
        if snap.changes.is_empty() {
            continue;
        }
        if args.json {
            println!("{}", serde_json::to_string(&snap.changes)?);
        } else {
            println!("# {}", snap.changes.summary());
            let mut out = Table::default();
            for name in snap.changes.service_ports.union(&snap.changes.endpoints) {
                match snap.state.service_port(name) {
                    Some(p) => out.port_row(snap.state.service(&name.service()), p),
                    None => out.removed_row(&name.namespace, &name.name, &name.port),
                }
            }
            out.print();
        }
        std::io::stdout().flush()?;
    }
}

fn print_state(state: &ClusterState, json: bool) -> anyhow::Result<()> {
    if json {
        let services: Vec<ServiceJson> = state
            .services()
            .map(|s| ServiceJson {
                service: s,
                service_ports: state.ports_of(&s.name).map(Arc::as_ref).collect(),
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "services": services }))?
        );
        return Ok(());
    }
    let mut table = Table::default();
    for svc in state.services() {
        let mut ports = state.ports_of(&svc.name).peekable();
        if ports.peek().is_none() {
            table.portless_row(svc);
        }
        for p in ports {
            table.port_row(Some(svc), p);
        }
    }
    if table.rows.is_empty() {
        println!("No services found.");
    } else {
        table.print();
    }
    Ok(())
}

const HEADER: [&str; 8] = [
    "NAMESPACE",
    "NAME",
    "PORT-NAME",
    "TYPE",
    "CLUSTER-IP",
    "EXTERNAL-IP",
    "PORT(S)",
    "ENDPOINTS",
];

#[derive(Default)]
struct Table {
    rows: Vec<[String; 8]>,
}

fn or_none(list: Vec<String>) -> String {
    if list.is_empty() {
        "<none>".into()
    } else {
        list.join(",")
    }
}

fn endpoint_text(e: &Endpoint) -> String {
    let addr = if e.ip.is_ipv6() {
        format!("[{}]:{}", e.ip, e.port)
    } else {
        format!("{}:{}", e.ip, e.port)
    };
    match (e.ready, e.serving, e.terminating) {
        (true, _, _) => addr,
        (false, true, true) => format!("{addr}(terminating,serving)"),
        (false, _, true) => format!("{addr}(terminating)"),
        _ => format!("{addr}(not ready)"),
    }
}

impl Table {
    fn port_row(&mut self, svc: Option<&Arc<ServiceView>>, p: &ServicePortView) {
        let headless = svc.is_some_and(|s| s.headless);
        let cluster_ip = if headless {
            "None".to_string()
        } else {
            or_none(p.cluster_ips.iter().map(ToString::to_string).collect())
        };
        let mut external: Vec<String> = p
            .load_balancer_ips
            .iter()
            .chain(&p.external_ips)
            .map(ToString::to_string)
            .collect();
        if let Some(name) = svc.and_then(|s| s.external_name.clone()) {
            external.push(name);
        }
        let ports = match p.node_port {
            Some(np) => format!("{}:{}/{}", p.port, np, p.name.protocol),
            None => format!("{}/{}", p.port, p.name.protocol),
        };
        let shown: Vec<String> = p.endpoints.iter().take(3).map(endpoint_text).collect();
        let mut endpoints = or_none(shown);
        if p.endpoints.len() > 3 {
            endpoints.push_str(&format!(" + {} more...", p.endpoints.len() - 3));
        }
        self.rows.push([
            p.name.namespace.to_string(),
            p.name.name.to_string(),
            if p.name.port.is_empty() {
                "-".into()
            } else {
                p.name.port.to_string()
            },
            p.service_type.to_string(),
            cluster_ip,
            or_none(external),
            ports,
            endpoints,
        ]);
    }

    fn portless_row(&mut self, svc: &ServiceView) {
        let external = svc
            .external_name
            .clone()
            .map(|n| vec![n])
            .unwrap_or_default();
        let eps: Vec<String> = svc
            .addresses
            .iter()
            .take(3)
            .map(|a| a.ip.to_string())
            .collect();
        self.rows.push([
            svc.name.namespace.to_string(),
            svc.name.name.to_string(),
            "-".into(),
            svc.service_type.to_string(),
            if svc.headless {
                "None".into()
            } else if svc.service_type == ServiceType::ExternalName {
                "<none>".into()
            } else {
                or_none(svc.cluster_ips.iter().map(ToString::to_string).collect())
            },
            or_none(external),
            "<none>".into(),
            or_none(eps),
        ]);
    }

    fn removed_row(&mut self, namespace: &str, name: &str, port: &str) {
        self.rows.push([
            namespace.into(),
            name.into(),
            if port.is_empty() {
                "-".into()
            } else {
                port.into()
            },
            "(deleted)".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
        ]);
    }

    fn print(&self) {
        let mut widths = HEADER.map(str::len);
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.len());
            }
        }
        let line = |cells: &[&str]| {
            let mut s = String::new();
            for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
                if i + 1 == cells.len() {
                    s.push_str(cell);
                } else {
                    s.push_str(&format!("{cell:<w$}   "));
                }
            }
            println!("{}", s.trim_end());
        };
        line(&HEADER);
        for row in &self.rows {
            line(&row.each_ref().map(String::as_str));
        }
    }
}
