//! A fake Kubernetes API server on 127.0.0.1 for tests: it serves the read
//! paths a watching client uses, shaped as a real API server sends them.
//! No API server can run on these machines (no container engine, no
//! apiserver package), so the shapes are built from the documentation:
//!
//! - List: `GET /api/v1/services?limit=500` answers a `ServiceList` with
//!   `metadata.resourceVersion` and, when more remain, `metadata.continue`
//!   ("API Concepts", kubernetes.io/docs/reference/using-api/api-concepts/,
//!   sections "Retrieving large results sets in chunks" and "Efficient
//!   detection of changes"). That page also says a page may hold fewer
//!   items than `limit` and that only `continue` says more remain; this
//!   server serves at most [`PAGE`] items per page, so small lists page too.
//!   Items of a list carry no `apiVersion`/`kind` (the list does), as
//!   `kubectl get --raw /api/v1/services` shows.
//! - Watch: `?watch=true&resourceVersion=N&allowWatchBookmarks=true`
//!   answers a chunked stream of newline-delimited JSON events
//!   `{"type":"ADDED|MODIFIED|DELETED|BOOKMARK|ERROR","object":{...}}`
//!   with every change after N (API reference, "watch" operations and the
//!   `WatchEvent` type; the transcript in "API Concepts", "Efficient
//!   detection of changes"). A BOOKMARK's object holds only `kind`,
//!   `apiVersion` and `metadata.resourceVersion` ("Watch bookmarks").
//! - `410 Gone`: a watch from a version the server no longer has gets an
//!   ERROR event whose object is the Status
//!   `{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
//!   "message":"too old resource version: N (M)","reason":"Expired","code":410}`
//!   and the stream ends ("API Concepts", "Resource versions" / "410 Gone
//!   responses"; the message text is the one client-go's reflector logs).
//! - Field selector `type=kubernetes.io/tls` on Secrets and label selector
//!   `key in (a,b)` on ConfigMaps, the two the source uses.
//!
//! Test controls: apply/delete objects (watchers see ADDED/MODIFIED/
//! DELETED), send BOOKMARKs, expire every watch with a 410, drop watch
//! connections abruptly, stop the server and restart it on the same port
//! with a newer resource version (older ones answer 410). Every request's
//! path and query is logged.
//!
//! Touches the network: listens on 127.0.0.1 only.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// Items per list page unless [`ApiServer::set_page_size`] says otherwise
/// (fewer than any `limit` a client asks for, so that small lists page too).
pub const PAGE: usize = 2;

type Body = BoxBody<Bytes, std::io::Error>;
type Chunk = Result<Frame<Bytes>, std::io::Error>;

/// Where each kind is listed, cluster-wide: (apiVersion, kind, path).
const RESOURCES: &[(&str, &str, &str)] = &[
    ("v1", "Namespace", "/api/v1/namespaces"),
    ("v1", "Node", "/api/v1/nodes"),
    ("v1", "Service", "/api/v1/services"),
    ("v1", "Pod", "/api/v1/pods"),
    ("v1", "Secret", "/api/v1/secrets"),
    ("v1", "ConfigMap", "/api/v1/configmaps"),
    (
        "discovery.k8s.io/v1",
        "EndpointSlice",
        "/apis/discovery.k8s.io/v1/endpointslices",
    ),
    (
        "networking.k8s.io/v1",
        "Ingress",
        "/apis/networking.k8s.io/v1/ingresses",
    ),
    (
        "networking.k8s.io/v1",
        "IngressClass",
        "/apis/networking.k8s.io/v1/ingressclasses",
    ),
];

fn resource_of(kind: &str) -> &'static (&'static str, &'static str, &'static str) {
    RESOURCES
        .iter()
        .find(|r| r.1 == kind)
        .unwrap_or_else(|| panic!("the fake API server does not serve {kind}"))
}

struct Watch {
    path: String,
    selector: Selector,
    bookmarks: bool,
    tx: mpsc::UnboundedSender<Chunk>,
}

