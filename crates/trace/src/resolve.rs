//! FROM and TO as the user writes them, and TO's name as a pod's resolver
//! expands it (search path, ndots) and the cluster DNS would answer it
//! from the model (ClusterIP, headless addresses, ExternalName CNAME).
//!
//! Pure.

use std::net::IpAddr;

use ferry_model::{ClusterState, NamespacedName, ServiceType};

use crate::TraceError;

/// FROM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum From {
    Pod { namespace: String, name: String },
    Node(String),
    Outside,
    Address(IpAddr),
}

impl std::str::FromStr for From {
    type Err = TraceError;

    fn from_str(s: &str) -> Result<From, TraceError> {
        let parts: Vec<&str> = s.split('/').collect();
        Ok(match parts.as_slice() {
            ["pod", ns, name] if !ns.is_empty() && !name.is_empty() => From::Pod {
                namespace: ns.to_string(),
                name: name.to_string(),
            },
            ["node", name] if !name.is_empty() => From::Node(name.to_string()),
            ["outside"] => From::Outside,
            [ip] => From::Address(ip.parse().map_err(|_| TraceError::BadFrom(s.into()))?),
            _ => return Err(TraceError::BadFrom(s.into())),
        })
    }
}

/// TO: a host (name or address) and a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct To {
    pub host: String,
    pub port: u16,
    /// `http` or `https` when given as a URL.
    pub scheme: Option<String>,
    /// A URL's path without the query (`/` when none); `/` otherwise.
    pub path: String,
}

impl std::str::FromStr for To {
    type Err = TraceError;

    fn from_str(s: &str) -> Result<To, TraceError> {
        let bad = || TraceError::BadTo(s.into());
        let (scheme, rest) = match s.split_once("://") {
            Some((scheme, rest)) => (Some(scheme.to_ascii_lowercase()), rest),
            None => (None, s),
        };
        let authority = rest.split('/').next().unwrap_or_default();
        let path = rest[authority.len()..]
            .split(['?', '#'])
            .next()
            .filter(|p| !p.is_empty())
            .unwrap_or("/")
            .to_string();
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p.parse::<u16>().map_err(|_| bad())?)),
            None => (authority, None),
        };
        let port = match (port, scheme.as_deref()) {
            (Some(p), _) => p,
            (None, Some("http")) => 80,
            (None, Some("https")) => 443,
            _ => return Err(bad()),
        };
        if host.is_empty() {
            return Err(bad());
        }
        Ok(To {
            host: host.trim_end_matches('.').to_ascii_lowercase(),
            port,
            scheme,
            path,
        })
    }
}

/// A pod's resolver settings (`resolv.conf`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolv {
    pub nameserver: String,
    pub search: Vec<String>,
    pub ndots: usize,
}

impl Resolv {
    /// kubelet's `ClusterFirst` resolv.conf for a pod of `namespace`, with
    /// the lab's node-local DNS address.
    pub fn cluster_first(namespace: &str, nameserver: &str) -> Resolv {
        Resolv {
            nameserver: nameserver.into(),
            search: vec![
                format!("{namespace}.svc.cluster.local"),
                "svc.cluster.local".into(),
                "cluster.local".into(),
            ],
            ndots: 5,
        }
    }

    /// Reads a resolv.conf text (nameserver, search, options ndots).
    pub fn parse(text: &str) -> Resolv {
        let mut r = Resolv {
            nameserver: String::new(),
            search: Vec::new(),
            ndots: 1,
        };
        for line in text.lines() {
            let w: Vec<&str> = line.split_whitespace().collect();
            match w.as_slice() {
                ["nameserver", ns, ..] if r.nameserver.is_empty() => r.nameserver = ns.to_string(),
                ["search", rest @ ..] => r.search = rest.iter().map(|s| s.to_string()).collect(),
                ["options", opts @ ..] => {
                    for o in opts {
                        if let Some(n) = o.strip_prefix("ndots:").and_then(|n| n.parse().ok()) {
                            r.ndots = n;
                        }
                    }
                }
                _ => {}
            }
        }
        r
    }

