//! Which UDP flows a change made stale. Pure.
//!
//! Only flows addressed to the Service itself (a ClusterIP, external or
//! load-balancer IP on the Service's port, or the NodePort on this node's
//! addresses) are touched; a client talking to a pod directly, or to the
//! same port number of another host, keeps its flow.

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::plan::{PlannedEndpoint, ServicePlan};

/// What to delete for one ServicePort.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StaleFlows {
    /// The Service's own addresses and port (original destination).
    pub service: BTreeSet<(IpAddr, u16)>,
    /// The NodePort (original destination port on any of this node's
    /// addresses).
    pub node_port: Option<u16>,
    /// Flows DNATed to these endpoints (reply source) are stale: the
    /// endpoints are gone.
    pub gone_endpoints: BTreeSet<(IpAddr, u16)>,
    /// The Service had no endpoint before: every flow to it was rejected
    /// and never DNATed, so all of them go.
    pub all: bool,
    /// After a full sync: every flow to the Service whose reply does not
    /// come from one of these endpoints goes (it was DNATed to an endpoint
    /// that is gone, or rejected before there was one).
    pub keep_only: Option<BTreeSet<(IpAddr, u16)>>,
}

/// One UDP conntrack entry, as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flow {
    pub orig_src: (IpAddr, u16),
    pub orig_dst: (IpAddr, u16),
    /// Where replies come from: the endpoint when the flow was DNATed.
    pub reply_src: (IpAddr, u16),
    pub id: Option<u32>,
    pub zone: Option<u16>,
}

impl StaleFlows {
    pub fn is_empty(&self) -> bool {
        !self.all && self.gone_endpoints.is_empty() && self.keep_only.is_none()
    }

    /// Whether `flow` is one of these; `local` says whether an address is
    /// this node's (a NodePort flow is addressed to one).
    pub fn matches(&self, flow: &Flow, local: &dyn Fn(&IpAddr) -> bool) -> bool {
        let to_service = self.service.contains(&flow.orig_dst)
            || (self.node_port == Some(flow.orig_dst.1) && local(&flow.orig_dst.0));
        to_service
            && (self.all
                || self.gone_endpoints.contains(&flow.reply_src)
                || self
                    .keep_only
                    .as_ref()
                    .is_some_and(|keep| !keep.contains(&flow.reply_src)))
    }
}

fn endpoints(p: Option<&ServicePlan>) -> BTreeSet<(IpAddr, u16)> {
    p.map(|p| {
        p.cluster_endpoints
            .iter()
            .chain(&p.external_endpoints)
            .map(|PlannedEndpoint { ip, port, .. }| (*ip, *port))
            .collect()
    })
    .unwrap_or_default()
}

/// The UDP flows the change from `before` to `after` of one ServicePort
/// made stale.
pub fn stale_flows(before: Option<&ServicePlan>, after: Option<&ServicePlan>) -> StaleFlows {
    let old = endpoints(before);
    let new = endpoints(after);
    if before.is_none() && after.is_none() {
        return StaleFlows::default();
    }
    let mut service = BTreeSet::new();
    let mut node_port = None;
    for p in [before, after].into_iter().flatten() {
        for ip in p
            .cluster_ips
            .iter()
            .chain(&p.external_ips)
            .chain(&p.load_balancer_ips)
        {
            service.insert((*ip, p.port));
        }
        node_port = node_port.or(p.node_port);
    }
    StaleFlows {
        service,
        node_port,
        gone_endpoints: old.difference(&new).copied().collect(),
        all: old.is_empty() && !new.is_empty(),
        keep_only: None,
    }
}

/// After a full sync (at start, after a failure, when out of step), what
/// came before is not known: every UDP flow to a Service that does not go
/// to one of its current endpoints is stale, as kube-proxy reconciles.
pub fn reconcile(plan: &ServicePlan) -> StaleFlows {
    StaleFlows {
        keep_only: Some(endpoints(Some(plan))),
        ..stale_flows(None, Some(plan))
    }
    .without_history()
}

