//! The certificate table: which certificate answers a TLS handshake (by
//! SNI: an exact host, else the `*.foo.com` wildcard of its first label,
//! else the default certificate), and which hosts have TLS. Built whole
//! from a state beside the route table, from the same Ingresses (owned,
//! valid, oldest first: the first Ingress to list a host in `spec.tls`
//! gives its certificate, as in ingress-nginx), and swapped with it.
//!
//! A Secret that is missing or does not parse is reported and its hosts
//! get the default certificate without being TLS hosts (no 308, no HSTS),
//! as ingress-nginx does for a Secret it cannot load; a `spec.tls` entry
//! without a `secretName` gives its hosts the default certificate and does
//! make them TLS hosts (ingress-nginx again). A Secret that has not changed
//! since the previous table is not parsed again.
//!
//! Pure: parses PEM and keys in memory; no I/O, no clocks.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use ferry_model::k8s_openapi::api::core::v1::Secret;
use ferry_model::{ClusterState, Kind, NamespacedName, Object, ObjectKey};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use crate::routes::{HostKey, RouteTable, host_key, name_of, request_host};

/// TLS settings of the ingress.
#[derive(Clone, Debug, Default)]
pub struct TlsConfig {
    /// `--ingress-default-cert`: the Secret whose certificate answers
    /// handshakes for hosts without one (ingress-nginx's
    /// `--default-ssl-certificate`); None: the self-signed certificate.
    pub default_certificate: Option<NamespacedName>,
}

/// Certificates by host, for one state version.
#[derive(Debug, Default)]
pub struct CertTable {
    version: u64,
    /// TLS hosts, lowercase.
    exact: HashMap<Box<str>, Arc<CertifiedKey>>,
    /// `*.foo.com` TLS hosts, keyed by `foo.com`.
    wildcards: HashMap<Box<str>, Arc<CertifiedKey>>,
    /// For every other handshake; None only before the first table (the
    /// handshake then fails).
    default: Option<Arc<CertifiedKey>>,
    /// Every Secret parsed for this table, kept for the next build.
    parsed: HashMap<NamespacedName, Parsed>,
    problems: Vec<TlsProblem>,
}

#[derive(Debug)]
struct Parsed {
    secret: Arc<Secret>,
    result: Result<Arc<CertifiedKey>, SecretError>,
}

/// Why a Secret gives no certificate.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("not found")]
    NotFound,
    #[error("{field}: {reason}")]
    Field { field: String, reason: String },
}

/// Something in the Ingresses' `spec.tls` that could not be served as written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TlsProblem {
    #[error(
        "Ingress {ingress}: {field}: Secret {secret}: {error}; its hosts get the default certificate and no HTTPS redirect"
    )]
    Secret {
        ingress: NamespacedName,
        field: String,
        secret: NamespacedName,
        error: SecretError,
    },
    #[error("Ingress {ingress}: {field}: {reason}; the host is ignored")]
    Host {
        ingress: NamespacedName,
        field: String,
        reason: String,
    },
    #[error(
        "Ingress {loser}: {field}: {host} already has the certificate of the older Ingress {winner}; this one is ignored"
    )]
    Conflict {
        host: String,
        field: String,
        winner: NamespacedName,
        loser: NamespacedName,
    },
    #[error("default certificate: Secret {secret}: {error}; the self-signed certificate is used")]
    DefaultCertificate {
        secret: NamespacedName,
        error: SecretError,
    },
}

impl CertTable {
    /// A table with only a default certificate (before the first state).
    pub fn with_default(default: Arc<CertifiedKey>) -> CertTable {
        CertTable {
            default: Some(default),
            ..CertTable::default()
        }
    }

