//! One IP family's proxier: keeps the proxy plan in step with each new
//! cluster state (replanning only the ServicePorts a change set names),
//! hands the differences to the backend of the proxy mode (nftables or
//! iptables), cleans stale UDP flows, and keeps the health-check node
//! ports' view of local endpoints.

use std::sync::Arc;
use std::time::Instant;

use crate::{Backend, Family, NodeContext, ProxyPlan, plan};
use ferry_source::Snapshot;
use ipnet::IpNet;

use super::metrics::ProxyMetrics as Metrics;

pub(crate) struct Proxy {
    node: String,
    fixed_cidrs: Vec<IpNet>,
    ctx: Option<NodeContext>,
    plan: ProxyPlan,
    backend: Box<dyn Backend>,
    version: Option<u64>,
    metrics: Arc<Metrics>,
    /// When the first change not yet programmed arrived (for network programming latency).
    pending_since: Option<Instant>,
    /// Only the IPv4 proxy serves health-check node ports (on 0.0.0.0).
    health_ports: Option<super::healthcheck::Wanted>,
    family: Family,
    /// Opened at the first UDP cleanup.
    conntrack: Option<crate::conntrack::Conntrack>,
    /// ServicePorts over nftables mode's endpoint limit (logged once each).
    over_limit: std::collections::BTreeSet<ferry_model::ServicePortName>,
}

impl Proxy {
    pub(crate) fn new(
        backend: Box<dyn Backend>,
        family: Family,
        node: &str,
        fixed_cidrs: Vec<IpNet>,
        metrics: Arc<Metrics>,
        health_ports: Option<super::healthcheck::Wanted>,
    ) -> Self {
        Proxy {
            node: node.to_string(),
            fixed_cidrs,
            ctx: None,
            plan: ProxyPlan::default(),
            backend,
            family,
            version: None,
            metrics,
            pending_since: None,
            health_ports,
            over_limit: Default::default(),
            conntrack: None,
        }
    }

