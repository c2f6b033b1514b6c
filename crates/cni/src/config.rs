//! The network config a runtime writes on stdin: the keys every CNI
//! plugin gets (`cniVersion`, `name`, `type`, `runtimeConfig`,
//! `prevResult`, `cni.dev/valid-attachments`) and ferry's own, which
//! follow flannel's CNI plugin and the reference bridge: `subnetFile`,
//! `dataDir`, `bridge`, `hairpinMode`, `isDefaultGateway`, `mtu`. A decode
//! error names the field (code 6); an unsupported `cniVersion` is code 1.
//! Pure.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::error::{CniError, Code};
use crate::version::Version;

pub const DEFAULT_SUBNET_FILE: &str = "/run/flannel/subnet.env";
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";
pub const DEFAULT_BRIDGE: &str = "cni0";

/// One network config, decoded, with the defaults filled in.
#[derive(Clone, Debug, PartialEq)]
pub struct NetConf {
    pub cni_version: Version,
    pub name: String,
    pub plugin_type: String,
    pub subnet_file: PathBuf,
    /// The IPAM state lives in `dataDir/<name>`.
    pub data_dir: PathBuf,
    pub bridge: String,
    pub hairpin_mode: bool,
    pub is_default_gateway: bool,
    /// `None`: FLANNEL_MTU from the subnet file.
    pub mtu: Option<u32>,
    /// Addresses asked for through the `ips` capability.
    pub requested_ips: Vec<Ipv4Addr>,
    /// The previous plugin's result (chains), as it came.
    pub prev_result: Option<serde_json::Value>,
    /// GC: the attachments the runtime still uses.
    pub valid_attachments: Option<Vec<Attachment>>,
}

/// A container's interface on this network (GC's `cni.dev/valid-attachments`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    name: String,
    #[serde(rename = "type")]
    plugin_type: String,
    subnet_file: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    bridge: Option<String>,
    hairpin_mode: Option<bool>,
    is_default_gateway: Option<bool>,
    mtu: Option<u32>,
    #[serde(default)]
    runtime_config: RuntimeConfig,
    prev_result: Option<serde_json::Value>,
    #[serde(rename = "cni.dev/valid-attachments")]
    valid_attachments: Option<Vec<Attachment>>,
}

#[derive(Default, Deserialize)]
struct RuntimeConfig {
    /// `"10.244.1.7"` or `"10.244.1.7/24"`, as runtimes send it.
    #[serde(default)]
    ips: Vec<String>,
}

/// Reads only `cniVersion` (for the version of an error object, and for
/// VERSION), when the text is JSON with one.
pub fn peek_version(stdin: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(stdin).ok()?;
    v.get("cniVersion")?.as_str().map(str::to_string)
}

