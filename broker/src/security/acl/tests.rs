use super::*;

use AclOperation as Op;
use AclPermissionType::{Allow, Deny};
use PatternType::{Literal, Prefixed};

// Also used by the decision tests (`authorize/tests.rs`).

pub(super) fn binding(
    resource_type: ResourceType,
    name: &str,
    pattern_type: PatternType,
    principal: &str,
    host: &str,
    operation: AclOperation,
    permission: AclPermissionType,
) -> AclBinding {
    AclBinding {
        resource_type,
        resource_name: name.to_string(),
        pattern_type,
        principal: principal.to_string(),
        host: host.to_string(),
        operation,
        permission,
    }
}

/// An ALLOW or DENY of `operation` on a topic pattern for a principal, from every host.
pub(super) fn topic(
    name: &str,
    pattern: PatternType,
    principal: &str,
    op: AclOperation,
    perm: AclPermissionType,
) -> AclBinding {
    binding(ResourceType::Topic, name, pattern, principal, "*", op, perm)
}

#[test]
fn enums_have_kafkas_codes_and_names() {
    let cases: &[(i8, &str)] = &[
        (0, "UNKNOWN"),
        (1, "ANY"),
        (2, "TOPIC"),
        (3, "GROUP"),
        (4, "CLUSTER"),
        (5, "TRANSACTIONAL_ID"),
        (6, "DELEGATION_TOKEN"),
        (7, "USER"),
    ];
    for (code, name) in cases {
        let value = ResourceType::from_code(*code).expect("a defined code");
        assert_eq!((value.code(), value.to_string().as_str()), (*code, *name));
    }
    assert_eq!(ResourceType::from_code(8), None);
    assert_eq!(ResourceType::from_code(-1), None);

    let ops: Vec<(i8, &str)> = Op::VALUES.iter().map(|op| (op.code(), op.name())).collect();
    assert_eq!(
        ops,
        [
            (0, "UNKNOWN"),
            (1, "ANY"),
            (2, "ALL"),
            (3, "READ"),
            (4, "WRITE"),
            (5, "CREATE"),
            (6, "DELETE"),
            (7, "ALTER"),
            (8, "DESCRIBE"),
            (9, "CLUSTER_ACTION"),
            (10, "DESCRIBE_CONFIGS"),
            (11, "ALTER_CONFIGS"),
            (12, "IDEMPOTENT_WRITE"),
            (13, "CREATE_TOKENS"),
            (14, "DESCRIBE_TOKENS"),
        ]
    );
    assert_eq!(Op::from_code(15), None);
    let patterns: Vec<(i8, &str)> = PatternType::VALUES
        .iter()
        .map(|p| (p.code(), p.name()))
        .collect();
    assert_eq!(
        patterns,
        [
            (0, "UNKNOWN"),
            (1, "ANY"),
            (2, "MATCH"),
            (3, "LITERAL"),
            (4, "PREFIXED")
        ]
    );
    let perms: Vec<(i8, &str)> = AclPermissionType::VALUES
        .iter()
        .map(|p| (p.code(), p.name()))
        .collect();
    assert_eq!(
        perms,
        [(0, "UNKNOWN"), (1, "ANY"), (2, "DENY"), (3, "ALLOW")]
    );
}

#[test]
fn names_parse_whatever_their_case_and_separators() {
    for text in [
        "CLUSTER_ACTION",
        "cluster_action",
        "ClusterAction",
        "cluster-action",
    ] {
        assert_eq!(
            text.parse::<AclOperation>().ok(),
            Some(Op::ClusterAction),
            "{text}"
        );
    }
    assert_eq!(
        "transactionalId".parse::<ResourceType>().ok(),
        Some(ResourceType::TransactionalId)
    );
    assert_eq!("prefixed".parse::<PatternType>().ok(), Some(Prefixed));
    assert_eq!("Allow".parse::<AclPermissionType>().ok(), Some(Allow));
    let err = "READS"
        .parse::<AclOperation>()
        .expect_err("not an operation");
    assert_eq!(err.to_string(), "\"READS\" is not an ACL operation");
    assert!("".parse::<ResourceType>().is_err());
}

