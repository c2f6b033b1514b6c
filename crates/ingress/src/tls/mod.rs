//! TLS for the ingress: certificates from `kubernetes.io/tls` Secrets
//! chosen by SNI, a default certificate (a Secret named by
//! `--ingress-default-cert`, else a self-signed one made at start, as
//! ingress-nginx's fake certificate), TLS 1.2 and 1.3 only, ALPN `h2` and
//! `http/1.1`, and the policy for hosts that have TLS (308 from HTTP, HSTS
//! on HTTPS).
//!
//! Rooms: `certs` (state → certificate table, pure), `policy` (redirect
//! and HSTS, pure), `default_cert` (the self-signed certificate), `server`
//! (the rustls configuration whose certificate resolver reads the table
//! swapped in last, so a changed Secret reaches new handshakes while
//! connections already open keep theirs).

mod certs;
mod default_cert;
pub(crate) mod policy;
mod server;

pub use certs::{CertTable, SecretError, TlsConfig, TlsProblem};
pub use default_cert::{DefaultCertError, FAKE_CERT_CN, self_signed};
pub(crate) use server::server_config;
