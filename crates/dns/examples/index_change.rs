//! How long one change takes the DNS index at 20,000 Services (8 endpoints
//! each) and 100,000 Pods (`pods verified`): following the change set
//! (`Server::apply`) against a full rebuild (`Server::update`), median of
//! several changes of each kind. A measurement, not a test:
//!
//! ```text
//! cargo run -p ferry-dns --release --example index_change
//! ```

use std::fmt::Write;
use std::time::{Duration, Instant};

use ferry_dns::{Config, PodMode, Server};
use ferry_model::{ClusterState, Kind, ObjectKey, Update};
use prometheus_client::registry::Registry;

const SERVICES: usize = 20_000;
const ENDPOINTS: usize = 8;
const PODS: usize = 100_000;
const NAMESPACES: usize = 100;
/// Changes of each kind measured.
const ROUNDS: usize = 7;

fn pod_ip(j: usize) -> String {
    format!("10.{}.{}.{}", 64 + (j >> 16), (j >> 8) & 255, j & 255)
}

fn service_yaml(y: &mut String, i: usize, ready_mask: u8) {
    let ns = i % NAMESPACES;
    let headless = i.is_multiple_of(5);
    let cluster_ip = if headless {
        "None".to_string()
    } else {
        format!("10.96.{}.{}", i >> 8, i & 255)
    };
    let _ = write!(
        y,
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: s{i}, namespace: ns{ns}}}\nspec:\n  clusterIP: {cluster_ip}\n  ports: [{{name: http, port: 80}}, {{name: metrics, port: 9090}}]\n"
    );
    let _ = write!(
        y,
        "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: s{i}-1\n  namespace: ns{ns}\n  labels: {{kubernetes.io/service-name: s{i}}}\naddressType: IPv4\nports: [{{name: http, port: 8080}}, {{name: metrics, port: 9090}}]\nendpoints:\n"
    );
    for k in 0..ENDPOINTS {
        let ready = ready_mask & (1 << k) != 0;
        let _ = write!(
            y,
            "- addresses: [{}]\n  conditions: {{ready: {ready}}}\n",
            pod_ip((i * ENDPOINTS + k) % PODS)
        );
    }
}

fn pod_yaml(y: &mut String, j: usize) {
    let _ = write!(
        y,
        "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p{j}, namespace: ns{ns}}}\nspec:\n  containers: [{{name: c, image: busybox}}]\nstatus:\n  podIP: {ip}\n  podIPs: [{{ip: {ip}}}]\n",
        ip = pod_ip(j),
        ns = j % NAMESPACES
    );
}

fn updates(yaml: &str) -> Vec<Update> {
    let d = ferry_model::decode("bench.yaml", yaml);
    assert!(d.errors.is_empty(), "{:?}", d.errors.first());
    d.objects
        .into_iter()
        .map(|o| Update::Apply(o.object))
        .collect()
}

/// Makes the updates of the `r`th change of one kind.
type Change = dyn Fn(usize) -> Vec<Update>;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let start = Instant::now();
    let mut y = String::new();
    for i in 0..SERVICES {
        service_yaml(&mut y, i, 0xFF);
    }
    for j in 0..PODS {
        pod_yaml(&mut y, j);
    }
    let (mut state, _) = ClusterState::new().apply(updates(&y));
    println!(
        "cluster: {} objects, made in {:?}",
        state.len(),
        start.elapsed()
    );
    let config = Config {
        pods: PodMode::Verified,
        ..Config::default()
    };
    let server = Server::new(config, &mut Registry::default()).expect("a valid config");
    let t = Instant::now();
    server.update(&state);
    println!("first build: {} names in {:?}", server.names(), t.elapsed());

    let kinds: [(&str, &Change); 4] = [
        ("one endpoint of a Service turns not ready", &|r| {
            let mut y = String::new();
            service_yaml(&mut y, 10 * r + 3, !(1 << (r % ENDPOINTS)));
            updates(&y)
        }),
        ("a Pod is added", &|r| {
            let mut y = String::new();
            pod_yaml(&mut y, PODS + r);
            updates(&y)
        }),
        ("a Pod is deleted", &|r| {
            vec![Update::Delete(ObjectKey::new(
                Kind::Pod,
                format!("ns{}", (7 * r) % NAMESPACES),
                format!("p{}", 7 * r),
            ))]
        }),
        ("a Service with its EndpointSlice is added", &|r| {
            let mut y = String::new();
            service_yaml(&mut y, SERVICES + r, 0xFF);
            updates(&y)
        }),
    ];
    // Applies first, rebuilds after: a full rebuild frees a whole index,
    // and the allocator's clean-up of that lands on whatever allocates
    // next (several ms for the change after it), which would charge the
    // rebuild's cost to the change. The agent only rebuilds at start.
    let mut states = Vec::new();
    println!("median of {ROUNDS} changes each, apply (incremental):");
    for (what, make) in kinds {
        let mut took = Vec::new();
        for r in 0..ROUNDS {
            let (later, changes) = state.apply(make(r));
            let t = Instant::now();
            server.apply(&later, &changes);
            took.push(t.elapsed());
            states.push(later.clone());
            state = later;
        }
        println!("  {what}: {}", ms(median(took)));
    }
    let mut took = Vec::new();
    for s in states.iter().step_by(4) {
        let t = Instant::now();
        server.update(s);
        took.push(t.elapsed());
    }
    println!(
        "update (full rebuild, old index dropped), median of {}: {}",
        took.len(),
        ms(median(took))
    );
}
