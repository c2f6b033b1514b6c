//! The API server flags that change what validation accepts, with the API
//! server's defaults.

use std::fmt;
use std::str::FromStr;

/// How the API server this manifest set stands in for was started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ValidationOptions {
    /// kube-apiserver's `--service-node-port-range`: where nodePorts and
    /// healthCheckNodePorts may be.
    pub service_node_port_range: NodePortRange,
}

/// An inclusive range of node ports, written as kube-apiserver takes it:
/// `30000-32767`, `30000+2767` or a single port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodePortRange {
    first: u16,
    last: u16,
}

impl Default for NodePortRange {
    /// 30000-32767, kube-apiserver's default.
    fn default() -> Self {
        Self {
            first: 30000,
            last: 32767,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid node port range {text:?}: {reason}")]
pub struct InvalidNodePortRange {
    pub text: String,
    pub reason: &'static str,
}

impl NodePortRange {
    /// `first..=last`; port 0 and an empty range are errors.
    pub fn new(first: u16, last: u16) -> Result<Self, InvalidNodePortRange> {
        let invalid = |reason| InvalidNodePortRange {
            text: format!("{first}-{last}"),
            reason,
        };
        if first == 0 {
            return Err(invalid("ports start at 1"));
        }
        if last < first {
            return Err(invalid("the last port is before the first"));
        }
        Ok(Self { first, last })
    }

    pub fn first(self) -> u16 {
        self.first
    }

    pub fn last(self) -> u16 {
        self.last
    }

    /// Takes any integer a manifest holds, so callers never narrow first.
    pub fn contains(self, port: i64) -> bool {
        (i64::from(self.first)..=i64::from(self.last)).contains(&port)
    }
}

impl fmt::Display for NodePortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl FromStr for NodePortRange {
    type Err = InvalidNodePortRange;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |reason| InvalidNodePortRange {
            text: s.to_string(),
            reason,
        };
        let number = |t: &str| {
            t.trim()
                .parse::<u16>()
                .map_err(|_| invalid("not a port number (1-65535)"))
        };
        let range = if let Some((a, b)) = s.split_once('-') {
            Self::new(number(a)?, number(b)?)
        } else if let Some((a, n)) = s.split_once('+') {
            let first = number(a)?;
            let last = first
                .checked_add(number(n)?)
                .ok_or_else(|| invalid("the range ends past 65535"))?;
            Self::new(first, last)
        } else {
            let port = number(s)?;
            Self::new(port, port)
        };
        range.map_err(|e| invalid(e.reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_port_ranges_are_read_as_kube_apiserver_writes_them() {
        let r: NodePortRange = "30000-32767".parse().unwrap();
        assert_eq!(r, NodePortRange::default());
        assert_eq!("30000+2767".parse::<NodePortRange>().unwrap(), r);
        assert_eq!(
            "8080".parse::<NodePortRange>().unwrap().to_string(),
            "8080-8080"
        );
        assert!("32767-30000".parse::<NodePortRange>().is_err());
        assert!("0-10".parse::<NodePortRange>().is_err());
        assert!("65000+1000".parse::<NodePortRange>().is_err());
        assert!("30000-70000".parse::<NodePortRange>().is_err());
        assert!(r.contains(30000) && r.contains(32767));
        assert!(!r.contains(80) && !r.contains(i64::MAX) && !r.contains(i64::MIN));
    }
}
