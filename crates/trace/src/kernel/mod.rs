//! The kernel half of a trace: for every hop, what the kernel of the
//! hop's node holds for each of the model's checks, and whether it is what
//! the model expects. Each namespace is read once per trace.
//!
//! Touches the kernel (see `netfilter` and `links`); the comparison
//! itself ([`compare`]) is pure.

pub mod dns;
pub mod links;
pub mod netfilter;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use ferry_proxy::nft::sets::{Data, Element, Key, Set};

use crate::iptables::{Rule, same_probability, same_rule};
use crate::{Expect, Status, Trace, TraceError};
use links::Links;

/// What was read from one namespace.
#[derive(Default)]
pub struct Observed {
    pub nft: Option<Result<Vec<Element>, String>>,
    pub iptables: Option<Result<Vec<Rule>, String>>,
    pub links: Option<Result<Links, String>>,
    /// The nameserver's replies, by name asked; a name the resolver did
    /// not reach (an earlier one had records) is absent.
    pub dns: BTreeMap<String, Result<dns::Reply, String>>,
}

/// Reads every namespace the trace's checks need and fills each check's
/// kernel side and status.
pub fn check(trace: &mut Trace) -> Result<(), TraceError> {
    let mut seen: BTreeMap<String, Observed> = BTreeMap::new();
    for hop in &trace.hops {
        let Some(ns) = &hop.netns else { continue };
        let o = seen.entry(ns.clone()).or_default();
        let mut dsts: Vec<Ipv4Addr> = Vec::new();
        let mut devs: Vec<String> = Vec::new();
        let mut asked: Option<(IpAddr, Vec<String>)> = None;
        for c in &hop.checks {
            match &c.expect {
                Expect::Dns { server, name, .. } => {
                    asked
                        .get_or_insert_with(|| (*server, Vec::new()))
                        .1
                        .push(name.clone());
                }
                Expect::IptablesRule(_) if o.iptables.is_none() => {
                    o.iptables = Some(netfilter::iptables_nat(ns).map_err(|e| e.to_string()));
                }
                Expect::NftDispatch { .. } if o.nft.is_none() => {
                    o.nft = Some(netfilter::nft_elements(ns).map_err(|e| e.to_string()));
                }
                Expect::Route { dst, .. } => dsts.push(*dst),
                Expect::Neighbour { dev, .. } | Expect::Fdb { dev, .. } => devs.push(dev.clone()),
                _ => {}
            }
        }
        if let Some((server, names)) = asked {
            match dns::ask(ns, server, &names) {
                Ok(replies) => o.dns.extend(replies),
                Err(e) => {
                    for n in names {
                        o.dns.insert(n, Err(e.to_string()));
                    }
                }
            }
        }
        if !dsts.is_empty() || !devs.is_empty() {
            // Merge with what an earlier hop read in the same namespace.
            let mut links = match o.links.take() {
                Some(Ok(l)) => l,
                _ => Links::default(),
            };
            let new_dsts: Vec<Ipv4Addr> = dsts
                .into_iter()
                .filter(|d| !links.routes.contains_key(d))
                .collect();
            devs.sort();
            devs.dedup();
            match links::read(ns, &new_dsts, &devs) {
                Ok(read) => {
                    links.routes.extend(read.routes);
                    links.neighbours.extend(read.neighbours);
                    links.fdb.extend(read.fdb);
                    o.links = Some(Ok(links));
                }
                Err(e) => o.links = Some(Err(e.to_string())),
            }
        }
    }
    for hop in &mut trace.hops {
        let Some(ns) = &hop.netns else { continue };
        let Some(o) = seen.get(ns) else { continue };
        let mut slot: Option<u32> = None;
        for c in &mut hop.checks {
            let (kernel, ok) = compare(&c.expect, o, &mut slot);
            c.kernel = kernel;
            c.status = match ok {
                Some(true) => Status::Match,
                Some(false) => Status::Mismatch,
                None => Status::Unchecked,
            };
        }
    }
    trace.kernel_checked = true;
    trace.count_mismatches();
    Ok(())
}

fn err<T>(r: &Option<Result<T, String>>) -> Option<(Option<String>, Option<bool>)> {
    match r {
        None => Some((None, None)),
        Some(Err(e)) => Some((Some(format!("cannot read: {e}")), Some(false))),
        Some(Ok(_)) => None,
    }
}

