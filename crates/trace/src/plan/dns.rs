//! The DNS hop: the name as FROM's resolver expands it, the server that
//! answers (the node-local cluster DNS), and the record, from the model;
//! one check per name asked, which the kernel pass puts to the real
//! nameserver from FROM's namespace.
//!
//! Pure.

use std::net::IpAddr;

use super::Inputs;
use crate::resolve::{Answer, Asked, resolve};
use crate::{Check, DnsAnswer, Expect, Hop, HopKind, Peer};

/// What the nameserver should answer for one asked name (A queries).
fn expected(asked: &Asked) -> DnsAnswer {
    let a = |ips: &[IpAddr]| -> Vec<String> {
        let mut v: Vec<String> = ips
            .iter()
            .filter(|ip| ip.is_ipv4())
            .map(|ip| format!("A {ip}"))
            .collect();
        v.sort();
        v
    };
    match &asked.answer {
        // Outside the cluster zone the nameserver forwards upstream; the
        // model cannot say what upstream answers.
        None if !asked.name.ends_with(".cluster.local") => DnsAnswer {
            rcode: None,
            records: Vec::new(),
        },
        None => DnsAnswer {
            rcode: Some("NXDOMAIN".into()),
            records: Vec::new(),
        },
        Some(Answer::ClusterIp(_, ips) | Answer::Headless(_, ips)) => DnsAnswer {
            rcode: Some("NOERROR".into()),
            records: a(ips),
        },
        Some(Answer::ExternalName(_, target)) => DnsAnswer {
            rcode: None,
            records: vec![format!("CNAME {}", target.trim_end_matches('.'))],
        },
    }
}

/// The DNS hop, and the address the client goes on with (None: no
/// address, the trace ends here).
pub(super) fn hop(inputs: &Inputs, peer: &Peer, name: &str) -> (Hop, Option<IpAddr>) {
    let r = &inputs.resolv;
    let mut hop = Hop::new(HopKind::Dns, format!("DNS: {name}"));
    hop.node = peer.node.clone();
    let server_is = if r.nameserver == crate::lab::NODE_LOCAL_DNS {
        format!(
            " (the node-local cluster DNS on {})",
            peer.node.as_deref().unwrap_or("its node")
        )
    } else {
        " (not the lab's node-local cluster DNS)".to_string()
    };
    hop.decided.push(format!(
        "resolver of {}: nameserver {}{server_is}, search {}, ndots {}",
        peer.name,
        r.nameserver,
        r.search.join(" "),
        r.ndots
    ));
    let dots = name.matches('.').count();
    hop.decided.push(if dots >= r.ndots {
        format!(
            "{name:?} has {dots} dots (ndots {}): asked as it is first",
            r.ndots
        )
    } else {
        format!(
            "{name:?} has {dots} dots, fewer than ndots {}: the search path is tried first",
            r.ndots
        )
    });
    let asked = resolve(inputs.state, r, name);
    // Pods and nodes reach the node-local DNS; the outside client does
    // not use the cluster's resolver.
    let server: Option<IpAddr> = r.nameserver.parse().ok();
    if let Some(server) = server
        && matches!(peer.kind, "pod" | "node")
        && peer.netns.is_some()
    {
        hop.netns = peer.netns.clone();
        for a in &asked {
            let answer = expected(a);
            let model = match &answer.rcode {
                Some(rcode) => DnsAnswer::describe(rcode, &answer.records),
                None if answer.records.is_empty() => {
                    "forwarded upstream: whatever upstream answers".to_string()
                }
                None => format!(
                    "{} (then the target's records from upstream)",
                    answer.records.join(", ")
                ),
            };
            hop.checks.push(Check::new(
                format!("{server} answers A {}", a.name),
                model,
                Expect::Dns {
                    server,
                    name: a.name.clone(),
                    answer,
                },
            ));
        }
    }
    let mut result = None;
    for a in &asked {
        hop.path.push(a.name.clone());
        match &a.answer {
            None => hop.decided.push(format!("{} -> NXDOMAIN", a.name)),
            Some(Answer::ClusterIp(svc, ips)) => {
                hop.decided.push(format!(
                    "{} -> A {} (Service {}/{}: its ClusterIP)",
                    a.name,
                    join(ips),
                    svc.namespace,
                    svc.name
                ));
                result = ips
                    .iter()
                    .copied()
                    .find(IpAddr::is_ipv4)
                    .or(ips.first().copied());
            }
            Some(Answer::Headless(svc, ips)) => {
                hop.decided.push(format!(
                    "{} -> {} (headless Service {}/{}: one record per ready endpoint, no proxy)",
                    a.name,
                    if ips.is_empty() {
                        "no A record".to_string()
                    } else {
                        format!("A {}", join(ips))
                    },
                    svc.namespace,
                    svc.name
                ));
                if ips.len() > 1 {
                    hop.decided
                        .push("the client takes one of the records; traced: the first".into());
                }
                result = ips.first().copied();
                if ips.is_empty() {
                    hop.decided
                        .push("no ready endpoint: the name exists with no record (NODATA)".into());
                }
            }
            Some(Answer::ExternalName(svc, target)) => {
                hop.decided.push(format!(
                    "{} -> CNAME {target} (ExternalName Service {}/{}); the cluster DNS chases it upstream, outside the cluster: no proxy hop",
                    a.name, svc.namespace, svc.name
                ));
            }
        }
    }
    if asked.iter().all(|a| a.answer.is_none()) {
        hop.decided.push(
            "no cluster name matched: the name is forwarded upstream (the lab has none)".into(),
        );
    }
    (hop, result)
}

fn join(ips: &[IpAddr]) -> String {
    ips.iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
