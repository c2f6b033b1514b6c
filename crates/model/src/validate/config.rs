//! Secret and ConfigMap validation: data keys, and the keys a TLS Secret needs.

use k8s_openapi::api::core::v1::{ConfigMap, Secret};

use super::{Errors, names};

pub(super) fn secret(errs: &mut Errors, secret: &Secret) {
    let mut keys: Vec<&String> = secret.data.iter().flat_map(|d| d.keys()).collect();
    keys.extend(secret.string_data.iter().flat_map(|d| d.keys()));
    for key in &keys {
        errs.check(format!("data[{key}]"), names::config_key(key));
    }
    if secret.type_.as_deref() == Some("kubernetes.io/tls") {
        for needed in ["tls.crt", "tls.key"] {
            if !keys.iter().any(|k| k.as_str() == needed) {
                errs.push(
                    format!("data[{needed}]"),
                    "Required value: a kubernetes.io/tls Secret needs tls.crt and tls.key",
                );
            }
        }
    }
}

pub(super) fn config_map(errs: &mut Errors, cm: &ConfigMap) {
    for key in cm.data.iter().flat_map(|d| d.keys()) {
        errs.check(format!("data[{key}]"), names::config_key(key));
        if cm.binary_data.as_ref().is_some_and(|b| b.contains_key(key)) {
            errs.push(
                format!("data[{key}]"),
                "Duplicate value: also in binaryData",
            );
        }
    }
    for key in cm.binary_data.iter().flat_map(|d| d.keys()) {
        errs.check(format!("binaryData[{key}]"), names::config_key(key));
    }
}
