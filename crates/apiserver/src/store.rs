//! What the API server holds: every object as served (the source's object
//! with the writes made through the API merged over it, a resourceVersion,
//! a uid), one resourceVersion counter for the whole store, and a bounded
//! log of watch events. A watch resumes from any version still in the log
//! and gets `410 Gone` (Expired) for an older one, as from a real API
//! server after etcd compaction. Pure: files and sockets are the server's.

use std::collections::{BTreeMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use ferry_model::{ClusterState, Kind, ObjectKey};
use serde_json::{Value, json};

use crate::resources::{self, Resource};
use crate::select::Selector;

/// A watch event's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as watches see it.
#[derive(Clone, Debug)]
pub struct Event {
    pub rv: u64,
    pub key: ObjectKey,
    pub kind: EventType,
    /// The object after (for DELETED: as it was last, with the deletion's version).
    pub object: Arc<Value>,
    /// The object before (None for ADDED), for selector transitions.
    pub before: Option<Arc<Value>>,
}

/// Why a request cannot be served.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{kind} {name:?} not found")]
    NotFound { kind: Kind, name: String },
    #[error("the server could not find the requested resource ({0})")]
    NoSuchPath(String),
    /// The resourceVersion or continue token is older than the log.
    #[error("too old resource version: {asked} ({oldest})")]
    Gone { asked: u64, oldest: u64 },
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Unsupported(String),
}

impl ApiError {
    /// The HTTP code and the Status reason the API server gives.
    pub fn code_and_reason(&self) -> (u16, &'static str) {
        match self {
            ApiError::BadRequest(_) => (400, "BadRequest"),
            ApiError::NotFound { .. } | ApiError::NoSuchPath(_) => (404, "NotFound"),
            ApiError::Gone { .. } => (410, "Expired"),
            ApiError::Invalid(_) => (422, "Invalid"),
            ApiError::Unsupported(_) => (415, "UnsupportedMediaType"),
        }
    }

    /// The `Status` object.
    pub fn status(&self) -> Value {
        let (code, reason) = self.code_and_reason();
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": reason,
            "code": code,
        })
    }
}

/// One page of a list.
#[derive(Clone, Debug)]
pub struct ListPage {
    pub resource_version: u64,
    pub items: Vec<Arc<Value>>,
    /// Set when more items remain.
    pub continue_token: Option<String>,
}

#[derive(Clone, Debug)]
struct Stored {
    rv: u64,
    served: Arc<Value>,
}

/// The store.
#[derive(Debug)]
pub struct Store {
    rv: u64,
    /// Watches can resume from this version or later.
    oldest: u64,
    max_events: usize,
    objects: BTreeMap<ObjectKey, Stored>,
    /// The objects as the source has them.
    source: BTreeMap<ObjectKey, Arc<Value>>,
    /// Merge patches written through the API, by object.
    patches: BTreeMap<ObjectKey, Value>,
    events: VecDeque<Event>,
    /// The time stamped on objects that arrive without a creationTimestamp.
    now: String,
    /// When each object was first seen.
    created: BTreeMap<ObjectKey, String>,
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Default::default());
            }
            let t = target.as_object_mut().expect("made an object above");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn uid(key: &ObjectKey) -> String {
    let mut h1 = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h1);
    let a = h1.finish();
    let mut h2 = std::collections::hash_map::DefaultHasher::new();
    (a, "uid").hash(&mut h2);
    let b = h2.finish();
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        b >> 52,
        b & 0xffff_ffff_ffff
    )
}

/// `key` of the continue token and back: hex of "rv/namespace/name".
fn encode_continue(rv: u64, key: &ObjectKey) -> String {
    format!("{rv}/{}/{}", key.name.namespace, key.name.name)
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn decode_continue(token: &str) -> Option<(u64, String, String)> {
    let bytes: Option<Vec<u8>> = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2)?, 16).ok())
        .collect();
    let text = String::from_utf8(bytes?).ok()?;
    let mut parts = text.splitn(3, '/');
    Some((
        parts.next()?.parse().ok()?,
        parts.next()?.to_string(),
        parts.next()?.to_string(),
    ))
}