    /// The table for `state`: the `spec.tls` of the Ingresses `routes`
    /// routes for, oldest first;
    /// `self_signed` is the default unless `config` names a usable Secret;
    /// Secrets unchanged since `previous` keep their parsed certificate.
    pub fn build(
        state: &ClusterState,
        routes: &RouteTable,
        config: &TlsConfig,
        self_signed: &Arc<CertifiedKey>,
        previous: &CertTable,
    ) -> CertTable {
        let mut table = CertTable {
            version: state.version(),
            ..CertTable::default()
        };
        let mut load = |name: &NamespacedName| table_load(&mut table.parsed, previous, state, name);
        let mut problems = Vec::new();
        let default = match &config.default_certificate {
            None => self_signed.clone(),
            Some(secret) => load(secret).unwrap_or_else(|error| {
                problems.push(TlsProblem::DefaultCertificate {
                    secret: secret.clone(),
                    error,
                });
                self_signed.clone()
            }),
        };
        let mut claims: HashMap<HostKey, NamespacedName> = HashMap::new();
        let mut exact = HashMap::new();
        let mut wildcards = HashMap::new();
        for ingress in routes.tls_ingresses() {
            let name = name_of(ingress);
            let tls = ingress.spec.iter().flat_map(|s| s.tls.iter().flatten());
            for (i, entry) in tls.enumerate() {
                let cert = match entry.secret_name.as_deref() {
                    None | Some("") => default.clone(),
                    Some(secret) => {
                        let secret = NamespacedName::new(name.namespace.clone(), secret);
                        match load(&secret) {
                            Ok(cert) => cert,
                            Err(error) => {
                                problems.push(TlsProblem::Secret {
                                    ingress: name.clone(),
                                    field: format!("spec.tls[{i}].secretName"),
                                    secret,
                                    error,
                                });
                                continue;
                            }
                        }
                    }
                };
                for (j, host) in entry.hosts.iter().flatten().enumerate() {
                    let field = format!("spec.tls[{i}].hosts[{j}]");
                    let key = match host_key(host) {
                        Ok(key) => key,
                        Err(reason) => {
                            problems.push(TlsProblem::Host {
                                ingress: name.clone(),
                                field,
                                reason,
                            });
                            continue;
                        }
                    };
                    let (map, host_name) = match &key {
                        HostKey::Exact(h) => (&mut exact, h.clone()),
                        HostKey::Wildcard(h) => (&mut wildcards, h.clone()),
                        HostKey::Any => continue,
                    };
                    match map.entry(host_name) {
                        Entry::Vacant(v) => {
                            v.insert(cert.clone());
                            claims.insert(key, name.clone());
                        }
                        Entry::Occupied(o) if Arc::ptr_eq(o.get(), &cert) => {}
                        Entry::Occupied(_) => problems.push(TlsProblem::Conflict {
                            host: host.to_ascii_lowercase(),
                            field,
                            winner: claims.get(&key).cloned().unwrap_or_else(|| name.clone()),
                            loser: name.clone(),
                        }),
                    }
                }
            }
        }
        table.default = Some(default);
        table.exact = exact;
        table.wildcards = wildcards;
        table.problems = problems;
        table
    }

    /// The certificate for a handshake naming `sni` (none: the default).
    pub fn certificate(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        sni.and_then(|h| self.host(h))
            .or(self.default.as_ref())
            .cloned()
    }

    /// Whether `host` (a Host header or SNI) is listed in an Ingress's
    /// `spec.tls` with a usable certificate: HTTP to it is redirected and
    /// HTTPS answers from it carry HSTS.
    pub fn has_tls(&self, host: &str) -> bool {
        self.host(host).is_some()
    }

    fn host(&self, host: &str) -> Option<&Arc<CertifiedKey>> {
        let host = request_host(host);
        let host = host.as_ref();
        self.exact.get(host).or_else(|| {
            let (_, rest) = host.split_once('.')?;
            self.wildcards.get(rest)
        })
    }

    /// The state version this table was built from.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Secrets that gave no certificate, hosts ignored.
    pub fn problems(&self) -> &[TlsProblem] {
        &self.problems
    }

    /// TLS hosts (exact and wildcard).
    pub fn hosts(&self) -> usize {
        self.exact.len() + self.wildcards.len()
    }
}

/// The certificate of Secret `name`, parsed once per table (and reused
/// from `previous` when the Secret is the same).
fn table_load(
    parsed: &mut HashMap<NamespacedName, Parsed>,
    previous: &CertTable,
    state: &ClusterState,
    name: &NamespacedName,
) -> Result<Arc<CertifiedKey>, SecretError> {
    if let Some(p) = parsed.get(name) {
        return p.result.clone();
    }
    let key = ObjectKey::new(Kind::Secret, name.namespace.clone(), name.name.clone());
    let Some(Object::Secret(secret)) = state.get(&key) else {
        return Err(SecretError::NotFound);
    };
    let result = match previous.parsed.get(name) {
        Some(p) if same_keys(&p.secret, secret) => p.result.clone(),
        _ => parse(secret).map(Arc::new),
    };
    parsed.insert(
        name.clone(),
        Parsed {
            secret: secret.clone(),
            result: result.clone(),
        },
    );
    result
}

