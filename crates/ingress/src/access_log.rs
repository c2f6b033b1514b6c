//! The access log: one line per request, written off the request path.
//! A request fills an [`Entry`] (its response body counts the bytes sent
//! and hands the entry over when it ends); a bounded channel carries it to
//! a writer thread, which formats and writes it. When the channel is full
//! the entry is dropped and counted (`ferry_ingress_access_log_dropped`),
//! so a slow log never slows a request.
//!
//! The fields are ingress-nginx's default `upstreaminfo` format, compacted:
//!
//! ```text
//! CLIENT - [TIME] "METHOD PATH PROTOCOL" STATUS BYTES "REFERER" "USER-AGENT" REQUEST-TIME UPSTREAM-ADDR UPSTREAM-STATUS INGRESS SERVICE
//! 172.18.0.2 - [2026-12-03T06:40:01.123Z] "GET /api HTTP/1.1" 200 312 "-" "curl/8.14.1" 0.002 10.244.1.3:8080 200 demo/shop demo/api-service:80
//! ```
//!
//! or the same fields as one JSON object per line. Missing values are `-`
//! (JSON: null), as nginx writes them.
//!
//! Touches: the writer it is given (stdout in the agent), from its own thread.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use ferry_model::k8s_openapi::jiff::Timestamp;
use hyper::body::{Body, Frame, SizeHint};
use hyper::header::HeaderValue;
use hyper::{Method, Version};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

use crate::proxy::ProxyBody;
use crate::routes::Backend;

/// `--ingress-access-log`: off, text (one line per request) or json.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AccessLogFormat {
    Off,
    #[default]
    Text,
    Json,
}

impl FromStr for AccessLogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" => Ok(AccessLogFormat::Off),
            "text" => Ok(AccessLogFormat::Text),
            "json" => Ok(AccessLogFormat::Json),
            other => Err(format!("{other:?}: the access log is off, text or json")),
        }
    }
}

/// Entries waiting for the writer before new ones are dropped.
pub const QUEUE: usize = 8192;

/// How long the writer lets entries gather after writing a batch (at
/// 100k requests/s, 1,000 entries: well inside the queue).
const BATCH_WAIT: Duration = Duration::from_millis(10);

/// One request, as the access log writes it.
#[derive(Debug)]
pub struct Entry {
    pub client: IpAddr,
    pub time: SystemTime,
    pub method: Method,
    /// The request target as the client sent it (path and query).
    pub path: String,
    pub version: Version,
    pub status: u16,
    /// Response body bytes sent to the client.
    pub bytes: u64,
    pub referer: Option<HeaderValue>,
    pub user_agent: Option<HeaderValue>,
    /// From the request's arrival to the end of its response body.
    pub request_time: Duration,
    /// The endpoint that answered; None: ferry answered itself.
    pub upstream: Option<SocketAddr>,
    /// The Ingress rule and Service the request matched.
    pub backend: Option<Arc<Backend>>,
}

/// The endpoint a response came from, as a response extension.
#[derive(Clone, Copy, Debug)]
pub(crate) struct UpstreamAddr(pub SocketAddr);

/// The sending side of the access log: cheap to clone.
#[derive(Clone)]
pub struct AccessLog {
    tx: SyncSender<Entry>,
    dropped: Counter,
    dropped_total: Arc<AtomicU64>,
}