impl Store {
    /// An empty store keeping up to `max_events` watch events.
    pub fn new(max_events: usize) -> Store {
        Store {
            rv: 0,
            oldest: 0,
            max_events: max_events.max(1),
            objects: BTreeMap::new(),
            source: BTreeMap::new(),
            patches: BTreeMap::new(),
            events: VecDeque::new(),
            now: "1970-01-01T00:00:00Z".into(),
            created: BTreeMap::new(),
        }
    }

    /// A restart of a server that had reached `rv`: versions go on from
    /// there, and watches from `rv` or before get 410 (their history is
    /// gone; a relist finds what changed meanwhile, deletions included).
    pub fn restart_after(&mut self, rv: u64) {
        self.rv = self.rv.max(rv);
        self.oldest = self.oldest.max(rv + 1);
    }

    /// The current time (RFC 3339), for objects created from now on.
    pub fn set_time(&mut self, rfc3339: String) {
        self.now = rfc3339;
    }

    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// The writes made through the API (to keep across restarts).
    pub fn patches(&self) -> &BTreeMap<ObjectKey, Value> {
        &self.patches
    }

    /// Takes back writes made before a restart.
    pub fn restore_patches(&mut self, patches: BTreeMap<ObjectKey, Value>) {
        self.patches = patches;
        let keys: Vec<ObjectKey> = self.source.keys().cloned().collect();
        for key in keys {
            self.refresh(&key);
        }
    }

    /// Follows the source: the objects named by `changed` (every object
    /// when None) are taken from `state` again.
    pub fn sync(&mut self, state: &ClusterState, changed: Option<Vec<ObjectKey>>) {
        let keys: Vec<ObjectKey> = match changed {
            Some(keys) => keys,
            None => {
                let mut all: Vec<ObjectKey> = self.source.keys().cloned().collect();
                all.extend(state.objects().map(|o| o.key()));
                all.sort();
                all.dedup();
                all
            }
        };
        for key in keys {
            let now = state
                .get(&key)
                .and_then(|o| o.to_json().ok())
                .and_then(|j| serde_json::from_slice::<Value>(&j).ok())
                .map(Arc::new);
            match now {
                Some(v) => {
                    self.source.insert(key.clone(), v);
                }
                None => {
                    self.source.remove(&key);
                    self.patches.remove(&key);
                    self.created.remove(&key);
                }
            }
            self.refresh(&key);
        }
    }

