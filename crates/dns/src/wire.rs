//! The DNS wire format as the hot path needs it: parse one query (header,
//! one question, the EDNS OPT record) without allocating, and write answers
//! by copying the question and appending pre-encoded records.
//!
//! Pure: bytes in, bytes out; no I/O.

pub(crate) const TYPE_A: u16 = 1;
pub(crate) const TYPE_NS: u16 = 2;
pub(crate) const TYPE_CNAME: u16 = 5;
pub(crate) const TYPE_SOA: u16 = 6;
pub(crate) const TYPE_PTR: u16 = 12;
pub(crate) const TYPE_MX: u16 = 15;
pub(crate) const TYPE_TXT: u16 = 16;
pub(crate) const TYPE_AAAA: u16 = 28;
pub(crate) const TYPE_SRV: u16 = 33;
pub(crate) const TYPE_OPT: u16 = 41;
pub(crate) const TYPE_IXFR: u16 = 251;
pub(crate) const TYPE_AXFR: u16 = 252;
pub(crate) const TYPE_ANY: u16 = 255;
pub(crate) const CLASS_IN: u16 = 1;

/// The largest UDP answer without EDNS (RFC 1035).
pub(crate) const PLAIN_UDP_LIMIT: usize = 512;
/// The UDP payload size ferry advertises and accepts at most (DNS Flag Day 2020).
pub(crate) const EDNS_UDP_LIMIT: u16 = 1232;
/// The longest name in wire format (RFC 1035 §2.3.4).
pub(crate) const MAX_NAME: usize = 255;

const FLAG_QR: u16 = 0x8000;
const FLAG_AA: u16 = 0x0400;
const FLAG_TC: u16 = 0x0200;
const FLAG_RD: u16 = 0x0100;
const FLAG_RA: u16 = 0x0080;
const FLAG_CD: u16 = 0x0010;
const OPCODE_MASK: u16 = 0x7800;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rcode {
    NoError = 0,
    FormErr = 1,
    ServFail = 2,
    NxDomain = 3,
    NotImp = 4,
    Refused = 5,
}

/// The EDNS(0) facts of a query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Edns {
    pub udp_size: u16,
    pub dnssec_ok: bool,
}

/// A lowercased name in wire format, with the offset of each label.
#[derive(Clone)]
pub(crate) struct Name {
    bytes: [u8; MAX_NAME],
    len: u8,
    starts: [u8; 128],
    labels: u8,
}

impl Name {
    /// The whole name, root label included.
    pub fn wire(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    pub fn label_count(&self) -> usize {
        self.labels as usize
    }

    /// Label `i` counted from the left, without its length byte.
    pub fn label(&self, i: usize) -> &[u8] {
        let start = self.starts[i] as usize;
        let len = self.bytes[start] as usize;
        &self.bytes[start + 1..start + 1 + len]
    }

    /// The name without its first `n` labels, in wire format.
    pub fn suffix(&self, n: usize) -> &[u8] {
        let start = if n >= self.labels as usize {
            self.len as usize - 1
        } else {
            self.starts[n] as usize
        };
        &self.bytes[start..self.len as usize]
    }

    /// Offset of the suffix that drops the first `n` labels, within the name.
    pub fn suffix_offset(&self, n: usize) -> usize {
        if n >= self.labels as usize {
            self.len as usize - 1
        } else {
            self.starts[n] as usize
        }
    }
}

/// One parsed query. Offsets point into `packet`.
pub(crate) struct Query<'a> {
    pub packet: &'a [u8],
    pub id: u16,
    flags: u16,
    /// End of the question section (the question starts at 12).
    pub question_end: usize,
    pub qtype: u16,
    pub qclass: u16,
    pub name: Name,
    pub edns: Option<Edns>,
}

impl Query<'_> {
    pub fn checking_disabled(&self) -> bool {
        self.flags & FLAG_CD != 0
    }

    /// The largest answer this client takes over UDP.
    pub fn udp_limit(&self) -> usize {
        match self.edns {
            Some(e) => (e.udp_size.clamp(512, EDNS_UDP_LIMIT)) as usize,
            None => PLAIN_UDP_LIMIT,
        }
    }
}

