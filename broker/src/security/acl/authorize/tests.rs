use std::net::IpAddr;

use proptest::prelude::*;

use super::*;
use crate::security::acl::tests::{binding, topic};

use AclOperation as Op;
use AclPermissionType::{Allow, Deny};
use PatternType::{Literal, Prefixed};

const HOST: &str = "10.0.0.1";

fn alice() -> Principal {
    Principal::user("alice")
}

fn can(acls: &Acls, principal: &Principal, op: AclOperation, topic: &str) -> bool {
    acls.authorize(principal, HOST, op, ResourceType::Topic, topic)
        .is_allowed()
}

#[test]
fn prefixed_pattern_applies_to_names_starting_with_it() {
    let acls = Acls::new(vec![topic(
        "orders-",
        Prefixed,
        "User:alice",
        Op::Read,
        Allow,
    )]);
    assert!(can(&acls, &alice(), Op::Read, "orders-eu"));
    assert!(can(&acls, &alice(), Op::Read, "orders-"));
    assert!(
        !can(&acls, &alice(), Op::Read, "orders"),
        "orders does not start with orders-"
    );
    assert!(!can(&acls, &alice(), Op::Read, "payments"));
    assert!(!can(&acls, &alice(), Op::Read, "eu-orders-x"));
    assert!(!can(&acls, &alice(), Op::Write, "orders-eu"));
    assert!(!can(&acls, &Principal::user("bob"), Op::Read, "orders-eu"));
    // The same name on another resource type is another resource.
    let group = acls.authorize(&alice(), HOST, Op::Read, ResourceType::Group, "orders-eu");
    assert_eq!(group, Decision::Denied);
}

#[test]
fn literal_pattern_applies_to_exactly_its_name() {
    let acls = Acls::new(vec![topic(
        "orders",
        Literal,
        "User:alice",
        Op::Write,
        Allow,
    )]);
    assert!(can(&acls, &alice(), Op::Write, "orders"));
    assert!(!can(&acls, &alice(), Op::Write, "orders-eu"));
    assert!(!can(&acls, &alice(), Op::Write, "order"));
}

#[test]
fn prefixes_compare_whole_characters() {
    let acls = Acls::new(vec![
        topic("é", Prefixed, "User:alice", Op::Read, Allow),
        topic("日本", Prefixed, "User:alice", Op::Write, Allow),
    ]);
    assert!(can(&acls, &alice(), Op::Read, "été"));
    assert!(!can(&acls, &alice(), Op::Read, "e"));
    assert!(can(&acls, &alice(), Op::Write, "日本語"));
    assert!(!can(&acls, &alice(), Op::Write, "日"));
}

#[test]
fn deny_beats_allow_wherever_either_comes_from() {
    let deny_sources = [
        topic("orders", Literal, "User:alice", Op::Read, Deny),
        topic("*", Literal, "User:alice", Op::Read, Deny),
        topic("ord", Prefixed, "User:alice", Op::Read, Deny),
        topic("orders", Literal, "User:*", Op::Read, Deny),
        topic("orders", Literal, "User:alice", Op::All, Deny),
    ];
    let allow_sources = [
        topic("orders", Literal, "User:alice", Op::Read, Allow),
        topic("*", Literal, "User:*", Op::All, Allow),
        topic("o", Prefixed, "User:alice", Op::Read, Allow),
    ];
    for deny in &deny_sources {
        for allow in &allow_sources {
            let acls = Acls::new(vec![allow.clone(), deny.clone()]);
            assert!(
                !can(&acls, &alice(), Op::Read, "orders"),
                "{deny} against {allow}"
            );
            let acls = Acls::new(vec![allow.clone()]);
            assert!(can(&acls, &alice(), Op::Read, "orders"), "{allow} alone");
        }
    }
}

