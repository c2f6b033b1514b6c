//! `ferry bench ...`: the command line of the benchmarks. Parses each
//! subcommand into ferry-bench's options and calls it; the benchmarks
//! themselves live in `crates/bench`.

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// Cluster model: YAML load + normalize, and per-update cost.
    Model(ModelArgs),
    /// The lab: time for `lab up` and `lab down`, memory of an idle agent (needs root).
    Lab(LabArgs),
    /// Both proxy modes side by side in scratch namespaces: syncs, ruleset size, memory and first-packet latency at growing sizes (needs root).
    Proxy(ProxyArgs),
    /// Cluster DNS: dnsperf against ferry dns, nsd and knot (same zone), and ferry's vs unbound's forward cache.
    Dns(DnsArgs),
    /// The ingress gateway against Debian's nginx with wrk: throughput, p99, CPU per request, and what adding a host costs under load.
    Ingress(IngressArgs),
    /// The pod network: iperf3 across nodes (VXLAN, host-gw, the switch's limit), programming 1,000 peers, CNI ADD/DEL against Debian's bridge + host-local, lease allocation against etcd (needs root).
    Overlay(OverlayArgs),
    /// One agent (nftables proxy + DNS with pod records) over a large cluster: RSS and peak, beside another build and other allocators (needs root).
    Memory(MemoryArgs),
    /// One proxy measurement (run by `bench proxy` in a child process).
    #[command(hide = true)]
    ProxyChild {
        mode: String,
        services: usize,
        runs: usize,
    },
    /// One load measurement (run by `bench model` in a child process).
    #[command(hide = true)]
    ModelLoadChild { file: PathBuf },
}

#[derive(clap::Args)]
struct MemoryArgs {
    #[arg(long, default_value_t = 20_000)]
    services: usize,
    /// Endpoints per Service.
    #[arg(long, default_value_t = 8)]
    endpoints: usize,
    /// Pods (behind the first Services' endpoints).
    #[arg(long, default_value_t = 100_000)]
    pods: usize,
    /// Another ferry binary to measure beside this one, e.g. main's.
    #[arg(long, value_name = "BINARY")]
    before: Option<PathBuf>,
    /// Also run with glibc limited to two arenas and with jemalloc preloaded.
    #[arg(long)]
    allocators: bool,
}

#[derive(clap::Args)]
struct ProxyArgs {
    /// Cluster sizes (services, 8 endpoints each).
    #[arg(long, value_delimiter = ',', default_value = "1000,5000,20000,100000")]
    sizes: Vec<usize>,
    /// One-change syncs timed per size (fewer where one takes seconds).
    #[arg(long, default_value_t = 50)]
    changes: usize,
    /// Proxy modes: nftables, iptables-legacy, iptables-nft.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "nftables,iptables-legacy,iptables-nft"
    )]
    modes: Vec<String>,
    /// Skip a size when the previous size's full sync predicts more than this many seconds.
    #[arg(long, default_value_t = 120.0)]
    max_predicted_s: f64,
    /// Also write every figure as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Also draw one change and first-packet latency against the number of Services as SVG to FILE.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
}

#[derive(clap::Args)]
struct LabArgs {
    /// Runs per size (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Sizes as NODESxPODS.
    #[arg(long, value_delimiter = ',', default_value = "2x10,10x200")]
    sizes: Vec<String>,
    /// Also write every figure as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Also draw lab up / down time and idle memory against the number of pods as SVG to FILE.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ModelArgs {
    /// Services to load from YAML.
    #[arg(long, default_value_t = 20_000)]
    services: usize,
    /// Endpoints per service.
    #[arg(long, default_value_t = 8)]
    endpoints: usize,
    /// Load runs (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Cluster sizes for the update-cost table.
    #[arg(long, value_delimiter = ',', default_value = "20000,100000")]
    update_sizes: Vec<usize>,
    /// Updates timed per size.
    #[arg(long, default_value_t = 1000)]
    updates: usize,
}

