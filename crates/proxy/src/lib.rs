//! The service proxy. [`plan`] turns the normalized service view and this
//! node's identity into what each ServicePort needs here (which addresses
//! capture which traffic, the endpoints each kind of traffic may use after
//! traffic policies and topology, masquerading, firewalls, what to do with
//! no endpoints). Backends (nftables, iptables) turn a plan into kernel
//! state; the plan knows nothing of them.

pub mod component;
pub mod conntrack;
pub mod iptables;
pub mod nft;
pub mod plan;
mod topology;

use std::time::Duration;

use ferry_model::ServicePortName;
use ipnet::IpNet;

pub use plan::{
    Family, NodeContext, PlanChanges, PlannedEndpoint, ProxyPlan, ServicePlan, node_pod_cidrs,
    node_zone, plan, plan_port,
};

/// What one sync did.
#[derive(Clone, Copy, Debug, Default)]
pub struct SyncStats {
    pub full: bool,
    pub added: usize,
    pub deleted: usize,
    pub took: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(transparent)]
    Nft(#[from] nft::NftError),
    #[error(transparent)]
    Iptables(#[from] iptables::IptablesError),
}

/// A way of putting a proxy plan into the kernel.
pub trait Backend: Send {
    /// `nftables` or `iptables`, as `--proxy-mode` names it.
    fn mode(&self) -> &'static str;
    /// Programs the whole plan, replacing what this backend had before.
    fn full_sync(
        &mut self,
        plan: &ProxyPlan,
        cluster_cidrs: &[IpNet],
    ) -> Result<SyncStats, BackendError>;
    /// Programs what changed for the named ServicePorts.
    fn sync(
        &mut self,
        plan: &ProxyPlan,
        changed: &[ServicePortName],
        cluster_cidrs: &[IpNet],
    ) -> Result<SyncStats, BackendError>;
    /// Whether the kernel still holds what this backend loaded last
    /// (nobody deleted or flushed it).
    fn intact(&mut self) -> bool;
    /// How often [`Backend::intact`] is worth asking.
    fn check_period(&self) -> Duration;
    /// Whether a periodic full sync is due even though nothing changed
    /// (kube-proxy's iptables mode resyncs at least hourly).
    fn full_sync_due(&self) -> bool {
        false
    }
    /// Size of what is programmed: elements (nftables) or rules (iptables).
    fn size(&self) -> usize;
}
