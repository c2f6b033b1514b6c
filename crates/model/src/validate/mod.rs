//! Validation like the API server's, for every field ferry reads. An object
//! with any error is skipped as a whole (as `kubectl apply` would have it
//! rejected); the errors name the field path. [`ValidationOptions`] holds the
//! API server flags that change what it accepts.

mod config;
mod endpoints;
mod ingress;
pub(crate) mod names;
mod options;
mod service;
mod workload;

pub(crate) use workload::whole_pod_spec;

use std::collections::BTreeMap;

pub use options::{InvalidNodePortRange, NodePortRange, ValidationOptions};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::error::FieldError;
use crate::meta::Meta;
use crate::object::{Kind, Object};

/// Collects field errors under path prefixes.
#[derive(Default)]
pub(crate) struct Errors(Vec<FieldError>);

impl Errors {
    /// Records `message` at `path` when there is one.
    pub(crate) fn check(&mut self, path: impl AsRef<str>, message: Option<String>) {
        if let Some(message) = message {
            self.0.push(FieldError::new(path.as_ref(), message));
        }
    }

    pub(crate) fn push(&mut self, path: impl AsRef<str>, message: impl Into<String>) {
        self.0.push(FieldError::new(path.as_ref(), message));
    }

    pub(crate) fn check_result<T>(
        &mut self,
        path: impl AsRef<str>,
        r: Result<T, String>,
    ) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(message) => {
                self.push(path, message);
                None
            }
        }
    }

    pub(crate) fn protocol(&mut self, path: impl AsRef<str>, protocol: Option<&String>) {
        if let Some(p) = protocol {
            self.check(path, names::one_of(p, &["TCP", "UDP", "SCTP"]));
        }
    }

    pub(crate) fn labels(&mut self, path: &str, labels: Option<&BTreeMap<String, String>>) {
        self.label_pairs(
            path,
            (labels.into_iter().flatten()).map(|(k, v)| (k.as_str(), v.as_str())),
        );
    }

    pub(crate) fn label_pairs<'a>(
        &mut self,
        path: &str,
        labels: impl Iterator<Item = (&'a str, &'a str)>,
    ) {
        for (key, value) in labels {
            self.check(format!("{path}[{key}]"), names::qualified_name(key));
            self.check(format!("{path}[{key}]"), names::label_value(value));
        }
    }

    pub(crate) fn selector(&mut self, path: &str, selector: &LabelSelector) {
        self.labels(
            &format!("{path}.matchLabels"),
            selector.match_labels.as_ref(),
        );
        for (i, expr) in selector.match_expressions.iter().flatten().enumerate() {
            let p = format!("{path}.matchExpressions[{i}]");
            self.check(format!("{p}.key"), names::qualified_name(&expr.key));
            let op = expr.operator.as_str();
            self.check(
                format!("{p}.operator"),
                names::one_of(op, &["In", "NotIn", "Exists", "DoesNotExist"]),
            );
            let n = expr.values.as_ref().map_or(0, Vec::len);
            match op {
                "In" | "NotIn" if n == 0 => self.push(
                    format!("{p}.values"),
                    "must be specified when operator is In or NotIn",
                ),
                "Exists" | "DoesNotExist" if n > 0 => self.push(
                    format!("{p}.values"),
                    "may not be specified when operator is Exists or DoesNotExist",
                ),
                _ => {}
            }
            for (j, v) in expr.values.iter().flatten().enumerate() {
                self.check(format!("{p}.values[{j}]"), names::label_value(v));
            }
        }
    }
}

/// Validates one object as the API server would for the fields ferry uses,
/// with the API server's default flags. An empty result means the object is
/// accepted.
pub fn validate(object: &Object) -> Vec<FieldError> {
    validate_with(object, &ValidationOptions::default())
}

/// [`validate`] for an API server started with `options`.
pub fn validate_with(object: &Object, options: &ValidationOptions) -> Vec<FieldError> {
    let mut errs = Errors::default();
    metadata(&mut errs, object.kind(), object.metadata());
    match object {
        Object::Namespace(_) => {}
        Object::Node(o) => workload::node(&mut errs, o),
        Object::Service(o) => service::service(&mut errs, o, options),
        Object::EndpointSlice(o) => endpoints::endpoint_slice(&mut errs, o),
        Object::Endpoints(o) => endpoints::endpoints(&mut errs, o),
        Object::Pod(o) => workload::pod(&mut errs, o),
        Object::Deployment(o) => workload::deployment(&mut errs, o),
        Object::ReplicaSet(o) => workload::replica_set(&mut errs, o),
        Object::Ingress(o) => ingress::ingress(&mut errs, o),
        Object::IngressClass(o) => ingress::ingress_class(&mut errs, o),
        Object::Secret(o) => config::secret(&mut errs, o),
        Object::ConfigMap(o) => config::config_map(&mut errs, o),
    }
    errs.0
}

fn metadata(errs: &mut Errors, kind: Kind, meta: &dyn Meta) {
    match meta.name() {
        None | Some("") => errs.push("metadata.name", "Required value: name is required"),
        Some(name) => {
            let message = match kind {
                Kind::Namespace => names::dns1123_label(name),
                Kind::Service => names::dns1035_label(name),
                _ => names::dns1123_subdomain(name),
            };
            errs.check("metadata.name", message);
        }
    }
    if kind.namespaced()
        && let Some(ns) = meta.namespace()
    {
        errs.check("metadata.namespace", names::dns1123_label(ns));
    }
    // Set by the API server when deletion starts; a manifest written by a
    // controller (the lab's) may carry it, and readers do arithmetic on it.
    if let Some(g) = meta.deletion_grace_period_seconds() {
        errs.check("metadata.deletionGracePeriodSeconds", names::seconds(g));
    }
    errs.label_pairs("metadata.labels", meta.label_pairs());
    for key in meta.annotation_keys() {
        errs.check(
            format!("metadata.annotations[{key}]"),
            names::qualified_name(key),
        );
    }
}
