//! The etcd lease store against a real etcd (Debian's etcd-server) on
//! 127.0.0.1 with free ports and a temporary data directory, one per test,
//! killed and reaped when the test ends. `etcdctl` (Debian's etcd-client)
//! plays the independent client and the flannel node: it writes what
//! flannel writes and reads back what ferry wrote. Needs the `etcd` and
//! `etcdctl` programs (fails under CI=true when missing, skips otherwise).

use std::net::{Ipv4Addr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_overlay::Lease;
use ferry_overlay::etcd::{EtcdOptions, EtcdStore, LeaseEvent, PeerFollower};
use ferry_overlay::store::{LEASE_TTL, LeaseStore, StoreError, acquire};
use ferry_sys::Tool;
use ferry_sys::testing::have_or_skip;

mod common;
use common::attrs;

/// One etcd member, gone when dropped; it can be stopped and started
/// again on the same ports and data.
struct Etcd {
    child: Option<Child>,
    url: String,
    peer_url: String,
    dir: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    ferry_sys::free_loopback_port()
}

/// A running etcd, or None when the programs are missing (and not CI).
fn etcd() -> Option<Etcd> {
    if !have_or_skip("etcd") || !have_or_skip("etcdctl") {
        return None;
    }
    let mut etcd = Etcd {
        child: None,
        url: format!("http://127.0.0.1:{}", free_port()),
        peer_url: format!("http://127.0.0.1:{}", free_port()),
        dir: tempfile::tempdir().unwrap(),
    };
    etcd.start();
    Some(etcd)
}

impl Etcd {
    /// Starts it and waits until it is healthy.
    fn start(&mut self) {
        let log_path = self.dir.path().join("etcd.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        let child = Command::new("etcd")
            .args([
                "--name",
                "ferry-test",
                "--data-dir",
                &self.dir.path().join("data").display().to_string(),
                "--listen-client-urls",
                &self.url,
                "--advertise-client-urls",
                &self.url,
                "--listen-peer-urls",
                &self.peer_url,
                "--initial-advertise-peer-urls",
                &self.peer_url,
                "--initial-cluster",
                &format!("ferry-test={}", self.peer_url),
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let start = Instant::now();
        while etcdctl(self, &["endpoint", "health"]).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "etcd did not become healthy: {}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills it and reaps it.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn etcdctl(etcd: &Etcd, args: &[&str]) -> Result<String, ferry_sys::ToolError> {
    Tool::new("etcdctl")
        .arg(format!("--endpoints={}", etcd.url))
        .args(args.iter().copied())
        .timeout(Duration::from_secs(10))
        .run()
        .map(|o| o.stdout)
}

fn ctl(etcd: &Etcd, args: &[&str]) -> String {
    etcdctl(etcd, args).unwrap()
}

/// A flannel node's lease grant: the lease id (hex, as etcdctl prints it).
fn grant(etcd: &Etcd, ttl: u64) -> String {
    // "lease 694d7f3c5a2e9a0b granted with TTL(86400s)"
    let out = ctl(etcd, &["lease", "grant", &ttl.to_string()]);
    out.split_whitespace().nth(1).unwrap().to_string()
}

/// The value etcdctl reads at `key` (bytes, exactly) and the seconds left
/// on its lease.
fn read_back(etcd: &Etcd, key: &str) -> Option<(String, u64)> {
    let out = ctl(etcd, &["get", key, "-w", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let kv = v["kvs"].as_array()?.first()?.clone();
    use base64::Engine;
    let value = base64::engine::general_purpose::STANDARD
        .decode(kv["value"].as_str().unwrap())
        .unwrap();
    let lease = kv["lease"].as_i64().unwrap();
    // "lease 694d... granted with TTL(86400s), remaining(86399s)"
    let ttl = ctl(etcd, &["lease", "timetolive", &format!("{lease:x}")]);
    let remaining = ttl
        .split("remaining(")
        .nth(1)
        .and_then(|r| r.split('s').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{ttl}"));
    Some((String::from_utf8(value).unwrap(), remaining))
}

/// The lease keys under the default prefix, as etcdctl lists them.
fn lease_keys(etcd: &Etcd) -> Vec<String> {
    let out = ctl(
        etcd,
        &[
            "get",
            "--prefix",
            "--keys-only",
            "/coreos.com/network/subnets/",
        ],
    );
    out.split_whitespace().map(str::to_string).collect()
}

fn options(etcd: &Etcd) -> EtcdOptions {
    EtcdOptions::new(vec![etcd.url.clone()])
}

fn store(etcd: &Etcd) -> EtcdStore {
    EtcdStore::new(&options(etcd)).unwrap()
}

fn lease(subnet: &str, i: u8) -> Lease {
    Lease {
        subnet: subnet.parse().unwrap(),
        attrs: attrs(i),
    }
}

#[test]
fn a_config_written_by_etcdctl_is_read_and_acquire_writes_what_flannel_writes() {
    let Some(etcd) = etcd() else { return };
    ctl(
        &etcd,
        &[
            "put",
            "/coreos.com/network/config",
            r#"{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}"#,
        ],
    );
    let s = store(&etcd);
    let config = s.config().unwrap();
    assert_eq!(config.network, "10.244.0.0/16".parse().unwrap());
    assert_eq!(config.subnet_len, 24);

    let mine = acquire(&s, &attrs(1), None, None, |_| 4).unwrap();
    let key = format!(
        "/coreos.com/network/subnets/{}",
        ferry_overlay::subnet_key(mine.subnet)
    );
    let (value, remaining) = read_back(&etcd, &key).expect("the lease key is in etcd");
    assert_eq!(
        value,
        r#"{"PublicIP":"172.18.0.11","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:00:01"}}"#,
        "the value flannel's json.Marshal writes"
    );
    assert!(
        (LEASE_TTL.as_secs() - 60..=LEASE_TTL.as_secs()).contains(&remaining),
        "a 24 h lease: {remaining}s left"
    );
    // The same node again: its own lease, renewed, not a second one.
    let again = acquire(&s, &attrs(1), None, None, |_| 9).unwrap();
    assert_eq!(again.subnet, mine.subnet);
    let keys = lease_keys(&etcd);
    assert_eq!(keys, vec![key.as_str()]);
}

#[test]
fn a_lease_a_flannel_node_wrote_is_seen_and_its_subnet_avoided() {
    let Some(etcd) = etcd() else { return };
    // A custom prefix, as flanneld's --etcd-prefix sets one.
    let prefix = "/ferry-test/network";
    ctl(
        &etcd,
        &[
            "put",
            &format!("{prefix}/config"),
            r#"{"Network": "10.60.0.0/28", "SubnetLen": 30}"#,
        ],
    );
    // 10.60.0.4/30 is the first subnet flannel hands out: a flannel node has it.
    let id = grant(&etcd, 86400);
    let flannel_value = r#"{"PublicIP":"172.18.0.50","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"12:c6:65:89:b4:e3"}}"#;
    ctl(
        &etcd,
        &[
            "put",
            &format!("--lease={id}"),
            &format!("{prefix}/subnets/10.60.0.4-30"),
            flannel_value,
        ],
    );
    let s = EtcdStore::new(&EtcdOptions {
        prefix: prefix.into(),
        ..options(&etcd)
    })
    .unwrap();
    let leases = s.leases().unwrap();
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].subnet, "10.60.0.4/30".parse().unwrap());
    assert_eq!(leases[0].attrs.public_ip, Ipv4Addr::new(172, 18, 0, 50));
    assert_eq!(
        leases[0].attrs.backend_data.as_ref().unwrap().vtep_mac,
        "12:c6:65:89:b4:e3"
    );
    // Every ferry node prefers the first free subnet: never the flannel node's.
    for i in 0..2 {
        let l = acquire(&s, &attrs(i), None, None, |_| 0).unwrap();
        assert_ne!(l.subnet, leases[0].subnet);
    }
    // And a ferry node that wanted that very subnet (its previous one) is refused it.
    let taken = s.create(&lease("10.60.0.4/30", 7), LEASE_TTL).unwrap();
    assert!(!taken, "create must not overwrite a flannel node's lease");
    assert_eq!(
        read_back(&etcd, &format!("{prefix}/subnets/10.60.0.4-30"))
            .unwrap()
            .0,
        flannel_value
    );
}

#[test]
fn racing_nodes_never_share_a_subnet_and_a_full_network_is_a_clear_error() {
    let Some(etcd) = etcd() else { return };
    // 8 subnets of /30, the first skipped: 7 for 10 nodes.
    ctl(
        &etcd,
        &[
            "put",
            "/coreos.com/network/config",
            r#"{"Network": "10.70.0.0/27", "SubnetLen": 30}"#,
        ],
    );
    let url = Arc::new(etcd.url.clone());
    let handles: Vec<_> = (0..10u8)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                // Each node its own store (its own connections).
                let s = EtcdStore::new(&EtcdOptions::new(vec![url.to_string()])).unwrap();
                // Every node prefers the same subnet: the worst race.
                acquire(&s, &attrs(i), None, None, |_| 0)
            })
        })
        .collect();
    let results: Vec<Result<Lease, StoreError>> =
        handles.into_iter().map(|h| h.join().unwrap()).collect();
    let mut got: Vec<_> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().map(|l| l.subnet))
        .collect();
    let failures: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().err().map(|e| e.to_string()))
        .collect();
    got.sort();
    let before = got.len();
    got.dedup();
    assert_eq!(before, got.len(), "two nodes got one subnet: {got:?}");
    assert_eq!(got.len(), 7, "every subnet taken: {got:?} {failures:?}");
    assert_eq!(failures.len(), 3);
    for f in &failures {
        assert!(f.contains("no free subnet left in 10.70.0.0/27"), "{f}");
    }
    // etcd agrees: seven keys, each holding one node's value.
    let keys = lease_keys(&etcd);
    assert_eq!(keys.len(), 7, "{keys:?}");
}

