//! The manifests source against real files in a temporary directory.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferry_model::{Kind, NamespacedName, ObjectKey, Protocol, ServicePortName};
use ferry_source::{ManifestSource, ManifestWatcher, SourceError};

fn svc(name: &str, port: u32) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: demo}}\nspec: {{clusterIP: 10.96.0.1, ports: [{{port: {port}}}]}}\n"
    )
}

fn spn(name: &str) -> ServicePortName {
    ServicePortName {
        namespace: "demo".into(),
        name: name.into(),
        port: "".into(),
        protocol: Protocol::Tcp,
    }
}

fn write(dir: &Path, file: &str, text: &str) -> PathBuf {
    let p = dir.join(file);
    std::fs::write(&p, text).unwrap();
    p
}

fn port_of(src: &ManifestSource, name: &str) -> Option<u16> {
    src.state().service_port(&spn(name)).map(|p| p.port)
}

#[test]
fn a_directory_loads_its_manifest_files_and_ignores_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.yaml", &svc("a", 80));
    write(
        dir.path(),
        "b.json",
        r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"demo"}}"#,
    );
    write(dir.path(), "notes.txt", "not a manifest");
    write(dir.path(), ".hidden.yaml", &svc("hidden", 1));
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    write(&dir.path().join("sub"), "c.yaml", &svc("c", 81));

    let (src, snap) = ManifestSource::open(&[dir.path().to_path_buf()], false).unwrap();
    assert!(snap.errors.is_empty(), "{:?}", snap.errors);
    assert_eq!(port_of(&src, "a"), Some(80));
    assert!(port_of(&src, "hidden").is_none());
    assert!(
        port_of(&src, "c").is_none(),
        "subdirectories need --recursive"
    );
    assert_eq!(snap.state.len(), 2);

    let (src, _) = ManifestSource::open(&[dir.path().to_path_buf()], true).unwrap();
    assert_eq!(port_of(&src, "c"), Some(81));
}

#[test]
fn a_missing_path_is_a_clear_error() {
    let err = ManifestSource::open(&[PathBuf::from("/nonexistent/ferry.yaml")], false)
        .err()
        .unwrap();
    assert!(matches!(err, SourceError::NotFound { .. }));
    assert_eq!(
        err.to_string(),
        "/nonexistent/ferry.yaml: no such file or directory"
    );
}

#[test]
fn editing_one_file_changes_only_its_objects() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(dir.path(), "a.yaml", &svc("a", 80));
    write(dir.path(), "b.yaml", &svc("b", 90));
    let (mut src, _) = ManifestSource::open(&[dir.path().to_path_buf()], false).unwrap();
    write(dir.path(), "a.yaml", &svc("a", 81));
    let snap = src.refresh(&[a]);
    assert_eq!(port_of(&src, "a"), Some(81));
    assert_eq!(
        snap.changes
            .objects
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        vec!["Service demo/a"]
    );
    assert!(snap.changes.service_ports.contains(&spn("a")));
    assert!(!snap.changes.service_ports.contains(&spn("b")));
}

#[test]
fn a_file_that_stops_parsing_keeps_its_last_good_objects() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(dir.path(), "a.yaml", &svc("a", 80));
    let (mut src, _) = ManifestSource::open(&[dir.path().to_path_buf()], false).unwrap();
    write(dir.path(), "a.yaml", "apiVersion: v1\nkind: [broken\n");
    let snap = src.refresh(std::slice::from_ref(&a));
    assert_eq!(port_of(&src, "a"), Some(80), "the last good Service stays");
    assert!(snap.changes.is_empty());
    write(
        dir.path(),
        "a.yaml",
        &format!("{}---\napiVersion: v1\nkind: [broken\n", svc("b", 90)),
    );
    let snap = src.refresh(std::slice::from_ref(&a));
    assert_eq!(
        port_of(&src, "a"),
        Some(80),
        "still kept while the file does not parse"
    );
    assert_eq!(
        port_of(&src, "b"),
        Some(90),
        "documents that parse are taken"
    );
    assert_eq!(snap.errors.len(), 1);
    assert!(
        snap.errors[0]
            .to_string()
            .contains("a.yaml: document 2 (line 7)"),
        "{}",
        snap.errors[0]
    );
    write(dir.path(), "a.yaml", &svc("a", 82));
    let snap = src.refresh(&[a]);
    assert!(snap.errors.is_empty());
    assert_eq!(port_of(&src, "a"), Some(82));
    assert_eq!(
        port_of(&src, "b"),
        None,
        "once the file parses, it says exactly what exists"
    );
}

