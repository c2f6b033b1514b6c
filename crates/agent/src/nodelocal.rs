//! Node-local DNS plumbing, as NodeLocal DNSCache does it: the DNS
//! addresses (the link-local 169.254.20.10 and, optionally, the cluster DNS
//! Service's ClusterIP) live on a dummy interface of the node (or on `lo`
//! where the kernel has no dummy interfaces, as on this project's
//! machines), and DNS
//! traffic to and from them skips conntrack (NOTRACK in a `raw`-priority
//! chain of ferry's own `ferry-dns` tables). Untracked packets are not
//! NATed, so the service proxy's DNAT of the ClusterIP does not apply and
//! the node answers itself; and with no conntrack entry there is no
//! insertion race between a pod's parallel A and AAAA queries (the
//! "5-second DNS lookups" of conntrack-based setups).

use std::net::IpAddr;

pub const INTERFACE: &str = "ferry-dns";
/// Where the addresses go when the kernel has no dummy interfaces: the
/// loopback device, under this label (so cleanup finds them).
pub const LO_LABEL: &str = "lo:ferry-dns";
pub const TABLE: &str = "ferry-dns";

#[derive(Debug, thiserror::Error)]
pub enum NodeLocalError {
    #[error("{command}: {message}")]
    Command { command: String, message: String },
}

fn run(args: &[&str], input: Option<&str>) -> Result<(), NodeLocalError> {
    let mut tool = ferry_sys::Tool::new(args[0]).args(args[1..].iter().copied());
    if let Some(text) = input {
        tool = tool.stdin(text);
    }
    tool.run().map(drop).map_err(|e| NodeLocalError::Command {
        command: args.join(" "),
        message: e.stderr().map_or_else(|| e.to_string(), str::to_string),
    })
}

/// The NOTRACK tables for `ips` (pure): DNS to and from them, over UDP and
/// TCP, in prerouting (pods' queries) and output (the node's own queries
/// and the answers).
pub fn notrack_rules(ips: &[IpAddr]) -> String {
    let mut s = String::new();
    for (family, addr_type, is_family) in [
        ("ip", "ipv4_addr", IpAddr::is_ipv4 as fn(&IpAddr) -> bool),
        ("ip6", "ipv6_addr", IpAddr::is_ipv6 as fn(&IpAddr) -> bool),
    ] {
        let of: Vec<String> = ips
            .iter()
            .filter(|ip| is_family(ip))
            .map(ToString::to_string)
            .collect();
        s.push_str(&format!(
            "add table {family} {TABLE}\ndelete table {family} {TABLE}\n"
        ));
        if of.is_empty() {
            continue;
        }
        let set = of.join(", ");
        s.push_str(&format!(
            "table {family} {TABLE} {{
\tcomment \"ferry node-local DNS: managed by ferry agent, do not edit\"
\tset addresses {{ type {addr_type}; elements = {{ {set} }}; }}
\tchain prerouting {{
\t\ttype filter hook prerouting priority raw; policy accept;
\t\t{family} daddr @addresses meta l4proto {{ tcp, udp }} th dport 53 notrack
\t}}
\tchain output {{
\t\ttype filter hook output priority raw; policy accept;
\t\t{family} daddr @addresses meta l4proto {{ tcp, udp }} th dport 53 notrack
\t\t{family} saddr @addresses meta l4proto {{ tcp, udp }} th sport 53 notrack
\t}}
}}
"
        ));
    }
    s
}

/// Puts `ips` on the dummy interface (made if missing; on kernels without
/// dummy interfaces, on `lo` under a label) and loads the NOTRACK tables;
/// run in the node's network namespace.
pub fn setup(ips: &[IpAddr]) -> Result<(), NodeLocalError> {
    let dummy = std::path::Path::new("/sys/class/net")
        .join(INTERFACE)
        .exists()
        || run(&["ip", "link", "add", INTERFACE, "type", "dummy"], None).is_ok();
    for ip in ips {
        let prefix = if ip.is_ipv4() { 32 } else { 128 };
        let addr = format!("{ip}/{prefix}");
        if dummy {
            run(&["ip", "addr", "replace", &addr, "dev", INTERFACE], None)?;
        } else if ip.is_ipv4() {
            run(
                &[
                    "ip", "addr", "replace", &addr, "dev", "lo", "label", LO_LABEL,
                ],
                None,
            )?;
        } else {
            run(&["ip", "addr", "replace", &addr, "dev", "lo"], None)?;
        }
    }
    if dummy {
        run(&["ip", "link", "set", INTERFACE, "up"], None)?;
    }
    run(&["nft", "-f", "-"], Some(&notrack_rules(ips)))
}

/// The addresses the agent gives up when it stops: every one that is
/// not link-local (the cluster DNS Service's ClusterIP), so that queries
/// to it reach the Service's endpoints through the proxy's rules while
/// the agent is gone, as NodeLocal DNSCache's teardown does. The
/// link-local address has nothing to fall back to and stays.
pub fn given_up_at_stop(ips: &[IpAddr]) -> Vec<IpAddr> {
    ips.iter()
        .copied()
        .filter(|ip| match ip {
            IpAddr::V4(v4) => !v4.is_link_local(),
            IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
        })
        .collect()
}

/// Takes `give_up` off the interface (or `lo`) and reloads the NOTRACK
/// tables for `keep` only; run when the agent stops.
pub fn release(keep: &[IpAddr], give_up: &[IpAddr]) -> Result<(), NodeLocalError> {
    let dummy = std::path::Path::new("/sys/class/net")
        .join(INTERFACE)
        .exists();
    for ip in give_up {
        let prefix = if ip.is_ipv4() { 32 } else { 128 };
        let addr = format!("{ip}/{prefix}");
        let dev = if dummy { INTERFACE } else { "lo" };
        // Already gone is fine.
        let _ = run(&["ip", "addr", "del", &addr, "dev", dev], None);
    }
    run(&["nft", "-f", "-"], Some(&notrack_rules(keep)))
}

/// Removes the interface (or the labelled addresses on `lo`) and the
/// tables (`ferry agent --cleanup`).
pub fn cleanup() -> Result<(), NodeLocalError> {
    if std::path::Path::new("/sys/class/net")
        .join(INTERFACE)
        .exists()
    {
        run(&["ip", "link", "del", INTERFACE], None)?;
    }
    run(
        &["ip", "-4", "addr", "flush", "dev", "lo", "label", LO_LABEL],
        None,
    )?;
    run(&["nft", "-f", "-"], Some(&notrack_rules(&[])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_link_local_address_is_kept_at_stop() {
        let ips: Vec<IpAddr> = ["169.254.20.10", "10.96.0.10", "fd00::a", "fe80::a"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let given: Vec<String> = given_up_at_stop(&ips)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(given, ["10.96.0.10", "fd00::a"]);
    }

    #[test]
    fn rules_cover_both_directions_of_each_family() {
        let text = notrack_rules(&["169.254.20.10".parse().unwrap(), "fd00::a".parse().unwrap()]);
        assert!(
            text.contains("type ipv4_addr; elements = { 169.254.20.10 }"),
            "{text}"
        );
        assert!(
            text.contains("type ipv6_addr; elements = { fd00::a }"),
            "{text}"
        );
        assert!(text.contains("ip saddr @addresses meta l4proto { tcp, udp } th sport 53 notrack"));
        assert!(
            text.contains("ip6 daddr @addresses meta l4proto { tcp, udp } th dport 53 notrack")
        );
        let empty = notrack_rules(&[]);
        assert!(!empty.contains("chain"), "{empty}");
    }
}
