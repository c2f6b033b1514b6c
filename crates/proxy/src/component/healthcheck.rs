//! Health-check node ports, as kube-proxy serves them for LoadBalancer
//! Services with `externalTrafficPolicy: Local`: a cloud load balancer asks
//! each node, and sends traffic only to nodes that answer 200 (they have a
//! local endpoint); the others answer 503.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::ProxyPlan;
use ferry_httpd::{Peer, Request, StatusCode, respond};
use tokio::task::JoinHandle;

/// Port -> (namespace/name, local endpoints).
pub(crate) type Wanted = Arc<Mutex<BTreeMap<u16, (String, String, usize)>>>;

/// What the health-check ports should report, from a plan.
pub(crate) fn wanted_from(plan: &ProxyPlan) -> BTreeMap<u16, (String, String, usize)> {
    plan.services
        .values()
        .filter_map(|p| {
            let port = p.health_check_node_port?;
            Some((
                port,
                (
                    p.name.namespace.to_string(),
                    p.name.name.to_string(),
                    p.local_endpoints,
                ),
            ))
        })
        .collect()
}

/// Keeps one listener per wanted port, every 100 ms. A port that cannot
/// be bound (another program has it) is retried with a growing delay, up
/// to a minute, and logged once until it binds.
pub(crate) async fn run(
    wanted: Wanted,
    health: std::sync::Arc<super::health::SyncHealth>,
    health_timeout: Duration,
) {
    let mut running: BTreeMap<u16, JoinHandle<()>> = BTreeMap::new();
    let mut failing: BTreeMap<u16, (std::time::Instant, Duration)> = BTreeMap::new();
    loop {
        let ports: Vec<u16> = wanted
            .lock()
            .map(|w| w.keys().copied().collect())
            .unwrap_or_default();
        running.retain(|port, task| {
            let keep = ports.contains(port);
            if !keep {
                task.abort();
            }
            keep
        });
        failing.retain(|port, _| ports.contains(port));
        for port in ports {
            if running.contains_key(&port)
                || failing
                    .get(&port)
                    .is_some_and(|(next, _)| std::time::Instant::now() < *next)
            {
                continue;
            }
            let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
            match tokio::net::TcpListener::bind(addr).await {
                Ok(listener) => {
                    if failing.remove(&port).is_some() {
                        tracing::info!(%port, "serving the health-check node port now");
                    }
                    let w = wanted.clone();
                    let health = health.clone();
                    let task = tokio::spawn(ferry_httpd::serve(
                        listener,
                        move |_req: Request<_>, _peer: Peer| {
                            let entry = w.lock().ok().and_then(|m| m.get(&port).cloned());
                            let proxy_healthy = health.verdict(health_timeout).healthy;
                            async move {
                                let Some((namespace, name, local)) = entry else {
                                    return respond(
                                        StatusCode::NOT_FOUND,
                                        "text/plain",
                                        "no such service\n",
                                    );
                                };
                                let body = serde_json::json!({
                                    "service": {"namespace": namespace, "name": name},
                                    "localEndpoints": local,
                                    "serviceProxyHealthy": proxy_healthy,
                                });
                                // As kube-proxy: traffic only to a node with a
                                // local endpoint and a healthy proxy.
                                let status = if local > 0 && proxy_healthy {
                                    StatusCode::OK
                                } else {
                                    StatusCode::SERVICE_UNAVAILABLE
                                };
                                respond(status, "application/json", format!("{body}\n"))
                            }
                        },
                    ));
                    running.insert(port, task);
                }
                Err(e) => {
                    let delay = match failing.get(&port) {
                        None => {
                            tracing::warn!(%port, error = %e, "cannot serve the health-check node port; retrying with back-off (logged once)");
                            Duration::from_secs(1)
                        }
                        Some((_, d)) => (*d * 2).min(Duration::from_secs(60)),
                    };
                    failing.insert(port, (std::time::Instant::now() + delay, delay));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
