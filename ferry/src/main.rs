//! The `ferry` binary: parses the command line, sets up logging, and hands
//! each subcommand to its module under `cmd/`. No logic of its own.

mod cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// ferry carries a request from a Kubernetes Service name to a Pod: service
/// proxy, cluster DNS, ingress and pod network in one node agent.
#[derive(Parser)]
#[command(
    name = "ferry",
    version,
    propagate_version = true,
    after_help = "Start here:\n  ferry validate examples/               check manifests like the API server would\n  ferry services examples/nginx-web.yaml  see each service port and its endpoints\n\nLogs go to standard error; set RUST_LOG=debug for more."
)]
struct Cli {
    /// Log format on standard error (the level comes from RUST_LOG, default info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "FERRY_LOG_FORMAT")]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Check manifests the way the API server would, and list every mistake.
    ///
    /// Reads files and directories of YAML or JSON (as `kubectl apply -f`
    /// does, `kind: List` included). Exits 1 if anything is invalid.
    Validate(cmd::validate::Args),
    /// Show each service port with its addresses and endpoints.
    ///
    /// The table merges `kubectl get services` and `kubectl get
    /// endpointslices`: one row per service port, with the endpoints the
    /// data plane would use.
    Services(cmd::services::Args),
    /// A multi-node cluster made of network namespaces on this machine.
    Lab(cmd::lab::Args),
    /// Run the node agent (normally started by the lab or a DaemonSet).
    Agent(Box<cmd::agent::Args>),
    /// The lab workload: answer HTTP, TCP and UDP with who this pod is and who asked.
    Echo(cmd::echo::Args),
    /// Control the echo server of this pod (run it inside a pod).
    #[command(name = "echo-ctl")]
    EchoCtl(cmd::echo::CtlArgs),
    /// Serve cluster DNS for a manifests directory (and forward other names).
    Dns(cmd::dns::Args),
    /// Serve the ingress gateway for a manifests directory.
    Ingress(cmd::ingress::Args),
    /// Run a benchmark and print a table of figures.
    Bench(cmd::bench::Args),
    /// Serve a manifests directory as a Kubernetes API server (list, watch, discovery).
    Apiserver(cmd::apiserver::Args),
    /// The CNI plugin (CNI_* environment, network config on stdin).
    ///
    /// Runtimes exec `$CNI_PATH/ferry` with no arguments: `ferry` alone
    /// with CNI_COMMAND set does the same, so a symlink
    /// `/opt/cni/bin/ferry -> ferry` installs it.
    Cni(cmd::cni::Args),
    /// Explain the path of one request in a lab, hop by hop, model beside kernel.
    Trace(cmd::trace::Args),
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colour only on a terminal: lab agents log to files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// glibc arenas for `ferry agent` (MALLOC_ARENA_MAX overrides).
const AGENT_MALLOC_ARENAS: usize = 2;

fn main() -> ExitCode {
    if cmd::cni::invoked_as_plugin() {
        // No logging set-up: stdout belongs to the runtime, and the
        // plugin reports through its result.
        return cmd::cni::run(cmd::cni::Args {}).unwrap_or(ExitCode::FAILURE);
    }
    let cli = Cli::parse();
    let only_prints = match &cli.command {
        Command::Validate(_) | Command::Services(_) => true,
        Command::Lab(args) => args.only_prints(),
        _ => false,
    };
    if only_prints {
        // Output piped into `head` and the like ends quietly when the
        // reader goes away, as for other command-line tools (Rust ignores
        // SIGPIPE, which turns it into a panic in println!). Never for
        // commands that feed other programs' stdin (agent, lab controller):
        // a child exiting early must be an error they handle, not death.
        // SAFETY: the default disposition, set before any thread starts.
        unsafe {
            let _ = nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGPIPE,
                nix::sys::signal::SigHandler::SigDfl,
            );
        }
    }
    if matches!(cli.command, Command::Agent(_)) {
        // Before any thread starts (see ferry_sys::limit_malloc_arenas and
        // ARCHITECTURE.md's memory section for the figures).
        ferry_sys::limit_malloc_arenas(AGENT_MALLOC_ARENAS);
    }
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::Validate(args) => cmd::validate::run(args),
        Command::Services(args) => cmd::services::run(args),
        Command::Lab(args) => cmd::lab::run(args),
        Command::Agent(args) => cmd::agent::run(*args),
        Command::Echo(args) => cmd::echo::run(args),
        Command::EchoCtl(args) => cmd::echo::ctl(args),
        Command::Dns(args) => cmd::dns::run(args),
        Command::Ingress(args) => cmd::ingress::run(args),
        Command::Bench(args) => cmd::bench::run(args),
        Command::Apiserver(args) => cmd::apiserver::run(args),
        Command::Cni(args) => cmd::cni::run(args),
        Command::Trace(args) => cmd::trace::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
