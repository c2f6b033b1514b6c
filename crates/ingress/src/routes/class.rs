//! Which Ingresses are ferry's: IngressClass selection as ingress-nginx
//! does it. An Ingress names its class with `spec.ingressClassName`, or
//! with the legacy `kubernetes.io/ingress.class` annotation when the field
//! is unset; an Ingress with neither belongs to the default IngressClass
//! (`ingressclass.kubernetes.io/is-default-class: "true"`), if ferry owns
//! one. ferry owns the IngressClasses whose `spec.controller` is one of its
//! controller values, and any class named in `extra_classes` (to take over
//! from ingress-nginx, which owns `nginx` with `k8s.io/ingress-nginx`,
//! whether or not that IngressClass object exists).
//!
//! Pure.

use std::collections::BTreeSet;

use ferry_model::k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use ferry_model::{ClusterState, Kind, Object};

/// ferry's controller value (IngressClass `spec.controller`).
pub const CONTROLLER: &str = "ferry.dev/ingress-controller";
/// The legacy class annotation, read when `spec.ingressClassName` is unset.
pub const CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
/// Marks the IngressClass that class-less Ingresses belong to.
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";

/// Which Ingresses ferry routes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassConfig {
    /// IngressClasses with these `spec.controller` values are ferry's.
    pub controllers: Vec<String>,
    /// Class names ferry owns besides (with or without an IngressClass).
    pub extra_classes: Vec<String>,
    /// Route Ingresses that name no class even when no owned class is the
    /// default (ingress-nginx's `--watch-ingress-without-class`).
    pub without_class: bool,
}

impl Default for ClassConfig {
    fn default() -> Self {
        ClassConfig {
            controllers: vec![CONTROLLER.to_string()],
            extra_classes: Vec::new(),
            without_class: false,
        }
    }
}

/// The class decision for one state (also what the lab's status writer
/// asks, so that it publishes status for exactly the Ingresses ferry routes).
pub struct Classes {
    owned: BTreeSet<String>,
    /// Class-less Ingresses are ours.
    classless: bool,
    /// The owned default IngressClass, the class of class-less Ingresses.
    default: Option<String>,
}

impl Classes {
    pub fn new(state: &ClusterState, config: &ClassConfig) -> Classes {
        let classes = state
            .objects_of(Kind::IngressClass)
            .filter_map(|o| match o {
                Object::IngressClass(class) => Some(&**class),
                _ => None,
            });
        Classes::of(classes, config)
    }

    /// The decision from the IngressClasses of a cluster.
    pub fn of<'a>(
        classes: impl IntoIterator<Item = &'a IngressClass>,
        config: &ClassConfig,
    ) -> Classes {
        let mut owned: BTreeSet<String> = config.extra_classes.iter().cloned().collect();
        let mut default = None;
        for class in classes {
            if owns(config, class)
                && let Some(name) = &class.metadata.name
            {
                owned.insert(name.clone());
                if is_default(class) {
                    default.get_or_insert_with(|| name.clone());
                }
            }
        }
        Classes {
            owned,
            classless: default.is_some() || config.without_class,
            default,
        }
    }

    /// The class of an Ingress ferry routes (the default class's name for
    /// a class-less one, "" when it is routed only by
    /// `without_class`); None: not ferry's.
    pub fn owned_class(&self, ingress: &Ingress) -> Option<String> {
        if !self.owns(ingress) {
            return None;
        }
        Some(
            class_of(ingress)
                .map(str::to_string)
                .or_else(|| self.default.clone())
                .unwrap_or_default(),
        )
    }

    /// The Ingress's class, and whether ferry routes it.
    pub fn owns(&self, ingress: &Ingress) -> bool {
        match class_of(ingress) {
            Some(class) => self.owned.contains(class),
            None => self.classless,
        }
    }
}

fn owns(config: &ClassConfig, class: &IngressClass) -> bool {
    class
        .spec
        .as_ref()
        .and_then(|s| s.controller.as_deref())
        .is_some_and(|c| config.controllers.iter().any(|mine| mine == c))
}

fn is_default(class: &IngressClass) -> bool {
    class
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
        .is_some_and(|v| v == "true")
}

/// `spec.ingressClassName`, else the legacy annotation; None: no class.
pub(crate) fn class_of(ingress: &Ingress) -> Option<&str> {
    ingress
        .spec
        .as_ref()
        .and_then(|s| s.ingress_class_name.as_deref())
        .or_else(|| {
            ingress
                .metadata
                .annotations
                .as_ref()?
                .get(CLASS_ANNOTATION)
                .map(String::as_str)
        })
        .filter(|c| !c.is_empty())
}
