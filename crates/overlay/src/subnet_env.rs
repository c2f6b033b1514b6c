//! `/run/flannel/subnet.env`, in flannel's format, so that flannel's own
//! CNI plugin works on a ferry node (it reads the node's subnet, the
//! network, the MTU and whether to masquerade from here). Pure.

use ipnet::Ipv4Net;

/// What subnet.env says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubnetEnv {
    pub network: Ipv4Net,
    /// The node's subnet.
    pub subnet: Ipv4Net,
    pub mtu: u32,
    pub ip_masq: bool,
}

impl SubnetEnv {
    /// The file's text: FLANNEL_SUBNET is the subnet's first address with
    /// its prefix (`10.244.1.1/24`), as flannel writes it.
    pub fn render(&self) -> String {
        let first = u32::from(self.subnet.network()).saturating_add(1);
        format!(
            "FLANNEL_NETWORK={}\nFLANNEL_SUBNET={}/{}\nFLANNEL_MTU={}\nFLANNEL_IPMASQ={}\n",
            self.network,
            std::net::Ipv4Addr::from(first),
            self.subnet.prefix_len(),
            self.mtu,
            self.ip_masq
        )
    }

    /// Reads a subnet.env (the previous subnet, at start); `None` when a
    /// field is missing or malformed.
    pub fn parse(text: &str) -> Option<SubnetEnv> {
        let get = |k: &str| {
            text.lines()
                .filter_map(|l| l.split_once('='))
                .find(|(key, _)| key.trim() == k)
                .map(|(_, v)| v.trim())
        };
        let subnet: Ipv4Net = get("FLANNEL_SUBNET")?.parse().ok()?;
        Some(SubnetEnv {
            network: get("FLANNEL_NETWORK")?.parse().ok()?,
            subnet: subnet.trunc(),
            mtu: get("FLANNEL_MTU")?.parse().ok()?,
            ip_masq: get("FLANNEL_IPMASQ")? == "true",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnet_env_is_written_and_read_as_flannel_does() {
        let env = SubnetEnv {
            network: "10.244.0.0/16".parse().unwrap(),
            subnet: "10.244.1.0/24".parse().unwrap(),
            mtu: 1450,
            ip_masq: true,
        };
        let text = env.render();
        assert_eq!(
            text,
            "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
        );
        assert_eq!(SubnetEnv::parse(&text), Some(env));
        assert_eq!(SubnetEnv::parse("FLANNEL_NETWORK=10.244.0.0/16\n"), None);
    }
}
