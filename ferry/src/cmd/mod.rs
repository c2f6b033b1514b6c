//! One module per subcommand.

pub mod bench;
pub mod services;
pub mod validate;
