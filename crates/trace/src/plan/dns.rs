//! The DNS hop: the name as FROM's resolver expands it, the server that
//! answers (the node-local cluster DNS), and the record, from the model.
//!
//! Pure.

use std::net::IpAddr;

use super::Inputs;
use crate::resolve::{Answer, resolve};
use crate::{Hop, HopKind, Peer};

/// The DNS hop, and the address the client goes on with (None: no
/// address, the trace ends here).
pub(super) fn hop(inputs: &Inputs, peer: &Peer, name: &str) -> (Hop, Option<IpAddr>) {
    let r = &inputs.resolv;
    let mut hop = Hop::new(HopKind::Dns, format!("DNS: {name}"));
    hop.node = peer.node.clone();
    hop.decided.push(format!(
        "resolver of {}: nameserver {} (the node-local cluster DNS on {}), search {}, ndots {}",
        peer.name,
        r.nameserver,
        peer.node.as_deref().unwrap_or("its node"),
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
