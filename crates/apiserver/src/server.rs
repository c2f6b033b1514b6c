//! The API server process: follows a manifests directory with ferry's
//! manifests source (the lab's controller writes it), keeps the [`Store`],
//! and answers HTTP: discovery, get, list (`limit`/`continue`, selectors),
//! watch (newline-delimited events, `resourceVersion`, bookmarks,
//! `timeoutSeconds`, an ERROR event with a 410 Status when the version is
//! too old), and merge patches of objects and of their status. Writes are
//! kept in a file so they survive a restart.
//!
//! Touches sockets and files.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use ferry_httpd::{ChannelBody, EitherBody, Request, Response, StatusCode, header};
use ferry_model::{Kind, ObjectKey};
use ferry_source::{Feed, FeedOptions, SourceError};
use http_body_util::{BodyExt, Either, Full, Limited};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::discovery;
use crate::resources::{self, Resource, Target};
use crate::select::Selector;
use crate::store::{ApiError, Store};

/// How the server runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// The manifests it serves (a directory, as agents watch it).
    pub manifests: PathBuf,
    pub listen: SocketAddr,
    /// Where writes made through the API are kept (None: in memory only).
    pub patches_file: Option<PathBuf>,
    /// Watch events kept for resuming; older versions get 410.
    pub max_events: usize,
    /// A BOOKMARK this often on idle watches that allow them.
    pub bookmark_interval: Duration,
    /// Where the last resourceVersion is kept: a restarted server numbers
    /// on from it, as etcd's revision survives a restart, and a watch
    /// from before the restart gets 410 (None: start from 0).
    pub resource_version_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("source: {0}")]
    Source(#[from] SourceError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {why}")]
    Patches { path: PathBuf, why: String },
}

struct Shared {
    store: Mutex<Store>,
    version: watch::Sender<u64>,
    config: Config,
}

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Store> {
    shared.store.lock().unwrap_or_else(|p| p.into_inner())
}

/// The patches file: a list of {kind, namespace, name, patch}.
fn load_patches(path: &PathBuf) -> Result<BTreeMap<ObjectKey, Value>, ServerError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => {
            return Err(ServerError::Patches {
                path: path.clone(),
                why: e.to_string(),
            });
        }
    };
    let list: Vec<Value> = serde_json::from_str(&text).map_err(|e| ServerError::Patches {
        path: path.clone(),
        why: e.to_string(),
    })?;
    Ok(list
        .into_iter()
        .filter_map(|v| {
            let kind = Kind::ALL
                .iter()
                .copied()
                .find(|k| k.as_str() == v["kind"].as_str().unwrap_or(""))?;
            let key = ObjectKey::new(
                kind,
                v["namespace"].as_str().unwrap_or(""),
                v["name"].as_str().unwrap_or(""),
            );
            Some((key, v["patch"].clone()))
        })
        .collect())
}

fn save_patches(path: &PathBuf, patches: &BTreeMap<ObjectKey, Value>) {
    let list: Vec<Value> = patches
        .iter()
        .map(|(k, p)| {
            json!({"kind": k.kind.as_str(), "namespace": &*k.name.namespace, "name": &*k.name.name, "patch": p})
        })
        .collect();
    let tmp = path.with_extension("tmp");
    if let Err(e) = std::fs::write(&tmp, Value::from(list).to_string())
        .and_then(|()| std::fs::rename(&tmp, path))
    {
        tracing::warn!(path = %path.display(), error = %e, "cannot keep the API writes");
    }
}

/// Runs the server until the task is dropped.
pub async fn run(config: Config) -> Result<(), ServerError> {
    let feed = Feed::manifests(
        std::slice::from_ref(&config.manifests),
        FeedOptions::default(),
    )?;
    let mut store = Store::new(config.max_events);
    store.set_time(now());
    if let Some(path) = &config.resource_version_file {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let rv = text.trim().parse().map_err(|e| ServerError::Patches {
                    path: path.clone(),
                    why: format!("not a resourceVersion: {e}"),
                })?;
                store.restart_after(rv);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(ServerError::Patches {
                    path: path.clone(),
                    why: e.to_string(),
                });
            }
        }
    }
    store.sync(&feed.latest().state, None);
    if let Some(path) = &config.patches_file {
        store.restore_patches(load_patches(path)?);
    }
    // The first load's events stay in the log (as etcd keeps its history
    // until compaction): a watch from an object's own version works.
    let (version, _) = watch::channel(store.resource_version());
    let shared = Arc::new(Shared {
        store: Mutex::new(store),
        version,
        config: config.clone(),
    });
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: config.listen,
            source,
        })?;
    tracing::info!(listen = %config.listen, manifests = %config.manifests.display(), "API server serving");
    if let Some(path) = config.resource_version_file.clone() {
        tokio::spawn(keep_resource_version(path, shared.version.subscribe()));
    }
    let mut follower = feed.follow();
    let following = shared.clone();
    tokio::spawn(async move {
        let _feed = feed;
        let mut first = true;
        while let Some(snapshot) = follower.next().await {
            let changed = (!first).then(|| snapshot.changes.objects.iter().cloned().collect());
            first = false;
            let rv = {
                let mut s = lock(&following);
                s.set_time(now());
                s.sync(&snapshot.state, changed);
                s.resource_version()
            };
            following.version.send_replace(rv);
        }
    });
    let limits = ferry_httpd::Limits {
        // Every agent holds one watch per kind it follows, each on a
        // connection of its own.
        max_connections: 1024,
        max_per_client: 128,
        header_timeout: Duration::from_secs(30),
    };
    ferry_httpd::serve_with(listener, limits, move |req, _peer| {
        let shared = shared.clone();
        async move { handle(shared, req).await }
    })
    .await;
    Ok(())
}

