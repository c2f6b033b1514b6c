//! Where the cluster comes from, as the `--source` flag says it:
//! `manifests:DIR` (files, watched) today; the Kubernetes API next.

use std::path::PathBuf;
use std::str::FromStr;

/// A source of cluster state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceSpec {
    /// `manifests:PATH`: files or a directory of manifests, watched.
    Manifests(PathBuf),
}

impl FromStr for SourceSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            Some(("manifests", path)) if !path.is_empty() => Ok(SourceSpec::Manifests(path.into())),
            _ => Err(format!(
                "{s:?}: expected manifests:DIR (the Kubernetes API source is not built yet)"
            )),
        }
    }
}

impl std::fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceSpec::Manifests(p) => write!(f, "manifests:{}", p.display()),
        }
    }
}