#[test]
fn an_object_that_becomes_invalid_keeps_its_last_good_version() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(
        dir.path(),
        "a.yaml",
        &format!("{}---\n{}", svc("a", 80), svc("b", 90)),
    );
    let (mut src, _) = ManifestSource::open(&[dir.path().to_path_buf()], false).unwrap();
    write(
        dir.path(),
        "a.yaml",
        &format!("{}---\n{}", svc("a", 70000), svc("b", 91)),
    );
    let snap = src.refresh(&[a]);
    assert_eq!(
        port_of(&src, "a"),
        Some(80),
        "invalid update rejected, old version kept"
    );
    assert_eq!(
        port_of(&src, "b"),
        Some(91),
        "the valid neighbour still updates"
    );
    assert_eq!(snap.errors.len(), 1);
    assert!(
        snap.errors[0]
            .to_string()
            .ends_with("Service demo/a: spec.ports[0].port: 70000 is not in 1..65535")
    );
}

#[test]
fn removing_a_file_deletes_its_objects() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(dir.path(), "a.yaml", &svc("a", 80));
    let (mut src, _) = ManifestSource::open(&[dir.path().to_path_buf()], false).unwrap();
    std::fs::remove_file(&a).unwrap();
    let snap = src.refresh(&[a]);
    assert!(port_of(&src, "a").is_none());
    assert!(
        snap.changes
            .objects
            .contains(&ObjectKey::new(Kind::Service, "demo", "a"))
    );
    assert!(
        snap.changes
            .services
            .contains(&NamespacedName::new("demo", "a"))
    );
}

#[test]
fn an_object_in_two_files_uses_the_first_and_reports_the_second() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.yaml", &svc("x", 80));
    let b = write(dir.path(), "b.yaml", &svc("x", 90));
    let (mut src, snap) = ManifestSource::open(&[dir.path().to_path_buf()], false).unwrap();
    assert_eq!(port_of(&src, "x"), Some(80));
    assert_eq!(snap.errors.len(), 1);
    let msg = snap.errors[0].to_string();
    assert!(
        msg.contains("b.yaml: Service demo/x: metadata.name: Duplicate value: already defined in"),
        "{msg}"
    );
    std::fs::remove_file(dir.path().join("a.yaml")).unwrap();
    let snap = src.refresh(&[dir.path().join("a.yaml"), b]);
    assert_eq!(
        port_of(&src, "x"),
        Some(90),
        "the remaining definition takes over"
    );
    assert!(snap.errors.is_empty());
}

