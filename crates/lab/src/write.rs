//! Writes the lab's cluster as manifests for the agents: one JSON file per
//! object, replaced atomically (a hidden temporary file renamed into
//! place, which the manifests source ignores until the rename), and only
//! when its content changed, so that agents reload only what changed.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;

use ferry_model::{NamespacedName, Object};

use crate::LabError;
use crate::plan::PodInfo;

/// An object as the lab's API server would hold it: a Pod whole, with the
/// spec the lab runs (the model's Pod is slim and has no containers).
fn json_of(o: &Object, pods: &BTreeMap<NamespacedName, PodInfo>) -> Result<Vec<u8>, LabError> {
    let fail = |e: serde_json::Error| LabError::Plan(format!("cannot serialize {}: {e}", o.key()));
    let mut json = o.to_json().map_err(fail)?;
    if let Object::Pod(_) = o
        && let Some(p) = pods.get(&o.key().name)
    {
        let mut v: serde_json::Value = serde_json::from_slice(&json).map_err(fail)?;
        let mut spec = (*p.spec).clone();
        spec.node_name = Some(p.node.clone());
        v["spec"] = serde_json::to_value(&spec).map_err(fail)?;
        json = serde_json::to_vec(&v).map_err(fail)?;
    }
    json.push(b'\n');
    Ok(json)
}

pub(crate) struct ManifestWriter {
    dir: PathBuf,
    written: BTreeMap<String, u64>,
    /// Counts the writes that changed something. Each changed object gets
    /// it as `metadata.resourceVersion` (as the API server gives one), and
    /// a marker ConfigMap always carries the latest, so an agent can say
    /// which version it has programmed.
    generation: u64,
}

/// The marker object: `kube-system/ferry-lab-sync`.
pub(crate) const MARKER: &str = "ferry-lab-sync";

fn file_name(o: &Object) -> String {
    let key = o.key();
    let kind = key.kind.as_str().to_ascii_lowercase();
    if key.name.namespace.is_empty() {
        format!("{kind}.{}.json", key.name.name)
    } else {
        format!("{kind}.{}.{}.json", key.name.namespace, key.name.name)
    }
}

impl ManifestWriter {
    pub(crate) fn new(dir: PathBuf) -> Self {
        ManifestWriter {
            dir,
            written: BTreeMap::new(),
            generation: 0,
        }
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    fn put(&self, name: &str, json: &[u8]) -> Result<(), LabError> {
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let path = self.dir.join(name);
        std::fs::write(&tmp, json).map_err(LabError::io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(LabError::io(&path))
    }

    /// Makes the directory hold exactly `objects` (with `pods`' whole
    /// specs); returns how many files changed.
    pub(crate) fn write(
        &mut self,
        objects: &[Object],
        pods: &BTreeMap<NamespacedName, PodInfo>,
    ) -> Result<usize, LabError> {
        let mut changed = 0;
        let mut seen = BTreeMap::new();
        let next = self.generation + 1;
        for o in objects {
            let name = file_name(o);
            let json = json_of(o, pods)?;
            let mut h = DefaultHasher::new();
            json.hash(&mut h);
            let hash = h.finish();
            seen.insert(name.clone(), hash);
            if self.written.get(&name) == Some(&hash) {
                continue;
            }
            let mut versioned = o.clone();
            versioned
                .metadata_mut()
                .set_resource_version(Some(next.to_string()));
            self.put(&name, &json_of(&versioned, pods)?)?;
            changed += 1;
        }
        for name in self
            .written
            .keys()
            .filter(|n| !seen.contains_key(*n) && !n.contains(MARKER))
        {
            let path = self.dir.join(name);
            std::fs::remove_file(&path).map_err(LabError::io(&path))?;
            changed += 1;
        }
        let marker_file = format!("configmap.kube-system.{MARKER}.json");
        seen.insert(marker_file.clone(), 0);
        self.written = seen;
        if changed > 0 {
            self.generation = next;
            let marker = serde_json::json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                // Labelled so the API source, which watches only ferry's
                // ConfigMaps, sees it too.
                "metadata": {"name": MARKER, "namespace": "kube-system", "resourceVersion": next.to_string(),
                             "labels": {"app.kubernetes.io/part-of": "ferry"}},
                "data": {"generation": next.to_string()},
            });
            self.put(&marker_file, format!("{marker}\n").as_bytes())?;
        }
        Ok(changed)
    }
}
