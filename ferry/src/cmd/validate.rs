//! `ferry validate PATH...`: every error listed, or a one-line summary.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use ferry_source::ManifestSource;

#[derive(clap::Args)]
pub struct Args {
    /// Manifest files or directories.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Also read subdirectories.
    #[arg(short = 'R', long)]
    recursive: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (source, snap) =
        ManifestSource::open(&args.paths, args.recursive).context("cannot read manifests")?;
    for e in &snap.errors {
        println!("{e}");
    }
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for o in snap.state.objects() {
        *kinds.entry(o.kind().to_string()).or_default() += 1;
    }
    let mut skipped: BTreeMap<&str, usize> = BTreeMap::new();
    let skipped_objects = source.skipped();
    for s in &skipped_objects {
        *skipped.entry(s.kind.as_str()).or_default() += 1;
    }
    let list = |m: &mut dyn Iterator<Item = (String, usize)>| {
        m.map(|(k, n)| format!("{n} {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let valid = if kinds.is_empty() {
        "none".to_string()
    } else {
        list(&mut kinds.into_iter())
    };
    let skipped_text = if skipped.is_empty() {
        String::new()
    } else {
        format!(
            "; skipped (not used by the data plane): {}",
            list(&mut skipped.into_iter().map(|(k, n)| (k.to_string(), n)))
        )
    };
    if snap.errors.is_empty() {
        println!(
            "ok: {} objects valid ({valid}){skipped_text}",
            snap.state.len()
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "{} error(s); {} objects valid ({valid}){skipped_text}",
            snap.errors.len(),
            snap.state.len()
        );
        Ok(ExitCode::FAILURE)
    }
}