    /// Programs `snapshot`; the error of a sync that failed (and whose
    /// full reload failed too) is returned, and the change stays pending.
    pub(crate) fn on_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), String> {
        let arrived = Instant::now();
        let ctx = NodeContext {
            node_name: self.node.clone(),
            zone: crate::plan::node_zone(&snapshot.state, &self.node),
            family: self.family,
        };
        let cidrs = if self.fixed_cidrs.is_empty() {
            crate::plan::node_pod_cidrs(&snapshot.state)
        } else {
            self.fixed_cidrs.clone()
        };
        let in_step = self.version == Some(snapshot.changes.from_version)
            && self.ctx.as_ref().is_some_and(|c| c.zone == ctx.zone);
        let mut changed_names: Vec<ferry_model::ServicePortName> = Vec::new();
        let mut udp_before: Vec<(
            ferry_model::ServicePortName,
            Option<Arc<crate::ServicePlan>>,
        )> = Vec::new();
        let result = if in_step {
            for name in snapshot
                .changes
                .service_ports
                .union(&snapshot.changes.endpoints)
            {
                if name.protocol == ferry_model::Protocol::Udp {
                    udp_before.push((name.clone(), self.plan.services.get(name).cloned()));
                }
            }
            let changed = self.plan.update(&snapshot.state, &snapshot.changes, &ctx);
            changed_names.clone_from(&changed.changed);
            self.backend.sync(&self.plan, &changed.changed, &cidrs)
        } else {
            self.plan = plan(&snapshot.state, &ctx);
            self.backend.full_sync(&self.plan, &cidrs)
        };
        let full = !in_step || result.as_ref().map_or(true, |s| s.full);
        match result {
            Ok(stats) => {
                self.version = Some(snapshot.state.version());
                self.metrics
                    .proxy_synced(&stats, self.pending_since.take().unwrap_or(arrived));
                let stale: Vec<crate::conntrack::StaleFlows> = if in_step {
                    udp_before
                        .iter()
                        .map(|(name, before)| {
                            crate::conntrack::stale_flows(
                                before.as_deref(),
                                self.plan.services.get(name).map(AsRef::as_ref),
                            )
                        })
                        .filter(|s| !s.is_empty())
                        .collect()
                } else {
                    self.reconcile_udp()
                };
                self.clean_conntrack(&stale);
                if stats.full || stats.added + stats.deleted > 0 {
                    tracing::info!(
                        full = stats.full,
                        added = stats.added,
                        deleted = stats.deleted,
                        size = self.backend.size(),
                        mode = self.backend.mode(),
                        took_ms = stats.took.as_secs_f64() * 1000.0,
                        "proxy rules synced"
                    );
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "proxy sync failed; reloading the whole table");
                self.metrics.proxy_failed(self.backend.mode());
                self.plan = plan(&snapshot.state, &ctx);
                match self.backend.full_sync(&self.plan, &cidrs) {
                    Ok(stats) => {
                        self.version = Some(snapshot.state.version());
                        self.metrics
                            .proxy_synced(&stats, self.pending_since.take().unwrap_or(arrived));
                        let stale = self.reconcile_udp();
                        self.clean_conntrack(&stale);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "full reload failed too; retrying at the next check or change");
                        self.version = None;
                        self.pending_since.get_or_insert(arrived);
                        self.ctx = Some(ctx);
                        return Err(format!("{} sync failed: {e}", self.backend.mode()));
                    }
                }
            }
        }
        self.note_endpoint_limit(&changed_names, full);
        self.update_health_ports(changed_names, full);
        self.ctx = Some(ctx);
        Ok(())
    }

    /// After a full sync: every UDP Service's flows that do not go to a
    /// current endpoint.
    fn reconcile_udp(&self) -> Vec<crate::conntrack::StaleFlows> {
        self.plan
            .services
            .values()
            .filter(|p| p.protocol == ferry_model::Protocol::Udp)
            .map(|p| crate::conntrack::reconcile(p))
            .collect()
    }

    /// Deletes the stale UDP flows of this sync: one dump and one batch.
    fn clean_conntrack(&mut self, stale: &[crate::conntrack::StaleFlows]) {
        if stale.is_empty() {
            return;
        }
        if self.conntrack.is_none() {
            match crate::conntrack::Conntrack::open(self.family) {
                Ok(c) => self.conntrack = Some(c),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot open conntrack; stale UDP flows stay until they time out");
                    return;
                }
            }
        }
        let Some(ct) = self.conntrack.as_mut() else {
            return;
        };
        let local = ferry_sys::local_addresses();
        match ct.clean(stale, &|a| local.contains(a)) {
            Ok(n) => tracing::debug!(
                deleted = n,
                services = stale.len(),
                "stale UDP flows deleted"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "conntrack cleanup failed; stale UDP flows stay until they time out");
                self.conntrack = None;
            }
        }
    }

    /// nftables mode numbers a ServicePort's endpoints in 12 bits of the
    /// slot mark: beyond 4,095 the rest get no traffic. Said in the log
    /// (once, when a ServicePort crosses the limit) and in a gauge.
    fn note_endpoint_limit(&mut self, changed: &[ferry_model::ServicePortName], full: bool) {
        if self.backend.mode() != "nftables" {
            return;
        }
        let limit = crate::nft::ruleset::MAX_ENDPOINTS as usize;
        let over = |p: &crate::ServicePlan| {
            p.cluster_endpoints.len().max(p.external_endpoints.len()) > limit
        };
        let names: Vec<ferry_model::ServicePortName> = if full {
            self.over_limit.clear();
            self.plan.services.keys().cloned().collect()
        } else {
            changed.to_vec()
        };
        for name in names {
            match self.plan.services.get(&name) {
                Some(p) if over(p) => {
                    if self.over_limit.insert(name.clone()) {
                        tracing::warn!(
                            service_port = %name,
                            endpoints = p.cluster_endpoints.len().max(p.external_endpoints.len()),
                            limit,
                            "more endpoints than nftables mode uses: only the first {limit} (the plan's order) get traffic"
                        );
                    }
                }
                _ => {
                    self.over_limit.remove(&name);
                }
            }
        }
        let family = match self.family {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        };
        self.metrics
            .endpoints_over_limit
            .get_or_create(&vec![("ip_family".into(), family.into())])
            .set(self.over_limit.len() as i64);
    }

    pub(crate) fn check_period(&self) -> std::time::Duration {
        self.backend.check_period()
    }

    /// Reloads the whole ruleset if someone else deleted or flushed it.
    pub(crate) fn check_table(&mut self, snapshot: &Snapshot) -> Result<(), String> {
        tracing::debug!(version = ?self.version, mode = self.backend.mode(), "checking the rules");
        if self.version.is_none() {
            // The last full sync failed (and no change came since): retry.
            tracing::warn!(
                mode = self.backend.mode(),
                "retrying the full sync that failed"
            );
            return self.on_snapshot(snapshot);
        }
        if self.backend.full_sync_due() {
            tracing::info!(mode = self.backend.mode(), "periodic full sync");
            self.version = None;
            return self.on_snapshot(snapshot);
        }
        if self.backend.intact() {
            return Ok(());
        }
        tracing::warn!(
            mode = self.backend.mode(),
            "ferry's rules were changed from outside; reloading them whole"
        );
        self.version = None;
        self.on_snapshot(snapshot)
    }

    /// Keeps the health-check node ports in step: only the changed
    /// ServicePorts are looked at, except after a full reload.
    fn update_health_ports(&mut self, changed: Vec<ferry_model::ServicePortName>, full: bool) {
        let Some(ports) = &self.health_ports else {
            return;
        };
        let Ok(mut wanted) = ports.lock() else {
            return;
        };
        if full {
            *wanted = super::healthcheck::wanted_from(&self.plan);
            return;
        }
        for name in changed {
            wanted.retain(|_, (ns, n, _)| !(**ns == *name.namespace && **n == *name.name));
            if let Some(p) = self.plan.services.get(&name)
                && let Some(port) = p.health_check_node_port
            {
                wanted.insert(
                    port,
                    (
                        p.name.namespace.to_string(),
                        p.name.name.to_string(),
                        p.local_endpoints,
                    ),
                );
            }
        }
    }
}
