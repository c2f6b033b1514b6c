//! Long-running servers a benchmark starts (DNS servers, nginx, `ferry
//! dns`, `ferry ingress`): killed on drop (un-pinned first), their CPU time
//! and memory read from `/proc`, and free loopback ports for them. They stay
//! `std::process::Command` children; short probes go through `ferry_sys::Tool`.

use std::process::{Child, Command, Stdio};

use anyhow::Context;

use ferry_sys::Tool;

use crate::memory::rss_mib;

/// A started server, killed on drop.
pub(crate) struct Proc {
    pub(crate) name: String,
    pub(crate) child: Child,
    pub(crate) port: u16,
}

impl Proc {
    /// Starts `cmd` (serving on `port`) with no standard streams.
    pub(crate) fn spawn(name: &str, cmd: &mut Command, port: u16) -> anyhow::Result<Proc> {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Proc {
            name: name.to_string(),
            child,
            port,
        })
    }

    /// CPU seconds (user + system) the server has used so far.
    pub(crate) fn cpu_secs(&self) -> f64 {
        cpu_secs(self.child.id())
    }

    /// Resident memory of the server and its children, MiB.
    pub(crate) fn rss_mib(&self) -> f64 {
        tree(self.child.id())
            .iter()
            .filter_map(|p| rss_mib(u64::from(*p)))
            .sum()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Un-pin first, so a hog on core 0 cannot keep it from exiting;
        // then the whole tree: nginx's and nsd's workers outlive a killed
        // master.
        let id = self.child.id();
        let pids: Vec<String> = tree(id).iter().map(ToString::to_string).collect();
        let _ = Tool::new("taskset")
            .args(["-a", "-p", "-c", "0,1", &id.to_string()])
            .output();
        let _ = self.child.kill();
        let _ = Tool::new("kill").arg("-KILL").args(pids).output();
        let _ = self.child.wait();
    }
}

pub(crate) fn free_port() -> u16 {
    ferry_sys::free_loopback_port()
}

/// Every process of the tree rooted at `pid` (nsd forks its workers).
pub(crate) fn tree(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        if let Ok(dirs) = std::fs::read_dir("/proc") {
            for d in dirs.flatten() {
                let Ok(p) = d.file_name().to_string_lossy().parse::<u32>() else {
                    continue;
                };
                if let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat"))
                    && let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r)
                    && rest.split_whitespace().nth(1) == Some(&parent.to_string())
                    && !out.contains(&p)
                {
                    out.push(p);
                }
            }
        }
        i += 1;
    }
    out
}

/// CPU seconds (user + system) used so far by the tree.
pub(crate) fn cpu_secs(pid: u32) -> f64 {
    tree(pid)
        .iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .filter_map(|s| {
            let rest = s.rsplit_once(')')?.1.to_string();
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?)
        })
        .sum::<f64>()
        / 100.0
}
