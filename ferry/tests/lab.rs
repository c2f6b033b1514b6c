//! End-to-end tests of `ferry lab`: real network namespaces, real
//! processes, real traffic (curl, bash's /dev/tcp and /dev/udp) inside
//! them. They need root; without it they skip, except under CI=true where
//! they fail. Each test runs its own lab, taken down even when it fails.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn pods_reach_pods_on_the_same_and_the_other_node_over_http_tcp_and_udp() {
    if !can_run() {
        return;
    }
    let lab = Lab::up("e2epod", &[&fixture("lab-basic.yaml")], &[]);
    let client_ip = lab.pods("client")[0]["ip"].as_str().unwrap().to_string();
    let web = lab.pods("web-");
    for node in ["node-1", "node-2"] {
        let target = pod_named(&web, node);
        let ip = target["ip"].as_str().unwrap();
        let name = target["name"].as_str().unwrap();
        // HTTP
        let a = json(&lab.exec_ok(
            "pod/shop/client",
            &["curl", "-sS", "-m", "3", &format!("http://{ip}:8080/hello")],
        ));
        assert_eq!(a["pod"], name);
        assert_eq!(a["node"], node);
        assert_eq!(a["path"], "/hello");
        assert!(
            a["client"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{client_ip}:")),
            "real client IP: {a}"
        );
        // TCP: a JSON line on connect, then an echo.
        let script = format!(
            "exec 3<>/dev/tcp/{ip}/9000; read -r line <&3; echo \"$line\"; echo ping >&3; read -r back <&3; echo \"$back\""
        );
        let out = lab.exec_ok("pod/shop/client", &["bash", "-c", &script]);
        let mut lines = out.lines();
        let a = json(lines.next().unwrap());
        assert_eq!(
            (a["pod"].as_str(), a["protocol"].as_str()),
            (Some(name), Some("TCP"))
        );
        assert!(
            a["client"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{client_ip}:"))
        );
        assert_eq!(lines.next(), Some("ping"));
        // UDP: a JSON answer per datagram.
        let script = format!("exec 3<>/dev/udp/{ip}/5353; echo hello >&3; timeout 3 head -n1 <&3");
        let a = json(&lab.exec_ok("pod/shop/client", &["bash", "-c", &script]));
        assert_eq!(
            (a["pod"].as_str(), a["protocol"].as_str()),
            (Some(name), Some("UDP"))
        );
        assert_eq!(a["data"], "hello\n");
        assert!(
            a["client"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{client_ip}:"))
        );
    }
    // The outside client reaches a node's IP (the agent's health port).
    let node2 = lab.status()["nodes"][1]["ip"].as_str().unwrap().to_string();
    // A hostNetwork pod runs in its node's namespace, with the node's IP.
    let hostnet = &lab.pods("hostnet")[0];
    assert_eq!(hostnet["ip"].as_str(), Some(node2.as_str()));
    let a = json(&lab.exec_ok(
        "pod/shop/client",
        &["curl", "-sS", "-m", "3", &format!("http://{node2}:8081/")],
    ));
    assert_eq!(
        (a["pod"].as_str(), a["pod_ip"].as_str()),
        (Some("hostnet"), Some(node2.as_str()))
    );
    let health = json(&lab.exec_ok(
        "outside",
        &[
            "curl",
            "-sS",
            "-m",
            "3",
            &format!("http://{node2}:10256/healthz"),
        ],
    ));
    assert_eq!(health["nodeName"], "node-2");
    // A pod has its own resolv.conf.
    let resolv = lab.exec_ok("pod/shop/client", &["cat", "/etc/resolv.conf"]);
    assert!(
        resolv.contains("search shop.svc.cluster.local svc.cluster.local cluster.local"),
        "{resolv}"
    );
    assert!(resolv.contains("options ndots:5"));
}

#[test]
fn scaling_updates_endpoint_slices_within_a_second() {
    if !can_run() {
        return;
    }
    let lab = Lab::up("e2escale", &[&fixture("lab-basic.yaml")], &[]);
    assert_eq!(lab.slice_endpoints("shop", "web").len(), 3);
    lab.ok(&["scale", "deployment/shop/web", "5"]);
    // The slices name the new pods within a second; they turn ready once
    // their probes pass.
    let t = lab.wait("5 endpoints in the slices", Duration::from_secs(5), |l| {
        l.slice_endpoints("shop", "web").len() == 5
    });
    assert!(t < Duration::from_secs(1), "scale 3 -> 5 took {t:?}");
    lab.wait("5 ready endpoints", Duration::from_secs(5), |l| {
        let eps = l.slice_endpoints("shop", "web");
        eps.len() == 5 && eps.iter().all(|e| e["conditions"]["ready"] == true)
    });
    lab.ok(&["scale", "deployment/shop/web", "1"]);
    let t = lab.wait("4 terminating endpoints", Duration::from_secs(5), |l| {
        let eps = l.slice_endpoints("shop", "web");
        eps.iter()
            .filter(|e| e["conditions"]["terminating"] == true && e["conditions"]["ready"] == false)
            .count()
            == 4
            && eps
                .iter()
                .filter(|e| e["conditions"]["ready"] == true)
                .count()
                == 1
    });
    assert!(t < Duration::from_secs(1), "scale 5 -> 1 took {t:?}");
    // The grace period is 2 s; then they are gone.
    lab.wait("terminated pods gone", Duration::from_secs(6), |l| {
        l.slice_endpoints("shop", "web").len() == 1
    });
    // status.json is written after the manifests.
    lab.wait(
        "the terminated pods gone from the status",
        Duration::from_secs(2),
        |l| l.pods("web-").len() == 1,
    );
}

#[test]
fn a_pod_failing_its_readiness_probe_leaves_ready_and_a_deleted_pod_terminates() {
    if !can_run() {
        return;
    }
    let lab = Lab::up("e2eready", &[&fixture("lab-basic.yaml")], &[]);
    let web = lab.pods("web-");
    let victim = web[0]["name"].as_str().unwrap().to_string();
    let ip = web[0]["ip"].as_str().unwrap().to_string();
    let cond = |l: &Lab| {
        l.slice_endpoints("shop", "web")
            .into_iter()
            .find(|e| e["addresses"][0] == ip.as_str())
            .map(|e| {
                (
                    e["conditions"]["ready"] == true,
                    e["conditions"]["serving"] == true,
                    e["conditions"]["terminating"] == true,
                )
            })
    };
    assert_eq!(cond(&lab), Some((true, true, false)));
    let ferry_bin = env!("CARGO_BIN_EXE_ferry");
    let pod = format!("pod/shop/{victim}");
    assert!(
        lab.exec_ok(&pod, &[ferry_bin, "echo-ctl", "ready", "false"])
            .contains("ready=false")
    );
    lab.wait("the endpoint to leave ready", Duration::from_secs(5), |l| {
        cond(l) == Some((false, false, false))
    });
    lab.exec_ok(&pod, &[ferry_bin, "echo-ctl", "ready", "true"]);
    lab.wait(
        "the endpoint to be ready again",
        Duration::from_secs(5),
        |l| cond(l) == Some((true, true, false)),
    );

    lab.ok(&["delete", &format!("pod/shop/{victim}")]);
    let t = lab.wait(
        "the deleted pod to be terminating",
        Duration::from_secs(3),
        |l| cond(l) == Some((false, true, true)),
    );
    assert!(t < Duration::from_secs(1), "{t:?}");
    lab.wait(
        "the deleted pod to be gone and replaced",
        Duration::from_secs(8),
        |l| {
            let eps = l.slice_endpoints("shop", "web");
            cond(l).is_none()
                && eps.len() == 3
                && eps.iter().all(|e| e["conditions"]["ready"] == true)
        },
    );
}

fn lab_leftovers(name: &str) -> Vec<String> {
    let mut found = Vec::new();
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if line.starts_with(&format!("ferry.{name}.")) {
            found.push(format!("netns {line}"));
        }
    }
    for dir in ["/etc/netns", "/run/ferry/labs"] {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n == name || n.starts_with(&format!("ferry.{name}.")) {
                found.push(format!("file {}", e.path().display()));
            }
        }
    }
    let out = Command::new("pgrep")
        .args(["-af", "--", &format!("--lab {name}( |$)")])
        .output()
        .unwrap();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        found.push(format!("process {line}"));
    }
    found
}

