//! What `ferry bench ingress` runs: two nginx backends (one worker each,
//! a 104-byte `return 200`), and the two proxies measured in front of
//! them, nginx (one worker, an `upstream` with keep-alive, one server
//! block per host, setting the request headers ferry sets: Host,
//! X-Real-IP, X-Forwarded-For/-Proto/-Host/-Port, X-Request-ID, as
//! ingress-nginx's template does) and `ferry ingress` (one worker, one Ingress per host,
//! the backends as a Service's EndpointSlices), both pinned to core 1
//! with every thread. Configurations are written into the scratch
//! directory; a plain HTTP/1.1 GET on loopback tells when a host is live.
//!
//! Touches processes (nginx, the ferry binary, taskset), files in the
//! scratch directory, and loopback sockets.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ferry_sys::Tool;

use crate::procs::{Proc, free_port, tree};

/// The backends' answer: 104 bytes, as in the reference measurements.
const BODY: &str = "ferry-bench-backend-0123456789-0123456789-0123456789-0123456789-0123456789-0123456789-0123456789-0123";

/// The Host of the i-th route.
pub(super) fn host(i: usize) -> String {
    format!("h-{i}.example.test")
}

/// The status of `GET / Host: host` on 127.0.0.1:port; None when nothing answers.
pub(super) fn status(port: u16, host: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(1),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// Waits until `host` answers 200 on `port`; the time it took.
pub(super) fn wait_live(port: u16, host: &str, limit: Duration) -> anyhow::Result<Duration> {
    let start = Instant::now();
    while status(port, host) != Some(200) {
        if start.elapsed() > limit {
            bail!("{host} not live on port {port} after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(start.elapsed())
}

/// The cores a proxy with `workers` workers runs on: core 1 for one (wrk
/// has core 0), both for two (shared with wrk: labelled so).
pub(super) fn cores(workers: usize) -> &'static str {
    if workers > 1 { "0,1" } else { "1" }
}

fn spawn(
    name: &str,
    cmd: &mut Command,
    port: u16,
    probe_host: &str,
    cpus: &str,
) -> anyhow::Result<Proc> {
    let p = Proc::spawn(name, cmd, port)?;
    wait_live(port, probe_host, Duration::from_secs(120))
        .with_context(|| format!("{name} did not start"))?;
    for pid in tree(p.child.id()) {
        let _ = Tool::new("taskset")
            .args(["-a", "-p", "-c", cpus, &pid.to_string()])
            .output();
    }
    Ok(p)
}

fn nginx_common(dir: &Path, name: &str, workers: usize) -> String {
    let d = dir.display();
    format!(
        "worker_processes {workers};\ndaemon off;\npid {d}/{name}.pid;\nerror_log {d}/{name}.err error;\n\
         events {{ worker_connections 16384; }}\n"
    )
}

/// One nginx backend on a free loopback port.
pub(super) fn backend(dir: &Path, name: &str) -> anyhow::Result<Proc> {
    let port = free_port();
    let d = dir.display();
    let conf = format!(
        "{}http {{\n access_log off;\n keepalive_requests 1000000;\n client_body_temp_path {d}/tmp;\n \
         server {{ listen 127.0.0.1:{port} default_server; location / {{ return 200 \"{BODY}\"; }} }}\n}}\n",
        nginx_common(dir, name, 1)
    );
    let path = dir.join(format!("{name}.conf"));
    std::fs::write(&path, conf)?;
    spawn(name, &mut nginx_cmd(dir, &path, "1"), port, "any", "1")
}

fn nginx_cmd(dir: &Path, conf: &Path, cpus: &str) -> Command {
    let mut c = Command::new("taskset");
    c.args(["-c", cpus, "nginx", "-p"])
        .arg(dir)
        .arg("-e")
        .arg(dir.join("startup.err"))
        .arg("-c")
        .arg(conf);
    c
}

/// The nginx proxy's configuration: `hosts` server blocks to the backends.
pub(super) fn proxy_conf(
    dir: &Path,
    port: u16,
    backends: &[u16],
    hosts: &[String],
    workers: usize,
) -> String {
    let d = dir.display();
    let mut s = nginx_common(dir, "proxy", workers);
    s.push_str(&format!(
        "http {{\n access_log off;\n keepalive_requests 1000000;\n client_body_temp_path {d}/tmp;\n proxy_temp_path {d}/tmp;\n \
         server_names_hash_max_size 131072;\n server_names_hash_bucket_size 128;\n upstream be {{\n"
    ));
    for b in backends {
        s.push_str(&format!("  server 127.0.0.1:{b};\n"));
    }
    s.push_str("  keepalive 320;\n  keepalive_requests 1000000;\n }\n");
    s.push_str(&format!(
        " server {{ listen 127.0.0.1:{port} default_server; return 404; }}\n"
    ));
    for h in hosts {
        s.push_str(&format!(
            " server {{ listen 127.0.0.1:{port}; server_name {h};\n  location / {{ proxy_pass http://be; proxy_http_version 1.1; \
             proxy_set_header Connection \"\"; proxy_set_header Host $host; proxy_set_header X-Real-IP $remote_addr; \
             proxy_set_header X-Forwarded-For $remote_addr; proxy_set_header X-Forwarded-Proto $scheme; \
             proxy_set_header X-Forwarded-Host $host; proxy_set_header X-Forwarded-Port $server_port; \
             proxy_set_header X-Request-ID $request_id; }}\n }}\n"
        ));
    }
    s.push_str("}\n");
    s
}

pub(super) struct NginxProxy {
    pub proc: Proc,
    conf: PathBuf,
    dir: PathBuf,
    backends: Vec<u16>,
    workers: usize,
}

impl NginxProxy {
    pub fn start(
        dir: &Path,
        backends: &[u16],
        hosts: &[String],
        workers: usize,
    ) -> anyhow::Result<NginxProxy> {
        let port = free_port();
        let conf = dir.join("proxy.conf");
        std::fs::write(&conf, proxy_conf(dir, port, backends, hosts, workers))?;
        let cpus = cores(workers);
        let proc = spawn(
            "nginx proxy",
            &mut nginx_cmd(dir, &conf, cpus),
            port,
            &hosts[0],
            cpus,
        )?;
        Ok(NginxProxy {
            proc,
            conf,
            dir: dir.to_path_buf(),
            backends: backends.to_vec(),
            workers,
        })
    }

    /// Rewrites the configuration with `hosts` and reloads, as
    /// ingress-nginx does for a new Ingress.
    pub fn change(&self, hosts: &[String]) -> anyhow::Result<()> {
        std::fs::write(
            &self.conf,
            proxy_conf(
                &self.dir,
                self.proc.port,
                &self.backends,
                hosts,
                self.workers,
            ),
        )?;
        Tool::new("nginx")
            .arg("-p")
            .arg(self.dir.display().to_string())
            .args(["-e", &self.dir.join("startup.err").display().to_string()])
            .arg("-c")
            .arg(self.conf.display().to_string())
            .args(["-s", "reload"])
            .run()?;
        Ok(())
    }
}

/// Manifests for `ferry ingress`: the backends as one Service's endpoints.
pub(super) fn service_manifest(backends: &[u16]) -> String {
    let mut s = String::from(
        "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: ferry}\nspec: {controller: ferry.dev/ingress-controller}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {name: be, namespace: default}\nspec:\n  clusterIP: 10.96.0.10\n  ports: [{name: http, port: 80}]\n",
    );
    for (i, b) in backends.iter().enumerate() {
        s.push_str(&format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: be-{i}, namespace: default, labels: {{kubernetes.io/service-name: be}}}}\n\
             addressType: IPv4\nports: [{{name: http, port: {b}}}]\nendpoints:\n- addresses: [127.0.0.1]\n  conditions: {{ready: true}}\n"
        ));
    }
    s
}

