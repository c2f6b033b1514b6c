//! Helpers shared by the proxy's kernel tests: whether they can run (root;
//! under CI=true they must, so they fail instead of skipping) and a scratch
//! network namespace removed even when a test fails.

#![allow(dead_code)]

use std::process::Command;

pub mod plans;

/// True when running as root; panics under CI when not.
pub fn root() -> bool {
    ferry_sys::testing::root_or_skip("the proxy's kernel tests")
}

/// A scratch network namespace, deleted on drop.
pub struct Ns(pub String);

impl Ns {
    pub fn new(name: &str) -> Ns {
        let _ = Command::new("ip").args(["netns", "del", name]).status();
        assert!(
            Command::new("ip")
                .args(["netns", "add", name])
                .status()
                .unwrap()
                .success()
        );
        Ns(name.into())
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}