#[test]
fn deny_of_one_operation_leaves_the_others() {
    let acls = Acls::new(vec![
        topic("orders", Literal, "User:alice", Op::All, Allow),
        topic("orders", Literal, "User:alice", Op::Write, Deny),
        topic("orders", Literal, "User:alice", Op::Read, Deny),
    ]);
    assert!(!can(&acls, &alice(), Op::Write, "orders"));
    assert!(!can(&acls, &alice(), Op::Read, "orders"));
    // Implication is for ALLOW only: denying READ does not deny DESCRIBE.
    assert!(can(&acls, &alice(), Op::Describe, "orders"));
    assert!(can(&acls, &alice(), Op::Delete, "orders"));
    // A DENY of DESCRIBE denies DESCRIBE only.
    let acls = Acls::new(vec![
        topic("orders", Literal, "User:alice", Op::All, Allow),
        topic("orders", Literal, "User:alice", Op::Describe, Deny),
    ]);
    assert!(!can(&acls, &alice(), Op::Describe, "orders"));
    assert!(can(&acls, &alice(), Op::Read, "orders"));
}

#[test]
fn all_allows_and_denies_every_operation() {
    let allow_all = Acls::new(vec![topic("orders", Literal, "User:alice", Op::All, Allow)]);
    let deny_all = Acls::new(vec![
        topic("orders", Literal, "User:alice", Op::All, Deny),
        topic("orders", Literal, "User:alice", Op::Read, Allow),
        topic("orders", Literal, "User:alice", Op::Describe, Allow),
    ]);
    for op in ResourceType::Topic.supported_operations() {
        assert!(can(&allow_all, &alice(), *op, "orders"), "{op}");
        assert!(!can(&deny_all, &alice(), *op, "orders"), "{op}");
    }
}

#[test]
fn describe_is_implied_by_read_write_delete_and_alter() {
    for op in [Op::Read, Op::Write, Op::Delete, Op::Alter, Op::Describe] {
        let acls = Acls::new(vec![topic("t", Literal, "User:alice", op, Allow)]);
        assert!(
            can(&acls, &alice(), Op::Describe, "t"),
            "{op} implies DESCRIBE"
        );
    }
    for op in [
        Op::Create,
        Op::DescribeConfigs,
        Op::AlterConfigs,
        Op::ClusterAction,
        Op::IdempotentWrite,
    ] {
        let acls = Acls::new(vec![topic("t", Literal, "User:alice", op, Allow)]);
        assert!(
            !can(&acls, &alice(), Op::Describe, "t"),
            "{op} does not imply DESCRIBE"
        );
    }
    let acls = Acls::new(vec![topic(
        "t",
        Literal,
        "User:alice",
        Op::AlterConfigs,
        Allow,
    )]);
    assert!(can(&acls, &alice(), Op::DescribeConfigs, "t"));
    let acls = Acls::new(vec![topic("t", Literal, "User:alice", Op::Alter, Allow)]);
    assert!(!can(&acls, &alice(), Op::DescribeConfigs, "t"));
    // Implication does not run the other way.
    let acls = Acls::new(vec![topic("t", Literal, "User:alice", Op::Describe, Allow)]);
    assert!(!can(&acls, &alice(), Op::Read, "t"));
    let acls = Acls::new(vec![topic(
        "t",
        Literal,
        "User:alice",
        Op::DescribeConfigs,
        Allow,
    )]);
    assert!(!can(&acls, &alice(), Op::AlterConfigs, "t"));
}

