//! Which routes a node wants to the other nodes' subnets, from the leases,
//! as flannel's backends decide it, and what to change to get there from
//! what is programmed. Pure.
//!
//! - VXLAN: every remote lease of backend type `vxlan` with a VTEP MAC
//!   goes through the tunnel (neighbour + FDB + onlink route); with
//!   `DirectRouting`, a peer on the same L2 (its public IP inside the
//!   underlay's network) gets a plain route via its public IP instead.
//! - host-gw: every remote lease gets a plain route via its public IP,
//!   which must be on the same L2; a peer that is not is skipped and
//!   reported (flannel fails the same way, only later and less clearly).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::config::BackendConfig;
use crate::lease::Lease;

/// flannel's backend type names.
pub const VXLAN: &str = "vxlan";
pub const HOST_GW: &str = "host-gw";

/// How one remote subnet is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerRoute {
    /// Through the VXLAN device, to the lease's VTEP.
    Tunnel(Lease),
    /// A plain route via the peer's public IP on the underlay.
    Direct { via: Ipv4Addr },
}

/// Remote subnets and how to reach them, plus the leases skipped (with why).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Desired {
    pub routes: BTreeMap<Ipv4Net, PeerRoute>,
    pub skipped: Vec<(Ipv4Net, String)>,
}

/// What a node wants, holding `own` on an underlay in `underlay_net`.
pub fn desired(
    own: &Lease,
    leases: &[Lease],
    backend: &BackendConfig,
    underlay_net: Ipv4Net,
) -> Desired {
    let mut out = Desired::default();
    for lease in leases {
        if lease.subnet == own.subnet || lease.attrs.public_ip == own.attrs.public_ip {
            continue;
        }
        let same_l2 = underlay_net.contains(&lease.attrs.public_ip);
        let route = if backend.kind == HOST_GW {
            if !same_l2 {
                out.skipped.push((
                    lease.subnet,
                    format!(
                        "host-gw needs peers on the same L2: {} is outside {underlay_net}",
                        lease.attrs.public_ip
                    ),
                ));
                continue;
            }
            PeerRoute::Direct {
                via: lease.attrs.public_ip,
            }
        } else if lease.attrs.backend_type != VXLAN {
            out.skipped.push((
                lease.subnet,
                format!(
                    "its backend is {:?}, this node's is vxlan",
                    lease.attrs.backend_type
                ),
            ));
            continue;
        } else if backend.direct_routing && same_l2 {
            PeerRoute::Direct {
                via: lease.attrs.public_ip,
            }
        } else if lease.attrs.backend_data.is_none() {
            out.skipped
                .push((lease.subnet, "no VtepMAC in its BackendData".into()));
            continue;
        } else {
            PeerRoute::Tunnel(lease.clone())
        };
        out.routes.insert(lease.subnet, route);
    }
    out
}

/// Routes to program or unprogram, by subnet.
pub type RouteList = Vec<(Ipv4Net, PeerRoute)>;