#[derive(clap::Args)]
struct IngressArgs {
    /// Throughput runs per proxy (the median is shown).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Seconds per throughput run (wrk -d).
    #[arg(long, default_value_t = 10)]
    seconds: u32,
    /// wrk connections in the throughput runs.
    #[arg(long, default_value_t = 50)]
    connections: u32,
    /// Hosts configured when changes are measured (one Ingress / server block each).
    #[arg(long, value_delimiter = ',', default_value = "10,1000,10000")]
    change_sizes: Vec<usize>,
    /// Changes per size and proxy.
    #[arg(long, default_value_t = 3)]
    changes: usize,
}

#[derive(clap::Args)]
struct DnsArgs {
    /// Cluster sizes (services; 5 endpoints each).
    #[arg(long, value_delimiter = ',', default_value = "1000,20000")]
    sizes: Vec<usize>,
    /// Saturated runs per server and size (the median is shown).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Seconds per saturated run (dnsperf -l).
    #[arg(long, default_value_t = 10)]
    seconds: u32,
    /// Also write every row as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Also draw qps and p50 / p99 latency per server against the zone's size as SVG to FILE.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
    /// EndpointSlice changes per second during extra open-loop runs of ferry at the
    /// largest size, against nsd's static zone in the same run (0: none).
    #[arg(long, default_value_t = 100)]
    churn: u32,
}

#[derive(clap::Args)]
struct OverlayArgs {
    /// Whole runs (each cell is the median over them).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Seconds per iperf3 throughput test.
    #[arg(long, default_value_t = 3)]
    seconds: u32,
    /// Remote peers programmed from scratch.
    #[arg(long, default_value_t = 1000)]
    peers: usize,
    /// Pods added and deleted per CNI plugin and run.
    #[arg(long, default_value_t = 50)]
    pods: usize,
    /// Nodes taking leases per store and run.
    #[arg(long, default_value_t = 200)]
    nodes: usize,
    /// Threads the nodes take their leases from.
    #[arg(long, default_value_t = 4)]
    threads: usize,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.what {
        What::Model(a) => ferry_bench::model(ferry_bench::ModelOptions {
            services: a.services,
            endpoints: a.endpoints,
            runs: a.runs,
            update_sizes: a.update_sizes,
            updates: a.updates,
        }),
        What::Memory(a) => ferry_bench::memory(ferry_bench::MemoryOptions {
            services: a.services,
            endpoints: a.endpoints,
            pods: a.pods,
            before: a.before,
            allocators: a.allocators,
        }),
        What::Lab(a) => ferry_bench::lab(ferry_bench::LabOptions {
            runs: a.runs,
            sizes: a.sizes,
            json: a.json,
            svg: a.svg,
        }),
        What::Ingress(a) => ferry_bench::ingress(ferry_bench::IngressOptions {
            runs: a.runs,
            seconds: a.seconds,
            connections: a.connections,
            change_sizes: a.change_sizes,
            changes: a.changes,
        }),
        What::Proxy(a) => ferry_bench::proxy(ferry_bench::ProxyOptions {
            sizes: a.sizes,
            changes: a.changes,
            modes: a.modes,
            max_predicted_s: a.max_predicted_s,
            json: a.json,
            svg: a.svg,
        }),
        What::ProxyChild {
            mode,
            services,
            runs,
        } => ferry_bench::proxy_child(&mode, services, runs),
        What::Dns(a) => ferry_bench::dns(ferry_bench::DnsOptions {
            sizes: a.sizes,
            runs: a.runs,
            seconds: a.seconds,
            json: a.json,
            svg: a.svg,
            churn: a.churn,
        }),
        What::Overlay(a) => ferry_bench::overlay(ferry_bench::OverlayOptions {
            runs: a.runs,
            seconds: a.seconds,
            peers: a.peers,
            pods: a.pods,
            nodes: a.nodes,
            threads: a.threads,
        }),
        What::ModelLoadChild { file } => ferry_bench::model_load_child(&file),
    }?;
    Ok(ExitCode::SUCCESS)
}
