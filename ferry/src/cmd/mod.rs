//! One module per subcommand.

pub mod agent;
pub mod bench;
pub mod dns;
pub mod echo;
pub mod ingress;
pub mod lab;
pub mod services;
pub mod validate;
