//! The kubelet's part of the lab, for every node: the node's namespace and
//! agent (started again when it exits, as a DaemonSet pod is), the pods'
//! namespaces and processes, and readiness probes run from the node's
//! namespace, reported back to the controller.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_model::NamespacedName;
use ferry_model::k8s_openapi::api::core::v1::Probe;
use ferry_model::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{Controller, Event, start_ns_thread};
use crate::plan::{self, NodeInfo, PodInfo};
use crate::probe::{self, Check};
use crate::{LabError, net, runtime};
use ferry_sys::netns::NsThread;

/// What a node's prober checks for one pod.
#[derive(Clone)]
pub(super) struct Target {
    pub(super) pod: NamespacedName,
    pub(super) ip: IpAddr,
    pub(super) check: Check,
    pub(super) period: Duration,
    pub(super) timeout: Duration,
    pub(super) initial_delay: Duration,
    pub(super) success_threshold: u32,
    pub(super) failure_threshold: u32,
}

#[derive(Default)]
pub(super) struct ProbeState {
    pub(super) ready: bool,
    pub(super) known: bool,
    pub(super) successes: u32,
    pub(super) failures: u32,
    pub(super) next: Option<Instant>,
}

pub(super) struct Shared {
    pub(super) targets: Mutex<Vec<Target>>,
    pub(super) results: Mutex<BTreeMap<NamespacedName, (bool, bool)>>,
    pub(super) agent_healthy: AtomicBool,
    /// The `syncedResourceVersion` the agent reports (the generation on
    /// the manifests source, an API server resourceVersion on the API source).
    pub(super) agent_synced: std::sync::atomic::AtomicU64,
    pub(super) stop: AtomicBool,
}

pub(super) struct NodeRuntime {
    pub(super) agent: Option<Child>,
    /// How often its agent exited and was started again, and how it last ended.
    pub(super) restarts: u32,
    pub(super) last_exit: Option<String>,
    pub(super) shared: Arc<Shared>,
    /// Held for its lifetime: dropping it stops and joins the prober thread.
    pub(super) _thread: NsThread,
}

/// Every node's agent serves cluster DNS here (NodeLocal DNSCache's address).
pub(super) const NODE_LOCAL_DNS: &str = "169.254.20.10";

/// The ingress's flags on a node. Its listeners: the node's address,
/// port 80, as an ingress-nginx DaemonSet with host ports, so `outside`
/// reaches the ingress on any node IP (the https listener, port 443, joins
/// this list). Its L4 services: the ConfigMaps ingress-nginx's own
/// manifests name (`ingress-nginx/tcp-services`, `ingress-nginx/udp-services`).
pub(super) fn ingress_args(node: &NodeInfo) -> Vec<String> {
    vec![
        "--ingress-http".into(),
        format!("{}:80", node.ip),
        "--ingress-https".into(),
        format!("{}:443", node.ip),
        "--ingress-tcp-services".into(),
        "ingress-nginx/tcp-services".into(),
        "--ingress-udp-services".into(),
        "ingress-nginx/udp-services".into(),
    ]
}

/// A pod's resolv.conf, as kubelet writes it for `dnsPolicy: ClusterFirst`
/// with the node-local DNS address as the nameserver.
pub(super) fn resolv_conf(namespace: &str) -> String {
    format!(
        "# written by ferry lab for pods of namespace {namespace}\nnameserver {NODE_LOCAL_DNS}\nsearch {namespace}.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
    )
}