/// Writes every new resourceVersion to `path` (atomically).
async fn keep_resource_version(path: PathBuf, mut version: watch::Receiver<u64>) {
    loop {
        let rv = *version.borrow_and_update();
        let tmp = path.with_extension("tmp");
        if let Err(e) =
            std::fs::write(&tmp, format!("{rv}\n")).and_then(|()| std::fs::rename(&tmp, &path))
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot keep the resourceVersion");
        }
        if version.changed().await.is_err() {
            return;
        }
    }
}

/// Now, as the API server stamps objects.
fn now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    ferry_model::k8s_openapi::jiff::Timestamp::new(secs, 0)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

fn json_response(status: u16, body: &Value) -> Response<EitherBody> {
    let mut r = Response::new(Either::Left(Full::new(Bytes::from(body.to_string()))));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

fn error(e: &ApiError) -> Response<EitherBody> {
    json_response(e.code_and_reason().0, &e.status())
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or(())
                {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query(req: &Request<ferry_httpd::Incoming>) -> BTreeMap<String, String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
        .collect()
}

async fn handle(shared: Arc<Shared>, req: Request<ferry_httpd::Incoming>) -> Response<EitherBody> {
    let path = req.uri().path().to_string();
    let Some(target) = resources::parse_path(&path) else {
        return error(&ApiError::NoSuchPath(path));
    };
    let method = req.method().clone();
    let q = query(&req);
    match (method.as_str(), target) {
        ("GET", Target::Version) => json_response(200, &discovery::version()),
        ("GET", Target::CoreVersions) => json_response(
            200,
            &discovery::core_versions(&shared.config.listen.to_string()),
        ),
        ("GET", Target::Groups) => json_response(200, &discovery::groups_list()),
        ("GET", Target::Group(g)) => json_response(200, &discovery::group_doc(&g)),
        ("GET", Target::Resources { group, version }) => {
            json_response(200, &discovery::resource_list(&group, &version))
        }
        (
            "GET",
            Target::Object {
                resource,
                namespace,
                name: None,
                ..
            },
        ) => {
            let selector = match Selector::parse(
                resource.kind,
                q.get("labelSelector").map(String::as_str),
                q.get("fieldSelector").map(String::as_str),
            ) {
                Ok(s) => s,
                Err(why) => return error(&ApiError::BadRequest(why)),
            };
            if matches!(q.get("watch").map(String::as_str), Some("1" | "true")) {
                watch_response(shared, resource, namespace, selector, &q)
            } else {
                list_response(&shared, resource, namespace.as_deref(), &selector, &q)
            }
        }
        (
            "GET",
            Target::Object {
                resource,
                namespace,
                name: Some(name),
                ..
            },
        ) => {
            let key = ObjectKey::new(resource.kind, namespace.unwrap_or_default(), name.as_str());
            match lock(&shared).get(&key) {
                Some(o) => json_response(200, &o),
                None => error(&ApiError::NotFound {
                    kind: resource.kind,
                    name,
                }),
            }
        }
        (
            m @ ("PATCH" | "PUT"),
            Target::Object {
                resource,
                namespace,
                name: Some(name),
                status,
            },
        ) => {
            let content_type = req
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let is_put = m == "PUT";
            if is_put && !status {
                return error(&ApiError::Unsupported(
                    "this lab API server takes PUT only on the status subresource".into(),
                ));
            }
            if !is_put
                && !content_type.starts_with("application/merge-patch+json")
                && !content_type.starts_with("application/strategic-merge-patch+json")
            {
                return error(&ApiError::Unsupported(format!(
                    "patch type {content_type:?}: this lab API server takes merge and strategic merge patches"
                )));
            }
            let body = match Limited::new(req.into_body(), 1 << 20).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => return error(&ApiError::BadRequest(format!("request body: {e}"))),
            };
            let patch: Value = match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(e) => return error(&ApiError::BadRequest(format!("request body: {e}"))),
            };
            let key = ObjectKey::new(resource.kind, namespace.unwrap_or_default(), name.as_str());
            let result = {
                let mut s = lock(&shared);
                let r = s.patch(&key, &patch, status);
                if r.is_ok()
                    && let Some(path) = &shared.config.patches_file
                {
                    save_patches(path, s.patches());
                }
                (r, s.resource_version())
            };
            shared.version.send_replace(result.1);
            match result.0 {
                Ok(o) => json_response(200, &o),
                Err(e) => error(&e),
            }
        }
        (m, _) => json_response(
            405,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": format!("{m} is not supported here"), "reason": "MethodNotAllowed", "code": 405}),
        ),
    }
}