/// Why a packet is not a query ferry answers normally.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Malformed {
    /// Not answerable at all (too short, or itself a response): dropped.
    Drop(&'static str),
    /// Answered with `rcode`; `question_end` is set when the question parsed.
    Respond {
        id: u16,
        flags: u16,
        rcode: Rcode,
        question_end: Option<usize>,
        reason: &'static str,
    },
}

fn be16(p: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*p.get(at)?, *p.get(at + 1)?]))
}

/// Parses a query. Never panics, whatever the bytes.
pub(crate) fn parse_query(packet: &[u8]) -> Result<Query<'_>, Malformed> {
    if packet.len() < 12 {
        return Err(Malformed::Drop("shorter than a DNS header"));
    }
    let id = be16(packet, 0).unwrap_or(0);
    let flags = be16(packet, 2).unwrap_or(0);
    if flags & FLAG_QR != 0 {
        return Err(Malformed::Drop("a response, not a query"));
    }
    let respond = |rcode, question_end, reason| Malformed::Respond {
        id,
        flags,
        rcode,
        question_end,
        reason,
    };
    let qdcount = be16(packet, 4).unwrap_or(0);
    if flags & OPCODE_MASK != 0 {
        return Err(respond(Rcode::NotImp, None, "opcode other than QUERY"));
    }
    if qdcount != 1 {
        return Err(respond(Rcode::FormErr, None, "question count is not 1"));
    }
    let mut name = Name {
        bytes: [0; MAX_NAME],
        len: 0,
        starts: [0; 128],
        labels: 0,
    };
    let mut pos = 12;
    loop {
        let Some(&len) = packet.get(pos) else {
            return Err(respond(
                Rcode::FormErr,
                None,
                "question name runs past the packet",
            ));
        };
        if len & 0xC0 != 0 {
            return Err(respond(
                Rcode::FormErr,
                None,
                "compressed or extended label in the question",
            ));
        }
        let len = len as usize;
        let at = name.len as usize;
        if at + 1 + len > MAX_NAME {
            return Err(respond(
                Rcode::FormErr,
                None,
                "question name longer than 255 bytes",
            ));
        }
        let Some(label) = packet.get(pos + 1..pos + 1 + len) else {
            return Err(respond(
                Rcode::FormErr,
                None,
                "question name runs past the packet",
            ));
        };
        name.bytes[at] = len as u8;
        if len == 0 {
            name.len = (at + 1) as u8;
            pos += 1;
            break;
        }
        name.starts[name.labels as usize] = at as u8;
        name.labels += 1;
        for (i, b) in label.iter().enumerate() {
            name.bytes[at + 1 + i] = b.to_ascii_lowercase();
        }
        name.len = (at + 1 + len) as u8;
        pos += 1 + len;
    }
    let (Some(qtype), Some(qclass)) = (be16(packet, pos), be16(packet, pos + 2)) else {
        return Err(respond(
            Rcode::FormErr,
            None,
            "question type or class missing",
        ));
    };
    let question_end = pos + 4;
    let counts = [6, 8, 10].map(|at| be16(packet, at).unwrap_or(0) as usize);
    let mut edns = None;
    let mut pos = question_end;
    for i in 0..counts.iter().sum::<usize>() {
        let Some(after_name) = skip_name(packet, pos) else {
            return Err(respond(
                Rcode::FormErr,
                Some(question_end),
                "record name malformed",
            ));
        };
        let (Some(rtype), Some(class), Some(rdlen)) = (
            be16(packet, after_name),
            be16(packet, after_name + 2),
            be16(packet, after_name + 8),
        ) else {
            return Err(respond(
                Rcode::FormErr,
                Some(question_end),
                "record truncated",
            ));
        };
        let end = after_name + 10 + rdlen as usize;
        if end > packet.len() {
            return Err(respond(
                Rcode::FormErr,
                Some(question_end),
                "record data runs past the packet",
            ));
        }
        let in_additional = i >= counts[0] + counts[1];
        if rtype == TYPE_OPT {
            if !in_additional || edns.is_some() || packet[pos] != 0 {
                return Err(respond(
                    Rcode::FormErr,
                    Some(question_end),
                    "misplaced OPT record",
                ));
            }
            let ttl_flags = be16(packet, after_name + 6).unwrap_or(0);
            edns = Some(Edns {
                udp_size: class,
                dnssec_ok: ttl_flags & 0x8000 != 0,
            });
        }
        pos = end;
    }
    Ok(Query {
        packet,
        id,
        flags,
        question_end,
        qtype,
        qclass,
        name,
        edns,
    })
}