#[test]
fn a_short_lease_expires_its_followers_see_it_go_and_its_subnet_is_free_again() {
    let Some(etcd) = etcd() else { return };
    let s = store(&etcd);
    let l = lease("10.80.1.0/24", 1);
    assert!(s.create(&l, Duration::from_secs(2)).unwrap());
    let key = s.lease_key(l.subnet);
    let mut peers = PeerFollower::start(&s).unwrap();
    assert_eq!(peers.leases().count(), 1);
    assert!(s.time_left(l.subnet).unwrap().unwrap() <= Duration::from_secs(2));
    let start = Instant::now();
    while !ctl(&etcd, &["get", &key, "--keys-only"]).trim().is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "a 2 s lease still there after {:?}",
            start.elapsed()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Followers see it go.
    assert_eq!(
        peers.next(&s, Duration::from_secs(5)).unwrap(),
        vec![LeaseEvent::Removed(l.subnet)]
    );
    assert!(s.leases().unwrap().is_empty());
    assert_eq!(s.time_left(l.subnet).unwrap(), None);
    // Free: another node takes it.
    assert!(s.create(&lease("10.80.1.0/24", 2), LEASE_TTL).unwrap());
}

#[test]
fn renew_extends_the_ttl_and_a_lease_taken_meanwhile_is_reported_lost() {
    let Some(etcd) = etcd() else { return };
    let s = store(&etcd);
    let mine = lease("10.80.2.0/24", 1);
    assert!(s.create(&mine, Duration::from_secs(30)).unwrap());
    let key = s.lease_key(mine.subnet);
    let (_, before) = read_back(&etcd, &key).unwrap();
    assert!(before <= 30);
    s.renew(&mine, LEASE_TTL).unwrap();
    let (value, after) = read_back(&etcd, &key).unwrap();
    assert!(
        after > LEASE_TTL.as_secs() - 60,
        "renewed to 24 h: {after}s"
    );
    assert_eq!(value, mine.attrs.to_json());
    // A renewal with a new MAC (the node's device was recreated) is a renewal.
    let mut new_mac = mine.clone();
    new_mac.attrs.backend_data.as_mut().unwrap().vtep_mac = "02:00:00:00:00:aa".into();
    s.renew(&new_mac, LEASE_TTL).unwrap();
    assert_eq!(read_back(&etcd, &key).unwrap().0, new_mac.attrs.to_json());
    // The lease expired and another node took the subnet: renewing must not overwrite it.
    ctl(&etcd, &["del", &key]);
    let other = lease("10.80.2.0/24", 2);
    assert!(s.create(&other, LEASE_TTL).unwrap());
    let e = s.renew(&mine, LEASE_TTL).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("lease {key} is no longer this node's (held by 172.18.0.12)")
    );
    assert_eq!(read_back(&etcd, &key).unwrap().0, other.attrs.to_json());
}