#[test]
fn an_object_in_three_files_goes_to_the_first_by_path_as_files_come_and_go() {
    let dir = tempfile::tempdir().unwrap();
    let b = write(dir.path(), "b.yaml", &svc("x", 90));
    let (mut src, snap) = ManifestSource::open(&[dir.path().to_path_buf()], false).unwrap();
    assert_eq!(port_of(&src, "x"), Some(90));
    assert!(snap.errors.is_empty());
    // A file sorting later, then one sorting earlier, each read after b.
    let c = write(dir.path(), "c.yaml", &svc("x", 100));
    let snap = src.refresh(std::slice::from_ref(&c));
    assert_eq!(port_of(&src, "x"), Some(90), "b still sorts first");
    assert_eq!(snap.errors.len(), 1);
    assert!(
        snap.errors[0]
            .to_string()
            .starts_with(&format!("{}", c.display()))
    );
    let a = write(dir.path(), "a.yaml", &svc("x", 80));
    let snap = src.refresh(std::slice::from_ref(&a));
    assert_eq!(port_of(&src, "x"), Some(80), "a sorts first");
    let files: Vec<String> = snap.errors.iter().map(|e| e.file.clone()).collect();
    assert_eq!(
        files,
        [b.display().to_string(), c.display().to_string()],
        "{:?}",
        snap.errors
    );
    // b gives x up for another object; then a goes, and its slot is reused by d.
    std::fs::write(&b, svc("y", 70)).unwrap();
    let snap = src.refresh(std::slice::from_ref(&b));
    assert_eq!(port_of(&src, "x"), Some(80));
    assert_eq!(port_of(&src, "y"), Some(70));
    assert_eq!(snap.errors.len(), 1, "{:?}", snap.errors);
    std::fs::remove_file(&a).unwrap();
    let d = write(dir.path(), "d.yaml", &svc("z", 60));
    let snap = src.refresh(&[a, d]);
    assert_eq!(port_of(&src, "x"), Some(100), "only c defines x now");
    assert_eq!(port_of(&src, "z"), Some(60));
    assert!(snap.errors.is_empty(), "{:?}", snap.errors);
    std::fs::remove_file(&c).unwrap();
    src.refresh(&[c]);
    assert_eq!(port_of(&src, "x"), None, "nobody defines x");
    assert_eq!(port_of(&src, "y"), Some(70));
}

#[test]
fn the_watcher_sees_a_new_file_and_a_deleted_one() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.yaml", &svc("a", 80));
    let (mut w, _) = ManifestWatcher::open(
        &[dir.path().to_path_buf()],
        false,
        Duration::from_millis(10),
    )
    .unwrap();

    // Write atomically, as the lab does: a hidden temporary file, then rename.
    let tmp = write(dir.path(), ".b.yaml.tmp", &svc("b", 90));
    std::fs::rename(&tmp, dir.path().join("b.yaml")).unwrap();
    let start = Instant::now();
    let mut seen = false;
    while start.elapsed() < Duration::from_secs(5) {
        if let Some(snap) = w.next(Duration::from_millis(500)) {
            let snap = snap.unwrap();
            if snap.state.service_port(&spn("b")).is_some() {
                seen = true;
                break;
            }
        }
    }
    assert!(seen, "new file not picked up within 5 s");

    std::fs::remove_file(dir.path().join("a.yaml")).unwrap();
    let start = Instant::now();
    let mut gone = false;
    while start.elapsed() < Duration::from_secs(5) {
        if let Some(snap) = w.next(Duration::from_millis(500))
            && snap.unwrap().state.service_port(&spn("a")).is_none()
        {
            gone = true;
            break;
        }
    }
    assert!(gone, "deleted file's objects still present after 5 s");
}

#[test]
fn a_watched_single_file_is_followed_through_editor_style_replacement() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(dir.path(), "a.yaml", &svc("a", 80));
    let (mut w, _) =
        ManifestWatcher::open(std::slice::from_ref(&a), false, Duration::from_millis(10)).unwrap();
    write(dir.path(), "other.yaml", &svc("other", 1));
    let tmp = write(dir.path(), "a.yaml.swp", &svc("a", 81));
    std::fs::rename(&tmp, &a).unwrap();
    let start = Instant::now();
    let mut port = None;
    while start.elapsed() < Duration::from_secs(5) && port != Some(81) {
        if let Some(snap) = w.next(Duration::from_millis(500)) {
            let snap = snap.unwrap();
            assert!(
                snap.state.service_port(&spn("other")).is_none(),
                "only the named file is read"
            );
            port = snap.state.service_port(&spn("a")).map(|p| p.port);
        }
    }
    assert_eq!(port, Some(81));
}