pub(super) fn target_of(pod: &PodInfo) -> Option<Target> {
    let probe: &Probe = pod
        .spec
        .containers
        .iter()
        .find_map(|c| c.readiness_probe.as_ref())?;
    let port_of = |p: &IntOrString| -> Option<u16> {
        match p {
            IntOrString::Int(n) => u16::try_from(*n).ok(),
            IntOrString::String(name) => pod
                .spec
                .containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .find(|cp| cp.name.as_deref() == Some(name))
                .and_then(|cp| u16::try_from(cp.container_port).ok()),
        }
    };
    let check = if let Some(h) = &probe.http_get {
        Check::Http {
            port: port_of(&h.port)?,
            path: h.path.clone().unwrap_or_else(|| "/".into()),
        }
    } else if let Some(t) = &probe.tcp_socket {
        Check::Tcp {
            port: port_of(&t.port)?,
        }
    } else {
        return None;
    };
    let secs =
        |v: Option<i32>, default: i32| Duration::from_secs(v.unwrap_or(default).max(0) as u64);
    Some(Target {
        pod: pod.name.clone(),
        ip: pod.ip,
        check,
        period: secs(probe.period_seconds, 10).max(Duration::from_millis(100)),
        timeout: secs(probe.timeout_seconds, 1).max(Duration::from_millis(100)),
        initial_delay: secs(probe.initial_delay_seconds, 0),
        success_threshold: probe.success_threshold.unwrap_or(1).max(1) as u32,
        failure_threshold: probe.failure_threshold.unwrap_or(3).max(1) as u32,
    })
}