/// Skips a possibly compressed name starting at `pos`; returns the offset after it.
pub(crate) fn skip_name(packet: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        let len = *packet.get(pos)?;
        match len & 0xC0 {
            0x00 if len == 0 => return Some(pos + 1),
            0x00 => pos += 1 + len as usize,
            0xC0 => {
                packet.get(pos + 1)?;
                return Some(pos + 2);
            }
            _ => return None,
        }
    }
}

/// Writes the header and the question of an answer to `q`.
pub(crate) fn begin(out: &mut Vec<u8>, q: &Query<'_>, rcode: Rcode, authoritative: bool) {
    begin_raw(out, q.id, q.flags, rcode, authoritative);
    out.extend_from_slice(&q.packet[12..q.question_end]);
    out[5] = 1;
}

/// Writes a header with counts zero (question count is set by the caller).
pub(crate) fn begin_raw(out: &mut Vec<u8>, id: u16, query_flags: u16, rcode: Rcode, aa: bool) {
    out.clear();
    let mut flags = FLAG_QR | FLAG_RA | (query_flags & (OPCODE_MASK | FLAG_RD | FLAG_CD));
    if aa {
        flags |= FLAG_AA;
    }
    flags |= rcode as u16;
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&[0; 8]);
}

/// The answer to a packet that did not parse as a normal query.
pub(crate) fn malformed_answer(out: &mut Vec<u8>, packet: &[u8], m: &Malformed) -> bool {
    let Malformed::Respond {
        id,
        flags,
        rcode,
        question_end,
        ..
    } = m
    else {
        return false;
    };
    begin_raw(out, *id, *flags, *rcode, false);
    if let Some(end) = question_end {
        out.extend_from_slice(&packet[12..*end]);
        out[5] = 1;
    }
    true
}

/// Sets the answer, authority and additional counts.
pub(crate) fn set_counts(out: &mut [u8], an: usize, ns: usize, ar: usize) {
    for (at, n) in [(6, an), (8, ns), (10, ar)] {
        let n = u16::try_from(n).unwrap_or(u16::MAX);
        out[at..at + 2].copy_from_slice(&n.to_be_bytes());
    }
}

pub(crate) fn count(out: &[u8], at: usize) -> usize {
    be16(out, at).unwrap_or(0) as usize
}

/// Appends an OPT record advertising ferry's UDP size.
pub(crate) fn push_opt(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0, 0, 41]);
    out.extend_from_slice(&EDNS_UDP_LIMIT.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    let ar = count(out, 10) + 1;
    let (an, ns) = (count(out, 6), count(out, 8));
    set_counts(out, an, ns, ar);
}

/// Cuts an answer that does not fit `limit` down to its question and sets TC,
/// as RFC 2181 §9 allows; the client retries over TCP.
pub(crate) fn truncate(out: &mut Vec<u8>, question_end: usize, edns: bool, limit: usize) {
    if out.len() <= limit {
        return;
    }
    out.truncate(question_end);
    set_counts(out, 0, 0, 0);
    out[2] |= (FLAG_TC >> 8) as u8;
    if edns {
        push_opt(out);
    }
}

