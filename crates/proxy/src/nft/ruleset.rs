//! The nftables ruleset of ferry's own table (`ip ferry`): a fixed set of
//! chains and rules, with every Service held as *data* in maps and sets.
//! A Service change adds and deletes elements and never touches a verdict,
//! so the kernel does not re-validate the table's jump graph (which makes
//! kube-proxy's chain-per-service layout cost O(cluster) per change).
//!
//! How a new connection to a Service is handled:
//! 1. `services` looks the destination up in `cluster_ips`, `external_ips`
//!    or (for local addresses) `node_ports`; a hit sets the packet mark to
//!    the Service's *slot*: N (endpoints to choose from) in the low 12
//!    bits, the slot id above them, skipping bit 0x4000 (the masquerade
//!    bit every component reads, as kube-proxy and flannel do).
//! 2. `dispatch` jumps on N (the low 12 bits) to `pick_N`, one static chain
//!    per endpoint count in use (created once, never per Service).
//! 3. `pick_N` DNATs to `endpoints[mark . numgen random mod N]`.
//! 4. Postrouting (the mark is still the slot) masquerades hairpin
//!    traffic, external traffic of `externalTrafficPolicy: Cluster`, and
//!    ClusterIP traffic from outside the cluster CIDRs; external traffic
//!    of Local-policy Services keeps its client IP. External and cluster
//!    traffic of a ServicePort use different slots for this reason. What
//!    it masquerades it also marks with 0x4000, so another component's
//!    masquerade (the overlay's, flannel's) can leave it alone.
//! 5. `sessionAffinity: ClientIP`: postrouting records client . slot ->
//!    endpoint in the `affinity` map (with the Service's timeout);
//!    `dispatch` first DNATs a known client to its recorded endpoint.
//!    A Service's slot changes whenever its endpoints do, so a recorded
//!    endpoint that is gone is never reused.
//! 6. `loadBalancerSourceRanges`: before any NAT, traffic to a restricted
//!    load-balancer IP:port from a source outside its ranges is dropped.
//! 7. A ClusterIP answers only on its Services' ports: new connections
//!    still addressed to a ClusterIP after DNAT (an unknown port) are
//!    rejected, as kube-proxy does.
//! 8. Filter chains reject (ICMP port unreachable) connections to Services
//!    without endpoints and drop external traffic of Local-policy Services
//!    with no endpoint on this node.
//!
//! The sets and maps are declared from their definitions in `sets.rs`.
//!
//! Pure: produces nft text.

use super::sets::Set;
use crate::plan::Family;

/// Endpoint counts up to this are in the low bits of a slot mark.
pub const COUNT_BITS: u32 = 12;

/// "Masquerade this packet", as kube-proxy's KUBE-MARK-MASQ sets it and
/// flannel's postrouting reads it: slots never use it; the postrouting
/// rules that masquerade set it.
pub const MASQUERADE_BIT: u32 = 0x4000;
pub const MAX_ENDPOINTS: u32 = (1 << COUNT_BITS) - 1;

pub const TABLE: &str = "ferry";

/// The whole table of `family`, without elements (they come in `add
/// element` commands). The IPv6 table is the IPv4 one with IPv6 types and
/// expressions, but without session affinity: nft 1.0.6 aborts
/// (`netlink_gen_expr: dreg < ctx->reg_low`) on the affinity update with
/// IPv6 keys and values, so IPv6 Services are balanced without affinity.
pub fn table(family: Family, pick_counts: &[u32], affinity_timeouts: &[u32]) -> String {
    match family {
        Family::V4 => table_v4(pick_counts, affinity_timeouts),
        Family::V6 => table_v4(pick_counts, &[])
            .lines()
            .filter(|l| !l.contains("@affinity") && !l.contains("map affinity"))
            .map(|l| format!("{l}\n"))
            .collect::<String>()
            .replace("table ip ", "table ip6 ")
            .replace("ipv4_addr", "ipv6_addr")
            .replace("ip daddr", "ip6 daddr")
            .replace("ip saddr", "ip6 saddr")
            .replace("dnat ip to", "dnat ip6 to"),
    }
}

