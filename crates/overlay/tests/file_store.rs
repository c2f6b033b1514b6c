//! The file store: nodes racing for subnets never share one, a node gets
//! its own lease back after a restart, and expired leases free their
//! subnet. Real files in a temporary directory, real threads.

use std::sync::Arc;

use ferry_overlay::store::{FileStore, LeaseStore, acquire};

mod common;
use common::attrs;

fn store() -> (tempfile::TempDir, Arc<FileStore>) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config"),
        r#"{"Network": "10.50.0.0/26", "SubnetLen": 28}"#,
    )
    .unwrap();
    let s = Arc::new(FileStore::new(dir.path()));
    (dir, s)
}

#[test]
fn racing_nodes_never_share_a_subnet_and_a_restarted_node_keeps_its_own() {
    let (_dir, s) = store();
    // 3 subnets (the first of 4 is skipped), 3 nodes all preferring the same one.
    let handles: Vec<_> = (0..3u8)
        .map(|i| {
            let s = s.clone();
            std::thread::spawn(move || acquire(s.as_ref(), &attrs(i), None, None, |_| 0).unwrap())
        })
        .collect();
    let mut got: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().unwrap().subnet)
        .collect();
    got.sort();
    got.dedup();
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(s.leases().unwrap().len(), 3);
    // A fourth node finds nothing free.
    let e = acquire(s.as_ref(), &attrs(3), None, None, |_| 0).unwrap_err();
    assert!(e.to_string().contains("no free subnet"), "{e}");
    // Node 1 restarts: the same subnet.
    let before = s
        .leases()
        .unwrap()
        .into_iter()
        .find(|l| l.attrs.public_ip == attrs(1).public_ip)
        .unwrap();
    let again = acquire(s.as_ref(), &attrs(1), None, None, |_| 2).unwrap();
    assert_eq!(again.subnet, before.subnet);
}

#[test]
fn an_expired_lease_frees_its_subnet_and_a_bad_config_names_the_file() {
    let (dir, s) = store();
    let l = acquire(s.as_ref(), &attrs(0), None, None, |_| 0).unwrap();
    let path = dir
        .path()
        .join("subnets")
        .join(ferry_overlay::subnet_key(l.subnet));
    let text = std::fs::read_to_string(&path).unwrap();
    let expired = text.replace(
        &text[text.find("\"Expiration\":").unwrap()..text.len() - 1],
        "\"Expiration\":1",
    );
    std::fs::write(&path, expired).unwrap();
    assert!(s.leases().unwrap().is_empty(), "expired");
    let other = acquire(s.as_ref(), &attrs(5), None, None, |_| 0).unwrap();
    assert_eq!(other.subnet, l.subnet, "the expired subnet is free again");
    std::fs::write(dir.path().join("config"), r#"{"Network": "10.0.0.0/29"}"#).unwrap();
    let e = acquire(s.as_ref(), &attrs(6), None, None, |_| 0).unwrap_err();
    assert!(
        e.to_string().contains("config") && e.to_string().contains("Network"),
        "{e}"
    );
}
