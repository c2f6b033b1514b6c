//! How lab objects are named: namespaces, interfaces and files all carry the
//! lab's name, so that `lab down` (and `lab up` after a crash) can find
//! every one of them. Pure.

use std::path::PathBuf;

use crate::LabError;

pub const DEFAULT_LAB: &str = "ferry";

/// Where labs keep their state (a tmpfs: gone after a reboot, like the namespaces).
pub const STATE_ROOT: &str = "/run/ferry/labs";

/// Lab names are short lowercase words: they end up inside namespace names
/// and must not contain the `.` that separates the parts of those names.
pub fn validate(name: &str) -> Result<(), LabError> {
    let ok = !name.is_empty()
        && name.len() <= 16
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(LabError::BadName(name.to_string()))
    }
}

#[derive(Clone, Debug)]
pub struct LabNames {
    pub lab: String,
}

impl LabNames {
    pub fn new(lab: &str) -> Result<Self, LabError> {
        validate(lab)?;
        Ok(Self {
            lab: lab.to_string(),
        })
    }

    /// Every network namespace of this lab starts with this.
    pub fn ns_prefix(&self) -> String {
        format!("ferry.{}.", self.lab)
    }

    pub fn switch_ns(&self) -> String {
        format!("ferry.{}.switch", self.lab)
    }

    pub fn outside_ns(&self) -> String {
        format!("ferry.{}.outside", self.lab)
    }

    /// The control plane (the lab's API server) on the node network.
    pub fn control_plane_ns(&self) -> String {
        format!("ferry.{}.cp", self.lab)
    }

    /// A kubeconfig for the lab's API server (usable from lab namespaces).
    pub fn kubeconfig(&self) -> PathBuf {
        self.state_dir().join("kubeconfig")
    }

    /// Writes made through the lab's API (Node annotations, Ingress status).
    pub fn api_patches(&self) -> PathBuf {
        self.state_dir().join("api-patches.json")
    }

    pub fn node_ns(&self, node: &str) -> String {
        format!("ferry.{}.node.{node}", self.lab)
    }

    pub fn pod_ns(&self, id: u32) -> String {
        format!("ferry.{}.pod.{id}", self.lab)
    }

    pub fn state_dir(&self) -> PathBuf {
        PathBuf::from(STATE_ROOT).join(&self.lab)
    }

    /// What the agents watch.
    pub fn manifests_dir(&self) -> PathBuf {
        self.state_dir().join("manifests")
    }

    /// Everything the user gave the lab (lab up / lab apply), as received.
    pub fn input_dir(&self) -> PathBuf {
        self.state_dir().join("input")
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.state_dir().join("logs")
    }

    /// The pod network's lease store (the agents' `--lease-store file:DIR`).
    pub fn leases_dir(&self) -> PathBuf {
        self.state_dir().join("leases")
    }

    /// A node's own files (what lives under /run, /etc/cni and /var/lib/cni on a real node).
    pub fn node_dir(&self, node: &str) -> PathBuf {
        self.state_dir().join("nodes").join(node)
    }

    /// A node's flannel-style subnet.env (its agent writes it).
    pub fn subnet_file(&self, node: &str) -> PathBuf {
        self.node_dir(node).join("subnet.env")
    }

    /// A node's CNI config directory (its agent installs the conflist: /etc/cni/net.d).
    pub fn cni_conf_dir(&self, node: &str) -> PathBuf {
        self.node_dir(node).join("net.d")
    }

    /// A node's CNI IPAM state (/var/lib/cni/networks).
    pub fn cni_data_dir(&self, node: &str) -> PathBuf {
        self.node_dir(node).join("ipam")
    }

    pub fn pods_dir(&self) -> PathBuf {
        self.state_dir().join("pods")
    }

    pub fn status_file(&self) -> PathBuf {
        self.state_dir().join("status.json")
    }

    pub fn socket(&self) -> PathBuf {
        self.state_dir().join("control.sock")
    }

    pub fn pid_file(&self) -> PathBuf {
        self.state_dir().join("controller.pid")
    }

    pub fn controller_log(&self) -> PathBuf {
        self.state_dir().join("controller.log")
    }
}

/// `ip netns exec` bind-mounts files from here over `/etc` (a pod's resolv.conf).
pub fn etc_netns(ns: &str) -> PathBuf {
    PathBuf::from("/etc/netns").join(ns)
}

/// The switch-side end of a node's uplink.
pub fn switch_port(node_index: u32) -> String {
    format!("n{node_index}")
}

/// The node-side end of a pod's veth.
pub fn pod_port(id: u32) -> String {
    format!("vp{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_names_cannot_reach_into_other_labs_namespaces() {
        assert!(validate("ferry").is_ok());
        assert!(validate("t1-a").is_ok());
        assert!(
            validate("a.b").is_err(),
            "a dot would let lab a match lab a.b's namespaces"
        );
        assert!(validate("").is_err());
        assert!(validate("Upper").is_err());
        let a = LabNames::new("a").unwrap();
        let ab = LabNames::new("a-b").unwrap();
        assert!(!ab.node_ns("n1").starts_with(&a.ns_prefix()));
    }

    #[test]
    fn interface_names_fit_the_kernel_limit() {
        assert!(pod_port(999_999).len() <= 15);
        assert!(switch_port(4_000_000).len() <= 15);
    }
}
