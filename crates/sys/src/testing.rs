//! For tests of every crate: the one decision of whether a test that needs
//! root or a tool may skip. Under CI (`CI` set to anything but empty,
//! `0` or `false`) it may not: a missing requirement fails the test, so a
//! green CI run never hides a test that did not run.

/// Whether this is a CI run (then nothing skips).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Whether the process runs as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// True when the test can run as root; false with a note when it must
/// skip; panics under CI.
pub fn root_or_skip(what: &str) -> bool {
    let root = is_root();
    if !root {
        assert!(
            !in_ci(),
            "{what} need root (network namespaces); under CI they fail instead of skipping"
        );
        eprintln!("skipping: {what} need root");
    }
    root
}

/// True when `tool` is installed; false with a note when not; panics under CI.
pub fn have_or_skip(tool: &str) -> bool {
    let found = crate::find_in_path(tool).is_some();
    if !found {
        assert!(
            !in_ci(),
            "{tool} is missing (scripts/setup.sh installs it); under CI this fails instead of skipping"
        );
        eprintln!("skipping: {tool} is not installed (scripts/setup.sh installs it)");
    }
    found
}

#[cfg(test)]
mod tests {
    // Each nextest test runs in its own process: setting CI here touches
    // no other test.
    #[test]
    fn ci_means_set_and_not_zero_or_false() {
        for (value, ci) in [
            ("true", true),
            ("1", true),
            ("yes", true),
            ("", false),
            ("0", false),
            ("false", false),
        ] {
            // SAFETY: single-threaded at this point of this test process.
            unsafe { std::env::set_var("CI", value) };
            assert_eq!(super::in_ci(), ci, "CI={value:?}");
        }
        // SAFETY: as above.
        unsafe { std::env::remove_var("CI") };
        assert!(!super::in_ci());
    }
}
