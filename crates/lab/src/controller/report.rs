//! The status writer: `status.json` for `ferry lab status`, the tests and
//! `lab up`'s wait: the phase (Ready once every agent is healthy and has
//! programmed the latest manifests and every pod has settled), nodes,
//! pods, services and errors.

use std::process::Child;
use std::sync::atomic::Ordering;

use ferry_model::Object;

use super::Controller;
use super::kubelet::target_of;
use crate::plan::{self, PodInfo};
use crate::status::{
    ApiServerStatus, IngressStatus, LabStatus, NodeStatus, OutsideStatus, PodStatus, PortStatus,
    ServiceStatus,
};

impl Controller {
    pub(super) fn phase(&self) -> (&'static str, String) {
        let agents_up = self
            .node_rt
            .values()
            .filter(|rt| rt.shared.agent_healthy.load(Ordering::Relaxed))
            .count();
        let live: Vec<&PodInfo> = self.pods.values().filter(|p| !p.terminating()).collect();
        let started = live.iter().filter(|p| p.started).count();
        // Settled: ready as the manifests say, or known not to be. A probe
        // that turned ready after this round's manifests were written does
        // not count: its endpoint is not in any slice yet, and the lab must
        // not say Ready until the next round has written it.
        let settled = live
            .iter()
            .filter(|p| {
                p.started
                    && (p.ready
                        || target_of(p).is_none()
                        || self.node_rt.get(&p.node).is_some_and(|rt| {
                            rt.shared
                                .results
                                .lock()
                                .map(|r| {
                                    r.get(&p.name)
                                        .is_some_and(|(ready, known)| *known && !*ready)
                                })
                                .unwrap_or(false)
                        }))
            })
            .count();
        let ready = live.iter().filter(|p| p.ready).count();
        let message = format!(
            "{agents_up}/{} agents healthy, {started}/{} pods started, {ready} ready",
            self.node_rt.len(),
            live.len()
        );
        let programmed = self.programmed();
        let done = agents_up == self.node_rt.len()
            && settled == live.len()
            && self.pods_waiting == 0
            && programmed;
        (if done { "Ready" } else { "Starting" }, message)
    }

    /// Every agent has programmed the lab's latest generation. On the
    /// manifests source an agent's `syncedResourceVersion` is that
    /// generation (the lab numbers its writes). On the API source it is a
    /// resourceVersion of the API server, which numbers everything itself:
    /// the lab asks its API server at which version the generation's
    /// marker landed, and each agent must have reached that version on
    /// every kind it watches (its source says so, bookmarks included).
    fn programmed(&self) -> bool {
        let generation = self.writer.generation();
        let needed = if self.settings.source == "kube" {
            match *self
                .api_progress
                .marker
                .lock()
                .unwrap_or_else(|p| p.into_inner())
            {
                Some((landed, rv)) if landed == generation => rv,
                _ => return false,
            }
        } else {
            generation
        };
        self.node_rt
            .values()
            .all(|rt| rt.shared.agent_synced.load(Ordering::Relaxed) >= needed)
    }

