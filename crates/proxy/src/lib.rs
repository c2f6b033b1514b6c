//! The service proxy. [`plan`] turns the normalized service view and this
//! node's identity into what each ServicePort needs here (which addresses
//! capture which traffic, the endpoints each kind of traffic may use after
//! traffic policies and topology, masquerading, firewalls, what to do with
//! no endpoints). Backends (nftables, iptables) turn a plan into kernel
//! state; the plan knows nothing of them.

pub mod nft;
pub mod plan;
mod topology;

pub use plan::{
    Family, NodeContext, PlanChanges, PlannedEndpoint, ProxyPlan, ServicePlan, plan, plan_port,
};
