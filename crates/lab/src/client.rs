//! What the `ferry lab ...` commands do on the user's side: check the input
//! before anything is touched, start the controller daemon and wait for the
//! lab to be ready, talk to a running controller, run commands inside lab
//! namespaces, and take a lab down.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferry_model::decode;

use crate::cleanup::{self, Leftovers};
use crate::names::LabNames;
use crate::plan::Settings;
use crate::protocol::{Request, Response};
use crate::status::LabStatus;
use crate::{LabError, runtime};

pub use crate::cleanup::leftovers;

fn require_root() -> Result<(), LabError> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(LabError::NotRoot)
    }
}

/// Reads manifest files and directories (one level) into (label, text),
/// and checks them: every error is reported and nothing is returned.
pub fn read_manifests(paths: &[PathBuf]) -> Result<Vec<(String, String)>, LabError> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(LabError::io(p))?
                .flatten()
                .map(|e| e.path())
                .filter(|f| {
                    f.is_file()
                        && matches!(
                            f.extension().and_then(|e| e.to_str()),
                            Some("yaml" | "yml" | "json")
                        )
                })
                .collect();
            entries.sort();
            files.extend(entries);
        } else if p.exists() {
            files.push(p.clone());
        } else {
            return Err(LabError::Rejected(format!(
                "{}: no such file or directory",
                p.display()
            )));
        }
    }
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(LabError::io(&f))?;
        let label = f.display().to_string();
        errors.extend(decode(&label, &text).errors.iter().map(ToString::to_string));
        out.push((label, text));
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(LabError::Rejected(format!(
            "{}\n{} error(s); nothing was changed",
            errors.join("\n"),
            errors.len()
        )))
    }
}

fn controller_alive(names: &LabNames) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(names.pid_file())
        .ok()?
        .trim()
        .parse()
        .ok()?;
    runtime::alive(pid).then_some(pid)
}

fn send(names: &LabNames, req: &Request, timeout: Duration) -> Result<String, LabError> {
    if controller_alive(names).is_none() {
        return Err(LabError::NotRunning(names.lab.clone()));
    }
    let path = names.socket();
    let mut stream =
        UnixStream::connect(&path).map_err(|_| LabError::NotRunning(names.lab.clone()))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(LabError::io(&path))?;
    let mut line = serde_json::to_string(req).map_err(|e| LabError::Controller(e.to_string()))?;
    line.push('\n');
    stream
        .write_all(line.as_bytes())
        .map_err(LabError::io(&path))?;
    let mut answer = String::new();
    BufReader::new(&stream)
        .read_line(&mut answer)
        .map_err(LabError::io(&path))?;
    match serde_json::from_str::<Response>(&answer) {
        Ok(Response::Ok(msg)) => Ok(msg),
        Ok(Response::Rejected(errors)) => Err(LabError::Rejected(format!(
            "{}\nnothing was changed",
            errors.join("\n")
        ))),
        Err(_) => Err(LabError::Controller(format!(
            "no answer from the controller (see {})",
            names.controller_log().display()
        ))),
    }
}

pub struct UpOptions {
    pub paths: Vec<PathBuf>,
    pub lab: String,
    pub settings: Settings,
    pub timeout: Duration,
}

