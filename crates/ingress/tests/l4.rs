//! L4 services on loopback with real clients and servers: the
//! tcp-services ConfigMap through the component (round robin, a refused
//! endpoint retried on the next, listeners opened and closed as the
//! ConfigMap changes, connections under way kept), and udp-services
//! through the L4 server (per-client flows, replies from the listening
//! port, flows closed when idle).

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use ferry_ingress::component::{self, IngressConfig};
use ferry_ingress::l4::{L4Config, L4Server, L4Settings, L4Table};
use ferry_model::k8s_openapi::api::core::v1::ConfigMap;
use ferry_model::{ClusterState, NamespacedName, Object};
use ferry_source::{Feed, Snapshot};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// A TCP server that greets with its name, then echoes lines.
async fn tcp_echo(name: &'static str) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (r, mut w) = s.split();
                if w.write_all(format!("{name}\n").as_bytes()).await.is_err() {
                    return;
                }
                let mut lines = BufReader::new(r).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if w.write_all(format!("{line}\n").as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, task)
}

/// A UDP server answering each datagram with `name:data`.
async fn udp_echo(name: &'static str) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = s.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        loop {
            let Ok((n, from)) = s.recv_from(&mut buf).await else {
                return;
            };
            let answer = format!("{name}:{}", String::from_utf8_lossy(&buf[..n]));
            let _ = s.send_to(answer.as_bytes(), from).await;
        }
    });
    (addr, task)
}

/// A loopback port free for now (TCP and UDP).
fn free_port() -> u16 {
    ferry_sys::free_loopback_port()
}

fn configmap(name: &str, data: serde_json::Value) -> Object {
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "ingress"}, "data": data,
    }))
    .unwrap();
    Object::ConfigMap(Arc::new(cm))
}

fn snapshot(objects: Vec<Object>) -> Snapshot {
    Snapshot {
        state: ClusterState::from_objects(objects),
        changes: Default::default(),
        errors: Vec::new(),
    }
}

/// Connects to the L4 port and reads the greeting: the endpoint's name.
async fn greeting(port: u16) -> Result<(String, TcpStream), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    let mut r = BufReader::new(&mut s);
    tokio::time::timeout(Duration::from_secs(5), r.read_line(&mut line))
        .await
        .map_err(|_| "no greeting".to_string())?
        .map_err(|e| e.to_string())?;
    if line.is_empty() {
        return Err("closed".into());
    }
    Ok((line.trim().to_string(), s))
}

