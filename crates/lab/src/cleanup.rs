//! Finds and removes everything a lab made, whether its controller is
//! alive or was killed: processes (by their `--lab NAME` argument and by
//! the namespaces they live in), network namespaces (by name prefix), the
//! pods' `/etc/netns` files and the state directory.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::names::{LabNames, STATE_ROOT};
use crate::{net, runtime};

/// What a lab has left on this machine.
#[derive(Debug, Default)]
pub struct Leftovers {
    pub processes: Vec<u32>,
    pub namespaces: Vec<String>,
    pub files: Vec<PathBuf>,
}

impl Leftovers {
    pub fn is_empty(&self) -> bool {
        self.processes.is_empty() && self.namespaces.is_empty() && self.files.is_empty()
    }
}

fn etc_netns_entries(names: &LabNames) -> Vec<PathBuf> {
    let prefix = names.ns_prefix();
    std::fs::read_dir("/etc/netns")
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    e.file_name()
                        .to_str()
                        .is_some_and(|n| n.starts_with(&prefix))
                })
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

pub fn leftovers(names: &LabNames) -> Leftovers {
    let namespaces = net::lab_namespaces(names);
    let mut processes = runtime::lab_processes(&names.lab);
    for ns in &namespaces {
        processes.extend(runtime::ns_processes(ns));
    }
    processes.sort();
    processes.dedup();
    processes.retain(|p| *p != std::process::id());
    let mut files = etc_netns_entries(names);
    if names.state_dir().exists() {
        files.push(names.state_dir());
    }
    Leftovers {
        processes,
        namespaces,
        files,
    }
}

/// Removes everything; returns what was found. Safe to run on a lab that
/// does not exist.
pub fn remove_all(names: &LabNames) -> Leftovers {
    let found = leftovers(names);
    for pid in &found.processes {
        runtime::kill_pid(*pid);
    }
    // Killed processes release their namespaces only once reaped.
    let deadline = Instant::now() + Duration::from_secs(5);
    while found.processes.iter().any(|p| runtime::alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    // Pods first, then nodes, the outside client and the switch.
    let mut namespaces = found.namespaces.clone();
    namespaces.sort_by_key(|n| (!n.contains(".pod."), !n.contains(".node."), n.clone()));
    if let Err(e) = net::ns_del_many(&namespaces) {
        tracing::warn!(error = %e, "cannot delete every namespace");
    }
    for f in &found.files {
        let _ = if f.is_dir() {
            std::fs::remove_dir_all(f)
        } else {
            std::fs::remove_file(f)
        };
    }
    let _ = std::fs::remove_dir(STATE_ROOT);
    found
}