fn table_v4(pick_counts: &[u32], affinity_timeouts: &[u32]) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        r#"table ip {TABLE} {{
	comment "ferry service proxy: managed by ferry agent, do not edit"
{declarations}{affinity_sets}
	chain services {{
		meta mark set ip daddr . meta l4proto . th dport map @cluster_ips jump dispatch
		meta mark set ip daddr . meta l4proto . th dport map @external_ips jump dispatch
		fib daddr type local meta mark set meta l4proto . th dport map @node_ports jump dispatch
	}}

	chain dispatch {{
		meta l4proto {{ tcp, udp, sctp }} dnat ip to ip saddr . meta mark map @affinity
		meta mark & 0x{mask:x} vmap @pick
	}}

	chain nat_prerouting {{
		type nat hook prerouting priority dstnat; policy accept;
		jump services
	}}

	chain nat_output {{
		type nat hook output priority -100; policy accept;
		jump services
	}}

	chain nat_postrouting {{
		type nat hook postrouting priority srcnat; policy accept;
{affinity_rules}		ct status dnat ip saddr . ip daddr @hairpin meta mark set meta mark | 0x{masq:x} masquerade
		ct status dnat meta mark @masquerade_slots meta mark set meta mark | 0x{masq:x} masquerade
		ct status dnat meta mark @keep_client_slots return
		ct status dnat meta mark @cluster_slots ip saddr != @cluster_cidrs meta mark set meta mark | 0x{masq:x} masquerade
	}}

	chain filter_prerouting {{
		type filter hook prerouting priority dstnat - 10; policy accept;
		ip daddr . meta l4proto . th dport @firewall_keys ip daddr . meta l4proto . th dport . ip saddr != @firewall_allow drop
	}}

	chain filter_input {{
		type filter hook input priority filter - 1; policy accept;
		ct state new fib daddr type local meta l4proto . th dport @drop_node_ports drop
		ct state new fib daddr type local meta l4proto . th dport @no_endpoint_node_ports reject
		ct state new ip daddr . meta l4proto . th dport @drop_external drop
		ct state new ip daddr . meta l4proto . th dport @no_endpoints reject
	}}

	chain filter_forward {{
		type filter hook forward priority filter - 1; policy accept;
		ct state new ip daddr . meta l4proto . th dport @drop_external drop
		ct state new ip daddr . meta l4proto . th dport @no_endpoints reject
		ct state new ip daddr @cluster_addresses reject
	}}

	chain filter_output {{
		type filter hook output priority filter - 1; policy accept;
		ct state new ip daddr . meta l4proto . th dport @no_endpoints reject
		ct state new ip daddr @cluster_addresses reject
	}}
"#,
        mask = MAX_ENDPOINTS,
        masq = MASQUERADE_BIT,
        declarations = Set::FIXED
            .iter()
            .map(|s| format!("\t{}\n", s.declaration()))
            .collect::<String>(),
        affinity_sets = affinity_timeouts
            .iter()
            .map(|t| format!("\t{}\n", Set::AffinitySlots(*t).declaration()))
            .collect::<String>(),
        affinity_rules = affinity_timeouts
            .iter()
            .map(|t| format!("\t\tct status dnat meta mark @affinity_{t} update @affinity {{ ip saddr . meta mark timeout {t}s : ip daddr . th dport }}\n"))
            .collect::<String>(),
    ));
    for n in pick_counts {
        s.push_str(&pick_chain(*n));
    }
    s.push_str("}\n");
    s
}

fn pick_chain(n: u32) -> String {
    format!(
        "\n\tchain pick_{n} {{\n\t\tmeta l4proto {{ tcp, udp, sctp }} dnat ip to meta mark . numgen random mod {n} map @endpoints\n\t}}\n"
    )
}
