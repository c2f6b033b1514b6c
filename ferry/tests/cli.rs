//! The `ferry` binary as a user runs it: exit codes, messages and output.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn ferry() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ferry"));
    c.current_dir(repo());
    c.env_remove("RUST_LOG");
    c
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = ferry().args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn validate_accepts_the_examples() {
    let (code, out, _) = run(&["validate", "examples/"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("ok: "), "{out}");
    assert!(out.contains("6 Service"), "{out}");
    assert!(out.contains("1 Deployment"), "{out}");
}

#[test]
fn validate_names_every_broken_field_and_exits_1() {
    let (code, out, _) = run(&["validate", "examples/broken"]);
    assert_eq!(code, 1);
    for field in [
        "Service demo/web: spec.clusterIP:",
        "Service demo/web: spec.ports[1].port: 70000 is not in 1..65535",
        "Service demo/web: spec.ports[1].protocol:",
        "Service demo/Bad_Name: metadata.name:",
        "EndpointSlice demo/web-1: endpoints[0].addresses[0]:",
        "Service demo/typo: spec.ports[0].port:",
        "Ingress demo/site: spec.rules[0].host:",
        "Ingress demo/site: spec.rules[0].http.paths[0].path:",
        "document 7 (line 54): invalid YAML",
    ] {
        assert!(out.contains(field), "missing {field:?} in\n{out}");
    }
    assert!(
        out.lines()
            .all(|l| l.starts_with("examples/broken/mistakes.yaml: ") || l.contains("error(s)")),
        "{out}"
    );
}

#[test]
fn a_missing_path_is_reported_plainly() {
    let (code, _, err) = run(&["validate", "no/such/dir"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("no/such/dir: no such file or directory"),
        "{err}"
    );
}

#[test]
fn services_table_shows_the_seed_service_and_its_endpoints() {
    let (code, out, _) = run(&["services", "examples/nginx-web.yaml"]);
    assert_eq!(code, 0);
    let row = out
        .lines()
        .find(|l| l.contains("nginx-web-service"))
        .expect(&out);
    for cell in [
        "demo",
        "ClusterIP",
        "172.16.255.220",
        "80/TCP",
        "10.204.0.13:80,10.204.1.3:80,10.204.1.8:80",
    ] {
        assert!(row.contains(cell), "{cell} missing in {row}");
    }
    assert!(out.starts_with("NAMESPACE"));
}

#[test]
fn services_json_has_ports_and_endpoints() {
    let (code, out, _) = run(&["services", "--json", "examples/"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let svc = v["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"]["name"] == "checkout")
        .unwrap();
    assert_eq!(svc["service_type"], "NodePort");
    let http = svc["service_ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"]["port"] == "http")
        .unwrap();
    assert_eq!(http["node_port"], 30080);
    assert_eq!(http["endpoints"][1]["terminating"], true);
    assert_eq!(http["endpoints"][1]["ip"], "10.204.1.21");
}

#[test]
fn services_on_a_broken_file_warns_in_json_logs_and_still_prints() {
    let out = ferry()
        .args(["--log-format", "json", "services", "examples/broken"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let first: serde_json::Value = serde_json::from_str(stderr.lines().next().unwrap()).unwrap();
    assert_eq!(first["level"], "WARN");
    assert!(
        first["fields"]["message"]
            .as_str()
            .unwrap()
            .contains("mistakes.yaml")
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("demo"));
}

#[test]
fn version_and_help_speak_to_a_new_user() {
    let (code, out, _) = run(&["--version"]);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), format!("ferry {}", env!("CARGO_PKG_VERSION")));
    let (_, help, _) = run(&["--help"]);
    for word in ["validate", "services", "Service name to a Pod"] {
        assert!(help.contains(word), "{word} missing in help:\n{help}");
    }
}

#[test]
fn services_watch_prints_what_changed_after_an_edit() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("svc.yaml");
    let svc = |port: u16| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: demo}}\nspec: {{clusterIP: 10.96.0.9, ports: [{{port: {port}}}]}}\n"
        )
    };
    std::fs::write(&file, svc(80)).unwrap();
    let mut child = ferry()
        .args(["services", "--watch", "--watch-for", "10"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // The first table, then an edit.
    let first: Vec<String> = lines.by_ref().take(2).map(Result::unwrap).collect();
    assert!(first[1].contains("80/TCP"), "{first:?}");
    std::thread::sleep(Duration::from_millis(200));
    std::fs::write(&file, svc(8080)).unwrap();
    let start = Instant::now();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let done = line.contains("8080/TCP");
        seen.push(line);
        if done || start.elapsed() > Duration::from_secs(8) {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        seen.iter().any(|l| l.starts_with("# version 1 -> 2")),
        "{seen:?}"
    );
    assert!(seen.iter().any(|l| l.contains("8080/TCP")), "{seen:?}");
}

#[test]
fn every_bench_subcommand_explains_its_flags() {
    for (what, flag) in [
        ("model", "--update-sizes"),
        ("lab", "--sizes"),
        ("proxy", "--max-predicted-s"),
        ("dns", "--seconds"),
    ] {
        let (code, out, err) = run(&["bench", what, "--help"]);
        assert_eq!(code, 0, "bench {what} --help: {err}");
        assert!(
            out.contains(flag),
            "bench {what} --help lacks {flag}:\n{out}"
        );
    }
    let (code, out, _) = run(&["bench", "--help"]);
    assert_eq!(code, 0);
    for what in ["model", "lab", "proxy", "dns"] {
        assert!(out.contains(what), "bench --help lacks {what}:\n{out}");
    }
    assert!(!out.contains("child"), "hidden children shown:\n{out}");
}

#[test]
fn bench_model_at_its_smallest_prints_the_load_and_update_tables() {
    let (code, out, err) = run(&[
        "bench",
        "model",
        "--services",
        "10",
        "--endpoints",
        "2",
        "--runs",
        "1",
        "--update-sizes",
        "10,20",
        "--updates",
        "10",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("ferry bench model  ("), "{out}");
    assert!(
        out.contains("Load from YAML: 10 services x 2 endpoints = 20 objects"),
        "{out}"
    );
    for step in [
        "read + parse + validate",
        "normalize (ClusterState)",
        "total",
        "peak RSS",
    ] {
        assert!(out.contains(step), "{step} missing:\n{out}");
    }
    let rows: Vec<&str> = out
        .lines()
        .filter(|l| l.trim_start().starts_with("10 ") || l.trim_start().starts_with("20 "))
        .collect();
    assert_eq!(rows.len(), 2, "one update row per size:\n{out}");
    assert!(rows.iter().all(|r| r.matches("µs").count() == 4), "{out}");
    assert!(
        out.contains("slice update p50, largest / smallest cluster:"),
        "{out}"
    );
}
