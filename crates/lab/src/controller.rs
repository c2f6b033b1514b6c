//! The lab controller: a daemon (one per lab) that owns the running lab.
//! It keeps the user's objects, reconciles nodes and pods with the kernel
//! and processes (using the pure [`crate::plan`]), probes readiness from
//! each node's namespace, writes the cluster as manifests for the agents,
//! and answers `ferry lab apply/delete/scale/down` on its Unix socket.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::net::UnixListener;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_model::k8s_openapi::api::core::v1::Probe;
use ferry_model::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use ferry_model::k8s_openapi::jiff::Timestamp;
use ferry_model::{Kind, NamespacedName, Object, ObjectKey, decode};

use crate::names::LabNames;
use crate::plan::{self, Allocation, Counters, Inputs, NodeInfo, PodInfo, Settings};
use crate::probe::{self, Check};
use crate::protocol::{Request, Response};
use crate::status::{LabStatus, NodeStatus, OutsideStatus, PodStatus, PortStatus, ServiceStatus};
use crate::write::ManifestWriter;
use crate::{LabError, net, runtime};
use ferry_sys::netns::NsThread;

pub struct ControllerArgs {
    pub lab: String,
    pub settings: Settings,
}

enum Event {
    Request(Request, Sender<Response>),
    Probed,
}

/// What a node's prober checks for one pod.
#[derive(Clone)]
struct Target {
    pod: NamespacedName,
    ip: IpAddr,
    check: Check,
    period: Duration,
    timeout: Duration,
    initial_delay: Duration,
    success_threshold: u32,
    failure_threshold: u32,
}

#[derive(Default)]
struct ProbeState {
    ready: bool,
    known: bool,
    successes: u32,
    failures: u32,
    next: Option<Instant>,
}

struct Shared {
    targets: Mutex<Vec<Target>>,
    results: Mutex<BTreeMap<NamespacedName, (bool, bool)>>,
    agent_healthy: AtomicBool,
    /// The manifests generation the agent says it has programmed.
    agent_synced: std::sync::atomic::AtomicU64,
    stop: AtomicBool,
}

struct NodeRuntime {
    agent: Option<Child>,
    /// How often its agent exited and was started again, and how it last ended.
    restarts: u32,
    last_exit: Option<String>,
    shared: Arc<Shared>,
    /// Held for its lifetime: dropping it stops and joins the prober thread.
    _thread: NsThread,
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
}

/// Health-check node ports to ask, and their last answers.
#[derive(Default)]
struct LbChecks {
    targets: Mutex<Vec<(Ipv4Addr, u16)>>,
    healthy: Mutex<BTreeMap<(Ipv4Addr, u16), bool>>,
    stop: AtomicBool,
}

