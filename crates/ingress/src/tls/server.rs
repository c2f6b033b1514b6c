//! The rustls server configuration of the HTTPS listeners: TLS 1.2 and 1.3
//! only (rustls has nothing older), the ring provider, ALPN `h2` then
//! `http/1.1`, and a certificate resolver that loads the certificate table
//! swapped in last at every handshake, so a changed Secret reaches new
//! connections without touching the ones already open.
//!
//! No I/O of its own: the proxy runs the handshakes on its sockets.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::CertTable;

#[derive(Debug)]
struct BySni(Arc<ArcSwap<CertTable>>);

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.load().certificate(hello.server_name())
    }
}

/// The configuration every HTTPS listener of a gateway shares.
pub(crate) fn server_config(certs: Arc<ArcSwap<CertTable>>) -> Result<ServerConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(BySni(certs)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