impl AccessLog {
    /// Starts the writer thread writing `format` lines to `out`; entries
    /// beyond `queue` waiting are dropped and counted. None for `Off`.
    pub fn start(
        format: AccessLogFormat,
        out: Box<dyn Write + Send>,
        queue: usize,
        registry: Option<&mut Registry>,
    ) -> std::io::Result<Option<AccessLog>> {
        if format == AccessLogFormat::Off {
            return Ok(None);
        }
        let (log, rx) = AccessLog::channel(queue, registry);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_all(rx, format, out))?;
        Ok(Some(log))
    }

    /// The log and the queue its writer reads.
    fn channel(queue: usize, registry: Option<&mut Registry>) -> (AccessLog, Receiver<Entry>) {
        let (tx, rx) = sync_channel(queue.max(1));
        let dropped = Counter::default();
        if let Some(r) = registry {
            r.sub_registry_with_prefix("ferry_ingress").register(
                "access_log_dropped",
                "Access log entries dropped because the writer fell behind",
                dropped.clone(),
            );
        }
        let log = AccessLog {
            tx,
            dropped,
            dropped_total: Arc::new(AtomicU64::new(0)),
        };
        (log, rx)
    }

    /// Hands an entry to the writer, or drops and counts it.
    pub fn log(&self, entry: Entry) {
        match self.tx.try_send(entry) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.inc();
                self.dropped_total.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Entries dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped_total.load(Ordering::Relaxed)
    }
}

/// The writer thread: formats each entry, flushes when the queue is
/// empty, then waits a little for the next batch.
fn write_all(rx: Receiver<Entry>, format: AccessLogFormat, out: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::new(out);
    let mut line = String::new();
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(entry) = next {
            line.clear();
            match format {
                AccessLogFormat::Json => json_line(&entry, &mut line),
                _ => text_line(&entry, &mut line),
            }
            line.push('\n');
            if out.write_all(line.as_bytes()).is_err() {
                return;
            }
            next = rx.try_recv().ok();
        }
        if out.flush().is_err() {
            return;
        }
        // Let entries gather: a sender does not wake a writer that sleeps,
        // so under load the writer wakes once per batch, not per request.
        std::thread::sleep(BATCH_WAIT);
    }
}

fn time(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    Timestamp::new(d.as_secs() as i64, (d.subsec_millis() * 1_000_000) as i32)
        .map(|ts| format!("{ts:.3}"))
        .unwrap_or_default()
}

fn header(v: Option<&HeaderValue>) -> Option<&str> {
    v.and_then(|v| v.to_str().ok())
}

fn ingress_of(e: &Entry) -> Option<String> {
    e.backend
        .as_ref()
        .and_then(|b| b.ingress.as_ref())
        .map(ToString::to_string)
}

fn service_of(e: &Entry) -> Option<String> {
    e.backend.as_ref().map(|b| b.target.to_string())
}

/// The upstream's status: the response's, when an endpoint answered.
fn upstream_status(e: &Entry) -> Option<u16> {
    e.upstream.map(|_| e.status)
}

/// The compact `upstreaminfo` line (without the newline).
pub fn text_line(e: &Entry, out: &mut String) {
    use std::fmt::Write as _;
    let dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    // Writing into a String cannot fail.
    let _ = write!(
        out,
        "{} - [{}] \"{} {} {:?}\" {} {} \"{}\" \"{}\" {:.3} {} {} {} {}",
        e.client,
        time(e.time),
        e.method,
        e.path,
        e.version,
        e.status,
        e.bytes,
        header(e.referer.as_ref()).unwrap_or("-"),
        header(e.user_agent.as_ref()).unwrap_or("-"),
        e.request_time.as_secs_f64(),
        dash(e.upstream.map(|a| a.to_string())),
        dash(upstream_status(e).map(|s| s.to_string())),
        dash(ingress_of(e)),
        dash(service_of(e)),
    );
}

/// The same fields as one JSON object.
pub fn json_line(e: &Entry, out: &mut String) {
    let v = serde_json::json!({
        "time": time(e.time),
        "client": e.client.to_string(),
        "method": e.method.as_str(),
        "path": e.path,
        "protocol": format!("{:?}", e.version),
        "status": e.status,
        "bytes": e.bytes,
        "referer": header(e.referer.as_ref()),
        "user_agent": header(e.user_agent.as_ref()),
        "request_time": (e.request_time.as_secs_f64() * 1000.0).round() / 1000.0,
        "upstream_addr": e.upstream.map(|a| a.to_string()),
        "upstream_status": upstream_status(e),
        "ingress": ingress_of(e),
        "service": service_of(e),
    });
    out.push_str(&v.to_string());
}

