//! The source contract: a follower that kept up gets the source's change
//! sets; one that lagged gets the exact diff from the state it last saw;
//! a new follower starts from the newest state with everything in it.

use std::sync::Arc;

use ferry_model::{ClusterState, Object, Update, decode};
use ferry_source::{Feed, Snapshot};

fn service(name: &str, ip: &str) -> Object {
    let yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec: {{clusterIP: {ip}, ports: [{{port: 80}}]}}\n"
    );
    decode("t.yaml", &yaml).objects.remove(0).object
}

fn next(state: &ClusterState, o: Object) -> Snapshot {
    let (state, changes) = state.apply([Update::Apply(o)]);
    Snapshot {
        state,
        changes,
        errors: vec![],
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn a_follower_that_lagged_gets_the_diff_from_what_it_saw() {
    let s0 = next(&ClusterState::new(), service("a", "10.96.0.1"));
    let (tx, feed) = Feed::manual(s0.clone());
    let mut fast = feed.follow();
    let mut slow = feed.follow();
    // Both start from the newest state, with every object in the changes.
    let first = block_on(fast.next()).unwrap();
    assert_eq!(first.changes.objects.len(), 1);
    assert_eq!(
        block_on(slow.next()).unwrap().state.version(),
        s0.state.version()
    );
    let s1 = next(&s0.state, service("b", "10.96.0.2"));
    tx.send(Arc::new(s1.clone())).unwrap();
    let got = block_on(fast.next()).unwrap();
    assert_eq!(
        got.changes, s1.changes,
        "kept up: the source's own change set"
    );
    let s2 = next(&s1.state, service("c", "10.96.0.3"));
    tx.send(Arc::new(s2.clone())).unwrap();
    // `slow` missed s1: it gets s2 with the changes since s0.
    let got = block_on(slow.next()).unwrap();
    assert_eq!(got.state.version(), s2.state.version());
    assert_eq!(got.changes, s0.state.diff(&s2.state));
    assert_eq!(got.changes.objects.len(), 2, "b and c");
    assert!(slow.try_next().is_none(), "nothing newer");
    // Dropping the sender ends every follower.
    drop(tx);
    assert!(block_on(slow.next()).is_none());
}

#[test]
fn a_first_state_is_published_without_its_change_set_and_followers_still_get_every_object() {
    let (publisher, feed) = Feed::publisher_pending();
    let mut early = feed.follow();
    let s1 = next(&ClusterState::new(), service("a", "10.96.0.1"));
    let s2 = next(&s1.state, service("b", "10.96.0.2"));
    publisher.publish(s1.clone());
    // Every key of the state, from nothing: the channel does not keep it.
    assert!(feed.latest().changes.is_empty());
    assert_eq!(feed.latest().state.version(), s1.state.version());
    let got = block_on(early.next()).unwrap();
    assert_eq!(got.changes, ClusterState::new().diff(&s1.state));
    assert_eq!(got.changes.objects.len(), 1);
    // A later change set is the source's own, and is kept for followers.
    publisher.publish(s2.clone());
    assert_eq!(feed.latest().changes, s2.changes);
    assert_eq!(block_on(early.next()).unwrap().changes, s2.changes);
    let mut late = feed.follow();
    assert_eq!(block_on(late.next()).unwrap().changes.objects.len(), 2);
}

#[test]
fn a_follower_that_reads_its_first_state_whole_gets_no_change_set_then_the_sources() {
    let s0 = next(&ClusterState::new(), service("a", "10.96.0.1"));
    let (tx, feed) = Feed::manual(s0.clone());
    let mut whole = feed.follow_whole();
    let first = block_on(whole.next()).unwrap();
    assert_eq!(first.state.version(), s0.state.version());
    assert!(first.changes.is_empty(), "the state is read whole");
    assert_eq!(first.changes.to_version, s0.state.version());
    let s1 = next(&s0.state, service("b", "10.96.0.2"));
    tx.send(Arc::new(s1.clone())).unwrap();
    assert_eq!(block_on(whole.next()).unwrap().changes, s1.changes);
}
