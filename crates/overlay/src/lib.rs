//! The pod network, flannel-compatible: every node leases a subnet of the
//! cluster's pod network and the overlay carries pod traffic between the
//! subnets (VXLAN or host routes).
//!
//! - Pure, what a ferry node and a flannel node must agree on byte for
//!   byte: `config` (the network config), `lease` (keys and values),
//!   `alloc` (which subnet), `subnet_env`, `kube` (reading Node annotations), and
//!   `peers` (which route to each other subnet).
//! - Files: `store` (the lease stores behind one trait, and taking a lease).
//! - Sockets: `etcd` (flannel's keys in etcd, over etcd's JSON gateway).
//! - The API, through the source: `kube_store` (leases on Nodes).
//! - Kernel: `underlay` (interface, public IP, plain routes), `vxlan`
//!   (device, neighbours, FDB, routes), `masquerade` (nftables),
//!   `forward` (iptables FORWARD accept where the policy is DROP).
//! - `component`: all of it as an agent component, following the source.

pub mod alloc;
pub mod component;
pub mod config;
pub mod etcd;
pub mod forward;
pub mod kube;
pub mod kube_store;
pub mod lease;
pub mod masquerade;
pub mod peers;
pub mod store;
pub mod subnet_env;
pub mod underlay;
pub mod vxlan;

pub use alloc::{AllocError, choose_subnet};
pub use config::{BackendConfig, ConfigError, NetworkConfig};
pub use lease::{BackendData, Lease, LeaseAttrs, LeaseKeyError, parse_key, subnet_key};
pub use subnet_env::SubnetEnv;