#[test]
fn filter_match_selects_the_bindings_that_apply_to_a_name() {
    let acls = Acls::new(vec![
        topic("orders-eu", Literal, "User:alice", Op::Read, Allow),
        topic("orders-", Prefixed, "User:alice", Op::Read, Allow),
        topic("orders-eu-west", Prefixed, "User:alice", Op::Read, Allow),
        topic("*", Literal, "User:bob", Op::Write, Deny),
        topic("orders-e", Literal, "User:alice", Op::Read, Allow),
        topic("*", Prefixed, "User:alice", Op::Read, Allow),
        binding(
            ResourceType::Group,
            "orders-eu",
            Literal,
            "User:alice",
            "*",
            Op::Read,
            Allow,
        ),
    ]);
    let names = |filter: &AclBindingFilter| -> Vec<String> {
        acls.matching(filter)
            .map(|b| format!("{}:{}:{}", b.resource_type, b.pattern_type, b.resource_name))
            .collect()
    };
    let mut filter = AclBindingFilter {
        resource_type: ResourceType::Topic,
        resource_name: Some("orders-eu".into()),
        pattern_type: PatternType::Match,
        ..AclBindingFilter::any()
    };
    assert_eq!(
        names(&filter),
        [
            "TOPIC:LITERAL:*",
            "TOPIC:PREFIXED:orders-",
            "TOPIC:LITERAL:orders-eu"
        ]
    );
    filter.pattern_type = PatternType::Any;
    assert_eq!(names(&filter), ["TOPIC:LITERAL:orders-eu"]);
    filter.pattern_type = Prefixed;
    assert!(names(&filter).is_empty());
    filter.resource_name = Some("orders-".into());
    assert_eq!(names(&filter), ["TOPIC:PREFIXED:orders-"]);
    filter.pattern_type = Literal;
    filter.resource_name = Some("*".into());
    assert_eq!(names(&filter), ["TOPIC:LITERAL:*"]);
    // MATCH without a name selects every binding of the type.
    filter.pattern_type = PatternType::Match;
    filter.resource_name = None;
    assert_eq!(names(&filter).len(), 6);
    // ANY resource type, entry fields.
    let filter = AclBindingFilter {
        principal: Some("User:alice".into()),
        ..AclBindingFilter::any()
    };
    assert_eq!(names(&filter).len(), 6);
    let filter = AclBindingFilter {
        permission: Deny,
        ..AclBindingFilter::any()
    };
    assert_eq!(names(&filter), ["TOPIC:LITERAL:*"]);
    let filter = AclBindingFilter {
        operation: Op::Write,
        ..AclBindingFilter::any()
    };
    assert_eq!(names(&filter), ["TOPIC:LITERAL:*"]);
    // Principal and host compare exactly: a `*` filter selects the wildcard bindings only.
    let filter = AclBindingFilter {
        principal: Some("User:*".into()),
        ..AclBindingFilter::any()
    };
    assert!(names(&filter).is_empty());
    let filter = AclBindingFilter {
        host: Some("10.0.0.1".into()),
        ..AclBindingFilter::any()
    };
    assert!(names(&filter).is_empty());
    let filter = AclBindingFilter {
        host: Some("*".into()),
        ..AclBindingFilter::any()
    };
    assert_eq!(names(&filter).len(), 7);
    assert_eq!(names(&AclBindingFilter::any()).len(), 7);
}

#[test]
fn a_bindings_own_filter_selects_only_it() {
    let one = topic("orders", Literal, "User:alice", Op::Read, Allow);
    let others = [
        topic("orders", Literal, "User:alice", Op::Read, Deny),
        topic("orders", Prefixed, "User:alice", Op::Read, Allow),
        topic("orders", Literal, "User:bob", Op::Read, Allow),
        topic("orders", Literal, "User:alice", Op::Write, Allow),
        binding(
            ResourceType::Topic,
            "orders",
            Literal,
            "User:alice",
            "10.0.0.1",
            Op::Read,
            Allow,
        ),
    ];
    let filter = one.to_filter();
    assert!(filter.validate().is_ok());
    assert!(filter.matches(&one));
    for other in &others {
        assert!(!filter.matches(other), "{other}");
    }
}