#[test]
fn lab_down_leaves_nothing_and_lab_up_recovers_after_kill_9() {
    if !can_run() {
        return;
    }
    let lab = Lab::up("e2edown", &[&fixture("lab-basic.yaml")], &[]);
    let name = lab.name.clone();
    assert!(!lab_leftovers(&name).is_empty());
    // Kill every lab process at once, as a crash would.
    let out = Command::new("pkill")
        .args(["-9", "-f", "--", &format!("--lab {name}( |$)")])
        .output()
        .unwrap();
    assert!(out.status.success(), "nothing killed");
    std::thread::sleep(Duration::from_millis(200));
    assert!(lab.status()["phase"] == "Stopped");
    // A new lab up cleans the leftovers and comes up.
    let again = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["lab", "up", "--lab", &name, &fixture("lab-basic.yaml")])
        .output()
        .unwrap();
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        text(&again).contains("cleaning up what an earlier lab"),
        "{}",
        text(&again)
    );
    let web = lab.pods("web-");
    assert_eq!(web.len(), 3);
    let ip = web[0]["ip"].as_str().unwrap();
    let a = json(&lab.exec_ok(
        "pod/shop/client",
        &["curl", "-sS", "-m", "3", &format!("http://{ip}:8080/")],
    ));
    assert_eq!(a["pod"], web[0]["name"]);

    let out = lab.run(&["down"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(lab_leftovers(&name), Vec::<String>::new());
    // Down again: nothing to do, still fine.
    assert!(text(&lab.run(&["down"])).contains("nothing to remove"));
}

#[test]
fn lab_commands_explain_themselves_when_the_lab_is_not_running() {
    if !can_run() {
        return;
    }
    let out = ferry()
        .args([
            "lab",
            "apply",
            "--lab",
            "e2enone",
            &fixture("lab-basic.yaml"),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).contains(
            "lab \"e2enone\" is not running (start it with: ferry lab up PATH... --lab e2enone)"
        ),
        "{}",
        text(&out)
    );
    let out = ferry()
        .args(["lab", "up", "--lab", "Bad.Name", &fixture("lab-basic.yaml")])
        .output()
        .unwrap();
    assert!(
        text(&out).contains("lab name \"Bad.Name\" is not valid"),
        "{}",
        text(&out)
    );
}

#[test]
fn bad_manifests_are_refused_and_the_running_lab_is_untouched() {
    if !can_run() {
        return;
    }
    let broken = repo()
        .join("examples/broken/mistakes.yaml")
        .display()
        .to_string();
    let name = lab_name("e2ebad");
    let out = ferry()
        .args(["lab", "up", "--lab", &name, &broken])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let msg = text(&out);
    assert!(
        msg.contains("spec.ports[1].port: 70000 is not in 1..65535")
            && msg.contains("nothing was changed"),
        "{msg}"
    );
    assert!(
        !Path::new(&format!("/run/ferry/labs/{name}")).exists(),
        "a refused lab up leaves nothing"
    );

    let lab = Lab::up("e2ebad", &[&fixture("lab-basic.yaml")], &[]);
    let before = lab.status();
    let out = lab.run(&["apply", &broken]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("Ingress demo/site: spec.rules[0].host"),
        "{}",
        text(&out)
    );
    // A valid file whose Service asks for a taken ClusterIP is refused whole.
    let dir = tempfile::tempdir().unwrap();
    let taken = lab.status()["services"][0]["cluster_ip"]
        .as_str()
        .unwrap()
        .to_string();
    let f = dir.path().join("clash.yaml");
    std::fs::write(&f, format!("apiVersion: v1\nkind: Service\nmetadata: {{name: clash, namespace: shop}}\nspec: {{clusterIP: {taken}, ports: [{{port: 1}}]}}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: newns}}\n")).unwrap();
    let out = lab.run(&["apply", f.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains(&format!(
            "Service shop/clash: spec.clusterIP: {taken} is already allocated"
        )),
        "{}",
        text(&out)
    );
    let after = lab.status();
    assert_eq!(before["pods"], after["pods"]);
    assert_eq!(before["services"], after["services"]);
}

#[test]
fn the_lab_state_is_root_only_and_a_silent_control_client_blocks_nothing() {
    use std::os::unix::fs::PermissionsExt;
    if !can_run() {
        return;
    }
    let lab = Lab::up("e2eperms", &[&fixture("lab-basic.yaml")], &[]);
    let state_dir = format!("/run/ferry/labs/{}", lab.name);
    let state = std::path::Path::new(&state_dir);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(state), 0o700, "the state directory");
    assert_eq!(
        mode(&state.join("control.sock")),
        0o600,
        "the control socket"
    );
    // Another user reads neither the inputs nor the agents' manifests.
    for dir in ["input", "manifests"] {
        let file = std::fs::read_dir(state.join(dir))
            .unwrap()
            .flatten()
            .next()
            .unwrap()
            .path();
        let out = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "cat"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(!out.status.success(), "nobody read {}", file.display());
    }
    // A client that connects and sends nothing.
    let _silent = std::os::unix::net::UnixStream::connect(state.join("control.sock")).unwrap();
    let started = Instant::now();
    lab.ok(&["scale", "deployment/shop/web", "2"]);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a silent client held the controller for {:?}",
        started.elapsed()
    );
}