fn same_keys(a: &Arc<Secret>, b: &Arc<Secret>) -> bool {
    Arc::ptr_eq(a, b) || (a.data == b.data && a.string_data == b.string_data)
}

/// `tls.crt` (PEM, the chain with the server's certificate first) and
/// `tls.key` (PEM, PKCS#8, PKCS#1 or SEC1) of a Secret, checked to match.
/// Any Secret type is accepted, as ingress-nginx does.
pub(crate) fn parse(secret: &Secret) -> Result<CertifiedKey, SecretError> {
    let crt = field(secret, "tls.crt")?;
    let key = field(secret, "tls.key")?;
    let bad = |field: &str, reason: String| SecretError::Field {
        field: field.to_string(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(crt)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad("data[tls.crt]", format!("not a PEM certificate chain: {e}")))?;
    if certs.is_empty() {
        return Err(bad("data[tls.crt]", "no PEM CERTIFICATE block".to_string()));
    }
    let key = PrivateKeyDer::from_pem_slice(key)
        .map_err(|e| bad("data[tls.key]", format!("not a PEM private key: {e}")))?;
    CertifiedKey::from_der(certs, key, &rustls::crypto::ring::default_provider()).map_err(|e| {
        bad(
            "data[tls.key]",
            format!("{e} (with the certificate of tls.crt)"),
        )
    })
}

fn field<'a>(secret: &'a Secret, key: &'static str) -> Result<&'a [u8], SecretError> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.as_slice())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|s| s.as_bytes())
        })
        .ok_or_else(|| SecretError::Field {
            field: format!("data[{key}]"),
            reason: "Required value".to_string(),
        })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Instant;

    use ferry_model::k8s_openapi::ByteString;
    use ferry_model::k8s_openapi::api::networking::v1::{Ingress, IngressClass};
    use serde_json::json;

    use super::*;
    use crate::RoutesConfig;

    fn secret(name: &str, hosts: &[&str]) -> Object {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
        let cert = rcgen::CertificateParams::new(names)
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let mut s = Secret {
            data: Some(BTreeMap::from([
                ("tls.crt".to_string(), ByteString(cert.pem().into_bytes())),
                (
                    "tls.key".to_string(),
                    ByteString(key.serialize_pem().into_bytes()),
                ),
            ])),
            ..Secret::default()
        };
        s.metadata.name = Some(name.into());
        s.metadata.namespace = Some("default".into());
        Object::Secret(Arc::new(s))
    }

    fn ingress(name: &str, created: &str, tls: serde_json::Value) -> Object {
        let ing: Ingress = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "creationTimestamp": created},
            "spec": {"ingressClassName": "ferry", "tls": tls,
                     "defaultBackend": {"service": {"name": "web", "port": {"number": 80}}}},
        }))
        .unwrap();
        Object::Ingress(Arc::new(ing))
    }

    fn class() -> Object {
        let c: IngressClass = serde_json::from_value(json!({
            "metadata": {"name": "ferry"},
            "spec": {"controller": "ferry.dev/ingress-controller"},
        }))
        .unwrap();
        Object::IngressClass(Arc::new(c))
    }

    fn build(objects: &[Object], config: &TlsConfig, previous: &CertTable) -> CertTable {
        let mut objects = objects.to_vec();
        objects.push(class());
        let state = ClusterState::from_objects(objects);
        let routes = RouteTable::build(&state, &RoutesConfig::default());
        let fake = crate::tls::self_signed().unwrap();
        CertTable::build(&state, &routes, config, &fake, previous)
    }

    fn cert_of(objects: &[Object], name: &str) -> Vec<u8> {
        let Some(Object::Secret(s)) = objects
            .iter()
            .find(|o| matches!(o, Object::Secret(s) if s.metadata.name.as_deref() == Some(name)))
        else {
            panic!("no Secret {name}");
        };
        parse(s).unwrap().cert[0].to_vec()
    }

    fn served(table: &CertTable, sni: Option<&str>) -> Vec<u8> {
        table.certificate(sni).unwrap().cert[0].to_vec()
    }

    #[test]
    fn the_oldest_ingress_gives_a_host_its_certificate_and_the_newer_claim_is_reported() {
        let objects = vec![
            secret("old-tls", &["a.test"]),
            secret("new-tls", &["a.test"]),
            ingress(
                "new",
                "2026-01-02T00:00:00Z",
                json!([{"hosts": ["a.test", "b.test"], "secretName": "new-tls"}]),
            ),
            ingress(
                "old",
                "2026-01-01T00:00:00Z",
                json!([{"hosts": ["A.test"], "secretName": "old-tls"}]),
            ),
        ];
        let table = build(&objects, &TlsConfig::default(), &CertTable::default());
        assert_eq!(served(&table, Some("a.test")), cert_of(&objects, "old-tls"));
        assert_eq!(served(&table, Some("b.test")), cert_of(&objects, "new-tls"));
        let problems: Vec<String> = table.problems().iter().map(ToString::to_string).collect();
        assert_eq!(
            problems,
            [
                "Ingress default/new: spec.tls[0].hosts[0]: a.test already has the certificate of the older Ingress default/old; this one is ignored"
            ]
        );
    }

    #[test]
    fn a_tls_entry_without_a_secret_name_uses_the_default_certificate_and_is_a_tls_host() {
        let objects = vec![ingress(
            "web",
            "2026-01-01T00:00:00Z",
            json!([{"hosts": ["*.a.test"]}]),
        )];
        let table = build(&objects, &TlsConfig::default(), &CertTable::default());
        assert!(table.has_tls("x.a.test:443"));
        assert!(!table.has_tls("x.y.a.test"));
        assert!(!table.has_tls("a.test"));
        assert_eq!(served(&table, Some("x.a.test")), served(&table, None));
    }

    #[test]
    fn the_default_certificate_comes_from_the_named_secret_else_the_self_signed_one_with_a_problem()
    {
        let objects = vec![secret("default-tls", &["ingress.test"])];
        let config = TlsConfig {
            default_certificate: Some(NamespacedName::new("default", "default-tls")),
        };
        let table = build(&objects, &config, &CertTable::default());
        assert_eq!(
            served(&table, Some("any.test")),
            cert_of(&objects, "default-tls")
        );
        assert!(table.problems().is_empty());
        let missing = TlsConfig {
            default_certificate: Some(NamespacedName::new("default", "nope")),
        };
        let table = build(&objects, &missing, &CertTable::default());
        assert_ne!(served(&table, None), cert_of(&objects, "default-tls"));
        assert_eq!(
            table.problems()[0].to_string(),
            "default certificate: Secret default/nope: not found; the self-signed certificate is used"
        );
    }

    #[test]
    fn an_unchanged_secret_is_not_parsed_again_and_a_changed_one_is() {
        // 1,000 Ingresses with a Secret each: the first build parses them
        // all; a rebuild after one Secret changed parses that one only.
        let mut objects = Vec::new();
        for i in 0..1000 {
            objects.push(secret(&format!("s{i}"), &[&format!("h{i}.test")]));
            objects.push(ingress(
                &format!("i{i}"),
                "2026-01-01T00:00:00Z",
                json!([{"hosts": [format!("h{i}.test")], "secretName": format!("s{i}")}]),
            ));
        }
        let start = Instant::now();
        let first = build(&objects, &TlsConfig::default(), &CertTable::default());
        let parsed_all = start.elapsed();
        assert_eq!(first.hosts(), 1000);
        objects[0] = secret("s0", &["h0.test"]);
        let start = Instant::now();
        let second = build(&objects, &TlsConfig::default(), &first);
        let reused = start.elapsed();
        eprintln!(
            "1,000 TLS Ingresses: first build {parsed_all:?}, rebuild with one changed Secret {reused:?}"
        );
        let same = |h: &str| {
            Arc::ptr_eq(
                &first.certificate(Some(h)).unwrap(),
                &second.certificate(Some(h)).unwrap(),
            )
        };
        assert!(!same("h0.test"));
        assert!((1..1000).all(|i| same(&format!("h{i}.test"))));
        assert_eq!(served(&second, Some("h0.test")), cert_of(&objects, "s0"));
    }
}
