//! The scratch network namespaces of `ferry bench proxy`: a router holding
//! the rules, a client (a pod) and a server holding the endpoints of the
//! services whose traffic is measured, with veth links between them; and
//! the traffic itself: a listener in the server, timed connections from
//! the client. Touches only namespaces named `ferry-bench-*`, through `ip`
//! and `sysctl` (`ferry_sys::Tool`) and `ferry_sys::netns::in_netns`.

use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::Context;
use ferry_sys::Tool;
use ferry_sys::netns::in_netns;

pub(super) const ROUTER: &str = "ferry-bench-proxy";
const CLIENT: &str = "ferry-bench-client";
const SERVER: &str = "ferry-bench-server";
const CLIENT_IP: &str = "10.99.0.2";
/// How long new connections per second are counted.
const CPS_WINDOW: Duration = Duration::from_millis(1500);

/// `ip -n NS REST...` (REST split on spaces).
fn ip(ns: &str, rest: &str) -> anyhow::Result<()> {
    Tool::new("ip")
        .args(["-n", ns])
        .args(rest.split_whitespace())
        .run()?;
    Ok(())
}

/// The scratch namespaces that exist; removed on drop.
pub(super) struct Scratch;

impl Scratch {
    /// The three namespaces and the links between them, leftovers of an
    /// earlier run removed first.
    pub(super) fn create() -> anyhow::Result<Scratch> {
        Scratch::remove();
        for ns in [ROUTER, CLIENT, SERVER] {
            Tool::new("ip")
                .args(["netns", "add", ns])
                .run()
                .context("creating scratch network namespaces (root needed)")?;
        }
        let scratch = Scratch;
        for ns in [ROUTER, CLIENT, SERVER] {
            ip(ns, "link set lo up")?;
        }
        ip(
            ROUTER,
            &format!("link add r0 type veth peer name c0 netns {CLIENT}"),
        )?;
        ip(
            ROUTER,
            &format!("link add r1 type veth peer name s0 netns {SERVER}"),
        )?;
        ip(ROUTER, "addr add 10.99.0.1/24 dev r0")?;
        ip(ROUTER, "addr add 10.98.0.1/24 dev r1")?;
        ip(ROUTER, "link set r0 up")?;
        ip(ROUTER, "link set r1 up")?;
        ip(ROUTER, "route add 10.128.0.0/9 via 10.98.0.2")?;
        ip(CLIENT, &format!("addr add {CLIENT_IP}/24 dev c0"))?;
        ip(CLIENT, "link set c0 up")?;
        ip(CLIENT, "route add default via 10.99.0.1")?;
        ip(SERVER, "addr add 10.98.0.2/24 dev s0")?;
        ip(SERVER, "link set s0 up")?;
        ip(SERVER, "route add default via 10.98.0.1")?;
        Tool::new("sysctl")
            .netns(Some(ROUTER))
            .args(["-qw", "net.ipv4.ip_forward=1"])
            .run()?;
        Tool::new("sysctl")
            .netns(Some(CLIENT))
            .args(["-qw", "net.ipv4.ip_local_port_range=1024 65535"])
            .run()?;
        Ok(scratch)
    }

    /// The router namespace alone, with nothing in it.
    pub(super) fn router_only() -> anyhow::Result<Scratch> {
        let scratch = Scratch;
        Tool::new("ip").args(["netns", "add", ROUTER]).run()?;
        Ok(scratch)
    }

    fn remove() {
        for ns in [ROUTER, CLIENT, SERVER] {
            if std::path::Path::new("/run/netns").join(ns).exists() {
                let _ = Tool::new("ip").args(["netns", "del", ns]).output();
            }
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        Scratch::remove();
    }
}

/// Connect times (µs) to `vip:80` from the client namespace, and new
/// connections per second over [`CPS_WINDOW`].
pub(super) fn connect_times(
    vip: IpAddr,
    count: usize,
    cps: bool,
) -> anyhow::Result<(Vec<f64>, f64)> {
    let addr = SocketAddr::new(vip, 80);
    in_netns(CLIENT, || -> anyhow::Result<(Vec<f64>, f64)> {
        let mut times = Vec::with_capacity(count);
        for _ in 0..count {
            let t = Instant::now();
            let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                .with_context(|| format!("connecting to {addr}"))?;
            times.push(t.elapsed().as_secs_f64() * 1e6);
            drop(s);
        }
        let mut rate = f64::NAN;
        if cps {
            let start = Instant::now();
            let mut n = 0u64;
            while start.elapsed() < CPS_WINDOW {
                let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                    .with_context(|| format!("connecting to {addr}"))?;
                drop(s);
                n += 1;
            }
            rate = n as f64 / start.elapsed().as_secs_f64();
        }
        Ok((times, rate))
    })
    .with_context(|| format!("netns {CLIENT}"))?
}

/// Serves `endpoints`: their IPs on the server's link and a listener on
/// :8080 that accepts and closes (the process ends it).
pub(super) fn serve(endpoints: &[IpAddr]) -> anyhow::Result<()> {
    for ip in endpoints {
        Tool::new("ip")
            .args([
                "-n",
                SERVER,
                "addr",
                "add",
                &format!("{ip}/32"),
                "dev",
                "s0",
            ])
            .run()?;
    }
    // A socket belongs to the namespace it was made in, so any thread
    // can accept on it.
    let listener = in_netns(SERVER, || TcpListener::bind("0.0.0.0:8080"))
        .with_context(|| format!("netns {SERVER}"))?
        .context("listening on :8080 in the server namespace")?;
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            drop(conn);
        }
    });
    Ok(())
}