/// Asks every health-check node port twice a second, as a cloud load balancer would.
fn lb_checker(checks: Arc<LbChecks>, wake: Sender<Event>) {
    while !checks.stop.load(Ordering::Relaxed) {
        let targets = checks.targets.lock().map(|t| t.clone()).unwrap_or_default();
        let mut changed = false;
        for (ip, port) in targets {
            let ok = probe::http_status(IpAddr::V4(ip), port, "/", Duration::from_millis(300))
                == Some(200);
            if let Ok(mut h) = checks.healthy.lock()
                && h.insert((ip, port), ok) != Some(ok)
            {
                changed = true;
            }
        }
        if changed && wake.send(Event::Probed).is_err() {
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Every node's agent serves cluster DNS here (NodeLocal DNSCache's address).
const NODE_LOCAL_DNS: &str = "169.254.20.10";

/// A pod's resolv.conf, as kubelet writes it for `dnsPolicy: ClusterFirst`
/// with the node-local DNS address as the nameserver.
fn resolv_conf(namespace: &str) -> String {
    format!(
        "# written by ferry lab for pods of namespace {namespace}\nnameserver {NODE_LOCAL_DNS}\nsearch {namespace}.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
    )
}

fn target_of(pod: &PodInfo) -> Option<Target> {
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
fn prober(shared: Arc<Shared>, node_ip: Ipv4Addr, wake: Sender<Event>) {
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

/// How long the control socket waits for a client's request line.
const CONTROL_READ_TIMEOUT: Duration = Duration::from_secs(2);

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

    fn load_inputs(&mut self) -> Result<(), LabError> {
        let dir = self.names.input_dir();
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .map_err(LabError::io(&dir))?
            .flatten()
            .map(|e| e.path())
            .collect();
        files.sort();
        for f in files {
            let text = std::fs::read_to_string(&f).map_err(LabError::io(&f))?;
            let d = decode(&f.display().to_string(), &text);
            if let Some(e) = d.errors.first() {
                return Err(LabError::Rejected(e.to_string()));
            }
            for o in d.objects {
                self.inputs.insert(o.object.key(), o.object);
            }
        }
        Ok(())
    }

    fn listen(&self) -> Result<(), LabError> {
        let path = self.names.socket();
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).map_err(LabError::io(&path))?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(LabError::io(&path))?;
        }
        let tx = self.events_tx.clone();
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                for stream in listener.incoming().flatten() {
                    if let Err(why) = crate::protocol::check_peer(&stream) {
                        tracing::warn!("control socket: {why}");
                        continue;
                    }
                    // A client that sends nothing must not block the
                    // next one for long.
                    let _ = stream.set_read_timeout(Some(CONTROL_READ_TIMEOUT));
                    let _ = stream.set_write_timeout(Some(CONTROL_READ_TIMEOUT));
                    let mut line = String::new();
                    if BufReader::new(&stream).read_line(&mut line).is_err() {
                        continue;
                    }
                    let answer = match serde_json::from_str::<Request>(&line) {
                        Ok(req) => {
                            let (rtx, rrx) = channel();
                            if tx.send(Event::Request(req, rtx)).is_err() {
                                return;
                            }
                            rrx.recv().unwrap_or_else(|_| {
                                Response::Rejected(vec!["the controller stopped".into()])
                            })
                        }
                        Err(e) => Response::Rejected(vec![format!("bad request: {e}")]),
                    };
                    let mut out = serde_json::to_string(&answer).unwrap_or_default();
                    out.push('\n');
                    let _ = (&stream).write_all(out.as_bytes());
                }
            })
            .map_err(LabError::io(&path))?;
        Ok(())
    }

    /// Checks a candidate set of inputs the way `lab apply` must: it is
    /// taken whole or not at all.
    fn check(&self, candidate: &Inputs, touched: &[ObjectKey]) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        if let Err(e) = plan::desired_nodes(candidate, &self.settings, &self.nodes) {
            errors.push(e.to_string());
        }
        let (_, alloc_errors) = plan::allocate(candidate, &self.allocations, &self.settings);
        for (svc, why) in alloc_errors {
            if touched
                .iter()
                .any(|k| k.kind == Kind::Service && k.name == svc)
            {
                errors.push(format!("Service {svc}: {why}"));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    fn handle(&mut self, req: Request) -> Response {
        match req {
            Request::Apply { files } => {
                let mut errors = Vec::new();
                let mut objects = Vec::new();
                for (label, text) in &files {
                    let d = decode(label, text);
                    errors.extend(d.errors.iter().map(ToString::to_string));
                    objects.extend(d.objects.into_iter().map(|o| o.object));
                }
                if !errors.is_empty() {
                    return Response::Rejected(errors);
                }
                let mut candidate = self.inputs.clone();
                let (mut created, mut configured, mut unchanged) = (0, 0, 0);
                let touched: Vec<ObjectKey> = objects.iter().map(Object::key).collect();
                for o in objects {
                    match candidate.insert(o.key(), o.clone()) {
                        None => created += 1,
                        Some(old) if old == o => unchanged += 1,
                        Some(_) => configured += 1,
                    }
                }
                if let Err(errors) = self.check(&candidate, &touched) {
                    return Response::Rejected(errors);
                }
                self.inputs = candidate;
                self.save_inputs();
                Response::Ok(format!(
                    "{created} created, {configured} configured, {unchanged} unchanged"
                ))
            }
            Request::Delete {
                kind,
                namespace,
                name,
            } => self.delete(&kind, &namespace, &name),
            Request::Scale {
                kind,
                namespace,
                name,
                replicas,
            } => {
                if replicas < 0 {
                    return Response::Rejected(vec![format!(
                        "replicas {replicas} must be 0 or more"
                    )]);
                }
                let kind = match kind.to_ascii_lowercase().as_str() {
                    "deployment" | "deployments" | "deploy" => Kind::Deployment,
                    "replicaset" | "replicasets" | "rs" => Kind::ReplicaSet,
                    other => {
                        return Response::Rejected(vec![format!(
                            "cannot scale {other:?}: use deployment/NS/NAME or replicaset/NS/NAME"
                        )]);
                    }
                };
                let key = ObjectKey::new(kind, namespace.as_str(), name.as_str());
                match self.inputs.get_mut(&key) {
                    Some(Object::Deployment(d)) => {
                        std::sync::Arc::make_mut(d).spec.replicas = Some(replicas)
                    }
                    Some(Object::ReplicaSet(r)) => {
                        std::sync::Arc::make_mut(r).spec.replicas = Some(replicas)
                    }
                    _ => return Response::Rejected(vec![format!("{key} not found")]),
                }
                self.save_inputs();
                Response::Ok(format!("{key} scaled to {replicas}"))
            }
            Request::Stop => Response::Ok(String::new()),
        }
    }

    fn delete(&mut self, kind: &str, namespace: &str, name: &str) -> Response {
        let Some(kind) = Kind::ALL.iter().copied().find(|k| {
            k.as_str().eq_ignore_ascii_case(kind)
                || format!("{}s", k.as_str()).eq_ignore_ascii_case(kind)
        }) else {
            return Response::Rejected(vec![format!("unknown kind {kind:?}")]);
        };
        let namespace = if kind.namespaced() { namespace } else { "" };
        let key = ObjectKey::new(kind, namespace, name);
        if self.inputs.remove(&key).is_some() {
            self.save_inputs();
            return Response::Ok(format!("{key} deleted"));
        }
        // A pod made by a Deployment or ReplicaSet: it terminates, and its owner replaces it.
        let pod = NamespacedName::new(namespace, name);
        if kind == Kind::Pod
            && let Some(p) = self.pods.get_mut(&pod)
        {
            if p.deleting.is_none() {
                let grace =
                    p.spec.termination_grace_period_seconds.unwrap_or(30).max(0) as u64 * 1000;
                p.deleting = Some((self.start.elapsed().as_millis() as u64, grace));
            }
            return Response::Ok(format!("Pod {pod} deleted (terminating)"));
        }
        Response::Rejected(vec![format!("{key} not found")])
    }

    fn save_inputs(&self) {
        let items: Vec<serde_json::Value> = self
            .inputs
            .values()
            .filter_map(|o| o.to_json().ok())
            .filter_map(|j| serde_json::from_slice(&j).ok())
            .collect();
        let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
        let path = self.names.state_dir().join("inputs.json");
        if let Err(e) = std::fs::write(&path, list.to_string()) {
            tracing::warn!(error = %e, "cannot save {}", path.display());
        }
    }

    fn reconcile(&mut self) -> Result<(), LabError> {
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
        for pod in changes.create {
            if let Err(e) = self.create_pod(&pod) {
                tracing::error!(pod = %pod.name, error = %e, "cannot create pod");
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
        let changed = self.writer.write(&objects)?;
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

    fn reconcile_nodes(&mut self) -> Result<(), LabError> {
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
        // The pod network's config, before any agent reads it.
        self.leases()
            .put_config(&plan::overlay_config(&wanted, &self.settings))
            .map_err(|e| LabError::Plan(format!("the pod network's config: {e}")))?;
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

    fn leases(&self) -> ferry_overlay::store::FileStore {
        ferry_overlay::store::FileStore::new(&self.names.leases_dir())
    }

    /// The pods' MTU: the VXLAN device's (the node network's 1500 less
    /// the encapsulation), or the node network's for host-gw.
    fn pod_mtu(&self) -> u32 {
        if self.settings.backend == "host-gw" {
            1500
        } else {
            1500 - ferry_overlay::vxlan::ENCAP_OVERHEAD
        }
    }

    fn spawn_agent(&self, node: &NodeInfo) -> Result<Child, LabError> {
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
                format!("manifests:{}", self.names.manifests_dir().display()),
                "--healthz-bind-address".into(),
                "0.0.0.0:10256".into(),
                "--metrics-bind-address".into(),
                format!("{}:10249", node.ip),
                "--proxy-mode".into(),
                self.settings.proxy_mode.clone(),
                // The pod network: every node's agent runs the overlay with
                // the lab's lease store (a directory: one machine).
                "--components".into(),
                "proxy,dns,overlay".into(),
                "--lease-store".into(),
                format!("file:{}", self.names.leases_dir().display()),
                "--subnet-file".into(),
                self.names.subnet_file(&node.name).display().to_string(),
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
            ],
            &log,
        )
    }

    fn create_pod(&mut self, pod: &PodInfo) -> Result<(), LabError> {
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
            net::create_pod(
                &self.names,
                pod.id,
                &node,
                ip,
                self.pod_mtu(),
                &resolv_conf(&pod.name.namespace),
            )?;
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

    fn remove_pod(&mut self, name: &NamespacedName) {
        let Some(pod) = self.pods.remove(name) else {
            return;
        };
        if let Some(mut child) = self.procs.remove(name) {
            runtime::stop(&mut child);
        }
        let _ = std::fs::remove_file(self.names.pods_dir().join(format!("{}.started", pod.id)));
        if !pod.host_network
            && let Err(e) = net::delete_pod(&self.names, pod.id)
        {
            tracing::warn!(pod = %name, error = %e, "cannot delete the pod's namespace");
        }
        tracing::info!(pod = %name, "pod removed");
    }

    /// Plays the cloud load balancer: the outside client reaches each
    /// LoadBalancer IP through the nodes a load balancer would pick (every
    /// node for `externalTrafficPolicy: Cluster`; for `Local`, the nodes
    /// whose health-check node port answers 200), as ECMP routes.
    fn route_load_balancers(&mut self) -> Result<(), LabError> {
        let mut want: BTreeMap<IpAddr, Vec<Ipv4Addr>> = BTreeMap::new();
        let mut targets: Vec<(Ipv4Addr, u16)> = Vec::new();
        for o in self.inputs.values() {
            let Object::Service(_) = o else { continue };
            let key = o.key().name;
            let Some(ip) = self.allocations.get(&key).and_then(|a| a.lb_ip) else {
                continue;
            };
            let health_port = self
                .allocations
                .get(&key)
                .and_then(|a| a.health_check_node_port);
            let healthy = self
                .lb_checks
                .healthy
                .lock()
                .map(|h| h.clone())
                .unwrap_or_default();
            let hops: Vec<Ipv4Addr> = self
                .nodes
                .iter()
                .filter(|n| match health_port {
                    // externalTrafficPolicy Local: the nodes whose health-check node port says 200.
                    Some(port) => healthy.get(&(n.ip, port)).copied().unwrap_or(false),
                    None => true,
                })
                .map(|n| n.ip)
                .collect();
            if let Some(port) = health_port {
                targets.extend(self.nodes.iter().map(|n| (n.ip, port)));
            }
            want.insert(ip, hops);
        }
        if let Ok(mut t) = self.lb_checks.targets.lock() {
            *t = targets;
        }
        if want == self.lb_routes {
            return Ok(());
        }
        let mut commands = String::new();
        for ip in self.lb_routes.keys().filter(|ip| !want.contains_key(*ip)) {
            commands.push_str(&format!("route del {ip}/32\n"));
        }
        for (ip, hops) in &want {
            if self.lb_routes.get(ip) == Some(hops) {
                continue;
            }
            match hops.as_slice() {
                [] => commands.push_str(&format!("route replace blackhole {ip}/32\n")),
                [one] => commands.push_str(&format!("route replace {ip}/32 via {one} dev eth0\n")),
                many => {
                    let nh: Vec<String> = many
                        .iter()
                        .map(|h| format!("nexthop via {h} dev eth0"))
                        .collect();
                    commands.push_str(&format!("route replace {ip}/32 {}\n", nh.join(" ")));
                }
            }
        }
        net::batch(&self.names.outside_ns(), &commands)?;
        self.lb_routes = want;
        Ok(())
    }

    fn update_targets(&self) {
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

    fn phase(&self) -> (&'static str, String) {
        let agents_up = self
            .node_rt
            .values()
            .filter(|rt| rt.shared.agent_healthy.load(Ordering::Relaxed))
            .count();
        let live: Vec<&PodInfo> = self.pods.values().filter(|p| !p.terminating()).collect();
        let started = live.iter().filter(|p| p.started).count();
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
                                .map(|r| r.get(&p.name).is_some_and(|(_, known)| *known))
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
        let generation = self.writer.generation();
        let programmed = self
            .node_rt
            .values()
            .all(|rt| rt.shared.agent_synced.load(Ordering::Relaxed) >= generation);
        let done = agents_up == self.node_rt.len() && settled == live.len() && programmed;
        (if done { "Ready" } else { "Starting" }, message)
    }

    fn write_status(&mut self, phase: &str, message: &str) {
        let status = LabStatus {
            lab: self.names.lab.clone(),
            phase: phase.into(),
            message: message.into(),
            controller_pid: std::process::id(),
            state_dir: self.names.state_dir().display().to_string(),
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

    fn services_status(&self) -> Vec<ServiceStatus> {
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

    /// Removes every process and namespace this controller made: all
    /// processes killed first, then every namespace in one `ip` call.
    fn teardown(&mut self) {
        self.lb_checks.stop.store(true, Ordering::Relaxed);
        self._outside_thread.take();
        for rt in self.node_rt.values() {
            rt.shared.stop.store(true, Ordering::Relaxed);
        }
        let mut children: Vec<Child> = std::mem::take(&mut self.procs).into_values().collect();
        children.extend(self.node_rt.values_mut().filter_map(|rt| rt.agent.take()));
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
        namespaces.push(self.names.switch_ns());
        if let Err(e) = net::ns_del_many(&namespaces) {
            tracing::warn!(error = %e, "some namespaces could not be deleted");
        }
    }
}