    pub(super) fn write_status(&mut self, phase: &str, message: &str) {
        let status = LabStatus {
            lab: self.names.lab.clone(),
            phase: phase.into(),
            message: message.into(),
            controller_pid: std::process::id(),
            state_dir: self.names.state_dir().display().to_string(),
            proxy_mode: self.settings.proxy_mode.clone(),
            overlay_backend: self.settings.backend.clone(),
            nodes: self
                .nodes
                .iter()
                .map(|n| {
                    let rt = self.node_rt.get(&n.name);
                    NodeStatus {
                        name: n.name.clone(),
                        ip: n.ip.to_string(),
                        pod_cidr: n.pod_cidr.to_string(),
                        netns: self.names.node_ns(&n.name),
                        agent_pid: rt.and_then(|r| r.agent.as_ref()).map(Child::id),
                        agent_healthy: rt
                            .is_some_and(|r| r.shared.agent_healthy.load(Ordering::Relaxed)),
                        agent_restarts: rt.map_or(0, |r| r.restarts),
                        agent_error: rt
                            .filter(|r| !r.shared.agent_healthy.load(Ordering::Relaxed))
                            .and_then(|r| {
                                let log =
                                    self.names.logs_dir().join(format!("agent-{}.log", n.name));
                                let last = crate::status::last_error_line(&log);
                                match (&r.last_exit, last) {
                                    (Some(exit), Some(line)) => {
                                        Some(format!("exited ({exit}): {line}"))
                                    }
                                    (Some(exit), None) => Some(format!("exited ({exit})")),
                                    (None, line) => line,
                                }
                            }),
                    }
                })
                .collect(),
            pods: self
                .pods
                .values()
                .map(|p| PodStatus {
                    namespace: p.name.namespace.to_string(),
                    name: p.name.name.to_string(),
                    node: p.node.clone(),
                    ip: p.ip.to_string(),
                    ready: p.ready && !p.terminating(),
                    terminating: p.terminating(),
                    started: p.started,
                    host_network: p.host_network,
                    netns: if p.host_network {
                        self.names.node_ns(&p.node)
                    } else {
                        self.names.pod_ns(p.id)
                    },
                    pid: self.procs.get(&p.name).map(Child::id),
                })
                .collect(),
            services: self.services_status(),
            ingresses: self.ingresses_status(),
            api_server: ApiServerStatus {
                url: format!(
                    "http://{}:{}",
                    self.settings.api_server_ip(),
                    super::api::API_PORT
                ),
                kubeconfig: self.names.kubeconfig().display().to_string(),
                netns: self.names.control_plane_ns(),
                pid: self.api_server.as_ref().map(Child::id),
            },
            outside: OutsideStatus {
                netns: self.names.outside_ns(),
                ip: self.settings.outside_ip().to_string(),
            },
            errors: self.errors.clone(),
        };
        let json = serde_json::to_string_pretty(&status).unwrap_or_default();
        if json == self.last_status {
            return;
        }
        let path = self.names.status_file();
        let tmp = path.with_extension("json.tmp");
        if std::fs::write(&tmp, &json)
            .and_then(|_| std::fs::rename(&tmp, &path))
            .is_ok()
        {
            self.last_status = json;
        }
    }

    /// The Ingresses ferry routes, with the addresses the lab writes into
    /// their status (`plan::render`).
    fn ingresses_status(&self) -> Vec<IngressStatus> {
        let classes = plan::ingress_classes(&self.inputs);
        let addresses: Vec<String> = plan::ingress_addresses(&self.nodes)
            .iter()
            .map(ToString::to_string)
            .collect();
        self.inputs
            .values()
            .filter_map(|o| match o {
                Object::Ingress(i) => Some((o.key().name, i, classes.owned_class(i)?)),
                _ => None,
            })
            .map(|(key, i, class)| {
                let mut hosts: Vec<String> = i
                    .spec
                    .iter()
                    .flat_map(|s| s.rules.iter().flatten())
                    .map(|r| r.host.clone().unwrap_or_else(|| "*".into()))
                    .collect();
                hosts.dedup();
                IngressStatus {
                    namespace: key.namespace.to_string(),
                    name: key.name.to_string(),
                    class,
                    hosts,
                    addresses: addresses.clone(),
                }
            })
            .collect()
    }

    pub(super) fn services_status(&self) -> Vec<ServiceStatus> {
        self.inputs
            .values()
            .filter_map(|o| match o {
                Object::Service(s) => Some((o.key().name, s)),
                _ => None,
            })
            .map(|(key, s)| {
                let spec = s.spec.clone().unwrap_or_default();
                let a = self.allocations.get(&key);
                let selected: Vec<String> = self
                    .pods
                    .values()
                    .filter(|p| {
                        p.name.namespace == key.namespace
                            && ferry_model::service_selects(spec.selector.as_ref(), &p.labels)
                    })
                    .map(|p| p.ip.to_string())
                    .collect();
                ServiceStatus {
                    namespace: key.namespace.to_string(),
                    name: key.name.to_string(),
                    type_: spec.type_.clone().unwrap_or_else(|| "ClusterIP".into()),
                    cluster_ip: if spec.cluster_ip.as_deref() == Some("None") {
                        Some("None".into())
                    } else {
                        a.and_then(|a| a.cluster_ip).map(|ip| ip.to_string())
                    },
                    ports: spec
                        .ports
                        .iter()
                        .flatten()
                        .map(|p| {
                            let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".into());
                            PortStatus {
                                name: p.name.clone().unwrap_or_default(),
                                port: u16::try_from(p.port).unwrap_or(0),
                                node_port: a.and_then(|a| {
                                    a.node_ports.get(&format!("{}/{protocol}", p.port)).copied()
                                }),
                                protocol,
                            }
                        })
                        .collect(),
                    load_balancer_ips: a
                        .and_then(|a| a.lb_ip)
                        .map(|ip| vec![ip.to_string()])
                        .unwrap_or_default(),
                    endpoints: selected,
                }
            })
            .collect()
    }
}
