//! The CNI error object (`{cniVersion, code, msg, details}`) and the
//! spec's error codes: what the runtime reads on stdout when the plugin
//! exits non-zero. Pure.

use serde_json::json;

/// The well-known error codes of the CNI spec (1-99), and ferry's own
/// (100 and up, as the spec reserves them for plugins).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    IncompatibleVersion = 1,
    UnsupportedField = 2,
    UnknownContainer = 3,
    InvalidEnv = 4,
    Io = 5,
    Decode = 6,
    InvalidConfig = 7,
    TryAgainLater = 11,
    NotAvailable = 50,
    LimitedAvailability = 51,
    /// The node's subnet has no free address left.
    RangeExhausted = 100,
    /// A netlink request failed (the kernel's answer is in `msg`).
    Kernel = 101,
    /// The interface CNI_IFNAME already exists in the pod.
    InterfaceExists = 102,
    /// CHECK found the pod's network not as ADD left it.
    CheckFailed = 103,
}

/// A failed command, as the runtime will read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CniError {
    pub code: Code,
    pub msg: String,
    pub details: String,
}

impl std::fmt::Display for CniError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)?;
        if !self.details.is_empty() {
            write!(f, ": {}", self.details)?;
        }
        Ok(())
    }
}

impl std::error::Error for CniError {}

impl CniError {
    pub fn new(code: Code, msg: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn details(mut self, details: impl Into<String>) -> CniError {
        self.details = details.into();
        self
    }

    /// The error object, in the version the request asked for (the
    /// newest when it could not be read).
    pub fn to_json(&self, cni_version: &str) -> serde_json::Value {
        json!({
            "cniVersion": cni_version,
            "code": self.code as u32,
            "msg": self.msg,
            "details": self.details,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_object_carries_the_spec_code_and_both_texts() {
        let e = CniError::new(Code::Decode, "cannot decode the network config")
            .details("field `mtu`: invalid type");
        let v = e.to_json("1.0.0");
        assert_eq!(v["code"], 6);
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["msg"], "cannot decode the network config");
        assert_eq!(v["details"], "field `mtu`: invalid type");
        assert_eq!(
            e.to_string(),
            "cannot decode the network config: field `mtu`: invalid type"
        );
    }
}