    /// Makes the served object of `key` again from source and patches;
    /// records an event when it changed.
    fn refresh(&mut self, key: &ObjectKey) {
        let before = self.objects.get(key).cloned();
        let Some(source) = self.source.get(key) else {
            if let Some(old) = before {
                self.objects.remove(key);
                self.rv += 1;
                let mut last = (*old.served).clone();
                last["metadata"]["resourceVersion"] = json!(self.rv.to_string());
                self.record(key, EventType::Deleted, Arc::new(last), Some(old.served));
            }
            return;
        };
        let mut served = (**source).clone();
        if let Some(p) = self.patches.get(key) {
            merge_patch(&mut served, p);
        }
        let r = resources::of_kind(key.kind);
        served["apiVersion"] = json!(r.group_version());
        served["kind"] = json!(key.kind.as_str());
        served["metadata"]["uid"] = json!(uid(key));
        if served["metadata"]["creationTimestamp"].is_null() {
            let at = self
                .created
                .entry(key.clone())
                .or_insert_with(|| self.now.clone());
            served["metadata"]["creationTimestamp"] = json!(at);
        }
        if let Some(old) = &before {
            let mut same = served.clone();
            same["metadata"]["resourceVersion"] = old.served["metadata"]["resourceVersion"].clone();
            if same == *old.served {
                return;
            }
        }
        // A source that numbers its writes (the lab's manifests carry
        // their generation) moves the counter up to its number, so a
        // client's newest resourceVersion says which generation it has.
        let source_rv = source["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        self.rv = (self.rv + 1).max(source_rv);
        served["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let served = Arc::new(served);
        self.objects.insert(
            key.clone(),
            Stored {
                rv: self.rv,
                served: served.clone(),
            },
        );
        let kind = if before.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.record(key, kind, served, before.map(|b| b.served));
    }

    fn record(
        &mut self,
        key: &ObjectKey,
        kind: EventType,
        object: Arc<Value>,
        before: Option<Arc<Value>>,
    ) {
        self.events.push_back(Event {
            rv: self.rv,
            key: key.clone(),
            kind,
            object,
            before,
        });
        while self.events.len() > self.max_events {
            if let Some(e) = self.events.pop_front() {
                self.oldest = e.rv;
            }
        }
    }

    /// Forgets the watch history so far (after the first load: nobody
    /// could have watched it).
    pub fn compact(&mut self) {
        self.events.clear();
        self.oldest = self.rv;
    }

    pub fn get(&self, key: &ObjectKey) -> Option<Arc<Value>> {
        self.objects.get(key).map(|s| s.served.clone())
    }

    /// A write through the API: a merge patch of the object (or of its
    /// status only), checked by decoding the result as the kind.
    pub fn patch(
        &mut self,
        key: &ObjectKey,
        patch: &Value,
        status_only: bool,
    ) -> Result<Arc<Value>, ApiError> {
        let Some(current) = self.objects.get(key) else {
            return Err(ApiError::NotFound {
                kind: key.kind,
                name: key.name.to_string(),
            });
        };
        let patch = if status_only {
            json!({"status": patch.get("status").cloned().unwrap_or(Value::Null)})
        } else {
            let mut p = patch.clone();
            if let Some(m) = p.get_mut("metadata").and_then(Value::as_object_mut) {
                // Identity and versions are the server's.
                for f in ["name", "namespace", "uid", "resourceVersion"] {
                    m.remove(f);
                }
            }
            p
        };
        let mut candidate = (*current.served).clone();
        merge_patch(&mut candidate, &patch);
        let text = candidate.to_string();
        let decoded = ferry_model::decode("patch", &text);
        if let Some(e) = decoded.errors.first() {
            return Err(ApiError::Invalid(e.to_string()));
        }
        let mut merged = self.patches.remove(key).unwrap_or(Value::Null);
        if merged.is_null() {
            merged = json!({});
        }
        merge_patch(&mut merged, &patch);
        self.patches.insert(key.clone(), merged);
        self.refresh(key);
        self.get(key).ok_or_else(|| ApiError::NotFound {
            kind: key.kind,
            name: key.name.to_string(),
        })
    }

    /// One page of the objects of `resource` (in `namespace`, or all),
    /// selected, `limit` at most (0: all), after the continue token.
    pub fn list(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        selector: &Selector,
        limit: usize,
        continue_token: Option<&str>,
    ) -> Result<ListPage, ApiError> {
        let (rv, after) = match continue_token {
            Some(t) => {
                let (rv, ns, name) = decode_continue(t)
                    .ok_or_else(|| ApiError::BadRequest("invalid continue token".into()))?;
                if rv < self.oldest {
                    return Err(ApiError::Gone {
                        asked: rv,
                        oldest: self.oldest,
                    });
                }
                (rv, Some(ObjectKey::new(resource.kind, ns, name)))
            }
            None => (self.rv, None),
        };
        let mut items = Vec::new();
        let mut last = None;
        let mut more = false;
        let range = self
            .objects
            .range(ObjectKey::new(resource.kind, "", "")..)
            .take_while(|(k, _)| k.kind == resource.kind)
            .filter(|(k, _)| after.as_ref().is_none_or(|a| *k > a))
            .filter(|(k, _)| namespace.is_none_or(|ns| &*k.name.namespace == ns))
            .filter(|(_, s)| selector.matches(&s.served));
        for (k, s) in range {
            if limit > 0 && items.len() == limit {
                more = true;
                break;
            }
            items.push(s.served.clone());
            last = Some(k.clone());
        }
        Ok(ListPage {
            resource_version: rv,
            items,
            continue_token: if more {
                last.map(|k| encode_continue(rv, &k))
            } else {
                None
            },
        })
    }

    /// The events after `rv` for a watch of `kind` in `namespace` with
    /// `selector`: objects that start or stop matching are ADDED or
    /// DELETED, as the API server sends them.
    pub fn events_since(
        &self,
        rv: u64,
        kind: Kind,
        namespace: Option<&str>,
        selector: &Selector,
    ) -> Result<Vec<(EventType, Arc<Value>)>, ApiError> {
        if rv < self.oldest {
            return Err(ApiError::Gone {
                asked: rv,
                oldest: self.oldest,
            });
        }
        let mut out = Vec::new();
        for e in self.events.iter().filter(|e| e.rv > rv) {
            if e.key.kind != kind || namespace.is_some_and(|ns| *e.key.name.namespace != *ns) {
                continue;
            }
            let now = selector.matches(&e.object);
            let then = e.before.as_ref().is_some_and(|b| selector.matches(b));
            let kind = match e.kind {
                EventType::Deleted if then => EventType::Deleted,
                EventType::Deleted => continue,
                EventType::Added | EventType::Modified => match (then, now) {
                    (false, true) => EventType::Added,
                    (true, true) => EventType::Modified,
                    (true, false) => EventType::Deleted,
                    (false, false) => continue,
                },
            };
            out.push((kind, e.object.clone()));
        }
        Ok(out)
    }

    /// Every current object of `kind` as synthetic ADDED events (a watch
    /// without a resourceVersion starts with the state).
    pub fn current(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        selector: &Selector,
    ) -> Vec<Arc<Value>> {
        self.objects
            .iter()
            .filter(|(k, _)| k.kind == kind)
            .filter(|(k, _)| namespace.is_none_or(|ns| &*k.name.namespace == ns))
            .filter(|(_, s)| selector.matches(&s.served))
            .map(|(_, s)| s.served.clone())
            .collect()
    }

    /// The version at which an object last changed.
    pub fn object_version(&self, key: &ObjectKey) -> Option<u64> {
        self.objects.get(key).map(|s| s.rv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_model::{Update, decode};

    fn state(yaml: &str) -> ClusterState {
        let d = decode("t.yaml", yaml);
        assert!(d.errors.is_empty(), "{:?}", d.errors);
        ClusterState::new()
            .apply(d.objects.into_iter().map(|o| Update::Apply(o.object)))
            .0
    }

    const TWO: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: x}\nspec: {ports: [{port: 80}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: b, namespace: y, labels: {app: b}}\nspec: {ports: [{port: 80}]}\n";

    fn svc() -> &'static Resource {
        resources::of_kind(Kind::Service)
    }

    #[test]
    fn lists_page_with_continue_tokens_and_filter_by_namespace_and_labels() {
        let mut s = Store::new(100);
        s.sync(&state(TWO), None);
        let all = Selector::default();
        let page = s.list(svc(), None, &all, 1, None).unwrap();
        assert_eq!(page.items.len(), 1);
        assert_eq!(page.items[0]["metadata"]["name"], "a");
        let token = page.continue_token.clone().unwrap();
        let next = s.list(svc(), None, &all, 1, Some(&token)).unwrap();
        assert_eq!(next.items[0]["metadata"]["name"], "b");
        assert!(next.continue_token.is_none());
        assert_eq!(next.resource_version, page.resource_version);
        assert_eq!(
            s.list(svc(), Some("y"), &all, 0, None).unwrap().items.len(),
            1
        );
        let app = Selector::parse(Kind::Service, Some("app=b"), None).unwrap();
        assert_eq!(s.list(svc(), None, &app, 0, None).unwrap().items.len(), 1);
        assert_eq!(page.items[0]["kind"], "Service");
        assert_eq!(page.items[0]["apiVersion"], "v1");
        assert!(page.items[0]["metadata"]["uid"].as_str().is_some());
    }

    #[test]
    fn watches_resume_from_a_version_and_get_410_once_it_is_compacted_away() {
        let mut s = Store::new(2);
        s.sync(&state(TWO), None);
        s.compact();
        let start = s.resource_version();
        let one = "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: x}\nspec: {ports: [{port: 81}]}\n";
        s.sync(&state(one), None);
        let events = s
            .events_since(start, Kind::Service, None, &Selector::default())
            .unwrap();
        let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(kinds, ["MODIFIED", "DELETED"], "a changed, b went");
        assert_eq!(events[0].1["spec"]["ports"][0]["port"], 81);
        let after = s.resource_version();
        s.sync(&state(TWO), None);
        s.sync(&state(one), None);
        let err = s
            .events_since(start, Kind::Service, None, &Selector::default())
            .unwrap_err();
        assert!(matches!(err, ApiError::Gone { .. }), "{err:?}");
        assert_eq!(err.status()["code"], 410);
        assert!(
            s.events_since(after, Kind::Service, None, &Selector::default())
                .is_err()
        );
    }

    #[test]
    fn an_object_leaving_a_label_selector_is_deleted_for_that_watch() {
        let mut s = Store::new(100);
        s.sync(&state(TWO), None);
        let start = s.resource_version();
        let relabelled = TWO.replace("labels: {app: b}", "labels: {app: c}");
        s.sync(&state(&relabelled), None);
        let b = Selector::parse(Kind::Service, Some("app=b"), None).unwrap();
        let events = s.events_since(start, Kind::Service, None, &b).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].0, EventType::Deleted);
    }

    #[test]
    fn writes_are_merged_over_the_source_and_survive_its_changes() {
        let mut s = Store::new(100);
        s.sync(&state(TWO), None);
        let key = ObjectKey::new(Kind::Service, "x", "a");
        let patched = s
            .patch(
                &key,
                &json!({"metadata": {"annotations": {"flannel.alpha.coreos.com/public-ip": "172.18.0.11"}}}),
                false,
            )
            .unwrap();
        assert_eq!(
            patched["metadata"]["annotations"]["flannel.alpha.coreos.com/public-ip"],
            "172.18.0.11"
        );
        let one = "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: x}\nspec: {ports: [{port: 81}]}\n";
        s.sync(&state(one), None);
        let now = s.get(&key).unwrap();
        assert_eq!(now["spec"]["ports"][0]["port"], 81);
        assert_eq!(
            now["metadata"]["annotations"]["flannel.alpha.coreos.com/public-ip"], "172.18.0.11",
            "the write is kept over the source's change"
        );
        let bad = s.patch(&key, &json!({"spec": {"ports": "eighty"}}), false);
        assert!(matches!(bad, Err(ApiError::Invalid(_))), "{bad:?}");
        let missing = s.patch(&ObjectKey::new(Kind::Service, "x", "zz"), &json!({}), false);
        assert!(matches!(missing, Err(ApiError::NotFound { .. })));
    }

    #[test]
    fn a_source_that_numbers_its_writes_moves_the_counter_up_to_its_number() {
        let mut s = Store::new(100);
        s.sync(&state(TWO), None);
        let numbered = TWO
            .replace(
                "name: a, namespace: x}",
                "name: a, namespace: x, resourceVersion: '40'}",
            )
            .replace("port: 80}]}\n---", "port: 82}]}\n---");
        s.sync(&state(&numbered), None);
        assert_eq!(s.resource_version(), 40);
        let key = ObjectKey::new(Kind::Service, "x", "a");
        assert_eq!(s.get(&key).unwrap()["metadata"]["resourceVersion"], "40");
        let again = TWO.replace("port: 80}]}\n---", "port: 81}]}\n---");
        s.sync(&state(&again), None);
        assert_eq!(s.resource_version(), 41, "on from there, one by one");
    }

    #[test]
    fn a_restarted_store_numbers_on_and_sends_watches_from_before_410() {
        let mut s = Store::new(100);
        s.restart_after(500);
        s.sync(&state(TWO), None);
        assert_eq!(s.resource_version(), 502, "two objects after 500");
        let from_before = s.events_since(500, Kind::Service, None, &Selector::default());
        assert!(
            matches!(from_before, Err(ApiError::Gone { .. })),
            "{from_before:?}"
        );
        let since_restart = s
            .events_since(501, Kind::Service, None, &Selector::default())
            .unwrap();
        assert_eq!(since_restart.len(), 1);
    }

    #[test]
    fn an_unchanged_object_gets_no_new_version() {
        let mut s = Store::new(100);
        s.sync(&state(TWO), None);
        let rv = s.resource_version();
        s.sync(&state(TWO), None);
        assert_eq!(s.resource_version(), rv);
    }
}
