//! The Ingress conformance suite (kubernetes-sigs/ingress-controller-
//! conformance: default backend, host rules, ingress class, load balancing,
//! path rules) and the Kubernetes docs' Ingress example tables, run in one
//! lab with curl from `outside` to a node's ingress.
//!
//! The suite's feature files are data (tests/fixtures/conformance/); its Go
//! runner needs an API server, so this harness plays its part: it reads the
//! features (conformance/gherkin.rs), makes what its step definitions make
//! (one `ferry echo` Deployment `<ingress>-<service>` and a Service on port
//! 8080 per backend the Ingresses name, a self-signed TLS Secret), and
//! checks every Then step as the suite's does. Where the harness differs:
//! - one namespace per feature (`conformance-<feature>`), not one per
//!   scenario; each feature's Ingresses are deleted before the next;
//! - the Background runs before every scenario, as in Gherkin (re-applying
//!   an unchanged Ingress), and an outline without Examples runs once;
//! - the client is curl, sending the suite's client's User-Agent
//!   (`Go-http-client/1.1`) over HTTP/1.1 without verifying certificates,
//!   and following redirects as the suite's client does (the Location's
//!   scheme, host and path, sent again to the same address);
//! - "served by the X service" is read from the pod name ferry echo
//!   reports (pods of Deployment `<ingress>-X`), where the suite's echo
//!   server reports an environment variable.
//!
//! Root needed (fail under CI=true, skip otherwise).

mod common;
#[path = "conformance/gherkin.rs"]
mod gherkin;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use ferry_model::Object;
use gherkin::{Feature, Scenario, Step, quoted};
use serde_json::Value;

const FEATURES: [&str; 5] = [
    "default_backend",
    "host_rules",
    "ingress_class",
    "load_balancing",
    "path_rules",
];

/// The suite's client's User-Agent (Go's net/http), sent by curl.
const USER_AGENT: &str = "Go-http-client/1.1";

fn conformance_file(name: &str) -> String {
    fixture(&format!("conformance/{name}"))
}

/// A Service an Ingress names, with the Deployment behind it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Backend {
    ingress: String,
    service: String,
    port_name: Option<String>,
}

impl Backend {
    fn deployment(&self) -> String {
        format!("{}-{}", self.ingress, self.service)
    }
}

/// What a feature needs in the lab.
struct Prepared {
    feature: Feature,
    namespace: String,
    /// Ingress name → manifest text (namespace set).
    ingresses: Vec<(String, String)>,
    backends: Vec<Backend>,
    /// Secret name, host, certificate file.
    secrets: Vec<(String, String, PathBuf)>,
}

/// The Ingress manifest a step makes, if it makes one: (name, text).
fn ingress_of_step(step: &Step, namespace: &str) -> Option<(String, String)> {
    let doc = step.doc.as_deref()?;
    if step.text.starts_with("an Ingress resource named ") {
        let name = quoted(&step.text).into_iter().next()?;
        let spec: String = doc.lines().map(|l| format!("  {l}\n")).collect();
        let text = format!(
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n{spec}"
        );
        return Some((name, text));
    }
    if step.text.starts_with("an Ingress resource") {
        let text = doc.replacen(
            "metadata:\n",
            &format!("metadata:\n  namespace: {namespace}\n"),
            1,
        );
        let name = decode_ingress(&text).metadata.name.clone()?;
        return Some((name, text));
    }
    None
}

fn decode_ingress(text: &str) -> ferry_model::k8s_openapi::api::networking::v1::Ingress {
    let d = ferry_model::decode("feature", text);
    assert!(d.errors.is_empty(), "{:?}\n{text}", d.errors);
    match d.objects.into_iter().map(|o| o.object).next() {
        Some(Object::Ingress(i)) => (*i).clone(),
        other => panic!("not an Ingress: {other:?}\n{text}"),
    }
}

/// The Services an Ingress names, as the suite's DeploymentsFromIngress.
fn backends_of(ingress_name: &str, text: &str) -> Vec<Backend> {
    let ing = decode_ingress(text);
    let spec = ing.spec.unwrap_or_default();
    let mut services: Vec<_> = spec.default_backend.into_iter().collect();
    for rule in spec.rules.into_iter().flatten() {
        for p in rule.http.into_iter().flat_map(|h| h.paths) {
            services.push(p.backend);
        }
    }
    services
        .into_iter()
        .filter_map(|b| b.service)
        .map(|s| Backend {
            ingress: ingress_name.to_string(),
            service: s.name,
            port_name: s.port.and_then(|p| p.name),
        })
        .collect()
}

