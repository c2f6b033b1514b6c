//! What a trace is: hops in order, each with what decided it and its
//! checks (the model's expectation beside what the kernel holds). This is
//! also the `--json` structure, documented field by field in README
//! ("Trace").
//!
//! Pure.

use std::net::{IpAddr, Ipv4Addr};

use ferry_proxy::nft::sets::Key;
use serde::Serialize;

use crate::iptables::Rule;

/// The proxy mode the nodes' agents run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyMode {
    Nftables,
    Iptables,
}

impl ProxyMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyMode::Nftables => "nftables",
            ProxyMode::Iptables => "iptables",
        }
    }
}

/// Who sends the request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Peer {
    /// `pod`, `node`, `outside` or `address`.
    pub kind: &'static str,
    /// `NS/NAME` for a pod, the node's name, `outside`, or the address.
    pub name: String,
    pub ip: IpAddr,
    /// The node the packet first meets (a pod's node; a node itself).
    pub node: Option<String>,
    pub netns: Option<String>,
}

/// One trace.
#[derive(Clone, Debug, Serialize)]
pub struct Trace {
    /// Version of this structure; bumped when a field changes meaning.
    pub format: u32,
    pub from: Peer,
    /// TO as given.
    pub to: String,
    /// Where the request goes after DNS: `ip:port`.
    pub destination: Option<String>,
    pub proxy_mode: ProxyMode,
    /// The pod network's backend: `vxlan` or `host-gw`.
    pub backend: String,
    pub hops: Vec<Hop>,
    /// Checks whose kernel state differs from the model, over every hop.
    pub mismatches: usize,
    /// Whether the kernel was read (false: the model alone).
    pub kernel_checked: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe: Option<crate::probe::ProbeResult>,
}

impl Trace {
    /// Counts the mismatches of every hop.
    pub fn count_mismatches(&mut self) {
        self.mismatches = self
            .hops
            .iter()
            .flat_map(|h| &h.checks)
            .filter(|c| c.status == Status::Mismatch)
            .count();
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HopKind {
    Dns,
    Ingress,
    Service,
    Routing,
    Reply,
}

impl HopKind {
    pub fn as_str(self) -> &'static str {
        match self {
            HopKind::Dns => "dns",
            HopKind::Ingress => "ingress",
            HopKind::Service => "service",
            HopKind::Routing => "routing",
            HopKind::Reply => "reply",
        }
    }
}

/// One hop of the path.
#[derive(Clone, Debug, Serialize)]
pub struct Hop {
    pub kind: HopKind,
    pub title: String,
    /// The node whose kernel handles this hop (None: no node, as for DNS
    /// answered by the model).
    pub node: Option<String>,
    pub netns: Option<String>,
    /// Routing hops: the node that holds the destination.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_node: Option<String>,
    /// What decided this hop, one statement a line.
    pub decided: Vec<String>,
    /// What the packet goes through, in order: chains or maps, devices.
    pub path: Vec<String>,
    /// Candidate endpoints (service and ingress hops).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<Candidate>,
    pub checks: Vec<Check>,
}

impl Hop {
    pub fn new(kind: HopKind, title: impl Into<String>) -> Hop {
        Hop {
            kind,
            title: title.into(),
            node: None,
            netns: None,
            to_node: None,
            decided: Vec::new(),
            path: Vec::new(),
            endpoints: Vec::new(),
            checks: Vec::new(),
        }
    }

    pub fn mismatched(&self) -> bool {
        self.checks.iter().any(|c| c.status == Status::Mismatch)
    }
}

/// One endpoint a service hop may choose.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Candidate {
    pub ip: IpAddr,
    pub port: u16,
    pub node: Option<String>,
    /// `NS/NAME` of the pod behind it, when known.
    pub pod: Option<String>,
    /// On the node that makes the choice.
    pub local: bool,
    /// The probability its own rule carries: 1/N for nftables' numgen;
    /// 1/n, 1/(n-1), ..., 1 for iptables' statistic rules in order.
    pub rule_probability: f64,
    /// The share of new connections it gets: 1/N either way.
    pub share: f64,
    /// The iptables KUBE-SEP chain or the nft `endpoints` element.
    pub entry: String,
    /// Why a connection to it is masqueraded, if it is.
    pub masquerade: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The kernel holds what the model expects.
    Match,
    /// It does not.
    Mismatch,
    /// The kernel was not read for it.
    Unchecked,
}

