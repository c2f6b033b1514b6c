//! Routing on the node that handles the packet (after DNAT): local pods
//! through the node's bridge `cni0`, other nodes' pods through the pod
//! network as the overlay plans it (`ferry_overlay::peers`: the VXLAN
//! device with its neighbour and FDB entry, or a host-gw route), and the
//! reply path through conntrack.
//!
//! Pure.

use std::net::IpAddr;

use ferry_overlay::peers::{self, PeerRoute};

use super::Inputs;
use crate::{Check, Expect, Hop, HopKind, Peer};

/// The route from `node` to `dst`.
pub(super) fn hop(inputs: &Inputs, node: &str, dst: IpAddr) -> Hop {
    let t = inputs.topology;
    let holder = t.holder(dst);
    let pod = t.pod_with_ip(dst);
    let what = match pod {
        Some(p) => format!("{dst} (pod {}/{})", p.namespace, p.name),
        None => dst.to_string(),
    };
    let mut hop = Hop::new(HopKind::Routing, format!("route to {what}"));
    hop.node = Some(node.to_string());
    let entry = t.node(node);
    hop.netns = entry.map(|n| n.netns.clone());
    let IpAddr::V4(dst4) = dst else {
        hop.decided
            .push("IPv6: the lab's pod network is IPv4 only".into());
        return hop;
    };
    let Some(holder) = holder else {
        hop.decided
            .push(format!("{dst} is not in the lab: {node}'s default route"));
        return hop;
    };
    hop.to_node = Some(holder.name.clone());
    if holder.ip == dst4 {
        hop.decided
            .push(format!("{dst} is node {}'s own address", holder.name));
        hop.path = vec![if holder.name == node {
            "local delivery".into()
        } else {
            "eth0".into()
        }];
        return hop;
    }
    if holder.name == node {
        hop.decided.push(format!(
            "{dst} is in {node}'s podCIDR {}: local, through the bridge cni0 to the pod's veth",
            holder.pod_cidr.map(|c| c.to_string()).unwrap_or_default()
        ));
        hop.path = vec!["cni0".into(), "veth".into(), "pod eth0".into()];
        hop.checks.push(Check::new(
            "route",
            format!("{dst} dev cni0"),
            Expect::Route {
                dst: dst4,
                dev: "cni0".into(),
                gateway: None,
            },
        ));
        return hop;
    }
    // Another node's pod: how the overlay on `node` reaches that subnet.
    let net = &inputs.network;
    let own = entry.and_then(|n| net.leases.iter().find(|l| l.attrs.public_ip == n.ip));
    let (Some(own), Some(underlay)) = (own, t.underlay()) else {
        hop.decided.push(format!(
            "{dst} is on {}; {node} holds no lease of the pod network, so no route is planned",
            holder.name
        ));
        return hop;
    };
    let desired = peers::desired(own, &net.leases, &net.backend, underlay);
    let Some((subnet, route)) = desired.routes.iter().find(|(s, _)| s.contains(&dst4)) else {
        let why = desired
            .skipped
            .iter()
            .find(|(s, _)| s.contains(&dst4))
            .map(|(_, w)| w.clone())
            .unwrap_or_else(|| "no lease holds it".into());
        hop.decided
            .push(format!("{dst} is on {}: no route ({why})", holder.name));
        return hop;
    };
    let dev = format!("flannel.{}", net.backend.vni);
    match route {
        PeerRoute::Tunnel(lease) => {
            let mac = lease
                .attrs
                .backend_data
                .as_ref()
                .map(|d| d.vtep_mac.clone())
                .unwrap_or_default();
            let gw = subnet.network();
            hop.decided.push(format!(
                "{dst} is in {}'s subnet {subnet} (lease: PublicIP {}, VtepMAC {mac}): VXLAN through {dev}",
                holder.name, lease.attrs.public_ip
            ));
            hop.decided.push(format!(
                "route {subnet} via {gw} dev {dev} onlink; neighbour {gw} -> {mac}; FDB {mac} -> {} (UDP {})",
                lease.attrs.public_ip,
                if net.backend.port == 0 { 8472 } else { net.backend.port }
            ));
            hop.decided.push(format!(
                "{} decapsulates on its {dev} and delivers through its cni0 to the pod's veth",
                holder.name
            ));
            hop.path = vec![
                dev.clone(),
                format!("VXLAN to {}", lease.attrs.public_ip),
                format!("{} {dev}", holder.name),
                format!("{} cni0", holder.name),
                "pod eth0".into(),
            ];
            hop.checks.push(Check::new(
                "route",
                format!("{dst} via {gw} dev {dev}"),
                Expect::Route {
                    dst: dst4,
                    dev: dev.clone(),
                    gateway: Some(gw),
                },
            ));
            hop.checks.push(Check::new(
                format!("neighbour on {dev}"),
                format!("{gw} lladdr {mac} PERMANENT"),
                Expect::Neighbour {
                    dev: dev.clone(),
                    ip: gw,
                    mac: mac.clone(),
                },
            ));
            hop.checks.push(Check::new(
                format!("FDB on {dev}"),
                format!("{mac} dst {}", lease.attrs.public_ip),
                Expect::Fdb {
                    dev,
                    mac,
                    dst: lease.attrs.public_ip,
                },
            ));
        }
        PeerRoute::Direct { via } => {
            hop.decided.push(format!(
                "{dst} is in {}'s subnet {subnet}: a plain route via its node address {via} ({})",
                holder.name,
                if net.backend.kind == peers::HOST_GW {
                    "host-gw"
                } else {
                    "VXLAN DirectRouting"
                }
            ));
            hop.decided.push(format!(
                "{} delivers through its cni0 to the pod's veth",
                holder.name
            ));
            hop.path = vec![
                "eth0".into(),
                format!("{} eth0", holder.name),
                format!("{} cni0", holder.name),
                "pod eth0".into(),
            ];
            hop.checks.push(Check::new(
                "route",
                format!("{dst} via {via} dev eth0"),
                Expect::Route {
                    dst: dst4,
                    dev: "eth0".into(),
                    gateway: Some(*via),
                },
            ));
        }
    }
    hop
}