fn node_port_svc(name: &str, node_port: u16, health_check: Option<u16>) -> String {
    let hc = health_check.map_or(String::new(), |p| {
        format!("  externalTrafficPolicy: Local\n  healthCheckNodePort: {p}\n")
    });
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: demo}}\nspec:\n  type: LoadBalancer\n  ports: [{{port: 80, nodePort: {node_port}}}]\n{hc}"
    )
}

fn error_lines(errors: &[ferry_model::ManifestError]) -> Vec<String> {
    errors.iter().map(ToString::to_string).collect()
}

#[test]
fn a_node_port_or_health_check_node_port_taken_by_an_earlier_service_is_reported_on_the_later_one()
{
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "m.yaml",
        &node_port_svc("m", 30080, Some(30500)),
    );
    let (mut src, snap) = ManifestSource::open(&[dir.path().to_path_buf()], false).unwrap();
    assert!(snap.errors.is_empty(), "{:?}", snap.errors);

    // Seen later, so it is the one the API server would have refused, even
    // though its name and file sort first.
    let c = write(
        dir.path(),
        "c.yaml",
        &node_port_svc("c", 30081, Some(30500)),
    );
    let snap = src.refresh(std::slice::from_ref(&c));
    assert_eq!(
        error_lines(&snap.errors),
        vec![format!(
            "{}: Service demo/c: spec.healthCheckNodePort: Duplicate value: 30500 is already allocated to Service demo/m (spec.healthCheckNodePort)",
            c.display()
        )]
    );

    // A health-check node port equal to another Service's nodePort.
    let d = write(
        dir.path(),
        "d.yaml",
        &node_port_svc("d", 30082, Some(30080)),
    );
    let snap = src.refresh(std::slice::from_ref(&d));
    assert_eq!(snap.errors.len(), 2, "{:?}", error_lines(&snap.errors));
    assert!(
        error_lines(&snap.errors).contains(&format!(
            "{}: Service demo/d: spec.healthCheckNodePort: Duplicate value: 30080 is already allocated to Service demo/m (spec.ports[0].nodePort)",
            d.display()
        )),
        "{:?}",
        error_lines(&snap.errors)
    );

    // When the holder goes, the conflicts go with it.
    let a = dir.path().join("m.yaml");
    std::fs::remove_file(&a).unwrap();
    let snap = src.refresh(&[a]);
    assert!(snap.errors.is_empty(), "{:?}", error_lines(&snap.errors));
}

#[test]
fn node_port_conflicts_in_one_scan_are_decided_by_creation_time_then_name() {
    let dir = tempfile::tempdir().unwrap();
    let created = |name: &str, at: &str| {
        node_port_svc(name, 30080, None).replace(
            "namespace: demo}",
            &format!("namespace: demo, creationTimestamp: \"{at}\"}}"),
        )
    };
    write(dir.path(), "a.yaml", &created("a", "2026-01-02T00:00:00Z"));
    let b = write(dir.path(), "b.yaml", &created("b", "2026-01-01T00:00:00Z"));
    write(dir.path(), "c.yaml", &node_port_svc("c", 30080, None));
    let (_, snap) = ManifestSource::open(&[dir.path().to_path_buf()], false).unwrap();
    let lines = error_lines(&snap.errors);
    assert_eq!(lines.len(), 2, "{lines:?}");
    for later in ["a", "c"] {
        assert!(
            lines.iter().any(|l| l.contains(&format!(
                "Service demo/{later}: spec.ports[0].nodePort: Duplicate value: 30080 is already allocated to Service demo/b"
            ))),
            "{lines:?}"
        );
    }
    assert!(
        !lines
            .iter()
            .any(|l| l.starts_with(&b.display().to_string()))
    );
}

fn two_services(port: u32) -> String {
    format!("{}---\n{}", svc("a", port), svc("b", port + 10))
}

