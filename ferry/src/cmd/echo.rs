//! `ferry echo` (the lab workload) and `ferry echo-ctl` (its control).

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use ferry_echo::{Config, Identity, PortSpec};

#[derive(clap::Args)]
pub struct Args {
    /// Ports to serve: PORT[/http|tcp|udp] (default http). Repeat or separate with commas.
    #[arg(long = "port", required = true, value_delimiter = ',')]
    ports: Vec<PortSpec>,
    #[arg(long, env = "POD_NAME", default_value = "echo")]
    pod: String,
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    namespace: String,
    #[arg(long, env = "NODE_NAME", default_value = "")]
    node: String,
    #[arg(long, env = "POD_IP", default_value = "")]
    pod_ip: String,
    /// Address to bind (all addresses of this network namespace by default).
    #[arg(long, default_value = "0.0.0.0")]
    bind: IpAddr,
    /// File to create once every port listens.
    #[arg(long)]
    started_file: Option<PathBuf>,
    /// The lab this pod belongs to (set by the lab so that it can find its processes).
    #[arg(long)]
    lab: Option<String>,
}

#[derive(clap::Args)]
pub struct CtlArgs {
    /// The echo server to talk to, as NAMESPACE/NAME (needed only when several share a network namespace).
    #[arg(long)]
    pod: Option<String>,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(clap::Subcommand)]
enum CtlCommand {
    /// Make readiness probes pass (true) or fail (false).
    Ready {
        #[arg(action = clap::ArgAction::Set)]
        ready: bool,
    },
    /// Show the pod and its readiness.
    Status,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(ferry_echo::run(Config {
        identity: Identity {
            pod: args.pod,
            namespace: args.namespace,
            node: args.node,
            pod_ip: args.pod_ip,
        },
        ports: args.ports,
        bind: args.bind,
        started_file: args.started_file,
    }))?;
    Ok(ExitCode::SUCCESS)
}

pub fn ctl(args: CtlArgs) -> anyhow::Result<ExitCode> {
    let command = match args.command {
        CtlCommand::Ready { ready } => format!("ready {ready}"),
        CtlCommand::Status => "status".to_string(),
    };
    let answer = ferry_echo::control_send(args.pod.as_deref(), &command)?;
    println!("{answer}");
    Ok(ExitCode::SUCCESS)
}