/// Fits an answer into `limit` bytes by dropping whole records from the end
/// and setting TC, for TCP, whose 16-bit length prefix caps a message at
/// 65535 bytes: the client gets as many records as fit, in a message that
/// parses. An answer that does not walk cleanly is cut to its question.
pub(crate) fn truncate_records(out: &mut Vec<u8>, question_end: usize, edns: bool, limit: usize) {
    if out.len() <= limit {
        return;
    }
    let opt_len = if edns { 11 } else { 0 };
    let counts = [count(out, 6), count(out, 8), count(out, 10)];
    let mut kept = [0usize; 3];
    let mut keep_end = question_end;
    let mut pos = question_end;
    'sections: for (section, &n) in counts.iter().enumerate() {
        for _ in 0..n {
            let Some(at) = skip_name(out, pos) else {
                break 'sections;
            };
            let (Some(rtype), Some(rdlen)) = (be16(out, at), be16(out, at + 8)) else {
                break 'sections;
            };
            let end = at + 10 + rdlen as usize;
            if rtype == TYPE_OPT || end + opt_len > limit {
                // The OPT record is last; it is written again below.
                break 'sections;
            }
            kept[section] += 1;
            keep_end = end;
            pos = end;
        }
    }
    out.truncate(keep_end);
    set_counts(out, kept[0], kept[1], kept[2]);
    out[2] |= (FLAG_TC >> 8) as u8;
    if edns {
        push_opt(out);
    }
}

/// A query to send upstream for `q`, naming `name` (wire format, any case):
/// a fresh header with RD set, whatever the client asked, so that the
/// answer (and the cache entry shared by every client) is a recursive one;
/// CD and EDNS's DO bit are the client's, since the cache keys on them.
/// The ID is zero; the upstream layer sets its own.
pub(crate) fn upstream_query(q: &Query<'_>, name: &[u8]) -> Vec<u8> {
    let flags = FLAG_RD | (q.flags & FLAG_CD);
    let mut p = Vec::with_capacity(12 + name.len() + 4 + 11);
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(&flags.to_be_bytes());
    p.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    p.extend_from_slice(name);
    p.extend_from_slice(&q.qtype.to_be_bytes());
    p.extend_from_slice(&q.qclass.to_be_bytes());
    if let Some(e) = q.edns {
        p.extend_from_slice(&[0, 0, 41]);
        p.extend_from_slice(&EDNS_UDP_LIMIT.to_be_bytes());
        p.extend_from_slice(&[0, 0, if e.dnssec_ok { 0x80 } else { 0 }, 0, 0, 0]);
        p[11] = 1;
    }
    p
}

/// The client's question name as it sent it (case kept), in wire format.
pub(crate) fn question_name<'a>(q: &Query<'a>) -> &'a [u8] {
    &q.packet[12..q.question_end - 4]
}

/// Gives an answer the RD bit of the query it answers (RFC 1035 §4.1.1:
/// RD is copied into the response), whatever upstream or the cache set.
pub(crate) fn copy_rd(out: &mut [u8], q: &Query<'_>) {
    if let Some(b) = out.get_mut(2) {
        let rd = (FLAG_RD >> 8) as u8;
        *b = (*b & !rd) | (((q.flags & FLAG_RD) >> 8) as u8);
    }
}

/// Whether the authority section of `packet` holds an SOA record: what a
/// negative answer needs to be cached (RFC 2308 §5).
pub(crate) fn has_authority_soa(packet: &[u8]) -> bool {
    let qd = count(packet, 4);
    let (an, ns) = (count(packet, 6), count(packet, 8));
    let mut pos = 12;
    for _ in 0..qd {
        match skip_name(packet, pos) {
            Some(p) => pos = p + 4,
            None => return false,
        }
    }
    for i in 0..an + ns {
        let Some(at) = skip_name(packet, pos) else {
            return false;
        };
        let (Some(rtype), Some(rdlen)) = (be16(packet, at), be16(packet, at + 8)) else {
            return false;
        };
        if i >= an && rtype == TYPE_SOA {
            return true;
        }
        pos = at + 10 + rdlen as usize;
    }
    false
}

