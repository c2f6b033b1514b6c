//! The L4 table: ingress-nginx's `tcp-services` and `udp-services`
//! ConfigMaps, read from the state. Each entry is
//! `"PORT": "namespace/service:port[:PROXY][:PROXY]"`: the port ferry
//! listens on, the Service port whose endpoints get the traffic (by number
//! or name), and PROXY protocol flags as ingress-nginx reads them (the
//! first: clients send a PROXY header; the second: ferry sends one to the
//! endpoint). An entry that does not parse, or names a port the HTTP
//! listeners use, is reported and skipped; the others are served. A
//! Service without endpoints stays in the table (its connections are
//! refused) and is reported.
//!
//! Pure.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use ferry_model::{ClusterState, Kind, NamespacedName, Object, ObjectKey, Protocol};

use crate::routes::{ServiceRef, endpoints_for};

/// Which ConfigMaps hold the L4 services (ingress-nginx's
/// `--tcp-services-configmap` and `--udp-services-configmap`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct L4Config {
    pub tcp_services: Option<NamespacedName>,
    pub udp_services: Option<NamespacedName>,
    /// A UDP flow quiet this long is closed.
    pub udp_idle_timeout: std::time::Duration,
}

impl Default for L4Config {
    fn default() -> Self {
        L4Config {
            tcp_services: None,
            udp_services: None,
            udp_idle_timeout: std::time::Duration::from_secs(30),
        }
    }
}

/// One listening port's destination.
#[derive(Debug)]
pub struct L4Backend {
    pub target: ServiceRef,
    /// Ready endpoints (serving and terminating ones when none is ready); sorted.
    pub endpoints: Arc<[SocketAddr]>,
    /// Clients send a PROXY protocol header first.
    pub decode_proxy: bool,
    /// ferry sends the endpoint a PROXY protocol header first.
    pub encode_proxy: bool,
    /// Round-robin position.
    pub(crate) next: AtomicUsize,
}

impl L4Backend {
    /// Whether `other` sends to the same place the same way (a listener
    /// whose backend did not change keeps its round-robin position).
    pub fn same_as(&self, other: &L4Backend) -> bool {
        self.target == other.target
            && self.endpoints == other.endpoints
            && self.decode_proxy == other.decode_proxy
            && self.encode_proxy == other.encode_proxy
    }
}

/// An L4 entry that is not served as written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum L4Problem {
    #[error("ConfigMap {configmap}: data[{key:?}]: {reason}; the entry is skipped")]
    Invalid {
        configmap: NamespacedName,
        key: String,
        reason: String,
    },
    #[error("ConfigMap {configmap}: data[{key:?}]: Service {target}: {reason}")]
    NoEndpoints {
        configmap: NamespacedName,
        key: String,
        target: ServiceRef,
        reason: String,
    },
}

/// The ports ferry proxies at L4, by protocol.
#[derive(Debug, Default)]
pub struct L4Table {
    pub tcp: BTreeMap<u16, Arc<L4Backend>>,
    pub udp: BTreeMap<u16, Arc<L4Backend>>,
    pub problems: Vec<L4Problem>,
}

impl L4Table {
    /// The table for `state`; `reserved` are the ports the HTTP listeners use.
    pub fn build(state: &ClusterState, config: &L4Config, reserved: &[u16]) -> L4Table {
        let mut table = L4Table::default();
        if let Some(cm) = &config.tcp_services {
            table.tcp = entries(state, cm, Protocol::Tcp, reserved, &mut table.problems);
        }
        if let Some(cm) = &config.udp_services {
            table.udp = entries(state, cm, Protocol::Udp, &[], &mut table.problems);
        }
        table
    }
}

fn entries(
    state: &ClusterState,
    configmap: &NamespacedName,
    protocol: Protocol,
    reserved: &[u16],
    problems: &mut Vec<L4Problem>,
) -> BTreeMap<u16, Arc<L4Backend>> {
    let key = ObjectKey::new(
        Kind::ConfigMap,
        configmap.namespace.as_ref(),
        configmap.name.as_ref(),
    );
    let Some(Object::ConfigMap(cm)) = state.get(&key) else {
        // Not there (yet): nothing to serve, as ingress-nginx.
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    for (key, value) in cm.data.iter().flatten() {
        let invalid = |reason: String| L4Problem::Invalid {
            configmap: configmap.clone(),
            key: key.clone(),
            reason,
        };
        let port = match key.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => {
                problems.push(invalid("the key is a port number, 1-65535".into()));
                continue;
            }
        };
        if reserved.contains(&port) {
            problems.push(invalid(format!("port {port} is an HTTP listener's port")));
            continue;
        }
        let entry = match parse_entry(value) {
            Ok(e) => e,
            Err(reason) => {
                problems.push(invalid(reason));
                continue;
            }
        };
        let endpoints = match endpoints_for(state, &entry.target, protocol) {
            Ok((e, _)) => e,
            Err(reason) => {
                problems.push(L4Problem::NoEndpoints {
                    configmap: configmap.clone(),
                    key: key.clone(),
                    target: entry.target.clone(),
                    reason,
                });
                Arc::from(Vec::new())
            }
        };
        out.insert(
            port,
            Arc::new(L4Backend {
                target: entry.target,
                endpoints,
                decode_proxy: entry.decode_proxy,
                encode_proxy: entry.encode_proxy,
                next: AtomicUsize::new(0),
            }),
        );
    }
    out
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub target: ServiceRef,
    pub decode_proxy: bool,
    pub encode_proxy: bool,
}

