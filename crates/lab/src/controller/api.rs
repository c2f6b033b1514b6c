//! The API server's part of the lab: the user's objects (`lab up`'s files,
//! `lab apply`, `lab delete`, `lab scale`), checked whole before they are
//! taken, saved to the state directory, and the control socket that
//! receives the requests.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_model::{Kind, NamespacedName, Object, ObjectKey, decode};

use super::{Controller, Event};

/// The lab API server's port (plain HTTP, inside the lab only).
pub(super) const API_PORT: u16 = 6443;
use crate::plan::{self, Inputs};
use crate::protocol::{Request, Response};
use crate::write::MARKER;
use crate::{LabError, net, probe, runtime};

/// How long the lab leaves its API server down after it exited before
/// starting it again: kubelet's first crash-loop back-off for a static
/// pod (10 s), so a killed API server is a 10 s outage, as in a cluster.
pub(super) const API_SERVER_RESTART_DELAY: Duration = Duration::from_secs(10);

/// Where the lab's generation marker landed in its API server: the
/// generation the marker carries and the resourceVersion of a list that
/// holds it. Everything the lab wrote up to that generation is in the API
/// at that version, so an agent whose source has reached it on every kind
/// has read that generation.
#[derive(Default)]
pub(super) struct ApiProgress {
    pub(super) marker: Mutex<Option<(u64, u64)>>,
    pub(super) stop: AtomicBool,
}

