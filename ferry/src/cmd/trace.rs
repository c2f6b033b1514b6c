//! `ferry trace FROM TO [--lab NAME] [--json | --svg FILE] [--probe] [--model-only] [--ingress ADDR]`:
//! the path of one request through a lab, hop by hop, from the model and
//! from the kernel.

use std::process::ExitCode;

use anyhow::Context;
use ferry_trace::resolve::{From, To};
use ferry_trace::{lab, plan};

#[derive(clap::Args)]
pub struct Args {
    /// pod/NAMESPACE/NAME, node/NAME, outside, or an IP address.
    from: String,
    /// A URL, NAME:PORT or IP:PORT.
    to: String,
    /// The lab to trace in.
    #[arg(long, default_value = ferry_lab::names::DEFAULT_LAB)]
    lab: String,
    /// Print the trace as JSON (see README, "Trace").
    #[arg(long, conflicts_with = "svg")]
    json: bool,
    /// Also draw the trace as SVG into FILE.
    #[arg(long, value_name = "FILE")]
    svg: Option<std::path::PathBuf>,
    /// Make a real connection and show its conntrack entry (and, in
    /// iptables mode, the rule counters that moved).
    #[arg(long)]
    probe: bool,
    /// Do not read the kernel: the model's trace only.
    #[arg(long)]
    model_only: bool,
    /// The ingress gateway's address, IP:PORT: a URL TO is sent there
    /// (its host in the Host header, as `curl --resolve` does) and traced
    /// through the Ingress rules.
    #[arg(long, value_name = "ADDR")]
    ingress: Option<std::net::SocketAddr>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let from: From = args.from.parse()?;
    let to: To = args.to.parse()?;
    let lab = lab::read(&args.lab)?;
    let namespace = match &from {
        From::Pod { namespace, .. } => namespace.clone(),
        _ => "default".to_string(),
    };
    let peer = plan::locate(&lab.topology, &from)?;
    let resolv = lab::resolv(
        (peer.kind == "pod")
            .then_some(())
            .and(peer.netns.as_deref()),
        &namespace,
    );
    let inputs = plan::Inputs {
        state: &lab.state,
        topology: &lab.topology,
        network: &lab.network,
        mode: lab.mode,
        resolv,
        ingress: args.ingress,
    };
    let mut trace = plan::plan(&inputs, &from, &to)?;
    if !args.model_only {
        ferry_trace::kernel::check(&mut trace)?;
    }
    if args.probe {
        let dest = trace
            .destination
            .as_deref()
            .and_then(|d| d.parse().ok())
            .context("nothing to probe: the trace has no destination address")?;
        let from_ns = peer
            .netns
            .clone()
            .context("FROM has no namespace to connect from")?;
        // The node that translates: the first hop on a node (the DNS
        // hop's namespace is FROM's own).
        let node_ns = trace
            .hops
            .iter()
            .filter(|h| h.kind != ferry_trace::HopKind::Dns)
            .find_map(|h| h.netns.clone())
            .unwrap_or_else(|| from_ns.clone());
        trace.probe = Some(ferry_trace::probe::probe(
            &from_ns, &node_ns, peer.ip, dest, lab.mode,
        )?);
    }
    if let Some(path) = &args.svg {
        std::fs::write(path, ferry_trace::picture::render(&trace))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&trace)?);
    } else {
        print!("{}", ferry_trace::text::render(&trace));
    }
    Ok(if trace.mismatches > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}
