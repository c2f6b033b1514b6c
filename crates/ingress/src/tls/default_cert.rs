//! The self-signed default certificate, made once at start when no
//! `--ingress-default-cert` Secret is given: what ingress-nginx serves as
//! its "Kubernetes Ingress Controller Fake Certificate", here with ferry's
//! name, for handshakes whose SNI no Ingress lists.
//!
//! Pure CPU (key generation); no I/O.

use std::sync::Arc;

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

/// The subject common name of the self-signed certificate.
pub const FAKE_CERT_CN: &str = "Ferry Ingress Controller Fake Certificate";

#[derive(Debug, thiserror::Error)]
pub enum DefaultCertError {
    #[error("cannot make the self-signed default certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot load the self-signed default certificate: {0}")]
    Load(#[from] rustls::Error),
}

/// A new ECDSA P-256 key and a certificate for it, CN [`FAKE_CERT_CN`],
/// SAN `ingress.local` (as ingress-nginx's).
pub fn self_signed() -> Result<Arc<CertifiedKey>, DefaultCertError> {
    let mut params = CertificateParams::new(vec!["ingress.local".to_string()])?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Acme Co");
    dn.push(DnType::CommonName, FAKE_CERT_CN);
    params.distinguished_name = dn;
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let certified = CertifiedKey::from_der(
        vec![cert.der().clone()],
        der,
        &rustls::crypto::ring::default_provider(),
    )?;
    Ok(Arc::new(certified))
}
