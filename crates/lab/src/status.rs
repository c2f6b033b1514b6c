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
    /// The agents' `--proxy-mode`: `nftables` or `iptables` (every node's).
    #[serde(default)]
    pub proxy_mode: String,
    /// The pod network's backend (flannel's `Backend.Type`): `vxlan` or
    /// `host-gw`.
    #[serde(default)]
    pub overlay_backend: String,
    pub nodes: Vec<NodeStatus>,
    pub pods: Vec<PodStatus>,
    pub services: Vec<ServiceStatus>,
    /// The Ingresses of a class ferry owns, with the status the lab wrote.
    #[serde(default)]
    pub ingresses: Vec<IngressStatus>,
    pub outside: OutsideStatus,
    /// The lab's Kubernetes API server.
    #[serde(default)]
    pub api_server: ApiServerStatus,
    /// Problems the control plane currently has (unschedulable pods, allocation errors).
    pub errors: Vec<String>,
}

/// Where the lab's API server listens (reachable from the lab's namespaces only).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ApiServerStatus {
    pub url: String,
    pub kubeconfig: String,
    pub netns: String,
    pub pid: Option<u32>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NodeStatus {
    pub name: String,
    pub ip: String,
    pub pod_cidr: String,
    pub netns: String,
    pub agent_pid: Option<u32>,
    pub agent_healthy: bool,
    /// Times the agent exited and was started again.
    #[serde(default)]
    pub agent_restarts: u32,
    /// While the agent is not healthy: how it last exited and the last
    /// error or warning in its log.
    #[serde(default)]
    pub agent_error: Option<String>,
}

/// The last error or warning line of an agent's log (its final
/// `error: ...` when it exited), without terminal colour codes.
pub(crate) fn last_error_line(log: &std::path::Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(log).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(16 * 1024)))
        .ok()?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).ok()?;
    let text = strip_ansi(&String::from_utf8_lossy(&buf));
    text.lines()
        .rev()
        .find(|l| l.contains(" ERROR ") || l.contains(" WARN ") || l.starts_with("error:"))
        .map(|l| l.trim().to_string())
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ params final-byte
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_last_error_of_an_agent_log_is_found_without_colour_codes() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("agent.log");
        std::fs::write(
            &log,
            "2026 \u{1b}[32m INFO\u{1b}[0m agent started\n2026 \u{1b}[33m WARN\u{1b}[0m proxy sync failed: cannot run iptables-restore\n2026  INFO retrying\n",
        )
        .unwrap();
        assert_eq!(
            super::last_error_line(&log).as_deref(),
            Some("2026  WARN proxy sync failed: cannot run iptables-restore")
        );
    }
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

/// An Ingress ferry routes, and the addresses in its
/// `status.loadBalancer.ingress`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct IngressStatus {
    pub namespace: String,
    pub name: String,
    /// Its IngressClass (the default class for one that names none).
    pub class: String,
    /// The hosts of its rules (`*` for rules without a host).
    pub hosts: Vec<String>,
    pub addresses: Vec<String>,
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
