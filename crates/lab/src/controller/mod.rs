//! The lab controller: a daemon (one per lab) that owns the running lab,
//! split by the roles a real cluster gives to different programs:
//!
//! - `api`: the API server's part: the user's objects (apply, delete,
//!   scale, checked whole), kept on disk, and the control socket.
//! - `kubelet`: the nodes' part: node namespaces and agents (restarted
//!   when they exit, as a DaemonSet's pods are), pods and their processes,
//!   readiness probes run from each node's namespace.
//! - `cloud`: the cloud load balancer: ECMP routes from the outside client
//!   to the nodes, following health-check node ports.
//! - `report`: the status writer: `status.json` (phase, nodes, pods,
//!   services) for `ferry lab status` and the tests.
//!
//! This file holds the loop that runs them: every request or probe result
//! leads to one reconcile, which plans with the pure [`crate::plan`] and
//! writes the cluster as manifests for the agents.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::{Duration, Instant};

use ferry_model::NamespacedName;
use ferry_model::k8s_openapi::jiff::Timestamp;

use crate::names::LabNames;
use crate::plan::{self, Allocation, Counters, Inputs, NodeInfo, PodInfo, Settings};
use crate::protocol::{Request, Response};
use crate::write::ManifestWriter;
use crate::{LabError, net};
use ferry_sys::netns::NsThread;

mod api;
mod cloud;
mod kubelet;
mod report;

use cloud::{LbChecks, lb_checker};
use kubelet::{NodeRuntime, target_of};

pub struct ControllerArgs {
    pub lab: String,
    pub settings: Settings,
}

enum Event {
    Request(Request, Sender<Response>),
    Probed,
}

struct Controller {
    names: LabNames,
    settings: Settings,
    inputs: Inputs,
    nodes: Vec<NodeInfo>,
    node_rt: BTreeMap<String, NodeRuntime>,
    pods: BTreeMap<NamespacedName, PodInfo>,
    procs: BTreeMap<NamespacedName, Child>,
    allocations: BTreeMap<NamespacedName, Allocation>,
    errors: Vec<String>,
    counters: Counters,
    writer: ManifestWriter,
    start: Instant,
    epoch: Timestamp,
    events_tx: Sender<Event>,
    last_status: String,
    /// Routes in the outside namespace: LoadBalancer IP -> next-hop node IPs.
    lb_routes: BTreeMap<IpAddr, Vec<Ipv4Addr>>,
    /// The cloud load balancer's health checks, run from the outside namespace.
    lb_checks: Arc<LbChecks>,
    _outside_thread: Option<NsThread>,
    /// The lab's API server process (in the control-plane namespace).
    api_server: Option<Child>,
    /// When it exited, while it waits to be started again.
    api_server_down_since: Option<Instant>,
    /// With `--source kube`: where the generation marker is in the API.
    api_progress: Arc<api::ApiProgress>,
    _api_thread: Option<NsThread>,
    /// The lab's etcd (with `--lease-store etcd`), beside the API server.
    etcd: Option<Child>,
    /// The pod network's config as last written to the lease store.
    overlay_config: String,
    /// Pods the last reconcile could not create (their network was not
    /// ready): tried again at the next one.
    pods_waiting: usize,
}