fn list_response(
    shared: &Shared,
    resource: &'static Resource,
    namespace: Option<&str>,
    selector: &Selector,
    q: &BTreeMap<String, String>,
) -> Response<EitherBody> {
    let limit = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(0);
    let page = match lock(shared).list(
        resource,
        namespace,
        selector,
        limit,
        q.get("continue")
            .map(String::as_str)
            .filter(|c| !c.is_empty()),
    ) {
        Ok(p) => p,
        Err(e) => return error(&e),
    };
    let mut metadata = json!({"resourceVersion": page.resource_version.to_string()});
    if let Some(c) = &page.continue_token {
        metadata["continue"] = json!(c);
    }
    let items: Vec<&Value> = page.items.iter().map(|a| &**a).collect();
    json_response(
        200,
        &json!({
            "kind": format!("{}List", resource.kind.as_str()),
            "apiVersion": resource.group_version(),
            "metadata": metadata,
            "items": items,
        }),
    )
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut s = json!({"type": kind, "object": object}).to_string();
    s.push('\n');
    Bytes::from(s)
}

/// A BOOKMARK event's object: only the kind and the resourceVersion.
fn bookmark(resource: &Resource, rv: u64) -> Value {
    json!({
        "kind": resource.kind.as_str(),
        "apiVersion": resource.group_version(),
        "metadata": {"resourceVersion": rv.to_string()},
    })
}

fn object_version(o: &Value) -> Option<u64> {
    o["metadata"]["resourceVersion"].as_str()?.parse().ok()
}

fn watch_response(
    shared: Arc<Shared>,
    resource: &'static Resource,
    namespace: Option<String>,
    selector: Selector,
    q: &BTreeMap<String, String>,
) -> Response<EitherBody> {
    let from: Option<u64> = match q.get("resourceVersion").map(String::as_str) {
        None | Some("") | Some("0") => None,
        Some(v) => match v.parse() {
            Ok(n) => Some(n),
            Err(_) => {
                return error(&ApiError::BadRequest(format!(
                    "resourceVersion {v:?} is not a version this server gave"
                )));
            }
        },
    };
    let timeout = Duration::from_secs(
        q.get("timeoutSeconds")
            .and_then(|t| t.parse().ok())
            .unwrap_or(1800)
            .min(3600),
    );
    let bookmarks = matches!(
        q.get("allowWatchBookmarks").map(String::as_str),
        Some("true" | "1")
    );
    let (tx, body) = ChannelBody::channel(64);
    let mut changes = shared.version.subscribe();
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + timeout;
        let ns = namespace.as_deref();
        let mut last = match from {
            Some(v) => v,
            None => {
                let (current, rv) = {
                    let s = lock(&shared);
                    (
                        s.current(resource.kind, ns, &selector),
                        s.resource_version(),
                    )
                };
                for o in current {
                    if tx.send(line("ADDED", &o)).await.is_err() {
                        return;
                    }
                }
                rv
            }
        };
        loop {
            let (events, rv) = {
                let s = lock(&shared);
                (
                    s.events_since(last, resource.kind, ns, &selector),
                    s.resource_version(),
                )
            };
            match events {
                Ok(events) => {
                    let mut sent = last;
                    for (kind, o) in events {
                        if let Some(v) = object_version(&o) {
                            sent = sent.max(v);
                        }
                        if tx.send(line(kind.as_str(), &o)).await.is_err() {
                            return;
                        }
                    }
                    // Progress at once, as a bookmark: the store moved on
                    // with nothing for this watch after `sent`. A client
                    // then knows it has every change of its kind up to
                    // `rv` without waiting for the idle bookmark (the
                    // lab's Ready waits for exactly that).
                    if bookmarks
                        && rv > sent
                        && tx
                            .send(line("BOOKMARK", &bookmark(resource, rv)))
                            .await
                            .is_err()
                    {
                        return;
                    }
                    last = rv;
                }
                Err(e) => {
                    let _ = tx.send(line("ERROR", &e.status())).await;
                    return;
                }
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(shared.config.bookmark_interval), if bookmarks => {
                    if tx.send(line("BOOKMARK", &bookmark(resource, last))).await.is_err() {
                        return;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => return,
            }
        }
    });
    let mut r = Response::new(Either::Right(body));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_decoded() {
        assert_eq!(
            percent_decode("type%3Dkubernetes.io%2Ftls"),
            "type=kubernetes.io/tls"
        );
        assert_eq!(percent_decode("a+b"), "a b");
        assert_eq!(percent_decode("100%"), "100%");
    }
}