#[test]
fn the_watch_reports_added_and_deleted_leases_and_waits_no_longer_than_asked() {
    let Some(etcd) = etcd() else { return };
    let s = store(&etcd);
    assert!(s.create(&lease("10.90.1.0/24", 1), LEASE_TTL).unwrap());
    let mut peers = PeerFollower::start(&s).unwrap();
    assert_eq!(peers.leases().count(), 1);

    // Nothing happens: back after the wait, with nothing.
    let start = Instant::now();
    assert_eq!(peers.next(&s, Duration::from_millis(500)).unwrap(), vec![]);
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(450) && waited < Duration::from_secs(3),
        "{waited:?}"
    );

    // A flannel node joins while we wait.
    let url = etcd.url.clone();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        Tool::new("etcdctl")
            .arg(format!("--endpoints={url}"))
            .args([
                "put",
                "/coreos.com/network/subnets/10.90.2.0-24",
                r#"{"PublicIP":"172.18.0.60","PublicIPv6":null,"BackendType":"host-gw"}"#,
            ])
            .run()
            .unwrap();
    });
    let start = Instant::now();
    let events = peers.next(&s, Duration::from_secs(10)).unwrap();
    writer.join().unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "woken by the change"
    );
    assert_eq!(events.len(), 1, "{events:?}");
    let LeaseEvent::Added(added) = &events[0] else {
        panic!("{events:?}")
    };
    assert_eq!(added.subnet, "10.90.2.0/24".parse().unwrap());
    assert_eq!(added.attrs.public_ip, Ipv4Addr::new(172, 18, 0, 60));
    assert_eq!(added.attrs.backend_type, "host-gw");

    // It leaves.
    ctl(&etcd, &["del", "/coreos.com/network/subnets/10.90.2.0-24"]);
    let events = peers.next(&s, Duration::from_secs(10)).unwrap();
    assert_eq!(
        events,
        vec![LeaseEvent::Removed("10.90.2.0/24".parse().unwrap())]
    );
    assert_eq!(
        peers.leases().map(|l| l.subnet).collect::<Vec<_>>(),
        vec!["10.90.1.0/24".parse().unwrap()]
    );
}