#[test]
fn filters_with_unknown_fields_are_refused() {
    assert!(AclBindingFilter::any().validate().is_ok());
    let cases = [
        (
            AclBindingFilter {
                resource_type: ResourceType::Unknown,
                ..AclBindingFilter::any()
            },
            "resource type",
        ),
        (
            AclBindingFilter {
                pattern_type: PatternType::Unknown,
                ..AclBindingFilter::any()
            },
            "pattern type",
        ),
        (
            AclBindingFilter {
                operation: Op::Unknown,
                ..AclBindingFilter::any()
            },
            "operation",
        ),
        (
            AclBindingFilter {
                permission: AclPermissionType::Unknown,
                ..AclBindingFilter::any()
            },
            "permission type",
        ),
    ];
    for (filter, field) in cases {
        let err = filter.validate().expect_err("unknown");
        assert_eq!(
            err.to_string(),
            format!("an ACL filter cannot have an UNKNOWN {field}")
        );
    }
}

#[test]
fn create_accepts_what_kafka_stores() {
    let ok = [
        topic("orders", Literal, "User:alice", Op::Read, Allow),
        topic("orders-", Prefixed, "User:*", Op::All, Deny),
        topic("*", Literal, "User:*", Op::DescribeConfigs, Allow),
        // Kafka accepts a prefixed `*`: a prefix like any other.
        topic("*", Prefixed, "User:alice", Op::Read, Allow),
        binding(
            ResourceType::Cluster,
            "kafka-cluster",
            Literal,
            "User:alice",
            "10.0.0.1",
            Op::IdempotentWrite,
            Allow,
        ),
        binding(
            ResourceType::Group,
            "g",
            Literal,
            "User:alice",
            "*",
            Op::Delete,
            Allow,
        ),
        binding(
            ResourceType::TransactionalId,
            "tx",
            Prefixed,
            "User:alice",
            "*",
            Op::Write,
            Allow,
        ),
        binding(
            ResourceType::DelegationToken,
            "tok",
            Literal,
            "User:alice",
            "*",
            Op::Describe,
            Allow,
        ),
        binding(
            ResourceType::User,
            "bob",
            Literal,
            "User:alice",
            "*",
            Op::CreateTokens,
            Allow,
        ),
        topic("t", Literal, "Group:ops:eu", Op::Read, Allow),
    ];
    for binding in ok {
        assert!(binding.validate_for_create().is_ok(), "{binding}");
    }
}