/// Asks the API server (from its own namespace) where the marker is, each
/// 50 ms; wakes the controller when the answer changes.
pub(super) fn api_progress_poller(
    progress: Arc<ApiProgress>,
    ip: Ipv4Addr,
    wake: Sender<super::Event>,
) {
    let path =
        format!("/api/v1/namespaces/kube-system/configmaps?fieldSelector=metadata.name%3D{MARKER}");
    while !progress.stop.load(Ordering::Relaxed) {
        let found = probe::http_get(IpAddr::V4(ip), API_PORT, &path, Duration::from_millis(500))
            .filter(|(status, _)| *status == 200)
            .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(&body).ok())
            .and_then(|list| {
                let generation = list["items"][0]["data"]["generation"]
                    .as_str()?
                    .parse()
                    .ok()?;
                let rv = list["metadata"]["resourceVersion"].as_str()?.parse().ok()?;
                Some((generation, rv))
            });
        if let Some(found) = found
            && let Ok(mut marker) = progress.marker.lock()
            && *marker != Some(found)
        {
            *marker = Some(found);
            if wake.send(super::Event::Probed).is_err() {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How long the control socket waits for a client's request line.
pub(super) const CONTROL_READ_TIMEOUT: Duration = Duration::from_secs(2);

impl Controller {
    pub(super) fn load_inputs(&mut self) -> Result<(), LabError> {
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
            let objects = d.objects.into_iter().map(|o| o.object).collect();
            self.inputs.read(objects, &text);
        }
        Ok(())
    }

    pub(super) fn listen(&self) -> Result<(), LabError> {
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
    pub(super) fn check(
        &self,
        candidate: &Inputs,
        touched: &[ObjectKey],
    ) -> Result<(), Vec<String>> {
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

    pub(super) fn handle(&mut self, req: Request) -> Response {
        match req {
            Request::Apply { files } => {
                let mut errors = Vec::new();
                let mut read = Inputs::new();
                for (label, text) in &files {
                    let d = decode(label, text);
                    errors.extend(d.errors.iter().map(ToString::to_string));
                    let objects = d.objects.into_iter().map(|o| o.object).collect();
                    read.read(objects, text);
                }
                if !errors.is_empty() {
                    return Response::Rejected(errors);
                }
                let mut candidate = self.inputs.clone();
                let (mut created, mut configured, mut unchanged) = (0, 0, 0);
                let touched: Vec<ObjectKey> = read.keys().cloned().collect();
                for (key, o) in read.iter() {
                    match candidate.get(key) {
                        None => created += 1,
                        Some(old) if old == o && old.kind() != Kind::Pod => unchanged += 1,
                        Some(old) if old == o && candidate.pod_spec(key) == read.pod_spec(key) => {
                            unchanged += 1
                        }
                        Some(_) => configured += 1,
                    }
                }
                candidate.extend(read);
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

    pub(super) fn delete(&mut self, kind: &str, namespace: &str, name: &str) -> Response {
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

    pub(super) fn save_inputs(&self) {
        // A bare Pod is saved whole: the model's slim Pod and the spec the lab read.
        let items: Vec<serde_json::Value> = self
            .inputs
            .iter()
            .filter_map(|(key, o)| {
                let mut v: serde_json::Value = serde_json::from_slice(&o.to_json().ok()?).ok()?;
                if let Some(spec) = self.inputs.pod_spec(key) {
                    v["spec"] = serde_json::to_value(&**spec).ok()?;
                }
                Some(v)
            })
            .collect();
        let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
        let path = self.names.state_dir().join("inputs.json");
        if let Err(e) = std::fs::write(&path, list.to_string()) {
            tracing::warn!(error = %e, "cannot save {}", path.display());
        }
    }

    /// The lab's API server: a process of its own in the control-plane
    /// namespace on the node network (never the root namespace), serving
    /// the manifests this controller writes, with a kubeconfig for it.
    pub(super) fn start_api_server(&mut self) -> Result<(), LabError> {
        let ip = self.settings.api_server_ip();
        net::create_control_plane(&self.names, ip, self.settings.node_cidr)?;
        let manifests = self.names.manifests_dir();
        std::fs::create_dir_all(&manifests).map_err(LabError::io(&manifests))?;
        let url = format!("http://{ip}:{API_PORT}");
        let child = self.spawn_api_server()?;
        self.api_server = Some(child);
        if self.settings.source == "kube" {
            let thread = super::start_ns_thread(&self.names.control_plane_ns())?;
            let (progress, wake) = (self.api_progress.clone(), self.events_tx.clone());
            thread.run(move || api_progress_poller(progress, ip, wake));
            self._api_thread = Some(thread);
        }
        if let Some(endpoint) = self.etcd_endpoint() {
            self.start_etcd(&endpoint)?;
        }
        let kubeconfig = self.names.kubeconfig();
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: {lab}\n  cluster: {{server: \"{url}\"}}\ncontexts:\n- name: {lab}\n  context: {{cluster: {lab}, user: {lab}}}\ncurrent-context: {lab}\nusers:\n- name: {lab}\n  user: {{}}\n",
            lab = self.names.lab
        );
        std::fs::write(&kubeconfig, text).map_err(LabError::io(&kubeconfig))?;
        tracing::info!(%url, "API server started");
        Ok(())
    }

    fn spawn_api_server(&self) -> Result<std::process::Child, LabError> {
        let ip = self.settings.api_server_ip();
        let manifests = self.names.manifests_dir();
        let log = self.names.logs_dir().join("apiserver.log");
        runtime::spawn_in(
            &self.names.control_plane_ns(),
            &[
                "apiserver".into(),
                "--manifests".into(),
                manifests.display().to_string(),
                "--listen".into(),
                format!("{ip}:{API_PORT}"),
                "--patches-file".into(),
                self.names.api_patches().display().to_string(),
                "--resource-version-file".into(),
                self.names
                    .state_dir()
                    .join("apiserver.rv")
                    .display()
                    .to_string(),
                "--lab".into(),
                self.names.lab.clone(),
            ],
            &log,
        )
    }

    /// Starts the API server again [`API_SERVER_RESTART_DELAY`] after it
    /// exited (killed by a test, or crashed), as kubelet restarts a
    /// static pod; agents serve their last state meanwhile.
    pub(super) fn supervise_api_server(&mut self) -> Result<(), LabError> {
        if let Some(child) = self.api_server.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            tracing::warn!(%status, delay = ?API_SERVER_RESTART_DELAY, "the API server exited; starting it again after the back-off");
            self.api_server = None;
            self.api_server_down_since = Some(Instant::now());
        }
        if let Some(since) = self.api_server_down_since
            && since.elapsed() >= API_SERVER_RESTART_DELAY
        {
            self.api_server = Some(self.spawn_api_server()?);
            self.api_server_down_since = None;
            tracing::info!("API server started again");
        }
        Ok(())
    }

    /// A real etcd (Debian's etcd-server) for the pod network's leases,
    /// in the control-plane namespace, its data in the state directory.
    fn start_etcd(&mut self, endpoint: &str) -> Result<(), LabError> {
        let data = self.names.state_dir().join("etcd");
        std::fs::create_dir_all(&data).map_err(LabError::io(&data))?;
        let log = self.names.logs_dir().join("etcd.log");
        let child = runtime::spawn_program_in(
            &self.names.control_plane_ns(),
            "etcd",
            &[
                "--name".into(),
                self.names.lab.clone(),
                "--data-dir".into(),
                data.display().to_string(),
                "--listen-client-urls".into(),
                endpoint.to_string(),
                "--advertise-client-urls".into(),
                endpoint.to_string(),
                // Peers: none; the peer port stays on the namespace's loopback.
                "--listen-peer-urls".into(),
                "http://127.0.0.1:2380".into(),
                "--initial-advertise-peer-urls".into(),
                "http://127.0.0.1:2380".into(),
                "--initial-cluster".into(),
                format!("{}=http://127.0.0.1:2380", self.names.lab),
            ],
            &log,
        )?;
        self.etcd = Some(child);
        self.leases()
            .wait_ready(std::time::Duration::from_secs(20))?;
        tracing::info!(%endpoint, "etcd started for the pod network's leases");
        Ok(())
    }
}