/// The model's expectation for one piece of kernel state, and what the
/// kernel holds.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub what: String,
    pub model: String,
    pub kernel: Option<String>,
    pub status: Status,
    #[serde(skip)]
    pub expect: Expect,
}

impl Check {
    pub fn new(what: impl Into<String>, model: impl Into<String>, expect: Expect) -> Check {
        Check {
            what: what.into(),
            model: model.into(),
            kernel: None,
            status: Status::Unchecked,
            expect,
        }
    }
}

/// What to look for in the kernel (the kernel pass reads these).
#[derive(Clone, Debug, PartialEq)]
pub enum Expect {
    /// Nothing to read.
    Nothing,
    /// An iptables rule of the nat table (chain, target and the fields
    /// that matter), as iptables-save prints it.
    IptablesRule(Rule),
    /// A ferry map element keyed by a Service address (`cluster_ips`,
    /// `external_ips`) or a NodePort (`node_ports`), whose slot mark
    /// carries `count` endpoints.
    NftDispatch {
        set: ferry_proxy::nft::sets::Set,
        key: Key,
        count: u32,
    },
    /// `endpoints[slot . index]` = ip . port (slot from the dispatch check
    /// of the same hop).
    NftEndpoint { index: u32, ip: IpAddr, port: u16 },
    /// `pick[count]` = goto pick_count.
    NftPick { count: u32 },
    /// `hairpin` holds ip . ip.
    NftHairpin { ip: IpAddr },
    /// The route lookup (`ip route get`) for `dst` leaves by `dev`, via
    /// `gateway` when there is one.
    Route {
        dst: Ipv4Addr,
        dev: String,
        gateway: Option<Ipv4Addr>,
    },
    /// A permanent neighbour `ip` -> `mac` on `dev`.
    Neighbour {
        dev: String,
        ip: Ipv4Addr,
        mac: String,
    },
    /// A bridge FDB entry `mac` -> `dst` on `dev`.
    Fdb {
        dev: String,
        mac: String,
        dst: Ipv4Addr,
    },
    /// The answer of the nameserver `server` (asked from the hop's
    /// namespace, as FROM's resolver asks) to an A query for `name`.
    Dns {
        server: IpAddr,
        name: String,
        answer: DnsAnswer,
    },
}

/// What a nameserver should answer to one A query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsAnswer {
    /// `NOERROR` or `NXDOMAIN`; None: any (an ExternalName's CNAME is
    /// chased upstream, whose rcode the answer carries).
    pub rcode: Option<String>,
    /// The records, as `A 10.0.0.1` or `CNAME example.com`, sorted. With
    /// `rcode` None, the records that must be among the answer's.
    pub records: Vec<String>,
}

impl DnsAnswer {
    /// `NOERROR A 10.0.0.1, A 10.0.0.2`, `NXDOMAIN`, `NOERROR (no record)`.
    pub fn describe(rcode: &str, records: &[String]) -> String {
        if records.is_empty() {
            if rcode == "NOERROR" {
                "NOERROR (no record: NODATA)".into()
            } else {
                rcode.to_string()
            }
        } else {
            format!("{rcode} {}", records.join(", "))
        }
    }

    /// Whether an answer with `rcode` and `records` (sorted) is this one.
    pub fn matches(&self, rcode: &str, records: &[String]) -> bool {
        match &self.rcode {
            Some(want) => want == rcode && self.records == records,
            None => self.records.iter().all(|r| records.contains(r)),
        }
    }
}
