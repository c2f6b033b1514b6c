//! The control socket: an abstract Unix socket, which lives in the network
//! namespace it was created in, so each pod has its own and `ferry echo-ctl`
//! run inside the pod (`ferry lab exec POD -- ferry echo-ctl ...`) reaches
//! exactly that pod. One request line, one answer line.

use std::io::{BufRead, BufReader, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::{Identity, Shared};

/// Abstract socket names are `ferry-echo-ctl:<namespace>/<pod>`.
pub const CONTROL_PREFIX: &str = "ferry-echo-ctl:";

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(
        "no echo server in this network namespace (run it inside a pod: ferry lab exec POD -- ferry echo-ctl ...)"
    )]
    NoServer,
    #[error(
        "several echo servers in this network namespace ({0}); name one with --pod NAMESPACE/NAME"
    )]
    Ambiguous(String),
    #[error("echo control socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("echo server refused: {0}")]
    Refused(String),
}

pub(crate) fn listen(identity: &Identity) -> std::io::Result<UnixListener> {
    let name = format!("{CONTROL_PREFIX}{}/{}", identity.namespace, identity.pod);
    let addr = SocketAddr::from_abstract_name(name.as_bytes())?;
    let listener = UnixListener::bind_addr(&addr)?;
    listener.set_nonblocking(false)?;
    Ok(listener)
}

pub(crate) async fn serve(listener: UnixListener, shared: Arc<Shared>) {
    // Control requests are rare; a blocking thread keeps this simple.
    let _ = tokio::task::spawn_blocking(move || {
        for stream in listener.incoming().flatten() {
            let _ = handle(stream, &shared);
        }
    })
    .await;
}

fn handle(stream: UnixStream, shared: &Shared) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    let answer = match line.split_whitespace().collect::<Vec<_>>().as_slice() {
        ["ready", "true"] => {
            shared.ready.store(true, Ordering::Relaxed);
            "ok ready=true".to_string()
        }
        ["ready", "false"] => {
            shared.ready.store(false, Ordering::Relaxed);
            "ok ready=false".to_string()
        }
        ["status"] => format!(
            "ok pod={}/{} ready={}",
            shared.identity.namespace,
            shared.identity.pod,
            shared.ready.load(Ordering::Relaxed)
        ),
        _ => format!(
            "error unknown command {:?} (try: ready true|false, status)",
            line.trim()
        ),
    };
    (&stream).write_all(format!("{answer}\n").as_bytes())
}

/// Finds the echo control sockets of the current network namespace.
fn servers() -> std::io::Result<Vec<String>> {
    let table = std::fs::read_to_string("/proc/net/unix")?;
    let mut out: Vec<String> = table
        .lines()
        .filter_map(|l| l.split_whitespace().nth(7))
        .filter_map(|p| p.strip_prefix('@'))
        .filter_map(|p| p.strip_prefix(CONTROL_PREFIX))
        .map(str::to_string)
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

/// Sends one command (`ready true`, `ready false`, `status`) to the echo
/// server of this network namespace (or the one named `pod`, as
/// `namespace/name`) and returns its answer.
pub fn send(pod: Option<&str>, command: &str) -> Result<String, ControlError> {
    let target = match pod {
        Some(p) => p.to_string(),
        None => {
            let found = servers()?;
            match found.as_slice() {
                [] => return Err(ControlError::NoServer),
                [one] => one.clone(),
                many => return Err(ControlError::Ambiguous(many.join(", "))),
            }
        }
    };
    let addr = SocketAddr::from_abstract_name(format!("{CONTROL_PREFIX}{target}").as_bytes())?;
    let mut stream = UnixStream::connect_addr(&addr).map_err(|_| ControlError::NoServer)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(format!("{command}\n").as_bytes())?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer)?;
    let answer = answer.trim().to_string();
    match answer.strip_prefix("ok ") {
        Some(rest) => Ok(rest.to_string()),
        None => Err(ControlError::Refused(answer)),
    }
}
