//! CNI ADD and DEL per pod, as a runtime calls them (the plugin run under
//! `ip netns exec NODE` with the CNI_* environment and the config on
//! stdin): `ferry cni` (this binary) against Debian's reference `bridge`
//! with `host-local` IPAM, configured alike (a bridge `cni0` as the pods'
//! default gateway, hairpin on, no masquerade, MTU 1450, a /24 of pod
//! addresses). Each plugin has its own node namespace; the pods'
//! namespaces are shared, one plugin's DELs emptying them before the
//! other's ADDs. Also timed: `ip netns exec NODE true`, the part of every
//! call that is the runtime's, not the plugin's. Touches the kernel
//! (namespaces `ferry-bench-ov-*`), files (a temporary directory) and
//! processes (the ferry binary, the reference plugins, `ip`, `true`).

use std::time::{Duration, Instant};

use anyhow::Context;
use ferry_sys::Tool;
use serde_json::{Value, json};

use super::scratch::Netns;

/// Where Debian's containernetworking-plugins live.
const REFERENCE: &str = "/usr/lib/cni";
/// The newest version both ferry and Debian's plugins (1.1.1) speak.
const CNI_VERSION: &str = "1.0.0";

/// Per-call times (ms) of one plugin.
#[derive(Default)]
pub(super) struct Calls {
    pub(super) add: Vec<f64>,
    pub(super) del: Vec<f64>,
}

/// A plugin under test: its node, binary and config.
struct Plugin {
    node: Netns,
    program: String,
    conf: Value,
}

pub(super) struct Bench {
    ferry: Plugin,
    reference: Plugin,
    pods: Vec<Netns>,
    _dir: tempfile::TempDir,
}

impl Bench {
    pub(super) fn create(pods: usize) -> anyhow::Result<Bench> {
        let dir = tempfile::tempdir().context("creating a scratch directory")?;
        let subnet_env = dir.path().join("subnet.env");
        std::fs::write(
            &subnet_env,
            "FLANNEL_NETWORK=10.62.0.0/16\nFLANNEL_SUBNET=10.62.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
        )
        .with_context(|| format!("writing {}", subnet_env.display()))?;
        let exe = std::env::current_exe().context("locating the ferry binary")?;
        let ferry = Plugin {
            node: Netns::new("cni-ferry")?,
            program: exe.display().to_string(),
            conf: json!({
                "cniVersion": CNI_VERSION,
                "name": "podnet",
                "type": "ferry",
                "subnetFile": subnet_env,
                "dataDir": dir.path().join("ferry"),
            }),
        };
        let reference = Plugin {
            node: Netns::new("cni-ref")?,
            program: format!("{REFERENCE}/bridge"),
            conf: json!({
                "cniVersion": CNI_VERSION,
                "name": "podnet",
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": true,
                "isDefaultGateway": true,
                "hairpinMode": true,
                "ipMasq": false,
                "mtu": 1450,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": "10.62.2.0/24"}]],
                    "dataDir": dir.path().join("host-local"),
                },
            }),
        };
        let pods = (0..pods)
            .map(|i| Netns::new(&format!("cni-pod{i}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Bench {
            ferry,
            reference,
            pods,
            _dir: dir,
        })
    }

    /// ADD for every pod, then DEL for every pod; (ferry, reference).
    pub(super) fn run(&self) -> anyhow::Result<(Calls, Calls)> {
        Ok((self.calls(&self.ferry)?, self.calls(&self.reference)?))
    }

    fn calls(&self, plugin: &Plugin) -> anyhow::Result<Calls> {
        let mut calls = Calls::default();
        for (command, times) in [("ADD", &mut calls.add), ("DEL", &mut calls.del)] {
            for (i, pod) in self.pods.iter().enumerate() {
                let tool = Tool::new(&plugin.program)
                    .netns(Some(plugin.node.name()))
                    .env("CNI_COMMAND", command)
                    .env("CNI_CONTAINERID", format!("bench-{i}"))
                    .env("CNI_NETNS", format!("/run/netns/{}", pod.name()))
                    .env("CNI_IFNAME", "eth0")
                    .env("CNI_PATH", REFERENCE)
                    .env("CNI_ARGS", "IgnoreUnknown=1")
                    .stdin(plugin.conf.to_string())
                    .timeout(Duration::from_secs(20));
                let start = Instant::now();
                let out = tool.output()?;
                let took = start.elapsed();
                if !out.status.success() {
                    anyhow::bail!(
                        "{} {command} for {}: {} {}",
                        plugin.program,
                        pod.name(),
                        out.stdout.trim(),
                        out.stderr.trim()
                    );
                }
                times.push(took.as_secs_f64() * 1e3);
            }
        }
        Ok(calls)
    }

    /// Times (ms) of `ip netns exec NODE true`, once per pod.
    pub(super) fn runtime_share(&self) -> anyhow::Result<Vec<f64>> {
        let mut times = Vec::new();
        for _ in &self.pods {
            let start = Instant::now();
            Tool::new("true")
                .netns(Some(self.ferry.node.name()))
                .run()?;
            times.push(start.elapsed().as_secs_f64() * 1e3);
        }
        Ok(times)
    }
}
