//! `ferry bench lab`: how long `lab up` takes for a small and a large
//! cluster, how long `lab down` takes, and how much memory an idle agent
//! uses. Runs the real commands (as a user would) in a lab named `bench`;
//! reads its `status.json` and the agents' `/proc` entries.

use std::time::{Duration, Instant};

use anyhow::Context;

use crate::child;
use crate::memory::rss_mib;
use crate::stats::median;

/// What `ferry bench lab` measures.
#[derive(Clone, Debug)]
pub struct LabOptions {
    /// Runs per size (the median is reported).
    pub runs: usize,
    /// Sizes as NODESxPODS.
    pub sizes: Vec<String>,
    /// Write the figures of every size as JSON here.
    pub json: Option<std::path::PathBuf>,
    /// Draw lab up / down time and idle memory against the pods as SVG here.
    pub svg: Option<std::path::PathBuf>,
}

const LAB: &str = "bench";

fn manifest(pods: usize) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: bench}}\nspec:\n  replicas: {pods}\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      containers:\n      - name: web\n        image: ferry-echo\n        ports: [{{name: http, containerPort: 8080}}]\n        readinessProbe: {{httpGet: {{path: /, port: http}}, periodSeconds: 1}}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: bench}}\nspec:\n  selector: {{app: web}}\n  ports: [{{port: 80, targetPort: http}}]\n"
    )
}

fn ferry(args: &[&str]) -> anyhow::Result<Duration> {
    let start = Instant::now();
    child::ferry(args).with_context(|| format!("ferry {}", args.join(" ")))?;
    Ok(start.elapsed())
}

/// Runs the benchmark and prints its table.
pub fn run(options: LabOptions) -> anyhow::Result<()> {
    let LabOptions {
        runs,
        sizes,
        json,
        svg,
    } = options;
    let mut figures = Vec::new();
    let dir = tempfile::tempdir().context("creating a scratch directory")?;
    println!(
        "ferry bench lab  (median of {runs} runs; each run is `ferry lab up` until ready, a 2 s idle pause, `ferry lab down`)"
    );
    println!();
    println!(
        "  {:>6}  {:>5}  {:>10}  {:>10}  {:>16}  {:>15}",
        "nodes", "pods", "lab up", "lab down", "idle agent RSS", "echo pod RSS"
    );
    for size in &sizes {
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
        let (up, down) = (median(&mut ups), median(&mut downs));
        let (agent, pod) = (median(&mut agent_rss), median(&mut pod_rss));
        println!(
            "  {nodes:>6}  {pods:>5}  {up:>9.2}s  {down:>9.2}s  {agent:>13.1}MiB  {pod:>12.1}MiB",
        );
        figures.push(serde_json::json!({
            "nodes": nodes,
            "pods": pods,
            "runs": runs,
            "up_s": up,
            "down_s": down,
            "agent_rss_mib": agent,
            "pod_rss_mib": pod,
        }));
    }
    crate::figures::write(
        &serde_json::json!({ "runs": figures }),
        json.as_deref(),
        svg.as_deref(),
        crate::figures::lab_chart,
    )
}
