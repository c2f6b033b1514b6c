//! Turns one name's parts into what queries copy: its RRsets as answer
//! bytes, a CNAME followed inside the zones, and the additional records of
//! SRV and NS answers. Those last two read other names' records, so the
//! encoder also says which names it read: when one of them changes, this
//! name is encoded again.
//!
//! Pure: no I/O.

use crate::contrib::{Part, Rec, Source};
use crate::index::{Cname, Node, RrSet, Unresolved, Zone};
use crate::wire::{self, QNAME, TYPE_A, TYPE_AAAA, TYPE_CNAME, TYPE_NS, TYPE_SRV};

/// How many CNAMEs inside the cluster zones are followed.
const MAX_CHAIN: usize = 8;

/// A name's parts, by source (sorted, one per source).
pub(crate) type Parts = [(Source, Part)];

/// The union of a name's parts: records sorted and each kept once.
struct Merged<'a> {
    recs: Vec<&'a Rec>,
    cname: Option<&'a [u8]>,
    glue: bool,
}

fn merge(parts: &Parts) -> Merged<'_> {
    let mut recs: Vec<&Rec> = parts.iter().flat_map(|(_, p)| &p.recs).collect();
    recs.sort_by(|a, b| (a.rtype, &a.rdata).cmp(&(b.rtype, &b.rdata)));
    recs.dedup_by(|a, b| a.rtype == b.rtype && a.rdata == b.rdata);
    Merged {
        recs,
        cname: parts.iter().rev().find_map(|(_, p)| p.cname.as_deref()),
        glue: parts.iter().any(|(_, p)| p.glue),
    }
}

/// Encodes `name` from its `parts`; `lookup` gives any other name's parts.
/// Returns the node and the other names it was built from.
pub(crate) fn node<'a>(
    name: &[u8],
    parts: &'a Parts,
    ttl: u32,
    zones: &[Zone],
    lookup: &impl Fn(&[u8]) -> Option<&'a Parts>,
) -> (Node, Vec<Vec<u8>>) {
    let n = merge(parts);
    let mut enc = Encoder {
        lookup,
        ttl,
        reads: Vec::new(),
    };
    let in_zone = |t: &[u8]| zones.iter().any(|z| t.ends_with(&z.wire));
    let mut sets = Vec::new();
    let mut cname = None;
    if let Some(target) = n.cname {
        let mut rr = Vec::new();
        wire::push_rr(&mut rr, &QNAME, TYPE_CNAME, ttl, target);
        if in_zone(target) {
            let (chased, unresolved) = enc.chased(&rr, target);
            sets = chased;
            cname = Some(Box::new(Cname {
                rr: rr.into_boxed_slice(),
                outside: None,
                unresolved,
            }));
        } else {
            cname = Some(Box::new(Cname {
                rr: rr.into_boxed_slice(),
                outside: Some(target.into()),
                unresolved: None,
            }));
        }
    } else {
        let mut i = 0;
        while i < n.recs.len() {
            let rtype = n.recs[i].rtype;
            let end = i + n.recs[i..].iter().take_while(|r| r.rtype == rtype).count();
            let group = &n.recs[i..end];
            let mut answer = Vec::new();
            for r in group {
                wire::push_rr(&mut answer, &QNAME, rtype, r.ttl, &r.rdata);
            }
            let (additional, ar) = match rtype {
                TYPE_SRV => enc.addresses_of(group.iter().map(|r| &r.rdata[6..])),
                TYPE_NS if n.glue => enc.addresses_of(group.iter().map(|r| &r.rdata[..])),
                _ => (Vec::new(), 0),
            };
            sets.push(RrSet {
                rtype,
                answer: answer.into_boxed_slice(),
                an: group.len() as u16,
                additional: additional.into_boxed_slice(),
                ar,
            });
            i = end;
        }
    }
    let mut reads = enc.reads;
    reads.retain(|r| r != name);
    reads.sort();
    reads.dedup();
    (
        Node {
            sets: sets.into_boxed_slice(),
            cname,
        },
        reads,
    )
}

struct Encoder<'l, L> {
    lookup: &'l L,
    ttl: u32,
    reads: Vec<Vec<u8>>,
}

impl<'a, L: Fn(&[u8]) -> Option<&'a Parts>> Encoder<'_, L> {
    fn get(&mut self, name: &[u8]) -> Option<Merged<'a>> {
        self.reads.push(name.to_vec());
        (self.lookup)(name).map(merge)
    }

    /// The RRsets of a CNAME whose target is inside the zones: the CNAME
    /// followed by the target's records (owner written out in full); or,
    /// when the chain reaches a name the index does not hold (an endpoint
    /// name answered per query), the chain up to it.
    fn chased(&mut self, cname_rr: &[u8], target: &[u8]) -> (Vec<RrSet>, Option<Box<Unresolved>>) {
        let mut chain = cname_rr.to_vec();
        let mut links = 1u16;
        let mut target = target.to_vec();
        for _ in 0..MAX_CHAIN {
            let Some(t) = self.get(&target) else {
                let end = Unresolved {
                    chain: chain.into_boxed_slice(),
                    links,
                    target: target.into_boxed_slice(),
                };
                return (Vec::new(), Some(Box::new(end)));
            };
            match t.cname {
                Some(next) => {
                    wire::push_rr(&mut chain, &target, TYPE_CNAME, self.ttl, next);
                    links += 1;
                    target = next.to_vec();
                }
                None => {
                    let mut sets: Vec<RrSet> = Vec::new();
                    for r in &t.recs {
                        let pos = match sets.iter().position(|s| s.rtype == r.rtype) {
                            Some(p) => p,
                            None => {
                                sets.push(RrSet {
                                    rtype: r.rtype,
                                    answer: chain.clone().into_boxed_slice(),
                                    an: links,
                                    additional: Box::default(),
                                    ar: 0,
                                });
                                sets.len() - 1
                            }
                        };
                        let mut answer = sets[pos].answer.to_vec();
                        wire::push_rr(&mut answer, &target, r.rtype, r.ttl, &r.rdata);
                        sets[pos].answer = answer.into_boxed_slice();
                        sets[pos].an += 1;
                    }
                    return (sets, None);
                }
            }
        }
        (Vec::new(), None)
    }

    /// A and AAAA records of `targets`, owner written out, each target once.
    fn addresses_of<'t>(&mut self, targets: impl Iterator<Item = &'t [u8]>) -> (Vec<u8>, u16) {
        let mut out = Vec::new();
        let mut n = 0;
        let mut seen: Vec<&[u8]> = Vec::new();
        for t in targets {
            if seen.contains(&t) {
                continue;
            }
            seen.push(t);
            let Some(node) = self.get(t) else {
                continue;
            };
            for r in node
                .recs
                .iter()
                .filter(|r| matches!(r.rtype, TYPE_A | TYPE_AAAA))
            {
                wire::push_rr(&mut out, t, r.rtype, r.ttl, &r.rdata);
                n += 1;
            }
        }
        (out, n)
    }
}