/// The prober of one node: runs on the node's namespace thread until stopped.
pub(super) fn prober(shared: Arc<Shared>, node_ip: Ipv4Addr, wake: Sender<Event>) {
    let mut states: BTreeMap<NamespacedName, ProbeState> = BTreeMap::new();
    let mut next_health = Instant::now();
    while !shared.stop.load(Ordering::Relaxed) {
        let targets = shared.targets.lock().map(|t| t.clone()).unwrap_or_default();
        states.retain(|k, _| targets.iter().any(|t| t.pod == *k));
        let now = Instant::now();
        let mut changed = false;
        for t in &targets {
            let st = states.entry(t.pod.clone()).or_default();
            let due = *st.next.get_or_insert(now + t.initial_delay);
            if now < due {
                continue;
            }
            let ok = probe::run(&t.check, t.ip, t.timeout);
            if ok {
                st.successes += 1;
                st.failures = 0;
            } else {
                st.failures += 1;
                st.successes = 0;
            }
            let before = (st.ready, st.known);
            if st.successes >= t.success_threshold {
                st.ready = true;
                st.known = true;
            } else if st.failures >= t.failure_threshold {
                st.ready = false;
                st.known = true;
            }
            st.next = Some(Instant::now() + t.period);
            if (st.ready, st.known) != before {
                changed = true;
                if let Ok(mut r) = shared.results.lock() {
                    r.insert(t.pod.clone(), (st.ready, st.known));
                }
            }
        }
        if now >= next_health {
            let answer = probe::http_get(
                IpAddr::V4(node_ip),
                10256,
                "/healthz",
                Duration::from_millis(500),
            );
            let healthy = answer.as_ref().is_some_and(|(s, _)| *s == 200);
            let synced = answer
                .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(&body).ok())
                .and_then(|v| v["syncedResourceVersion"].as_u64())
                .unwrap_or(0);
            if shared.agent_synced.swap(synced, Ordering::Relaxed) != synced {
                changed = true;
            }
            if shared.agent_healthy.swap(healthy, Ordering::Relaxed) != healthy {
                changed = true;
            }
            next_health = now + Duration::from_millis(if healthy { 200 } else { 100 });
        }
        if changed && wake.send(Event::Probed).is_err() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Controller {
    pub(super) fn reconcile_nodes(&mut self) -> Result<(), LabError> {
        let wanted = plan::desired_nodes(&self.inputs, &self.settings, &self.nodes)?;
        for old in self.nodes.clone() {
            if !wanted.iter().any(|n| n.name == old.name) {
                tracing::info!(node = %old.name, "removing node");
                let on_node: Vec<NamespacedName> = self
                    .pods
                    .values()
                    .filter(|p| p.node == old.name)
                    .map(|p| p.name.clone())
                    .collect();
                for p in on_node {
                    self.remove_pod(&p);
                }
                if let Some(mut rt) = self.node_rt.remove(&old.name) {
                    rt.shared.stop.store(true, Ordering::Relaxed);
                    if let Some(a) = rt.agent.as_mut() {
                        runtime::stop(a);
                    }
                }
                net::delete_node(&self.names, &old.name)?;
                // As the node controller deletes a removed Node (and flannel's
                // lease goes with it): the other nodes drop its routes.
                if let Err(e) = self.leases().delete(old.pod_cidr) {
                    tracing::warn!(node = %old.name, error = %e, "cannot delete the node's lease");
                }
            }
        }
        // The pod network's config, before any agent reads it (written
        // when it changes).
        let config = plan::overlay_config(&wanted, &self.settings);
        if config != self.overlay_config {
            self.leases().put_config(&config)?;
            self.overlay_config = config;
        }
        for node in &wanted {
            if let Some(rt) = self.node_rt.get_mut(&node.name) {
                // A crashed agent is started again, as kubelet restarts a DaemonSet pod.
                let exited = match rt.agent.as_mut() {
                    None => Some("not running".to_string()),
                    Some(a) => a.try_wait().ok().flatten().map(|code| code.to_string()),
                };
                if let Some(how) = exited {
                    tracing::warn!(node = %node.name, status = %how, "agent exited; starting it again");
                    rt.restarts += 1;
                    rt.last_exit = Some(how);
                    rt.shared.agent_healthy.store(false, Ordering::Relaxed);
                    rt.shared.agent_synced.store(0, Ordering::Relaxed);
                    let agent = self.spawn_agent(node)?;
                    if let Some(rt) = self.node_rt.get_mut(&node.name) {
                        rt.agent = Some(agent);
                    }
                }
                continue;
            }
            tracing::info!(node = %node.name, ip = %node.ip, pod_cidr = %node.pod_cidr, "creating node");
            net::create_node(
                &self.names,
                node,
                self.settings.node_cidr,
                self.settings.outside_ip(),
            )?;
            let ns = self.names.node_ns(&node.name);
            let agent = self.spawn_agent(node)?;
            let shared = Arc::new(Shared {
                targets: Mutex::new(Vec::new()),
                results: Mutex::new(BTreeMap::new()),
                agent_healthy: AtomicBool::new(false),
                agent_synced: std::sync::atomic::AtomicU64::new(0),
                stop: AtomicBool::new(false),
            });
            let thread = start_ns_thread(&ns)?;
            let (s, ip, wake) = (shared.clone(), node.ip, self.events_tx.clone());
            thread.run(move || prober(s, ip, wake));
            self.node_rt.insert(
                node.name.clone(),
                NodeRuntime {
                    agent: Some(agent),
                    restarts: 0,
                    last_exit: None,
                    shared,
                    _thread: thread,
                },
            );
        }
        self.nodes = wanted;
        Ok(())
    }

    pub(super) fn leases(&self) -> crate::leases::LabLeases {
        if self.settings.lease_store == "kube" {
            return crate::leases::LabLeases::Kube {
                net_conf: self.names.state_dir().join("net-conf.json"),
            };
        }
        match self.etcd_endpoint() {
            Some(endpoint) => crate::leases::LabLeases::Etcd {
                ns: self.names.control_plane_ns(),
                endpoint,
            },
            None => crate::leases::LabLeases::File(ferry_overlay::store::FileStore::new(
                &self.names.leases_dir(),
            )),
        }
    }

    /// The lab's etcd, when the leases live there.
    pub(super) fn etcd_endpoint(&self) -> Option<String> {
        (self.settings.lease_store == "etcd")
            .then(|| format!("http://{}:2379", self.settings.api_server_ip()))
    }

    /// The node's CNI runtime: its conflist (installed by its agent) and
    /// the plugin directories.
    pub(super) fn cni(&self, node: &str) -> Result<crate::cni::Runtime, LabError> {
        Ok(crate::cni::Runtime {
            conflist: self.names.cni_conf_dir(node).join(ferry_cni::CONFLIST_FILE),
            bin_dirs: vec![
                crate::cni::bin_dir(&self.names.state_dir())?,
                crate::cni::REFERENCE_PLUGINS.into(),
            ],
        })
    }

    /// A pod's CNI call: its node, sandbox, names and planned address.
    pub(super) fn attachment<'a>(
        &self,
        pod: &'a PodInfo,
        ip: std::net::Ipv4Addr,
    ) -> crate::cni::Attachment<'a> {
        crate::cni::Attachment {
            node_ns: self.names.node_ns(&pod.node),
            container_id: format!("{}-pod-{}", self.names.lab, pod.id),
            netns_path: format!("/run/netns/{}", self.names.pod_ns(pod.id)),
            pod_namespace: &pod.name.namespace,
            pod_name: &pod.name.name,
            ip,
        }
    }

    pub(super) fn spawn_agent(&self, node: &NodeInfo) -> Result<Child, LabError> {
        let ns = self.names.node_ns(&node.name);
        let log = self
            .names
            .logs_dir()
            .join(format!("agent-{}.log", node.name));
        runtime::spawn_in(
            &ns,
            &[
                "agent".into(),
                "--node".into(),
                node.name.clone(),
                "--source".into(),
                if self.settings.source == "kube" {
                    // The lab's API server, as a real cluster's agents use theirs.
                    format!("kube:{}", self.names.kubeconfig().display())
                } else {
                    format!("manifests:{}", self.names.manifests_dir().display())
                },
                "--healthz-bind-address".into(),
                "0.0.0.0:10256".into(),
                "--metrics-bind-address".into(),
                format!("{}:10249", node.ip),
                "--proxy-mode".into(),
                self.settings.proxy_mode.clone(),
                // The pod network: every node's agent runs the overlay with
                // the lab's lease store (a directory: one machine); and the
                // ingress, as an ingress-nginx DaemonSet with host ports.
                "--components".into(),
                "proxy,dns,overlay,ingress".into(),
                "--lease-store".into(),
                match (self.settings.lease_store.as_str(), self.etcd_endpoint()) {
                    ("kube", _) => "kube".into(),
                    (_, Some(url)) => format!("etcd:{url}"),
                    (_, None) => format!("file:{}", self.names.leases_dir().display()),
                },
                "--net-config-path".into(),
                self.names
                    .state_dir()
                    .join("net-conf.json")
                    .display()
                    .to_string(),
                "--subnet-file".into(),
                self.names.subnet_file(&node.name).display().to_string(),
                // The node's CNI config, as flannel's DaemonSet installs it.
                "--cni-conf-dir".into(),
                self.names.cni_conf_dir(&node.name).display().to_string(),
                "--cni-data-dir".into(),
                self.names.cni_data_dir(&node.name).display().to_string(),
                // No --cluster-cidr: the agent takes the pod network from
                // the Nodes' podCIDRs, which the lab writes for every node
                // (its own or one from the lab's pod range), so pod traffic
                // is never taken for outside traffic.
                "--dns-addresses".into(),
                NODE_LOCAL_DNS.into(),
                // Nothing outside the lab is reachable from it.
                "--dns-upstream".into(),
                "none".into(),
                "--dns-health-bind-address".into(),
                format!("{}:8181", node.ip),
                "--lab".into(),
                self.names.lab.clone(),
            ]
            .into_iter()
            .chain(ingress_args(node))
            .collect::<Vec<String>>(),
            &log,
        )
    }

    pub(super) fn create_pod(&mut self, pod: &PodInfo) -> Result<(), LabError> {
        let node = self
            .nodes
            .iter()
            .find(|n| n.name == pod.node)
            .ok_or_else(|| LabError::Plan(format!("node {} is gone", pod.node)))?
            .clone();
        let ns = if pod.host_network {
            self.names.node_ns(&node.name)
        } else {
            let IpAddr::V4(ip) = pod.ip else {
                return Err(LabError::Plan(format!("{} is not an IPv4 address", pod.ip)));
            };
            net::create_pod_ns(&self.names, pod.id, &resolv_conf(&pod.name.namespace))?;
            // The network, as kubelet gets it: the node's CNI chain.
            let result = self.cni(&node.name)?.add(&self.attachment(pod, ip))?;
            let got = crate::cni::result_ip(&result);
            if got.as_deref() != Some(ip.to_string().as_str()) {
                return Err(LabError::Plan(format!(
                    "the CNI plugin gave {got:?}, the lab planned {ip}"
                )));
            }
            self.names.pod_ns(pod.id)
        };
        let mut ports: Vec<String> = Vec::new();
        for c in &pod.spec.containers {
            for p in c.ports.iter().flatten() {
                let name = p.name.as_deref().unwrap_or("");
                let mode = if p.protocol.as_deref() == Some("UDP") || name.starts_with("udp") {
                    "udp"
                } else if name.starts_with("tcp") {
                    "tcp"
                } else {
                    "http"
                };
                ports.push(format!("{}/{mode}", p.container_port));
            }
        }
        if let Some(Check::Http { port, .. } | Check::Tcp { port }) =
            target_of(pod).map(|t| t.check)
            && !ports.iter().any(|p| p.starts_with(&format!("{port}/")))
        {
            ports.push(format!("{port}/http"));
        }
        if ports.is_empty() {
            // Nothing to serve: the pod still runs (and is "started") like a sleeping container.
            let started = self.names.pods_dir().join(format!("{}.started", pod.id));
            std::fs::write(&started, b"started\n").map_err(LabError::io(&started))?;
            return Ok(());
        }
        let log = self
            .names
            .logs_dir()
            .join(format!("pod-{}-{}.log", pod.name.namespace, pod.name.name));
        let child = runtime::spawn_in(
            &ns,
            &[
                "echo".into(),
                "--port".into(),
                ports.join(","),
                "--pod".into(),
                pod.name.name.to_string(),
                "--namespace".into(),
                pod.name.namespace.to_string(),
                "--node".into(),
                pod.node.clone(),
                "--pod-ip".into(),
                pod.ip.to_string(),
                "--started-file".into(),
                self.names
                    .pods_dir()
                    .join(format!("{}.started", pod.id))
                    .display()
                    .to_string(),
                "--lab".into(),
                self.names.lab.clone(),
            ],
            &log,
        )?;
        tracing::info!(pod = %pod.name, node = %pod.node, ip = %pod.ip, "pod created");
        self.procs.insert(pod.name.clone(), child);
        Ok(())
    }

    pub(super) fn remove_pod(&mut self, name: &NamespacedName) {
        let Some(pod) = self.pods.remove(name) else {
            return;
        };
        if let Some(mut child) = self.procs.remove(name) {
            runtime::stop(&mut child);
        }
        let _ = std::fs::remove_file(self.names.pods_dir().join(format!("{}.started", pod.id)));
        if !pod.host_network
            && let IpAddr::V4(ip) = pod.ip
            && let Err(e) = self
                .cni(&pod.node)
                .and_then(|rt| rt.del(&self.attachment(&pod, ip)))
        {
            tracing::warn!(pod = %name, error = %e, "CNI DEL failed");
        }
        if !pod.host_network
            && let Err(e) = net::delete_pod(&self.names, pod.id)
        {
            tracing::warn!(pod = %name, error = %e, "cannot delete the pod's namespace");
        }
        tracing::info!(pod = %name, "pod removed");
    }

    pub(super) fn update_targets(&self) {
        for (node, rt) in &self.node_rt {
            let targets: Vec<Target> = self
                .pods
                .values()
                .filter(|p| p.node == *node && p.started)
                .filter_map(target_of)
                .collect();
            if let Ok(mut t) = rt.shared.targets.lock() {
                *t = targets;
            }
        }
    }
}
