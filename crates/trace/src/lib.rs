//! `ferry trace FROM TO`: the path of one request, hop by hop (DNS, the
//! service proxy, routing on the node, the pod network, the reply), each
//! hop saying what decided it.
//!
//! Two halves, as the seed articles trace by hand:
//! - [`plan`] (pure): what ferry's model says must happen, from the
//!   cluster state, the lab's topology and the pod network's leases. It
//!   reuses `ferry_proxy::plan` (and the iptables rendering) rather than
//!   deciding anything again.
//! - [`kernel`] (I/O): what the kernel of each node holds for every hop
//!   (nft elements, `iptables-save`, route lookups, neighbours and FDB),
//!   compared with the model; a difference is a `Mismatch`.
//!
//! Output: [`text`] (one block per hop), JSON (the [`Trace`] type,
//! serialized), and [`picture`] (SVG through the small drawing module
//! [`draw`]). [`probe`] makes a real connection and reads its conntrack
//! entry. [`lab`] reads a running lab's files.

pub mod chart;
pub mod draw;
mod error;
pub mod iptables;
pub mod kernel;
pub mod lab;
mod nftrace;
pub mod picture;
pub mod plan;
pub mod probe;
pub mod resolve;
pub mod text;
mod trace;

pub use error::TraceError;
pub use trace::*;