/// What to remove and what to add to go from `programmed` to `wanted`
/// (a changed route is removed, then added).
pub fn diff(
    programmed: &BTreeMap<Ipv4Net, PeerRoute>,
    wanted: &BTreeMap<Ipv4Net, PeerRoute>,
) -> (RouteList, RouteList) {
    let remove = programmed
        .iter()
        .filter(|(s, r)| wanted.get(s) != Some(r))
        .map(|(s, r)| (*s, r.clone()))
        .collect();
    let add = wanted
        .iter()
        .filter(|(s, r)| programmed.get(s) != Some(r))
        .map(|(s, r)| (*s, r.clone()))
        .collect();
    (remove, add)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::{BackendData, LeaseAttrs};

    fn lease(subnet: &str, ip: [u8; 4], kind: &str) -> Lease {
        Lease {
            subnet: subnet.parse().unwrap(),
            attrs: LeaseAttrs {
                public_ip: ip.into(),
                backend_type: kind.into(),
                backend_data: (kind == VXLAN).then(|| BackendData {
                    vni: 1,
                    vtep_mac: "02:00:00:00:00:01".into(),
                }),
            },
        }
    }

    fn backend(kind: &str, direct: bool) -> BackendConfig {
        BackendConfig {
            kind: kind.into(),
            direct_routing: direct,
            ..BackendConfig::default()
        }
    }

    #[test]
    fn vxlan_tunnels_to_every_other_vxlan_lease_and_skips_the_rest() {
        let own = lease("10.244.1.0/24", [172, 18, 0, 11], VXLAN);
        let leases = [
            own.clone(),
            lease("10.244.2.0/24", [172, 18, 0, 12], VXLAN),
            lease("10.244.3.0/24", [10, 9, 0, 13], VXLAN),
            lease("10.244.4.0/24", [172, 18, 0, 14], HOST_GW),
        ];
        let d = desired(
            &own,
            &leases,
            &backend(VXLAN, false),
            "172.18.0.0/24".parse().unwrap(),
        );
        assert_eq!(d.routes.len(), 2, "{d:?}");
        assert!(d.routes.values().all(|r| matches!(r, PeerRoute::Tunnel(_))));
        assert_eq!(d.skipped.len(), 1);
        assert!(d.skipped[0].1.contains("host-gw"), "{:?}", d.skipped);
    }

    #[test]
    fn direct_routing_uses_plain_routes_on_the_same_l2_only() {
        let own = lease("10.244.1.0/24", [172, 18, 0, 11], VXLAN);
        let leases = [
            lease("10.244.2.0/24", [172, 18, 0, 12], VXLAN),
            lease("10.244.3.0/24", [10, 9, 0, 13], VXLAN),
        ];
        let d = desired(
            &own,
            &leases,
            &backend(VXLAN, true),
            "172.18.0.0/24".parse().unwrap(),
        );
        assert_eq!(
            d.routes[&"10.244.2.0/24".parse().unwrap()],
            PeerRoute::Direct {
                via: [172, 18, 0, 12].into()
            }
        );
        assert!(matches!(
            d.routes[&"10.244.3.0/24".parse().unwrap()],
            PeerRoute::Tunnel(_)
        ));
    }

    #[test]
    fn host_gw_routes_via_peers_on_the_same_l2_and_reports_the_others() {
        let own = lease("10.244.1.0/24", [172, 18, 0, 11], HOST_GW);
        let leases = [
            lease("10.244.2.0/24", [172, 18, 0, 12], HOST_GW),
            lease("10.244.3.0/24", [10, 9, 0, 13], HOST_GW),
        ];
        let d = desired(
            &own,
            &leases,
            &backend(HOST_GW, false),
            "172.18.0.0/24".parse().unwrap(),
        );
        assert_eq!(d.routes.len(), 1);
        assert_eq!(d.skipped.len(), 1);
        assert!(d.skipped[0].1.contains("same L2"), "{:?}", d.skipped);
    }

    #[test]
    fn a_changed_peer_is_removed_then_added_and_an_unchanged_one_is_left() {
        let a: Ipv4Net = "10.244.2.0/24".parse().unwrap();
        let b: Ipv4Net = "10.244.3.0/24".parse().unwrap();
        let c: Ipv4Net = "10.244.4.0/24".parse().unwrap();
        let via = |n: u8| PeerRoute::Direct {
            via: [172, 18, 0, n].into(),
        };
        let programmed = BTreeMap::from([(a, via(12)), (b, via(13))]);
        let wanted = BTreeMap::from([(a, via(12)), (b, via(23)), (c, via(14))]);
        let (remove, add) = diff(&programmed, &wanted);
        assert_eq!(remove, vec![(b, via(13))]);
        assert_eq!(add, vec![(b, via(23)), (c, via(14))]);
    }
}