/// A response body that counts what it sends and logs its request when it
/// is done (ended, or dropped because the client went away).
pub struct Logged {
    inner: ProxyBody,
    entry: Option<Entry>,
    start: Instant,
    log: AccessLog,
}

impl Logged {
    pub(crate) fn new(inner: ProxyBody, entry: Entry, start: Instant, log: AccessLog) -> Logged {
        Logged {
            inner,
            entry: Some(entry),
            start,
            log,
        }
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        if let Some(mut entry) = self.entry.take() {
            entry.request_time = self.start.elapsed();
            self.log.log(entry);
        }
    }
}

impl Body for Logged {
    type Data = Bytes;
    type Error = crate::proxy::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, crate::proxy::BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let (Some(data), Some(entry)) = (frame.data_ref(), this.entry.as_mut())
        {
            entry.bytes += data.len() as u64;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::{PortRef, ServiceRef};
    use ferry_model::NamespacedName;

    fn entry() -> Entry {
        Entry {
            client: "172.18.0.2".parse().unwrap(),
            time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_744_001_123),
            method: Method::GET,
            path: "/api?x=1".into(),
            version: Version::HTTP_11,
            status: 200,
            bytes: 312,
            referer: None,
            user_agent: Some(HeaderValue::from_static("curl/8.14.1")),
            request_time: Duration::from_micros(2400),
            upstream: Some("10.244.1.3:8080".parse().unwrap()),
            backend: Some(Arc::new(Backend::new(
                Some(NamespacedName::new("demo", "shop")),
                ServiceRef {
                    service: NamespacedName::new("demo", "api-service"),
                    port: PortRef::Number(80),
                },
                Arc::from(Vec::new()),
            ))),
        }
    }

    #[test]
    fn a_text_line_has_the_upstreaminfo_fields_in_order() {
        let mut line = String::new();
        text_line(&entry(), &mut line);
        assert_eq!(
            line,
            "172.18.0.2 - [2025-12-03T06:40:01.123Z] \"GET /api?x=1 HTTP/1.1\" 200 312 \"-\" \"curl/8.14.1\" 0.002 10.244.1.3:8080 200 demo/shop demo/api-service:80"
        );
    }

    #[test]
    fn a_request_ferry_answered_itself_has_no_upstream_fields() {
        let mut e = entry();
        e.upstream = None;
        e.backend = None;
        e.status = 404;
        let mut line = String::new();
        json_line(&e, &mut line);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["status"], 404);
        assert_eq!(v["upstream_addr"], serde_json::Value::Null);
        assert_eq!(v["upstream_status"], serde_json::Value::Null);
        assert_eq!(v["ingress"], serde_json::Value::Null);
        assert_eq!(v["user_agent"], "curl/8.14.1");
        assert_eq!(v["request_time"], 0.002);
    }

    #[test]
    fn entries_beyond_the_queue_are_dropped_and_counted() {
        // No writer: the queue fills up.
        let mut registry = Registry::default();
        let (log, queue) = AccessLog::channel(4, Some(&mut registry));
        for _ in 0..20 {
            log.log(entry());
        }
        assert_eq!(log.dropped(), 16);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("ferry_ingress_access_log_dropped_total 16"),
            "{text}"
        );
        assert_eq!(queue.try_iter().count(), 4);
    }

    #[test]
    fn the_writer_writes_one_line_per_entry() {
        #[derive(Clone, Default)]
        struct Shared(Arc<std::sync::Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let out = Shared::default();
        let log = AccessLog::start(AccessLogFormat::Json, Box::new(out.clone()), QUEUE, None)
            .unwrap()
            .unwrap();
        log.log(entry());
        log.log(entry());
        let deadline = Instant::now() + Duration::from_secs(5);
        while out
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            < 2
        {
            assert!(Instant::now() < deadline, "no lines written");
            std::thread::sleep(Duration::from_millis(5));
        }
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["service"], "demo/api-service:80");
        }
    }
}
