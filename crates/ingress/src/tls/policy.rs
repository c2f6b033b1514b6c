//! What HTTP answers look like for hosts that have TLS, as ingress-nginx
//! answers by default: plain HTTP gets a 308 to the same URL on HTTPS
//! (`ssl-redirect: true`; the method and body are kept, unlike 301), and
//! HTTPS answers carry HSTS (`hsts: true`, one year, subdomains included,
//! no preload).
//!
//! Pure.

use hyper::header::HeaderValue;

/// `Strict-Transport-Security` on HTTPS answers from TLS hosts.
pub(crate) const HSTS: HeaderValue =
    HeaderValue::from_static("max-age=31536000; includeSubDomains");

/// The `Location` of the redirect for `host` (a Host header, its port
/// dropped) and `path_and_query`, to the HTTPS listener's port (left out
/// when it is 443, as ingress-nginx writes it).
pub(crate) fn https_location(
    host: &str,
    path_and_query: &str,
    https_port: u16,
) -> Option<HeaderValue> {
    let host = crate::routes::request_host(host);
    let location = if https_port == 443 {
        format!("https://{host}{path_and_query}")
    } else {
        format!("https://{host}:{https_port}{path_and_query}")
    };
    HeaderValue::try_from(location).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_redirect_keeps_path_and_query_and_names_a_port_other_than_443() {
        assert_eq!(
            https_location("Foo.Test:80", "/a/b?x=1&y", 443).unwrap(),
            "https://foo.test/a/b?x=1&y"
        );
        assert_eq!(
            https_location("foo.test", "/", 8443).unwrap(),
            "https://foo.test:8443/"
        );
    }
}
