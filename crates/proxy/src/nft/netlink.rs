//! Element changes sent to nf_tables over netlink, as one batch (one
//! atomic transaction): no `nft` process, no cache of the ruleset read
//! back. Only set-element messages are spoken here; the table itself is
//! loaded with `nft -f` (rarely: at start, after a failure).
//!
//! Elements are encoded to, and decoded from, the kernel's layout by their
//! set's definition (`sets.rs`). A dump of a set decodes into the same
//! typed elements the backend programs, so what the kernel holds can be
//! compared with what ferry wanted.

use ferry_sys::netlink::{
    Msg, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REQUEST, NfSocket, attrs, cstr, find_attr,
};

use crate::plan::Family;

use super::sets::{self, Data, DataDef, Element, Key, Set, Value};

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
const NFTA_SET_ELEM_FLAGS: u16 = 3;
const NFTA_SET_ELEM_KEY_END: u16 = 10;
const NFT_SET_ELEM_INTERVAL_END: u32 = 1;
const NFT_GOTO: i32 = -4;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
/// A batch must fit one send; larger deltas go through `nft -f`.
pub const MAX_BATCH_BYTES: usize = 160 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("netlink socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot encode element {0} (not the shape of its set, or an interval)")]
    Encode(String),
    #[error("cannot decode an element of set {0}: {1}")]
    Decode(String, String),
    #[error("nf_tables refused the transaction: {0}")]
    Refused(std::io::Error),
    #[error("the transaction is larger than one netlink batch")]
    TooLarge,
}