impl StaleFlows {
    fn without_history(mut self) -> Self {
        self.all = false;
        self.gone_endpoints.clear();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::PlannedEndpoint;

    fn plan(eps: &[&str]) -> ServicePlan {
        let e: Vec<PlannedEndpoint> = eps
            .iter()
            .map(|a| PlannedEndpoint {
                ip: a.parse().unwrap(),
                port: 5353,
                local: false,
            })
            .collect();
        ServicePlan {
            name: ferry_model::ServicePortName {
                namespace: "ns".into(),
                name: "dns".into(),
                port: "dns".into(),
                protocol: ferry_model::Protocol::Udp,
            },
            protocol: ferry_model::Protocol::Udp,
            port: 53,
            cluster_ips: vec!["10.96.0.10".parse().unwrap()],
            node_port: Some(30053),
            external_ips: vec![],
            load_balancer_ips: vec![],
            source_ranges: vec![],
            affinity_timeout: None,
            cluster_endpoints: e.clone(),
            external_endpoints: e,
            external_local: false,
            internal_local: false,
            cluster_policy_endpoints: vec![],
            health_check_node_port: None,
            local_endpoints: 0,
        }
    }

    #[test]
    fn a_replaced_endpoint_makes_only_its_own_flows_stale() {
        let s = stale_flows(
            Some(&plan(&["10.0.0.1", "10.0.0.2"])),
            Some(&plan(&["10.0.0.2", "10.0.0.3"])),
        );
        assert_eq!(
            s.gone_endpoints.into_iter().collect::<Vec<_>>(),
            [("10.0.0.1".parse().unwrap(), 5353)]
        );
        assert!(!s.all);
        assert_eq!(s.node_port, Some(30053));
        assert!(s.service.contains(&("10.96.0.10".parse().unwrap(), 53)));
    }

    #[test]
    fn only_flows_to_the_service_that_went_to_a_gone_endpoint_match() {
        let s = stale_flows(Some(&plan(&["10.0.0.1"])), Some(&plan(&["10.0.0.3"])));
        let ip = |a: &str| a.parse::<IpAddr>().unwrap();
        let flow = |dst: (&str, u16), reply: (&str, u16)| Flow {
            orig_src: (ip("10.0.9.9"), 40000),
            orig_dst: (ip(dst.0), dst.1),
            reply_src: (ip(reply.0), reply.1),
            id: None,
            zone: None,
        };
        let local = |a: &IpAddr| *a == ip("172.18.0.11");
        assert!(s.matches(&flow(("10.96.0.10", 53), ("10.0.0.1", 5353)), &local));
        assert!(s.matches(&flow(("172.18.0.11", 30053), ("10.0.0.1", 5353)), &local));
        // Straight to the pod, not through the Service.
        assert!(!s.matches(&flow(("10.0.0.1", 5353), ("10.0.0.1", 5353)), &local));
        // To the new endpoint.
        assert!(!s.matches(&flow(("10.96.0.10", 53), ("10.0.0.3", 5353)), &local));
        // The NodePort number on another host.
        assert!(!s.matches(&flow(("192.0.2.7", 30053), ("10.0.0.1", 5353)), &local));
    }

    #[test]
    fn a_full_sync_keeps_only_flows_to_current_endpoints() {
        let s = reconcile(&plan(&["10.0.0.2"]));
        let ip = |a: &str| a.parse::<IpAddr>().unwrap();
        let flow = |reply: &str| Flow {
            orig_src: (ip("10.0.9.9"), 40000),
            orig_dst: (ip("10.96.0.10"), 53),
            reply_src: (ip(reply), if reply == "10.96.0.10" { 53 } else { 5353 }),
            id: None,
            zone: None,
        };
        assert!(
            !s.matches(&flow("10.0.0.2"), &|_| false),
            "a current endpoint"
        );
        assert!(s.matches(&flow("10.0.0.1"), &|_| false), "a gone endpoint");
        assert!(s.matches(&flow("10.96.0.10"), &|_| false), "never DNATed");
    }

    #[test]
    fn a_service_getting_its_first_endpoint_drops_every_flow_to_it() {
        let s = stale_flows(Some(&plan(&[])), Some(&plan(&["10.0.0.3"])));
        assert!(s.all);
        let s = stale_flows(Some(&plan(&["10.0.0.3"])), Some(&plan(&["10.0.0.3"])));
        assert!(s.is_empty());
    }
}