/// One Ingress per host, as one manifest file.
pub(super) fn ingress_manifest(hosts: &[String], prefix: &str) -> String {
    let mut s = String::new();
    for (i, h) in hosts.iter().enumerate() {
        s.push_str(&format!(
            "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {prefix}-{i}, namespace: default}}\n\
             spec:\n  ingressClassName: ferry\n  rules:\n  - host: {h}\n    http:\n      paths:\n      - {{path: /, pathType: Prefix, backend: {{service: {{name: be, port: {{number: 80}}}}}}}}\n"
        ));
    }
    s
}

pub(super) struct FerryIngress {
    pub proc: Proc,
    manifests: PathBuf,
}

impl FerryIngress {
    pub fn start(
        dir: &Path,
        backends: &[u16],
        hosts: &[String],
        workers: usize,
    ) -> anyhow::Result<FerryIngress> {
        let port = free_port();
        let manifests = dir.join("manifests");
        let _ = std::fs::remove_dir_all(&manifests);
        std::fs::create_dir_all(&manifests)?;
        std::fs::write(manifests.join("service.yaml"), service_manifest(backends))?;
        std::fs::write(
            manifests.join("ingresses.yaml"),
            ingress_manifest(hosts, "ing"),
        )?;
        let exe = std::env::current_exe().context("finding the ferry binary")?;
        let proc = spawn(
            "ferry ingress",
            Command::new("taskset")
                .args(["-c", cores(workers)])
                .arg(exe)
                .arg("ingress")
                .arg(format!("--source=manifests:{}", manifests.display()))
                .args([
                    "--http",
                    &format!("127.0.0.1:{port}"),
                    "--ingress-workers",
                    &workers.to_string(),
                    // As nginx's `access_log off` here.
                    "--ingress-access-log",
                    "off",
                ])
                .env("RUST_LOG", "error"),
            port,
            &hosts[0],
            cores(workers),
        )?;
        Ok(FerryIngress { proc, manifests })
    }

    /// Adds one Ingress for `host`, as an API server would deliver it.
    pub fn add(&self, host: &str, name: &str) -> anyhow::Result<()> {
        let tmp = self.manifests.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, ingress_manifest(&[host.to_string()], name))?;
        std::fs::rename(&tmp, self.manifests.join(format!("{name}.yaml")))?;
        Ok(())
    }
}
