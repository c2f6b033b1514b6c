//! `ferry bench lab`: how long `lab up` takes for a small and a large
//! cluster, how long `lab down` takes, and how much memory an idle agent
//! uses. Runs the real commands (as a user would) in a lab named `bench`.

use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

const LAB: &str = "bench";

fn manifest(pods: usize) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: bench}}\nspec:\n  replicas: {pods}\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      containers:\n      - name: web\n        image: ferry-echo\n        ports: [{{name: http, containerPort: 8080}}]\n        readinessProbe: {{httpGet: {{path: /, port: http}}, periodSeconds: 1}}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: bench}}\nspec:\n  selector: {{app: web}}\n  ports: [{{port: 80, targetPort: http}}]\n"
    )
}

fn ferry(args: &[&str]) -> anyhow::Result<Duration> {
    let exe = std::env::current_exe().context("locating the ferry binary")?;
    let start = Instant::now();
    let out = Command::new(exe)
        .args(args)
        .output()
        .context("running ferry")?;
    let took = start.elapsed();
    if !out.status.success() {
        bail!(
            "ferry {} failed:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(took)
}

pub(crate) fn rss_mib(pid: u64) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn run(runs: usize, sizes: &[String]) -> anyhow::Result<ExitCode> {
    let dir = tempfile::tempdir().context("creating a scratch directory")?;
    println!(
        "ferry bench lab  (median of {runs} runs; each run is `ferry lab up` until ready, a 2 s idle pause, `ferry lab down`)"
    );
    println!();
    println!(
        "  {:>6}  {:>5}  {:>10}  {:>10}  {:>16}  {:>15}",
        "nodes", "pods", "lab up", "lab down", "idle agent RSS", "echo pod RSS"
    );
    for size in sizes {
        let (nodes, pods) = size
            .split_once('x')
            .and_then(|(n, p)| Some((n.parse::<u32>().ok()?, p.parse::<usize>().ok()?)))
            .with_context(|| format!("{size:?}: expected NODESxPODS, for example 10x200"))?;
        let file = dir.path().join(format!("bench-{pods}.yaml"));
        std::fs::write(&file, manifest(pods)).context("writing the manifest")?;
        let file = file.display().to_string();
        let nodes_arg = nodes.to_string();
        let (mut ups, mut downs, mut agent_rss, mut pod_rss) = (vec![], vec![], vec![], vec![]);
        for run in 1..=runs {
            eprintln!("{nodes} nodes / {pods} pods: run {run}/{runs} ...");
            let up = ferry(&[
                "lab",
                "up",
                "--lab",
                LAB,
                "--nodes",
                &nodes_arg,
                "--timeout",
                "300",
                &file,
            ])?;
            std::thread::sleep(Duration::from_secs(2));
            let status: serde_json::Value =
                serde_json::from_slice(&std::fs::read("/run/ferry/labs/bench/status.json")?)?;
            let mut a: Vec<f64> = status["nodes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|n| rss_mib(n["agent_pid"].as_u64()?))
                .collect();
            let mut p: Vec<f64> = status["pods"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|n| rss_mib(n["pid"].as_u64()?))
                .collect();
            let down = ferry(&["lab", "down", "--lab", LAB])?;
            ups.push(up.as_secs_f64());
            downs.push(down.as_secs_f64());
            if !a.is_empty() {
                agent_rss.push(median(&mut a));
            }
            if !p.is_empty() {
                pod_rss.push(median(&mut p));
            }
        }
        println!(
            "  {:>6}  {:>5}  {:>9.2}s  {:>9.2}s  {:>13.1}MiB  {:>12.1}MiB",
            nodes,
            pods,
            median(&mut ups),
            median(&mut downs),
            if agent_rss.is_empty() {
                f64::NAN
            } else {
                median(&mut agent_rss)
            },
            if pod_rss.is_empty() {
                f64::NAN
            } else {
                median(&mut pod_rss)
            },
        );
    }
    Ok(ExitCode::SUCCESS)
}
