//! The cache of forwarded answers: positive and negative (only with an SOA
//! to bound them, RFC 2308 §5), bounded in entries and bytes, oldest
//! insertion evicted first. A hit copies the stored message, sets the
//! client's ID, RD bit and question (so its case echoes) and ages every TTL.
//! Every entry answers a recursive (RD=1) upstream query, so RD is not in
//! the key.
//!
//! Pure: the clock is passed in.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use crate::wire::{self, Query, Rcode};

/// As CoreDNS's cache plugin: success answers are kept at most an hour,
/// denials at most 30 minutes.
const MAX_POSITIVE_TTL: u32 = 3600;
const MAX_NEGATIVE_TTL: u32 = 1800;
/// Bytes of bookkeeping per entry besides the message itself, for the bound.
const ENTRY_OVERHEAD: usize = 96;

struct Entry {
    message: Box<[u8]>,
    ttls: Box<[u16]>,
    question_end: usize,
    stored: Instant,
    ttl: u32,
}

pub(crate) struct Cache {
    map: HashMap<Box<[u8]>, Entry>,
    order: VecDeque<Box<[u8]>>,
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
}

/// The key: lowercased name, type, class, and the flags that change the answer.
fn key<'b>(q: &Query<'_>, buf: &'b mut [u8; 264]) -> &'b [u8] {
    let name = q.name.wire();
    let n = name.len();
    buf[..n].copy_from_slice(name);
    buf[n..n + 2].copy_from_slice(&q.qtype.to_be_bytes());
    buf[n + 2..n + 4].copy_from_slice(&q.qclass.to_be_bytes());
    buf[n + 4] = u8::from(q.edns.is_some())
        | (u8::from(q.edns.is_some_and(|e| e.dnssec_ok)) << 1)
        | (u8::from(q.checking_disabled()) << 2);
    &buf[..n + 5]
}

