//! The headers a proxy must rewrite: hop-by-hop headers are removed both
//! ways (RFC 9110 §7.6.1: `Connection` and what it names, plus the
//! classic list), an Upgrade is passed on explicitly, and the request gets
//! `X-Forwarded-For/-Proto/-Host/-Port`, `X-Real-IP` and `X-Request-ID`
//! as ingress-nginx sets them. By default the client's own X-Forwarded-*
//! headers are replaced (ingress-nginx's `use-forwarded-headers: false`);
//! `trust_forwarded` appends to them instead, for a load balancer in front.
//!
//! Pure.

use std::net::IpAddr;

use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};

pub(crate) const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
];

pub(crate) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(crate) static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(crate) static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub(crate) static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
pub(crate) static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The WebSocket-style upgrade a request asks for (`Connection: upgrade`
/// with an `Upgrade` header), if any.
pub(crate) fn upgrade_of(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| headers.get(header::UPGRADE).cloned())
        .flatten()
}

/// Removes the hop-by-hop headers; an `upgrade` is put back as
/// `Connection: upgrade` + `Upgrade`.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: Option<HeaderValue>) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
    if let Some(u) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, u);
    }
}

/// Who asked, and where.
pub(crate) struct Client<'a> {
    pub ip: IpAddr,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// The port the client connected to.
    pub port: u16,
    /// The request's host (Host header or `:authority`).
    pub host: Option<&'a str>,
}

/// Sets the forwarding headers on a request going upstream.
pub(crate) fn set_forwarded(
    headers: &mut HeaderMap,
    client: &Client<'_>,
    trust_forwarded: bool,
    request_id: impl FnOnce() -> String,
) {
    let ip = client.ip.to_string();
    let xff = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prior) if trust_forwarded && !prior.trim().is_empty() => format!("{prior}, {ip}"),
        _ => ip.clone(),
    };
    set(headers, &X_FORWARDED_FOR, &xff);
    set(headers, &X_REAL_IP, &ip);
    let keep = |h: &HeaderMap, name: &HeaderName| trust_forwarded && h.contains_key(name);
    if !keep(headers, &X_FORWARDED_PROTO) {
        headers.insert(
            X_FORWARDED_PROTO.clone(),
            HeaderValue::from_static(client.scheme),
        );
    }
    if !keep(headers, &X_FORWARDED_HOST)
        && let Some(host) = client.host
    {
        set(headers, &X_FORWARDED_HOST, host);
    }
    if !keep(headers, &X_FORWARDED_PORT) {
        headers.insert(X_FORWARDED_PORT.clone(), HeaderValue::from(client.port));
    }
    if !headers.contains_key(&X_REQUEST_ID) {
        set(headers, &X_REQUEST_ID, &request_id());
    }
    if !headers.contains_key(header::HOST)
        && let Some(host) = client.host
    {
        set(headers, &header::HOST, host);
    }
}

fn set(headers: &mut HeaderMap, name: &HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name.clone(), v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("accept", "*/*"),
        ]);
        strip_hop_by_hop(&mut h, None);
        let names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["accept"]);
    }

    #[test]
    fn an_upgrade_is_passed_on_explicitly() {
        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        let up = upgrade_of(&h);
        assert_eq!(up.as_ref().map(|v| v.to_str().unwrap()), Some("websocket"));
        strip_hop_by_hop(&mut h, up);
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
        assert!(upgrade_of(&map(&[("upgrade", "websocket")])).is_none());
    }

    #[test]
    fn forwarded_headers_replace_the_clients_unless_trusted() {
        let client = Client {
            ip: "192.0.2.7".parse().unwrap(),
            scheme: "http",
            port: 80,
            host: Some("foo.com"),
        };
        let prior = [
            ("x-forwarded-for", "203.0.113.1"),
            ("x-forwarded-proto", "https"),
        ];
        let mut h = map(&prior);
        set_forwarded(&mut h, &client, false, || "id-1".into());
        assert_eq!(h["x-forwarded-for"], "192.0.2.7");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "foo.com");
        assert_eq!(h["x-forwarded-port"], "80");
        assert_eq!(h["x-real-ip"], "192.0.2.7");
        assert_eq!(h["x-request-id"], "id-1");
        assert_eq!(h["host"], "foo.com");
        let mut h = map(&prior);
        h.insert(X_REQUEST_ID.clone(), HeaderValue::from_static("theirs"));
        set_forwarded(&mut h, &client, true, || "id-2".into());
        assert_eq!(h["x-forwarded-for"], "203.0.113.1, 192.0.2.7");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-request-id"], "theirs");
    }
}