/// An open nf_tables netlink socket (in the namespace it was opened in).
pub struct Netlink {
    socket: NfSocket,
    /// AF_INET or AF_INET6: which `ferry` table the messages are for.
    family: u8,
    /// The same, for decoding addresses.
    ip_family: Family,
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
            ip_family: family,
        })
    }

    /// Opens a socket in network namespace `netns` (`/run/netns/NAME`); the
    /// socket stays in that namespace for its life.
    pub fn open_in(netns: &str, family: Family) -> Result<Netlink, NetlinkError> {
        Ok(Netlink {
            socket: NfSocket::open_in(netns)?,
            family: af(family),
            ip_family: family,
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
            let mut by_set: std::collections::BTreeMap<Set, Vec<&Element>> =
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
                    m.attr(NFTA_SET_ELEM_LIST_SET, &cstr(&set.name()));
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
        m.attr(NFTA_SET_ELEM_LIST_SET, &cstr(&e.set.name()));
        let list = m.nest_start(NFTA_SET_ELEM_LIST_ELEMENTS);
        encode_element(&mut m, e, false)?;
        m.nest_end(list);
        match self.request(m, seq) {
            Ok(answers) => Ok(!answers.is_empty()),
            Err(NetlinkError::Refused(e)) if e.raw_os_error() == Some(2) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Every element of `set` in `table`, decoded (a dump). Interval
    /// sets come back as the prefixes `nft` was given.
    pub fn elements(&mut self, table: &str, set: Set) -> Result<Vec<Element>, NetlinkError> {
        let seq = self.next_seq();
        let mut m = Msg::new(
            (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETSETELEM,
            NLM_F_REQUEST | NLM_F_DUMP,
            seq,
            0,
            self.family,
        );
        m.attr(NFTA_SET_ELEM_LIST_TABLE, &cstr(table));
        m.attr(NFTA_SET_ELEM_LIST_SET, &cstr(&set.name()));
        let answers = self.request(m, seq)?;
        let bad = |why: &str| NetlinkError::Decode(set.name().into_owned(), why.to_string());
        let mut raw = Vec::new();
        for a in &answers {
            let list = find_attr(a, NFTA_SET_ELEM_LIST_ELEMENTS).unwrap_or_default();
            for (kind, el) in attrs(list) {
                if kind == NFTA_LIST_ELEM {
                    raw.push(raw_element(el).ok_or_else(|| bad("malformed element"))?);
                }
            }
        }
        decode_elements(self.ip_family, set, &raw).map_err(|why| bad(&why))
    }
}

/// One element as the kernel lists it, before decoding by its set.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RawElement {
    pub key: Vec<u8>,
    /// The inclusive end of a range in a concatenation with an interval.
    pub key_end: Option<Vec<u8>>,
    /// The exclusive end of a range in a plain interval set.
    pub interval_end: bool,
    pub data: Option<Vec<u8>>,
    pub chain: Option<String>,
}

fn raw_element(el: &[u8]) -> Option<RawElement> {
    let value = |attr: u16| find_attr(el, attr).and_then(|k| find_attr(k, NFTA_DATA_VALUE));
    let flags = find_attr(el, NFTA_SET_ELEM_FLAGS)
        .and_then(|f| f.try_into().ok())
        .map_or(0, u32::from_be_bytes);
    let data = find_attr(el, NFTA_SET_ELEM_DATA);
    let chain = data
        .and_then(|d| find_attr(d, NFTA_DATA_VERDICT))
        .and_then(|v| find_attr(v, NFTA_VERDICT_CHAIN))
        .map(|c| String::from_utf8_lossy(c.split(|b| *b == 0).next().unwrap_or(c)).into_owned());
    Some(RawElement {
        key: value(NFTA_SET_ELEM_KEY)?.to_vec(),
        key_end: value(NFTA_SET_ELEM_KEY_END).map(<[u8]>::to_vec),
        interval_end: flags & NFT_SET_ELEM_INTERVAL_END != 0,
        data: data
            .and_then(|d| find_attr(d, NFTA_DATA_VALUE))
            .map(<[u8]>::to_vec),
        chain,
    })
}

/// Decodes the elements of `set` as the kernel listed them (a table of
/// `family`): each by its set's definition; the start and end elements of
/// a plain interval set are paired up again into prefixes.
pub fn decode_elements(
    family: Family,
    set: Set,
    raw: &[RawElement],
) -> Result<Vec<Element>, String> {
    let def = set.def();
    let mut out = Vec::new();
    let mut bounds = Vec::new();
    for r in raw {
        let key = sets::decode(family, def.key, &r.key)
            .ok_or_else(|| format!("key {:?} is not {:?}", r.key, def.key))?;
        let key = &key.0[..key.1];
        if set.is_interval() && def.key.len() == 1 {
            // A plain interval set: start and (exclusive) end elements.
            let Some(Value::Net(n)) = key.first() else {
                return Err("interval bound is not an address".into());
            };
            bounds.push((n.addr(), r.interval_end));
            continue;
        }
        let mut key = key.to_vec();
        if let Some(end) = &r.key_end {
            // A concatenation with an interval: the last field is a range.
            let end = sets::decode(family, def.key, end).ok_or("malformed key end")?;
            match (key.last_mut(), end.0.get(end.1.wrapping_sub(1))) {
                (Some(Value::Net(first)), Some(Value::Net(last))) => {
                    *first =
                        sets::prefix(first.addr(), last.addr()).ok_or("range is not a prefix")?;
                }
                _ => return Err("key end without a range".into()),
            }
        }
        let key = Key::from_values(&key).ok_or("no key has this shape")?;
        let data = match def.data {
            DataDef::None => None,
            DataDef::Verdict => Some(
                r.chain
                    .as_deref()
                    .and_then(Data::from_chain)
                    .ok_or("verdict is not a goto to a pick chain")?,
            ),
            DataDef::Fields(f) => {
                let bytes = r.data.as_deref().ok_or("map element without data")?;
                let v = sets::decode(family, f, bytes).ok_or("malformed data")?;
                Some(Data::from_values(&v.0[..v.1]).ok_or("no data has this shape")?)
            }
        };
        out.push(Element::new(set, key, data));
    }
    // Sorted by address, a start is followed by its end (none: to the end
    // of the address space); an end first is the kernel's marker of the
    // gap before the first range. Where one range ends and the next
    // starts, the end comes first.
    bounds.sort_by_key(|(addr, is_end)| (*addr, !*is_end));
    let mut i = 0;
    while i < bounds.len() {
        let (first, is_end) = bounds[i];
        i += 1;
        if is_end {
            continue;
        }
        let last = match bounds.get(i) {
            Some((end, true)) => {
                i += 1;
                sets::before(*end).ok_or("interval ends at zero")?
            }
            _ => sets::last_address(family),
        };
        let net = sets::prefix(first, last).ok_or("range is not a prefix")?;
        out.push(Element::new(set, Key::Net(net), None));
    }
    out.sort_unstable();
    Ok(out)
}

/// An element in the kernel's layout: what a message carries for it.
/// Interval sets need more than one element per prefix (a start and an
/// end) or a key end; `None` when `e` is not the shape of its set.
pub fn raw_elements(e: &Element) -> Option<Vec<RawElement>> {
    if !e.fits() {
        return None;
    }
    let (values, n) = e.key.values();
    let data = match &e.data {
        Some(d) if d.chain().is_none() => Some(sets::encode(&d.values())?),
        _ => None,
    };
    let chain = e.data.as_ref().and_then(Data::chain);
    let Some(Value::Net(net)) = values[..n].last().copied() else {
        return Some(vec![RawElement {
            key: sets::encode(&(values, n))?,
            data,
            chain,
            ..RawElement::default()
        }]);
    };
    let with_last = |addr| {
        let mut v = values;
        v[n - 1] = Value::Addr(addr);
        sets::encode(&(v, n))
    };
    if n > 1 {
        // A concatenation with an interval: one element, first to last.
        return Some(vec![RawElement {
            key: with_last(net.network())?,
            key_end: Some(with_last(net.broadcast())?),
            data,
            chain,
            ..RawElement::default()
        }]);
    }
    // A plain interval: a start, and an exclusive end unless the prefix
    // runs to the end of the address space.
    let mut out = vec![RawElement {
        key: with_last(net.network())?,
        ..RawElement::default()
    }];
    if let Some(end) = sets::after(net) {
        out.push(RawElement {
            key: with_last(end)?,
            interval_end: true,
            ..RawElement::default()
        });
    }
    Some(out)
}

fn encode_element(m: &mut Msg, e: &Element, with_data: bool) -> Result<(), NetlinkError> {
    let bad = || NetlinkError::Encode(e.to_string());
    // Interval elements go through `nft` (see `NftBackend::sync`).
    let raws = raw_elements(e).ok_or_else(bad)?;
    let [raw] = raws.as_slice() else {
        return Err(bad());
    };
    if raw.key_end.is_some() {
        return Err(bad());
    }
    let el = m.nest_start(NFTA_LIST_ELEM);
    let k = m.nest_start(NFTA_SET_ELEM_KEY);
    m.attr(NFTA_DATA_VALUE, &raw.key);
    m.nest_end(k);
    if with_data && (raw.data.is_some() || raw.chain.is_some()) {
        let d = m.nest_start(NFTA_SET_ELEM_DATA);
        if let Some(chain) = &raw.chain {
            let v = m.nest_start(NFTA_DATA_VERDICT);
            m.attr(NFTA_VERDICT_CODE, &NFT_GOTO.to_be_bytes());
            m.attr(NFTA_VERDICT_CHAIN, &cstr(chain));
            m.nest_end(v);
        }
        if let Some(data) = &raw.data {
            m.attr(NFTA_DATA_VALUE, data);
        }
        m.nest_end(d);
    }
    m.nest_end(el);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bound(ip: &str, interval_end: bool) -> RawElement {
        let ip: std::net::Ipv4Addr = ip.parse().unwrap();
        RawElement {
            key: ip.octets().to_vec(),
            interval_end,
            ..RawElement::default()
        }
    }

    #[test]
    fn interval_bounds_pair_up_into_prefixes_in_any_order() {
        // As the kernel may list them: newest first, with the end marker
        // before the first range, and two ranges that touch.
        let raw = [
            bound("10.1.0.0", true),
            bound("10.0.128.0", false),
            bound("0.0.0.0", true),
            bound("10.0.128.0", true),
            bound("10.0.0.0", false),
            bound("192.169.0.0", true),
            bound("192.168.0.0", false),
            // A range to the end of the address space has no end element.
            bound("224.0.0.0", false),
        ];
        let got = decode_elements(Family::V4, Set::ClusterCidrs, &raw).unwrap();
        let want: Vec<Element> = [
            "10.0.0.0/17",
            "10.0.128.0/17",
            "192.168.0.0/16",
            "224.0.0.0/3",
        ]
        .iter()
        .map(|n| Element::new(Set::ClusterCidrs, Key::Net(n.parse().unwrap()), None))
        .collect();
        assert_eq!(got, want);
    }
}