#[test]
fn the_lab_serves_its_cluster_through_an_api_server_that_kubectl_reads() {
    if !can_run() {
        return;
    }
    let lab = Lab::up("e2eapi", &[&fixture("lab-basic.yaml")], &[]);
    let status = lab.status();
    assert_eq!(
        status["api_server"]["netns"],
        format!("ferry.{}.cp", lab.name)
    );
    let pods = kubectl(&lab, &["get", "pods", "-n", "shop", "-o", "name"]);
    let mut expected: Vec<String> = lab.status()["pods"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["namespace"] == "shop")
        .map(|p| format!("pod/{}", p["name"].as_str().unwrap()))
        .collect();
    expected.sort();
    let mut got: Vec<String> = pods.lines().map(str::to_string).collect();
    got.sort();
    assert_eq!(got, expected);
    // A change made through the lab reaches the API: scaling adds pods.
    lab.ok(&["scale", "deployment/shop/web", "5"]);
    lab.wait(
        "5 web pods through kubectl",
        Duration::from_secs(15),
        |lab| {
            kubectl(
                lab,
                &["get", "pods", "-n", "shop", "-l", "app=web", "-o", "name"],
            )
            .lines()
            .count()
                == 5
        },
    );
    let slice: serde_json::Value = serde_json::from_str(&kubectl(
        &lab,
        &["get", "endpointslices", "-n", "shop", "-o", "json"],
    ))
    .unwrap();
    assert_eq!(
        slice["items"][0]["metadata"]["labels"]["kubernetes.io/service-name"],
        "web"
    );
}

