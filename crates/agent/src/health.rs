//! `/healthz`, `/readyz`, `/livez` as kube-proxy serves them on 10256:
//! healthy once the first cluster state is loaded, with a JSON body saying
//! when the state was last updated.

use std::time::SystemTime;

use ferry_httpd::{Peer, Request, StatusCode, respond};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::Published;

fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

pub(crate) async fn serve(listener: TcpListener, node: String, state: watch::Receiver<Published>) {
    ferry_httpd::serve(listener, move |req: Request<_>, _peer: Peer| {
        let published = state.borrow().clone();
        let node = node.clone();
        async move {
            let path = req.uri().path();
            let body = serde_json::json!({
                "lastUpdated": rfc3339(published.at),
                "currentTime": rfc3339(SystemTime::now()),
                "nodeName": node,
                "stateVersion": published.snapshot.state.version(),
                "objects": published.snapshot.state.len(),
                "manifestErrors": published.snapshot.errors.len(),
                "syncedResourceVersion": published.synced_resource_version,
            });
            match path {
                "/healthz" | "/readyz" => {
                    respond(StatusCode::OK, "application/json", format!("{body}\n"))
                }
                "/livez" => respond(StatusCode::OK, "text/plain", "ok\n"),
                _ => respond(
                    StatusCode::NOT_FOUND,
                    "text/plain",
                    "not found: try /healthz, /readyz, /livez\n",
                ),
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_088_800);
        assert_eq!(rfc3339(t), "2025-11-25T16:40:00Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }
}
