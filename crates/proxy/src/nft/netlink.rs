//! Element changes sent to nf_tables over netlink, as one batch (one
//! atomic transaction): no `nft` process, no cache of the ruleset read
//! back. Only set-element messages are spoken here; the table itself is
//! loaded with `nft -f` (rarely: at start, after a failure).
//!
//! The element text ferry generates (see `elements.rs`) is encoded to the
//! kernel's layout: IPv4 addresses in network order, ports in network
//! order, marks and numgen values in host order, every field of a
//! concatenation padded to 4 bytes.

use std::os::fd::AsFd;
use std::time::Duration;

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};

use crate::plan::Family;

use super::elements::Element;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_GETRULE: u16 = 7;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_DONE: u16 = 3;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_GETSETELEM: u16 = 13;
const NFT_MSG_DELSETELEM: u16 = 14;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NLMSG_ERROR: u16 = 2;
const NLA_F_NESTED: u16 = 0x8000;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
const NFT_GOTO: i32 = -4;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
/// A batch must fit one send; larger deltas go through `nft -f`.
pub const MAX_BATCH_BYTES: usize = 160 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("netlink socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot encode element {0:?} of set {1}")]
    Encode(String, &'static str),
    #[error("nf_tables refused the transaction: {0}")]
    Refused(std::io::Error),
    #[error("the transaction is larger than one netlink batch")]
    TooLarge,
}

/// An address in network order: 4 bytes for IPv4, 16 for IPv6.
fn address(s: &str) -> Option<Vec<u8>> {
    match s.trim().parse::<std::net::IpAddr>().ok()? {
        std::net::IpAddr::V4(ip) => Some(ip.octets().to_vec()),
        std::net::IpAddr::V6(ip) => Some(ip.octets().to_vec()),
    }
}

fn proto(s: &str) -> Option<u8> {
    match s.trim() {
        "tcp" => Some(6),
        "udp" => Some(17),
        "sctp" => Some(132),
        _ => None,
    }
}

fn port(s: &str) -> Option<[u8; 2]> {
    s.trim().parse::<u16>().ok().map(u16::to_be_bytes)
}

