//! ferry's benchmarks, each printing a table on stdout (progress on
//! stderr): `model` (loading and updating the cluster model), `proxy`
//! (nftables and iptables modes side by side in scratch namespaces), `dns`
//! (dnsperf against `ferry dns`, nsd, knot and unbound), `lab` (`lab
//! up`/`lab down` and idle memory), `memory` (one agent with proxy and
//! DNS over a large cluster) and `overlay` (the pod network: iperf3
//! across nodes, programming peers, CNI calls, lease allocation).
//!
//! The binary parses the command line into the plain option structs here
//! and calls one function per subcommand. Benchmarks that need a fresh
//! process (for its peak memory) or the real commands run the ferry binary
//! itself (`std::env::current_exe`) with its own command lines: `ferry
//! bench model-load-child`, `ferry bench proxy-child`, `ferry dns`, `ferry
//! lab up|down`; the binary routes the two hidden children back here.
//!
//! May touch: processes (the ferry binary, dnsperf and the DNS servers,
//! `ip`, `nft`, `iptables`, iperf3, the CNI plugins, etcd), network
//! namespaces named `ferry-bench-*`, a
//! lab named `bench`, temporary directories, `/proc`.

mod agent_memory;
mod child;
mod dns;
mod figures;
mod ingress;
mod lab;
mod memory;
mod model;
mod overlay;
mod procs;
mod proxy;
mod stats;
/// The synthetic clusters, public for the `agent_heap` example.
pub mod synth;

pub use agent_memory::{MemoryOptions, run as memory};
pub use dns::{DnsOptions, run as dns};
pub use figures::{dns_chart, lab_chart};
pub use ingress::{IngressOptions, run as ingress};
pub use lab::{LabOptions, run as lab};
pub use model::{ModelOptions, load_child as model_load_child, run as model};
pub use overlay::{OverlayOptions, run as overlay};
pub use proxy::{ProxyOptions, child as proxy_child, run as proxy};