impl NetConf {
    pub fn parse(stdin: &str) -> Result<NetConf, CniError> {
        let value: serde_json::Value = serde_json::from_str(stdin).map_err(|e| {
            CniError::new(Code::Decode, "the network config on stdin is not JSON")
                .details(e.to_string())
        })?;
        let version = match value.get("cniVersion") {
            Some(serde_json::Value::String(s)) => Version::parse(s)?,
            Some(_) => {
                return Err(CniError::new(
                    Code::Decode,
                    "field `cniVersion`: not a string",
                ));
            }
            None => return Err(CniError::new(Code::Decode, "field `cniVersion` is missing")),
        };
        let raw: Raw = serde_path_to_error::deserialize(&value).map_err(|e| {
            let path = e.path().to_string();
            CniError::new(
                Code::Decode,
                format!("field `{path}` of the network config"),
            )
            .details(e.into_inner().to_string())
        })?;
        if raw.name.is_empty() {
            return Err(CniError::new(Code::InvalidConfig, "field `name` is empty"));
        }
        let requested_ips = raw
            .runtime_config
            .ips
            .iter()
            .map(|s| {
                let addr = s.split_once('/').map_or(s.as_str(), |(a, _)| a);
                addr.parse::<Ipv4Addr>().map_err(|_| {
                    CniError::new(
                        Code::InvalidConfig,
                        format!("field `runtimeConfig.ips`: {s:?} is not an IPv4 address"),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        if raw.mtu == Some(0) {
            return Err(CniError::new(Code::InvalidConfig, "field `mtu` is 0"));
        }
        Ok(NetConf {
            cni_version: version,
            name: raw.name,
            plugin_type: raw.plugin_type,
            subnet_file: raw
                .subnet_file
                .unwrap_or_else(|| DEFAULT_SUBNET_FILE.into()),
            data_dir: raw.data_dir.unwrap_or_else(|| DEFAULT_DATA_DIR.into()),
            bridge: raw.bridge.unwrap_or_else(|| DEFAULT_BRIDGE.into()),
            hairpin_mode: raw.hairpin_mode.unwrap_or(true),
            is_default_gateway: raw.is_default_gateway.unwrap_or(true),
            mtu: raw.mtu,
            requested_ips,
            prev_result: raw.prev_result,
            valid_attachments: raw.valid_attachments,
        })
    }

    /// This network's IPAM directory.
    pub fn ipam_dir(&self) -> PathBuf {
        self.data_dir.join(&self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_config_gets_flannels_defaults() {
        let c = NetConf::parse(r#"{"cniVersion":"1.0.0","name":"cbr0","type":"ferry"}"#).unwrap();
        assert_eq!(c.cni_version, Version::V1_0_0);
        assert_eq!(c.subnet_file, PathBuf::from("/run/flannel/subnet.env"));
        assert_eq!(c.ipam_dir(), PathBuf::from("/var/lib/cni/networks/cbr0"));
        assert_eq!(c.bridge, "cni0");
        assert!(c.hairpin_mode && c.is_default_gateway);
        assert_eq!(c.mtu, None);
    }

    #[test]
    fn runtime_config_ips_prev_result_and_attachments_are_read() {
        let c = NetConf::parse(
            r#"{"cniVersion":"1.1.0","name":"n","type":"ferry","mtu":1400,"bridge":"br9",
                "runtimeConfig":{"ips":["10.244.1.9/24"],"portMappings":[]},
                "prevResult":{"cniVersion":"1.1.0","ips":[]},
                "cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"}]}"#,
        )
        .unwrap();
        assert_eq!(c.requested_ips, vec![Ipv4Addr::new(10, 244, 1, 9)]);
        assert_eq!(c.mtu, Some(1400));
        assert_eq!(c.bridge, "br9");
        assert!(c.prev_result.is_some());
        assert_eq!(c.valid_attachments.unwrap()[0].container_id, "c1");
    }

    #[test]
    fn decode_errors_are_code_6_and_name_the_field() {
        let e = NetConf::parse(r#"{"cniVersion":"1.0.0","name":"n","type":"ferry","mtu":"big"}"#)
            .unwrap_err();
        assert_eq!(e.code, Code::Decode);
        assert!(e.msg.contains("`mtu`"), "{e}");
        let e = NetConf::parse(
            r#"{"cniVersion":"1.0.0","name":"n","type":"ferry","runtimeConfig":{"ips":[7]}}"#,
        )
        .unwrap_err();
        assert!(e.msg.contains("runtimeConfig.ips"), "{e}");
        let e = NetConf::parse(r#"{"cniVersion":"1.0.0","type":"ferry"}"#).unwrap_err();
        assert_eq!(e.code, Code::Decode);
        assert!(e.to_string().contains("name"), "{e}");
        assert_eq!(NetConf::parse("{nope").unwrap_err().code, Code::Decode);
        assert_eq!(
            NetConf::parse(r#"{"cniVersion":"0.2.0","name":"n","type":"ferry"}"#)
                .unwrap_err()
                .code,
            Code::IncompatibleVersion
        );
    }
}