fn prepare(name: &str, certs: &Path) -> Prepared {
    let text = std::fs::read_to_string(conformance_file(&format!("{name}.feature"))).unwrap();
    let feature = gherkin::parse(&text).unwrap_or_else(|e| panic!("{name}.feature: {e}"));
    let namespace = format!("conformance-{}", name.replace('_', "-"));
    let mut p = Prepared {
        feature,
        namespace,
        ingresses: Vec::new(),
        backends: Vec::new(),
        secrets: Vec::new(),
    };
    let steps: Vec<Step> = p
        .feature
        .background
        .iter()
        .chain(p.feature.scenarios.iter().flat_map(|s| &s.steps))
        .cloned()
        .collect();
    for step in &steps {
        if let Some((ing, text)) = ingress_of_step(step, &p.namespace) {
            for b in backends_of(&ing, &text) {
                if !p.backends.contains(&b) {
                    p.backends.push(b);
                }
            }
            if !p.ingresses.iter().any(|(n, _)| *n == ing) {
                p.ingresses.push((ing, text));
            }
        }
        if step.text.starts_with("a self-signed TLS secret named ") {
            let q = quoted(&step.text);
            let (secret, host) = (q[0].clone(), q[1].clone());
            if !p.secrets.iter().any(|(s, _, _)| *s == secret) {
                let crt = self_signed(certs, &host);
                p.secrets.push((secret, host, crt));
            }
        }
    }
    p
}

/// A self-signed certificate for `host`; returns the cert file (the key
/// is beside it, `.key`).
fn self_signed(dir: &Path, host: &str) -> PathBuf {
    let crt = dir.join(format!("{host}.crt"));
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![host.to_string()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, host);
    // As `openssl req -x509` makes it: its own CA, so curl can trust it.
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(&crt, cert.pem()).unwrap();
    std::fs::write(crt.with_extension("key"), key.serialize_pem()).unwrap();
    crt
}

fn base64_file(path: &Path) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(std::fs::read(path).unwrap())
}

/// The objects the lab starts with: the default IngressClass (ferry's, as
/// the suite's Ingresses name no class), and per feature its namespace,
/// echo Deployments and Services, and TLS Secrets.
fn lab_manifest(features: &[&Prepared]) -> String {
    let mut m = String::from(
        "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata:\n  name: ferry\n  annotations:\n    ingressclass.kubernetes.io/is-default-class: \"true\"\nspec:\n  controller: ferry.dev/ingress-controller\n",
    );
    for p in features {
        let ns = &p.namespace;
        m.push_str(&format!(
            "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"
        ));
        let mut services = BTreeSet::new();
        for b in &p.backends {
            let d = b.deployment();
            m.push_str(&format!(
                "---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {d}\n  namespace: {ns}\n\
                 spec:\n  replicas: 1\n  selector:\n    matchLabels:\n      app: {d}\n  template:\n    \
                 metadata:\n      labels:\n        app: {d}\n    spec:\n      containers:\n      - name: echo\n        \
                 image: echo\n        ports:\n        - containerPort: 3000\n"
            ));
            if !services.insert(b.service.clone()) {
                continue;
            }
            let port_name = b
                .port_name
                .as_deref()
                .map_or(String::new(), |n| format!("name: {n}, "));
            m.push_str(&format!(
                "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {s}\n  namespace: {ns}\n\
                 spec:\n  selector:\n    app: {d}\n  ports:\n  - {{{port_name}port: 8080, targetPort: 3000}}\n",
                s = b.service
            ));
        }
        for (name, _, crt) in &p.secrets {
            let key = crt.with_extension("key");
            m.push_str(&format!(
                "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {ns}\n\
                 type: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}\n",
                base64_file(crt),
                base64_file(&key)
            ));
        }
    }
    m
}

/// One HTTP exchange as the suite's client captures it.
#[derive(Clone, Debug, Default)]
struct Exchange {
    url: String,
    status: u16,
    proto: String,
    headers: Vec<(String, String)>,
    /// The echo server's JSON, or Null when the body is not JSON.
    seen: Value,
    body: String,
}

