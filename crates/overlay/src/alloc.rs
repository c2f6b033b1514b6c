//! Which subnet a node takes, as flannel decides it, with one rule of
//! ferry's first: a Node's `spec.podCIDR`, when set (kube-controller-manager
//! allocates it, the lab writes it), is the node's subnet (ARCHITECTURE.md,
//! "Settled between issues"). Otherwise: the lease this node already holds
//! (same PublicIP), else the subnet it had before (subnet.env), if still
//! free, else a random free subnet from SubnetMin to SubnetMax (flannel
//! picks among the first 100 free ones). Pure: randomness comes in.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::config::NetworkConfig;
use crate::lease::Lease;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AllocError {
    #[error("the Node's podCIDR {cidr} is not inside the pod network {network}")]
    PodCidrOutside { cidr: Ipv4Net, network: Ipv4Net },
    #[error("the Node's podCIDR {cidr} is leased to {holder}")]
    PodCidrTaken { cidr: Ipv4Net, holder: Ipv4Addr },
    #[error("no free subnet left in {network} (SubnetMin..SubnetMax all leased)")]
    Exhausted { network: Ipv4Net },
}

/// flannel's bound on the free subnets it picks among.
const CANDIDATES: usize = 100;

/// The subnet for the node at `public_ip`; `pick(n)` returns a number
/// below `n` (random in production, fixed in tests).
pub fn choose_subnet(
    config: &NetworkConfig,
    leases: &[Lease],
    public_ip: Ipv4Addr,
    pod_cidr: Option<Ipv4Net>,
    previous: Option<Ipv4Net>,
    pick: impl FnOnce(usize) -> usize,
) -> Result<Ipv4Net, AllocError> {
    let holder = |subnet: &Ipv4Net| {
        leases
            .iter()
            .find(|l| l.subnet.contains(&subnet.network()) || subnet.contains(&l.subnet.network()))
            .map(|l| l.attrs.public_ip)
    };
    if let Some(cidr) = pod_cidr {
        if !config.network.contains(&cidr) {
            return Err(AllocError::PodCidrOutside {
                cidr,
                network: config.network,
            });
        }
        return match holder(&cidr) {
            Some(other) if other != public_ip => Err(AllocError::PodCidrTaken {
                cidr,
                holder: other,
            }),
            _ => Ok(cidr),
        };
    }
    if let Some(own) = leases.iter().find(|l| l.attrs.public_ip == public_ip) {
        return Ok(own.subnet);
    }
    if let Some(prev) = previous
        && config.subnets().any(|s| s == prev)
        && holder(&prev).is_none()
    {
        return Ok(prev);
    }
    let free: Vec<Ipv4Net> = config
        .subnets()
        .filter(|s| holder(s).is_none())
        .take(CANDIDATES)
        .collect();
    if free.is_empty() {
        return Err(AllocError::Exhausted {
            network: config.network,
        });
    }
    Ok(free[pick(free.len()) % free.len()])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::LeaseAttrs;

    fn config() -> NetworkConfig {
        NetworkConfig::parse(r#"{"Network": "10.244.0.0/16"}"#).unwrap()
    }

    fn lease(subnet: &str, ip: [u8; 4]) -> Lease {
        Lease {
            subnet: subnet.parse().unwrap(),
            attrs: LeaseAttrs {
                public_ip: ip.into(),
                backend_type: "vxlan".into(),
                backend_data: None,
            },
        }
    }

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn a_nodes_pod_cidr_wins_and_must_fit_the_network() {
        let c = config();
        let me = Ipv4Addr::new(172, 18, 0, 11);
        let leases = [lease("10.244.7.0/24", [172, 18, 0, 12])];
        assert_eq!(
            choose_subnet(&c, &leases, me, Some(net("10.244.3.0/24")), None, |_| 0),
            Ok(net("10.244.3.0/24"))
        );
        assert!(matches!(
            choose_subnet(&c, &leases, me, Some(net("10.99.0.0/24")), None, |_| 0),
            Err(AllocError::PodCidrOutside { .. })
        ));
        assert!(matches!(
            choose_subnet(&c, &leases, me, Some(net("10.244.7.0/24")), None, |_| 0),
            Err(AllocError::PodCidrTaken { .. })
        ));
    }

    #[test]
    fn without_a_pod_cidr_flannels_order_decides() {
        let c = config();
        let me = Ipv4Addr::new(172, 18, 0, 11);
        let other = [lease("10.244.1.0/24", [172, 18, 0, 12])];
        // Own lease first.
        let mine = [lease("10.244.9.0/24", [172, 18, 0, 11]), other[0].clone()];
        assert_eq!(
            choose_subnet(&c, &mine, me, None, Some(net("10.244.4.0/24")), |_| 0),
            Ok(net("10.244.9.0/24"))
        );
        // Then the previous subnet, if free.
        assert_eq!(
            choose_subnet(&c, &other, me, None, Some(net("10.244.4.0/24")), |_| 0),
            Ok(net("10.244.4.0/24"))
        );
        assert_eq!(
            choose_subnet(&c, &other, me, None, Some(net("10.244.1.0/24")), |_| 0),
            Ok(net("10.244.2.0/24")),
            "the previous subnet is taken: a free one (never 10.244.0.0, the first)"
        );
        // A full network.
        let small = NetworkConfig::parse(r#"{"Network": "10.10.0.0/24"}"#).unwrap();
        let all: Vec<Lease> = small
            .subnets()
            .enumerate()
            .map(|(i, s)| lease(&s.to_string(), [10, 0, 0, i as u8]))
            .collect();
        assert!(matches!(
            choose_subnet(&small, &all, me, None, None, |_| 0),
            Err(AllocError::Exhausted { .. })
        ));
    }

    proptest::proptest! {
        #[test]
        fn nodes_joining_one_by_one_never_share_a_subnet(picks in proptest::collection::vec(0usize..1000, 1..60)) {
            let c = NetworkConfig::parse(r#"{"Network": "10.244.0.0/18"}"#).unwrap();
            let mut leases: Vec<Lease> = Vec::new();
            for (i, p) in picks.iter().enumerate() {
                let ip = Ipv4Addr::new(172, 18, (i / 200) as u8, (i % 200) as u8 + 1);
                let s = choose_subnet(&c, &leases, ip, None, None, |n| p % n).unwrap();
                proptest::prop_assert!(c.network.contains(&s) && s.network() != c.network.network());
                proptest::prop_assert!(leases.iter().all(|l| l.subnet != s));
                leases.push(Lease { subnet: s, attrs: LeaseAttrs { public_ip: ip, backend_type: "vxlan".into(), backend_data: None } });
            }
        }
    }
}
