//! etcd's v3 API as its JSON gateway serves it (etcd 3.4+: `POST /v3/...`,
//! keys and values in base64, 64-bit numbers as strings), reduced to the
//! calls a lease store makes: range, put, a create-if-absent transaction,
//! lease grant, revoke and time-to-live, compaction (for tests) and one
//! bounded read of a watch. Requests go to the endpoints in order, moving
//! to the next one when an endpoint cannot be reached, and remembering the
//! one that answered.
//!
//! Touches sockets (through `http`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

use super::http::{self, Endpoint, HttpError};

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error(transparent)]
    Url(HttpError),
    #[error("etcd: no endpoint given")]
    NoEndpoint,
    #[error("etcd is unreachable at {endpoints}: {last}")]
    Unreachable { endpoints: String, last: HttpError },
    #[error("etcd at {endpoint}: {call}: {message}")]
    Refused {
        endpoint: String,
        call: &'static str,
        message: String,
    },
    #[error("etcd at {endpoint}: {call}: an answer that is not etcd's: {why}")]
    Garbled {
        endpoint: String,
        call: &'static str,
        why: String,
    },
}

/// A key and its value as etcd returns it.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct KeyValue {
    #[serde(deserialize_with = "base64_bytes")]
    pub key: Vec<u8>,
    #[serde(default, deserialize_with = "base64_bytes")]
    pub value: Vec<u8>,
    #[serde(default, deserialize_with = "int")]
    pub mod_revision: i64,
    #[serde(default, deserialize_with = "int")]
    pub lease: i64,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Header {
    #[serde(default, deserialize_with = "int")]
    pub revision: i64,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RangeResponse {
    #[serde(default)]
    pub header: Header,
    #[serde(default)]
    pub kvs: Vec<KeyValue>,
}

#[derive(Debug, Deserialize)]
struct TxnResponse {
    #[serde(default)]
    succeeded: bool,
}

#[derive(Debug, Deserialize)]
struct GrantResponse {
    #[serde(rename = "ID", deserialize_with = "int")]
    id: i64,
}

#[derive(Debug, Deserialize)]
struct TimeToLiveResponse {
    /// -1 when the lease is gone.
    #[serde(rename = "TTL", default, deserialize_with = "int")]
    ttl: i64,
}

/// What one watch read brought.
#[derive(Debug)]
pub(crate) enum WatchRead {
    /// Changes (possibly none, when the wait ran out) up to `revision`.
    Events {
        events: Vec<WatchEvent>,
        revision: i64,
    },
    /// The asked revision is older than etcd keeps (compacted away).
    Compacted,
}

#[derive(Debug)]
pub(crate) struct WatchEvent {
    pub deleted: bool,
    pub kv: KeyValue,
}

#[derive(Debug, Deserialize)]
struct WatchMessage {
    result: Option<WatchResult>,
    error: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct WatchResult {
    #[serde(default)]
    canceled: bool,
    #[serde(default, deserialize_with = "int")]
    compact_revision: i64,
    #[serde(default)]
    cancel_reason: String,
    #[serde(default)]
    events: Vec<RawEvent>,
}

#[derive(Debug, Deserialize)]
struct RawEvent {
    /// Absent for PUT (proto3 JSON omits the default).
    #[serde(rename = "type", default)]
    kind: String,
    kv: KeyValue,
}

/// 64-bit integers arrive as strings (proto3 JSON); accept numbers too.
fn int<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Int {
        N(i64),
        S(String),
    }
    match Int::deserialize(d)? {
        Int::N(n) => Ok(n),
        Int::S(s) => s.parse().map_err(serde::de::Error::custom),
    }
}

fn base64_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let s = String::deserialize(d)?;
    B64.decode(s).map_err(serde::de::Error::custom)
}

fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// The end of the range of every key starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff: every key after the prefix.
    vec![0]
}

