//! The kernel side of conntrack cleanup, over ctnetlink: one dump of the
//! UDP entries of a family, then the stale ones deleted in batches of
//! messages sent together. The only place that talks to conntrack.

use std::net::IpAddr;

use ferry_sys::netlink::{Msg, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NfSocket, attrs, find_attr};

use super::stale::{Flow, StaleFlows};
use crate::plan::Family;

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_ID: u16 = 12;
const CTA_ZONE: u16 = 18;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const IPPROTO_UDP: u8 = 17;
const ENOENT: i32 = 2;
/// Deletes sent in one write: each is acknowledged, and the acknowledgements
/// of one write must fit the socket's receive buffer (about 208 KiB by
/// default, roughly 1 KiB of accounting each).
const BATCH: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum ConntrackError {
    #[error("conntrack netlink: {0}")]
    Io(#[from] std::io::Error),
}

/// A ctnetlink socket for one IP family.
pub struct Conntrack {
    socket: NfSocket,
    family: Family,
}

fn af(family: Family) -> u8 {
    match family {
        Family::V4 => 2,
        Family::V6 => 10,
    }
}

impl Conntrack {
    /// In this thread's network namespace.
    pub fn open(family: Family) -> Result<Conntrack, ConntrackError> {
        Ok(Conntrack {
            socket: NfSocket::open()?,
            family,
        })
    }

    /// In network namespace `netns` (tests and benchmarks).
    pub fn open_in(netns: &str, family: Family) -> Result<Conntrack, ConntrackError> {
        Ok(Conntrack {
            socket: NfSocket::open_in(netns)?,
            family,
        })
    }

    /// Every UDP entry of this family.
    pub fn udp_flows(&mut self) -> Result<Vec<Flow>, ConntrackError> {
        let seq = self.socket.next_seq();
        let m = Msg::new(
            (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET,
            NLM_F_REQUEST | NLM_F_DUMP,
            seq,
            0,
            af(self.family),
        );
        let answers = self.socket.request(m.finish(), seq)?;
        Ok(answers.iter().filter_map(|a| decode(a.get(4..)?)).collect())
    }

    /// Deletes `flows` (already gone is fine); how many were deleted.
    pub fn delete(&mut self, flows: &[Flow]) -> Result<usize, ConntrackError> {
        let mut deleted = 0;
        let mut batch = Vec::new();
        let mut seqs = Vec::new();
        for (i, f) in flows.iter().enumerate() {
            let seq = self.socket.next_seq();
            batch.extend(encode_delete(f, seq, af(self.family)));
            seqs.push(seq);
            if seqs.len() >= BATCH || i + 1 == flows.len() {
                self.socket.send(&batch)?;
                self.socket
                    .wait_acks(&seqs, |errno| errno == ENOENT)
                    .map_err(|(_, e)| ConntrackError::Io(e))?;
                deleted += seqs.len();
                batch.clear();
                seqs.clear();
            }
        }
        Ok(deleted)
    }

    /// Deletes the flows `stale` names: one dump, then the matches in
    /// batches. `local` says whether an address is this node's.
    pub fn clean(
        &mut self,
        stale: &[StaleFlows],
        local: &dyn Fn(&IpAddr) -> bool,
    ) -> Result<usize, ConntrackError> {
        if stale.iter().all(StaleFlows::is_empty) {
            return Ok(0);
        }
        let doomed: Vec<Flow> = self
            .udp_flows()?
            .into_iter()
            .filter(|f| stale.iter().any(|s| s.matches(f, local)))
            .collect();
        self.delete(&doomed)
    }
}

fn ip_of(kind: u16, payload: &[u8]) -> Option<IpAddr> {
    match kind {
        CTA_IP_V4_SRC | CTA_IP_V4_DST => {
            let b: [u8; 4] = payload.try_into().ok()?;
            Some(IpAddr::from(b))
        }
        CTA_IP_V6_SRC | CTA_IP_V6_DST => {
            let b: [u8; 16] = payload.try_into().ok()?;
            Some(IpAddr::from(b))
        }
        _ => None,
    }
}

/// An address and port.
type Endpoint = (IpAddr, u16);

/// (source, destination, protocol) of a CTA_TUPLE_* attribute.
fn tuple(body: &[u8]) -> Option<(Endpoint, Endpoint, u8)> {
    let ip = find_attr(body, CTA_TUPLE_IP)?;
    let mut src = None;
    let mut dst = None;
    for (k, p) in attrs(ip) {
        match k {
            CTA_IP_V4_SRC | CTA_IP_V6_SRC => src = ip_of(k, p),
            CTA_IP_V4_DST | CTA_IP_V6_DST => dst = ip_of(k, p),
            _ => {}
        }
    }
    let proto = find_attr(body, CTA_TUPLE_PROTO)?;
    let num = *find_attr(proto, CTA_PROTO_NUM)?.first()?;
    let port = |k| {
        find_attr(proto, k)
            .and_then(|p| p.try_into().ok())
            .map(u16::from_be_bytes)
    };
    Some((
        (src?, port(CTA_PROTO_SRC_PORT)?),
        (dst?, port(CTA_PROTO_DST_PORT)?),
        num,
    ))
}

/// A dumped entry (after the nfgen header), if it is UDP.
fn decode(body: &[u8]) -> Option<Flow> {
    let (orig_src, orig_dst, proto) = tuple(find_attr(body, CTA_TUPLE_ORIG)?)?;
    if proto != IPPROTO_UDP {
        return None;
    }
    let (reply_src, _, _) = tuple(find_attr(body, CTA_TUPLE_REPLY)?)?;
    Some(Flow {
        orig_src,
        orig_dst,
        reply_src,
        id: find_attr(body, CTA_ID)
            .and_then(|p| p.try_into().ok())
            .map(u32::from_be_bytes),
        zone: find_attr(body, CTA_ZONE)
            .and_then(|p| p.try_into().ok())
            .map(u16::from_be_bytes),
    })
}

fn encode_delete(f: &Flow, seq: u32, family: u8) -> Vec<u8> {
    let mut m = Msg::new(
        (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        0,
        family,
    );
    let t = m.nest_start(CTA_TUPLE_ORIG);
    let ip = m.nest_start(CTA_TUPLE_IP);
    match (f.orig_src.0, f.orig_dst.0) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            m.attr(CTA_IP_V4_SRC, &s.octets());
            m.attr(CTA_IP_V4_DST, &d.octets());
        }
        (s, d) => {
            let v6 = |a: IpAddr| match a {
                IpAddr::V6(a) => a.octets(),
                IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            };
            m.attr(CTA_IP_V6_SRC, &v6(s));
            m.attr(CTA_IP_V6_DST, &v6(d));
        }
    }
    m.nest_end(ip);
    let p = m.nest_start(CTA_TUPLE_PROTO);
    m.attr(CTA_PROTO_NUM, &[IPPROTO_UDP]);
    m.attr(CTA_PROTO_SRC_PORT, &f.orig_src.1.to_be_bytes());
    m.attr(CTA_PROTO_DST_PORT, &f.orig_dst.1.to_be_bytes());
    m.nest_end(p);
    m.nest_end(t);
    if let Some(id) = f.id {
        m.attr(CTA_ID, &id.to_be_bytes());
    }
    if let Some(zone) = f.zone {
        m.attr(CTA_ZONE, &zone.to_be_bytes());
    }
    m.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delete_message_decodes_back_to_its_flow() {
        let f = Flow {
            orig_src: ("10.0.0.5".parse().unwrap(), 40000),
            orig_dst: ("10.96.0.10".parse().unwrap(), 53),
            reply_src: ("10.0.0.5".parse().unwrap(), 40000),
            id: Some(77),
            zone: None,
        };
        let bytes = encode_delete(&f, 1, 2);
        let (_, _, payload) = ferry_sys::netlink::messages(&bytes).next().unwrap();
        let body = &payload[4..];
        let (src, dst, proto) = tuple(find_attr(body, CTA_TUPLE_ORIG).unwrap()).unwrap();
        assert_eq!((src, dst, proto), (f.orig_src, f.orig_dst, IPPROTO_UDP));
        assert_eq!(find_attr(body, CTA_ID), Some(&77u32.to_be_bytes()[..]));
    }
}
