//! Names answered on the fly from the Service views instead of held in the
//! index, as CoreDNS answers them from its caches:
//!
//! - the endpoint names of Services with a ClusterIP,
//!   `<hostname or dashed IP>.<service>.<ns>.svc.<zone>`, which nothing in
//!   the index refers to (a headless Service's endpoint names stay in the
//!   index: its SRV answers carry them as additionals);
//! - reverse names (`d.c.b.a.in-addr.arpa`, `ip6.arpa`) of ClusterIPs and
//!   endpoint addresses, found through [`Owners`], which says which
//!   Services have an address.
//!
//! At 20,000 Services x 8 endpoints these were 340,000 of the index's
//! 380,000 names, each with its encoded answer and the parts it was made
//! from; `Owners` holds one small entry per address instead.
//!
//! Pure: no I/O.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use ferry_model::{ClusterState, NamespacedName, ServiceType, ServiceView};

use crate::contrib::Exposed;
use crate::names::{dashed, reverse};
use crate::wire::{Name, encode_name};

/// Each address some Service has (a ClusterIP or an endpoint address,
/// ready or not), with the Service.
/// The name is one shared copy per Service (32 B an entry, not 56: there
/// is an entry per endpoint address, 180,000 at 20,000 Services x 8).
pub(crate) type Owners = imbl::OrdSet<(IpAddr, Arc<NamespacedName>)>;

/// The addresses `svc` has: its ClusterIPs and every endpoint address.
pub(crate) fn addresses_of(svc: &ServiceView) -> impl Iterator<Item = IpAddr> + '_ {
    svc.cluster_ips
        .iter()
        .copied()
        .chain(svc.addresses.iter().map(|a| a.ip))
}

/// Records `svc`'s addresses in `owners` (`up`) or takes them out.
pub(crate) fn own(owners: &mut Owners, svc: &ServiceView, up: bool) {
    let name = Arc::new(svc.name.clone());
    for ip in addresses_of(svc) {
        let key = (ip, name.clone());
        if up {
            owners.insert(key);
        } else {
            owners.remove(&key);
        }
    }
}

/// The label an address answers to: its hostname, else its dashed IP.
fn label_of(hostname: Option<&str>, ip: IpAddr) -> String {
    hostname.map_or_else(|| dashed(ip), str::to_ascii_lowercase)
}

/// A Service whose names are served: its namespace exposed, not an
/// ExternalName (which has no endpoint or reverse names).
fn served<'s>(
    state: &'s ClusterState,
    exposed: &Exposed,
    name: &NamespacedName,
) -> Option<&'s ServiceView> {
    let svc = state.service(name)?;
    (svc.service_type != ServiceType::ExternalName
        && exposed.contains(svc.name.namespace.as_bytes()))
    .then_some(&**svc)
}

/// The addresses of the endpoint name made of `[label, service,
/// namespace]` (then `svc` and a zone) of a Service with a ClusterIP: each
/// ready endpoint (every endpoint with `publishNotReadyAddresses`) whose
/// hostname, or dashed IP when it has none, is the label. Empty when the
/// name is not one.
pub(crate) fn endpoint_addresses(
    state: &ClusterState,
    exposed: &Exposed,
    [label, service, namespace]: [&[u8]; 3],
) -> Vec<IpAddr> {
    let (Ok(service), Ok(namespace)) =
        (std::str::from_utf8(service), std::str::from_utf8(namespace))
    else {
        return Vec::new();
    };
    let key = NamespacedName::new(namespace, service);
    let Some(svc) = served(state, exposed, &key).filter(|s| !s.headless) else {
        return Vec::new();
    };
    svc.addresses
        .iter()
        .filter(|a| a.ready || svc.publish_not_ready_addresses)
        .filter(|a| label_of(a.hostname(), a.ip).as_bytes() == label)
        .map(|a| a.ip)
        .collect()
}

/// The address a reverse name stands for, when it is exactly the name
/// [`reverse`] gives it (lowercase, no leading zeros, all 32 nibbles).
pub(crate) fn reverse_address(name: &Name) -> Option<IpAddr> {
    let n = name.label_count();
    if n < 2 || name.label(n - 1) != b"arpa" {
        return None;
    }
    let ip = match name.label(n - 2) {
        b"in-addr" if n == 6 => {
            let mut octets = [0u8; 4];
            for (i, o) in octets.iter_mut().enumerate() {
                *o = std::str::from_utf8(name.label(3 - i)).ok()?.parse().ok()?;
            }
            IpAddr::V4(Ipv4Addr::from(octets))
        }
        b"ip6" if n == 34 => {
            let mut bits = 0u128;
            for i in (0..32).rev() {
                let [nibble] = name.label(i) else {
                    return None;
                };
                bits = bits << 4 | u128::from((*nibble as char).to_digit(16)?);
            }
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        _ => return None,
    };
    (encode_name(&reverse(ip))?.as_slice() == name.wire()).then_some(ip)
}

/// The PTR targets of `ip` (wire form, in the zone `zone`, sorted, each
/// once): `<service>.<ns>.svc` for a ClusterIP, the endpoint name for an
/// endpoint address that is ready (or published not ready). Empty when
/// no served Service has the address.
pub(crate) fn reverse_targets(
    state: &ClusterState,
    exposed: &Exposed,
    owners: &Owners,
    ip: IpAddr,
    zone: &str,
) -> Vec<Vec<u8>> {
    // The smallest name, made once: a reverse query allocates nothing here.
    static FIRST: std::sync::LazyLock<Arc<NamespacedName>> =
        std::sync::LazyLock::new(|| Arc::new(NamespacedName::new("", "")));
    let from = (ip, FIRST.clone());
    let mut out = Vec::new();
    for (_, name) in owners.range(from..).take_while(|(owned, _)| *owned == ip) {
        let Some(svc) = served(state, exposed, name) else {
            continue;
        };
        let fqdn = format!("{}.{}.svc.{zone}", svc.name.name, svc.name.namespace);
        if svc.cluster_ips.contains(&ip)
            && let Some(w) = encode_name(&fqdn)
        {
            out.push(w);
        }
        if let Ok(i) = svc.addresses.binary_search_by(|a| a.ip.cmp(&ip)) {
            let a = &svc.addresses[i];
            if (a.ready || svc.publish_not_ready_addresses)
                && let Some(w) = encode_name(&format!("{}.{fqdn}", label_of(a.hostname(), a.ip)))
            {
                out.push(w);
            }
        }
    }
    out.sort();
    out.dedup();
    out
}