#[test]
fn wildcards_apply_to_every_principal_host_and_resource() {
    let acls = Acls::new(vec![
        binding(
            ResourceType::Topic,
            "*",
            Literal,
            "User:*",
            "*",
            Op::Read,
            Allow,
        ),
        binding(
            ResourceType::Group,
            "*",
            Literal,
            "User:bob",
            "*",
            Op::Read,
            Allow,
        ),
    ]);
    assert!(can(&acls, &alice(), Op::Read, "anything"));
    assert!(can(&acls, &Principal::user("bob"), Op::Read, "*"));
    assert!(can(&acls, &Principal::anonymous(), Op::Read, "x"));
    let decide =
        |p: &Principal, g: &str| acls.authorize(p, "192.168.1.9", Op::Read, ResourceType::Group, g);
    assert_eq!(decide(&Principal::user("bob"), "g1"), Decision::Allowed);
    assert_eq!(decide(&alice(), "g1"), Decision::Denied);
    // Kafka's wildcard principal is User:* for a principal of any type.
    let acls = Acls::new(vec![topic("t", Literal, "User:*", Op::Read, Allow)]);
    let service = Principal {
        principal_type: "Service".into(),
        name: "x".into(),
    };
    assert!(can(&acls, &service, Op::Read, "t"));
    // A prefixed `*` is an ordinary prefix, not a wildcard.
    let acls = Acls::new(vec![topic("*", Prefixed, "User:alice", Op::Read, Allow)]);
    assert!(!can(&acls, &alice(), Op::Read, "orders"));
    assert!(can(&acls, &alice(), Op::Read, "*orders"));
}

#[test]
fn hosts_must_match_exactly_unless_wildcard() {
    let acls = Acls::new(vec![binding(
        ResourceType::Topic,
        "t",
        Literal,
        "User:alice",
        "10.0.0.1",
        Op::Read,
        Allow,
    )]);
    let from = |host: &str| acls.authorize(&alice(), host, Op::Read, ResourceType::Topic, "t");
    assert_eq!(from("10.0.0.1"), Decision::Allowed);
    assert_eq!(from("10.0.0.2"), Decision::Denied);
    assert_eq!(
        from("*"),
        Decision::Denied,
        "a caller's host is never a wildcard"
    );
    // A deny from another host does not apply.
    let acls = Acls::new(vec![
        topic("t", Literal, "User:alice", Op::Read, Allow),
        binding(
            ResourceType::Topic,
            "t",
            Literal,
            "User:alice",
            "10.9.9.9",
            Op::Read,
            Deny,
        ),
    ]);
    assert!(can(&acls, &alice(), Op::Read, "t"));
    assert_eq!(
        acls.authorize(&alice(), "10.9.9.9", Op::Read, ResourceType::Topic, "t"),
        Decision::Denied
    );
}

#[test]
fn resources_without_acls_follow_the_default() {
    let acls = Acls::new(vec![
        topic("orders", Literal, "User:bob", Op::Read, Allow),
        topic("pay", Prefixed, "User:bob", Op::Write, Deny),
    ]);
    let decide = |name: &str, allow_if_no_acls: bool| {
        acls.authorize_with_default(
            &alice(),
            HOST,
            Op::Read,
            ResourceType::Topic,
            name,
            allow_if_no_acls,
        )
    };
    assert_eq!(decide("free", false), Decision::Denied);
    assert_eq!(decide("free", true), Decision::Allowed);
    // Another principal's binding (of any operation) makes the resource governed.
    assert_eq!(decide("orders", true), Decision::Denied);
    assert_eq!(decide("payments", true), Decision::Denied);
    assert!(acls.has_acls_for(ResourceType::Topic, "orders"));
    assert!(acls.has_acls_for(ResourceType::Topic, "payments"));
    assert!(!acls.has_acls_for(ResourceType::Topic, "free"));
    assert!(!acls.has_acls_for(ResourceType::Group, "orders"));
    assert!(!Acls::default().has_acls_for(ResourceType::Topic, "orders"));
    assert_eq!(
        Acls::default().authorize(&alice(), HOST, Op::Read, ResourceType::Topic, "t"),
        Decision::Denied
    );
    let wildcard = Acls::new(vec![topic("*", Literal, "User:bob", Op::Read, Allow)]);
    assert!(wildcard.has_acls_for(ResourceType::Topic, "anything"));
}

