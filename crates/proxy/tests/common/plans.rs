//! Plans of a few Services of every shape (ClusterIP, NodePort, load
//! balancers with shared IPs and source ranges, session affinity, Local
//! policy, no endpoints), for the kernel property tests.

use std::net::IpAddr;
use std::sync::Arc;

use ferry_model::{Protocol, ServicePortName};
use ferry_proxy::{PlannedEndpoint, ProxyPlan, ServicePlan};
use proptest::prelude::*;

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

prop_compose! {
    pub fn service(i: usize)(
        proto in 0..2u8,
        eps in proptest::collection::btree_set(0..6u8, 0..4),
        local_eps in proptest::collection::btree_set(0..6u8, 0..3),
        node_port in proptest::option::of(30000..30004u16),
        lb in any::<bool>(),
        shared_lb in any::<bool>(),
        affinity in proptest::option::of(proptest::sample::select(vec![600u32, 10800])),
        external_local in any::<bool>(),
        ranges in any::<bool>(),
    ) -> ServicePlan {
        let endpoint = |e: &u8| PlannedEndpoint { ip: ip(&format!("10.244.{}.{}", e % 2, 10 + e)), port: 8080, local: e.is_multiple_of(2) };
        let cluster_endpoints: Vec<PlannedEndpoint> = eps.iter().map(endpoint).collect();
        let external_endpoints: Vec<PlannedEndpoint> = if external_local { local_eps.iter().filter(|e| e.is_multiple_of(2)).map(endpoint).collect() } else { cluster_endpoints.clone() };
        let protocol = if proto == 0 { Protocol::Tcp } else { Protocol::Udp };
        ServicePlan {
            name: ServicePortName { namespace: "ns".into(), name: format!("s{i}").into(), port: "".into(), protocol },
            protocol,
            // Load-balancer IPs may be shared between Services (on different
            // ports), as load-balancer IP sharing does.
            port: 80 + i as u16,
            cluster_ips: vec![ip(&format!("172.16.0.{}", 10 + i))],
            node_port: node_port.map(|p| p + 10 * i as u16),
            external_ips: Vec::new(),
            load_balancer_ips: if lb { vec![ip(&format!("172.19.0.{}", if shared_lb { 1 } else { 1 + i }))] } else { Vec::new() },
            source_ranges: if lb && ranges { vec!["203.0.113.0/24".parse().unwrap()] } else { Vec::new() },
            affinity_timeout: affinity,
            local_endpoints: external_endpoints.iter().filter(|e| e.local).count(),
            cluster_endpoints,
            external_endpoints,
            external_local,
            internal_local: false,
            cluster_policy_endpoints: Vec::new(),
            health_check_node_port: None,
        }
    }
}

/// The same plan with IPv6 addresses (for the `ip6 ferry` table).
pub fn to_v6(plan: &ProxyPlan) -> ProxyPlan {
    let v6 = |ip: &IpAddr| -> IpAddr {
        let IpAddr::V4(v4) = ip else { return *ip };
        let o = v4.octets();
        IpAddr::V6(std::net::Ipv6Addr::new(
            0xfd00,
            u16::from(o[0]),
            u16::from(o[1]),
            0,
            0,
            0,
            u16::from(o[2]),
            u16::from(o[3]),
        ))
    };
    let mut out = ProxyPlan::default();
    for (name, p) in &plan.services {
        let mut p = (**p).clone();
        p.cluster_ips = p.cluster_ips.iter().map(v6).collect();
        p.load_balancer_ips = p.load_balancer_ips.iter().map(v6).collect();
        p.external_ips = p.external_ips.iter().map(v6).collect();
        p.source_ranges = p
            .source_ranges
            .iter()
            .map(|_| "2001:db8::/64".parse().unwrap())
            .collect();
        for e in p
            .cluster_endpoints
            .iter_mut()
            .chain(p.external_endpoints.iter_mut())
        {
            e.ip = v6(&e.ip);
        }
        out.services.insert(name.clone(), Arc::new(p));
    }
    out
}

pub fn plan_strategy() -> impl Strategy<Value = ProxyPlan> {
    (
        proptest::collection::vec(any::<bool>(), 4),
        service(0),
        service(1),
        service(2),
        service(3),
    )
        .prop_map(|(present, a, b, c, d)| {
            let mut plan = ProxyPlan::default();
            for (keep, s) in present.into_iter().zip([a, b, c, d]) {
                if keep {
                    plan.services.insert(s.name.clone(), Arc::new(s));
                }
            }
            plan
        })
}
