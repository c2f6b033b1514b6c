//! What a running lab looks like, as the controller writes it to
//! `status.json` and `ferry lab status --json` prints it. Scripts and
//! tests rely on these fields.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LabStatus {
    pub lab: String,
    /// `Starting`, `Ready` or `Failed`.
    pub phase: String,
    pub message: String,
    pub controller_pid: u32,
    pub state_dir: String,
    pub nodes: Vec<NodeStatus>,
    pub pods: Vec<PodStatus>,
    pub services: Vec<ServiceStatus>,
    pub outside: OutsideStatus,
    /// Problems the control plane currently has (unschedulable pods, allocation errors).
    pub errors: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NodeStatus {
    pub name: String,
    pub ip: String,
    pub pod_cidr: String,
    pub netns: String,
    pub agent_pid: Option<u32>,
    pub agent_healthy: bool,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PodStatus {
    pub namespace: String,
    pub name: String,
    pub node: String,
    pub ip: String,
    pub ready: bool,
    pub terminating: bool,
    pub started: bool,
    pub host_network: bool,
    pub netns: String,
    pub pid: Option<u32>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PortStatus {
    pub name: String,
    pub port: u16,
    pub protocol: String,
    pub node_port: Option<u16>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub namespace: String,
    pub name: String,
    #[serde(rename = "type")]
    pub type_: String,
    pub cluster_ip: Option<String>,
    pub ports: Vec<PortStatus>,
    pub load_balancer_ips: Vec<String>,
    pub endpoints: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct OutsideStatus {
    pub netns: String,
    pub ip: String,
}

impl LabStatus {
    pub fn read(path: &std::path::Path) -> Option<LabStatus> {
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }
}
