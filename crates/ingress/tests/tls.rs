//! HTTPS on loopback with certificates made here (a test CA signing one
//! certificate per host, in `kubernetes.io/tls` Secrets): SNI picks the
//! Secret's certificate for exact and wildcard hosts and the default one
//! otherwise, TLS 1.2 and 1.3 only, h2 by ALPN, the 308 from HTTP and HSTS
//! for TLS hosts only, a bad Secret reported while the rest serve, and a
//! changed Secret reaching new connections while open ones keep answering.
//! Clients: curl (`--resolve`, `--cacert`) and rustls in-process.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use ferry_ingress::component::{self, IngressConfig};
use ferry_ingress::tls::self_signed;
use ferry_ingress::{CertTable, Gateway, ProxyConfig, RouteTable, RoutesConfig, Scheme, TlsConfig};
use ferry_model::k8s_openapi::ByteString;
use ferry_model::k8s_openapi::api::core::v1::Secret;
use ferry_model::k8s_openapi::api::networking::v1::Ingress;
use ferry_model::{ClusterState, Object};
use ferry_source::Feed;
use ferry_sys::Tool;
use hyper::StatusCode;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;

/// A test certificate authority.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

/// A certificate and its key, PEM, as a Secret holds them; `der` is the
/// certificate as a client receives it.
struct Leaf {
    crt: String,
    key: String,
    der: Vec<u8>,
}

impl Ca {
    fn new() -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "ferry test CA");
        let pem = params.self_signed(&key).unwrap().pem();
        Ca {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    fn leaf(&self, hosts: &[&str]) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, hosts[0]);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            crt: cert.pem(),
            key: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

/// A `kubernetes.io/tls` Secret in `default` holding `crt` and `key`.
fn secret(name: &str, crt: &str, key: &str) -> Object {
    let data = BTreeMap::from([
        ("tls.crt".to_string(), ByteString(crt.as_bytes().to_vec())),
        ("tls.key".to_string(), ByteString(key.as_bytes().to_vec())),
    ]);
    let mut s = Secret {
        data: Some(data),
        type_: Some("kubernetes.io/tls".into()),
        ..Secret::default()
    };
    s.metadata.name = Some(name.into());
    s.metadata.namespace = Some("default".into());
    Object::Secret(Arc::new(s))
}

/// An Ingress of ferry's class routing each host's `/` to `svc`, with
/// `tls` entries (hosts, secretName).
fn tls_ingress(name: &str, hosts: &[&str], svc: &str, tls: &[(&[&str], &str)]) -> Object {
    let rules: Vec<_> = hosts
        .iter()
        .map(|h| {
            json!({"host": h, "http": {"paths": [{"path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": svc, "port": {"number": 80}}}}]}})
        })
        .collect();
    let tls: Vec<_> = tls
        .iter()
        .map(|(hosts, secret)| json!({"hosts": hosts, "secretName": secret}))
        .collect();
    let ing: Ingress = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default",
                     "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"ingressClassName": "ferry", "rules": rules, "tls": tls},
    }))
    .unwrap();
    Object::Ingress(Arc::new(ing))
}

/// A gateway serving HTTP and HTTPS on 127.0.0.1, and its self-signed
/// default certificate.
struct Served {
    gw: Gateway,
    http: SocketAddr,
    https: SocketAddr,
    fake: Arc<CertifiedKey>,
}

async fn serve() -> Served {
    serve_with(ProxyConfig::default()).await
}

async fn serve_with(config: ProxyConfig) -> Served {
    let gw = Gateway::new(config, None);
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let https = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (http_addr, https_addr) = (http.local_addr().unwrap(), https.local_addr().unwrap());
    tokio::spawn(gw.clone().serve(http, Scheme::Http));
    tokio::spawn(gw.clone().serve_tls(https));
    Served {
        gw,
        http: http_addr,
        https: https_addr,
        fake: self_signed().unwrap(),
    }
}

impl Served {
    /// Builds and swaps in both tables for `objects` (and ferry's class).
    fn install(&self, mut objects: Vec<Object>) -> Arc<CertTable> {
        objects.push(class());
        let state = ClusterState::from_objects(objects);
        let routes = RouteTable::build(&state, &RoutesConfig::default());
        let certs = Arc::new(CertTable::build(
            &state,
            &routes,
            &TlsConfig::default(),
            &self.fake,
            &self.gw.certs(),
        ));
        self.gw.swap_certs(certs.clone());
        self.gw.swap(Arc::new(routes));
        certs
    }
}

