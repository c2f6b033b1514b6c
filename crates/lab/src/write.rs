//! Writes the lab's cluster as manifests for the agents: one JSON file per
//! object, replaced atomically (a hidden temporary file renamed into
//! place, which the manifests source ignores until the rename), and only
//! when its content changed, so that agents reload only what changed.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;

use ferry_model::Object;

use crate::LabError;

pub(crate) struct ManifestWriter {
    dir: PathBuf,
    written: BTreeMap<String, u64>,
}

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
        }
    }

    /// Makes the directory hold exactly `objects`; returns how many files changed.
    pub(crate) fn write(&mut self, objects: &[Object]) -> Result<usize, LabError> {
        let mut changed = 0;
        let mut seen = BTreeMap::new();
        for o in objects {
            let name = file_name(o);
            let mut json = o
                .to_json()
                .map_err(|e| LabError::Plan(format!("cannot serialize {}: {e}", o.key())))?;
            json.push(b'\n');
            let mut h = DefaultHasher::new();
            json.hash(&mut h);
            let hash = h.finish();
            seen.insert(name.clone(), hash);
            if self.written.get(&name) == Some(&hash) {
                continue;
            }
            let tmp = self.dir.join(format!(".{name}.tmp"));
            let path = self.dir.join(&name);
            std::fs::write(&tmp, &json).map_err(LabError::io(&tmp))?;
            std::fs::rename(&tmp, &path).map_err(LabError::io(&path))?;
            changed += 1;
        }
        for name in self.written.keys().filter(|n| !seen.contains_key(*n)) {
            let path = self.dir.join(name);
            std::fs::remove_file(&path).map_err(LabError::io(&path))?;
            changed += 1;
        }
        self.written = seen;
        Ok(changed)
    }
}
