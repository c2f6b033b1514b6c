//! Installing the conflist in the runtime's CNI config directory
//! (`/etc/cni/net.d`), as flannel's DaemonSet init container copies
//! `10-flannel.conflist`: written beside it under a name runtimes ignore,
//! then renamed, so a runtime watching the directory never reads half a
//! file; left alone when it already says the same. Touches files.

use std::path::{Path, PathBuf};

use crate::conflist::{CONFLIST_FILE, Conflist};

#[derive(Debug, thiserror::Error)]
#[error("installing the CNI conflist {path}: {source}")]
pub struct InstallError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Writes `dir/10-ferry.conflist`; true when it changed.
pub fn install(dir: &Path, conflist: &Conflist) -> Result<bool, InstallError> {
    let path = dir.join(CONFLIST_FILE);
    let err = |source| InstallError {
        path: path.clone(),
        source,
    };
    let text = conflist.render();
    if std::fs::read_to_string(&path).is_ok_and(|old| old == text) {
        return Ok(false);
    }
    std::fs::create_dir_all(dir).map_err(err)?;
    let temp = dir.join(format!(".{CONFLIST_FILE}.tmp"));
    std::fs::write(&temp, &text).map_err(err)?;
    std::fs::rename(&temp, &path).map_err(err)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_conflist_is_written_once_and_left_alone_when_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let net_d = dir.path().join("net.d");
        let c = Conflist::default();
        assert!(install(&net_d, &c).unwrap());
        assert!(!install(&net_d, &c).unwrap());
        let text = std::fs::read_to_string(net_d.join("10-ferry.conflist")).unwrap();
        assert_eq!(text, c.render());
        let names: Vec<_> = std::fs::read_dir(&net_d)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temporary file left: {names:?}");
    }
}
