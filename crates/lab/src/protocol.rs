//! Requests from `ferry lab ...` commands to the lab controller, over the
//! lab's Unix socket: one JSON line each way.

use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Request {
    /// Manifests as (file name for messages, content).
    Apply { files: Vec<(String, String)> },
    Delete {
        kind: String,
        namespace: String,
        name: String,
    },
    Scale {
        kind: String,
        namespace: String,
        name: String,
        replicas: i32,
    },
    /// Stop the lab: the controller removes what it made and exits.
    Stop,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Response {
    Ok(String),
    Rejected(Vec<String>),
}
