//! The programs ferry starts and the set-up that installs them are one
//! list (the TOOLS block of `scripts/setup.sh`): these tests fail when code starts a program
//! the list does not name, when set-up stops reading the list, and when a
//! missing program is not named with its package. The lab test needs root.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            if !matches!(
                p.file_name().and_then(|n| n.to_str()),
                Some("target" | "fixtures")
            ) {
                rust_files(&p, out);
            }
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Program names the code starts literally: `Command::new("X")`,
/// `Tool::new("X")`, `taskset -c N X` and `ip netns exec NS X`.
fn started_programs() -> BTreeSet<(String, String)> {
    let mut files = Vec::new();
    for dir in ["crates", "ferry"] {
        rust_files(&repo().join(dir), &mut files);
    }
    let mut out = BTreeSet::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let name = f.strip_prefix(repo()).unwrap().display().to_string();
        if name.ends_with("tests/tools.rs") {
            continue;
        }
        for pat in ["Command::new(\"", "Tool::new(\""] {
            for (i, _) in text.match_indices(pat) {
                let rest = &text[i + pat.len()..];
                let prog = &rest[..rest.find('"').unwrap()];
                out.insert((prog.to_string(), name.clone()));
            }
        }
        for pat in [
            "\"-c\", \"0\", \"",
            "\"exec\", ns, \"",
            "\"exec\", &ns.0, \"",
        ] {
            for (i, _) in text.match_indices(pat) {
                let rest = &text[i + pat.len()..];
                let prog = &rest[..rest.find('"').unwrap()];
                out.insert((prog.to_string(), name.clone()));
            }
        }
    }
    out
}

#[test]
fn every_program_the_code_starts_is_in_the_setup_list() {
    let listed: BTreeSet<&str> = ferry_sys::PROGRAMS
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    let started = started_programs();
    assert!(
        started.iter().any(|(p, _)| p == "nft") && started.iter().any(|(p, _)| p == "conntrack"),
        "the scan finds the programs it must: {started:?}"
    );
    let missing: Vec<_> = started
        .iter()
        .filter(|(p, _)| {
            !listed.contains(p.as_str()) && !p.contains('/') && !p.ends_with("-not-here")
        })
        .collect();
    assert!(
        missing.is_empty(),
        "started by the code but not in setup.sh's TOOLS list (so a fresh machine lacks them): {missing:?}"
    );
    // The iptables binaries are built from the flavor and family.
    use ferry_proxy::Family;
    use ferry_proxy::iptables::Flavor;
    for flavor in [Flavor::System, Flavor::Nft, Flavor::Legacy] {
        for family in [Family::V4, Family::V6] {
            for suffix in ["", "-save", "-restore"] {
                let b = flavor.binary(family, suffix);
                assert!(
                    listed.contains(b.as_str()),
                    "{b} is not in setup.sh's TOOLS list"
                );
            }
        }
    }
}

#[test]
fn setup_installs_the_package_of_every_listed_program() {
    let setup = std::fs::read_to_string(repo().join("scripts/setup.sh")).unwrap();
    assert!(
        setup.contains("<<'TOOLS'") && setup.contains("\"${listed[@]}\""),
        "scripts/setup.sh installs the packages of its TOOLS list"
    );
    for p in ferry_sys::PROGRAMS.iter() {
        assert!(!p.package.is_empty(), "{} has a package", p.name);
    }
    assert_eq!(ferry_sys::package_of("iptables-restore"), Some("iptables"));
}

/// A directory holding every listed program except those `drop` selects,
/// for a PATH that plays a fresh machine.
fn path_without(drop: impl Fn(&str) -> bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut names: Vec<&str> = ferry_sys::PROGRAMS
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    // What the tools themselves start (`ip netns exec` runs `ferry` by path).
    names.extend([
        "env", "cat", "sleep", "timeout", "seq", "head", "tail", "grep",
    ]);
    for name in names {
        if drop(name) {
            continue;
        }
        if let Some(real) = ferry_sys::find_in_path(name) {
            let _ = std::os::unix::fs::symlink(real, dir.path().join(name));
        }
    }
    dir
}

#[test]
fn the_agent_refuses_to_start_without_a_program_and_names_its_package() {
    let bin = path_without(|n| n.starts_with("iptables") || n.starts_with("ip6tables"));
    let manifests = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = ferry()
        .env("PATH", bin.path())
        .args([
            "agent",
            "--node",
            "n1",
            "--source",
            &format!("manifests:{}", manifests.path().display()),
            "--proxy-mode",
            "iptables",
            "--dns-addresses",
            "none",
            "--healthz-bind-address",
            "127.0.0.1:0",
            "--metrics-bind-address",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("iptables") && err.contains("apt-get install iptables"),
        "names the program and the package: {err}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn lab_up_fails_fast_naming_the_node_and_the_agents_error_when_a_program_is_missing() {
    if !can_run() {
        return;
    }
    let bin = path_without(|n| n.starts_with("iptables") || n.starts_with("ip6tables"));
    let started = Instant::now();
    let lab = Lab {
        name: lab_name("e2enotools"),
    };
    let out = ferry()
        .env("PATH", bin.path())
        .args([
            "lab",
            "up",
            "--lab",
            &lab.name,
            "--proxy-mode",
            "iptables",
            &repo().join("examples/nginx-web.yaml").display().to_string(),
        ])
        .output()
        .unwrap();
    let waited = started.elapsed();
    assert!(!out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("node-1") || err.contains("node-2"),
        "names the node: {err}"
    );
    assert!(
        err.contains("apt-get install iptables"),
        "quotes the agent's error: {err}"
    );
    assert!(
        waited < Duration::from_secs(35),
        "failed within 30 s: {waited:?}"
    );
    let status = lab.ok(&["status"]);
    assert!(
        status.contains("not healthy: exited") && status.contains("iptables"),
        "lab status shows the agent's last error: {status}"
    );
}
