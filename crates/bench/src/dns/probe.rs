//! How long a change takes to reach the answers: after one change in every
//! [`EVERY`], the churn writer hands its name and new address count to a
//! prober thread on the client's core, which asks the server for the name
//! every [`INTERVAL`] (plain UDP, one A query) until the answer carries
//! that many records. Consecutive generations of a churned Service differ
//! in their count, so the count alone tells the new answer from the old.

use std::net::UdpSocket;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use anyhow::Context;

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
        let found = loop {
            if change.written.elapsed() > LIMIT {
                break false;
            }
            id = id.wrapping_add(1);
            socket
                .send(&query(id, &change.name))
                .context("sending a probe")?;
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
/// desired.
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(12 + name.len() + 6);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// The answer count of a NOERROR reply to query `id`.
fn answers(reply: &[u8], id: u16) -> Option<u16> {
    let header = reply.get(..12)?;
    let is_reply = header[2] & 0x80 != 0;
    let noerror = header[3] & 0x0f == 0;
    (header[..2] == id.to_be_bytes() && is_reply && noerror)
        .then(|| u16::from_be_bytes([header[6], header[7]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_is_one_a_question_in_wire_form() {
        let q = query(0x1234, "churn-7.ns-0.svc.cluster.local");
        assert_eq!(&q[..4], &[0x12, 0x34, 0x01, 0x00]);
        assert_eq!(&q[4..6], &[0, 1], "one question");
        assert_eq!(&q[12..20], b"\x07churn-7");
        assert_eq!(&q[q.len() - 5..], &[0, 0, 1, 0, 1], "root, A, IN");
    }

    #[test]
    fn only_a_noerror_reply_to_the_same_id_counts() {
        let mut r = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 3, 0, 0, 0, 0];
        assert_eq!(answers(&r, 0x1234), Some(3));
        assert_eq!(answers(&r, 0x1235), None, "another query's reply");
        r[3] = 0x83;
        assert_eq!(answers(&r, 0x1234), None, "NXDOMAIN");
        r[3] = 0x80;
        r[2] = 0x01;
        assert_eq!(answers(&r, 0x1234), None, "a query, not a reply");
        assert_eq!(answers(&r[..8], 0x1234), None, "short");
    }
}
