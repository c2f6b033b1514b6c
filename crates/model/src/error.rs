//! Errors found while reading manifests: each names the file, the document,
//! the object and the field, the way `kubectl apply` and the API server do.

use std::fmt;

/// Which object an error is about (as far as it could be read).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectDesc {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl ObjectDesc {
    /// The object `key` names.
    pub fn of(key: &crate::ObjectKey) -> ObjectDesc {
        ObjectDesc {
            kind: key.kind.to_string(),
            namespace: key.name.namespace.to_string(),
            name: key.name.name.to_string(),
        }
    }
}

impl fmt::Display for ObjectDesc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = if self.name.is_empty() {
            "<no name>"
        } else {
            &self.name
        };
        let kind = if self.kind.is_empty() {
            "<no kind>"
        } else {
            &self.kind
        };
        if self.namespace.is_empty() {
            write!(f, "{kind} {name}")
        } else {
            write!(f, "{kind} {}/{name}", self.namespace)
        }
    }
}

/// One invalid field of one object: `spec.ports[1].port: 70000 is not in 1..65535`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

impl FieldError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// An error in a manifest file. Displayed as
/// `svc.yaml: document 3: Service demo/web: spec.ports[1].port: 70000 is not in 1..65535`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ManifestError {
    /// The file (or other origin) as the user named it.
    pub file: String,
    /// 1-based index of the YAML/JSON document in the file; 0 for the file itself.
    pub document: usize,
    /// For `kind: List`, the 0-based index in `items`.
    pub item: Option<usize>,
    /// 1-based line where the document starts, when known.
    pub line: Option<usize>,
    pub object: Option<ObjectDesc>,
    /// Field path and message; the path is empty for document-level errors.
    pub field: FieldError,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if self.document > 0 {
            write!(f, ": document {}", self.document)?;
        }
        if let Some(line) = self.line {
            write!(f, " (line {line})")?;
        }
        if let Some(item) = self.item {
            write!(f, ": items[{item}]")?;
        }
        if let Some(object) = &self.object {
            write!(f, ": {object}")?;
        }
        if self.field.path.is_empty() {
            write!(f, ": {}", self.field.message)
        } else {
            write!(f, ": {}", self.field)
        }
    }
}
