//! Kernel and process plumbing, in one place: which external programs
//! ferry starts (and which Debian package installs each), running one with
//! stdin, a deadline and its stderr kept, and the per-namespace lock that
//! keeps a node to one agent. Nothing here knows what the programs do.

mod lock;
mod process;
pub mod testing;
mod tools;

pub use lock::{LockError, NodeLock};
pub use process::{Tool, ToolError, ToolOutput};
pub use tools::{MissingProgram, PROGRAMS, Program, find_in_path, package_of, require};