/// A client of one etcd cluster.
pub(crate) struct Client {
    endpoints: Vec<Endpoint>,
    /// The endpoint that answered last: tried first.
    current: AtomicUsize,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

impl Client {
    pub(crate) fn new(
        urls: &[String],
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> Result<Client, EtcdError> {
        if urls.is_empty() {
            return Err(EtcdError::NoEndpoint);
        }
        let endpoints = urls
            .iter()
            .map(|u| Endpoint::parse(u))
            .collect::<Result<Vec<_>, _>>()
            .map_err(EtcdError::Url)?;
        Ok(Client {
            endpoints,
            current: AtomicUsize::new(0),
            connect_timeout,
            request_timeout,
        })
    }

    pub(crate) fn endpoint_list(&self) -> String {
        let urls: Vec<&str> = self.endpoints.iter().map(|e| e.url.as_str()).collect();
        urls.join(", ")
    }

    /// Runs `attempt` against each endpoint in turn, starting with the one
    /// that answered last, until one can be reached.
    fn failover<T>(
        &self,
        mut attempt: impl FnMut(&Endpoint) -> Result<T, HttpError>,
    ) -> Result<(T, &Endpoint), EtcdError> {
        let n = self.endpoints.len();
        let first = self.current.load(Ordering::Relaxed) % n;
        let mut last = None;
        for i in 0..n {
            let k = (first + i) % n;
            let endpoint = &self.endpoints[k];
            match attempt(endpoint) {
                Ok(t) => {
                    self.current.store(k, Ordering::Relaxed);
                    return Ok((t, endpoint));
                }
                Err(e) => last = Some(e),
            }
        }
        Err(EtcdError::Unreachable {
            endpoints: self.endpoint_list(),
            last: last.unwrap_or(HttpError::BadUrl {
                url: String::new(),
                why: "no endpoint",
            }),
        })
    }

    fn call<T: DeserializeOwned>(
        &self,
        call: &'static str,
        path: &str,
        body: &Value,
    ) -> Result<T, EtcdError> {
        let bytes = body.to_string().into_bytes();
        let (response, endpoint) = self.failover(|e| {
            http::post(e, path, &bytes, self.connect_timeout, self.request_timeout)
        })?;
        let value: Value =
            serde_json::from_slice(&response.body).map_err(|e| EtcdError::Garbled {
                endpoint: endpoint.url.clone(),
                call,
                why: format!("HTTP {}: {e}", response.status),
            })?;
        if response.status != 200 || value.get("error").is_some() {
            let message = value
                .get("message")
                .or_else(|| value.get("error"))
                .map(|m| m.as_str().map_or_else(|| m.to_string(), str::to_string))
                .unwrap_or_else(|| format!("HTTP {}", response.status));
            return Err(EtcdError::Refused {
                endpoint: endpoint.url.clone(),
                call,
                message,
            });
        }
        serde_json::from_value(value).map_err(|e| EtcdError::Garbled {
            endpoint: endpoint.url.clone(),
            call,
            why: e.to_string(),
        })
    }

    pub(crate) fn get(&self, key: &str) -> Result<RangeResponse, EtcdError> {
        self.call(
            "get",
            "/v3/kv/range",
            &json!({ "key": b64(key.as_bytes()) }),
        )
    }

    pub(crate) fn get_prefix(&self, prefix: &str) -> Result<RangeResponse, EtcdError> {
        self.call(
            "get",
            "/v3/kv/range",
            &json!({
                "key": b64(prefix.as_bytes()),
                "range_end": b64(&prefix_end(prefix.as_bytes())),
            }),
        )
    }

    /// A new lease of `ttl` (whole seconds, at least one); its id.
    pub(crate) fn grant(&self, ttl: Duration) -> Result<i64, EtcdError> {
        let r: GrantResponse = self.call(
            "lease grant",
            "/v3/lease/grant",
            &json!({ "TTL": ttl.as_secs().max(1).to_string() }),
        )?;
        Ok(r.id)
    }

    pub(crate) fn revoke(&self, lease: i64) -> Result<(), EtcdError> {
        self.call::<Value>(
            "lease revoke",
            "/v3/lease/revoke",
            &json!({ "ID": lease.to_string() }),
        )
        .map(drop)
    }

    /// The time left on a lease; `None` when it is gone.
    pub(crate) fn time_to_live(&self, lease: i64) -> Result<Option<Duration>, EtcdError> {
        let r: TimeToLiveResponse = self.call(
            "lease timetolive",
            "/v3/lease/timetolive",
            &json!({ "ID": lease.to_string() }),
        )?;
        Ok(u64::try_from(r.ttl).ok().map(Duration::from_secs))
    }

    /// Puts `value` at `key` with `lease` if `key` does not exist
    /// (create_revision 0) or, with `mod_revision` given, only if the key
    /// was last changed at that revision. False when the condition failed.
    pub(crate) fn put_if(
        &self,
        key: &str,
        value: &[u8],
        lease: i64,
        mod_revision: Option<i64>,
    ) -> Result<bool, EtcdError> {
        let compare = match mod_revision {
            None => json!({
                "key": b64(key.as_bytes()),
                "target": "CREATE",
                "result": "EQUAL",
                "create_revision": "0",
            }),
            Some(rev) => json!({
                "key": b64(key.as_bytes()),
                "target": "MOD",
                "result": "EQUAL",
                "mod_revision": rev.to_string(),
            }),
        };
        let r: TxnResponse = self.call(
            "transaction",
            "/v3/kv/txn",
            &json!({
                "compare": [compare],
                "success": [{ "request_put": {
                    "key": b64(key.as_bytes()),
                    "value": b64(value),
                    "lease": lease.to_string(),
                }}],
            }),
        )?;
        Ok(r.succeeded)
    }

    pub(crate) fn delete(&self, key: &str) -> Result<(), EtcdError> {
        self.call::<Value>(
            "delete",
            "/v3/kv/deleterange",
            &json!({ "key": b64(key.as_bytes()) }),
        )
        .map(drop)
    }

    /// Watches every key under `prefix` from revision `from` and returns
    /// the first batch of changes, or no change when `wait` ran out first.
    pub(crate) fn watch_once(
        &self,
        prefix: &str,
        from: i64,
        wait: Duration,
    ) -> Result<WatchRead, EtcdError> {
        let body = json!({ "create_request": {
            "key": b64(prefix.as_bytes()),
            "range_end": b64(&prefix_end(prefix.as_bytes())),
            "start_revision": from.to_string(),
        }})
        .to_string()
        .into_bytes();
        let deadline = Instant::now() + wait;
        let (mut stream, endpoint) = self.failover(|e| {
            http::post_streaming(
                e,
                "/v3/watch",
                &body,
                self.connect_timeout,
                self.request_timeout,
            )
        })?;
        let garbled = |why: String| EtcdError::Garbled {
            endpoint: endpoint.url.clone(),
            call: "watch",
            why,
        };
        if stream.status != 200 {
            return Err(garbled(format!("HTTP {}", stream.status)));
        }
        let revision = from - 1;
        loop {
            let line = match stream.next_line(deadline) {
                Ok(Some(line)) => line,
                Ok(None) => {
                    return Ok(WatchRead::Events {
                        events: Vec::new(),
                        revision,
                    });
                }
                Err(e) => {
                    return Err(EtcdError::Unreachable {
                        endpoints: endpoint.url.clone(),
                        last: e,
                    });
                }
            };
            let message: WatchMessage =
                serde_json::from_slice(&line).map_err(|e| garbled(e.to_string()))?;
            let result = match (message.result, message.error) {
                (Some(r), _) => r,
                (None, Some(e)) => {
                    return Err(EtcdError::Refused {
                        endpoint: endpoint.url.clone(),
                        call: "watch",
                        message: e.to_string(),
                    });
                }
                (None, None) => return Err(garbled("neither result nor error".into())),
            };
            if result.compact_revision > 0 {
                return Ok(WatchRead::Compacted);
            }
            if result.canceled {
                return Err(EtcdError::Refused {
                    endpoint: endpoint.url.clone(),
                    call: "watch",
                    message: format!("watch canceled: {}", result.cancel_reason),
                });
            }
            // The first message (`created`) carries no change; an event
            // batch holds whole revisions, so the next read starts after
            // the last event's.
            if !result.events.is_empty() {
                let revision = result
                    .events
                    .iter()
                    .map(|e| e.kv.mod_revision)
                    .max()
                    .unwrap_or(revision)
                    .max(revision);
                let events = result
                    .events
                    .into_iter()
                    .map(|e| WatchEvent {
                        deleted: e.kind == "DELETE",
                        kv: e.kv,
                    })
                    .collect();
                return Ok(WatchRead::Events { events, revision });
            }
        }
    }

    /// Compacts the history up to `revision` (tests and operators).
    pub(crate) fn compact(&self, revision: i64) -> Result<(), EtcdError> {
        self.call::<Value>(
            "compaction",
            "/v3/kv/compaction",
            &json!({ "revision": revision.to_string(), "physical": true }),
        )
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_range_ends_after_the_last_key_with_the_prefix() {
        assert_eq!(
            prefix_end(b"/coreos.com/network/subnets/"),
            b"/coreos.com/network/subnets0"
        );
        assert_eq!(prefix_end(b"a\xff"), b"b");
    }

    #[test]
    fn gateway_json_decodes_with_string_numbers_and_base64() {
        let r: RangeResponse = serde_json::from_str(
            r#"{"header":{"revision":"7"},"kvs":[{"key":"L3g=","create_revision":"2","mod_revision":"3","version":"1","value":"dg==","lease":"42"}],"count":"1"}"#,
        )
        .unwrap();
        assert_eq!(r.header.revision, 7);
        assert_eq!(r.kvs[0].key, b"/x");
        assert_eq!(r.kvs[0].value, b"v");
        assert_eq!((r.kvs[0].mod_revision, r.kvs[0].lease), (3, 42));
    }
}