/// Accepts any server certificate: the tests compare it themselves.
#[derive(Debug)]
struct AnyCertificate;

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A TLS connection to `addr` naming `sni` (an IP address: no SNI sent),
/// offering `versions` and ALPN http/1.1.
async fn connect(
    addr: SocketAddr,
    sni: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<TlsStream<TcpStream>, std::io::Error> {
    let tcp = TcpStream::connect(addr).await?;
    connect_over(tcp, sni, versions).await
}

/// The same over a connection already open (after a PROXY header, say).
async fn connect_over(
    tcp: TcpStream,
    sni: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<TlsStream<TcpStream>, std::io::Error> {
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(AnyCertificate))
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = ServerName::try_from(sni.to_string()).unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}

/// The certificate the server presented.
fn presented(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// curl's exit status, `-w` output (stdout) and verbose log (stderr).
async fn curl(args: Vec<String>) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = Tool::new("curl")
            .args(["-s", "-S", "-m", "10"])
            .args(args)
            .timeout(Duration::from_secs(15))
            .output()
            .unwrap();
        (out.status.code().unwrap_or(-1), out.stdout, out.stderr)
    })
    .await
    .unwrap()
}

fn resolve(host: &str, addr: SocketAddr) -> [String; 2] {
    [
        "--resolve".into(),
        format!("{host}:{}:127.0.0.1", addr.port()),
    ]
}

