//! What can go wrong in a trace, naming the input, file or namespace
//! involved.
//!
//! Pure.

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("FROM {0:?}: use pod/NAMESPACE/NAME, node/NAME, outside, or an IP address")]
    BadFrom(String),
    #[error("FROM {what:?}: {why}")]
    UnknownFrom { what: String, why: String },
    #[error("TO {0:?}: use a URL, NAME:PORT or IP:PORT")]
    BadTo(String),
    #[error("TO {name:?}: {why}")]
    Unresolved { name: String, why: String },
    #[error("lab {lab:?}: {why}")]
    Lab { lab: String, why: String },
    #[error("{path}: {why}")]
    File { path: String, why: String },
    #[error("network namespace {netns}: {why}")]
    Kernel { netns: String, why: String },
}
