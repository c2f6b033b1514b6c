//! The lab's processes: agents in node namespaces, echo servers in pod
//! namespaces. Started through `ip netns exec` (which also bind-mounts a
//! pod's own resolv.conf), in their own process group, logging to files.
//! Every one carries `--lab NAME` so that cleanup can find it after a crash.

use std::fs::OpenOptions;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::LabError;

pub(crate) fn ferry_exe() -> Result<std::path::PathBuf, LabError> {
    std::env::current_exe().map_err(LabError::io("/proc/self/exe"))
}

/// Starts `ferry ARGS...` inside network namespace `ns`.
pub(crate) fn spawn_in(ns: &str, args: &[String], log: &Path) -> Result<Child, LabError> {
    let exe = ferry_exe()?;
    let log_level = std::env::var("FERRY_LAB_LOG").unwrap_or_else(|_| "info".into());
    spawn(
        ns,
        &exe.display().to_string(),
        args,
        log,
        &[("RUST_LOG", &log_level)],
    )
}

/// Starts another program (etcd) inside network namespace `ns`, in its
/// own process group, logging to a file; cleanup finds it by namespace.
pub(crate) fn spawn_program_in(
    ns: &str,
    program: &str,
    args: &[String],
    log: &Path,
) -> Result<Child, LabError> {
    ferry_sys::require([program]).map_err(|e| LabError::Command {
        command: program.to_string(),
        message: e.to_string(),
    })?;
    spawn(ns, program, args, log, &[])
}

fn spawn(
    ns: &str,
    program: &str,
    args: &[String],
    log: &Path,
    env: &[(&str, &str)],
) -> Result<Child, LabError> {
    use std::os::unix::process::CommandExt;
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(LabError::io(log))?;
    let err = out.try_clone().map_err(LabError::io(log))?;
    Command::new("ip")
        .args(["netns", "exec", ns, program])
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .envs(env.iter().copied())
        .process_group(0)
        .spawn()
        .map_err(|e| LabError::Command {
            command: format!("ip netns exec {ns} {program} {}", args.join(" ")),
            message: e.to_string(),
        })
}

/// Kills a child at once and reaps it.
pub(crate) fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

pub(crate) fn kill_pid(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// Running (a zombie, killed but not yet reaped by its parent, is not).
pub(crate) fn alive(pid: u32) -> bool {
    let exists = i32::try_from(pid).is_ok_and(|p| kill(Pid::from_raw(p), None).is_ok());
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false);
    exists && !zombie
}

/// Processes whose command line carries `--lab NAME` (and are not us).
pub(crate) fn lab_processes(lab: &str) -> Vec<u32> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let args: Vec<&[u8]> = raw.split(|b| *b == 0).collect();
            args.windows(2)
                .any(|w| w[0] == b"--lab" && w[1] == lab.as_bytes())
                && args.iter().any(|a| a.ends_with(b"ferry"))
        })
        .collect()
}

/// Processes living in network namespace `ns` (`ip netns pids`).
pub(crate) fn ns_processes(ns: &str) -> Vec<u32> {
    Command::new("ip")
        .args(["netns", "pids", ns])
        .stderr(Stdio::null())
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}