pub(crate) fn rcode_of(packet: &[u8]) -> u8 {
    packet.get(3).map_or(0, |b| b & 0x0F)
}

pub(crate) fn is_truncated(packet: &[u8]) -> bool {
    packet.get(2).is_some_and(|b| b & (FLAG_TC >> 8) as u8 != 0)
}

/// Appends one record: `owner` is either a compression pointer or a full wire name.
pub(crate) fn push_rr(out: &mut Vec<u8>, owner: &[u8], rtype: u16, ttl: u32, rdata: &[u8]) {
    out.extend_from_slice(owner);
    out.extend_from_slice(&rtype.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    out.extend_from_slice(&ttl.to_be_bytes());
    out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    out.extend_from_slice(rdata);
}

/// A compression pointer to `offset` in the message.
pub(crate) fn pointer(offset: usize) -> [u8; 2] {
    (0xC000 | (offset as u16 & 0x3FFF)).to_be_bytes()
}

/// The pointer to the question name (always at offset 12).
pub(crate) const QNAME: [u8; 2] = [0xC0, 12];

/// Encodes a dotted name (with or without the trailing dot), lowercased.
/// `None` when a label is empty or longer than 63 bytes or the name longer than 255.
pub(crate) fn encode_name(dotted: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(dotted.len() + 2);
    let trimmed = dotted.strip_suffix('.').unwrap_or(dotted);
    if !trimmed.is_empty() {
        for label in trimmed.split('.') {
            if label.is_empty() || label.len() > 63 {
                return None;
            }
            out.push(label.len() as u8);
            out.extend(label.bytes().map(|b| b.to_ascii_lowercase()));
        }
    }
    out.push(0);
    (out.len() <= MAX_NAME).then_some(out)
}

/// The labels of an uncompressed wire name, left to right (root excluded).
pub(crate) fn labels(wire: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(&len) = wire.get(pos) {
        if len == 0 || len & 0xC0 != 0 {
            break;
        }
        let Some(label) = wire.get(pos + 1..pos + 1 + len as usize) else {
            break;
        };
        out.push(label);
        pos += 1 + len as usize;
    }
    out
}

/// A wire name as dotted text, for logs and errors.
pub(crate) fn dotted(wire: &[u8]) -> String {
    let mut s = String::new();
    let mut pos = 0;
    while let Some(&len) = wire.get(pos) {
        if len == 0 || len & 0xC0 != 0 {
            break;
        }
        let label = wire
            .get(pos + 1..pos + 1 + len as usize)
            .unwrap_or_default();
        s.push_str(&String::from_utf8_lossy(label));
        s.push('.');
        pos += 1 + len as usize;
    }
    if s.is_empty() {
        s.push('.');
    }
    s
}

/// Offsets of every TTL field in a message (OPT excluded), for a cache that
/// ages answers; `None` if the message does not walk cleanly.
pub(crate) fn ttl_offsets(packet: &[u8]) -> Option<Vec<u16>> {
    let qd = count(packet, 4);
    let total = count(packet, 6) + count(packet, 8) + count(packet, 10);
    let mut pos = 12;
    for _ in 0..qd {
        pos = skip_name(packet, pos)? + 4;
    }
    let mut out = Vec::with_capacity(total);
    for _ in 0..total {
        let at = skip_name(packet, pos)?;
        let rtype = be16(packet, at)?;
        let rdlen = be16(packet, at + 8)? as usize;
        if rtype != TYPE_OPT {
            out.push(u16::try_from(at + 4).ok()?);
        }
        pos = at + 10 + rdlen;
        if pos > packet.len() {
            return None;
        }
    }
    Some(out)
}

pub(crate) fn read_u32(packet: &[u8], at: usize) -> u32 {
    packet
        .get(at..at + 4)
        .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut p = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in name.trim_end_matches('.').split('.') {
            p.push(l.len() as u8);
            p.extend_from_slice(l.as_bytes());
        }
        p.push(0);
        p.extend_from_slice(&qtype.to_be_bytes());
        p.extend_from_slice(&1u16.to_be_bytes());
        p
    }

    #[test]
    fn query_name_is_lowercased_and_split_into_labels() {
        let p = query("Web.Default.SVC.cluster.local", TYPE_A);
        let q = parse_query(&p).unwrap();
        assert_eq!(q.label_count_check(), 5);
        assert_eq!(q.name.label(0), b"web");
        assert_eq!(dotted(q.name.suffix(3)), "cluster.local.");
        assert_eq!(q.qtype, TYPE_A);
        assert_eq!(q.edns, None);
    }

    impl Query<'_> {
        fn label_count_check(&self) -> usize {
            self.name.label_count()
        }
    }

    #[test]
    fn garbage_never_panics_and_short_packets_are_dropped() {
        assert!(matches!(parse_query(&[1, 2, 3]), Err(Malformed::Drop(_))));
        let mut p = query("a.b", TYPE_A);
        p.truncate(15);
        assert!(matches!(
            parse_query(&p),
            Err(Malformed::Respond {
                rcode: Rcode::FormErr,
                ..
            })
        ));
        for seed in 0..2000u32 {
            let mut x = seed.wrapping_mul(2654435761);
            let bytes: Vec<u8> = (0..(seed % 80) as usize)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let _ = parse_query(&bytes);
            let _ = ttl_offsets(&bytes);
        }
    }

    #[test]
    fn tcp_answers_over_the_limit_lose_whole_records_and_still_parse() {
        for edns in [false, true] {
            let mut p = query("a.b", TYPE_A);
            if edns {
                p.extend_from_slice(&[0, 0, 41, 4, 0xD0, 0, 0, 0, 0, 0, 0]);
                p[11] = 1;
            }
            let q = parse_query(&p).unwrap();
            let mut out = Vec::new();
            begin(&mut out, &q, Rcode::NoError, true);
            for i in 0..5000u32 {
                push_rr(&mut out, &QNAME, TYPE_A, 5, &i.to_be_bytes());
            }
            set_counts(&mut out, 5000, 0, 0);
            if edns {
                push_opt(&mut out);
            }
            assert!(out.len() > 65535);
            truncate_records(&mut out, q.question_end, edns, 65535);
            assert!(out.len() <= 65535);
            assert!(is_truncated(&out));
            let kept = count(&out, 6);
            assert_eq!(
                kept,
                (65535 - q.question_end - if edns { 11 } else { 0 }) / 16
            );
            let m = hickory_proto::op::Message::from_vec(&out).expect("parses");
            assert_eq!(m.answers().len(), kept);
            assert_eq!(m.extensions().is_some(), edns);
        }
    }

    #[test]
    fn upstream_queries_ask_for_recursion_whatever_the_client_asked() {
        let mut p = query("Www.Example.Test", TYPE_A);
        p[0] = 0x77;
        p[2] = 0x00; // RD=0
        p[3] = 0x10; // CD=1
        let q = parse_query(&p).unwrap();
        let up = upstream_query(&q, question_name(&q));
        let uq = parse_query(&up).unwrap();
        assert_eq!(&up[..2], &[0, 0]);
        assert_eq!(up[2], 0x01, "RD set, opcode QUERY, nothing else");
        assert!(uq.checking_disabled());
        assert_eq!(&up[12..uq.question_end], &p[12..q.question_end]);
        assert_eq!(uq.edns, None);
    }

    #[test]
    fn oversized_answers_are_cut_to_the_question_with_tc() {
        let p = query("a.b", TYPE_A);
        let q = parse_query(&p).unwrap();
        let mut out = Vec::new();
        begin(&mut out, &q, Rcode::NoError, true);
        for _ in 0..100 {
            push_rr(&mut out, &QNAME, TYPE_A, 5, &[10, 0, 0, 1]);
        }
        set_counts(&mut out, 100, 0, 0);
        truncate(&mut out, q.question_end, false, q.udp_limit());
        assert_eq!(out.len(), q.question_end);
        assert!(is_truncated(&out));
        assert_eq!(count(&out, 6), 0);
    }
}