#[test]
fn duplicate_bindings_collapse_and_stay_sorted() {
    let a = topic("b", Literal, "User:alice", Op::Read, Allow);
    let b = topic("a", Literal, "User:alice", Op::Read, Allow);
    let acls = Acls::new(vec![a.clone(), b.clone(), a.clone()]);
    assert_eq!(acls.bindings(), [b, a]);
    assert_eq!(acls.len(), 2);
}

#[test]
fn host_addresses_print_as_java_prints_them() {
    let cases = [
        ("10.1.2.3", "10.1.2.3"),
        ("::1", "0:0:0:0:0:0:0:1"),
        ("2001:db8::ff00:42", "2001:db8:0:0:0:0:ff00:42"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("fe80::1:abcd", "fe80:0:0:0:0:0:1:abcd"),
    ];
    for (ip, want) in cases {
        let ip: IpAddr = ip.parse().expect("an address");
        assert_eq!(host_address(ip), want);
    }
}

#[test]
fn decision_cache_answers_as_its_snapshot_and_stays_bounded() {
    let acls = Acls::new(vec![
        topic("orders-", Prefixed, "User:alice", Op::Read, Allow),
        topic("orders-secret", Literal, "User:*", Op::All, Deny),
    ]);
    let cache = DecisionCache::new(acls.clone(), true, 3);
    assert_eq!(cache.acls().len(), 2);
    let names = [
        "orders-eu",
        "orders-secret",
        "free",
        "orders-us",
        "orders-eu",
        "free",
    ];
    for _ in 0..2 {
        for name in names {
            let cached = cache.authorize(&alice(), HOST, Op::Read, ResourceType::Topic, name);
            let direct = acls.authorize_with_default(
                &alice(),
                HOST,
                Op::Read,
                ResourceType::Topic,
                name,
                true,
            );
            assert_eq!(cached, direct, "{name}");
            assert!(cache.len() <= 3);
        }
    }
    assert_eq!(
        cache.authorize(&alice(), HOST, Op::Read, ResourceType::Topic, "free"),
        Decision::Allowed
    );
    assert_eq!(
        cache.authorize(
            &alice(),
            HOST,
            Op::Read,
            ResourceType::Topic,
            "orders-secret"
        ),
        Decision::Denied
    );
    // Different principals, hosts and operations are different entries.
    cache.authorize(
        &Principal::user("bob"),
        HOST,
        Op::Read,
        ResourceType::Topic,
        "orders-eu",
    );
    assert_eq!(
        cache.authorize(
            &Principal::user("bob"),
            HOST,
            Op::Read,
            ResourceType::Topic,
            "orders-eu"
        ),
        Decision::Denied
    );
    let off = DecisionCache::new(acls, false, 0);
    assert_eq!(
        off.authorize(&alice(), HOST, Op::Read, ResourceType::Topic, "orders-eu"),
        Decision::Allowed
    );
    assert_eq!(
        off.authorize(&alice(), HOST, Op::Read, ResourceType::Topic, "free"),
        Decision::Denied
    );
    assert!(off.is_empty());
}

#[test]
fn decision_cache_fills_and_clears() {
    let cache = DecisionCache::new(Acls::default(), false, 2);
    cache.authorize(&alice(), HOST, Op::Read, ResourceType::Topic, "a");
    cache.authorize(&alice(), HOST, Op::Read, ResourceType::Topic, "a");
    assert_eq!(cache.len(), 1);
    cache.authorize(&alice(), HOST, Op::Write, ResourceType::Topic, "a");
    assert_eq!(cache.len(), 2);
    cache.authorize(&alice(), HOST, Op::Read, ResourceType::Group, "a");
    assert_eq!(
        cache.len(),
        1,
        "cleared when full, then the new decision inserted"
    );
}

/// Kafka's rule written the slow, obvious way over every binding.
fn naive_decision(
    bindings: &[AclBinding],
    principal: &Principal,
    host: &str,
    op: AclOperation,
    resource_type: ResourceType,
    name: &str,
    allow_if_no_acls: bool,
) -> Decision {
    let on_resource = naive_on_resource(bindings, resource_type, name);
    let principal = principal.to_string();
    let applicable = || {
        on_resource
            .iter()
            .filter(|b| b.principal == principal || b.principal == "User:*")
            .filter(|b| b.host == "*" || b.host == host)
    };
    let denied = applicable()
        .any(|b| b.permission != Allow && (b.operation == Op::All || b.operation == op));
    let implies = |granted: AclOperation| match op {
        Op::Describe => matches!(granted, Op::Read | Op::Write | Op::Delete | Op::Alter),
        Op::DescribeConfigs => granted == Op::AlterConfigs,
        _ => false,
    };
    let allowed = applicable().any(|b| {
        b.permission == Allow
            && (b.operation == Op::All || b.operation == op || implies(b.operation))
    });
    if denied {
        Decision::Denied
    } else if allowed || (allow_if_no_acls && on_resource.is_empty()) {
        Decision::Allowed
    } else {
        Decision::Denied
    }
}

fn naive_on_resource<'a>(
    bindings: &'a [AclBinding],
    resource_type: ResourceType,
    name: &str,
) -> Vec<&'a AclBinding> {
    bindings
        .iter()
        .filter(|b| b.resource_type == resource_type)
        .filter(|b| match b.pattern_type {
            Literal => b.resource_name == name || b.resource_name == "*",
            Prefixed => name.starts_with(b.resource_name.as_str()),
            _ => false,
        })
        .collect()
}