#[test]
fn a_compacted_revision_leads_to_a_relist_not_an_error() {
    let Some(etcd) = etcd() else { return };
    let s = store(&etcd);
    assert!(s.create(&lease("10.91.1.0/24", 1), LEASE_TTL).unwrap());
    assert!(s.create(&lease("10.91.2.0/24", 2), LEASE_TTL).unwrap());
    let mut peers = PeerFollower::start(&s).unwrap();
    let seen = peers.revision();
    // While this node was away: one lease left, one came, one changed, and
    // the history was compacted past what it saw.
    s.delete("10.91.1.0/24".parse().unwrap()).unwrap();
    assert!(s.create(&lease("10.91.3.0/24", 3), LEASE_TTL).unwrap());
    let mut changed = lease("10.91.2.0/24", 2);
    changed.attrs.backend_data.as_mut().unwrap().vtep_mac = "02:00:00:00:00:99".into();
    s.renew(&changed, LEASE_TTL).unwrap();
    let now = s.list().unwrap().revision;
    assert!(now > seen + 2);
    s.compact(now).unwrap();

    let mut events = peers.next(&s, Duration::from_secs(5)).unwrap();
    events.sort_by_key(|e| format!("{e:?}"));
    let subnets: Vec<String> = events
        .iter()
        .map(|e| match e {
            LeaseEvent::Added(l) => format!("+{}", l.subnet),
            LeaseEvent::Removed(s) => format!("-{s}"),
        })
        .collect();
    assert_eq!(
        subnets,
        vec!["+10.91.2.0/24", "+10.91.3.0/24", "-10.91.1.0/24"],
        "{events:?}"
    );
    assert_eq!(peers.revision(), now);
    // And it follows on from there.
    assert!(s.create(&lease("10.91.4.0/24", 4), LEASE_TTL).unwrap());
    let events = peers.next(&s, Duration::from_secs(5)).unwrap();
    assert!(
        matches!(&events[..], [LeaseEvent::Added(l)] if l.subnet == "10.91.4.0/24".parse().unwrap()),
        "{events:?}"
    );
}

