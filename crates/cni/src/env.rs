//! The CNI_* environment a runtime sets for each call: the command, the
//! container, its network namespace and interface name, CNI_ARGS and
//! CNI_PATH. Read from a map (the binary passes `std::env::vars()`), so
//! this is pure and tested without touching the process environment.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::error::{CniError, Code};

/// CNI_COMMAND.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Gc,
    Status,
}

impl Command {
    pub fn parse(s: &str) -> Result<Command, CniError> {
        Ok(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "GC" => Command::Gc,
            "STATUS" => Command::Status,
            other => {
                return Err(CniError::new(
                    Code::InvalidEnv,
                    format!(
                        "CNI_COMMAND {other:?} is not one of ADD, DEL, CHECK, VERSION, GC, STATUS"
                    ),
                ));
            }
        })
    }
}

/// One call's parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invocation {
    pub command: Command,
    pub container_id: Option<String>,
    /// A path such as `/run/netns/NAME` or `/proc/PID/ns/net`.
    pub netns: Option<PathBuf>,
    pub ifname: Option<String>,
    /// CNI_ARGS as key/value pairs, in order.
    pub args: Vec<(String, String)>,
    pub path: Vec<PathBuf>,
}

impl Invocation {
    /// Reads the CNI_* variables from `env`; CNI_COMMAND must be set.
    pub fn from_env(env: &BTreeMap<String, String>) -> Result<Invocation, CniError> {
        let get = |k: &str| env.get(k).filter(|v| !v.is_empty()).cloned();
        let command = Command::parse(
            &get("CNI_COMMAND")
                .ok_or_else(|| CniError::new(Code::InvalidEnv, "CNI_COMMAND is not set"))?,
        )?;
        let container_id = get("CNI_CONTAINERID");
        if let Some(id) = &container_id {
            check_container_id(id)?;
        }
        let args = match get("CNI_ARGS") {
            Some(a) => parse_args(&a)?,
            None => Vec::new(),
        };
        Ok(Invocation {
            command,
            container_id,
            netns: get("CNI_NETNS").map(PathBuf::from),
            ifname: get("CNI_IFNAME"),
            args,
            path: get("CNI_PATH")
                .map(|p| {
                    p.split(':')
                        .filter(|s| !s.is_empty())
                        .map(PathBuf::from)
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    /// A variable this command needs (error code 4 when it is missing).
    pub fn require<'a>(
        &self,
        what: &'static str,
        value: &'a Option<String>,
    ) -> Result<&'a str, CniError> {
        value.as_deref().ok_or_else(|| {
            CniError::new(
                Code::InvalidEnv,
                format!("{what} must be set for {:?}", self.command),
            )
        })
    }

    /// The address asked for with CNI_ARGS `IP=a.b.c.d` (the key as the
    /// reference plugins read it, any case).
    pub fn requested_ip(&self) -> Result<Option<Ipv4Addr>, CniError> {
        match self.args.iter().find(|(k, _)| k.eq_ignore_ascii_case("IP")) {
            None => Ok(None),
            Some((_, v)) => v.parse().map(Some).map_err(|_| {
                CniError::new(
                    Code::InvalidEnv,
                    format!("CNI_ARGS IP={v} is not an IPv4 address"),
                )
            }),
        }
    }
}

/// The spec's container ID syntax: a letter or digit, then letters,
/// digits, `_`, `.` and `-`.
fn check_container_id(id: &str) -> Result<(), CniError> {
    let mut chars = id.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(CniError::new(
            Code::InvalidEnv,
            format!(
                "CNI_CONTAINERID {id:?} is not a valid container ID (a letter or digit, then letters, digits, '_', '.', '-')"
            ),
        ))
    }
}

/// `K=V;K2=V2`.
fn parse_args(s: &str) -> Result<Vec<(String, String)>, CniError> {
    s.split(';')
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| {
                    CniError::new(
                        Code::InvalidEnv,
                        format!("CNI_ARGS part {p:?} is not KEY=VALUE"),
                    )
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn an_add_call_is_read_with_its_args_and_requested_ip() {
        let inv = Invocation::from_env(&env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc-1.x_y"),
            ("CNI_NETNS", "/run/netns/pod"),
            ("CNI_IFNAME", "eth0"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAME=web-0;IP=10.244.1.7",
            ),
            ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
        ]))
        .unwrap();
        assert_eq!(inv.command, Command::Add);
        assert_eq!(inv.netns, Some(PathBuf::from("/run/netns/pod")));
        assert_eq!(
            inv.requested_ip().unwrap(),
            Some(Ipv4Addr::new(10, 244, 1, 7))
        );
        assert_eq!(inv.path.len(), 2);
        assert_eq!(inv.args[1], ("K8S_POD_NAME".into(), "web-0".into()));
    }

    #[test]
    fn bad_environments_are_code_4_naming_the_variable() {
        for (pairs, names) in [
            (vec![], "CNI_COMMAND"),
            (vec![("CNI_COMMAND", "ATTACH")], "CNI_COMMAND"),
            (
                vec![("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "-x")],
                "CNI_CONTAINERID",
            ),
            (
                vec![("CNI_COMMAND", "ADD"), ("CNI_ARGS", "novalue")],
                "CNI_ARGS",
            ),
        ] {
            let e = Invocation::from_env(&env(&pairs)).unwrap_err();
            assert_eq!(e.code, Code::InvalidEnv);
            assert!(e.msg.contains(names), "{e}");
        }
        let inv = Invocation::from_env(&env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_ARGS", "IP=300.1.1.1"),
        ]))
        .unwrap();
        assert_eq!(inv.requested_ip().unwrap_err().code, Code::InvalidEnv);
        let e = inv.require("CNI_IFNAME", &inv.ifname).unwrap_err();
        assert!(e.msg.contains("CNI_IFNAME"), "{e}");
    }
}
