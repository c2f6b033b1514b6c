//! The pod network's lease store as the lab's administrator sees it: it
//! writes flannel's network config before the first node starts and
//! deletes a removed node's lease (as Kubernetes deletes a removed Node).
//! The file store is a directory; etcd is a real etcd in the control-plane
//! namespace, reached with etcdctl from inside that namespace (the lab never
//! sends from the root namespace to a lab address).

use std::time::Duration;

use ferry_overlay::store::FileStore;
use ipnet::Ipv4Net;

use crate::LabError;

/// flannel's default etcd prefix.
const PREFIX: &str = "/coreos.com/network";

pub(crate) enum LabLeases {
    File(FileStore),
    Etcd {
        ns: String,
        endpoint: String,
    },
    /// On the Nodes: only the network config is the administrator's
    /// (flannel's net-conf.json); a removed Node takes its lease with it.
    Kube {
        net_conf: std::path::PathBuf,
    },
}

fn etcdctl(ns: &str, endpoint: &str, args: &[&str]) -> Result<String, LabError> {
    ferry_sys::Tool::new("etcdctl")
        .netns(Some(ns))
        .env("ETCDCTL_API", "3")
        .args([
            "--endpoints",
            endpoint,
            "--dial-timeout",
            "2s",
            "--command-timeout",
            "5s",
        ])
        .args(args.iter().copied())
        .timeout(Duration::from_secs(10))
        .run()
        .map(|o| o.stdout)
        .map_err(|e| LabError::Command {
            command: format!("etcdctl {}", args.join(" ")),
            message: e.to_string(),
        })
}

impl LabLeases {
    pub(crate) fn put_config(&self, json: &str) -> Result<(), LabError> {
        match self {
            LabLeases::File(store) => store
                .put_config(json)
                .map_err(|e| LabError::Plan(format!("the pod network's config: {e}"))),
            LabLeases::Etcd { ns, endpoint } => {
                etcdctl(ns, endpoint, &["put", &format!("{PREFIX}/config"), json]).map(drop)
            }
            LabLeases::Kube { net_conf } => {
                let tmp = net_conf.with_extension("tmp");
                std::fs::write(&tmp, json)
                    .and_then(|()| std::fs::rename(&tmp, net_conf))
                    .map_err(LabError::io(net_conf))
            }
        }
    }

    pub(crate) fn delete(&self, subnet: Ipv4Net) -> Result<(), LabError> {
        match self {
            LabLeases::File(store) => store
                .delete(subnet)
                .map_err(|e| LabError::Plan(e.to_string())),
            LabLeases::Etcd { ns, endpoint } => etcdctl(
                ns,
                endpoint,
                &[
                    "del",
                    &format!("{PREFIX}/subnets/{}", ferry_overlay::subnet_key(subnet)),
                ],
            )
            .map(drop),
            LabLeases::Kube { .. } => Ok(()),
        }
    }

    /// Waits until etcd answers (it takes a moment to elect itself).
    pub(crate) fn wait_ready(&self, limit: Duration) -> Result<(), LabError> {
        let LabLeases::Etcd { ns, endpoint } = self else {
            return Ok(());
        };
        let start = std::time::Instant::now();
        loop {
            match etcdctl(ns, endpoint, &["endpoint", "health"]) {
                Ok(_) => return Ok(()),
                Err(e) if start.elapsed() >= limit => {
                    return Err(LabError::Plan(format!(
                        "etcd at {endpoint} is not healthy after {limit:?}: {e}"
                    )));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}