/// The error `call` ends with, which must come within `limit`.
fn error_within(limit: Duration, call: impl FnOnce() -> Result<(), StoreError>) -> String {
    let start = Instant::now();
    let e = call().unwrap_err().to_string();
    assert!(start.elapsed() < limit, "{e} after {:?}", start.elapsed());
    e
}

#[test]
fn an_endpoint_down_fails_over_and_etcd_down_is_an_error_naming_the_endpoints() {
    let Some(mut etcd) = etcd() else { return };
    ctl(
        &etcd,
        &[
            "put",
            "/coreos.com/network/config",
            r#"{"Network": "10.244.0.0/16"}"#,
        ],
    );
    let dead = format!("http://127.0.0.1:{}", free_port());
    let timeouts = |endpoints: Vec<String>| EtcdOptions {
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(1),
        ..EtcdOptions::new(endpoints)
    };
    // The first endpoint is down: the second answers.
    let s = EtcdStore::new(&timeouts(vec![dead.clone(), etcd.url.clone()])).unwrap();
    assert_eq!(
        s.config().unwrap().network,
        "10.244.0.0/16".parse().unwrap()
    );

    // Every endpoint down.
    let url = etcd.url.clone();
    etcd.stop();
    let e = error_within(Duration::from_secs(3), || s.config().map(drop));
    assert!(
        e.starts_with(&format!("etcd is unreachable at {dead}, {url}: ")),
        "{e}"
    );
    let e = acquire(&s, &attrs(1), None, None, |_| 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("etcd is unreachable") && e.contains(&url), "{e}");
    // And an endpoint that accepts but never answers is bounded too.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    let s = EtcdStore::new(&timeouts(vec![silent_url.clone()])).unwrap();
    let e = error_within(Duration::from_secs(3), || s.leases().map(drop));
    assert!(
        e.contains(&silent_url) && e.contains("no answer within"),
        "{e}"
    );
}

#[test]
fn a_follower_keeps_its_view_while_etcd_is_down_and_resyncs_when_it_is_back() {
    let Some(mut etcd) = etcd() else { return };
    let s = EtcdStore::new(&EtcdOptions {
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(1),
        ..options(&etcd)
    })
    .unwrap();
    assert!(s.create(&lease("10.92.1.0/24", 1), LEASE_TTL).unwrap());
    let mut peers = PeerFollower::start(&s).unwrap();
    etcd.stop();
    let e = peers
        .next(&s, Duration::from_millis(300))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("etcd is unreachable") && e.contains(&etcd.url),
        "{e}"
    );
    assert_eq!(peers.leases().count(), 1, "the view is kept");
    etcd.start();
    // Back: a node joins, and the follower goes on from the revision it had.
    ctl(
        &etcd,
        &[
            "put",
            "/coreos.com/network/subnets/10.92.2.0-24",
            r#"{"PublicIP":"172.18.0.70","PublicIPv6":null,"BackendType":"host-gw"}"#,
        ],
    );
    let events = peers.next(&s, Duration::from_secs(5)).unwrap();
    assert!(
        matches!(&events[..], [LeaseEvent::Added(l)] if l.subnet == "10.92.2.0/24".parse().unwrap()),
        "{events:?}"
    );
    assert_eq!(peers.leases().count(), 2);
}
