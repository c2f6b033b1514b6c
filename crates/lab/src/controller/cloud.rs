//! The cloud load balancer's part of the lab: the outside client reaches
//! each LoadBalancer IP over ECMP routes through the nodes a cloud load
//! balancer would pick, following health-check node ports it asks from
//! the outside namespace.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_model::Object;

use super::{Controller, Event};
use crate::probe::{self};
use crate::{LabError, net};

/// Health-check node ports to ask, and their last answers.
#[derive(Default)]
pub(super) struct LbChecks {
    pub(super) targets: Mutex<Vec<(Ipv4Addr, u16)>>,
    pub(super) healthy: Mutex<BTreeMap<(Ipv4Addr, u16), bool>>,
    pub(super) stop: AtomicBool,
}

/// Asks every health-check node port twice a second, as a cloud load balancer would.
pub(super) fn lb_checker(checks: Arc<LbChecks>, wake: Sender<Event>) {
    while !checks.stop.load(Ordering::Relaxed) {
        let targets = checks.targets.lock().map(|t| t.clone()).unwrap_or_default();
        let mut changed = false;
        for (ip, port) in targets {
            let ok = probe::http_status(IpAddr::V4(ip), port, "/", Duration::from_millis(300))
                == Some(200);
            if let Ok(mut h) = checks.healthy.lock()
                && h.insert((ip, port), ok) != Some(ok)
            {
                changed = true;
            }
        }
        if changed && wake.send(Event::Probed).is_err() {
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

impl Controller {
    /// Plays the cloud load balancer: the outside client reaches each
    /// LoadBalancer IP through the nodes a load balancer would pick (every
    /// node for `externalTrafficPolicy: Cluster`; for `Local`, the nodes
    /// whose health-check node port answers 200), as ECMP routes.
    pub(super) fn route_load_balancers(&mut self) -> Result<(), LabError> {
        let mut want: BTreeMap<IpAddr, Vec<Ipv4Addr>> = BTreeMap::new();
        let mut targets: Vec<(Ipv4Addr, u16)> = Vec::new();
        for o in self.inputs.values() {
            let Object::Service(_) = o else { continue };
            let key = o.key().name;
            let Some(ip) = self.allocations.get(&key).and_then(|a| a.lb_ip) else {
                continue;
            };
            let health_port = self
                .allocations
                .get(&key)
                .and_then(|a| a.health_check_node_port);
            let healthy = self
                .lb_checks
                .healthy
                .lock()
                .map(|h| h.clone())
                .unwrap_or_default();
            let hops: Vec<Ipv4Addr> = self
                .nodes
                .iter()
                .filter(|n| match health_port {
                    // externalTrafficPolicy Local: the nodes whose health-check node port says 200.
                    Some(port) => healthy.get(&(n.ip, port)).copied().unwrap_or(false),
                    None => true,
                })
                .map(|n| n.ip)
                .collect();
            if let Some(port) = health_port {
                targets.extend(self.nodes.iter().map(|n| (n.ip, port)));
            }
            want.insert(ip, hops);
        }
        if let Ok(mut t) = self.lb_checks.targets.lock() {
            *t = targets;
        }
        if want == self.lb_routes {
            return Ok(());
        }
        let mut commands = String::new();
        for ip in self.lb_routes.keys().filter(|ip| !want.contains_key(*ip)) {
            commands.push_str(&format!("route del {ip}/32\n"));
        }
        for (ip, hops) in &want {
            if self.lb_routes.get(ip) == Some(hops) {
                continue;
            }
            match hops.as_slice() {
                [] => commands.push_str(&format!("route replace blackhole {ip}/32\n")),
                [one] => commands.push_str(&format!("route replace {ip}/32 via {one} dev eth0\n")),
                many => {
                    let nh: Vec<String> = many
                        .iter()
                        .map(|h| format!("nexthop via {h} dev eth0"))
                        .collect();
                    commands.push_str(&format!("route replace {ip}/32 {}\n", nh.join(" ")));
                }
            }
        }
        net::batch(&self.names.outside_ns(), &commands)?;
        self.lb_routes = want;
        Ok(())
    }
}