/// `namespace/service:port[:PROXY][:PROXY]`.
pub(crate) fn parse_entry(value: &str) -> Result<Entry, String> {
    let bad = || format!("{value:?}: an entry is namespace/service:port[:PROXY][:PROXY]");
    let mut parts = value.trim().split(':');
    let (Some(svc), Some(port)) = (parts.next(), parts.next()) else {
        return Err(bad());
    };
    let flags: Vec<&str> = parts.collect();
    if flags.len() > 2 || flags.iter().any(|f| !f.is_empty() && *f != "PROXY") {
        return Err(bad());
    }
    let target: ServiceRef = format!("{svc}:{port}").parse().map_err(|_| bad())?;
    Ok(Entry {
        target,
        decode_proxy: flags.first() == Some(&"PROXY"),
        encode_proxy: flags.get(1) == Some(&"PROXY"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::PortRef;
    use serde_json::json;

    #[test]
    fn entries_parse_as_ingress_nginx_reads_them() {
        let e = parse_entry("demo/db:5432").unwrap();
        assert_eq!(e.target.service, NamespacedName::new("demo", "db"));
        assert_eq!(e.target.port, PortRef::Number(5432));
        assert!(!e.decode_proxy && !e.encode_proxy);
        let e = parse_entry("demo/db:sql:PROXY").unwrap();
        assert_eq!(e.target.port, PortRef::Name("sql".into()));
        assert!(e.decode_proxy && !e.encode_proxy);
        let e = parse_entry("demo/db:5432::PROXY").unwrap();
        assert!(!e.decode_proxy && e.encode_proxy);
        let e = parse_entry("demo/db:5432:PROXY:PROXY").unwrap();
        assert!(e.decode_proxy && e.encode_proxy);
        for bad in [
            "db:5432",
            "demo/db",
            "demo/db:5432:proxy",
            "demo/db:1:PROXY:PROXY:PROXY",
            "",
        ] {
            assert!(parse_entry(bad).is_err(), "{bad}");
        }
    }

    fn state(data: serde_json::Value) -> ClusterState {
        use ferry_model::EndpointSlice;
        use ferry_model::Service;
        use ferry_model::k8s_openapi::api::core::v1::ConfigMap;
        let cm: ConfigMap = serde_json::from_value(json!({
                   "metadata": {"name": "tcp-services", "namespace": "ingress"}, "data": data}))
        .unwrap();
        let svc: Service = serde_json::from_value(json!({
                   "metadata": {"name": "db", "namespace": "demo"},
                   "spec": {"clusterIP": "10.96.0.9", "ports": [
                       {"name": "sql", "port": 5432, "targetPort": 15432},
                       {"name": "dns", "port": 53, "protocol": "UDP"}]}}))
        .unwrap();
        let slice: EndpointSlice = serde_json::from_value(json!({
                   "metadata": {"name": "db-1", "namespace": "demo",
                                "labels": {"kubernetes.io/service-name": "db"}},
                   "addressType": "IPv4",
                   "ports": [{"name": "sql", "port": 15432}, {"name": "dns", "port": 5353, "protocol": "UDP"}],
                   "endpoints": [{"addresses": ["10.244.0.5"], "conditions": {"ready": true}},
                                 {"addresses": ["10.244.0.6"], "conditions": {"ready": false}}]}))
        .unwrap();
        ClusterState::from_objects([
            Object::ConfigMap(Arc::new(cm)),
            Object::Service(Arc::new(svc)),
            Object::EndpointSlice(Arc::new(slice)),
        ])
    }

    fn config() -> L4Config {
        L4Config {
            tcp_services: Some(NamespacedName::new("ingress", "tcp-services")),
            udp_services: Some(NamespacedName::new("ingress", "tcp-services")),
            ..L4Config::default()
        }
    }

    #[test]
    fn ports_map_to_the_ready_endpoints_of_the_service_port() {
        let t = L4Table::build(
            &state(json!({"9000": "demo/db:5432", "9053": "demo/db:dns"})),
            &config(),
            &[80],
        );
        let tcp = &t.tcp[&9000];
        assert_eq!(&*tcp.endpoints, &["10.244.0.5:15432".parse().unwrap()]);
        // The same ConfigMap read as udp-services: the UDP port's endpoints.
        assert_eq!(
            &*t.udp[&9053].endpoints,
            &["10.244.0.5:5353".parse().unwrap()]
        );
        // 9000 has no UDP port 5432 and 9053 no TCP port "dns": reported, served with no endpoints.
        assert!(t.udp[&9000].endpoints.is_empty());
        assert!(t.tcp[&9053].endpoints.is_empty());
        assert_eq!(t.problems.len(), 2, "{:?}", t.problems);
    }

    #[test]
    fn a_bad_entry_is_reported_and_skipped_and_the_rest_served() {
        let t = L4Table::build(
            &state(json!({"9000": "demo/db:5432", "x": "demo/db:5432",
                          "9001": "nonsense", "80": "demo/db:5432"})),
            &L4Config {
                tcp_services: config().tcp_services,
                udp_services: None,
                ..L4Config::default()
            },
            &[80],
        );
        assert_eq!(t.tcp.keys().copied().collect::<Vec<_>>(), [9000]);
        let text: Vec<String> = t.problems.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 3, "{text:?}");
        assert!(
            text.iter().any(|p| p
                == "ConfigMap ingress/tcp-services: data[\"9001\"]: \"nonsense\": an entry is namespace/service:port[:PROXY][:PROXY]; the entry is skipped"),
            "{text:?}"
        );
        assert!(text.iter().any(|p| p.contains("HTTP listener")), "{text:?}");
    }
}