/// Objects for the common case: Service `web`, `foo.test` and
/// `*.wild.test` with their own Secrets, `plain.test` without TLS.
fn site(ca: &Ca, web: &Upstream) -> (Vec<Object>, Leaf, Leaf) {
    let foo_leaf = ca.leaf(&["foo.test"]);
    let wild = ca.leaf(&["*.wild.test"]);
    let mut objects = service("web", &[web.addr]);
    objects.push(secret("foo-tls", &foo_leaf.crt, &foo_leaf.key));
    objects.push(secret("wild-tls", &wild.crt, &wild.key));
    objects.push(tls_ingress(
        "web",
        &["foo.test", "*.wild.test", "plain.test"],
        "web",
        &[(&["foo.test"], "foo-tls"), (&["*.wild.test"], "wild-tls")],
    ));
    (objects, foo_leaf, wild)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_the_secret_certificate_for_exact_and_wildcard_hosts_and_the_default_otherwise() {
    let web = upstream("web").await;
    let ca = Ca::new();
    let s = serve().await;
    let (objects, foo_leaf, wild) = site(&ca, &web);
    let certs = s.install(objects);
    assert!(certs.problems().is_empty(), "{:?}", certs.problems());
    let fake = s.fake.cert[0].to_vec();
    let tls13 = &[&rustls::version::TLS13][..];
    for (sni, want) in [
        ("foo.test", &foo_leaf.der),
        ("FOO.test", &foo_leaf.der),
        ("a.wild.test", &wild.der),
        // One label only: a.b.wild.test is not *.wild.test.
        ("a.b.wild.test", &fake),
        ("wild.test", &fake),
        ("plain.test", &fake),
        ("unknown.test", &fake),
        // An IP address: no SNI at all.
        ("127.0.0.1", &fake),
    ] {
        let stream = connect(s.https, sni, tls13).await.unwrap();
        assert!(presented(&stream) == *want, "{sni}: wrong certificate");
        let mut client = Client::over(stream).await;
        // Hosts without rules are asked for plain.test over the same connection.
        let routed = ["foo.test", "FOO.test", "a.wild.test"].contains(&sni);
        let host = if routed { sni } else { "plain.test" };
        let (status, _, body) = client.get_with_headers(host, "/x").await.unwrap();
        assert_eq!(
            (status, field(&body, "name")),
            (StatusCode::OK, Some("web")),
            "{sni}"
        );
        assert_eq!(field(&body, "x-forwarded-proto"), Some("https"), "{body}");
    }
    // curl checks the chain against the CA and the name against the certificate.
    if !ferry_sys::testing::have_or_skip("curl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    for host in ["foo.test", "a.wild.test"] {
        let (code, out, err) = curl(
            [
                &resolve(host, s.https)[..],
                &[
                    "--cacert".into(),
                    ca_file.display().to_string(),
                    "-o".into(),
                    "/dev/null".into(),
                    "-w".into(),
                    "%{http_code}".into(),
                    format!("https://{host}:{}/", s.https.port()),
                ],
            ]
            .concat(),
        )
        .await;
        assert_eq!((code, out.as_str()), (0, "200"), "{host}: {err}");
    }
    // The default certificate is not the CA's: verification fails, and -k
    // shows the fake certificate's subject.
    let (code, _, _) = curl(
        [
            &resolve("unknown.test", s.https)[..],
            &[
                "--cacert".into(),
                ca_file.display().to_string(),
                format!("https://unknown.test:{}/", s.https.port()),
            ],
        ]
        .concat(),
    )
    .await;
    assert_eq!(code, 60, "curl: the certificate must not verify");
    let (code, _, err) = curl(
        [
            &resolve("unknown.test", s.https)[..],
            &[
                "-k".into(),
                "-v".into(),
                "-o".into(),
                "/dev/null".into(),
                format!("https://unknown.test:{}/", s.https.port()),
            ],
        ]
        .concat(),
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("CN=Ferry Ingress Controller Fake Certificate"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_tls_1_2_and_1_3_are_spoken_and_h2_is_chosen_by_alpn() {
    let web = upstream("web").await;
    let ca = Ca::new();
    let s = serve().await;
    let (objects, foo_leaf, _) = site(&ca, &web);
    s.install(objects);
    let tls12 = connect(s.https, "foo.test", &[&rustls::version::TLS12])
        .await
        .unwrap();
    assert_eq!(presented(&tls12), foo_leaf.der);
    let mut client = Client::over(tls12).await;
    assert_eq!(client.get("foo.test", "/").await.unwrap().0, StatusCode::OK);
    if !ferry_sys::testing::have_or_skip("curl") {
        return;
    }
    let base = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = resolve("foo.test", s.https).to_vec();
        v.extend(extra.iter().map(|s| s.to_string()));
        v.push(format!("https://foo.test:{}/", s.https.port()));
        v
    };
    // TLS 1.1 and older: the handshake fails (curl 35).
    let (code, _, err) = curl(base(&["-k", "--tlsv1", "--tls-max", "1.1"])).await;
    assert_eq!(code, 35, "TLS 1.1 must be refused: {err}");
    for (max, want) in [("1.2", "TLSv1.2"), ("1.3", "TLSv1.3")] {
        let (code, _, err) = curl(base(&["-k", "-v", "-o", "/dev/null", "--tls-max", max])).await;
        assert_eq!(code, 0, "{err}");
        assert!(
            err.contains(&format!("SSL connection using {want}")),
            "{err}"
        );
    }
    // ALPN: curl --http2 gets HTTP/2; the upstream still gets HTTP/1.1.
    let (code, out, err) = curl(base(&["-k", "--http2", "-w", "\n%{http_version}"])).await;
    assert_eq!(code, 0, "{err}");
    let (body, version) = out.rsplit_once('\n').unwrap();
    assert_eq!(version, "2", "{out}");
    assert_eq!(field(body, "name"), Some("web"), "{body}");
    let (code, out, _) = curl(base(&[
        "-k",
        "--http1.1",
        "-o",
        "/dev/null",
        "-w",
        "%{http_version}",
    ]))
    .await;
    assert_eq!((code, out.as_str()), (0, "1.1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_to_a_tls_host_gets_a_308_to_https_and_only_tls_hosts_get_hsts() {
    let web = upstream("web").await;
    let ca = Ca::new();
    let s = serve().await;
    let (objects, _, _) = site(&ca, &web);
    s.install(objects);
    if !ferry_sys::testing::have_or_skip("curl") {
        return;
    }
    let port = s.https.port();
    for (host, path) in [("foo.test", "/a/b?x=1&y=2"), ("a.wild.test", "/")] {
        let (code, out, err) = curl(vec![
            "-H".into(),
            format!("Host: {host}"),
            "-X".into(),
            "POST".into(),
            "-o".into(),
            "/dev/null".into(),
            "-w".into(),
            "%{http_code} %{redirect_url}".into(),
            format!("http://{}{path}", s.http),
        ])
        .await;
        assert_eq!(code, 0, "{err}");
        assert_eq!(out, format!("308 https://{host}:{port}{path}"));
    }
    assert_eq!(web.requests.load(std::sync::atomic::Ordering::Relaxed), 0);
    // A host without TLS is proxied over HTTP, and carries no HSTS either way.
    let (code, out, err) = curl(vec![
        "-H".into(),
        "Host: plain.test".into(),
        "-D".into(),
        "-".into(),
        format!("http://{}/p?q=1", s.http),
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(
        !out.to_ascii_lowercase()
            .contains("strict-transport-security"),
        "{out}"
    );
    // Following the redirect lands on HTTPS with HSTS.
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let (code, out, err) = curl(vec![
        "-L".into(),
        "--resolve".into(),
        format!("foo.test:{port}:127.0.0.1"),
        "--resolve".into(),
        format!("foo.test:{}:127.0.0.1", s.http.port()),
        "--cacert".into(),
        ca_file.display().to_string(),
        "-D".into(),
        "-".into(),
        format!("http://foo.test:{}/a?x=1", s.http.port()),
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    let lower = out.to_ascii_lowercase();
    assert!(lower.contains("http/1.1 308"), "{out}");
    assert!(
        lower.contains("strict-transport-security: max-age=31536000; includesubdomains"),
        "{out}"
    );
    assert_eq!(field(&out, "path"), Some("/a?x=1"), "{out}");
    // Over HTTPS a host without TLS (default certificate) gets no HSTS.
    let stream = connect(s.https, "plain.test", &[&rustls::version::TLS13])
        .await
        .unwrap();
    let mut client = Client::over(stream).await;
    let (status, headers, _) = client.get_with_headers("plain.test", "/").await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(!headers.contains_key("strict-transport-security"));
    let (_, headers, _) = client
        .get_with_headers("foo.test", "/nowhere-but-routed")
        .await
        .unwrap();
    assert!(headers.contains_key("strict-transport-security"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_secret_is_reported_its_hosts_get_the_default_certificate_and_the_rest_keep_serving()
{
    let web = upstream("web").await;
    let ca = Ca::new();
    let s = serve().await;
    let (mut objects, foo_leaf, _) = site(&ca, &web);
    let other = ca.leaf(&["bad.test"]);
    // The key of another certificate, and a certificate that is not PEM.
    objects.push(secret("mismatch-tls", &other.crt, &foo_leaf.key));
    objects.push(secret("garbage-tls", "not a certificate", &other.key));
    objects.push(tls_ingress(
        "bad",
        &["bad.test", "garbage.test"],
        "web",
        &[
            (&["bad.test"], "mismatch-tls"),
            (&["garbage.test"], "garbage-tls"),
            (&["missing.test"], "missing-tls"),
        ],
    ));
    let certs = s.install(objects);
    let problems: Vec<String> = certs.problems().iter().map(ToString::to_string).collect();
    assert_eq!(problems.len(), 3, "{problems:#?}");
    for want in [
        "Ingress default/bad: spec.tls[0].secretName: Secret default/mismatch-tls: data[tls.key]:",
        "Ingress default/bad: spec.tls[1].secretName: Secret default/garbage-tls: data[tls.crt]: no PEM CERTIFICATE block",
        "Ingress default/bad: spec.tls[2].secretName: Secret default/missing-tls: not found",
    ] {
        assert!(
            problems.iter().any(|p| p.starts_with(want)),
            "{want}\n{problems:#?}"
        );
    }
    let fake = s.fake.cert[0].to_vec();
    for (sni, want) in [
        ("foo.test", &foo_leaf.der),
        ("bad.test", &fake),
        ("garbage.test", &fake),
    ] {
        let stream = connect(s.https, sni, &[&rustls::version::TLS13])
            .await
            .unwrap();
        assert!(presented(&stream) == *want, "{sni}");
        let mut client = Client::over(stream).await;
        let (status, headers, _) = client.get_with_headers(sni, "/").await.unwrap();
        assert_eq!(status, StatusCode::OK, "{sni}");
        // No usable certificate: not a TLS host, so no HSTS (and no redirect).
        assert_eq!(
            headers.contains_key("strict-transport-security"),
            sni == "foo.test"
        );
    }
    let mut plain = Client::connect(s.http).await;
    assert_eq!(plain.get("bad.test", "/").await.unwrap().0, StatusCode::OK);
    assert_eq!(
        plain.get("foo.test", "/").await.unwrap().0,
        StatusCode::PERMANENT_REDIRECT
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_secret_reaches_new_connections_while_open_ones_keep_answering() {
    let web = upstream("web").await;
    let ca = Ca::new();
    let first = ca.leaf(&["foo.test"]);
    let second = ca.leaf(&["foo.test"]);
    let objects = |leaf: &Leaf| {
        let mut o = service("web", &[web.addr]);
        o.push(secret("foo-tls", &leaf.crt, &leaf.key));
        o.push(tls_ingress(
            "web",
            &["foo.test"],
            "web",
            &[(&["foo.test"], "foo-tls")],
        ));
        o
    };
    let (tx, feed) = Feed::manual(snapshot(objects(&first)));
    let mut registry = prometheus_client::registry::Registry::default();
    let handle = component::start(
        IngressConfig {
            http: vec!["127.0.0.1:0".parse().unwrap()],
            https: vec!["127.0.0.1:0".parse().unwrap()],
            ..IngressConfig::default()
        },
        feed.follow(),
        &mut registry,
    )
    .unwrap();
    let https = handle.https[0];
    let tls13 = &[&rustls::version::TLS13][..];
    // Wait for the first state's certificate.
    let start = Instant::now();
    let old = loop {
        let stream = connect(https, "foo.test", tls13).await.unwrap();
        if presented(&stream) == first.der {
            break stream;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "first certificate never served"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let mut old = Client::over(old).await;
    assert_eq!(old.get("foo.test", "/").await.unwrap().0, StatusCode::OK);

    let changed = Instant::now();
    tx.send_replace(Arc::new(snapshot(objects(&second))));
    loop {
        let stream = connect(https, "foo.test", tls13).await.unwrap();
        if presented(&stream) == second.der {
            break;
        }
        assert!(
            changed.elapsed() < Duration::from_millis(100),
            "the new certificate is not served after 100 ms"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    eprintln!("new certificate served after {:?}", changed.elapsed());
    // The connection opened before the change still answers.
    for _ in 0..3 {
        let (status, _, body) = old.get_with_headers("foo.test", "/still").await.unwrap();
        assert_eq!(
            (status, field(&body, "name")),
            (StatusCode::OK, Some("web"))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_protocol_header_before_the_tls_handshake_gives_the_client_address() {
    let web = upstream("web").await;
    let ca = Ca::new();
    let s = serve_with(ProxyConfig {
        proxy_protocol: true,
        ..ProxyConfig::default()
    })
    .await;
    let (objects, _, _) = site(&ca, &web);
    s.install(objects);
    let tls13 = &[&rustls::version::TLS13][..];
    // v1 (text) and v2 (binary, TCP over IPv4), as a load balancer sends them.
    let v1 = b"PROXY TCP4 198.51.100.7 10.0.0.1 40000 443\r\n".to_vec();
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    v2.extend([198, 51, 100, 8, 10, 0, 0, 1, 0x9c, 0x40, 0x01, 0xbb]);
    for (header, client) in [(v1, "198.51.100.7"), (v2, "198.51.100.8")] {
        let mut tcp = TcpStream::connect(s.https).await.unwrap();
        tcp.write_all(&header).await.unwrap();
        let stream = connect_over(tcp, "foo.test", tls13).await.unwrap();
        let mut c = Client::over(stream).await;
        let (status, _, body) = c.get_with_headers("foo.test", "/x").await.unwrap();
        assert_eq!(status.as_u16(), 200, "{body}");
        assert_eq!(field(&body, "x-forwarded-for"), Some(client), "{body}");
        assert_eq!(field(&body, "x-real-ip"), Some(client), "{body}");
    }
    // Without the header the handshake never starts: the connection is closed.
    assert!(connect(s.https, "foo.test", tls13).await.is_err());
}
