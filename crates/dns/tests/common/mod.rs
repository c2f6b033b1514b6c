//! Test helpers: a cluster from YAML, a ferry DNS server on a loopback
//! ephemeral port, a hickory-proto client over real UDP and TCP sockets, an
//! unbound upstream started on loopback and killed on drop, and a scripted
//! upstream for answers unbound will not give.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_dns::{Config, Listener, Server};
use ferry_model::ClusterState;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use prometheus_client::registry::Registry;

pub const CLUSTER: &str = include_str!("../fixtures/cluster.yaml");

/// The state of manifests `yaml`; panics on any manifest error.
pub fn state(yaml: &str) -> ClusterState {
    let d = ferry_model::decode("test.yaml", yaml);
    assert!(d.errors.is_empty(), "manifest errors: {:?}", d.errors);
    ClusterState::from_objects(d.objects.into_iter().map(|o| o.object))
}

pub struct Dns {
    pub server: Server,
    pub addr: SocketAddr,
    pub registry: Arc<Registry>,
    rt: tokio::runtime::Runtime,
}

impl Dns {
    pub fn start(config: Config, state: Option<&ClusterState>) -> Dns {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let mut registry = Registry::default();
        let server = Server::new(config, &mut registry).unwrap();
        let listeners = Listener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listeners[0].local_addr().unwrap();
        {
            let _guard = rt.enter();
            server.serve(listeners).unwrap();
        }
        if let Some(s) = state {
            server.update(s);
        }
        Dns {
            server,
            addr,
            registry: Arc::new(registry),
            rt,
        }
    }

    pub fn cluster(config: Config) -> Dns {
        Dns::start(config, Some(&state(CLUSTER)))
    }

    pub fn udp(&self, name: &str, t: RecordType) -> Message {
        udp(self.addr, &query(name, t, false)).expect("an answer over UDP")
    }

    pub fn tcp(&self, name: &str, t: RecordType) -> Message {
        tcp(self.addr, &query(name, t, false)).expect("an answer over TCP")
    }

    pub fn metrics(&self) -> String {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &self.registry).unwrap();
        s
    }

    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }
}

pub fn query(name: &str, t: RecordType, edns: bool) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(0x4242)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

/// One UDP exchange, retried as resolvers do (three tries, one second
/// each): a datagram may be dropped when the server's receive buffer is
/// full, as after a flood on a loaded machine.
pub fn udp_raw(addr: SocketAddr, packet: &[u8]) -> Option<Vec<u8>> {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut buf = vec![0u8; 65535];
    for _ in 0..3 {
        s.send_to(packet, addr).unwrap();
        if let Ok(n) = s.recv(&mut buf) {
            buf.truncate(n);
            return Some(buf);
        }
    }
    None
}

pub fn udp(addr: SocketAddr, packet: &[u8]) -> Option<Message> {
    udp_raw(addr, packet).map(|b| Message::from_vec(&b).expect("a well-formed answer"))
}

pub fn tcp(addr: SocketAddr, packet: &[u8]) -> Option<Message> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.write_all(&(packet.len() as u16).to_be_bytes()).unwrap();
    s.write_all(packet).unwrap();
    let mut len = [0u8; 2];
    s.read_exact(&mut len).ok()?;
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).ok()?;
    Some(Message::from_vec(&buf).expect("a well-formed answer"))
}

/// Answer records of type `t` as text (addresses, targets, SRV "prio weight port target").
pub fn data(records: &[Record], t: RecordType) -> Vec<String> {
    let mut v: Vec<String> = records
        .iter()
        .filter(|r| r.record_type() == t)
        .map(|r| match r.data() {
            RData::A(a) => a.to_string(),
            RData::AAAA(a) => a.to_string(),
            RData::CNAME(c) => c.0.to_string(),
            RData::PTR(p) => p.0.to_string(),
            RData::NS(n) => n.0.to_string(),
            RData::SRV(s) => format!(
                "{} {} {} {}",
                s.priority(),
                s.weight(),
                s.port(),
                s.target()
            ),
            RData::TXT(t) => t.to_string(),
            RData::SOA(s) => s.mname().to_string(),
            other => format!("{other:?}"),
        })
        .collect();
    v.sort();
    v
}

