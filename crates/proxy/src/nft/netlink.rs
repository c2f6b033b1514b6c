//! Element changes sent to nf_tables over netlink, as one batch (one
//! atomic transaction): no `nft` process, no cache of the ruleset read
//! back. Only set-element messages are spoken here; the table itself is
//! loaded with `nft -f` (rarely: at start, after a failure).
//!
//! The element text ferry generates (see `elements.rs`) is encoded to the
//! kernel's layout: IPv4 addresses in network order, ports in network
//! order, marks and numgen values in host order, every field of a
//! concatenation padded to 4 bytes.

use ferry_sys::netlink::{
    Msg, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REQUEST, NfSocket, cstr, find_attr, pad4,
};

use crate::plan::Family;

use super::elements::Element;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_GETSETELEM: u16 = 13;
const NFT_MSG_DELSETELEM: u16 = 14;
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

/// An open nf_tables netlink socket (in the namespace it was opened in).
pub struct Netlink {
    socket: NfSocket,
    /// AF_INET or AF_INET6: which `ferry` table the messages are for.
    family: u8,
}

fn af(family: Family) -> u8 {
    match family {
        Family::V4 => AF_INET,
        Family::V6 => AF_INET6,
    }
}

impl Netlink {
    /// Opens a socket in this thread's network namespace.
    pub fn open(family: Family) -> Result<Netlink, NetlinkError> {
        Ok(Netlink {
            socket: NfSocket::open()?,
            family: af(family),
        })
    }

    /// Opens a socket in network namespace `netns` (`/run/netns/NAME`); the
    /// socket stays in that namespace for its life.
    pub fn open_in(netns: &str, family: Family) -> Result<Netlink, NetlinkError> {
        Ok(Netlink {
            socket: NfSocket::open_in(netns)?,
            family: af(family),
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.socket.next_seq()
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
        self.socket.send(&batch)?;
        self.socket
            .wait_acks(&acks, |_| false)
            .map_err(|(_, e)| NetlinkError::Refused(e))
    }

    /// One request; returns the payloads (after the nfgen header) of the
    /// answers, or the error the kernel sent.
    fn request(&mut self, m: Msg, seq: u32) -> Result<Vec<Vec<u8>>, NetlinkError> {
        match self.socket.request(m.finish(), seq) {
            Ok(answers) => Ok(answers
                .into_iter()
                .map(|a| a.get(4..).unwrap_or_default().to_vec())
                .collect()),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Err(NetlinkError::Io(e)),
            Err(e) if e.raw_os_error().is_some() => Err(NetlinkError::Refused(e)),
            Err(e) => Err(NetlinkError::Io(e)),
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
                .and_then(|v: &[u8]| v.try_into().ok())
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
