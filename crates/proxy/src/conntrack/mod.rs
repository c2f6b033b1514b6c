//! UDP conntrack cleanup, as kube-proxy does it: UDP has no connection to
//! end, so a conntrack entry keeps sending a client's datagrams to an
//! endpoint that is gone (or, for a Service that had no endpoint, to the
//! rejecting rule) until it times out. After a sync, `stale` works out
//! which flows of the changed Services are stale (pure), and `Conntrack`
//! deletes exactly those over netlink: one dump and one batch of deletes
//! per sync, whatever the number of Services.

mod netlink;
mod stale;

pub use netlink::{Conntrack, ConntrackError};
pub use stale::{Flow, StaleFlows, reconcile, stale_flows};