/// Whether the overlay's masquerade (flannel's FLANNEL-POSTRTG, see
/// `ferry_overlay::masquerade`) rewrites `src` -> `dst` leaving `node`:
/// from the pod network to outside it, or from outside it to another
/// node's pods.
pub(super) fn overlay_masquerades(inputs: &Inputs, node: &str, src: IpAddr, dst: IpAddr) -> bool {
    let (Some(net), IpAddr::V4(src), IpAddr::V4(dst)) = (inputs.network.pod_network, src, dst)
    else {
        return false;
    };
    let local = inputs.topology.node(node).and_then(|n| n.pod_cidr);
    let in_local = local.is_some_and(|l| l.contains(&dst));
    match (net.contains(&src), net.contains(&dst)) {
        (true, true) => false,
        (true, false) => !dst.is_multicast(),
        (false, true) => !in_local,
        (false, false) => false,
    }
}

/// The way back: conntrack undoes the DNAT (and the masquerade).
pub(super) fn reply(
    peer: &Peer,
    dest: IpAddr,
    port: u16,
    masqueraded: Option<bool>,
    overlay_masq: bool,
) -> Hop {
    let mut hop = Hop::new(HopKind::Reply, format!("reply to {}", peer.name));
    hop.node = peer.node.clone();
    if overlay_masq {
        hop.decided.push(format!(
            "the pod network masqueraded the request (flannel's rule: from outside the pod network to another node's pods, or from a pod to outside it; source port fully random): conntrack un-SNATs the reply back to {}",
            peer.ip
        ));
        hop.path
            .push("conntrack: un-SNAT (overlay masquerade)".into());
    }
    match masqueraded {
        None if overlay_masq => {}
        None => hop.decided.push(format!(
            "no NAT on the way: the reply from {dest}:{port} is routed back to {} as it is",
            peer.ip
        )),
        Some(masq) => {
            hop.decided.push(format!(
                "conntrack un-DNATs the reply: source endpoint -> {dest}:{port}, so {} sees the address it asked",
                peer.ip
            ));
            if masq {
                hop.decided.push(format!(
                    "where the connection was masqueraded, conntrack also un-SNATs it: destination node address -> {}",
                    peer.ip
                ));
            }
            hop.path
                .extend(["conntrack: reply tuple".to_string(), "un-DNAT".to_string()]);
            if masq {
                hop.path.push("un-SNAT".into());
            }
        }
    }
    hop
}