fn arb_name() -> impl Strategy<Value = String> {
    prop_oneof![Just("*".to_string()), "[ab]{1,4}", "[aé]{1,2}"]
}

fn arb_binding() -> impl Strategy<Value = AclBinding> {
    (
        prop::sample::select(vec![ResourceType::Topic, ResourceType::Group]),
        arb_name(),
        prop::sample::select(vec![Literal, Prefixed]),
        prop::sample::select(vec!["User:alice", "User:bob", "User:*"]),
        prop::sample::select(vec!["*", "10.0.0.1", "10.0.0.2"]),
        prop::sample::select(Op::VALUES[2..].to_vec()),
        prop::sample::select(vec![Allow, Deny]),
    )
        .prop_map(|(t, name, pattern, principal, host, op, perm)| {
            binding(t, &name, pattern, principal, host, op, perm)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// The index gives the answers of a linear walk over every binding.
    #[test]
    fn index_decides_as_a_linear_scan(
        bindings in proptest::collection::vec(arb_binding(), 0..40),
        queries in proptest::collection::vec(
            (
                prop::sample::select(vec!["alice", "bob", "carol", "*"]),
                prop::sample::select(vec!["10.0.0.1", "10.0.0.2"]),
                prop::sample::select(Op::VALUES[3..].to_vec()),
                prop::sample::select(vec![ResourceType::Topic, ResourceType::Group]),
                "[abé*]{1,5}",
                any::<bool>(),
            ),
            1..20,
        ),
    ) {
        let acls = Acls::new(bindings.clone());
        for (user, host, op, resource_type, name, allow_if_no_acls) in queries {
            let principal = Principal::user(user);
            let indexed = acls.authorize_with_default(&principal, host, op, resource_type, &name, allow_if_no_acls);
            let naive = naive_decision(&bindings, &principal, host, op, resource_type, &name, allow_if_no_acls);
            prop_assert_eq!(indexed, naive, "{} {} {} {}:{}", principal, host, op, resource_type, name);
            let naive_default = naive_decision(&bindings, &principal, host, op, resource_type, &name, false);
            prop_assert_eq!(acls.authorize(&principal, host, op, resource_type, &name), naive_default);
            prop_assert_eq!(acls.has_acls_for(resource_type, &name), !naive_on_resource(&bindings, resource_type, &name).is_empty());
        }
    }
}
