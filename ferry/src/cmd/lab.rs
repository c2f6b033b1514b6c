//! `ferry lab ...`: a cluster of network namespaces on this machine.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use ferry_lab::client;
use ferry_lab::plan::Settings;
use ferry_lab::status::LabStatus;
use ipnet::Ipv4Net;

#[derive(clap::Args)]
pub struct Args {
    /// Which lab (several can run at once).
    #[arg(long, global = true, default_value = ferry_lab::names::DEFAULT_LAB)]
    lab: String,
    #[command(subcommand)]
    command: LabCommand,
}

impl Args {
    /// Only prints (so it may end quietly when its reader goes away).
    pub fn only_prints(&self) -> bool {
        matches!(self.command, LabCommand::Status { .. })
    }
}

#[derive(clap::Subcommand)]
enum LabCommand {
    /// Build the lab from manifests and wait until it is ready.
    Up(UpArgs),
    /// Add or change objects in a running lab (like kubectl apply).
    Apply {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Delete an object: KIND/NAMESPACE/NAME (a pod of a Deployment is replaced, as in Kubernetes).
    Delete { target: String },
    /// Scale a Deployment or ReplicaSet: deployment/NAMESPACE/NAME REPLICAS.
    Scale { target: String, replicas: i32 },
    /// Run a command in a pod (pod/NS/NAME or NS/NAME), a node (node/NAME) or `outside`.
    Exec {
        target: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Run kubectl against the lab's API server (from the outside client's
    /// namespace, with the lab's kubeconfig), e.g. `ferry lab kubectl get pods -A`.
    Kubectl {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Show nodes, pods, services and agent health.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Remove every namespace, link, process and file of the lab.
    Down,
    /// The lab's control plane daemon (started by `lab up`).
    #[command(hide = true)]
    Controller {
        #[arg(long)]
        settings: String,
    },
}

#[derive(clap::Args)]
struct UpArgs {
    /// Manifest files or directories (the Node objects in them, if any, are the nodes).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Nodes to create when the manifests have no Node objects.
    #[arg(long, default_value_t = 2)]
    nodes: u32,
    /// The node network (node IPs; the outside client is its .2).
    #[arg(long, default_value = "172.18.0.0/24")]
    node_cidr: Ipv4Net,
    /// Pod CIDRs for nodes without one are /24s of this.
    #[arg(long, default_value = "10.244.0.0/16")]
    cluster_cidr: Ipv4Net,
    /// ClusterIPs are allocated from here.
    #[arg(long, default_value = "172.16.0.0/16")]
    service_cidr: Ipv4Net,
    /// LoadBalancer IPs are allocated from here.
    #[arg(long, default_value = "172.19.0.0/24")]
    lb_pool: Ipv4Net,
    /// Give up waiting for the lab to be ready after this many seconds.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// The agents' service proxy: nftables or iptables.
    #[arg(long, default_value = "nftables", value_parser = ["nftables", "iptables"])]
    proxy_mode: String,
    /// The pod network's backend (every agent runs the overlay): vxlan or host-gw.
    #[arg(long, default_value = "vxlan", value_parser = ["vxlan", "host-gw"])]
    backend: String,
    /// Where the pod network's leases live: file (a directory) or etcd (a
    /// real etcd, Debian's etcd-server, in the control-plane namespace).
    #[arg(long, default_value = "file", value_parser = ["file", "etcd", "kube"])]
    lease_store: String,
    /// Where the agents read the cluster: manifests (the files the lab
    /// writes) or kube (the lab's API server, through a kubeconfig).
    #[arg(long, default_value = "manifests", value_parser = ["manifests", "kube"])]
    source: String,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let lab = args.lab;
    match args.command {
        LabCommand::Up(up) => {
            if up.lease_store == "kube" && up.source != "kube" {
                anyhow::bail!(
                    "--lease-store kube keeps leases on the Nodes through the API: it needs --source kube"
                );
            }
            let settings = Settings {
                node_cidr: up.node_cidr,
                cluster_cidr: up.cluster_cidr,
                service_cidr: up.service_cidr,
                lb_pool: up.lb_pool,
                default_nodes: up.nodes,
                proxy_mode: up.proxy_mode,
                backend: up.backend,
                lease_store: up.lease_store,
                source: up.source,
                ..Settings::default()
            };
            let start = std::time::Instant::now();
            let status = client::up(
                client::UpOptions {
                    paths: up.paths,
                    lab: lab.clone(),
                    settings,
                    timeout: Duration::from_secs(up.timeout),
                },
                &mut |line| eprintln!("lab {lab}: {line}"),
            )?;
            println!(
                "lab {lab} is ready ({:.1} s)\n",
                start.elapsed().as_secs_f64()
            );
            print_status(&status);
            println!("\nTry:");
            let client = status.pods.first();
            let service = status.services.iter().find(|s| {
                s.cluster_ip.as_deref().is_some_and(|ip| ip != "None")
                    && s.ports.iter().any(|p| p.protocol == "TCP")
            });
            match (client, service) {
                (Some(p), Some(svc)) => {
                    let port = svc
                        .ports
                        .iter()
                        .find(|p| p.protocol == "TCP")
                        .map_or(80, |p| p.port);
                    let from = format!("pod/{}/{}", p.namespace, p.name);
                    println!(
                        "  ferry lab exec --lab {lab} {from} -- curl -s {}.{}:{port}/      # by name: DNS, then the Service's ClusterIP",
                        svc.name, svc.namespace
                    );
                    println!(
                        "  ferry lab exec --lab {lab} {from} -- dig +short {}.{}.svc.cluster.local",
                        svc.name, svc.namespace
                    );
                    println!(
                        "  ferry trace --lab {lab} {from} {}.{}:{port}                 # every hop, from the model and the kernel",
                        svc.name, svc.namespace
                    );
                }
                (Some(p), None) => println!(
                    "  ferry lab exec --lab {lab} pod/{}/{} -- ip addr",
                    p.namespace, p.name
                ),
                _ => {}
            }
            println!("  ferry lab status --lab {lab}");
            println!("  ferry lab down --lab {lab}");
        }
        LabCommand::Apply { paths } => println!("{}", client::apply(&lab, &paths)?),
        LabCommand::Delete { target } => println!("{}", client::delete(&lab, &target)?),
        LabCommand::Scale { target, replicas } => {
            println!("{}", client::scale(&lab, &target, replicas)?)
        }
        LabCommand::Exec { target, command } => {
            let status = client::exec_command(&lab, &target, &command)?
                .status()
                .context("running the command")?;
            return Ok(ExitCode::from(
                u8::try_from(status.code().unwrap_or(1)).unwrap_or(1),
            ));
        }
        LabCommand::Kubectl { args } => {
            let status = client::status(&lab)?;
            let mut command = vec![
                "kubectl".to_string(),
                "--kubeconfig".to_string(),
                status.api_server.kubeconfig.clone(),
            ];
            command.extend(args);
            let status = client::exec_command(&lab, "outside", &command)?
                .status()
                .context("running kubectl")?;
            return Ok(ExitCode::from(
                u8::try_from(status.code().unwrap_or(1)).unwrap_or(1),
            ));
        }
        LabCommand::Status { json } => {
            let status = client::status(&lab)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                println!("lab {lab}: {} ({})\n", status.phase, status.message);
                print_status(&status);
            }
        }
        LabCommand::Down => println!("{}", client::down(&lab)?),
        LabCommand::Controller { settings } => {
            let settings: Settings = serde_json::from_str(&settings).context("--settings")?;
            ferry_lab::run_controller(ferry_lab::ControllerArgs { lab, settings })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_status(s: &LabStatus) {
    if !s.proxy_mode.is_empty() {
        println!(
            "proxy mode {}, pod network {}\n",
            s.proxy_mode, s.overlay_backend
        );
    }
    println!("NODE          IP              POD-CIDR         AGENT");
    for n in &s.nodes {
        println!(
            "{:<13} {:<15} {:<16} {}",
            n.name,
            n.ip,
            n.pod_cidr,
            if n.agent_healthy {
                "healthy".to_string()
            } else {
                match &n.agent_error {
                    Some(e) => format!("not healthy: {e}"),
                    None => "not healthy".to_string(),
                }
            }
        );
    }
    println!(
        "\nPOD                                          NODE          IP              READY  STATE"
    );
    for p in &s.pods {
        let state = if p.terminating {
            "Terminating"
        } else if p.started {
            "Running"
        } else {
            "Pending"
        };
        println!(
            "{:<44} {:<13} {:<15} {:<6} {}",
            format!("{}/{}", p.namespace, p.name),
            p.node,
            p.ip,
            p.ready,
            state
        );
    }
    println!(
        "\nSERVICE                          TYPE          CLUSTER-IP       PORT(S)                 EXTERNAL-IP"
    );
    for svc in &s.services {
        let ports: Vec<String> = svc
            .ports
            .iter()
            .map(|p| match p.node_port {
                Some(np) => format!("{}:{}/{}", p.port, np, p.protocol),
                None => format!("{}/{}", p.port, p.protocol),
            })
            .collect();
        println!(
            "{:<32} {:<13} {:<16} {:<23} {}",
            format!("{}/{}", svc.namespace, svc.name),
            svc.type_,
            svc.cluster_ip.clone().unwrap_or_else(|| "<none>".into()),
            ports.join(","),
            if svc.load_balancer_ips.is_empty() {
                "<none>".into()
            } else {
                svc.load_balancer_ips.join(",")
            }
        );
    }
    if !s.ingresses.is_empty() {
        println!(
            "\nINGRESS                          CLASS                  HOSTS                        ADDRESS"
        );
        for i in &s.ingresses {
            println!(
                "{:<32} {:<22} {:<28} {}",
                format!("{}/{}", i.namespace, i.name),
                if i.class.is_empty() {
                    "<none>"
                } else {
                    &i.class
                },
                i.hosts.join(","),
                i.addresses.join(",")
            );
        }
    }
    println!(
        "\noutside client: {} (ferry lab exec --lab {} outside -- ...)",
        s.outside.ip, s.lab
    );
    for e in &s.errors {
        println!("warning: {e}");
    }
}
