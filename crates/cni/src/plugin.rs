//! The six commands, each from a decoded config and the CNI_* call:
//! ADD (address from IPAM, then the wiring; on failure both undone), DEL
//! (idempotent: a missing namespace, interface or allocation is fine),
//! CHECK (the pod still has what ADD gave it), GC (frees allocations of
//! attachments the runtime no longer lists), STATUS (ready once the
//! node's subnet file can be read). Touches files and the kernel through
//! `ipam` and `link`.

use std::net::Ipv4Addr;
use std::path::Path;

use ferry_overlay::SubnetEnv;
use ipnet::Ipv4Net;
use serde_json::Value;

use crate::config::{Attachment, NetConf};
use crate::env::{Command, Invocation};
use crate::error::{CniError, Code};
use crate::ipam::Ipam;
use crate::link;
use crate::names;
use crate::range::Range;
use crate::result::{self, Attached};
use crate::version::Version;

/// Runs one command; `Some(json)` is what goes to stdout.
pub fn dispatch(inv: &Invocation, conf: &NetConf) -> Result<Option<Value>, CniError> {
    let needs = |v: Version, what: &str| {
        if conf.cni_version < v {
            Err(CniError::new(
                Code::IncompatibleVersion,
                format!(
                    "{what} needs cniVersion {} or later; the config says {}",
                    v.as_str(),
                    conf.cni_version.as_str()
                ),
            ))
        } else {
            Ok(())
        }
    };
    match inv.command {
        Command::Add => add(inv, conf).map(Some),
        Command::Del => del(inv, conf).map(|()| None),
        Command::Check => {
            needs(Version::V0_4_0, "CHECK")?;
            check(inv, conf).map(|()| None)
        }
        Command::Gc => {
            needs(Version::V1_1_0, "GC")?;
            gc(conf).map(|()| None)
        }
        Command::Status => {
            needs(Version::V1_1_0, "STATUS")?;
            status(conf).map(|()| None)
        }
        // Answered before the config is decoded.
        Command::Version => Ok(None),
    }
}

/// The node's subnet file; missing means flannel (or ferry's overlay)
/// has not written it yet: try again later (11).
pub fn read_subnet(path: &Path) -> Result<SubnetEnv, CniError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        let code = if e.kind() == std::io::ErrorKind::NotFound {
            Code::TryAgainLater
        } else {
            Code::Io
        };
        CniError::new(code, format!("subnet file {}: {e}", path.display()))
            .details("the overlay writes it once the node has a subnet lease")
    })?;
    SubnetEnv::parse(&text).ok_or_else(|| {
        CniError::new(
            Code::InvalidConfig,
            format!(
                "subnet file {}: FLANNEL_NETWORK, FLANNEL_SUBNET, FLANNEL_MTU and FLANNEL_IPMASQ must all be set and valid",
                path.display()
            ),
        )
    })
}

fn attachment(inv: &Invocation) -> Result<Attachment, CniError> {
    Ok(Attachment {
        container_id: inv
            .require("CNI_CONTAINERID", &inv.container_id)?
            .to_string(),
        ifname: inv.require("CNI_IFNAME", &inv.ifname)?.to_string(),
    })
}

fn add(inv: &Invocation, conf: &NetConf) -> Result<Value, CniError> {
    let who = attachment(inv)?;
    let netns = inv
        .netns
        .clone()
        .ok_or_else(|| CniError::new(Code::InvalidEnv, "CNI_NETNS must be set for ADD"))?;
    let subnet = read_subnet(&conf.subnet_file)?;
    let range = Range::new(subnet.subnet);
    let mtu = conf.mtu.unwrap_or(subnet.mtu);
    let netns_file = std::fs::File::open(&netns).map_err(|e| link::netns_error(&netns, e))?;
    let ifname = who.ifname.clone();
    if link::in_pod(&netns, async |h| link::describe(&h, &ifname).await)?.is_some() {
        return Err(CniError::new(
            Code::InterfaceExists,
            format!("interface {ifname} already exists in {}", netns.display()),
        ));
    }
    let mut requested: Vec<Ipv4Addr> = inv.requested_ip()?.into_iter().collect();
    requested.extend(&conf.requested_ips);
    let ipam = Ipam::lock(&conf.ipam_dir())?;
    let ip = ipam.allocate(&range, &who, &requested)?;
    let gateway = range.gateway();
    let address = Ipv4Net::new(ip, range.subnet.prefix_len())
        .map_err(|e| CniError::new(Code::InvalidConfig, format!("{ip}: {e}")))?;
    let routes = if conf.is_default_gateway {
        vec![Ipv4Net::default()]
    } else {
        vec![subnet.network]
    };
    let host = names::host_veth(&who.container_id, &who.ifname);
    let temp = names::pod_veth_temp(&who.container_id, &who.ifname);
    let wired = (|| {
        enable_forwarding()?;
        let gw_net = Ipv4Net::new(gateway, range.subnet.prefix_len())
            .map_err(|e| CniError::new(Code::InvalidConfig, format!("{gateway}: {e}")))?;
        let (bridge, host_iface) = link::with_handle(async |h| {
            let bridge = link::ensure_bridge(&h, &conf.bridge, gw_net).await?;
            link::make_veth(
                &h,
                &host,
                &temp,
                mtu,
                bridge,
                conf.hairpin_mode,
                &netns_file,
            )
            .await?;
            let bridge = link::describe(&h, &conf.bridge).await?;
            let host = link::describe(&h, &host).await?;
            Ok((bridge, host))
        })?;
        let pod = link::in_pod(&netns, async |h| {
            link::configure_pod(&h, &temp, &who.ifname, address, gateway, &routes).await
        })?;
        let missing = || CniError::new(Code::Kernel, "an interface vanished during ADD");
        Ok::<_, CniError>(Attached {
            bridge: bridge.ok_or_else(missing)?.0,
            host: host_iface.ok_or_else(missing)?.0,
            pod,
            sandbox: netns.display().to_string(),
            address,
            gateway,
            routes: routes.clone(),
        })
    })();
    match wired {
        Ok(attached) => Ok(attached.render(conf.cni_version, conf.prev_result.as_ref())),
        Err(e) => {
            // Undo: the address goes back, the veth (both ends) goes away.
            let _ = ipam.release(&who);
            let _ = link::with_handle(async |h| link::delete(&h, &host).await);
            Err(e)
        }
    }
}

