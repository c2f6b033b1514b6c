//! Property: what the kernel holds is what the backend says it applied.
//! After a full load and element deltas (over netlink, or `nft` for
//! interval sets), a netlink dump of every set of the live table decodes
//! to exactly the backend's elements. In a scratch network namespace; root
//! needed (skips without it, fails under CI=true).

mod common;

use std::collections::BTreeSet;

use common::plans::{plan_strategy, to_v6};
use common::{Ns, root};
use ferry_model::ServicePortName;
use ferry_proxy::Family;
use ferry_proxy::nft::NftBackend;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    #[test]
    fn a_dump_of_the_live_table_decodes_to_the_elements_the_backend_applied(
        plans in proptest::collection::vec(plan_strategy(), 2..5),
        ipv6 in any::<bool>(),
    ) {
        if !root() {
            return Ok(());
        }
        let (family, plans) = if ipv6 {
            (Family::V6, plans.iter().map(to_v6).collect::<Vec<_>>())
        } else {
            (Family::V4, plans)
        };
        let v4 = vec!["10.244.0.0/16".parse().unwrap(), "fd00:a::/32".parse().unwrap()];
        let v6 = vec!["10.96.0.0/12".parse().unwrap(), "fd00:b::/48".parse().unwrap()];
        let ns = Ns::new("ferry-test-readback");
        let mut b = NftBackend::in_netns(&ns.0, family);
        b.full_sync(&plans[0], &v4).unwrap();
        prop_assert_eq!(b.read_back().unwrap(), b.programmed(), "after the full load");
        for (i, pair) in plans.windows(2).enumerate() {
            let names: BTreeSet<ServicePortName> =
                pair[0].services.keys().chain(pair[1].services.keys()).cloned().collect();
            let names: Vec<ServicePortName> = names.into_iter().collect();
            // Every other sync also changes the cluster CIDRs (an interval set).
            let cidrs = if i % 2 == 0 { &v6 } else { &v4 };
            b.sync(&pair[1], &names, cidrs).unwrap();
            prop_assert_eq!(b.read_back().unwrap(), b.programmed(), "after sync {}", i + 1);
        }
        prop_assert!(b.programmed().len() > 1, "the table holds more than its canary");
    }
}
