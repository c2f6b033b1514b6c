//! Network namespaces, links, addresses and routes of the lab, through
//! iproute2 (`ip -n NS -batch -`: one process per namespace and step, so a
//! pod costs a handful of process starts). The only place that runs `ip`.
//!
//! Nothing here ever configures the root namespace: veth pairs are created
//! with both ends directly in lab namespaces.

use ferry_sys::Tool;
use std::net::Ipv4Addr;
use std::path::Path;

use ipnet::Ipv4Net;

use crate::LabError;
use crate::names::{self, LabNames};
use crate::plan::NodeInfo;

fn run(tool: Tool, input: Option<&str>) -> Result<(), LabError> {
    let tool = match input {
        Some(text) => tool.stdin(text),
        None => tool,
    };
    tool.run().map(drop).map_err(|e| {
        let message = e.stderr().map_or_else(|| e.to_string(), str::to_string);
        let message = match input {
            Some(text) => format!("{message}\n  in batch:\n{}", text.trim_end()),
            None => message,
        };
        LabError::Command {
            command: tool_line(&e),
            message,
        }
    })
}

fn tool_line(e: &ferry_sys::ToolError) -> String {
    match e {
        ferry_sys::ToolError::Failed { command, .. }
        | ferry_sys::ToolError::Spawn { command, .. }
        | ferry_sys::ToolError::TimedOut { command, .. } => command.clone(),
        ferry_sys::ToolError::Missing(m) => m.program.clone(),
    }
}

fn ip<const N: usize>(args: [&str; N]) -> Tool {
    Tool::new("ip").args(args)
}

/// Runs `ip` commands, one per line, in namespace `ns`.
pub(crate) fn batch(ns: &str, commands: &str) -> Result<(), LabError> {
    run(ip(["-n", ns, "-batch", "-"]), Some(commands))
}

pub(crate) fn ns_exists(ns: &str) -> bool {
    Path::new("/run/netns").join(ns).exists()
}

pub(crate) fn ns_add(ns: &str) -> Result<(), LabError> {
    run(ip(["netns", "add", ns]), None)?;
    batch(ns, "link set lo up\n")
}

pub(crate) fn ns_del(ns: &str) -> Result<(), LabError> {
    if !ns_exists(ns) {
        return Ok(());
    }
    run(ip(["netns", "del", ns]), None)
}

/// Deletes many namespaces with one `ip` process (`-force`: keep going past
/// ones that are already gone).
pub(crate) fn ns_del_many(namespaces: &[String]) -> Result<(), LabError> {
    let existing: Vec<&String> = namespaces.iter().filter(|ns| ns_exists(ns)).collect();
    if existing.is_empty() {
        return Ok(());
    }
    let commands: String = existing
        .iter()
        .map(|ns| format!("netns del {ns}\n"))
        .collect();
    run(ip(["-force", "-batch", "-"]), Some(&commands))
}

/// Lab namespaces that exist now (`/run/netns` entries with the lab's prefix).
pub(crate) fn lab_namespaces(names: &LabNames) -> Vec<String> {
    let prefix = names.ns_prefix();
    let mut out: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn sysctl(ns: &str, setting: &str) -> Result<(), LabError> {
    run(ip(["netns", "exec", ns, "sysctl", "-qw", setting]), None)
}

/// A veth pair with one end in each namespace, created in place.
fn veth(ns_a: &str, name_a: &str, ns_b: &str, name_b: &str) -> Result<(), LabError> {
    batch(
        ns_a,
        &format!("link add {name_a} type veth peer name {name_b} netns {ns_b}\n"),
    )
}

/// The node network: a bridge in a namespace of its own.
pub(crate) fn create_switch(names: &LabNames) -> Result<(), LabError> {
    let sw = names.switch_ns();
    ns_add(&sw)?;
    batch(&sw, "link add br0 type bridge\nlink set br0 up\n")
}

fn plug_into_switch(
    names: &LabNames,
    ns: &str,
    port: &str,
    ip: Ipv4Addr,
    prefix: u8,
) -> Result<(), LabError> {
    let sw = names.switch_ns();
    veth(ns, "eth0", &sw, port)?;
    batch(
        &sw,
        &format!("link set {port} master br0\nlink set {port} up\n"),
    )?;
    batch(
        ns,
        &format!("addr add {ip}/{prefix} dev eth0\nlink set eth0 up\n"),
    )
}

/// The outside client (the internet, the cloud load balancer) on the node network.
pub(crate) fn create_outside(
    names: &LabNames,
    ip: Ipv4Addr,
    node_cidr: Ipv4Net,
) -> Result<(), LabError> {
    let ns = names.outside_ns();
    ns_add(&ns)?;
    plug_into_switch(names, &ns, "out", ip, node_cidr.prefix_len())?;
    // ECMP routes to load-balancer IPs spread connections by port, as a cloud load balancer would.
    sysctl(&ns, "net.ipv4.fib_multipath_hash_policy=1")
}

/// The control plane's namespace on the node network (the lab's API server).
pub(crate) fn create_control_plane(
    names: &LabNames,
    ip: Ipv4Addr,
    node_cidr: Ipv4Net,
) -> Result<(), LabError> {
    let ns = names.control_plane_ns();
    ns_add(&ns)?;
    plug_into_switch(names, &ns, "cp", ip, node_cidr.prefix_len())
}

/// A node: uplink to the switch, forwarding on. Its pod bridge (`cni0`)
/// is the CNI plugin's, made at the first pod.
pub(crate) fn create_node(
    names: &LabNames,
    node: &NodeInfo,
    node_cidr: Ipv4Net,
    gateway: Ipv4Addr,
) -> Result<(), LabError> {
    let ns = names.node_ns(&node.name);
    ns_add(&ns)?;
    plug_into_switch(
        names,
        &ns,
        &names::switch_port(node.index),
        node.ip,
        node_cidr.prefix_len(),
    )?;
    batch(&ns, &format!("route add default via {gateway} dev eth0\n"))?;
    sysctl(&ns, "net.ipv4.ip_forward=1")
}

pub(crate) fn delete_node(names: &LabNames, node: &str) -> Result<(), LabError> {
    ns_del(&names.node_ns(node))
}

/// A pod's sandbox: its namespace and its resolv.conf (bind-mounted by
/// `ip netns exec`), before the CNI plugin gives it its network.
pub(crate) fn create_pod_ns(names: &LabNames, id: u32, resolv_conf: &str) -> Result<(), LabError> {
    let ns = names.pod_ns(id);
    ns_add(&ns)?;
    let etc = names::etc_netns(&ns);
    std::fs::create_dir_all(&etc).map_err(LabError::io(&etc))?;
    let file = etc.join("resolv.conf");
    std::fs::write(&file, resolv_conf).map_err(LabError::io(&file))
}

/// Removes a pod's namespace (its veth goes with it) and its /etc/netns files.
pub(crate) fn delete_pod(names: &LabNames, id: u32) -> Result<(), LabError> {
    let ns = names.pod_ns(id);
    let _ = std::fs::remove_dir_all(names::etc_netns(&ns));
    ns_del(&ns)
}