#[derive(Default)]
struct Inner {
    rv: u64,
    /// Per list path: (namespace, name) -> object as stored.
    objects: BTreeMap<String, BTreeMap<(String, String), Value>>,
    /// Per list path: (resourceVersion, type, object).
    history: BTreeMap<String, Vec<(u64, &'static str, Value)>>,
    /// Watches from a version below this one get 410.
    oldest: u64,
    watches: Vec<Watch>,
    /// While paused, changes are stored but not sent (a gap in the watch).
    paused: bool,
    /// Items per list page at most.
    page: usize,
    requests: Vec<String>,
}

/// The server; dropping it stops it.
pub struct ApiServer {
    inner: Arc<Mutex<Inner>>,
    runtime: tokio::runtime::Runtime,
    addr: SocketAddr,
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl ApiServer {
    /// Starts serving `objects` (JSON, with apiVersion and kind) on a free
    /// loopback port.
    pub fn start(objects: &[Value]) -> ApiServer {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let inner = Arc::new(Mutex::new(Inner {
            rv: 1000,
            oldest: 1000,
            page: PAGE,
            ..Inner::default()
        }));
        let listener =
            runtime.block_on(async { tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap() });
        let addr = listener.local_addr().unwrap();
        let server = ApiServer {
            inner,
            runtime,
            addr,
            tasks: Arc::default(),
        };
        for o in objects {
            server.apply(o.clone());
        }
        server.serve(listener);
        server
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig naming this server (plain HTTP, no credentials).
    pub fn kubeconfig(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster: {{server: \"{}\"}}
users:
- name: tester
  user: {{}}
contexts:
- name: fake
  context: {{cluster: fake, user: tester}}
current-context: fake
",
            self.url()
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let inner = self.inner.clone();
        let tasks = self.tasks.clone();
        let accept = self.runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let inner = inner.clone();
                let conn = tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let inner = inner.clone();
                        async move { Ok::<_, Infallible>(handle(&inner, &req)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
                tasks.lock().unwrap().push(conn);
            }
        });
        self.tasks.lock().unwrap().push(accept);
    }

    /// Serves at most `n` items per list page.
    pub fn set_page_size(&self, n: usize) {
        self.inner.lock().unwrap().page = n;
    }

    /// Every request so far, as `path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.inner.lock().unwrap().requests.clone()
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.inner.lock().unwrap().rv
    }

    /// Creates or replaces an object, as the server stores it: a new
    /// resourceVersion, a uid, managedFields and kubectl's
    /// last-applied-configuration annotation (as `kubectl apply` leaves it).
    pub fn apply(&self, mut object: Value) {
        let mut inner = self.inner.lock().unwrap();
        inner.rv += 1;
        let rv = inner.rv;
        let (_, kind, path) = resource_of(object["kind"].as_str().unwrap());
        let ns = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let name = object["metadata"]["name"].as_str().unwrap().to_string();
        let applied = object.to_string();
        let meta = object["metadata"].as_object_mut().unwrap();
        meta.insert("resourceVersion".into(), json!(rv.to_string()));
        meta.insert("uid".into(), json!(format!("uid-{kind}-{ns}-{name}")));
        meta.insert(
            "managedFields".into(),
            json!([{"manager": "kubectl-client-side-apply", "operation": "Update",
                    "apiVersion": "v1", "time": "2026-12-01T00:00:00Z",
                    "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {}, "f:spec": {}}}]),
        );
        let annotations = meta.entry("annotations").or_insert_with(|| json!({}));
        annotations["kubectl.kubernetes.io/last-applied-configuration"] = json!(applied);
        let objects = inner.objects.entry(path.to_string()).or_default();
        let kind_of_event = if objects.contains_key(&(ns.clone(), name.clone())) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        objects.insert((ns, name), object.clone());
        inner.record(path, rv, kind_of_event, object);
    }

    /// Deletes an object (the DELETED event carries its last state with a
    /// new resourceVersion, as the server sends it).
    pub fn delete(&self, kind: &str, namespace: &str, name: &str) {
        let mut inner = self.inner.lock().unwrap();
        let (_, _, path) = resource_of(kind);
        let Some(mut object) = inner
            .objects
            .get_mut(*path)
            .and_then(|o| o.remove(&(namespace.to_string(), name.to_string())))
        else {
            panic!("no {kind} {namespace}/{name} to delete");
        };
        inner.rv += 1;
        let rv = inner.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        inner.record(path, rv, "DELETED", object);
    }

    /// Sends a BOOKMARK at the current version to every watch that asked for them.
    pub fn bookmark(&self) {
        let inner = self.inner.lock().unwrap();
        for w in &inner.watches {
            if !w.bookmarks {
                continue;
            }
            let (api_version, kind, _) = RESOURCES.iter().find(|r| r.2 == w.path).unwrap();
            let event = json!({"type": "BOOKMARK", "object": {
                "kind": kind, "apiVersion": api_version,
                "metadata": {"resourceVersion": inner.rv.to_string()}}});
            let _ = w.tx.send(Ok(Frame::data(line(&event))));
        }
    }

    /// Changes made while paused reach no watch (a gap, as when events
    /// are lost); resume with [`ApiServer::expire_watches`].
    pub fn pause(&self) {
        self.inner.lock().unwrap().paused = true;
    }

    /// Forgets every version up to now and ends every watch with a
    /// `410 Gone` ERROR event: the clients must list again.
    pub fn expire_watches(&self) {
        let mut inner = self.inner.lock().unwrap();
        inner.oldest = inner.rv + 1;
        inner.paused = false;
        let message = format!("too old resource version: {} ({})", 0, inner.oldest);
        for w in inner.watches.drain(..) {
            let _ = w.tx.send(Ok(Frame::data(line(&gone(&message)))));
        }
    }

    /// Cuts every watch connection mid-stream (no final chunk).
    pub fn drop_watches(&self) {
        let mut inner = self.inner.lock().unwrap();
        for w in inner.watches.drain(..) {
            let _ = w.tx.send(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "dropped by the test",
            )));
        }
    }

    /// How many watches are open.
    pub fn open_watches(&self) -> usize {
        let mut inner = self.inner.lock().unwrap();
        inner.watches.retain(|w| !w.tx.is_closed());
        inner.watches.len()
    }

    /// Stops listening and closes every connection (an API server outage).
    pub fn stop(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
        self.inner.lock().unwrap().watches.clear();
    }

    /// Serves again on the same port, as a restarted API server whose
    /// watch cache starts at a newer resourceVersion: watches from before
    /// get 410.
    pub fn restart(&self) {
        {
            let mut inner = self.inner.lock().unwrap();
            inner.rv += 100;
            inner.oldest = inner.rv;
            inner.paused = false;
        }
        let addr = self.addr;
        let listener = self.runtime.block_on(async move {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.set_reuseaddr(true).unwrap();
            socket.bind(addr).unwrap();
            socket.listen(64).unwrap()
        });
        self.serve(listener);
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Inner {
    fn record(&mut self, path: &str, rv: u64, kind: &'static str, object: Value) {
        self.history
            .entry(path.to_string())
            .or_default()
            .push((rv, kind, object.clone()));
        if self.paused {
            return;
        }
        let event = json!({"type": kind, "object": object});
        self.watches.retain(|w| !w.tx.is_closed());
        for w in &self.watches {
            if w.path == path && w.selector.matches(&object) {
                let _ = w.tx.send(Ok(Frame::data(line(&event))));
            }
        }
    }
}

fn line(v: &Value) -> Bytes {
    Bytes::from(format!("{v}\n"))
}

fn gone(message: &str) -> Value {
    json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": "Expired", "code": 410}})
}

/// The selectors the source sends: `field=value` (fields) and
/// `key in (a,b)` / `key=value` (labels).
#[derive(Clone, Default)]
struct Selector {
    fields: Vec<(String, String)>,
    labels: Vec<(String, Vec<String>)>,
}

impl Selector {
    fn parse(query: &BTreeMap<String, String>) -> Selector {
        let mut s = Selector::default();
        for term in query
            .get("fieldSelector")
            .into_iter()
            .flat_map(|f| f.split(','))
        {
            let (k, v) = term.split_once('=').expect("field=value");
            s.fields.push((k.to_string(), v.to_string()));
        }
        if let Some(labels) = query.get("labelSelector") {
            if let Some((k, set)) = labels.split_once(" in ") {
                let values = set
                    .trim_matches(|c| c == '(' || c == ')')
                    .split(',')
                    .map(|v| v.trim().to_string())
                    .collect();
                s.labels.push((k.trim().to_string(), values));
            } else {
                let (k, v) = labels.split_once('=').expect("key=value");
                s.labels.push((k.to_string(), vec![v.to_string()]));
            }
        }
        s
    }

    fn matches(&self, o: &Value) -> bool {
        self.fields.iter().all(|(k, v)| {
            let mut cur = o;
            for part in k.split('.') {
                cur = &cur[part];
            }
            cur.as_str() == Some(v)
        }) && self.labels.iter().all(|(k, values)| {
            o["metadata"]["labels"][k]
                .as_str()
                .is_some_and(|v| values.iter().any(|x| x == v))
        })
    }
}

fn decode_query(q: &str) -> BTreeMap<String, String> {
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), percent_decode(v)))
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

fn full(status: StatusCode, body: Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(
            Full::new(line(&body))
                .map_err(|never: Infallible| match never {})
                .boxed(),
        )
        .unwrap()
}

fn handle(inner: &Mutex<Inner>, req: &Request<hyper::body::Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let query = decode_query(req.uri().query().unwrap_or(""));
    let mut inner = inner.lock().unwrap();
    inner.requests.push(format!(
        "{path}?{}",
        req.uri().query().map(percent_decode).unwrap_or_default()
    ));
    let Some((api_version, kind, _)) = RESOURCES.iter().find(|r| r.2 == path) else {
        return full(
            StatusCode::NOT_FOUND,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "message": "the server could not find the requested resource",
                   "reason": "NotFound", "code": 404}),
        );
    };
    let selector = Selector::parse(&query);
    let watching = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
    if !watching {
        // A list: every page is cut from the state at the first page's
        // version (the continue token carries it and the offset).
        let (offset, at) = match query.get("continue") {
            Some(token) => {
                let (o, rv) = token.split_once(':').expect("offset:rv");
                (o.parse::<usize>().unwrap(), rv.to_string())
            }
            None => (0, inner.rv.to_string()),
        };
        let limit = query
            .get("limit")
            .and_then(|l| l.parse::<usize>().ok())
            .unwrap_or(usize::MAX)
            .min(inner.page);
        let matching = || {
            inner
                .objects
                .get(&path)
                .into_iter()
                .flat_map(|m| m.values())
                .filter(|o| selector.matches(o))
        };
        let total = matching().count();
        let page: Vec<Value> = matching()
            .skip(offset)
            .take(limit)
            .cloned()
            .map(|mut o| {
                let m = o.as_object_mut().unwrap();
                m.remove("apiVersion");
                m.remove("kind");
                o
            })
            .collect();
        let mut metadata = json!({"resourceVersion": at});
        if offset + page.len() < total {
            metadata["continue"] = json!(format!("{}:{at}", offset + page.len()));
        }
        return full(
            StatusCode::OK,
            json!({"apiVersion": api_version, "kind": format!("{kind}List"),
                   "metadata": metadata, "items": page}),
        );
    }
    let from: u64 = query
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(inner.rv);
    let (tx, rx) = mpsc::unbounded_channel::<Chunk>();
    if from < inner.oldest {
        let message = format!("too old resource version: {from} ({})", inner.oldest);
        let _ = tx.send(Ok(Frame::data(line(&gone(&message)))));
        drop(tx);
    } else {
        for (rv, t, o) in inner.history.get(&path).into_iter().flatten() {
            if *rv > from && selector.matches(o) {
                let _ = tx.send(Ok(Frame::data(line(&json!({"type": t, "object": o})))));
            }
        }
        inner.watches.push(Watch {
            path: path.clone(),
            selector,
            bookmarks: query
                .get("allowWatchBookmarks")
                .is_some_and(|v| v == "true"),
            tx,
        });
    }
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .header("transfer-encoding", "chunked")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap()
}
