//! How long a change takes to reach the answers: after one change in every
//! [`EVERY`], the churn writer hands its name and new address count to a
//! prober thread on the client's core, which asks the server for the name
//! every [`INTERVAL`] (plain UDP, one A query) until the answer carries
//! that many records. Consecutive generations of a churned Service differ
//! in their count, so the count alone tells the new answer from the old.
//! Messages are built and read with hickory-proto, as `ferry trace` does.

use std::net::UdpSocket;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use anyhow::Context;
use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};

/// One change in this many is probed (four a second at 100 changes/s).
pub(super) const EVERY: u64 = 25;
/// How often the prober asks while it waits.
const INTERVAL: Duration = Duration::from_micros(500);
/// A change not answered by then counts as unseen: a churned name is
/// rewritten a second later, after which its count means nothing.
pub(super) const LIMIT: Duration = Duration::from_millis(900);

/// A change to look for: its name, the records its answer has, and when
/// its file was renamed in.
pub(super) struct Change {
    pub(super) name: String,
    pub(super) records: u16,
    pub(super) written: Instant,
}

/// What the prober saw.
#[derive(Default)]
pub(super) struct Seen {
    /// From the rename to the first answer with the new records.
    pub(super) lags: Vec<Duration>,
    /// Changes not answered within [`LIMIT`].
    pub(super) unseen: usize,
}

/// Probes every change `changes` hands over, at the server on `port`,
/// until the sender is gone.
pub(super) fn run(port: u16, changes: Receiver<Change>) -> anyhow::Result<Seen> {
    let socket = UdpSocket::bind("127.0.0.1:0").context("binding the probe socket")?;
    socket
        .connect(("127.0.0.1", port))
        .context("connecting the probe socket")?;
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .context("setting the probe's timeout")?;
    let mut seen = Seen::default();
    let mut id = 0u16;
    let mut reply = [0u8; 1500];
    for change in changes {
        // Encoded once; each ask only takes a new id.
        let mut packet = query(0, &change.name)?;
        let found = loop {
            if change.written.elapsed() > LIMIT {
                break false;
            }
            id = id.wrapping_add(1);
            packet[..2].copy_from_slice(&id.to_be_bytes());
            socket.send(&packet).context("sending a probe")?;
            // A timeout or an old reply: ask again.
            if let Ok(n) = socket.recv(&mut reply)
                && answers(&reply[..n], id) == Some(change.records)
            {
                break true;
            }
            std::thread::sleep(INTERVAL);
        };
        if found {
            seen.lags.push(change.written.elapsed());
        } else {
            seen.unseen += 1;
        }
    }
    Ok(seen)
}

/// An A query for `name` (dotted, absolute or not) with `id`, recursion
/// desired, in wire form.
fn query(id: u16, name: &str) -> anyhow::Result<Vec<u8>> {
    let fqdn = Name::from_ascii(format!("{}.", name.trim_end_matches('.')))
        .with_context(|| format!("{name:?} is not a DNS name"))?;
    let mut m = Message::new();
    m.set_id(id).set_recursion_desired(true);
    m.add_query(Query::query(fqdn, RecordType::A));
    m.to_vec().context("encoding a probe")
}

/// The answer count of a NOERROR reply to query `id`.
fn answers(reply: &[u8], id: u16) -> Option<u16> {
    let m = Message::from_vec(reply).ok()?;
    (m.id() == id
        && m.message_type() == MessageType::Response
        && m.response_code() == ResponseCode::NoError)
        .then(|| m.answer_count())
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use hickory_proto::rr::{RData, Record, rdata::A};

    use super::*;

    #[test]
    fn the_probe_asks_one_a_question_for_the_name() {
        let q =
            Message::from_vec(&query(0x1234, "churn-7.ns-0.svc.cluster.local").unwrap()).unwrap();
        assert_eq!(q.id(), 0x1234);
        assert_eq!(q.message_type(), MessageType::Query);
        assert_eq!(q.queries().len(), 1);
        assert_eq!(
            q.queries()[0].name().to_ascii(),
            "churn-7.ns-0.svc.cluster.local."
        );
        assert_eq!(q.queries()[0].query_type(), RecordType::A);
    }

    #[test]
    fn only_a_noerror_reply_to_the_same_id_counts() {
        let reply = |id: u16, kind: MessageType, code: ResponseCode, records: u8| {
            let mut m = Message::new();
            m.set_id(id).set_message_type(kind).set_response_code(code);
            let name = Name::from_ascii("churn-7.ns-0.svc.cluster.local.").unwrap();
            for j in 1..=records {
                let a = RData::A(A(Ipv4Addr::new(10, 200, 7, j)));
                m.add_answer(Record::from_rdata(name.clone(), 30, a));
            }
            m.to_vec().unwrap()
        };
        let ok = reply(0x1234, MessageType::Response, ResponseCode::NoError, 3);
        assert_eq!(answers(&ok, 0x1234), Some(3));
        assert_eq!(answers(&ok, 0x1235), None, "another query's reply");
        let nx = reply(0x1234, MessageType::Response, ResponseCode::NXDomain, 0);
        assert_eq!(answers(&nx, 0x1234), None, "NXDOMAIN");
        let q = reply(0x1234, MessageType::Query, ResponseCode::NoError, 3);
        assert_eq!(answers(&q, 0x1234), None, "a query, not a reply");
        assert_eq!(answers(&ok[..8], 0x1234), None, "short");
    }
}
