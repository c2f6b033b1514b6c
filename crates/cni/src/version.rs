//! The CNI versions ferry speaks, and which commands each allows (CHECK
//! from 0.4.0, GC and STATUS from 1.1.0). Pure.

use crate::error::{CniError, Code};

/// A CNI spec version ferry supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

/// Every version, oldest first (VERSION's `supportedVersions`).
pub const SUPPORTED: [Version; 5] = [
    Version::V0_3_0,
    Version::V0_3_1,
    Version::V0_4_0,
    Version::V1_0_0,
    Version::V1_1_0,
];

/// The newest, used when a request's version cannot be read.
pub const LATEST: Version = Version::V1_1_0;

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V0_3_0 => "0.3.0",
            Version::V0_3_1 => "0.3.1",
            Version::V0_4_0 => "0.4.0",
            Version::V1_0_0 => "1.0.0",
            Version::V1_1_0 => "1.1.0",
        }
    }

    /// `cniVersion` -> a supported version, or error code 1.
    pub fn parse(s: &str) -> Result<Version, CniError> {
        SUPPORTED
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| {
                CniError::new(
                    Code::IncompatibleVersion,
                    format!("cniVersion {s:?} is not supported"),
                )
                .details(format!("ferry supports {}", supported_list().join(", ")))
            })
    }

    /// Result `ips` entries carry `"version": "4"` before 1.0.0.
    pub fn ips_have_version(self) -> bool {
        self < Version::V1_0_0
    }

    /// Interfaces carry `mtu` from 1.1.0.
    pub fn interfaces_have_mtu(self) -> bool {
        self >= Version::V1_1_0
    }
}

pub fn supported_list() -> Vec<&'static str> {
    SUPPORTED.iter().map(|v| v.as_str()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_versions_parse_and_others_are_code_1() {
        for v in SUPPORTED {
            assert_eq!(Version::parse(v.as_str()), Ok(v));
        }
        for bad in ["0.2.0", "1.2.0", "", "v1.0.0"] {
            let e = Version::parse(bad).unwrap_err();
            assert_eq!(e.code, Code::IncompatibleVersion, "{bad}");
            assert!(e.details.contains("1.1.0"), "{e}");
        }
        assert!(Version::V0_4_0.ips_have_version());
        assert!(!Version::V1_0_0.ips_have_version());
        assert!(Version::V1_1_0.interfaces_have_mtu());
        assert!(!Version::V1_0_0.interfaces_have_mtu());
    }
}