impl Exchange {
    fn header(&self, key: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

const END: &str = "\n@@ferry-conformance-end@@\n";

/// Splits curl's `-i` output (one part per transfer) into exchanges.
fn parse_exchanges(out: &str, url: &str) -> Vec<Exchange> {
    out.split(END)
        .filter(|p| !p.is_empty())
        .map(|part| {
            let (head, body) = part.split_once("\r\n\r\n").unwrap_or((part, ""));
            let mut lines = head.lines();
            let status_line = lines.next().unwrap_or("");
            let mut words = status_line.split_whitespace();
            let proto = words.next().unwrap_or("").to_string();
            let status = words.next().and_then(|s| s.parse().ok()).unwrap_or(0);
            let headers = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .collect();
            Exchange {
                url: url.to_string(),
                status,
                proto,
                headers,
                seen: serde_json::from_str(body.trim()).unwrap_or(Value::Null),
                body: body.to_string(),
            }
        })
        .collect()
}

/// The curl command for `count` requests to `url`, every connection sent
/// to `address` (the Ingress's status address) whatever the URL's host.
fn curl(address: &str, method: &str, url: &str, count: usize, tls: Tls) -> Vec<String> {
    let mut c: Vec<String> = [
        "curl",
        "-sS",
        "-i",
        "--http1.1",
        "-m",
        "5",
        "-A",
        USER_AGENT,
        "-X",
        method,
        "--connect-to",
        &format!("::{address}:"),
        "-w",
        END,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    match tls {
        Tls::Insecure => c.push("-k".into()),
        Tls::Verify(ca) => c.extend(["--cacert".into(), ca.display().to_string()]),
    }
    c.extend(std::iter::repeat_n(url.to_string(), count));
    c
}

#[derive(Clone, Copy)]
enum Tls<'a> {
    /// As the suite's client: no verification while connecting.
    Insecure,
    Verify(&'a Path),
}

fn run_curl(lab: &Lab, args: &[String]) -> Result<String, String> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = lab.exec("outside", &args);
    if !out.status.success() {
        return Err(format!("{args:?} failed: {}", text(&out)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn url_of(scheme: &str, host: &str, path: &str, address: &str) -> String {
    let authority = if host.is_empty() { address } else { host };
    format!("{scheme}://{authority}/{}", path.trim_start_matches('/'))
}

/// One request as the suite's CaptureRoundTrip: a redirect is followed by
/// sending its Location's scheme, host and path to the same address.
fn round_trip(
    lab: &Lab,
    address: &str,
    method: &str,
    scheme: &str,
    host: &str,
    path: &str,
) -> Result<Exchange, String> {
    let (mut scheme, mut host, mut path) = (scheme.to_string(), host.to_string(), path.to_string());
    for _ in 0..10 {
        let url = url_of(&scheme, &host, &path, address);
        let out = run_curl(lab, &curl(address, method, &url, 1, Tls::Insecure))?;
        let ex = parse_exchanges(&out, &url)
            .pop()
            .ok_or_else(|| format!("no response to {url}: {out:?}"))?;
        if ![301, 302, 303, 307, 308].contains(&ex.status) {
            return Ok(ex);
        }
        let location = ex
            .header("location")
            .first()
            .map(|l| l.to_string())
            .ok_or_else(|| format!("{} without Location from {url}", ex.status))?;
        let (s, rest) = location
            .split_once("://")
            .ok_or_else(|| format!("relative Location {location:?} from {url}"))?;
        let (authority, p) = rest.split_once('/').unwrap_or((rest, ""));
        eprintln!(
            "  (redirect {} from {url} to {location}: followed)",
            ex.status
        );
        scheme = s.to_string();
        host = authority
            .rsplit_once(':')
            .map_or(authority, |(h, _)| h)
            .to_string();
        path = format!("/{}", p.split(['?', '#']).next().unwrap_or(""));
    }
    Err("more than 10 redirects".into())
}

/// The metric `name` from one node's agent (its metrics port).
fn node_metric(lab: &Lab, node_ip: &str, name: &str) -> Option<f64> {
    let out = lab.exec(
        "outside",
        &[
            "curl",
            "-sS",
            "-m",
            "2",
            &format!("http://{node_ip}:10249/metrics"),
        ],
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The lab's node addresses.
fn node_ips(lab: &Lab) -> Vec<String> {
    lab.status()["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["ip"].as_str().unwrap().to_string())
        .collect()
}

/// Waits until every node's ingress routes `n` Ingresses (its route table
/// has taken the change the lab's status already shows).
fn wait_routed(lab: &Lab, n: usize) -> Result<(), String> {
    let nodes = node_ips(lab);
    let start = Instant::now();
    loop {
        let counts: Vec<Option<f64>> = nodes
            .iter()
            .map(|ip| node_metric(lab, ip, "ferry_ingress_ingresses"))
            .collect();
        if counts.iter().all(|c| *c == Some(n as f64)) {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(10) {
            return Err(format!(
                "the nodes' ingresses route {counts:?} Ingresses, not {n}, after 10 s"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// After a change the lab's API already shows (new endpoints), waits a
/// little for every node's route table to follow it: until each node's
/// `ferry_ingress_route_table_version` moves past what it was, at most
/// 3 s (it may have moved before this looked). Under a loaded CI run the
/// scale's endpoints once reached the ingress after the requests did.
fn wait_table_follows(lab: &Lab) {
    let nodes = node_ips(lab);
    let version = |ip: &str| node_metric(lab, ip, "ferry_ingress_route_table_version");
    let before: Vec<Option<f64>> = nodes.iter().map(|ip| version(ip)).collect();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        if nodes.iter().zip(&before).all(|(ip, b)| version(ip) > *b) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The addresses the lab wrote into an Ingress's status; None while the
/// lab does not list it as ferry's.
fn status_addresses(lab: &Lab, namespace: &str, name: &str) -> Option<Vec<String>> {
    lab.status()["ingresses"]
        .as_array()?
        .iter()
        .find(|i| i["namespace"] == namespace && i["name"] == name)
        .map(|i| {
            i["addresses"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str().map(str::to_string))
                .collect()
        })
}

fn owned_count(lab: &Lab) -> usize {
    lab.status()["ingresses"].as_array().map_or(0, Vec::len)
}

/// A scenario's state, as the suite's `state.Scenario`.
struct Run<'a> {
    lab: &'a Lab,
    p: &'a Prepared,
    ingress: Option<String>,
    address: Option<String>,
    exchange: Option<Exchange>,
    many: Vec<Exchange>,
}

impl<'a> Run<'a> {
    fn new(lab: &'a Lab, p: &'a Prepared) -> Self {
        Run {
            lab,
            p,
            ingress: None,
            address: None,
            exchange: None,
            many: Vec::new(),
        }
    }

    fn address(&self) -> Result<&str, String> {
        self.address
            .as_deref()
            .ok_or_else(|| "no Ingress address yet (no status step ran)".into())
    }

    fn exchange(&self) -> Result<&Exchange, String> {
        self.exchange
            .as_ref()
            .ok_or_else(|| "no request was sent".into())
    }

    fn seen(&self, field: &str) -> Result<String, String> {
        let ex = self.exchange()?;
        ex.seen[field]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("the response is not the echo server's (no {field}): {ex:?}"))
    }

    /// The Service whose Deployment `pod` belongs to.
    fn service_of(&self, pod: &str) -> Option<String> {
        self.p
            .backends
            .iter()
            .filter(|b| pod.starts_with(&format!("{}-", b.deployment())))
            .max_by_key(|b| b.deployment().len())
            .map(|b| b.service.clone())
    }

    fn apply(&mut self, name: &str) -> Result<(), String> {
        let (_, manifest) = self
            .p
            .ingresses
            .iter()
            .find(|(n, _)| n == name)
            .ok_or_else(|| format!("no Ingress {name} prepared"))?;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&file, manifest).unwrap();
        let out = self.lab.run(&["apply", file.to_str().unwrap()]);
        if !out.status.success() {
            return Err(format!("lab apply {name}: {}", text(&out)));
        }
        self.ingress = Some(name.to_string());
        Ok(())
    }

    fn step(&mut self, step: &Step) -> Result<(), String> {
        let t = step.text.as_str();
        let q = quoted(t);
        let num = |i: usize| -> Result<usize, String> {
            t.split(|c: char| !c.is_ascii_digit())
                .filter(|w| !w.is_empty())
                .nth(i)
                .and_then(|w| w.parse().ok())
                .ok_or_else(|| format!("no number {i} in {t:?}"))
        };
        if t == "a new random namespace" || t.starts_with("a self-signed TLS secret named ") {
            // The feature's namespace and Secrets exist since the lab started.
            return Ok(());
        }
        if let Some((name, _)) = ingress_of_step(step, &self.p.namespace) {
            return self.apply(&name);
        }
        let ns = self.p.namespace.as_str();
        match t {
            "The Ingress status shows the IP address or FQDN where it is exposed" => {
                let name = self.ingress.clone().ok_or("no Ingress applied")?;
                let start = Instant::now();
                loop {
                    if let Some(a) = status_addresses(self.lab, ns, &name)
                        && let Some(first) = a.first()
                    {
                        self.address = Some(first.clone());
                        break;
                    }
                    if start.elapsed() > Duration::from_secs(10) {
                        return Err(format!("{ns}/{name} has no status address after 10 s"));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                return wait_routed(self.lab, owned_count(self.lab));
            }
            "The Ingress status should not contain the IP address or FQDN" => {
                let name = self.ingress.clone().ok_or("no Ingress applied")?;
                let file = format!(
                    "/run/ferry/labs/{}/manifests/ingress.{ns}.{name}.json",
                    self.lab.name
                );
                let start = Instant::now();
                while !Path::new(&file).exists() {
                    if start.elapsed() > Duration::from_secs(10) {
                        return Err(format!("the lab did not take {ns}/{name} within 10 s"));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                // As the suite: the status stays empty for a while.
                while start.elapsed() < Duration::from_secs(2) {
                    let written = std::fs::read_to_string(&file).unwrap_or_default();
                    if let Some(a) = status_addresses(self.lab, ns, &name) {
                        return Err(format!("{ns}/{name} got status addresses {a:?}"));
                    }
                    if written.contains("loadBalancer") {
                        return Err(format!("{ns}/{name} got a status: {written}"));
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                return Ok(());
            }
            _ => {}
        }
        if t.starts_with("The backend deployment ") {
            let ing = self.ingress.clone().ok_or("no Ingress applied")?;
            let replicas = num(0)?;
            let svc = &q[0];
            let d = format!("deployment/{ns}/{ing}-{svc}");
            let out = self.lab.run(&["scale", &d, &replicas.to_string()]);
            if !out.status.success() {
                return Err(format!("lab scale {d}: {}", text(&out)));
            }
            let start = Instant::now();
            loop {
                let ready = self
                    .lab
                    .slice_endpoints(ns, svc)
                    .iter()
                    .filter(|e| e["conditions"]["ready"] == true)
                    .count();
                if ready == replicas {
                    wait_table_follows(self.lab);
                    return Ok(());
                }
                if start.elapsed() > Duration::from_secs(60) {
                    return Err(format!("{svc} has {ready} ready endpoints, not {replicas}"));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        if t.starts_with("I send a ") && t.contains("request to http://\"") {
            // `I send a "M" request to http://"HOST"/"PATH"`
            let address = self.address()?.to_string();
            self.exchange = Some(round_trip(self.lab, &address, &q[0], "http", &q[1], &q[2])?);
            return Ok(());
        }
        if t.starts_with("I send a ") {
            // `I send a "M" request to "URL"`
            let address = self.address()?.to_string();
            let (scheme, rest) = q[1].split_once("://").ok_or("no scheme in the URL")?;
            let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
            self.exchange = Some(round_trip(self.lab, &address, &q[0], scheme, host, path)?);
            return Ok(());
        }
        if t.starts_with("I send ") && t.contains(" requests to ") {
            let address = self.address()?.to_string();
            let n = num(0)?;
            let (scheme, rest) = q[0].split_once("://").ok_or("no scheme in the URL")?;
            let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
            let url = url_of(scheme, host, path, &address);
            let out = run_curl(self.lab, &curl(&address, "GET", &url, n, Tls::Insecure))?;
            self.many = parse_exchanges(&out, &url);
            if self.many.len() != n {
                return Err(format!("{} responses to {n} requests", self.many.len()));
            }
            return Ok(());
        }
        if t.starts_with("all the responses status-code must be ") {
            let (status, pods) = (num(0)?, num(1)?);
            let seen: BTreeSet<&str> = self
                .many
                .iter()
                .filter(|e| usize::from(e.status) == status)
                .filter_map(|e| e.seen["pod"].as_str())
                .collect();
            if seen.len() != pods {
                return Err(format!(
                    "expected {pods} different pods for status {status}, saw {}: {seen:?}",
                    seen.len()
                ));
            }
            return Ok(());
        }
        if t.starts_with("the secure connection must verify the ") {
            // The suite checks the certificate's first DNS name and
            // VerifyHostname; curl with the Secret's certificate as the
            // only CA checks the chain and the name.
            let host = &q[0];
            let ex = self.exchange()?.clone();
            let (_, _, crt) = self
                .p
                .secrets
                .iter()
                .find(|(_, h, _)| h == host)
                .ok_or_else(|| format!("no Secret for {host}"))?;
            let address = self.address()?.to_string();
            run_curl(
                self.lab,
                &curl(&address, "GET", &ex.url, 1, Tls::Verify(crt)),
            )
            .map_err(|e| format!("the certificate does not verify {host}: {e}"))?;
            return Ok(());
        }
        if t.starts_with("the response status-code must be ") {
            let want = num(0)?;
            let ex = self.exchange()?;
            if usize::from(ex.status) != want {
                return Err(format!(
                    "expected status code {want} but {} was returned ({}; {})",
                    ex.status,
                    ex.url,
                    ex.body.trim()
                ));
            }
            return Ok(());
        }
        if t.starts_with("the response must be served by the ") {
            let pod = self.seen("pod")?;
            let service = self.service_of(&pod);
            if service.as_deref() != Some(q[0].as_str()) {
                return Err(format!(
                    "expected the request to be served by {} but pod {pod} (service {service:?}) served it",
                    q[0]
                ));
            }
            return Ok(());
        }
        if t.starts_with("the response proto must be ") {
            let ex = self.exchange()?;
            if ex.proto != q[0] {
                return Err(format!(
                    "expected response protocol {} but it was {}",
                    q[0], ex.proto
                ));
            }
            return Ok(());
        }
        if t.starts_with("the response headers must contain ") {
            let ex = self.exchange()?.clone();
            return check_headers(&step.table, |k| {
                ex.header(k).iter().map(|v| v.to_string()).collect()
            })
            .map_err(|e| format!("response: {e}; headers {:?}", ex.headers));
        }
        if t.starts_with("the request headers must contain ") {
            let ex = self.exchange()?.clone();
            return check_headers(&step.table, |k| {
                ex.seen["headers"][k.to_ascii_lowercase()]
                    .as_str()
                    .map(|v| vec![v.to_string()])
                    .unwrap_or_default()
            })
            .map_err(|e| format!("request: {e}; the pod saw {}", ex.seen["headers"]));
        }
        for field in ["method", "path", "proto", "host"] {
            if t.starts_with(&format!("the request {field} must be ")) {
                let mut want = q[0].clone();
                if field == "path" && !want.starts_with('/') {
                    want.insert(0, '/');
                }
                let seen = self.seen(field)?;
                if seen != want {
                    return Err(format!(
                        "expected the request {field} to be {want} but it was {seen}"
                    ));
                }
                return Ok(());
            }
        }
        Err("step not implemented by the harness".into())
    }
}

/// A `| key | value |` table (header row first); value `*` means present.
fn check_headers(
    table: &[Vec<String>],
    values: impl Fn(&str) -> Vec<String>,
) -> Result<(), String> {
    if table.len() < 2 || table[0] != ["key", "value"] {
        return Err(format!("expected a key/value table, got {table:?}"));
    }
    for row in &table[1..] {
        let (key, want) = (&row[0], &row[1]);
        let got = values(key);
        if got.is_empty() {
            return Err(format!("no {key} header"));
        }
        if want != "*" && !got.iter().any(|v| v == want) {
            return Err(format!("{key} is {got:?}, not {want}"));
        }
    }
    Ok(())
}

/// Runs every scenario of a feature (its Background first, each time);
/// returns (scenarios, scenarios failed, failures).
fn run_feature(lab: &Lab, p: &Prepared) -> (usize, usize, Vec<String>) {
    let mut failures = Vec::new();
    for s in &p.feature.scenarios {
        if let Err(e) = run_scenario(lab, p, s) {
            failures.push(format!("{}: {}\n    {e}", p.feature.name, s.name));
        }
    }
    let failed = failures.len();
    // The suite deletes the scenario's namespace; here the Ingresses go.
    for (name, _) in &p.ingresses {
        lab.ok(&["delete", &format!("ingress/{}/{name}", p.namespace)]);
    }
    if let Err(e) = wait_deleted(lab, p) {
        failures.push(format!(
            "{}: after deleting its Ingresses: {e}",
            p.feature.name
        ));
    }
    (p.feature.scenarios.len(), failed, failures)
}

/// Waits until the lab no longer lists the feature's Ingresses and every
/// node's ingress has dropped them.
fn wait_deleted(lab: &Lab, p: &Prepared) -> Result<(), String> {
    let start = Instant::now();
    while p
        .ingresses
        .iter()
        .any(|(name, _)| status_addresses(lab, &p.namespace, name).is_some())
    {
        if start.elapsed() > Duration::from_secs(10) {
            return Err("the lab still lists them after 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_routed(lab, owned_count(lab))
}

fn run_scenario(lab: &Lab, p: &Prepared, s: &Scenario) -> Result<(), String> {
    let mut run = Run::new(lab, p);
    for step in p.feature.background.iter().chain(&s.steps) {
        run.step(step)
            .map_err(|e| format!("step (line {}) {:?}: {e}", step.line, step.text))?;
    }
    Ok(())
}

/// One docs example row, read from the data file.
struct DocsPathRow {
    /// (path, pathType)
    paths: Vec<(String, String)>,
    requests: Vec<String>,
    /// 1-based index into `paths`, or None: no match.
    served_by: Option<usize>,
}

/// One row of the docs' hostname table: (rule host, Host header, served by).
type DocsHostRow = (String, String, Option<usize>);

fn unquote(s: &str) -> String {
    s.trim().trim_matches('`').to_string()
}

fn docs_rows(f: &Feature) -> (Vec<DocsPathRow>, Vec<DocsHostRow>) {
    let served = |ex: &[(String, String)]| -> Option<usize> {
        let v = &ex.iter().find(|(k, _)| k == "served by").unwrap().1;
        v.parse().ok()
    };
    let col = |ex: &[(String, String)], name: &str| -> String {
        ex.iter().find(|(k, _)| k == name).unwrap().1.clone()
    };
    let mut paths = Vec::new();
    let mut hosts = Vec::new();
    for s in &f.scenarios {
        let ex = s.example.as_slice();
        if s.name.starts_with("Path types") {
            let kind = col(ex, "Kind");
            let row_paths = col(ex, "Path(s)")
                .split(',')
                .map(|p| match p.split_once('(') {
                    Some((path, t)) => (unquote(path), t.trim_end_matches(')').to_string()),
                    None => (unquote(p), kind.clone()),
                })
                .collect();
            let requests = match col(ex, "Request path(s)").as_str() {
                "(all paths)" => vec!["/".to_string(), "/anything/at/all".to_string()],
                r => r.split(',').map(unquote).collect(),
            };
            paths.push(DocsPathRow {
                paths: row_paths,
                requests,
                served_by: served(ex),
            });
        } else {
            hosts.push((
                unquote(&col(ex, "Host")),
                unquote(&col(ex, "Host header")),
                served(ex),
            ));
        }
    }
    (paths, hosts)
}

/// The docs' tables as one Ingress: a host `row-N.docs.example` per path
/// row (its paths to Services docs-1, docs-2, ... in order), and each
/// host-table host to docs-1.
fn docs_prepared(f: Feature) -> Prepared {
    let (paths, hosts) = docs_rows(&f);
    let ns = "conformance-docs".to_string();
    let backend = |i: usize| format!("{{service: {{name: docs-{i}, port: {{number: 8080}}}}}}");
    let mut rules = String::new();
    for (r, row) in paths.iter().enumerate() {
        rules.push_str(&format!(
            "  - host: row-{}.docs.example\n    http:\n      paths:\n",
            r + 1
        ));
        for (i, (path, t)) in row.paths.iter().enumerate() {
            rules.push_str(&format!(
                "      - {{path: \"{path}\", pathType: {t}, backend: {}}}\n",
                backend(i + 1)
            ));
        }
    }
    let host_rules: BTreeSet<&String> = hosts.iter().map(|(h, _, _)| h).collect();
    for h in host_rules {
        rules.push_str(&format!(
            "  - host: \"{h}\"\n    http:\n      paths:\n      - {{path: /, pathType: Prefix, backend: {}}}\n",
            backend(1)
        ));
    }
    let text = format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: docs\n  namespace: {ns}\nspec:\n  rules:\n{rules}"
    );
    let mut unique = Vec::new();
    for b in backends_of("docs", &text) {
        if !unique.contains(&b) {
            unique.push(b);
        }
    }
    Prepared {
        feature: f,
        namespace: ns,
        ingresses: vec![("docs".into(), text)],
        backends: unique,
        secrets: Vec::new(),
    }
}

/// The docs' rows in the lab: (rows, failures).
fn run_docs(lab: &Lab, p: &Prepared) -> (usize, Vec<String>) {
    let mut run = Run::new(lab, p);
    let setup = run.apply("docs").and_then(|()| {
        run.step(&Step {
            text: "The Ingress status shows the IP address or FQDN where it is exposed".into(),
            doc: None,
            table: Vec::new(),
            line: 0,
        })
    });
    if let Err(e) = setup {
        return (1, vec![format!("docs: {e}")]);
    }
    let (paths, hosts) = docs_rows(&p.feature);
    let mut cases: Vec<(String, String, String, Option<String>)> = Vec::new();
    for (r, row) in paths.iter().enumerate() {
        for req in &row.requests {
            cases.push((
                format!("path row {}: {:?} request {req}", r + 1, row.paths),
                format!("row-{}.docs.example", r + 1),
                req.clone(),
                row.served_by.map(|i| format!("docs-{i}")),
            ));
        }
    }
    for (host, header, served) in &hosts {
        cases.push((
            format!("host {host}, Host header {header}"),
            header.clone(),
            "/".into(),
            served.map(|i| format!("docs-{i}")),
        ));
    }
    let mut failures = Vec::new();
    for (what, host, path, want) in &cases {
        let checked = (|| -> Result<(), String> {
            let address = run.address()?.to_string();
            let ex = round_trip(lab, &address, "GET", "http", host, path)?;
            let got = match ex.status {
                404 => None,
                200 => run.service_of(ex.seen["pod"].as_str().unwrap_or("")),
                s => return Err(format!("status {s}: {}", ex.body.trim())),
            };
            if got != *want {
                return Err(format!(
                    "served by {got:?}, want {want:?} (status {})",
                    ex.status
                ));
            }
            Ok(())
        })();
        if let Err(e) = checked {
            failures.push(format!("Ingress docs examples: {what}\n    {e}"));
        }
    }
    lab.ok(&["delete", &format!("ingress/{}/docs", p.namespace)]);
    if let Err(e) = wait_deleted(lab, p) {
        failures.push(format!("docs: after deleting the Ingress: {e}"));
    }
    (cases.len(), failures)
}

/// No root needed: the feature files read as the suite's runner would
/// count them, outlines expanded per Examples row, and every step is one
/// the harness implements (a step it does not know would fail the lab run).
#[test]
fn the_feature_files_read_into_the_suites_scenarios() {
    let counts: Vec<(String, usize, usize)> = FEATURES
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(conformance_file(&format!("{f}.feature"))).unwrap();
            let feature = gherkin::parse(&text).unwrap();
            (
                feature.name,
                feature.background.len(),
                feature.scenarios.len(),
            )
        })
        .collect();
    let want = [
        ("Default backend", 3, 6),
        ("Host rules", 4, 6),
        ("Ingress class", 0, 1),
        ("Load Balancing", 4, 1),
        ("Path rules", 2, 16),
    ];
    let got: Vec<(&str, usize, usize)> = counts
        .iter()
        .map(|(n, b, s)| (n.as_str(), *b, *s))
        .collect();
    assert_eq!(got, want);

    let text = std::fs::read_to_string(conformance_file("default_backend.feature")).unwrap();
    let f = gherkin::parse(&text).unwrap();
    let row4 = &f.scenarios[3];
    let texts: Vec<&str> = row4.steps.iter().map(|s| s.text.as_str()).collect();
    assert_eq!(
        texts[0],
        r#"I send a "PUT" request to http://""/"resource""#
    );
    assert!(texts.contains(&r#"the request path must be "resource""#));
    // Table placeholders that are not Examples columns stay as written.
    assert!(texts.contains(&"the response headers must contain <key> with matching <value>"));
    assert_eq!(row4.steps[4].table[1], ["Content-Length", "*"]);
    assert!(
        f.background[1]
            .doc
            .as_deref()
            .unwrap()
            .starts_with("defaultBackend:\n  service:")
    );

    let docs = std::fs::read_to_string(conformance_file("ingress_docs_examples.feature")).unwrap();
    let (paths, hosts) = docs_rows(&gherkin::parse(&docs).unwrap());
    assert_eq!((paths.len(), hosts.len()), (18, 3));
    let mixed = &paths[17];
    assert_eq!(
        mixed.paths,
        [
            ("/foo".to_string(), "Prefix".to_string()),
            ("/foo".to_string(), "Exact".to_string())
        ]
    );
    assert_eq!(mixed.served_by, Some(2));
    assert_eq!(paths[0].requests, ["/", "/anything/at/all"]);
    assert_eq!(
        hosts[1],
        ("*.foo.com".into(), "baz.bar.foo.com".into(), None)
    );
}

#[test]
fn the_ingress_conformance_suite_and_the_docs_examples_pass_in_a_lab() {
    if !can_run() {
        return;
    }
    let started = Instant::now();
    let certs = tempfile::tempdir().unwrap();
    let features: Vec<Prepared> = FEATURES.iter().map(|f| prepare(f, certs.path())).collect();
    let docs_text =
        std::fs::read_to_string(conformance_file("ingress_docs_examples.feature")).unwrap();
    let docs = docs_prepared(gherkin::parse(&docs_text).unwrap());
    let all: Vec<&Prepared> = features.iter().chain([&docs]).collect();
    let manifest = certs.path().join("conformance-backends.yaml");
    std::fs::write(&manifest, lab_manifest(&all)).unwrap();
    let seed = repo().join("examples/nginx-web.yaml").display().to_string();
    let lab = Lab::up("e2econf", &[&seed, manifest.to_str().unwrap()], &[]);
    eprintln!("lab up after {:?}", started.elapsed());

    let mut failures = Vec::new();
    let mut summary = Vec::new();
    for p in &features {
        let t = Instant::now();
        let (n, failed, f) = run_feature(&lab, p);
        summary.push(format!(
            "{}: {} scenarios, {} passed ({:?})",
            p.feature.name,
            n,
            n - failed,
            t.elapsed()
        ));
        failures.extend(f);
    }
    let (n, f) = run_docs(&lab, &docs);
    summary.push(format!(
        "{}: {} requests (one per request path of each row), {} passed",
        docs.feature.name,
        n,
        n - f.len().min(n)
    ));
    failures.extend(f);
    eprintln!("{}\nall in {:?}", summary.join("\n"), started.elapsed());
    assert!(
        failures.is_empty(),
        "{} failed:\n{}\n\n{}",
        failures.len(),
        failures.join("\n"),
        summary.join("\n")
    );
}