/// The kernel's side of one check: what it holds (as text) and whether it
/// matches (None: not read). `slot` carries the dispatch element's slot
/// mark to the endpoint checks after it.
pub fn compare(
    expect: &Expect,
    o: &Observed,
    slot: &mut Option<u32>,
) -> (Option<String>, Option<bool>) {
    match expect {
        Expect::Nothing => (None, None),
        Expect::IptablesRule(model) => {
            if let Some(e) = err(&o.iptables) {
                return e;
            }
            let Some(Ok(rules)) = &o.iptables else {
                return (None, None);
            };
            match rules.iter().find(|k| same_rule(model, k)) {
                None => {
                    let in_chain = rules.iter().filter(|k| k.chain == model.chain).count();
                    (
                        Some(format!(
                            "no such rule ({in_chain} rules in {})",
                            model.chain
                        )),
                        Some(false),
                    )
                }
                Some(k) => (
                    Some(k.line.clone()),
                    Some(same_probability(model.probability, k.probability)),
                ),
            }
        }
        Expect::NftDispatch { set, key, count } => {
            let Some(elements) = nft(o) else {
                return err(&o.nft).unwrap_or((None, None));
            };
            match elements.iter().find(|e| e.set == *set && e.key == *key) {
                None => (Some(format!("no element in {}", set.name())), Some(false)),
                Some(e) => {
                    let mark = match e.data {
                        Some(Data::Mark(m)) => m,
                        _ => 0,
                    };
                    *slot = Some(mark);
                    (
                        Some(e.to_string()),
                        Some(mark & ferry_proxy::nft::ruleset::MAX_ENDPOINTS == *count),
                    )
                }
            }
        }
        Expect::NftPick { count } => {
            let Some(elements) = nft(o) else {
                return err(&o.nft).unwrap_or((None, None));
            };
            match elements
                .iter()
                .find(|e| e.set == Set::Pick && e.key == Key::Mark(*count))
            {
                None => (Some("no element in pick".into()), Some(false)),
                Some(e) => (
                    Some(e.to_string()),
                    Some(e.data == Some(Data::GotoPick(*count))),
                ),
            }
        }
        Expect::NftEndpoint { index, ip, port } => {
            let Some(elements) = nft(o) else {
                return err(&o.nft).unwrap_or((None, None));
            };
            let Some(mark) = *slot else {
                return (
                    Some("no slot: the dispatch element is missing".into()),
                    Some(false),
                );
            };
            match elements
                .iter()
                .find(|e| e.set == Set::Endpoints && e.key == Key::Endpoint(mark, *index))
            {
                None => (
                    Some(format!("no element {mark:#x} . {index} in endpoints")),
                    Some(false),
                ),
                Some(e) => (
                    Some(e.to_string()),
                    Some(e.data == Some(Data::Endpoint(*ip, *port))),
                ),
            }
        }
        Expect::NftHairpin { ip } => {
            let Some(elements) = nft(o) else {
                return err(&o.nft).unwrap_or((None, None));
            };
            match elements
                .iter()
                .find(|e| e.set == Set::Hairpin && e.key == Key::Pair(*ip, *ip))
            {
                None => (Some("no element in hairpin".into()), Some(false)),
                Some(e) => (Some(e.to_string()), Some(true)),
            }
        }
        Expect::Route { dst, dev, gateway } => {
            let Some(links) = links(o) else {
                return err(&o.links).unwrap_or((None, None));
            };
            match links.routes.get(dst) {
                None => (None, None),
                Some(Err(e)) => (Some(format!("{dst}: {e}")), Some(false)),
                Some(Ok(r)) => (
                    Some(format!("{dst} {r}")),
                    Some(&r.dev == dev && r.gateway == *gateway),
                ),
            }
        }
        Expect::Neighbour { dev, ip, mac } => {
            let Some(links) = links(o) else {
                return err(&o.links).unwrap_or((None, None));
            };
            let found = links
                .neighbours
                .get(dev)
                .and_then(|v| v.iter().find(|e| e.ip == Some(std::net::IpAddr::V4(*ip))));
            match found {
                None => (Some(format!("no neighbour {ip} on {dev}")), Some(false)),
                Some(e) => (
                    Some(format!(
                        "{ip} lladdr {}{}",
                        e.mac,
                        if e.permanent { " PERMANENT" } else { "" }
                    )),
                    Some(&e.mac == mac && e.permanent),
                ),
            }
        }
        Expect::Dns { name, answer, .. } => match o.dns.get(name) {
            None => (
                Some("not asked: the resolver stopped at an earlier name's answer".into()),
                Some(false),
            ),
            Some(Err(e)) => (Some(e.clone()), Some(false)),
            Some(Ok(r)) => (
                Some(crate::DnsAnswer::describe(&r.rcode, &r.records)),
                Some(answer.matches(&r.rcode, &r.records)),
            ),
        },
        Expect::Fdb { dev, mac, dst } => {
            let Some(links) = links(o) else {
                return err(&o.links).unwrap_or((None, None));
            };
            let entries = links.fdb.get(dev).cloned().unwrap_or_default();
            let want = Some(std::net::IpAddr::V4(*dst));
            let of_mac = entries.iter().filter(|e| &e.mac == mac);
            match of_mac
                .clone()
                .find(|e| e.ip == want)
                .or(of_mac.clone().next())
            {
                None => (
                    Some(format!("no FDB entry for {mac} on {dev}")),
                    Some(false),
                ),
                Some(e) => (
                    Some(format!(
                        "{} dst {}",
                        e.mac,
                        e.ip.map(|i| i.to_string()).unwrap_or_else(|| "-".into())
                    )),
                    Some(e.ip == Some(std::net::IpAddr::V4(*dst))),
                ),
            }
        }
    }
}

fn nft(o: &Observed) -> Option<&Vec<Element>> {
    match &o.nft {
        Some(Ok(v)) => Some(v),
        _ => None,
    }
}

fn links(o: &Observed) -> Option<&Links> {
    match &o.links {
        Some(Ok(l)) => Some(l),
        _ => None,
    }
}