#[test]
fn create_refuses_what_kafka_refuses() {
    let base = topic("orders", Literal, "User:alice", Op::Read, Allow);
    let with = |f: &dyn Fn(&mut AclBinding)| {
        let mut b = base.clone();
        f(&mut b);
        b.validate_for_create().expect_err("invalid").to_string()
    };
    let cases: Vec<(String, &str)> = vec![
        (
            with(&|b| b.resource_type = ResourceType::Any),
            "an ACL cannot be stored for the resource type ANY; use TOPIC, GROUP, CLUSTER, TRANSACTIONAL_ID, DELEGATION_TOKEN or USER",
        ),
        (
            with(&|b| b.resource_type = ResourceType::Unknown),
            "an ACL cannot be stored for the resource type UNKNOWN; use TOPIC, GROUP, CLUSTER, TRANSACTIONAL_ID, DELEGATION_TOKEN or USER",
        ),
        (
            with(&|b| b.pattern_type = PatternType::Match),
            "an ACL cannot be stored with the pattern type MATCH; use LITERAL or PREFIXED",
        ),
        (
            with(&|b| b.pattern_type = PatternType::Any),
            "an ACL cannot be stored with the pattern type ANY; use LITERAL or PREFIXED",
        ),
        (
            with(&|b| b.pattern_type = PatternType::Unknown),
            "an ACL cannot be stored with the pattern type UNKNOWN; use LITERAL or PREFIXED",
        ),
        (
            with(&|b| b.operation = Op::Any),
            "an ACL cannot be stored for the operation ANY; name one operation or ALL",
        ),
        (
            with(&|b| b.operation = Op::Unknown),
            "an ACL cannot be stored for the operation UNKNOWN; name one operation or ALL",
        ),
        (
            with(&|b| b.permission = AclPermissionType::Any),
            "an ACL cannot be stored with the permission type ANY; use ALLOW or DENY",
        ),
        (
            with(&|b| b.permission = AclPermissionType::Unknown),
            "an ACL cannot be stored with the permission type UNKNOWN; use ALLOW or DENY",
        ),
        (
            with(&|b| b.resource_name.clear()),
            "an ACL's resource name must not be empty",
        ),
        (
            with(&|b| b.principal = "alice".into()),
            "the principal \"alice\" is not of the form Type:name (for example User:alice)",
        ),
        (
            with(&|b| b.principal = "User:".into()),
            "the principal \"User:\" is not of the form Type:name (for example User:alice)",
        ),
        (
            with(&|b| b.principal = String::new()),
            "the principal \"\" is not of the form Type:name (for example User:alice)",
        ),
        (
            with(&|b| {
                b.resource_type = ResourceType::Cluster;
                b.operation = Op::Alter;
            }),
            "the only valid name for the CLUSTER resource is kafka-cluster, not \"orders\"",
        ),
        (
            with(&|b| b.operation = Op::ClusterAction),
            "the operation CLUSTER_ACTION does not apply to a TOPIC resource, which supports READ, WRITE, CREATE, DESCRIBE, DELETE, ALTER, DESCRIBE_CONFIGS, ALTER_CONFIGS, ALL",
        ),
        (
            with(&|b| {
                b.resource_type = ResourceType::Group;
                b.operation = Op::Write;
            }),
            "the operation WRITE does not apply to a GROUP resource, which supports READ, DESCRIBE, DELETE, ALL",
        ),
        (
            with(&|b| {
                b.resource_type = ResourceType::TransactionalId;
                b.operation = Op::Read;
            }),
            "the operation READ does not apply to a TRANSACTIONAL_ID resource, which supports DESCRIBE, WRITE, ALL",
        ),
        (
            with(&|b| {
                b.resource_type = ResourceType::DelegationToken;
                b.operation = Op::Write;
            }),
            "the operation WRITE does not apply to a DELEGATION_TOKEN resource, which supports DESCRIBE, ALL",
        ),
        (
            with(&|b| {
                b.resource_type = ResourceType::User;
                b.operation = Op::Describe;
            }),
            "the operation DESCRIBE does not apply to a USER resource, which supports CREATE_TOKENS, DESCRIBE_TOKENS, ALL",
        ),
        (
            with(&|b| {
                b.resource_type = ResourceType::Cluster;
                b.resource_name = CLUSTER_NAME.into();
                b.operation = Op::Read;
            }),
            "the operation READ does not apply to a CLUSTER resource, which supports CREATE, CLUSTER_ACTION, DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE, ALTER, DESCRIBE, ALL",
        ),
    ];
    for (got, want) in cases {
        assert_eq!(got, want);
    }
}

#[test]
fn records_round_trip_through_json() {
    let bindings = [
        topic(
            "orders-",
            Prefixed,
            "User:alice",
            Op::DescribeConfigs,
            Allow,
        ),
        binding(
            ResourceType::TransactionalId,
            "tx/ä\"1",
            Literal,
            "User:*",
            "0:0:0:0:0:0:0:1",
            Op::All,
            Deny,
        ),
    ];
    for b in bindings {
        let record = b.to_record().expect("serializable");
        assert_eq!(AclBinding::from_record(&record).expect("readable"), b);
        let plain = serde_json::to_string(&b).expect("serializable");
        assert_eq!(
            serde_json::from_str::<AclBinding>(&plain).expect("readable"),
            b
        );
    }
}

