//! Which addresses of the node's subnet may go to pods: not the network
//! address, not the gateway (the first host, on the bridge), not the
//! broadcast address; and the order they are handed out in (round-robin
//! after the last one reserved, as host-local does, so a freed address is
//! not reused at once). Pure.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// The node's subnet, as IPAM sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub subnet: Ipv4Net,
}

impl Range {
    pub fn new(subnet: Ipv4Net) -> Range {
        Range {
            subnet: subnet.trunc(),
        }
    }

    /// The bridge's address: the subnet's first host (FLANNEL_SUBNET's address).
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.subnet.network()).saturating_add(1))
    }

    fn first(&self) -> u32 {
        u32::from(self.subnet.network()).saturating_add(2)
    }

    fn last(&self) -> u32 {
        u32::from(self.subnet.broadcast()).saturating_sub(1)
    }

    /// How many addresses pods can have.
    pub fn size(&self) -> u32 {
        (self.last() + 1).saturating_sub(self.first())
    }

    /// Why `ip` cannot go to a pod, or `None` when it can.
    pub fn refuse(&self, ip: Ipv4Addr) -> Option<&'static str> {
        let n = u32::from(ip);
        if !self.subnet.contains(&ip) {
            Some("it is outside the node's subnet")
        } else if ip == self.subnet.network() {
            Some("it is the subnet's network address")
        } else if ip == self.gateway() {
            Some("it is the gateway (the bridge's address)")
        } else if ip == self.subnet.broadcast() {
            Some("it is the subnet's broadcast address")
        } else if n < self.first() || n > self.last() {
            Some("it is not a host address of the subnet")
        } else {
            None
        }
    }

    /// Every pod address once, starting after `last_reserved` (from the
    /// start when it is absent or outside the range).
    pub fn candidates(&self, last_reserved: Option<Ipv4Addr>) -> impl Iterator<Item = Ipv4Addr> {
        let (first, last) = (self.first(), self.last());
        let start = match last_reserved.map(u32::from) {
            Some(l) if l >= first && l < last => l + 1,
            _ => first,
        };
        let size = self.size();
        (0..size).map(move |i| {
            let offset = (start - first + i) % size;
            Ipv4Addr::from(first + offset)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_gateway_and_broadcast_are_never_handed_out() {
        let r = Range::new("10.244.1.0/24".parse().unwrap());
        assert_eq!(r.gateway(), Ipv4Addr::new(10, 244, 1, 1));
        assert_eq!(r.size(), 253);
        let all: Vec<_> = r.candidates(None).collect();
        assert_eq!(all.len(), 253);
        assert_eq!(all[0], Ipv4Addr::new(10, 244, 1, 2));
        assert_eq!(all[252], Ipv4Addr::new(10, 244, 1, 254));
        for bad in [
            [10, 244, 1, 0],
            [10, 244, 1, 1],
            [10, 244, 1, 255],
            [10, 244, 2, 3],
        ] {
            assert!(r.refuse(bad.into()).is_some(), "{bad:?}");
        }
        assert_eq!(r.refuse(Ipv4Addr::new(10, 244, 1, 9)), None);
    }

    #[test]
    fn allocation_continues_after_the_last_reserved_address_and_wraps() {
        let r = Range::new("10.0.0.0/29".parse().unwrap());
        let after: Vec<_> = r.candidates(Some(Ipv4Addr::new(10, 0, 0, 4))).collect();
        let want: Vec<Ipv4Addr> = [5, 6, 2, 3, 4]
            .iter()
            .map(|d| Ipv4Addr::new(10, 0, 0, *d))
            .collect();
        assert_eq!(after, want);
        assert_eq!(
            r.candidates(Some(Ipv4Addr::new(10, 0, 0, 6))).next(),
            Some(Ipv4Addr::new(10, 0, 0, 2))
        );
        let tiny = Range::new("10.0.0.0/30".parse().unwrap());
        assert_eq!(
            tiny.candidates(None).collect::<Vec<_>>(),
            vec![Ipv4Addr::new(10, 0, 0, 2)]
        );
    }
}
