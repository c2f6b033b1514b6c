//! Where the cluster comes from, as the `--source` flag says it:
//! `manifests:DIR` (files, watched) or `kube` / `kube:KUBECONFIG` (the
//! Kubernetes API, started by the ferry-kube crate).

use std::path::PathBuf;
use std::str::FromStr;

/// A source of cluster state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceSpec {
    /// `manifests:PATH`: files or a directory of manifests, watched.
    Manifests(PathBuf),
    /// `kube`: the Kubernetes API, with the in-cluster config (or
    /// `KUBECONFIG`, `~/.kube/config`); `kube:PATH`: with this kubeconfig.
    Kube { kubeconfig: Option<PathBuf> },
}

impl FromStr for SourceSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            None if s == "kube" => Ok(SourceSpec::Kube { kubeconfig: None }),
            Some(("kube", path)) if !path.is_empty() => Ok(SourceSpec::Kube {
                kubeconfig: Some(path.into()),
            }),
            Some(("manifests", path)) if !path.is_empty() => Ok(SourceSpec::Manifests(path.into())),
            _ => Err(format!(
                "{s:?}: expected manifests:DIR, kube or kube:KUBECONFIG"
            )),
        }
    }
}

impl std::fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceSpec::Manifests(p) => write!(f, "manifests:{}", p.display()),
            SourceSpec::Kube { kubeconfig: None } => f.write_str("kube"),
            SourceSpec::Kube {
                kubeconfig: Some(p),
            } => write!(f, "kube:{}", p.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_print_back() {
        for text in ["manifests:/etc/ferry", "kube", "kube:/root/.kube/config"] {
            let spec: SourceSpec = text.parse().unwrap();
            assert_eq!(spec.to_string(), text);
        }
        assert_eq!(
            "kube:/k".parse::<SourceSpec>(),
            Ok(SourceSpec::Kube {
                kubeconfig: Some("/k".into())
            })
        );
        for bad in ["kube:", "manifests:", "api", "kubernetes:/x"] {
            let e = bad.parse::<SourceSpec>().unwrap_err();
            assert!(e.contains("kube:KUBECONFIG"), "{e}");
        }
    }
}
