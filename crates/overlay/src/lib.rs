//! The pod network, flannel-compatible: every node leases a subnet of the
//! cluster's pod network and the overlay carries pod traffic between the
//! subnets (VXLAN or host routes). This crate starts with the pure part a
//! ferry node and a flannel node must agree on byte for byte: the network
//! config, the lease keys and values, how a subnet is chosen, and
//! `subnet.env`. The stores (etcd, Kubernetes Node, a file), the netlink
//! backends and the CNI plugin plug in on top (see ARCHITECTURE.md).
//!
//! Pure, but for `store`'s file store, `etcd` (sockets) and `vxlan`
//! (netlink).

pub mod alloc;
pub mod config;
pub mod etcd;
pub mod kube;
pub mod lease;
pub mod masquerade;
pub mod store;
pub mod subnet_env;
pub mod vxlan;

pub use alloc::{AllocError, choose_subnet};
pub use config::{BackendConfig, ConfigError, NetworkConfig};
pub use lease::{BackendData, Lease, LeaseAttrs, LeaseKeyError, parse_key, subnet_key};
pub use subnet_env::SubnetEnv;