/// `ferry lab kubectl --lab NAME ARGS...` (kubectl in the outside namespace).
fn kubectl(lab: &Lab, args: &[&str]) -> String {
    let out = ferry()
        .args(["lab", "kubectl", "--lab", &lab.name])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "kubectl {args:?}:\n{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn on_the_api_source_pods_reach_services_by_name_and_scaling_reaches_the_rules() {
    if !can_run() {
        return;
    }
    let lab = Lab::up(
        "e2esk",
        &[&fixture("lab-basic.yaml")],
        &["--source", "kube"],
    );
    let ip = lab.cluster_ip("web");
    // Ready means every agent has programmed what the lab wrote: the
    // first request goes through.
    let answer = json(&lab.exec_ok(
        "pod/shop/client",
        &[
            "curl",
            "-sS",
            "-m",
            "3",
            "http://web.shop.svc.cluster.local/",
        ],
    ));
    assert!(
        answer["pod"].as_str().unwrap().starts_with("web-"),
        "{answer}"
    );
    let dig = lab.exec_ok(
        "pod/shop/client",
        &["dig", "+short", "web.shop.svc.cluster.local"],
    );
    assert_eq!(dig.trim(), ip);
    lab.ok(&["scale", "deployment/shop/web", "5"]);
    lab.wait(
        "5 web endpoints answer through the ClusterIP",
        Duration::from_secs(20),
        |lab| {
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..40 {
                let out = lab.exec(
                    "pod/shop/client",
                    &["curl", "-sS", "-m", "1", &format!("http://{ip}/")],
                );
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) {
                    seen.insert(v["pod"].as_str().unwrap_or_default().to_string());
                }
                if seen.len() == 5 {
                    return true;
                }
            }
            false
        },
    );
    // The agents say they read the API.
    let log = std::fs::read_to_string(format!(
        "/run/ferry/labs/{}/logs/agent-node-1.log",
        lab.name
    ))
    .unwrap();
    assert!(log.contains("listed every kind; watching"), "{log}");
}

