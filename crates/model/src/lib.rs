//! ferry's view of a Kubernetes cluster: the objects the data plane reads,
//! validated like the API server would, folded into a versioned
//! [`ClusterState`] with a normalized per-ServicePort view and exact
//! [`ChangeSet`]s between versions.
//!
//! Pure: no I/O, no clocks, no threads. Sources (files, the API server, the
//! lab) feed it; components (proxy, DNS, ingress, overlay) read it.

mod change;
mod endpoints;
mod error;
pub mod intern;
mod manifest;
pub mod meta;
mod node_ports;
mod object;
pub mod packing;
pub mod pod;
mod selector;
pub mod service;
pub mod slice;
mod state;
mod validate;
mod view;

pub use change::ChangeSet;
pub use endpoints::{SERVICE_NAME_LABEL, SKIP_MIRROR_LABEL};
pub use error::{FieldError, ManifestError, ObjectDesc};
pub use manifest::{Decoded, DecodedObject, decode, decode_with, documents};
pub use meta::{LabelSet, Labels, Meta};
pub use node_ports::{NodePortClaims, NodePortConflict};
pub use object::{Kind, Name, NamespacedName, Object, ObjectKey};
pub use pod::Pod;
pub use selector::{matches as selector_matches, service_selects};
pub use service::Service;
pub use slice::EndpointSlice;
pub use state::{ClusterState, Update};
pub use validate::{
    InvalidNodePortRange, NodePortRange, ValidationOptions, validate, validate_with,
};
pub use view::{
    DEFAULT_AFFINITY_TIMEOUT_SECONDS, Endpoint, EndpointAddress, IpFamily, PortSummary, Protocol,
    ServicePortName, ServicePortView, ServiceType, ServiceView, TargetPort, TrafficPolicy,
};

/// Re-exported so that users of the model name the same Kubernetes types.
pub use k8s_openapi;
