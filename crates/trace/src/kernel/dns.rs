//! The real nameserver's answers: A queries for the names FROM's resolver
//! would try, in order, sent from FROM's namespace to the nameserver of its
//! resolv.conf, stopping at the first answer that carries records (as the C
//! library's resolver stops). Messages are built and read with
//! hickory-proto.
//!
//! Touches the network inside one lab namespace: a UDP socket opened
//! there (`ferry_sys::netns::in_netns`); one second per try, two tries a
//! name.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

use crate::TraceError;

/// A nameserver's answer to one A query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// `NOERROR`, `NXDOMAIN`, `SERVFAIL`, ...
    pub rcode: String,
    /// The answer section, as `A 10.0.0.1` or `CNAME example.com`, sorted.
    pub records: Vec<String>,
}

/// Each name asked, with its reply or why there was none.
pub type Replies = Vec<(String, Result<Reply, String>)>;

const TRIES: usize = 2;
const WAIT: Duration = Duration::from_secs(1);

/// Asks `server` (port 53) for the A records of `names` in order from
/// network namespace `netns`, until one answer has records. Each name
/// asked gives its reply or why there was none.
pub fn ask(netns: &str, server: IpAddr, names: &[String]) -> Result<Replies, TraceError> {
    let names = names.to_vec();
    ferry_sys::netns::in_netns(netns, move || {
        let mut out = Vec::new();
        for (i, name) in names.into_iter().enumerate() {
            let reply = query(server, &name, 0x7100 + i as u16);
            let done = reply.as_ref().is_ok_and(|r| !r.records.is_empty());
            out.push((name, reply));
            if done {
                break;
            }
        }
        out
    })
    .map_err(|e| TraceError::Kernel {
        netns: netns.to_string(),
        why: e.to_string(),
    })
}

fn query(server: IpAddr, name: &str, id: u16) -> Result<Reply, String> {
    let fqdn = Name::from_ascii(format!("{}.", name.trim_end_matches('.')))
        .map_err(|e| format!("{name:?} is not a DNS name: {e}"))?;
    let mut m = Message::new();
    m.set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true);
    m.add_query(Query::query(fqdn, RecordType::A));
    let packet = m.to_vec().map_err(|e| e.to_string())?;
    let any: SocketAddr = match server {
        IpAddr::V4(_) => "0.0.0.0:0".parse().expect("a literal address"),
        IpAddr::V6(_) => "[::]:0".parse().expect("a literal address"),
    };
    let socket = UdpSocket::bind(any).map_err(|e| format!("binding a UDP socket: {e}"))?;
    socket
        .connect(SocketAddr::new(server, 53))
        .map_err(|e| format!("{server}:53: {e}"))?;
    socket
        .set_read_timeout(Some(WAIT))
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 4096];
    let mut last = String::new();
    for _ in 0..TRIES {
        socket
            .send(&packet)
            .map_err(|e| format!("{server}:53: {e}"))?;
        loop {
            match socket.recv(&mut buf) {
                Ok(n) => {
                    let Ok(answer) = Message::from_vec(&buf[..n]) else {
                        continue;
                    };
                    if answer.id() != id {
                        continue;
                    }
                    return Ok(reply(&answer));
                }
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    last = format!("no answer from {server}:53 within {WAIT:?}");
                    break;
                }
                Err(e) => return Err(format!("{server}:53: {e}")),
            }
        }
    }
    Err(format!("{last} ({TRIES} tries)"))
}

fn reply(m: &Message) -> Reply {
    let mut records: Vec<String> = m
        .answers()
        .iter()
        .map(|r| match r.data() {
            RData::A(a) => format!("A {a}"),
            RData::CNAME(c) => format!("CNAME {}", c.0.to_string().trim_end_matches('.')),
            other => format!("{} {other}", other.record_type()),
        })
        .collect();
    records.sort();
    Reply {
        rcode: rcode(m.response_code()),
        records,
    }
}

/// The rcode's mnemonic, as dig prints it.
fn rcode(r: ResponseCode) -> String {
    match r {
        ResponseCode::NoError => "NOERROR".into(),
        ResponseCode::NXDomain => "NXDOMAIN".into(),
        ResponseCode::ServFail => "SERVFAIL".into(),
        ResponseCode::Refused => "REFUSED".into(),
        ResponseCode::FormErr => "FORMERR".into(),
        ResponseCode::NotImp => "NOTIMP".into(),
        other => format!("RCODE{}", u16::from(other)),
    }
}