/// `ferry lab up`: returns the status once the lab is ready.
pub fn up(opts: UpOptions, progress: &mut dyn FnMut(&str)) -> Result<LabStatus, LabError> {
    let names = LabNames::new(&opts.lab)?;
    require_root()?;
    let files = read_manifests(&opts.paths)?;
    if controller_alive(&names).is_some() {
        return Err(LabError::AlreadyRunning(names.lab.clone()));
    }
    let old = cleanup::leftovers(&names);
    if !old.is_empty() {
        progress(&format!(
            "cleaning up what an earlier lab {:?} left ({})",
            names.lab,
            describe(&old)
        ));
        cleanup::remove_all(&names);
    }
    for dir in [
        names.state_dir(),
        names.manifests_dir(),
        names.input_dir(),
        names.logs_dir(),
        names.pods_dir(),
    ] {
        std::fs::create_dir_all(&dir).map_err(LabError::io(&dir))?;
    }
    // Root only: the inputs and the agents' manifests hold Secrets, and
    // the control socket lives here.
    {
        use std::os::unix::fs::PermissionsExt;
        let dir = names.state_dir();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(LabError::io(&dir))?;
    }
    for (i, (label, text)) in files.iter().enumerate() {
        let base = Path::new(label)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("manifest.yaml");
        let path = names.input_dir().join(format!("{i:04}-{base}"));
        std::fs::write(&path, text).map_err(LabError::io(&path))?;
    }
    let log = names.controller_log();
    let out = std::fs::File::create(&log).map_err(LabError::io(&log))?;
    let err = out.try_clone().map_err(LabError::io(&log))?;
    let settings =
        serde_json::to_string(&opts.settings).map_err(|e| LabError::Controller(e.to_string()))?;
    let mut child = Command::new("setsid")
        .arg(runtime::ferry_exe()?)
        .args([
            "lab",
            "controller",
            "--lab",
            &names.lab,
            "--settings",
            &settings,
        ])
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| LabError::Command {
            command: "setsid ferry lab controller".into(),
            message: e.to_string(),
        })?;
    let start = Instant::now();
    let mut last = String::new();
    loop {
        std::thread::sleep(Duration::from_millis(50));
        if let Some(status) = LabStatus::read(&names.status_file()) {
            if status.message != last {
                progress(&status.message);
                last = status.message.clone();
            }
            match status.phase.as_str() {
                "Ready" => {
                    let _ = child.try_wait();
                    return Ok(status);
                }
                "Failed" => {
                    return Err(LabError::Controller(format!(
                        "{} (log: {})",
                        status.message,
                        log.display()
                    )));
                }
                _ => {}
            }
            if let Some(e) = stuck_agent(&status, start.elapsed()) {
                return Err(LabError::Controller(format!(
                    "{e} (agent log: {}; ferry lab status --lab {})",
                    names.logs_dir().display(),
                    names.lab
                )));
            }
        }
        if let Ok(Some(code)) = child.try_wait()
            && !code.success()
        {
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(5).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(LabError::Controller(format!(
                "it exited ({code}); last lines of {}:\n{}",
                log.display(),
                tail.join("\n")
            )));
        }
        if start.elapsed() > opts.timeout {
            return Err(LabError::Controller(format!(
                "the lab was not ready after {:?}: {last} (see ferry lab status --lab {}, and {})",
                opts.timeout,
                names.lab,
                log.display()
            )));
        }
    }
}

/// How long `lab up` waits for an agent to become healthy (kube-proxy
/// and the lab's own agents are healthy well within a second).
pub const AGENT_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// An agent that keeps the lab from coming up: one that crashed and was
/// restarted twice, or one not healthy after [`AGENT_READY_TIMEOUT`].
fn stuck_agent(status: &LabStatus, waited: Duration) -> Option<String> {
    let n = status
        .nodes
        .iter()
        .find(|n| !n.agent_healthy && (n.agent_restarts >= 2 || waited > AGENT_READY_TIMEOUT))?;
    let why = n
        .agent_error
        .as_deref()
        .unwrap_or("no error in its log; it never answered /healthz on :10256");
    Some(if n.agent_restarts >= 2 {
        format!(
            "the agent on node {} keeps exiting ({} restarts): {why}",
            n.name, n.agent_restarts
        )
    } else {
        format!(
            "the agent on node {} is not healthy after {}s: {why}",
            n.name,
            AGENT_READY_TIMEOUT.as_secs()
        )
    })
}

fn describe(l: &Leftovers) -> String {
    format!(
        "{} processes, {} namespaces, {} files",
        l.processes.len(),
        l.namespaces.len(),
        l.files.len()
    )
}

