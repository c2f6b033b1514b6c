//! The API's resources: which kinds are served under which group, version
//! and plural name, and what a request path asks for
//! (`/api/v1/namespaces/NS/services/NAME`, `/apis/GROUP/VERSION/...`,
//! a `/status` subresource). Pure.

use ferry_model::Kind;

/// One served resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resource {
    pub kind: Kind,
    /// `""` for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub short_names: &'static [&'static str],
}

impl Resource {
    /// `v1` or `group/version`.
    pub fn group_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn namespaced(&self) -> bool {
        self.kind.namespaced()
    }
}

/// Every kind the lab serves.
pub const RESOURCES: &[Resource] = &[
    Resource {
        kind: Kind::Namespace,
        group: "",
        version: "v1",
        plural: "namespaces",
        singular: "namespace",
        short_names: &["ns"],
    },
    Resource {
        kind: Kind::Node,
        group: "",
        version: "v1",
        plural: "nodes",
        singular: "node",
        short_names: &["no"],
    },
    Resource {
        kind: Kind::Service,
        group: "",
        version: "v1",
        plural: "services",
        singular: "service",
        short_names: &["svc"],
    },
    Resource {
        kind: Kind::Endpoints,
        group: "",
        version: "v1",
        plural: "endpoints",
        singular: "endpoints",
        short_names: &["ep"],
    },
    Resource {
        kind: Kind::Pod,
        group: "",
        version: "v1",
        plural: "pods",
        singular: "pod",
        short_names: &["po"],
    },
    Resource {
        kind: Kind::Secret,
        group: "",
        version: "v1",
        plural: "secrets",
        singular: "secret",
        short_names: &[],
    },
    Resource {
        kind: Kind::ConfigMap,
        group: "",
        version: "v1",
        plural: "configmaps",
        singular: "configmap",
        short_names: &["cm"],
    },
    Resource {
        kind: Kind::EndpointSlice,
        group: "discovery.k8s.io",
        version: "v1",
        plural: "endpointslices",
        singular: "endpointslice",
        short_names: &[],
    },
    Resource {
        kind: Kind::Deployment,
        group: "apps",
        version: "v1",
        plural: "deployments",
        singular: "deployment",
        short_names: &["deploy"],
    },
    Resource {
        kind: Kind::ReplicaSet,
        group: "apps",
        version: "v1",
        plural: "replicasets",
        singular: "replicaset",
        short_names: &["rs"],
    },
    Resource {
        kind: Kind::Ingress,
        group: "networking.k8s.io",
        version: "v1",
        plural: "ingresses",
        singular: "ingress",
        short_names: &["ing"],
    },
    Resource {
        kind: Kind::IngressClass,
        group: "networking.k8s.io",
        version: "v1",
        plural: "ingressclasses",
        singular: "ingressclass",
        short_names: &[],
    },
];

/// The resource serving `kind`.
pub fn of_kind(kind: Kind) -> &'static Resource {
    RESOURCES
        .iter()
        .find(|r| r.kind == kind)
        .expect("every kind is served")
}

/// The API groups other than the core one, in discovery order.
pub fn groups() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for r in RESOURCES {
        if !r.group.is_empty() && !out.contains(&r.group) {
            out.push(r.group);
        }
    }
    out
}

/// What a request path names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `/version`
    Version,
    /// `/api`
    CoreVersions,
    /// `/apis`
    Groups,
    /// `/apis/GROUP`
    Group(String),
    /// `/api/v1`, `/apis/GROUP/VERSION`: the resource list.
    Resources { group: String, version: String },
    /// A collection (all namespaces when `namespace` is None) or one object.
    Object {
        resource: &'static Resource,
        namespace: Option<String>,
        name: Option<String>,
        /// `/status`
        status: bool,
    },
}

/// Parses a path; None for paths the API does not have (404).
pub fn parse_path(path: &str) -> Option<Target> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match parts.as_slice() {
        ["version"] => return Some(Target::Version),
        ["api"] => return Some(Target::CoreVersions),
        ["apis"] => return Some(Target::Groups),
        ["apis", g] => return groups().contains(g).then(|| Target::Group(g.to_string())),
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let find = |plural: &str| {
        RESOURCES
            .iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
    };
    let (resource, namespace, name, status) = match rest {
        [] => {
            return RESOURCES
                .iter()
                .any(|r| r.group == group && r.version == version)
                .then(|| Target::Resources {
                    group: group.into(),
                    version: version.into(),
                });
        }
        ["namespaces", ns, plural, tail @ ..] => {
            let r = find(plural)?;
            if !r.namespaced() {
                return None;
            }
            match tail {
                [] => (r, Some(*ns), None, false),
                [name] => (r, Some(*ns), Some(*name), false),
                [name, "status"] => (r, Some(*ns), Some(*name), true),
                _ => return None,
            }
        }
        [plural, tail @ ..] => {
            let r = find(plural)?;
            match tail {
                [] => (r, None, None, false),
                // A cluster-scoped object (`/api/v1/nodes/NAME`), or a
                // namespace itself (`/api/v1/namespaces/NAME`).
                [name] if !r.namespaced() => (r, None, Some(*name), false),
                [name, "status"] if !r.namespaced() => (r, None, Some(*name), true),
                _ => return None,
            }
        }
    };
    Some(Target::Object {
        resource,
        namespace: namespace.map(str::to_string),
        name: name.map(str::to_string),
        status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(path: &str) -> (Kind, Option<String>, Option<String>, bool) {
        match parse_path(path) {
            Some(Target::Object {
                resource,
                namespace,
                name,
                status,
            }) => (resource.kind, namespace, name, status),
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn paths_name_collections_objects_and_subresources_as_the_api_does() {
        assert_eq!(
            object("/api/v1/services"),
            (Kind::Service, None, None, false)
        );
        assert_eq!(
            object("/api/v1/namespaces/demo/services/web"),
            (
                Kind::Service,
                Some("demo".into()),
                Some("web".into()),
                false
            )
        );
        assert_eq!(
            object("/apis/discovery.k8s.io/v1/namespaces/demo/endpointslices"),
            (Kind::EndpointSlice, Some("demo".into()), None, false)
        );
        assert_eq!(
            object("/api/v1/nodes/node-1"),
            (Kind::Node, None, Some("node-1".into()), false)
        );
        assert_eq!(
            object("/api/v1/namespaces/demo"),
            (Kind::Namespace, None, Some("demo".into()), false)
        );
        assert_eq!(
            object("/apis/networking.k8s.io/v1/namespaces/a/ingresses/b/status"),
            (Kind::Ingress, Some("a".into()), Some("b".into()), true)
        );
        assert_eq!(parse_path("/api/v1/namespaces/a/nodes"), None);
        assert_eq!(parse_path("/apis/extensions/v1beta1/ingresses"), None);
        assert_eq!(parse_path("/api/v2/services"), None);
        assert_eq!(
            parse_path("/apis/networking.k8s.io/v1"),
            Some(Target::Resources {
                group: "networking.k8s.io".into(),
                version: "v1".into()
            })
        );
        assert_eq!(parse_path("/version"), Some(Target::Version));
    }

    #[test]
    fn every_model_kind_is_served_once() {
        for kind in Kind::ALL {
            assert_eq!(
                RESOURCES.iter().filter(|r| r.kind == *kind).count(),
                1,
                "{kind}"
            );
            assert_eq!(of_kind(*kind).group_version(), kind.api_version());
        }
    }
}
