//! Fuzz target: any bytes as a DNS request to the cluster DNS server (the
//! request path the UDP and TCP loops run: parse, index lookup, encode,
//! truncate). It must never panic, and every answer it sends must be a
//! well-formed DNS message.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn server() -> &'static ferry_dns::Server {
    static SERVER: OnceLock<ferry_dns::Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let mut registry = prometheus_client::registry::Registry::default();
        let config = ferry_dns::Config {
            pods: ferry_dns::PodMode::Insecure,
            ..Default::default()
        };
        let server = ferry_dns::Server::new(config, &mut registry).expect("default config is valid");
        let yaml = include_str!("../../crates/dns/tests/fixtures/cluster.yaml");
        let decoded = ferry_model::decode("cluster.yaml", yaml);
        server.update(&ferry_model::ClusterState::from_objects(
            decoded.objects.into_iter().map(|d| d.object),
        ));
        server
    })
}

fuzz_target!(|data: &[u8]| {
    for udp in [true, false] {
        if let Some(answer) = server().answer_inline(data, udp) {
            assert!(
                hickory_proto::op::Message::from_vec(&answer).is_ok(),
                "ferry sent a malformed answer to {data:?}"
            );
            if udp {
                assert!(answer.len() <= 1232);
            }
        }
    }
});
