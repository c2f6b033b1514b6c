//! Where a change's time goes inside ferry, measured in-process on the
//! same manifests `ferry ingress` reads: the source (re-reading the one new
//! file into a new state and its change set), the route table followed
//! through that change set (what `ferry ingress` does), the same table
//! built whole (what it did before), and the certificate table. Median of
//! `changes` new Ingresses per size.
//!
//! Touches files in the scratch directory.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use ferry_ingress::{CertTable, RouteIndex, RouteTable, RoutesConfig, TlsConfig};
use ferry_source::ManifestSource;

use super::servers;
use crate::stats::median;

/// Milliseconds per phase (medians).
pub(super) struct Phases {
    pub source: f64,
    pub followed: f64,
    pub whole: f64,
    pub certs: f64,
}

pub(super) fn measure(
    dir: &Path,
    backends: &[u16],
    hosts: &[String],
    changes: usize,
) -> anyhow::Result<Phases> {
    let manifests = dir.join("phases");
    let _ = std::fs::remove_dir_all(&manifests);
    std::fs::create_dir_all(&manifests)?;
    std::fs::write(
        manifests.join("service.yaml"),
        servers::service_manifest(backends),
    )?;
    std::fs::write(
        manifests.join("ingresses.yaml"),
        servers::ingress_manifest(hosts, "ing"),
    )?;
    let (mut source, first) = ManifestSource::open(std::slice::from_ref(&manifests), false)
        .context("reading the phase manifests")?;
    let config = RoutesConfig::default();
    let mut index = RouteIndex::new(config.clone());
    let self_signed = ferry_ingress::tls::self_signed()?;
    let routes = index.apply(&first.state, None);
    let mut certs = CertTable::build(
        &first.state,
        &routes,
        &TlsConfig::default(),
        &self_signed,
        &CertTable::with_default(self_signed.clone()),
    );
    let (mut s, mut f, mut w, mut c) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1000.0;
    for i in 0..changes.max(1) {
        let name = format!("new-{i}");
        let path = manifests.join(format!("{name}.yaml"));
        let host = format!("new-{i}.example.test");
        std::fs::write(
            &path,
            servers::ingress_manifest(std::slice::from_ref(&host), &name),
        )?;
        let t = Instant::now();
        let snapshot = source.refresh(std::slice::from_ref(&path));
        s.push(ms(t));
        let t = Instant::now();
        let followed = index.apply(&snapshot.state, Some(&snapshot.changes));
        f.push(ms(t));
        let t = Instant::now();
        let whole = RouteTable::build(&snapshot.state, &config);
        w.push(ms(t));
        let t = Instant::now();
        certs = CertTable::build(
            &snapshot.state,
            &followed,
            &TlsConfig::default(),
            &self_signed,
            &certs,
        );
        c.push(ms(t));
        anyhow::ensure!(
            followed.lookup(&host, "/").is_some() && whole.lookup(&host, "/").is_some(),
            "{host} is not routed after its change"
        );
    }
    Ok(Phases {
        source: median(&mut s),
        followed: median(&mut f),
        whole: median(&mut w),
        certs: median(&mut c),
    })
}
