//! The conflist the agent installs in `/etc/cni/net.d`, as flannel's
//! DaemonSet installs `10-flannel.conflist`: ferry first, then the
//! reference `portmap` plugin with the `portMappings` capability (so
//! hostPort works). cniVersion 1.0.0, the newest Debian's reference
//! plugins speak. Pure.

use std::path::PathBuf;

use serde_json::json;

/// The file's name in the CNI config directory.
pub const CONFLIST_FILE: &str = "10-ferry.conflist";

/// What may differ from the defaults.
#[derive(Clone, Debug, Default)]
pub struct Conflist {
    /// The network's name (`cbr0`, as flannel's, when empty).
    pub name: String,
    pub subnet_file: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
}

impl Conflist {
    pub fn render(&self) -> String {
        let mut ferry = json!({
            "type": "ferry",
            "hairpinMode": true,
            "isDefaultGateway": true,
        });
        if let Some(f) = &self.subnet_file {
            ferry["subnetFile"] = json!(f);
        }
        if let Some(d) = &self.data_dir {
            ferry["dataDir"] = json!(d);
        }
        let name = if self.name.is_empty() {
            "cbr0"
        } else {
            &self.name
        };
        let doc = json!({
            "name": name,
            "cniVersion": "1.0.0",
            "plugins": [
                ferry,
                {"type": "portmap", "capabilities": {"portMappings": true}},
            ],
        });
        let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
        text.push('\n');
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_conflist_chains_ferry_then_portmap_and_each_plugin_config_decodes() {
        let text = Conflist {
            name: String::new(),
            subnet_file: Some("/run/flannel/subnet.env".into()),
            data_dir: None,
        }
        .render();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["name"], "cbr0");
        assert_eq!(v["cniVersion"], "1.0.0");
        let plugins = v["plugins"].as_array().unwrap();
        assert_eq!(plugins.len(), 2);
        assert_eq!(plugins[0]["type"], "ferry");
        assert_eq!(plugins[0]["subnetFile"], "/run/flannel/subnet.env");
        assert_eq!(plugins[1]["type"], "portmap");
        assert_eq!(plugins[1]["capabilities"]["portMappings"], true);
        // What a runtime would hand ferry: the plugin's object plus the
        // list's name and version.
        let mut one = plugins[0].clone();
        one["name"] = v["name"].clone();
        one["cniVersion"] = v["cniVersion"].clone();
        let conf = crate::config::NetConf::parse(&one.to_string()).unwrap();
        assert!(conf.hairpin_mode && conf.is_default_gateway);
        assert_eq!(conf.ipam_dir(), PathBuf::from("/var/lib/cni/networks/cbr0"));
    }
}
