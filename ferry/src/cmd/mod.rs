//! One module per subcommand.

pub mod agent;
pub mod apiserver;
pub mod bench;
pub mod cni;
pub mod dns;
pub mod echo;
pub mod ingress;
pub mod lab;
pub mod services;
pub mod trace;
pub mod validate;
