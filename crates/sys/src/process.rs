//! Running one external program: optional stdin and environment, an optional network
//! namespace (`ip netns exec NS`), a deadline after which it is killed, and
//! its stdout and stderr always collected. The child is always waited for
//! (no zombies), and a failed write to its stdin (EPIPE: it exited early)
//! still reports what it printed on stderr. The only place that starts
//! short-lived tools; long-running children (agents, pods) are the lab's.

use std::io::{Read, Write};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::tools::{MissingProgram, package_of};

/// Default deadline: longer than any sync ferry makes at 100k Services
/// (iptables-restore's full load is ~23 s there), short enough that a hung
/// tool turns into an error an operator sees.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// A program to run, built up like `std::process::Command`.
#[derive(Clone, Debug)]
pub struct Tool {
    program: String,
    args: Vec<String>,
    netns: Option<String>,
    envs: Vec<(String, String)>,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
}

/// What a finished program printed.
#[derive(Clone, Debug)]
pub struct ToolOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error(transparent)]
    Missing(#[from] MissingProgram),
    #[error("cannot run {command}: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{command} did not finish within {after:?}; killed")]
    TimedOut { command: String, after: Duration },
    #[error("{command} failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: ExitStatus,
        stderr: String,
    },
}

impl ToolError {
    /// The program's stderr when it ran and failed.
    pub fn stderr(&self) -> Option<&str> {
        match self {
            ToolError::Failed { stderr, .. } => Some(stderr),
            _ => None,
        }
    }
}

impl Tool {
    pub fn new(program: impl Into<String>) -> Self {
        Tool {
            program: program.into(),
            args: Vec::new(),
            netns: None,
            envs: Vec::new(),
            stdin: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Runs it inside network namespace `ns` (through `ip netns exec`).
    pub fn netns(mut self, ns: Option<&str>) -> Self {
        self.netns = ns.map(str::to_string);
        self
    }

    /// Sets an environment variable for it (CNI plugins take their call
    /// this way); `ip netns exec` passes the environment on.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    pub fn stdin(mut self, input: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(input.into());
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The command line, for messages.
    pub fn describe(&self) -> String {
        let mut s = match &self.netns {
            Some(ns) => format!("ip netns exec {ns} {}", self.program),
            None => self.program.clone(),
        };
        for a in &self.args {
            s.push(' ');
            s.push_str(a);
        }
        s
    }

    /// Runs it; a non-zero exit is an error carrying its stderr.
    pub fn run(&self) -> Result<ToolOutput, ToolError> {
        let out = self.output()?;
        if out.status.success() {
            Ok(out)
        } else {
            Err(ToolError::Failed {
                command: self.describe(),
                status: out.status,
                stderr: out.stderr.trim().to_string(),
            })
        }
    }

    /// Runs it and returns whatever it printed, whatever its exit status.
    pub fn output(&self) -> Result<ToolOutput, ToolError> {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, &self.program]);
                c
            }
            None => Command::new(&self.program),
        };
        cmd.args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|source| {
            let program = if self.netns.is_some() {
                "ip"
            } else {
                &self.program
            };
            if source.kind() == std::io::ErrorKind::NotFound {
                ToolError::Missing(MissingProgram {
                    program: program.to_string(),
                    package: package_of(program).unwrap_or("(unknown)").to_string(),
                })
            } else {
                ToolError::Spawn {
                    command: self.describe(),
                    source,
                }
            }
        })?;
        let deadline = Instant::now() + self.timeout;
        // Every pipe has its own thread, so a child that stops reading its
        // stdin, or fills stdout, can only stall until the deadline.
        let writer = match (child.stdin.take(), self.stdin.clone()) {
            (Some(mut pipe), Some(input)) => Some(std::thread::spawn(move || {
                // EPIPE: the child exited before reading everything; its
                // exit status and stderr say why.
                let _ = pipe.write_all(&input);
            })),
            _ => None,
        };
        let stdout = drain(child.stdout.take());
        let stderr = drain(child.stderr.take());
        let pid = child.id();
        let (status_tx, status_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = status_tx.send(child.wait());
        });
        let status = match status_rx.recv_timeout(self.timeout) {
            Ok(Ok(status)) => status,
            Ok(Err(source)) => {
                return Err(ToolError::Spawn {
                    command: self.describe(),
                    source,
                });
            }
            Err(_) => {
                kill(pid);
                // The waiter thread reaps it.
                let _ = status_rx.recv_timeout(Duration::from_secs(5));
                return Err(ToolError::TimedOut {
                    command: self.describe(),
                    after: self.timeout,
                });
            }
        };
        if let Some(w) = writer {
            let _ = w.join();
        }
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(100));
        Ok(ToolOutput {
            status,
            stdout: stdout.recv_timeout(left).unwrap_or_default(),
            stderr: stderr.recv_timeout(left).unwrap_or_default(),
        })
    }
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
    });
    rx
}

fn kill(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        // The child is not reaped yet (its waiter has not returned), so the
        // PID is still its own.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_and_stderr_are_kept() {
        let out = Tool::new("sh")
            .args(["-c", "cat; echo oops >&2"])
            .stdin("hello")
            .run()
            .unwrap();
        assert_eq!(out.stdout, "hello");
        assert_eq!(out.stderr, "oops\n");
    }

    #[test]
    fn a_child_that_exits_before_reading_stdin_still_reports_its_stderr() {
        let big = vec![b'x'; 4 << 20];
        let e = Tool::new("sh")
            .args(["-c", "echo refused: bad line 1 >&2; exit 2"])
            .stdin(big)
            .run()
            .unwrap_err();
        assert_eq!(e.stderr(), Some("refused: bad line 1"), "{e}");
    }

    #[test]
    fn a_hung_program_is_killed_at_its_deadline() {
        let started = Instant::now();
        let e = Tool::new("sleep")
            .arg("30")
            .timeout(Duration::from_millis(300))
            .run()
            .unwrap_err();
        assert!(matches!(e, ToolError::TimedOut { .. }), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_missing_program_names_its_package() {
        let e = Tool::new("iptables-restore-not-here").run().unwrap_err();
        assert!(matches!(e, ToolError::Missing(_)), "{e}");
    }

    #[test]
    fn no_zombie_is_left_after_many_failures() {
        for _ in 0..50 {
            let _ = Tool::new("sh")
                .args(["-c", "exit 1"])
                .stdin(vec![b'y'; 1 << 20])
                .run();
        }
        let me = std::process::id();
        let zombies = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
            .filter(|stat| {
                let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
                let f: Vec<&str> = after.split_whitespace().collect();
                f.first() == Some(&"Z") && f.get(1) == Some(&me.to_string().as_str())
            })
            .count();
        assert_eq!(zombies, 0);
    }
}
