//! What is kept of an object the API server sends: the k8s-openapi type
//! as decoded, without `metadata.managedFields` (the server's field
//! ownership bookkeeping, often the largest part of an object) and
//! without the annotations no component reads (above all kubectl's
//! `last-applied-configuration`, a second copy of the whole object).
//!
//! Pure.

use std::sync::Arc;

use ferry_model::Object;
use ferry_model::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Annotation keys (or key prefixes, ending in `/`) some component reads;
/// every other annotation is dropped before the object is stored. Today
/// the overlay reads flannel's Node annotations; the two ingress-class
/// annotations are read by the ingress work that comes next.
pub const READ_ANNOTATIONS: &[&str] = &[
    "flannel.alpha.coreos.com/",
    "kubernetes.io/ingress.class",
    "ingressclass.kubernetes.io/is-default-class",
];

fn is_read(key: &str) -> bool {
    READ_ANNOTATIONS.iter().any(|r| {
        if r.ends_with('/') {
            key.starts_with(r)
        } else {
            key == *r
        }
    })
}

/// Drops what no component reads from `meta`.
pub fn strip_meta(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.retain(|k, _| is_read(k));
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
}

/// A Kubernetes type the API source watches, and how it becomes an [`Object`].
pub trait Watched:
    kube::Resource<DynamicType = ()>
    + Clone
    + std::fmt::Debug
    + serde::de::DeserializeOwned
    + Send
    + Sync
    + 'static
{
    fn into_object(self) -> Object;
}

macro_rules! watched {
    ($($kind:ident => $ty:ty;)*) => {
        $(impl Watched for $ty {
            fn into_object(mut self) -> Object {
                strip_meta(&mut self.metadata);
                Object::$kind(Arc::new(self))
            }
        })*
    };
}

use ferry_model::k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Secret};
use ferry_model::k8s_openapi::api::networking::v1::{Ingress, IngressClass};

/// The kinds the model keeps slim (Pods, Services, EndpointSlices), as the API
/// source asks for them and decodes them: straight into the model's slim
/// fields (the rest of the object, such as a Pod's containers, is skipped
/// by the decoder, never held). kube's watcher needs Kubernetes' own
/// `ObjectMeta`; it becomes the model's slim metadata as each event is
/// taken in.
macro_rules! slim {
    ($( $api:ident => $kind:ident, $group:literal, $version:literal, $plural:literal,
        { $($field:ident: $ty:ty),* }; )*) => {
        $(
        #[derive(Clone, Debug, serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        pub struct $api {
            #[serde(default)]
            metadata: ObjectMeta,
            $($field: $ty,)*
        }

        impl kube::Resource for $api {
            type DynamicType = ();
            type Scope = kube::core::NamespaceResourceScope;

            fn kind(_: &()) -> std::borrow::Cow<'_, str> {
                stringify!($kind).into()
            }
            fn group(_: &()) -> std::borrow::Cow<'_, str> {
                $group.into()
            }
            fn version(_: &()) -> std::borrow::Cow<'_, str> {
                $version.into()
            }
            fn plural(_: &()) -> std::borrow::Cow<'_, str> {
                $plural.into()
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }

        impl Watched for $api {
            fn into_object(self) -> Object {
                Object::$kind(Arc::new(ferry_model::$kind {
                    metadata: self.metadata.into(),
                    $($field: self.$field,)*
                }))
            }
        }
        )*
    };
}

slim! {
    ApiPod => Pod, "", "v1", "pods", {
        spec: Option<ferry_model::pod::PodSpec>,
        status: Option<ferry_model::pod::PodStatus>
    };
    ApiService => Service, "", "v1", "services", {
        spec: Option<ferry_model::service::ServiceSpec>,
        status: Option<ferry_model::service::ServiceStatus>
    };
    ApiEndpointSlice => EndpointSlice, "discovery.k8s.io", "v1", "endpointslices", {
        address_type: String,
        endpoints: Option<Vec<ferry_model::slice::Endpoint>>,
        ports: Option<Vec<ferry_model::slice::EndpointPort>>
    };
}

watched! {
    Namespace => Namespace;
    Node => Node;
    Ingress => Ingress;
    IngressClass => IngressClass;
    Secret => Secret;
    ConfigMap => ConfigMap;
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn managed_fields_and_unread_annotations_are_dropped() {
        let mut meta = ObjectMeta {
            managed_fields: Some(vec![Default::default()]),
            annotations: Some(BTreeMap::from([
                (
                    "kubectl.kubernetes.io/last-applied-configuration".to_string(),
                    "{}".to_string(),
                ),
                (
                    "flannel.alpha.coreos.com/public-ip".to_string(),
                    "10.0.0.1".to_string(),
                ),
            ])),
            ..Default::default()
        };
        strip_meta(&mut meta);
        assert_eq!(meta.managed_fields, None);
        let kept: Vec<&String> = meta.annotations.iter().flat_map(|a| a.keys()).collect();
        assert_eq!(kept, ["flannel.alpha.coreos.com/public-ip"]);

        let mut only_unread = ObjectMeta {
            annotations: Some(BTreeMap::from([("a/b".to_string(), "c".to_string())])),
            ..Default::default()
        };
        strip_meta(&mut only_unread);
        assert_eq!(
            only_unread.annotations, None,
            "an empty map is no map, as in a manifest"
        );
    }
}
