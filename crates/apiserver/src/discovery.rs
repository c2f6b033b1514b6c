//! Discovery documents, as far as clients need them (kubectl, kube-rs):
//! `/version`, `/api`, `/apis`, `/apis/GROUP` and the resource lists of
//! each group version. Pure.

use serde_json::{Value, json};

use crate::resources::{RESOURCES, groups};

/// `/version`: the Kubernetes version whose API ferry's types follow.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "37",
        "gitVersion": "v1.37.0-ferry-lab",
        "platform": "linux/amd64",
        "goVersion": "none (ferry's lab API server)",
        "compiler": "rustc",
    })
}

/// `/api`
pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn group(name: &str) -> Value {
    let gv = json!({"groupVersion": format!("{name}/v1"), "version": "v1"});
    json!({
        "name": name,
        "versions": [gv.clone()],
        "preferredVersion": gv,
    })
}

/// `/apis`
pub fn groups_list() -> Value {
    json!({
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": groups().into_iter().map(group).collect::<Vec<_>>(),
    })
}

/// `/apis/GROUP`
pub fn group_doc(name: &str) -> Value {
    let mut g = group(name);
    g["kind"] = json!("APIGroup");
    g["apiVersion"] = json!("v1");
    g
}

/// `/api/v1`, `/apis/GROUP/VERSION`: the resources, with the verbs this
/// server answers (reads for all; patch for Nodes and Ingress status,
/// the writes components make).
pub fn resource_list(group: &str, version: &str) -> Value {
    let mut resources = Vec::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let writable = matches!(r.plural, "nodes" | "ingresses" | "services");
        let mut verbs = vec!["get", "list", "watch"];
        if writable {
            verbs.push("patch");
        }
        resources.push(json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced(),
            "kind": r.kind.as_str(),
            "verbs": verbs,
            "shortNames": r.short_names,
        }));
        if writable {
            resources.push(json!({
                "name": format!("{}/status", r.plural),
                "singularName": "",
                "namespaced": r.namespaced(),
                "kind": r.kind.as_str(),
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": if group.is_empty() { version.to_string() } else { format!("{group}/{version}") },
        "resources": resources,
    })
}