    /// The names the resolver asks for, in order: the search path first
    /// when the name has fewer dots than ndots, the name itself first
    /// otherwise (glibc's rule).
    pub fn candidates(&self, name: &str) -> Vec<String> {
        let searched = self.search.iter().map(|d| format!("{name}.{d}"));
        if name.matches('.').count() >= self.ndots {
            std::iter::once(name.to_string()).chain(searched).collect()
        } else {
            searched.chain(std::iter::once(name.to_string())).collect()
        }
    }
}

/// What the cluster DNS answers for one name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The ClusterIPs of a Service.
    ClusterIp(NamespacedName, Vec<IpAddr>),
    /// A headless Service: its endpoints' addresses.
    Headless(NamespacedName, Vec<IpAddr>),
    /// An ExternalName Service: a CNAME.
    ExternalName(NamespacedName, String),
}

/// One name asked, and the answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Asked {
    pub name: String,
    pub answer: Option<Answer>,
}

/// The answer of the cluster zone (`cluster.local`) for `fqdn`, from the
/// model, as the DNS index builds it: `SERVICE.NAMESPACE.svc.cluster.local`.
pub fn answer(state: &ClusterState, fqdn: &str) -> Option<Answer> {
    let rest = fqdn.strip_suffix(".svc.cluster.local")?;
    let (svc, ns) = rest.split_once('.')?;
    if ns.contains('.') {
        return None;
    }
    let view = state
        .services()
        .find(|v| v.name.namespace.as_ref() == ns && v.name.name.as_ref() == svc)?;
    let name = view.name.clone();
    Some(if view.service_type == ServiceType::ExternalName {
        Answer::ExternalName(name, view.external_name.clone().unwrap_or_default())
    } else if view.headless {
        let ips = view
            .addresses
            .iter()
            .filter(|a| a.ready || view.publish_not_ready_addresses)
            .map(|a| a.ip)
            .collect();
        Answer::Headless(name, ips)
    } else {
        Answer::ClusterIp(name, view.cluster_ips.clone())
    })
}

/// Asks every candidate in order until one has an answer.
pub fn resolve(state: &ClusterState, resolv: &Resolv, name: &str) -> Vec<Asked> {
    let mut out = Vec::new();
    for c in resolv.candidates(name) {
        let answer = answer(state, &c);
        let found = answer.is_some();
        out.push(Asked { name: c, answer });
        if found {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_and_to_are_read_in_every_form() {
        assert_eq!(
            "pod/demo/web-1".parse::<From>().unwrap(),
            From::Pod {
                namespace: "demo".into(),
                name: "web-1".into()
            }
        );
        assert_eq!(
            "node/node-1".parse::<From>().unwrap(),
            From::Node("node-1".into())
        );
        assert_eq!("outside".parse::<From>().unwrap(), From::Outside);
        assert!("pod/demo".parse::<From>().is_err());
        let url: To = "http://web.demo:8080/x/y?q=1".parse().unwrap();
        assert_eq!((url.host.as_str(), url.port), ("web.demo", 8080));
        assert_eq!(url.path, "/x/y");
        let plain: To = "http://web".parse().unwrap();
        assert_eq!((plain.port, plain.path.as_str()), (80, "/"));
        let ip: To = "172.16.255.220:80".parse().unwrap();
        assert_eq!(ip.host, "172.16.255.220");
        assert!(
            "web".parse::<To>().is_err(),
            "a port is needed without a scheme"
        );
    }

    #[test]
    fn short_names_go_through_the_search_path_first() {
        let r = Resolv::parse(
            "nameserver 169.254.20.10\nsearch demo.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n",
        );
        assert_eq!(r, Resolv::cluster_first("demo", "169.254.20.10"));
        assert_eq!(
            r.candidates("web"),
            [
                "web.demo.svc.cluster.local",
                "web.svc.cluster.local",
                "web.cluster.local",
                "web"
            ]
        );
        // Five dots or more: the name is tried as it is first.
        let long = "a.b.c.d.e.f";
        assert_eq!(r.candidates(long)[0], long);
    }
}
