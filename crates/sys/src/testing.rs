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

/// Renders `svg` to PNG with Debian's `rsvg-convert` (as a user's viewer
/// would) and returns the picture's width and height in pixels; panics
/// when it does not render. `None` (with a note) when `rsvg-convert` is
/// missing outside CI.
pub fn render_svg(svg: &str) -> Option<(u32, u32)> {
    if !have_or_skip("rsvg-convert") {
        return None;
    }
    let dir = std::env::temp_dir().join(format!(
        "ferry-render-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let (svg_path, png_path) = (dir.join("picture.svg"), dir.join("picture.png"));
    std::fs::write(&svg_path, svg).expect("writing the SVG");
    let out = std::process::Command::new("rsvg-convert")
        .arg(&svg_path)
        .arg("-o")
        .arg(&png_path)
        .output()
        .expect("running rsvg-convert");
    let png = std::fs::read(&png_path).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "rsvg-convert: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        png.get(1..4),
        Some(&b"PNG"[..]),
        "rsvg-convert wrote no PNG"
    );
    // Width and height from the IHDR chunk.
    let be = |r: std::ops::Range<usize>| u32::from_be_bytes(png[r].try_into().expect("IHDR"));
    Some((be(16..20), be(20..24)))
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
