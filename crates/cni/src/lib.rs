//! `ferry cni`: a CNI 1.1 plugin for the node's flannel-style subnet.
//!
//! A runtime (containerd, CRI-O, the lab's kubelet) runs it with the call
//! in CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_ARGS and
//! CNI_PATH and the network config on stdin; it prints the result (or an
//! error object with the spec's code) on stdout and exits non-zero on
//! error. Runtimes exec `$CNI_PATH/<type>` with no arguments, so `ferry`
//! run with no arguments while CNI_COMMAND is set acts as `ferry cni`:
//! `ln -s /usr/local/bin/ferry /opt/cni/bin/ferry` installs it.
//!
//! Config as flannel's CNI plugin reads it (`type` "ferry"; `subnetFile`
//! default `/run/flannel/subnet.env`; `dataDir` default
//! `/var/lib/cni/networks`; `bridge` default `cni0`; `hairpinMode` and
//! `isDefaultGateway` default true; `mtu` default FLANNEL_MTU, since a
//! pod MTU above the VXLAN device's stalls cross-node TCP). Versions
//! 0.3.0 to 1.1.0. `conflist` renders the `10-ferry.conflist` the agent
//! installs (ferry, then portmap) and `install` writes it into
//! `/etc/cni/net.d`.
//!
//! Rooms: `env`, `config`, `version`, `error`, `result`, `range`, `names`,
//! `conflist` are pure; `ipam` and `install` touch files; `link` the kernel; `plugin`
//! runs the commands. `run` is the whole plugin: environment and stdin
//! in, stdout and exit status out.

pub mod config;
pub mod conflist;
pub mod env;
pub mod error;
pub mod install;
pub mod ipam;
mod link;
pub mod names;
mod plugin;
pub mod range;
pub mod result;
pub mod version;

use std::collections::BTreeMap;

use serde_json::json;

pub use config::NetConf;
pub use conflist::{CONFLIST_FILE, Conflist};
pub use env::{Command, Invocation};
pub use error::{CniError, Code};
pub use install::{InstallError, install};

/// What the plugin prints and how it exits.
#[derive(Debug)]
pub struct Reply {
    pub stdout: String,
    pub success: bool,
}

/// One plugin run: the CNI_* environment and stdin in, the reply out.
pub fn run(env: &BTreeMap<String, String>, stdin: &str) -> Reply {
    let version = config::peek_version(stdin)
        .filter(|v| version::Version::parse(v).is_ok())
        .unwrap_or_else(|| version::LATEST.as_str().to_string());
    match run_inner(env, stdin) {
        Ok(Some(v)) => Reply {
            stdout: format!("{v}\n"),
            success: true,
        },
        Ok(None) => Reply {
            stdout: String::new(),
            success: true,
        },
        Err(e) => Reply {
            stdout: format!("{}\n", e.to_json(&version)),
            success: false,
        },
    }
}

fn run_inner(
    env: &BTreeMap<String, String>,
    stdin: &str,
) -> Result<Option<serde_json::Value>, CniError> {
    let inv = Invocation::from_env(env)?;
    if inv.command == Command::Version {
        // The version asked for when it is one ferry speaks, else the newest.
        let asked = config::peek_version(stdin)
            .and_then(|v| version::Version::parse(&v).ok())
            .unwrap_or(version::LATEST);
        return Ok(Some(json!({
            "cniVersion": asked.as_str(),
            "supportedVersions": version::supported_list(),
        })));
    }
    let conf = NetConf::parse(stdin)?;
    plugin::dispatch(&inv, &conf)
}
