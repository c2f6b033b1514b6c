//! The lab's kubelet as a CNI runtime (what containerd's libcni does for a
//! real kubelet): it reads the node's conflist (the one the node's agent
//! installed, as flannel's DaemonSet installs its own), runs each plugin
//! of the chain in order for ADD, passing each one the previous result,
//! and in reverse order for DEL. Plugins are found on CNI_PATH: the lab's
//! own bin directory (`ferry` -> this binary) and Debian's reference
//! plugins in /usr/lib/cni. Plugins run in the node's namespace.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::LabError;

/// Where Debian's containernetworking-plugins live.
pub const REFERENCE_PLUGINS: &str = "/usr/lib/cni";

/// One pod's attachment.
pub struct Attachment<'a> {
    pub node_ns: String,
    pub container_id: String,
    /// `/run/netns/NAME` of the pod.
    pub netns_path: String,
    pub pod_namespace: &'a str,
    pub pod_name: &'a str,
    /// The address the lab planned (the plugin's IPAM honours it).
    pub ip: std::net::Ipv4Addr,
}

/// The node's CNI configuration and plugin directories.
pub struct Runtime {
    pub conflist: PathBuf,
    pub bin_dirs: Vec<PathBuf>,
}

fn not_ready(why: String) -> LabError {
    LabError::Command {
        command: "CNI".into(),
        message: why,
    }
}

impl Runtime {
    fn load(&self) -> Result<Value, LabError> {
        let text = std::fs::read_to_string(&self.conflist).map_err(|e| {
            not_ready(format!(
                "network plugin not ready: {}: {e} (the node's agent installs it)",
                self.conflist.display()
            ))
        })?;
        serde_json::from_str(&text)
            .map_err(|e| not_ready(format!("{}: {e}", self.conflist.display())))
    }

    fn plugin_path(&self, kind: &str) -> Result<PathBuf, LabError> {
        self.bin_dirs
            .iter()
            .map(|d| d.join(kind))
            .find(|p| p.exists())
            .ok_or_else(|| {
                not_ready(format!(
                    "CNI plugin {kind:?} not found in {:?}",
                    self.bin_dirs
                ))
            })
    }

    fn cni_path(&self) -> String {
        self.bin_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    }

    fn call(
        &self,
        command: &str,
        a: &Attachment<'_>,
        plugin: &Value,
        list: &Value,
        prev: Option<&Value>,
    ) -> Result<Option<Value>, LabError> {
        let kind = plugin["type"].as_str().unwrap_or_default();
        let mut config = plugin.clone();
        config["name"] = list["name"].clone();
        config["cniVersion"] = list["cniVersion"].clone();
        if let Some(p) = prev {
            config["prevResult"] = p.clone();
        }
        let path = self.plugin_path(kind)?;
        let args = format!(
            "IgnoreUnknown=1;IP={};K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={}",
            a.ip, a.pod_namespace, a.pod_name, a.container_id
        );
        let out = ferry_sys::Tool::new(path.display().to_string())
            .netns(Some(&a.node_ns))
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", a.container_id.clone())
            .env("CNI_NETNS", a.netns_path.clone())
            .env("CNI_IFNAME", "eth0")
            .env("CNI_ARGS", args)
            .env("CNI_PATH", self.cni_path())
            .stdin(config.to_string())
            .timeout(Duration::from_secs(20))
            .output()
            .map_err(|e| not_ready(format!("{kind} {command}: {e}")))?;
        if !out.status.success() {
            // A plugin's error object is on stdout.
            let message = serde_json::from_str::<Value>(&out.stdout)
                .ok()
                .map(|v| {
                    format!(
                        "code {}: {}",
                        v["code"],
                        v["msg"].as_str().unwrap_or_default()
                    )
                })
                .unwrap_or_else(|| format!("{} {}", out.status, out.stderr.trim()));
            return Err(not_ready(format!("{kind} {command}: {message}")));
        }
        if out.stdout.trim().is_empty() {
            return Ok(None);
        }
        serde_json::from_str(&out.stdout)
            .map(Some)
            .map_err(|e| not_ready(format!("{kind} {command}: its result: {e}")))
    }

    /// ADD through the whole chain; the final result.
    pub fn add(&self, a: &Attachment<'_>) -> Result<Value, LabError> {
        let list = self.load()?;
        let mut prev: Option<Value> = None;
        for plugin in list["plugins"].as_array().into_iter().flatten() {
            if let Some(result) = self.call("ADD", a, plugin, &list, prev.as_ref())? {
                prev = Some(result);
            }
        }
        prev.ok_or_else(|| not_ready("the CNI chain returned no result".into()))
    }

    /// DEL through the chain in reverse (errors are reported, not fatal:
    /// the pod's namespace goes anyway).
    pub fn del(&self, a: &Attachment<'_>) -> Result<(), LabError> {
        let list = self.load()?;
        let mut first_error = None;
        for plugin in list["plugins"].as_array().into_iter().flatten().rev() {
            if let Err(e) = self.call("DEL", a, plugin, &list, None) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// The lab's plugin directory: `ferry` links to the running binary.
pub fn bin_dir(state_dir: &Path) -> Result<PathBuf, LabError> {
    let dir = state_dir.join("cni-bin");
    std::fs::create_dir_all(&dir).map_err(LabError::io(&dir))?;
    let link = dir.join("ferry");
    if !link.exists() {
        let exe = crate::runtime::ferry_exe()?;
        std::os::unix::fs::symlink(&exe, &link).map_err(LabError::io(&link))?;
    }
    Ok(dir)
}

/// The pod's address in a result (any version from 0.3.0 on).
pub fn result_ip(result: &Value) -> Option<String> {
    result["ips"]
        .as_array()?
        .iter()
        .filter_map(|ip| ip["address"].as_str())
        .map(|a| a.split('/').next().unwrap_or(a).to_string())
        .next()
}