#[test]
fn version_1_record_is_this_exact_json() {
    let b = binding(
        ResourceType::Topic,
        "orders-",
        Prefixed,
        "User:alice",
        "10.0.0.1",
        Op::IdempotentWrite,
        Deny,
    );
    let v1 = r#"{"version":1,"resource_type":"TOPIC","resource_name":"orders-","pattern_type":"PREFIXED","principal":"User:alice","host":"10.0.0.1","operation":"IDEMPOTENT_WRITE","permission":"DENY"}"#;
    assert_eq!(
        String::from_utf8(b.to_record().expect("serializable")).expect("utf-8"),
        v1
    );
    assert_eq!(
        AclBinding::from_record(v1.as_bytes()).expect("v1 parses"),
        b
    );
    // A later writer's extra fields are ignored.
    let extended = v1.replace("\"version\":1,", "\"version\":1,\"created_by\":\"admin\",");
    assert_eq!(
        AclBinding::from_record(extended.as_bytes()).expect("v1 parses"),
        b
    );
}

#[test]
fn unreadable_records_are_refused() {
    let v2 = br#"{"version":2,"resource":{"type":"TOPIC"}}"#;
    let err = AclBinding::from_record(v2).expect_err("unknown version");
    assert_eq!(
        err.to_string(),
        "the ACL record has version 2, and this broker reads version 1"
    );
    assert!(matches!(
        AclBinding::from_record(b"not json"),
        Err(AclError::Record(_))
    ));
    let no_version = br#"{"resource_type":"TOPIC","resource_name":"t","pattern_type":"LITERAL","principal":"User:a","host":"*","operation":"READ","permission":"ALLOW"}"#;
    assert!(matches!(
        AclBinding::from_record(no_version),
        Err(AclError::Record(_))
    ));
    let bad_op = br#"{"version":1,"resource_type":"TOPIC","resource_name":"t","pattern_type":"LITERAL","principal":"User:a","host":"*","operation":"READS","permission":"ALLOW"}"#;
    assert!(matches!(
        AclBinding::from_record(bad_op),
        Err(AclError::Record(_))
    ));
}

#[test]
fn keys_are_stable_and_distinct() {
    let b = topic("orders-", Prefixed, "User:alice", Op::Read, Allow);
    assert_eq!(b.key(), "TOPIC/PREFIXED/orders-/User:alice/*/READ/ALLOW");
    let escaped = binding(
        ResourceType::Group,
        "a/b%c",
        Literal,
        "User:x/y",
        "*",
        Op::All,
        Deny,
    );
    assert_eq!(
        escaped.key(),
        "GROUP/LITERAL/a%2Fb%25c/User:x%2Fy/*/ALL/DENY"
    );
    // Moving a `/` between fields changes the key.
    let left = binding(
        ResourceType::Topic,
        "a/User:b",
        Literal,
        "User:c",
        "*",
        Op::Read,
        Allow,
    );
    let right = binding(
        ResourceType::Topic,
        "a",
        Literal,
        "User:b/User:c",
        "*",
        Op::Read,
        Allow,
    );
    assert_ne!(left.key(), right.key());
    let pct = binding(
        ResourceType::Topic,
        "a%2F",
        Literal,
        "User:c",
        "*",
        Op::Read,
        Allow,
    );
    let slash = binding(
        ResourceType::Topic,
        "a/",
        Literal,
        "User:c",
        "*",
        Op::Read,
        Allow,
    );
    assert_ne!(pct.key(), slash.key());
}

#[test]
fn bindings_print_as_kafka_prints_them() {
    let b = topic("orders", Literal, "User:alice", Op::Read, Allow);
    assert_eq!(
        b.to_string(),
        "(pattern=ResourcePattern(resourceType=TOPIC, name=orders, patternType=LITERAL), \
         entry=(principal=User:alice, host=*, operation=READ, permissionType=ALLOW))"
    );
}

#[test]
fn super_users_parse_kafkas_syntax() {
    assert_eq!(super_users("").expect("empty"), []);
    assert_eq!(super_users("  ").expect("blank"), []);
    assert_eq!(
        super_users(" User:admin ; User:CN=broker,O=Acme;;User:admin; ").expect("valid"),
        [
            Principal::user("admin"),
            Principal::user("CN=broker,O=Acme")
        ]
    );
    let err = super_users("User:admin;bob").expect_err("no type");
    assert_eq!(
        err.to_string(),
        "the principal \"bob\" is not of the form Type:name (for example User:alice)"
    );
}