impl Cache {
    pub fn new(max_entries: usize, max_bytes: usize) -> Cache {
        Cache {
            map: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            max_entries,
            max_bytes,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Writes the cached answer for `q` into `out`; false on a miss.
    pub fn get(&mut self, q: &Query<'_>, now: Instant, out: &mut Vec<u8>) -> bool {
        let mut buf = [0u8; 264];
        let k = key(q, &mut buf);
        let Some(e) = self.map.get(k) else {
            return false;
        };
        let age = now.saturating_duration_since(e.stored).as_secs();
        let age = u32::try_from(age).unwrap_or(u32::MAX);
        if age >= e.ttl || e.question_end != q.question_end {
            if age >= e.ttl {
                let k = k.to_vec();
                self.remove(&k);
            }
            return false;
        }
        out.clear();
        out.extend_from_slice(&e.message);
        out[..2].copy_from_slice(&q.id.to_be_bytes());
        out[12..q.question_end].copy_from_slice(&q.packet[12..q.question_end]);
        wire::copy_rd(out, q);
        for &at in e.ttls.iter() {
            let at = at as usize;
            let ttl = wire::read_u32(out, at).saturating_sub(age);
            out[at..at + 4].copy_from_slice(&ttl.to_be_bytes());
        }
        true
    }

    /// Keeps `message` (upstream's answer to `q`) if it is cacheable.
    pub fn put(&mut self, q: &Query<'_>, message: &[u8], now: Instant) {
        if self.max_entries == 0 || wire::is_truncated(message) {
            return;
        }
        let rcode = wire::rcode_of(message);
        let max_ttl = if rcode == Rcode::NoError as u8 && wire::count(message, 6) > 0 {
            MAX_POSITIVE_TTL
        } else if rcode == Rcode::NoError as u8 || rcode == Rcode::NxDomain as u8 {
            MAX_NEGATIVE_TTL
        } else {
            return;
        };
        // A denial without an SOA says nothing of how long it holds (RFC
        // 2308 §5); a referral looks the same. Neither is kept.
        if max_ttl == MAX_NEGATIVE_TTL && !wire::has_authority_soa(message) {
            return;
        }
        let Some(ttls) = wire::ttl_offsets(message) else {
            return;
        };
        let Some(ttl) = ttls
            .iter()
            .map(|&at| wire::read_u32(message, at as usize))
            .min()
        else {
            return;
        };
        let ttl = ttl.min(max_ttl);
        let size = message.len() + ENTRY_OVERHEAD + ttls.len() * 2;
        if ttl == 0 || size > self.max_bytes {
            return;
        }
        let mut buf = [0u8; 264];
        let k: Box<[u8]> = key(q, &mut buf).into();
        self.remove(&k);
        while self.map.len() >= self.max_entries || self.bytes + size > self.max_bytes {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            self.remove(&old);
        }
        self.bytes += size;
        self.order.push_back(k.clone());
        self.map.insert(
            k,
            Entry {
                message: message.into(),
                ttls: ttls.into(),
                question_end: q.question_end,
                stored: now,
                ttl,
            },
        );
    }

    fn remove(&mut self, k: &[u8]) {
        if let Some(e) = self.map.remove(k) {
            self.bytes -= e.message.len() + ENTRY_OVERHEAD + e.ttls.len() * 2;
            // The key stays in `order` until it reaches the front; removing
            // it there finds nothing. Bounded: one stale key per removal.
            if self.order.len() > 2 * self.max_entries.max(1) {
                let map = &self.map;
                self.order.retain(|k| map.contains_key(k));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn query(name: &str) -> Vec<u8> {
        let mut p = vec![0xAB, 0xCD, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in name.split('.') {
            p.push(l.len() as u8);
            p.extend_from_slice(l.as_bytes());
        }
        p.extend_from_slice(&[0, 0, 1, 0, 1]);
        p
    }

    fn answer_to(query: &[u8], ttl: u32) -> Vec<u8> {
        let mut a = query.to_vec();
        a[2] = 0x81;
        a[3] = 0x80;
        a[7] = 1;
        wire::push_rr(&mut a, &wire::QNAME, wire::TYPE_A, ttl, &[192, 0, 2, 1]);
        a
    }

    #[test]
    fn hits_echo_the_client_id_and_case_and_age_the_ttl() {
        let mut c = Cache::new(10, 1 << 20);
        let t0 = Instant::now();
        let first = query("Example.COM");
        let q = wire::parse_query(&first).unwrap();
        c.put(&q, &answer_to(&first, 60), t0);
        let mut second = query("example.com");
        second[0] = 7;
        let q2 = wire::parse_query(&second).unwrap();
        let mut out = Vec::new();
        assert!(c.get(&q2, t0 + Duration::from_secs(10), &mut out));
        assert_eq!(out[0], 7);
        assert_eq!(&out[12..q2.question_end], &second[12..q2.question_end]);
        let ttl_at = out.len() - 10;
        assert_eq!(wire::read_u32(&out, ttl_at), 50);
        assert!(!c.get(&q2, t0 + Duration::from_secs(61), &mut out));
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn denials_are_kept_only_with_an_soa_in_authority() {
        let mut c = Cache::new(10, 1 << 20);
        let now = Instant::now();
        let p = query("gone.example");
        let q = wire::parse_query(&p).unwrap();
        let mut nx = p.clone();
        nx[2] = 0x81;
        nx[3] = 0x83;
        c.put(&q, &nx, now);
        assert_eq!(c.len(), 0, "NXDOMAIN without SOA");
        let mut referral = nx.clone();
        referral[3] = 0x80;
        referral[9] = 1;
        wire::push_rr(&mut referral, &[0], wire::TYPE_NS, 300, &[1, b'a', 0]);
        c.put(&q, &referral, now);
        assert_eq!(c.len(), 0, "NODATA or referral without SOA");
        let mut with_soa = nx.clone();
        with_soa[9] = 1;
        let soa_rdata = [&[1, b'a', 0, 1, b'b', 0][..], &[0; 20]].concat();
        wire::push_rr(&mut with_soa, &[0], wire::TYPE_SOA, 60, &soa_rdata);
        c.put(&q, &with_soa, now);
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn the_cache_stays_within_its_entry_bound() {
        let mut c = Cache::new(3, 1 << 20);
        let now = Instant::now();
        for i in 0..10 {
            let p = query(&format!("n{i}.example"));
            let q = wire::parse_query(&p).unwrap();
            c.put(&q, &answer_to(&p, 60), now);
        }
        assert_eq!(c.len(), 3);
        assert!(c.order.len() <= 6);
    }
}