/// How the agents' health reads on a node (from the node's namespace).
fn agent_health(lab: &Lab, node: &str) -> serde_json::Value {
    let ip = lab.node_ip(node);
    json(&lab.exec_ok(
        &format!("node/{node}"),
        &[
            "curl",
            "-sS",
            "-m",
            "2",
            &format!("http://{ip}:10256/healthz"),
        ],
    ))
}

#[test]
fn a_10_second_api_server_outage_drops_no_traffic_agents_say_stale_and_catch_up() {
    if !can_run() {
        return;
    }
    let lab = Lab::up(
        "e2eoutage",
        &[&fixture("lab-basic.yaml")],
        &["--source", "kube"],
    );
    let ip = lab.cluster_ip("web");
    let get = |lab: &Lab, url: &str| {
        lab.exec("pod/shop/client", &["curl", "-sS", "-m", "1", url])
            .status
            .success()
    };
    assert!(get(&lab, &format!("http://{ip}/")));
    let pid = lab.status()["api_server"]["pid"]
        .as_u64()
        .expect("the API server's pid");
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let down = Instant::now();
    // A Service made while the API server is down.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("web2.yaml");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: Service\nmetadata: {name: web2, namespace: shop}\n\
         spec:\n  selector: {app: web}\n  ports: [{name: http, port: 80, targetPort: http}]\n",
    )
    .unwrap();
    lab.ok(&["apply", &file.display().to_string()]);
    // Traffic through the outage, one request each 100 ms (bounded: at
    // most 200 requests of at most 1 s each), until the lab has started
    // its API server again (10 s after it went).
    let (mut sent, mut failed, mut stale_seen) = (0, 0, false);
    while sent < 200 && down.elapsed() < Duration::from_secs(12) {
        std::thread::sleep(Duration::from_millis(100));
        sent += 1;
        if !get(&lab, &format!("http://{ip}/")) {
            failed += 1;
        }
        if !stale_seen && down.elapsed() > Duration::from_secs(3) {
            let health = agent_health(&lab, "node-1");
            assert!(
                health.get("sourceStaleSince").is_some(),
                "the agent does not say its source is stale: {health}"
            );
            stale_seen = true;
        }
    }
    assert_eq!(
        failed, 0,
        "{failed} of {sent} requests failed during the outage"
    );
    assert!(sent >= 10, "only {sent} requests in the outage");
    assert!(stale_seen);
    lab.wait(
        "the API server started again",
        Duration::from_secs(10),
        |lab| {
            lab.status()["api_server"]["pid"]
                .as_u64()
                .is_some_and(|p| p != pid)
        },
    );
    let outage = down.elapsed();
    // Back: the Service made during the outage answers, and the agents
    // are in step again (their watchers retry with client-go's backoff,
    // up to 30 s apart).
    let ip2 = lab.cluster_ip("web2");
    let caught_up = lab.wait(
        "the Service made during the outage answers",
        Duration::from_secs(40),
        |lab| get(lab, &format!("http://{ip2}/")),
    );
    for node in ["node-1", "node-2"] {
        lab.wait("the agent in step again", Duration::from_secs(30), |lab| {
            agent_health(lab, node).get("sourceStaleSince").is_none()
        });
    }
    lab.wait("the lab Ready again", Duration::from_secs(30), |lab| {
        lab.status()["phase"] == "Ready"
    });
    eprintln!(
        "outage of {outage:?}: {sent} requests, {failed} failed; the new Service answered {caught_up:?} after the API server's return"
    );
}
