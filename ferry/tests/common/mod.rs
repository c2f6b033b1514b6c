//! Helpers shared by the end-to-end tests that run labs: a `Lab` that is
//! taken down when dropped (even when a test fails), and the rule that
//! tests needing root fail under CI=true instead of skipping.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn ferry() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ferry"));
    c.current_dir(repo());
    c
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
        .display()
        .to_string()
}

/// False (and a note) when these tests cannot run here; panics under CI.
pub fn can_run() -> bool {
    ferry_sys::testing::root_or_skip("lab tests")
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The agents' proxy mode for a lab test (each proxy test runs in both).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Nftables,
    Iptables,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Nftables => "nftables",
            Mode::Iptables => "iptables",
        }
    }
}

/// Runs a test function once per proxy mode, as `NAME::nftables` and
/// `NAME::iptables`.
#[macro_export]
macro_rules! both_modes {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn nftables() {
                    super::$name($crate::common::Mode::Nftables);
                }
                #[test]
                fn iptables() {
                    super::$name($crate::common::Mode::Iptables);
                }
            }
        )*
    };
}

/// A running lab; `down` on drop.
pub struct Lab {
    pub name: String,
}

impl Lab {
    /// `FERRY_LAB_SOURCE=kube` runs every lab test's agents on the lab's
    /// API server instead of its manifests (unless a test picks a source).
    ///
    /// `FERRY_LAB_PREFIX=P` renames the tests' `e2e...` labs `P...`, so
    /// two checkouts can run the lab suites at once without sharing a lab.
    pub fn up(name: &str, paths: &[&str], extra: &[&str]) -> Lab {
        let lab = Lab {
            name: lab_name(name),
        };
        let name = lab.name.as_str();
        let mut extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        if let Ok(source) = std::env::var("FERRY_LAB_SOURCE")
            && !extra.iter().any(|a| a == "--source")
        {
            extra.extend(["--source".to_string(), source]);
        }
        let out = ferry()
            .args(["lab", "up", "--lab", name])
            .args(paths)
            .args(&extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "lab up failed:\n{}", text(&out));
        lab
    }

    /// A lab whose agents run `mode` (its name gets `-i` in iptables mode,
    /// so both modes of a test can run at once).
    pub fn up_in(mode: Mode, name: &str, paths: &[&str], extra: &[&str]) -> Lab {
        let name = match mode {
            Mode::Nftables => name.to_string(),
            Mode::Iptables => format!("{name}-i"),
        };
        let mut args: Vec<&str> = extra.to_vec();
        args.extend(["--proxy-mode", mode.as_str()]);
        Lab::up(&name, paths, &args)
    }

    pub fn run(&self, args: &[&str]) -> Output {
        ferry()
            .args(["lab"])
            .args(args)
            .args(["--lab", &self.name])
            .output()
            .unwrap()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "ferry lab {args:?} failed:\n{}",
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn exec(&self, target: &str, cmd: &[&str]) -> Output {
        ferry()
            .args(["lab", "exec", "--lab", &self.name, target, "--"])
            .args(cmd)
            .output()
            .unwrap()
    }

    pub fn exec_ok(&self, target: &str, cmd: &[&str]) -> String {
        let out = self.exec(target, cmd);
        assert!(
            out.status.success(),
            "exec {target} {cmd:?} failed:\n{}",
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn status(&self) -> Value {
        serde_json::from_str(&self.ok(&["status", "--json"])).unwrap()
    }

    /// The ClusterIP the lab gave a Service.
    pub fn cluster_ip(&self, service: &str) -> String {
        let status = self.status();
        status["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == service)
            .and_then(|s| s["cluster_ip"].as_str())
            .unwrap_or_else(|| panic!("no ClusterIP for {service}: {status}"))
            .to_string()
    }

    /// A node's IP on the node network.
    pub fn node_ip(&self, node: &str) -> String {
        let status = self.status();
        status["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == node)
            .and_then(|n| n["ip"].as_str())
            .unwrap_or_else(|| panic!("no node {node}: {status}"))
            .to_string()
    }

    pub fn pods(&self, prefix: &str) -> Vec<Value> {
        self.status()["pods"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["name"].as_str().unwrap().starts_with(prefix))
            .cloned()
            .collect()
    }

    /// The lab's EndpointSlice for a service, as the agents read it.
    pub fn slice_endpoints(&self, ns: &str, svc: &str) -> Vec<Value> {
        let path = format!(
            "/run/ferry/labs/{}/manifests/endpointslice.{ns}.{svc}-ferry.json",
            self.name
        );
        let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap_or_default())
            .unwrap_or(Value::Null);
        v["endpoints"].as_array().cloned().unwrap_or_default()
    }

    pub fn wait(&self, what: &str, limit: Duration, mut f: impl FnMut(&Lab) -> bool) -> Duration {
        let start = Instant::now();
        while start.elapsed() < limit {
            if f(self) {
                return start.elapsed();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("{what}: not within {limit:?}");
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = ferry().args(["lab", "down", "--lab", &self.name]).output();
    }
}

/// A test's lab name, with `FERRY_LAB_PREFIX` in place of `e2e` when set.
pub fn lab_name(name: &str) -> String {
    match (std::env::var("FERRY_LAB_PREFIX"), name.strip_prefix("e2e")) {
        (Ok(prefix), Some(rest)) if !prefix.is_empty() => format!("{prefix}{rest}"),
        _ => name.to_string(),
    }
}

pub fn json(s: &str) -> Value {
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {s:?}"))
}

pub fn pod_named<'a>(pods: &'a [Value], node: &str) -> &'a Value {
    pods.iter()
        .find(|p| p["node"] == node && p["terminating"] == false)
        .unwrap_or_else(|| panic!("no pod on {node}: {pods:?}"))
}

/// A child process, killed and reaped on drop (even when a test fails).
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port free for both UDP and TCP.
pub fn free_port() -> u16 {
    ferry_sys::free_loopback_port()
}