async fn until(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f().await {
        assert!(Instant::now() < deadline, "{what}: not within 5 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_services_follow_the_configmap_round_robin_over_ready_endpoints() {
    let (a, _ta) = tcp_echo("a").await;
    let (b, _tb) = tcp_echo("b").await;
    let dead = refusing();
    let (p1, p2) = (free_port(), free_port());
    let objects = |data: serde_json::Value| {
        let mut o = service("db", &[a, b, dead]);
        o.push(configmap("tcp-services", data));
        o
    };
    let (tx, feed) = Feed::manual(snapshot(objects(
        json!({p1.to_string(): "default/db:80", "nonsense": "default/db:80"}),
    )));
    let mut registry = prometheus_client::registry::Registry::default();
    let _handle = component::start(
        IngressConfig {
            http: vec!["127.0.0.1:0".parse().unwrap()],
            l4: L4Config {
                tcp_services: Some(NamespacedName::new("ingress", "tcp-services")),
                ..L4Config::default()
            },
            ..IngressConfig::default()
        },
        feed.follow(),
        &mut registry,
    )
    .unwrap();
    until("the tcp-services port listens", async || {
        greeting(p1).await.is_ok()
    })
    .await;
    // Every connection reaches a live endpoint (the refusing one is
    // passed over for the next), both of them in turn.
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..9 {
        let (name, _) = greeting(p1).await.unwrap();
        *seen.entry(name).or_insert(0) += 1;
    }
    assert_eq!(
        seen.keys().cloned().collect::<Vec<_>>(),
        ["a", "b"],
        "{seen:?}"
    );
    // Bytes go both ways.
    let (_, mut kept) = greeting(p1).await.unwrap();
    kept.write_all(b"hello\n").await.unwrap();
    let mut line = String::new();
    BufReader::new(&mut kept)
        .read_line(&mut line)
        .await
        .unwrap();
    assert_eq!(line, "hello\n");

    // The ConfigMap moves the service to p2: p1 closes, p2 opens, and the
    // connection under way on p1 keeps working.
    tx.send_replace(Arc::new(snapshot(objects(
        json!({p2.to_string(): "default/db:80"}),
    ))));
    until("p2 listens", async || greeting(p2).await.is_ok()).await;
    until("p1 is closed", async || {
        TcpStream::connect(("127.0.0.1", p1)).await.is_err()
    })
    .await;
    kept.write_all(b"still there\n").await.unwrap();
    let mut line = String::new();
    BufReader::new(&mut kept)
        .read_line(&mut line)
        .await
        .unwrap();
    assert_eq!(line, "still there\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_services_keep_a_flow_per_client_and_close_it_when_idle() {
    let (a, _ta) = udp_echo("a").await;
    let (b, _tb) = udp_echo("b").await;
    let port = free_port();
    let mut objects = service_port("dns", ("dns", 53, "UDP"), &[a, b]);
    objects.push(configmap(
        "udp-services",
        json!({port.to_string(): "default/dns:53"}),
    ));
    let config = L4Config {
        udp_services: Some(NamespacedName::new("ingress", "udp-services")),
        ..L4Config::default()
    };
    let table = L4Table::build(&ClusterState::from_objects(objects), &config, &[]);
    assert!(table.problems.is_empty(), "{:?}", table.problems);
    let mut server = L4Server::new(
        vec!["127.0.0.1".parse().unwrap()],
        L4Settings {
            udp_idle_timeout: Duration::from_millis(300),
            ..L4Settings::default()
        },
    );
    assert!(server.apply(&table).is_empty());
    let listen: SocketAddr = ("127.0.0.1".parse::<std::net::IpAddr>().unwrap(), port).into();

    let ask = async |c: &UdpSocket, text: &str| -> String {
        c.send_to(text.as_bytes(), listen).await.unwrap();
        let mut buf = [0u8; 1500];
        let (n, from) = tokio::time::timeout(Duration::from_secs(2), c.recv_from(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        // The answer comes from the port the client sent to.
        assert_eq!(from, listen);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let c1 = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let c2 = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let first = ask(&c1, "one").await;
    let second = ask(&c2, "two").await;
    // Round robin over the endpoints, one per new client...
    let mut names = [first[..1].to_string(), second[..1].to_string()];
    names.sort();
    assert_eq!(names, ["a", "b"], "{first} {second}");
    // ...and a client stays with its endpoint while its flow lives.
    for i in 0..5 {
        let again = ask(&c1, &format!("more{i}")).await;
        assert_eq!(again, format!("{}:more{i}", &first[..1]));
    }
    assert_eq!(server.udp_flows(port), 2);
    // Quiet flows close.
    let start = Instant::now();
    while server.udp_flows(port) > 0 {
        assert!(start.elapsed() < Duration::from_secs(3), "flows still open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        start.elapsed() >= Duration::from_millis(200),
        "{:?}",
        start.elapsed()
    );
    // A port taken out of the table stops answering.
    assert!(server.apply(&L4Table::default()).is_empty());
    assert!(server.ports(ferry_model::Protocol::Udp).is_empty());
    c1.send_to(b"gone", listen).await.unwrap();
    let mut buf = [0u8; 64];
    assert!(
        tokio::time::timeout(Duration::from_millis(300), c1.recv_from(&mut buf))
            .await
            .map_or(true, |r| r.is_err()),
        "answered after removal"
    );
}