/// Routing between pods and off the node needs forwarding in the node's
/// namespace, as the reference bridge plugin sets it with a gateway.
fn enable_forwarding() -> Result<(), CniError> {
    const PATH: &str = "/proc/sys/net/ipv4/ip_forward";
    match std::fs::read_to_string(PATH) {
        Ok(v) if v.trim() == "1" => Ok(()),
        _ => std::fs::write(PATH, "1")
            .map_err(|e| CniError::new(Code::Io, format!("enabling forwarding ({PATH}): {e}"))),
    }
}

fn del(inv: &Invocation, conf: &NetConf) -> Result<(), CniError> {
    let who = attachment(inv)?;
    let ipam = Ipam::lock(&conf.ipam_dir())?;
    ipam.release(&who)?;
    // The host end's name is known without any state; deleting it
    // deletes the pod's end too. Gone already (pod namespace removed) is fine.
    let host = names::host_veth(&who.container_id, &who.ifname);
    link::with_handle(async |h| link::delete(&h, &host).await)?;
    Ok(())
}

fn check(inv: &Invocation, conf: &NetConf) -> Result<(), CniError> {
    let who = attachment(inv)?;
    let netns = inv
        .netns
        .clone()
        .ok_or_else(|| CniError::new(Code::InvalidEnv, "CNI_NETNS must be set for CHECK"))?;
    let failed = |msg: String| CniError::new(Code::CheckFailed, msg);
    let prev = conf.prev_result.as_ref().ok_or_else(|| {
        CniError::new(
            Code::InvalidConfig,
            "CHECK needs prevResult (the ADD result)",
        )
    })?;
    let want = result::address_of(prev, &who.ifname).ok_or_else(|| {
        failed(format!(
            "prevResult has no address for {} in a sandbox",
            who.ifname
        ))
    })?;
    let subnet = read_subnet(&conf.subnet_file)?;
    let mtu = conf.mtu.unwrap_or(subnet.mtu);
    let ipam = Ipam::lock(&conf.ipam_dir())?;
    if ipam.find(&who)? != Some(want.addr()) {
        return Err(failed(format!(
            "{} is not allocated to container {} ({})",
            want.addr(),
            who.container_id,
            who.ifname
        )));
    }
    drop(ipam);
    let ifname = who.ifname.clone();
    let (iface, addrs) = link::in_pod(&netns, async |h| {
        let Some((iface, index, _)) = link::describe(&h, &ifname).await? else {
            return Ok((None, Vec::new()));
        };
        Ok((Some(iface), link::addresses(&h, index).await?))
    })?;
    let iface = iface.ok_or_else(|| {
        failed(format!(
            "interface {} is missing in {}",
            who.ifname,
            netns.display()
        ))
    })?;
    if !addrs.contains(&want) {
        return Err(failed(format!(
            "{} has lost its address {want} (has {addrs:?})",
            who.ifname
        )));
    }
    if iface.mtu != mtu {
        return Err(failed(format!(
            "{} has MTU {}, not {mtu}",
            who.ifname, iface.mtu
        )));
    }
    let host = names::host_veth(&who.container_id, &who.ifname);
    let (bridge, host_port) = link::with_handle(async |h| {
        Ok((
            link::describe(&h, &conf.bridge).await?,
            link::describe(&h, &host).await?,
        ))
    })?;
    match (bridge, host_port) {
        (Some((_, bridge_index, _)), Some((_, _, Some(on)))) if on == bridge_index => Ok(()),
        _ => Err(failed(format!(
            "{host} is not a port of bridge {}",
            conf.bridge
        ))),
    }
}

fn gc(conf: &NetConf) -> Result<(), CniError> {
    let valid = conf.valid_attachments.as_ref().ok_or_else(|| {
        CniError::new(Code::InvalidConfig, "GC needs `cni.dev/valid-attachments`")
    })?;
    let ipam = Ipam::lock(&conf.ipam_dir())?;
    let stale: Vec<Attachment> = ipam
        .allocations()?
        .into_iter()
        .map(|(_, a)| a)
        .filter(|a| !valid.contains(a))
        .collect();
    for who in &stale {
        ipam.release(who)?;
        let host = names::host_veth(&who.container_id, &who.ifname);
        link::with_handle(async |h| link::delete(&h, &host).await)?;
    }
    Ok(())
}

fn status(conf: &NetConf) -> Result<(), CniError> {
    read_subnet(&conf.subnet_file).map(|_| ()).map_err(|e| {
        CniError::new(Code::NotAvailable, format!("ferry is not ready: {}", e.msg))
            .details(e.details)
    })
}