fn wall_clock() -> Timestamp {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp::new(d.as_secs() as i64, 0).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn start_ns_thread(ns: &str) -> Result<NsThread, LabError> {
    NsThread::start(ns).map_err(|e| LabError::Command {
        command: format!("setns /run/netns/{ns}"),
        message: e.to_string(),
    })
}

/// Runs the controller of lab `args.lab` until it is told to stop.
pub fn run_controller(args: ControllerArgs) -> Result<(), LabError> {
    let names = LabNames::new(&args.lab)?;
    let pid_file = names.pid_file();
    std::fs::write(&pid_file, format!("{}\n", std::process::id()))
        .map_err(LabError::io(&pid_file))?;
    let (events_tx, events) = channel();
    let mut c = Controller {
        writer: ManifestWriter::new(names.manifests_dir()),
        names,
        settings: args.settings,
        inputs: Inputs::new(),
        nodes: Vec::new(),
        node_rt: BTreeMap::new(),
        pods: BTreeMap::new(),
        procs: BTreeMap::new(),
        allocations: BTreeMap::new(),
        errors: Vec::new(),
        counters: Counters {
            next_id: 1,
            next_seq: 1,
        },
        start: Instant::now(),
        epoch: wall_clock(),
        events_tx,
        last_status: String::new(),
        lb_routes: BTreeMap::new(),
        lb_checks: Arc::new(LbChecks::default()),
        _outside_thread: None,
        api_server: None,
        api_server_down_since: None,
        api_progress: Arc::new(api::ApiProgress::default()),
        _api_thread: None,
        etcd: None,
        overlay_config: String::new(),
        pods_waiting: 0,
    };
    let result = c.run(events);
    if let Err(e) = &result {
        c.write_status("Failed", &e.to_string());
    }
    result
}

impl Controller {
    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn run(&mut self, events: Receiver<Event>) -> Result<(), LabError> {
        self.load_inputs()?;
        self.write_status("Starting", "creating the node network");
        tracing::info!(lab = %self.names.lab, "creating the switch and the outside client");
        net::create_switch(&self.names)?;
        net::create_outside(
            &self.names,
            self.settings.outside_ip(),
            self.settings.node_cidr,
        )?;
        let outside = start_ns_thread(&self.names.outside_ns())?;
        let (checks, wake) = (self.lb_checks.clone(), self.events_tx.clone());
        outside.run(move || lb_checker(checks, wake));
        self._outside_thread = Some(outside);
        self.start_api_server()?;
        self.listen()?;
        self.reconcile()?;
        loop {
            match events.recv_timeout(Duration::from_millis(100)) {
                Ok(Event::Request(Request::Stop, reply)) => {
                    tracing::info!("stopping");
                    self.teardown();
                    let _ = reply.send(Response::Ok("lab stopped".into()));
                    return Ok(());
                }
                Ok(Event::Request(req, reply)) => {
                    let answer = self.handle(req);
                    let _ = reply.send(answer);
                }
                Ok(Event::Probed) | Err(_) => {}
            }
            if let Err(e) = self.reconcile() {
                tracing::error!(error = %e, "reconcile failed");
                self.errors.push(e.to_string());
            }
        }
    }

    fn reconcile(&mut self) -> Result<(), LabError> {
        self.supervise_api_server()?;
        self.reconcile_nodes()?;
        let now = self.now_ms();
        // What the pods' processes and probes report.
        for p in self.pods.values_mut() {
            if !p.started
                && self
                    .names
                    .pods_dir()
                    .join(format!("{}.started", p.id))
                    .exists()
            {
                p.started = true;
            }
        }
        for rt in self.node_rt.values() {
            let results = rt
                .shared
                .results
                .lock()
                .map(|r| r.clone())
                .unwrap_or_default();
            for (pod, (ready, _)) in results {
                if let Some(p) = self.pods.get_mut(&pod) {
                    p.ready = ready && p.started;
                }
            }
        }
        for p in self.pods.values_mut() {
            if target_of(p).is_none() {
                p.ready = p.started;
            }
        }
        self.errors.clear();
        let hints = plan::hints_from_slices(&self.inputs);
        let changes = plan::plan_pods(
            &self.inputs,
            &self.nodes,
            &self.pods,
            now,
            &hints,
            &mut self.counters,
        );
        self.errors.extend(changes.unschedulable.iter().cloned());
        for name in &changes.remove {
            self.remove_pod(name);
        }
        for (name, grace) in &changes.terminate {
            if let Some(p) = self.pods.get_mut(name) {
                tracing::info!(pod = %name, "terminating");
                p.deleting = Some((now, *grace));
            }
        }
        self.pods_waiting = 0;
        for pod in changes.create {
            if let Err(e) = self.create_pod(&pod) {
                // Not created yet: the lab is not Ready while a pod waits.
                self.pods_waiting += 1;
                let text = e.to_string();
                // The node's network not set up yet (its agent has no lease
                // yet): kubelet waits too, and tries again.
                if text.contains("code 11") || text.contains("network plugin not ready") {
                    tracing::info!(pod = %pod.name, node = %pod.node, "waiting for the node's pod network: {text}");
                } else {
                    tracing::error!(pod = %pod.name, error = %e, "cannot create pod");
                }
                self.errors.push(format!("Pod {}: {e}", pod.name));
                let _ = net::delete_pod(&self.names, pod.id);
                continue;
            }
            self.pods.insert(pod.name.clone(), pod);
        }
        let (allocations, alloc_errors) =
            plan::allocate(&self.inputs, &self.allocations, &self.settings);
        self.allocations = allocations;
        self.errors.extend(
            alloc_errors
                .into_iter()
                .map(|(k, why)| format!("Service {k}: {why}")),
        );
        let objects = plan::render(&plan::World {
            inputs: &self.inputs,
            nodes: &self.nodes,
            pods: &self.pods,
            allocations: &self.allocations,
            epoch: self.epoch,
        });
        let changed = self.writer.write(&objects, &self.pods)?;
        if changed > 0 {
            tracing::debug!(files = changed, "manifests written");
        }
        self.update_targets();
        if let Err(e) = self.route_load_balancers() {
            self.errors.push(format!("load-balancer routes: {e}"));
        }
        let (phase, message) = self.phase();
        self.write_status(phase, &message);
        Ok(())
    }

    /// Removes every process and namespace this controller made: all
    /// processes killed first, then every namespace in one `ip` call.
    fn teardown(&mut self) {
        self.lb_checks.stop.store(true, Ordering::Relaxed);
        self._outside_thread.take();
        self.api_progress.stop.store(true, Ordering::Relaxed);
        self._api_thread.take();
        for rt in self.node_rt.values() {
            rt.shared.stop.store(true, Ordering::Relaxed);
        }
        let mut children: Vec<Child> = std::mem::take(&mut self.procs).into_values().collect();
        children.extend(self.node_rt.values_mut().filter_map(|rt| rt.agent.take()));
        children.extend(self.api_server.take());
        children.extend(self.etcd.take());
        for c in &mut children {
            let _ = c.kill();
        }
        for c in &mut children {
            let _ = c.wait();
        }
        let mut namespaces: Vec<String> = self
            .pods
            .values()
            .filter(|p| !p.host_network)
            .map(|p| self.names.pod_ns(p.id))
            .collect();
        for p in self.pods.values() {
            let _ = std::fs::remove_dir_all(crate::names::etc_netns(&self.names.pod_ns(p.id)));
        }
        self.pods.clear();
        self.node_rt.clear();
        namespaces.extend(self.nodes.iter().map(|n| self.names.node_ns(&n.name)));
        namespaces.push(self.names.outside_ns());
        namespaces.push(self.names.control_plane_ns());
        namespaces.push(self.names.switch_ns());
        if let Err(e) = net::ns_del_many(&namespaces) {
            tracing::warn!(error = %e, "some namespaces could not be deleted");
        }
    }
}