/// `ferry lab down`: stops the controller and removes everything the lab made.
pub fn down(lab: &str) -> Result<String, LabError> {
    let names = LabNames::new(lab)?;
    require_root()?;
    // What the lab holds now, for the report: the controller removes most
    // of it itself, before the sweep below.
    let before = cleanup::leftovers(&names);
    if controller_alive(&names).is_some() {
        // Let the controller take down what it made; the sweep below catches the rest.
        let _ = send(&names, &Request::Stop, Duration::from_secs(120));
    }
    let swept = cleanup::remove_all(&names);
    let found = if before.is_empty() { swept } else { before };
    let after = cleanup::leftovers(&names);
    if !after.is_empty() {
        return Err(LabError::Controller(format!(
            "lab {lab:?} could not be fully removed: {after:?}"
        )));
    }
    if found.is_empty() {
        Ok(format!("lab {lab:?}: nothing to remove"))
    } else {
        Ok(format!("lab {lab:?} removed ({})", describe(&found)))
    }
}

pub fn apply(lab: &str, paths: &[PathBuf]) -> Result<String, LabError> {
    let names = LabNames::new(lab)?;
    let files = read_manifests(paths)?;
    send(&names, &Request::Apply { files }, Duration::from_secs(60))
}

/// Splits `KIND/NS/NAME` (or `KIND/NAME` for cluster-scoped kinds and the `default` namespace).
pub fn parse_target(target: &str) -> Result<(String, String, String), LabError> {
    let parts: Vec<&str> = target.split('/').collect();
    match parts.as_slice() {
        [kind, ns, name] if !kind.is_empty() && !name.is_empty() => {
            Ok((kind.to_string(), ns.to_string(), name.to_string()))
        }
        [kind, name] if !kind.is_empty() && !name.is_empty() => {
            Ok((kind.to_string(), "default".into(), name.to_string()))
        }
        _ => Err(LabError::Rejected(format!(
            "{target:?}: expected KIND/NAMESPACE/NAME, for example deployment/demo/nginx-web"
        ))),
    }
}

pub fn delete(lab: &str, target: &str) -> Result<String, LabError> {
    let names = LabNames::new(lab)?;
    let (kind, namespace, name) = parse_target(target)?;
    send(
        &names,
        &Request::Delete {
            kind,
            namespace,
            name,
        },
        Duration::from_secs(30),
    )
}

pub fn scale(lab: &str, target: &str, replicas: i32) -> Result<String, LabError> {
    let names = LabNames::new(lab)?;
    let (kind, namespace, name) = parse_target(target)?;
    send(
        &names,
        &Request::Scale {
            kind,
            namespace,
            name,
            replicas,
        },
        Duration::from_secs(30),
    )
}

/// The lab's status, with a note when its controller is not running.
pub fn status(lab: &str) -> Result<LabStatus, LabError> {
    let names = LabNames::new(lab)?;
    let mut status = LabStatus::read(&names.status_file())
        .ok_or_else(|| LabError::NotRunning(lab.to_string()))?;
    if controller_alive(&names).is_none() {
        status.phase = "Stopped".into();
        status.message =
            format!("the controller is not running; clean up with ferry lab down --lab {lab}");
    }
    Ok(status)
}

/// The network namespace of `pod/NS/NAME` (or `NS/NAME`), `node/NAME` or `outside`.
pub fn exec_namespace(lab: &str, target: &str) -> Result<String, LabError> {
    let st = status(lab)?;
    if target == "outside" {
        return Ok(st.outside.netns);
    }
    if let Some(node) = target.strip_prefix("node/") {
        return st
            .nodes
            .iter()
            .find(|n| n.name == node)
            .map(|n| n.netns.clone())
            .ok_or_else(|| LabError::Rejected(format!("node {node:?} not found in lab {lab:?}")));
    }
    let rest = target.strip_prefix("pod/").unwrap_or(target);
    let (ns, name) = rest.split_once('/').unwrap_or(("default", rest));
    st.pods
        .iter()
        .filter(|p| p.namespace == ns && p.name == name)
        .min_by_key(|p| p.terminating)
        .map(|p| p.netns.clone())
        .ok_or_else(|| {
            LabError::Rejected(format!(
                "pod {ns}/{name} not found in lab {lab:?} (see ferry lab status)"
            ))
        })
}

/// The command line that runs `cmd` in the target's namespace (with a pod's own resolv.conf).
pub fn exec_command(lab: &str, target: &str, cmd: &[String]) -> Result<Command, LabError> {
    require_root()?;
    let ns = exec_namespace(lab, target)?;
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &ns]).args(cmd);
    Ok(c)
}
