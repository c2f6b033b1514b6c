//! The one writer to the API (ARCHITECTURE.md, "Settled between issues"):
//! components never hold a client; they ask the source to write the few
//! fields they own. Now: a Node's annotations (the overlay's Kubernetes
//! lease store owns `flannel.alpha.coreos.com/*` on its own Node), as a
//! JSON merge patch. Each write runs on a short-lived thread with a
//! runtime of its own, so a caller inside another runtime can wait for it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};

/// How long one write may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Writes to the API with the source's own configuration.
#[derive(Clone, Debug)]
pub struct Writer {
    kubeconfig: Option<PathBuf>,
}

impl Writer {
    /// A writer using `kubeconfig` (None: in-cluster, KUBECONFIG, ~/.kube/config).
    pub fn new(kubeconfig: Option<PathBuf>) -> Writer {
        Writer { kubeconfig }
    }

    /// Merges `annotations` into Node `node`'s (a merge patch of
    /// `metadata.annotations`; other annotations are left alone).
    pub fn annotate_node(
        &self,
        node: &str,
        annotations: &BTreeMap<String, String>,
    ) -> Result<(), String> {
        let patch = serde_json::json!({"metadata": {"annotations": annotations}});
        let (kubeconfig, node) = (self.kubeconfig.clone(), node.to_string());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("api-write".into())
            .spawn(move || {
                let result = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())
                    .and_then(|rt| {
                        rt.block_on(async {
                            let (client, origin) = crate::source::connect(kubeconfig.as_deref())
                                .await
                                .map_err(|e| e.to_string())?;
                            let nodes: Api<Node> = Api::all(client);
                            tokio::time::timeout(
                                WRITE_TIMEOUT,
                                nodes.patch(&node, &PatchParams::default(), &Patch::Merge(&patch)),
                            )
                            .await
                            .map_err(|_| format!("{origin}: patching Node {node}: no answer within {WRITE_TIMEOUT:?}"))?
                            .map(drop)
                            .map_err(|e| format!("{origin}: patching Node {node}: {e}"))
                        })
                    });
                let _ = tx.send(result);
            })
            .map_err(|e| e.to_string())?;
        rx.recv()
            .unwrap_or_else(|_| Err("the API writer's thread ended".into()))
    }
}
