//! The programs ferry starts, read from the TOOLS block of
//! `scripts/setup.sh` (the same list
//! `scripts/setup.sh` installs), and the start-up check that names the
//! Debian package of a missing one. Pure apart from looking at `PATH`.

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

/// One external program and the Debian package that installs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Program {
    pub name: String,
    pub package: String,
    /// Who starts it: `agent`, `lab`, `bench`, `tests`, `lab-pods`.
    pub used_by: Vec<String>,
}

const SETUP: &str = include_str!("../../../scripts/setup.sh");

/// Every program ferry starts, in the order of setup.sh's TOOLS block.
pub static PROGRAMS: LazyLock<Vec<Program>> = LazyLock::new(|| parse(tools_block(SETUP)));

/// The lines between `<<'TOOLS'` and the closing `TOOLS`.
fn tools_block(setup: &str) -> &str {
    let Some(start) = setup.find("<<'TOOLS'\n") else {
        return "";
    };
    let body = &setup[start + "<<'TOOLS'\n".len()..];
    let end = body.find("\nTOOLS\n").unwrap_or(body.len());
    &body[..end]
}

fn parse(text: &str) -> Vec<Program> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let mut cols = l.split_whitespace();
            let name = cols.next()?.to_string();
            let package = cols.next()?.to_string();
            Some(Program {
                name,
                package,
                used_by: cols.map(str::to_string).collect(),
            })
        })
        .collect()
}

/// The Debian package of `program`, if ferry knows it.
pub fn package_of(program: &str) -> Option<&'static str> {
    PROGRAMS
        .iter()
        .find(|p| p.name == program)
        .map(|p| p.package.as_str())
}

/// A program ferry needs that is not installed.
#[derive(Debug, thiserror::Error)]
#[error(
    "{program} is not installed (not found in PATH); install the Debian package {package} (apt-get install {package}), or run scripts/setup.sh"
)]
pub struct MissingProgram {
    pub program: String,
    pub package: String,
}

/// Where `program` is in `PATH` (or the path itself, if it has a slash).
pub fn find_in_path(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return is_executable(Path::new(program)).then(|| PathBuf::from(program));
    }
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Checks that every program in `programs` is installed; the first missing
/// one is named with its package.
pub fn require<'a>(programs: impl IntoIterator<Item = &'a str>) -> Result<(), MissingProgram> {
    for program in programs {
        if find_in_path(program).is_none() {
            return Err(MissingProgram {
                program: program.to_string(),
                package: package_of(program).unwrap_or("(unknown)").to_string(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_names_a_package_for_every_program() {
        assert!(PROGRAMS.len() > 10);
        assert_eq!(package_of("iptables-restore"), Some("iptables"));
        assert_eq!(package_of("nft"), Some("nftables"));
        assert_eq!(package_of("conntrack"), Some("conntrack"));
        assert_eq!(package_of("no-such-tool"), None);
    }

    #[test]
    fn a_missing_program_is_named_with_its_package() {
        let e = require(["sh", "iptables-nonexistent-xyz"]).unwrap_err();
        assert_eq!(e.program, "iptables-nonexistent-xyz");
        assert!(e.to_string().contains("not installed"), "{e}");
        let e = MissingProgram {
            program: "iptables-restore".into(),
            package: package_of("iptables-restore").unwrap().into(),
        };
        assert!(e.to_string().contains("apt-get install iptables"), "{e}");
    }
}