#[test]
fn a_file_rewritten_in_place_is_applied_only_once_complete() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "both.yaml", &two_services(80));
    let (mut w, first) = ManifestWatcher::open(
        &[dir.path().to_path_buf()],
        false,
        Duration::from_millis(20),
    )
    .unwrap();
    assert!(first.state.service_port(&spn("b")).is_some());

    // Truncate, write the first Service, pause far beyond the debounce,
    // then write the second and close.
    let text = two_services(81);
    let (head, tail) = text.split_at(text.find("---").unwrap());
    let (head, tail) = (head.to_string(), tail.to_string());
    let writer = std::thread::spawn(move || {
        let mut f = std::fs::File::create(&file).unwrap();
        f.write_all(head.as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        f.write_all(tail.as_bytes()).unwrap();
    });

    let start = Instant::now();
    let mut updated = false;
    while start.elapsed() < Duration::from_secs(5) && !updated {
        if let Some(snap) = w.next(Duration::from_millis(100)) {
            let snap = snap.unwrap();
            for name in ["a", "b"] {
                assert!(
                    snap.state.service_port(&spn(name)).is_some(),
                    "a snapshot after {:?} lost Service {name}: the half-written file was applied",
                    start.elapsed()
                );
            }
            updated = snap.state.service_port(&spn("b")).map(|p| p.port) == Some(91);
        }
    }
    writer.join().unwrap();
    assert!(updated, "the completed file was not picked up within 5 s");
}

/// Publishes `files` the way the kubelet updates a ConfigMap volume: a new
/// hidden directory, a `..data_tmp` link to it renamed over `..data`, a
/// visible link per key, then the old directory removed.
fn configmap_publish(dir: &Path, version: &str, files: &[(&str, String)]) {
    use std::os::unix::fs::symlink;
    let data = dir.join(format!("..{version}"));
    std::fs::create_dir(&data).unwrap();
    for (name, text) in files {
        std::fs::write(data.join(name), text).unwrap();
    }
    let old = std::fs::read_link(dir.join("..data")).ok();
    symlink(format!("..{version}"), dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    for (name, _) in files {
        let link = dir.join(name);
        if link.symlink_metadata().is_err() {
            symlink(format!("..data/{name}"), link).unwrap();
        }
    }
    if let Some(old) = old {
        std::fs::remove_dir_all(dir.join(old)).unwrap();
    }
}

fn wait_for(w: &mut ManifestWatcher, what: &str, done: impl Fn(&ferry_source::Snapshot) -> bool) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if let Some(snap) = w.next(Duration::from_millis(200)) {
            let snap = snap.unwrap();
            assert!(snap.errors.is_empty(), "{:?}", snap.errors);
            if done(&snap) {
                return;
            }
        }
    }
    panic!("{what} not seen within 5 s");
}

#[test]
fn a_configmap_volume_data_swap_is_picked_up() {
    for recursive in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        configmap_publish(dir.path(), "v1", &[("a.yaml", svc("a", 80))]);
        let (mut w, first) = ManifestWatcher::open(
            &[dir.path().to_path_buf()],
            recursive,
            Duration::from_millis(20),
        )
        .unwrap();
        assert!(first.errors.is_empty(), "{:?}", first.errors);
        assert_eq!(
            first.state.service_port(&spn("a")).map(|p| p.port),
            Some(80)
        );

        // Same key, new content: only `..data` moves.
        configmap_publish(dir.path(), "v2", &[("a.yaml", svc("a", 81))]);
        wait_for(&mut w, "the swapped content", |s| {
            s.state.service_port(&spn("a")).map(|p| p.port) == Some(81)
        });

        // A new key: a new visible link as well.
        configmap_publish(
            dir.path(),
            "v3",
            &[("a.yaml", svc("a", 81)), ("b.yaml", svc("b", 90))],
        );
        wait_for(&mut w, "the new key", |s| {
            s.state.service_port(&spn("b")).is_some()
        });
        assert_eq!(
            w.source().state().service_port(&spn("a")).map(|p| p.port),
            Some(81),
            "recursive: {recursive}"
        );
    }
}
