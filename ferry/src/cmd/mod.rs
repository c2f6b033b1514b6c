//! One module per subcommand.

pub mod agent;
pub mod bench;
pub mod bench_dns;
pub mod bench_lab;
pub mod bench_proxy;
pub mod dns;
pub mod echo;
pub mod lab;
pub mod services;
pub mod validate;
