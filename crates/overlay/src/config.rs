//! flannel's network config (`/coreos.com/network/config` in etcd,
//! `net-conf.json` for the Kubernetes store), with flannel's defaults and
//! checks, so that a ferry node reads the same config the same way. Pure.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// The `Backend` object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendConfig {
    /// `vxlan` (flannel's default) or `host-gw`.
    #[serde(rename = "Type", default = "default_backend")]
    pub kind: String,
    #[serde(rename = "VNI", default = "default_vni")]
    pub vni: u32,
    /// 0: the kernel's default VXLAN port, 8472.
    #[serde(rename = "Port", default)]
    pub port: u16,
    #[serde(rename = "DirectRouting", default)]
    pub direct_routing: bool,
}

fn default_backend() -> String {
    "vxlan".into()
}

fn default_vni() -> u32 {
    1
}

impl Default for BackendConfig {
    fn default() -> Self {
        BackendConfig {
            kind: default_backend(),
            vni: default_vni(),
            port: 0,
            direct_routing: false,
        }
    }
}

/// The network config, defaults filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkConfig {
    pub network: Ipv4Net,
    pub subnet_len: u8,
    pub subnet_min: Ipv4Addr,
    pub subnet_max: Ipv4Addr,
    pub backend: BackendConfig,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("network config: {0}")]
    Json(String),
    #[error("network config: Network: {0}")]
    Network(String),
    #[error("network config: SubnetLen {len}: {why}")]
    SubnetLen { len: u8, why: &'static str },
    #[error("network config: {field} {addr}: {why}")]
    Range {
        field: &'static str,
        addr: Ipv4Addr,
        why: &'static str,
    },
}

#[derive(Deserialize)]
struct Raw {
    #[serde(rename = "Network")]
    network: Option<String>,
    #[serde(rename = "SubnetLen", default)]
    subnet_len: u8,
    #[serde(rename = "SubnetMin")]
    subnet_min: Option<Ipv4Addr>,
    #[serde(rename = "SubnetMax")]
    subnet_max: Option<Ipv4Addr>,
    #[serde(rename = "Backend", default)]
    backend: BackendConfig,
}

fn add(addr: Ipv4Addr, n: u64) -> Option<Ipv4Addr> {
    u32::try_from(u64::from(u32::from(addr)).checked_add(n)?)
        .ok()
        .map(Ipv4Addr::from)
}

impl NetworkConfig {
    /// Parses flannel's JSON and fills in its defaults: SubnetLen 24 when
    /// the network is a /22 or wider, else two bits longer; SubnetMin the
    /// second subnet (the first is skipped: an interface holding the
    /// network address itself conflicts); SubnetMax the last one.
    pub fn parse(json: &str) -> Result<NetworkConfig, ConfigError> {
        let raw: Raw = serde_json::from_str(json).map_err(|e| ConfigError::Json(e.to_string()))?;
        let network: Ipv4Net = raw
            .network
            .as_deref()
            .ok_or_else(|| ConfigError::Network("missing".into()))?
            .parse()
            .map_err(|e: ipnet::AddrParseError| ConfigError::Network(e.to_string()))?;
        if network.prefix_len() > 28 {
            return Err(ConfigError::Network(format!(
                "{network} is too small (at most /28)"
            )));
        }
        let network = network.trunc();
        let subnet_len = match raw.subnet_len {
            0 if network.prefix_len() <= 22 => 24,
            0 => network.prefix_len() + 2,
            n => n,
        };
        if subnet_len <= network.prefix_len() {
            return Err(ConfigError::SubnetLen {
                len: subnet_len,
                why: "must be longer than the network's prefix",
            });
        }
        if subnet_len > 30 {
            return Err(ConfigError::SubnetLen {
                len: subnet_len,
                why: "at most 30",
            });
        }
        let size = 1u64 << (32 - subnet_len);
        let count = 1u64 << (subnet_len - network.prefix_len());
        let first = network.network();
        let default_min = add(first, size).unwrap_or(first);
        let default_max = add(first, (count - 1) * size).unwrap_or(first);
        let check = |field: &'static str, addr: Ipv4Addr| {
            let aligned = u64::from(u32::from(addr)) % size == 0;
            if !network.contains(&addr) {
                Err(ConfigError::Range {
                    field,
                    addr,
                    why: "is outside the network",
                })
            } else if !aligned {
                Err(ConfigError::Range {
                    field,
                    addr,
                    why: "is not a subnet boundary",
                })
            } else {
                Ok(addr)
            }
        };
        let subnet_min = check("SubnetMin", raw.subnet_min.unwrap_or(default_min))?;
        let subnet_max = check("SubnetMax", raw.subnet_max.unwrap_or(default_max))?;
        if subnet_min > subnet_max {
            return Err(ConfigError::Range {
                field: "SubnetMin",
                addr: subnet_min,
                why: "is above SubnetMax",
            });
        }
        Ok(NetworkConfig {
            network,
            subnet_len,
            subnet_min,
            subnet_max,
            backend: raw.backend,
        })
    }

    /// Every subnet leases may take, SubnetMin to SubnetMax.
    pub fn subnets(&self) -> impl Iterator<Item = Ipv4Net> + '_ {
        let size = 1u64 << (32 - self.subnet_len);
        let min = u64::from(u32::from(self.subnet_min));
        let max = u64::from(u32::from(self.subnet_max));
        (min..=max).step_by(size as usize).filter_map(move |a| {
            Ipv4Net::new(Ipv4Addr::from(u32::try_from(a).ok()?), self.subnet_len).ok()
        })
    }

    /// The VXLAN UDP port: the configured one, or the kernel's default.
    pub fn vxlan_port(&self) -> u16 {
        if self.backend.port == 0 {
            8472
        } else {
            self.backend.port
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flannels_defaults_fill_a_bare_network() {
        let c =
            NetworkConfig::parse(r#"{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}"#)
                .unwrap();
        assert_eq!(c.subnet_len, 24);
        assert_eq!(
            c.subnet_min,
            Ipv4Addr::new(10, 244, 1, 0),
            "the first subnet is skipped"
        );
        assert_eq!(c.subnet_max, Ipv4Addr::new(10, 244, 255, 0));
        assert_eq!((c.backend.vni, c.vxlan_port()), (1, 8472));
        assert_eq!(c.subnets().count(), 255);
        let small = NetworkConfig::parse(r#"{"Network": "10.10.0.0/24"}"#).unwrap();
        assert_eq!(
            small.subnet_len, 26,
            "two bits longer than a network smaller than /22"
        );
    }

    #[test]
    fn bad_configs_name_the_field() {
        let e = NetworkConfig::parse(r#"{"Network": "10.0.0.0/29"}"#).unwrap_err();
        assert!(e.to_string().contains("Network"), "{e}");
        let e = NetworkConfig::parse(r#"{"Network": "10.0.0.0/16", "SubnetLen": 16}"#).unwrap_err();
        assert!(e.to_string().contains("SubnetLen 16"), "{e}");
        let e = NetworkConfig::parse(r#"{"Network": "10.0.0.0/16", "SubnetMin": "10.0.1.5"}"#)
            .unwrap_err();
        assert!(e.to_string().contains("SubnetMin 10.0.1.5"), "{e}");
        let e = NetworkConfig::parse(r#"{"Network": 5}"#).unwrap_err();
        assert!(matches!(e, ConfigError::Json(_)), "{e}");
    }
}
