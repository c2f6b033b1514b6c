//! The component as the agent runs it: following a feed of snapshots,
//! each change routes within 100 ms, and the applied version is reported.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use ferry_ingress::component::{self, IngressConfig};
use ferry_source::Feed;

/// The component with `workers` on a loopback port, fed `objects`, once
/// it routes by them; the feed's sender and the metrics registry.
async fn started(
    objects: Vec<ferry_model::Object>,
    workers: usize,
) -> (
    component::IngressHandle,
    tokio::sync::watch::Sender<Arc<ferry_source::Snapshot>>,
    prometheus_client::registry::Registry,
) {
    let first = snapshot(objects);
    let version = first.state.version();
    let (tx, feed) = Feed::manual(first);
    let mut registry = prometheus_client::registry::Registry::default();
    let handle = component::start(
        IngressConfig {
            http: vec!["127.0.0.1:0".parse().unwrap()],
            workers,
            ..IngressConfig::default()
        },
        feed.follow(),
        &mut registry,
    )
    .unwrap();
    let mut applied = handle.applied.clone();
    tokio::time::timeout(
        Duration::from_secs(5),
        applied.wait_for(|v| *v == Some(version)),
    )
    .await
    .unwrap()
    .unwrap();
    (handle, tx, registry)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_component_follows_snapshots_and_each_change_routes_within_100ms() {
    let a = upstream("a").await;
    let b = upstream("b").await;
    let base = |svc: &str, path: &str| {
        let mut objects = service("a", &[a.addr]);
        objects.extend(service("b", &[b.addr]));
        objects.push(ingress("web", "foo.test", &[(path, svc)]));
        objects
    };
    let (handle, tx, registry) = started(base("a", "/"), 1).await;
    let addr = handle.http[0];
    let mut client = Client::connect(addr).await;
    let (status, body) = client.get("foo.test", "/x").await.unwrap();
    assert_eq!((status.as_u16(), field(&body, "name")), (200, Some("a")));
    // Ten changes, each checked by a request as soon as it is reported.
    for i in 0..10 {
        let (svc, path) = if i % 2 == 0 {
            ("b", "/new")
        } else {
            ("a", "/")
        };
        let next = snapshot(base(svc, path));
        let changed = Instant::now();
        // States from different from_objects calls share version numbers;
        // the table's version is the one sent, so wait for the table itself.
        tx.send_replace(Arc::new(next));
        loop {
            let (status, body) = client.get("foo.test", path).await.unwrap();
            if status == 200 && field(&body, "name") == Some(svc) {
                break;
            }
            assert!(
                changed.elapsed() < Duration::from_millis(100),
                "change {i} not live after 100 ms"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.contains("ferry_ingress_ingresses 1"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_the_listeners_and_answer_every_connection() {
    let a = upstream("a").await;
    let mut objects = service("a", &[a.addr]);
    objects.push(ingress("web", "foo.test", &[("/", "a")]));
    let (handle, _tx, _registry) = started(objects, 2).await;
    let addr = handle.http[0];
    // 40 clients at once, three requests each on their own connection.
    let clients: Vec<_> = (0..40)
        .map(|_| {
            tokio::spawn(async move {
                let mut client = Client::connect(addr).await;
                let mut answers = Vec::new();
                for _ in 0..3 {
                    let (status, body) = client.get("foo.test", "/").await.unwrap();
                    answers.push((status.as_u16(), field(&body, "name").map(str::to_string)));
                }
                answers
            })
        })
        .collect();
    for c in clients {
        let answers = tokio::time::timeout(Duration::from_secs(10), c)
            .await
            .expect("a client got no answers within 10 s")
            .unwrap();
        assert!(
            answers
                .iter()
                .all(|(s, n)| *s == 200 && n.as_deref() == Some("a")),
            "{answers:?}"
        );
    }
    // Upstream connections are kept alive for the next requests.
    assert!(handle.gateway.idle_connections() >= 1);
    // Both worker threads exist (named ingress and ingress-1).
    let names: Vec<String> = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .collect();
    assert!(names.iter().any(|n| n == "ingress-1"), "{names:?}");
}