fn number(s: &str) -> Option<u32> {
    let s = s.trim();
    match s.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

fn pad4(out: &mut Vec<u8>, field: &[u8]) {
    out.extend_from_slice(field);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// One field of a concatenation, in the kernel's layout.
fn field(kind: char, text: &str) -> Option<Vec<u8>> {
    Some(match kind {
        'a' => address(text)?,
        'p' => vec![proto(text)?],
        's' => port(text)?.to_vec(),
        'm' => number(text)?.to_ne_bytes().to_vec(),
        _ => return None,
    })
}

/// Encodes `a . b . c` by a layout such as "aps" (address, protocol, service).
fn concat(layout: &str, text: &str) -> Option<Vec<u8>> {
    let parts: Vec<&str> = text.split(" . ").collect();
    if parts.len() != layout.len() {
        return None;
    }
    let mut out = Vec::new();
    for (k, p) in layout.chars().zip(parts) {
        pad4(&mut out, &field(k, p)?);
    }
    Some(out)
}

/// Key and data layouts of ferry's sets (see `ruleset.rs`).
fn layout(set: &str) -> Option<(&'static str, Option<&'static str>)> {
    Some(match set {
        "cluster_ips" | "external_ips" => ("aps", Some("m")),
        "node_ports" => ("ps", Some("m")),
        "endpoints" => ("mm", Some("as")),
        "pick" => ("m", None),
        "no_endpoints" | "drop_external" | "firewall_keys" => ("aps", None),
        "no_endpoint_node_ports" | "drop_node_ports" => ("ps", None),
        "hairpin" => ("aa", None),
        "cluster_addresses" => ("a", None),
        "masquerade_slots" | "keep_client_slots" | "cluster_slots" | "canary" => ("m", None),
        s if s.starts_with("affinity_") => ("m", None),
        _ => return None,
    })
}

struct Msg(Vec<u8>);

impl Msg {
    fn new(kind: u16, flags: u16, seq: u32, res_id: u16, family: u8) -> Msg {
        let mut b = Vec::with_capacity(256);
        b.extend_from_slice(&0u32.to_ne_bytes()); // length, set in finish
        b.extend_from_slice(&kind.to_ne_bytes());
        b.extend_from_slice(&flags.to_ne_bytes());
        b.extend_from_slice(&seq.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes()); // port id
        b.push(family); // nfgenmsg.nfgen_family
        b.push(0); // version
        b.extend_from_slice(&res_id.to_be_bytes());
        Msg(b)
    }

    fn attr(&mut self, kind: u16, payload: &[u8]) {
        let len = 4 + payload.len();
        self.0.extend_from_slice(&(len as u16).to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        pad4(&mut self.0, payload);
    }

    fn nest_start(&mut self, kind: u16) -> usize {
        let at = self.0.len();
        self.0.extend_from_slice(&0u16.to_ne_bytes());
        self.0
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        at
    }

    fn nest_end(&mut self, at: usize) {
        let len = (self.0.len() - at) as u16;
        self.0[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn finish(mut self) -> Vec<u8> {
        let len = self.0.len() as u32;
        self.0[0..4].copy_from_slice(&len.to_ne_bytes());
        self.0
    }
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// An open nf_tables netlink socket (in the namespace it was opened in).
pub struct Netlink {
    socket: Socket,
    seq: u32,
    /// AF_INET or AF_INET6: which `ferry` table the messages are for.
    family: u8,
}

impl Netlink {
    /// Opens a socket in this thread's network namespace.
    pub fn open(family: Family) -> Result<Netlink, NetlinkError> {
        let mut socket = Socket::new(NETLINK_NETFILTER)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        socket.set_ext_ack(true).ok();
        let family = match family {
            Family::V4 => AF_INET,
            Family::V6 => AF_INET6,
        };
        Ok(Netlink {
            socket,
            seq: 1,
            family,
        })
    }

    /// Opens a socket in network namespace `netns` (`/run/netns/NAME`); the
    /// socket stays in that namespace for its life.
    pub fn open_in(netns: &str, family: Family) -> Result<Netlink, NetlinkError> {
        let target = std::fs::File::open(format!("/run/netns/{netns}"))?;
        std::thread::scope(|s| {
            s.spawn(|| {
                // setns changes only this short-lived thread's namespace.
                nix::sched::setns(target.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| NetlinkError::Io(std::io::Error::from_raw_os_error(e as i32)))?;
                Netlink::open(family)
            })
            .join()
            .unwrap_or_else(|_| {
                Err(NetlinkError::Io(std::io::Error::other(
                    "setns thread panicked",
                )))
            })
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Deletes then adds elements of `table`, as one transaction.
    pub fn apply(
        &mut self,
        table: &str,
        delete: &[Element],
        add: &[Element],
    ) -> Result<(), NetlinkError> {
        let mut batch = Vec::new();
        let begin = self.next_seq();
        batch.extend(
            Msg::new(
                NFNL_MSG_BATCH_BEGIN,
                NLM_F_REQUEST,
                begin,
                NFNL_SUBSYS_NFTABLES,
                self.family,
            )
            .finish(),
        );
        let mut acks = Vec::new();
        for (kind, elems, with_data) in [
            (NFT_MSG_DELSETELEM, delete, false),
            (NFT_MSG_NEWSETELEM, add, true),
        ] {
            let mut by_set: std::collections::BTreeMap<&'static str, Vec<&Element>> =
                std::collections::BTreeMap::new();
            for e in elems {
                by_set.entry(e.set).or_default().push(e);
            }
            for (set, items) in by_set {
                for chunk in items.chunks(256) {
                    let seq = self.next_seq();
                    let flags =
                        NLM_F_REQUEST | NLM_F_ACK | if with_data { NLM_F_CREATE } else { 0 };
                    let mut m = Msg::new(
                        (NFNL_SUBSYS_NFTABLES << 8) | kind,
                        flags,
                        seq,
                        0,
                        self.family,
                    );
                    m.attr(NFTA_SET_ELEM_LIST_TABLE, &cstr(table));
                    m.attr(NFTA_SET_ELEM_LIST_SET, &cstr(set));
                    let list = m.nest_start(NFTA_SET_ELEM_LIST_ELEMENTS);
                    for e in chunk {
                        encode_element(&mut m, e, with_data)?;
                    }
                    m.nest_end(list);
                    batch.extend(m.finish());
                    acks.push(seq);
                }
            }
        }
        let end = self.next_seq();
        batch.extend(
            Msg::new(
                NFNL_MSG_BATCH_END,
                NLM_F_REQUEST,
                end,
                NFNL_SUBSYS_NFTABLES,
                self.family,
            )
            .finish(),
        );
        if batch.len() > MAX_BATCH_BYTES {
            return Err(NetlinkError::TooLarge);
        }
        self.socket.send(&batch, 0)?;
        self.wait_acks(&acks)
    }

    /// One request; returns the payloads (after the netlink and nfgen
    /// headers) of the answers, or the error the kernel sent.
    fn request(&mut self, m: Msg, seq: u32) -> Result<Vec<Vec<u8>>, NetlinkError> {
        self.socket.send(&m.finish(), 0)?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut out = Vec::new();
        loop {
            let n = self.socket.recv(&mut &mut buf[..], 0)?;
            for (kind, got, payload) in messages(&buf[..n]) {
                if got != seq {
                    continue;
                }
                match kind {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => return error_code(payload).map(|()| out),
                    _ => out.push(payload.get(4..).unwrap_or_default().to_vec()),
                }
            }
        }
    }

    /// The handle of `table`, or `None` when it does not exist. A table
    /// deleted and made again by someone else has a new handle.
    pub fn table_handle(&mut self, table: &str) -> Result<Option<u64>, NetlinkError> {
        let seq = self.next_seq();
        let mut m = Msg::new(
            (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE,
            NLM_F_REQUEST | NLM_F_ACK,
            seq,
            0,
            self.family,
        );
        m.attr(1, &cstr(table)); // NFTA_TABLE_NAME
        match self.request(m, seq) {
            Ok(answers) => Ok(answers
                .iter()
                .find_map(|a| find_attr(a, 4))
                .and_then(|v| v.try_into().ok())
                .map(u64::from_be_bytes)),
            Err(NetlinkError::Refused(e)) if e.raw_os_error() == Some(2) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// How many rules `table` has (a dump; ferry's table has a fixed, small number).
    pub fn rule_count(&mut self, table: &str) -> Result<usize, NetlinkError> {
        let seq = self.next_seq();
        let mut m = Msg::new(
            (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETRULE,
            NLM_F_REQUEST | NLM_F_DUMP,
            seq,
            0,
            self.family,
        );
        m.attr(1, &cstr(table)); // NFTA_RULE_TABLE
        match self.request(m, seq) {
            Ok(answers) => Ok(answers.len()),
            Err(NetlinkError::Refused(e)) if e.raw_os_error() == Some(2) => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Whether `set` holds an element with this key (encoded like the set's keys).
    pub fn has_element(&mut self, table: &str, e: &Element) -> Result<bool, NetlinkError> {
        let seq = self.next_seq();
        let mut m = Msg::new(
            (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETSETELEM,
            NLM_F_REQUEST | NLM_F_ACK,
            seq,
            0,
            self.family,
        );
        m.attr(NFTA_SET_ELEM_LIST_TABLE, &cstr(table));
        m.attr(NFTA_SET_ELEM_LIST_SET, &cstr(e.set));
        let list = m.nest_start(NFTA_SET_ELEM_LIST_ELEMENTS);
        encode_element(&mut m, e, false)?;
        m.nest_end(list);
        match self.request(m, seq) {
            Ok(answers) => Ok(!answers.is_empty()),
            Err(NetlinkError::Refused(e)) if e.raw_os_error() == Some(2) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn wait_acks(&mut self, seqs: &[u32]) -> Result<(), NetlinkError> {
        let mut pending: std::collections::BTreeSet<u32> = seqs.iter().copied().collect();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut buf = vec![0u8; 64 * 1024];
        while !pending.is_empty() {
            if std::time::Instant::now() > deadline {
                return Err(NetlinkError::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no answer from nf_tables",
                )));
            }
            let n = self.socket.recv(&mut &mut buf[..], 0)?;
            for (kind, seq, payload) in messages(&buf[..n]) {
                if kind == NLMSG_ERROR {
                    error_code(payload)?;
                    pending.remove(&seq);
                }
            }
        }
        Ok(())
    }
}

/// The netlink messages in a received buffer: (type, sequence, payload
/// after the 16-byte header).
fn messages(buf: &[u8]) -> impl Iterator<Item = (u16, u32, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at + 16 > buf.len() {
            return None;
        }
        let len = u32::from_ne_bytes(buf[at..at + 4].try_into().ok()?) as usize;
        let kind = u16::from_ne_bytes(buf[at + 4..at + 6].try_into().ok()?);
        let seq = u32::from_ne_bytes(buf[at + 8..at + 12].try_into().ok()?);
        if len < 16 || at + len > buf.len() {
            return None;
        }
        let payload = &buf[at + 16..at + len];
        at += (len + 3) & !3;
        Some((kind, seq, payload))
    })
}

/// An NLMSG_ERROR payload: code 0 is an acknowledgement.
fn error_code(payload: &[u8]) -> Result<(), NetlinkError> {
    let code = payload
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, i32::from_ne_bytes);
    if code == 0 {
        Ok(())
    } else {
        Err(NetlinkError::Refused(std::io::Error::from_raw_os_error(
            -code,
        )))
    }
}

/// The payload of top-level attribute `kind` in a message body.
fn find_attr(body: &[u8], kind: u16) -> Option<Vec<u8>> {
    let mut at = 0;
    while at + 4 <= body.len() {
        let len = u16::from_ne_bytes([body[at], body[at + 1]]) as usize;
        let k = u16::from_ne_bytes([body[at + 2], body[at + 3]]) & 0x3fff;
        if len < 4 || at + len > body.len() {
            return None;
        }
        if k == kind {
            return Some(body[at + 4..at + len].to_vec());
        }
        at += (len + 3) & !3;
    }
    None
}

fn encode_element(m: &mut Msg, e: &Element, with_data: bool) -> Result<(), NetlinkError> {
    let bad = || NetlinkError::Encode(format!("{} : {:?}", e.key, e.value), e.set);
    let (key_layout, data_layout) = layout(e.set).ok_or_else(bad)?;
    let key = concat(key_layout, &e.key).ok_or_else(bad)?;
    let el = m.nest_start(NFTA_LIST_ELEM);
    let k = m.nest_start(NFTA_SET_ELEM_KEY);
    m.attr(NFTA_DATA_VALUE, &key);
    m.nest_end(k);
    if with_data && let Some(value) = &e.value {
        let d = m.nest_start(NFTA_SET_ELEM_DATA);
        match (data_layout, value.strip_prefix("goto ")) {
            (None, Some(chain)) => {
                let v = m.nest_start(NFTA_DATA_VERDICT);
                m.attr(NFTA_VERDICT_CODE, &NFT_GOTO.to_be_bytes());
                m.attr(NFTA_VERDICT_CHAIN, &cstr(chain));
                m.nest_end(v);
            }
            (Some(layout), None) => {
                let data = concat(layout, value).ok_or_else(bad)?;
                m.attr(NFTA_DATA_VALUE, &data);
            }
            _ => return Err(bad()),
        }
        m.nest_end(d);
    }
    m.nest_end(el);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concatenations_pad_every_field_to_four_bytes() {
        assert_eq!(
            concat("aps", "10.96.0.1 . tcp . 80").unwrap(),
            vec![10, 96, 0, 1, 6, 0, 0, 0, 0, 80, 0, 0]
        );
        assert_eq!(
            concat("as", "10.0.0.2 . 8080").unwrap(),
            vec![10, 0, 0, 2, 0x1f, 0x90, 0, 0]
        );
        assert_eq!(
            concat("m", "0x1003").unwrap(),
            0x1003u32.to_ne_bytes().to_vec()
        );
        assert!(concat("aps", "10.96.0.1 . tcp").is_none());
        assert!(concat("a", "not-an-ip").is_none());
    }

    #[test]
    fn every_set_of_the_ruleset_has_a_layout() {
        for set in [
            "cluster_ips",
            "external_ips",
            "node_ports",
            "endpoints",
            "pick",
            "no_endpoints",
            "drop_external",
            "no_endpoint_node_ports",
            "drop_node_ports",
            "hairpin",
            "masquerade_slots",
            "keep_client_slots",
            "cluster_slots",
            "cluster_addresses",
        ] {
            assert!(layout(set).is_some(), "{set}");
            assert!(
                super::super::ruleset::table(Family::V4, &[], &[]).contains(&format!(" {set} {{")),
                "{set} is in the table"
            );
        }
    }
}