pub fn rcode(m: &Message) -> ResponseCode {
    m.response_code()
}

/// Whether `tool` is installed; on CI a missing tool fails the test.
pub fn have(tool: &str) -> bool {
    ferry_sys::testing::have_or_skip(tool)
}

/// A free loopback port for both UDP and TCP (a small race with other processes is accepted).
pub fn free_port() -> u16 {
    ferry_sys::free_loopback_port()
}

/// unbound on 127.0.0.1:ephemeral serving `local-data` lines, killed on drop.
pub struct Unbound {
    child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Unbound {
    pub fn start(zone: &str, local_data: &[String]) -> Option<Unbound> {
        if !have("unbound") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut conf = format!(
            "server:\n  interface: 127.0.0.1\n  port: {port}\n  do-daemonize: no\n  username: \"\"\n  chroot: \"\"\n  directory: \"{d}\"\n  pidfile: \"\"\n  use-syslog: no\n  logfile: \"\"\n  verbosity: 0\n  num-threads: 1\n  do-ip6: no\n  access-control: 127.0.0.0/8 allow\n  module-config: \"iterator\"\n  local-zone: \"{zone}.\" static\n",
            d = dir.path().display()
        );
        for l in local_data {
            conf.push_str(&format!("  local-data: \"{l}\"\n"));
        }
        let path = dir.path().join("unbound.conf");
        std::fs::write(&path, conf).unwrap();
        let child = Command::new("unbound")
            .arg("-d")
            .arg("-c")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("unbound starts");
        let u = Unbound {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let probe = query(&format!("{zone}."), RecordType::SOA, false);
        while udp_short(u.addr, &probe).is_none() {
            assert!(Instant::now() < deadline, "unbound did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(u)
    }
}

fn udp_short(addr: SocketAddr, packet: &[u8]) -> Option<Vec<u8>> {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    s.send_to(packet, addr).ok()?;
    let mut buf = vec![0u8; 65535];
    let n = s.recv(&mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

impl Drop for Unbound {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scripted upstream on a loopback UDP port: answers each query with
/// `reply(query)` (None: never answers) and records what it was asked.
/// Stops on drop, after 60 s, or after 10,000 packets, whichever is first.
pub struct FakeUpstream {
    pub addr: SocketAddr,
    asked: Arc<Mutex<Vec<Message>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeUpstream {
    pub fn start<F>(reply: F) -> FakeUpstream
    where
        F: Fn(&Message) -> Option<Message> + Send + 'static,
    {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (asked2, stop2) = (asked.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut buf = vec![0u8; 65535];
            for _ in 0..10_000 {
                if stop2.load(Ordering::Relaxed) || Instant::now() > deadline {
                    return;
                }
                let Ok((n, peer)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(q) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                asked2.lock().unwrap().push(q.clone());
                if let Some(mut a) = reply(&q) {
                    a.set_id(q.id());
                    let _ = sock.send_to(&a.to_vec().unwrap(), peer);
                }
            }
        });
        FakeUpstream {
            addr,
            asked,
            stop,
            thread: Some(thread),
        }
    }

    /// Every query received so far.
    pub fn asked(&self) -> Vec<Message> {
        self.asked.lock().unwrap().clone()
    }

    /// How many queries for `name` (any case) were received.
    pub fn asked_for(&self, name: &str) -> usize {
        self.asked()
            .iter()
            .filter(|q| {
                q.queries()
                    .iter()
                    .any(|q| q.name().to_ascii().eq_ignore_ascii_case(name))
            })
            .count()
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An empty response to `q`: its ID and question, NOERROR, RD and RA set as asked.
pub fn response_to(q: &Message) -> Message {
    let mut m = Message::new();
    m.set_id(q.id())
        .set_message_type(MessageType::Response)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(q.recursion_desired())
        .set_recursion_available(true);
    m.add_queries(q.queries().to_vec());
    m
}

/// A raw TCP connection to `addr` whose reads give up after `timeout`.
pub fn tcp_connect(addr: SocketAddr, timeout: Duration) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(timeout)).unwrap();
    s
}

/// True when the server closed `s` (EOF or reset) before its read timeout;
/// false when the connection is still open and silent.
pub fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => panic!("the server sent bytes nobody asked for"),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            false
        }
        Err(_) => true,
    }
}
