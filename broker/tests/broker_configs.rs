//! Dynamic broker configs through the handlers: DescribeConfigs, IncrementalAlterConfigs
//! and AlterConfigs on BROKER resources (the cluster default "" and this broker's id), on a
//! real broker with the embedded store. The black-box tests (tests/test_broker_configs.py)
//! drive the same through real clients, on etcd too.

#[macro_use]
mod handler_support;

use std::sync::Arc;

use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_configs_response::DescribeConfigsResult;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{
    AlterConfigsRequest, ApiKey, DescribeConfigsRequest, IncrementalAlterConfigsRequest,
    RequestKind, ResponseKind, alter_configs_request,
};
use kafka_protocol::protocol::StrBytes;
use strata_broker::broker::{Broker, SystemClock};
use strata_broker::security::{Caller, Principal};

use handler_support::{Store, broker, broker_with, call, call_as, caller, create, create_with};

on_every_store!(
    the_cluster_default_and_a_broker_value_apply_without_a_restart,
    refused_changes_name_the_config_and_store_nothing,
    values_that_do_not_apply_are_dropped_one_by_one,
);

const BROKER: i8 = 4;
const TOPIC: i8 = 2;
const SET: i8 = 0;
const DELETE: i8 = 1;
const APPEND: i8 = 2;
const INVALID_REQUEST: i16 = 42;
const INVALID_CONFIG: i16 = 40;
const DYNAMIC_TOPIC: i8 = 1;
const DYNAMIC_BROKER: i8 = 2;
const DYNAMIC_DEFAULT_BROKER: i8 = 3;
const DEFAULT: i8 = 5;

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// IncrementalAlterConfigs of one BROKER resource: (error code, message).
async fn alter(
    broker: &Arc<Broker>,
    resource: &str,
    ops: &[(i8, &str, Option<&str>)],
    validate_only: bool,
) -> (i16, String) {
    alter_as(broker, &caller(), resource, ops, validate_only).await
}

async fn alter_as(
    broker: &Arc<Broker>,
    as_: &Caller,
    resource: &str,
    ops: &[(i8, &str, Option<&str>)],
    validate_only: bool,
) -> (i16, String) {
    let body = IncrementalAlterConfigsRequest::default()
        .with_validate_only(validate_only)
        .with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(BROKER)
                .with_resource_name(text(resource))
                .with_configs(
                    ops.iter()
                        .map(|(op, name, value)| {
                            AlterableConfig::default()
                                .with_name(text(name))
                                .with_config_operation(*op)
                                .with_value(value.map(text))
                        })
                        .collect(),
                ),
        ]);
    let ResponseKind::IncrementalAlterConfigs(response) = call_as(
        broker,
        as_,
        ApiKey::IncrementalAlterConfigs,
        1,
        RequestKind::IncrementalAlterConfigs(body),
    )
    .await
    else {
        panic!("not an IncrementalAlterConfigs response");
    };
    let r = &response.responses[0];
    (
        r.error_code,
        r.error_message.as_deref().unwrap_or_default().to_string(),
    )
}

async fn describe(
    broker: &Arc<Broker>,
    resource_type: i8,
    resource: &str,
) -> DescribeConfigsResult {
    describe_as(broker, &caller(), resource_type, resource).await
}

async fn describe_as(
    broker: &Arc<Broker>,
    as_: &Caller,
    resource_type: i8,
    resource: &str,
) -> DescribeConfigsResult {
    let body = DescribeConfigsRequest::default()
        .with_include_synonyms(true)
        .with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(resource_type)
                .with_resource_name(text(resource)),
        ]);
    let ResponseKind::DescribeConfigs(response) = call_as(
        broker,
        as_,
        ApiKey::DescribeConfigs,
        4,
        RequestKind::DescribeConfigs(body),
    )
    .await
    else {
        panic!("not a DescribeConfigs response");
    };
    response.results[0].clone()
}

/// (value, source, read only, synonym sources) of one config of a DescribeConfigs result.
fn entry(result: &DescribeConfigsResult, name: &str) -> (Option<String>, i8, bool, Vec<i8>) {
    let c = result
        .configs
        .iter()
        .find(|c| c.name.as_str() == name)
        .unwrap_or_else(|| panic!("{name} is not listed: {result:?}"));
    (
        c.value.as_deref().map(str::to_string),
        c.config_source,
        c.read_only,
        c.synonyms.iter().map(|s| s.source).collect(),
    )
}

fn retention_ms(broker: &Broker, topic: &str) -> i64 {
    let topic = broker.topics.get(topic).expect("topic is open");
    topic.partitions[0].log_config().retention_ms
}

async fn the_cluster_default_and_a_broker_value_apply_without_a_restart(store: Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = broker(dir.path(), store).await;
    create(&broker, "plain", 1).await;
    create_with(&broker, "kept", 1, &[("retention.ms", "86400000")]).await;
    let static_retention = broker.config.log_retention_ms;
    assert_eq!(retention_ms(&broker, "plain"), static_retention);

    // The cluster default: a topic without its own retention.ms follows it at once, one
    // with an override keeps its own; new topics get the new num.partitions.
    assert_eq!(
        alter(
            &broker,
            "",
            &[
                (SET, "log.retention.ms", Some("60000")),
                (SET, "num.partitions", Some("3")),
            ],
            false,
        )
        .await,
        (0, String::new())
    );
    assert_eq!(retention_ms(&broker, "plain"), 60000);
    assert_eq!(retention_ms(&broker, "kept"), 86400000);
    create(&broker, "wide", -1).await;
    assert_eq!(
        broker.topics.get("wide").expect("created").partitions.len(),
        3
    );

    let own = describe(&broker, BROKER, "0").await;
    assert_eq!(own.error_code, 0, "{own:?}");
    assert_eq!(
        entry(&own, "log.retention.ms"),
        (
            Some("60000".into()),
            DYNAMIC_DEFAULT_BROKER,
            false,
            vec![DYNAMIC_DEFAULT_BROKER, DEFAULT]
        )
    );
    assert_eq!(entry(&own, "log.roll.ms").1, DEFAULT);
    assert!(entry(&own, "broker.id").2, "broker.id is read-only");
    let secret = own
        .configs
        .iter()
        .find(|c| c.is_sensitive)
        .expect("a sensitive setting is listed");
    assert_eq!(secret.value, None, "a sensitive value is never returned");
    let defaults = describe(&broker, BROKER, "").await;
    let names: Vec<&str> = defaults.configs.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["log.retention.ms", "num.partitions"]);
    // A topic reports an inherited value with the source of the broker setting behind it,
    // and its synonyms (Kafka's names), as Kafka does.
    let plain = describe(&broker, TOPIC, "plain").await;
    assert_eq!(
        entry(&plain, "retention.ms"),
        (
            Some("60000".into()),
            DYNAMIC_DEFAULT_BROKER,
            false,
            vec![DYNAMIC_DEFAULT_BROKER, DEFAULT]
        )
    );
    assert_eq!(entry(&plain, "segment.ms").1, DEFAULT);
    assert_eq!(
        entry(&describe(&broker, TOPIC, "kept").await, "retention.ms"),
        (
            Some("86400000".into()),
            DYNAMIC_TOPIC,
            false,
            vec![DYNAMIC_TOPIC, DYNAMIC_DEFAULT_BROKER, DEFAULT]
        )
    );

    // This broker's own value beats the cluster default; deleting it falls back.
    assert_eq!(
        alter(
            &broker,
            "0",
            &[(SET, "log.retention.ms", Some("1000"))],
            false
        )
        .await,
        (0, String::new())
    );
    assert_eq!(retention_ms(&broker, "plain"), 1000);
    assert_eq!(
        entry(&describe(&broker, BROKER, "0").await, "log.retention.ms"),
        (
            Some("1000".into()),
            DYNAMIC_BROKER,
            false,
            vec![DYNAMIC_BROKER, DYNAMIC_DEFAULT_BROKER, DEFAULT]
        )
    );
    assert_eq!(
        alter(&broker, "0", &[(DELETE, "log.retention.ms", None)], false).await,
        (0, String::new())
    );
    assert_eq!(retention_ms(&broker, "plain"), 60000);

    // AlterConfigs replaces the cluster default whole: num.partitions goes back.
    let body = AlterConfigsRequest::default().with_resources(vec![
        alter_configs_request::AlterConfigsResource::default()
            .with_resource_type(BROKER)
            .with_resource_name(text(""))
            .with_configs(vec![
                alter_configs_request::AlterableConfig::default()
                    .with_name(text("log.flush.interval.ms"))
                    .with_value(Some(text("250"))),
            ]),
    ]);
    let ResponseKind::AlterConfigs(response) = call(
        &broker,
        ApiKey::AlterConfigs,
        2,
        RequestKind::AlterConfigs(body),
    )
    .await
    else {
        panic!("not an AlterConfigs response");
    };
    assert_eq!(response.responses[0].error_code, 0, "{response:?}");
    let defaults = describe(&broker, BROKER, "").await;
    let names: Vec<&str> = defaults.configs.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["log.flush.interval.ms"]);
    assert_eq!(retention_ms(&broker, "plain"), static_retention);
    let plain = broker.topics.get("plain").expect("open");
    assert_eq!(plain.partitions[0].log_config().flush_ms, 250);
}

async fn refused_changes_name_the_config_and_store_nothing(store: Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = broker(dir.path(), store).await;
    create(&broker, "plain", 1).await;
    let refused = |(code, message): (i16, String), want: i16, names: &str| {
        assert_eq!(code, want, "{message}");
        assert!(message.contains(names), "{message} does not name {names}");
    };
    refused(
        alter(&broker, "", &[(SET, "broker.id", Some("7"))], false).await,
        INVALID_REQUEST,
        "broker.id",
    );
    refused(
        alter(&broker, "0", &[(SET, "no.such.config", Some("7"))], false).await,
        INVALID_REQUEST,
        "no.such.config",
    );
    refused(
        alter(
            &broker,
            "",
            &[(SET, "log.retention.ms", Some("soon"))],
            false,
        )
        .await,
        INVALID_REQUEST,
        "log.retention.ms",
    );
    refused(
        alter(&broker, "", &[(SET, "num.partitions", Some("0"))], false).await,
        INVALID_REQUEST,
        "num.partitions",
    );
    refused(
        alter(&broker, "", &[(SET, "log.retention.ms", None)], false).await,
        INVALID_REQUEST,
        "log.retention.ms",
    );
    refused(
        alter(
            &broker,
            "",
            &[(APPEND, "log.retention.ms", Some("1"))],
            false,
        )
        .await,
        INVALID_CONFIG,
        "log.retention.ms",
    );
    refused(
        alter(
            &broker,
            "7",
            &[(SET, "log.retention.ms", Some("1000"))],
            false,
        )
        .await,
        INVALID_REQUEST,
        "expected 0, but received 7",
    );
    refused(
        alter(
            &broker,
            "me",
            &[(SET, "log.retention.ms", Some("1000"))],
            false,
        )
        .await,
        INVALID_REQUEST,
        "Node id must be an integer",
    );
    let other = describe(&broker, BROKER, "7").await;
    assert_eq!(other.error_code, INVALID_REQUEST, "{other:?}");
    // validate_only checks and stores nothing.
    assert_eq!(
        alter(
            &broker,
            "",
            &[(SET, "log.retention.ms", Some("1000"))],
            true
        )
        .await,
        (0, String::new())
    );
    refused(
        alter(&broker, "", &[(SET, "log.retention.ms", Some("x"))], true).await,
        INVALID_REQUEST,
        "log.retention.ms",
    );
    assert!(describe(&broker, BROKER, "").await.configs.is_empty());
    assert_eq!(
        retention_ms(&broker, "plain"),
        broker.config.log_retention_ms
    );
}

/// A stored value this broker does not apply (a name a newer build stored; a segment size
/// under a floor raised since) costs only that value: on a restart the others apply, the
/// set can still be changed, and the unknown name can be deleted.
async fn values_that_do_not_apply_are_dropped_one_by_one(store: Store) {
    use strata_broker::cluster::ConfigScope;
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("data");
    {
        let config = strata_broker::config::Config {
            data_dir: data_dir.clone(),
            ..Default::default()
        };
        let stores = strata_broker::cluster::open(&config)
            .await
            .expect("open the metadata store");
        let stored: std::collections::BTreeMap<String, String> = [
            ("log.retention.ms", "2592000000"),
            ("log.segment.bytes", "2097152"),
            ("log.from.a.newer.build", "1"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert!(
            stores
                .metadata
                .set_broker_configs(ConfigScope::ClusterDefault, &Default::default(), &stored)
                .await
                .expect("store")
        );
    }
    // Restarted with a floor above the stored segment size.
    let broker = broker_with(dir.path(), store, Arc::new(SystemClock), |c| {
        c.log_segment_bytes_min = 4 << 20;
    })
    .await;
    let effective = broker.effective_config();
    assert_eq!(
        effective.log_retention_ms, 2592000000,
        "the other keys apply"
    );
    assert_eq!(effective.log_segment_bytes, 4 << 20, "lifted to the floor");
    create(&broker, "plain", 1).await;
    assert_eq!(retention_ms(&broker, "plain"), 2592000000);

    // The broker's own set and the cluster default can still be changed ...
    assert_eq!(
        alter(
            &broker,
            "0",
            &[(SET, "log.flush.interval.ms", Some("5"))],
            false
        )
        .await,
        (0, String::new())
    );
    assert_eq!(broker.effective_config().log_flush_ms, 5);
    assert_eq!(
        alter(&broker, "", &[(SET, "num.partitions", Some("2"))], false).await,
        (0, String::new())
    );
    assert_eq!(broker.effective_config().num_partitions, 2);
    // ... but not given a new value below the floor, which is refused by name.
    let (code, message) = alter(
        &broker,
        "",
        &[(SET, "log.segment.bytes", Some("3145728"))],
        false,
    )
    .await;
    assert_eq!(code, INVALID_REQUEST, "{message}");
    assert!(message.contains("log.segment.bytes"), "{message}");
    // The unknown name can be deleted; deleting an unstored one is still refused.
    assert_eq!(
        alter(
            &broker,
            "",
            &[(DELETE, "log.from.a.newer.build", None)],
            false
        )
        .await,
        (0, String::new())
    );
    let defaults = describe(&broker, BROKER, "").await;
    assert!(
        defaults
            .configs
            .iter()
            .all(|c| c.name.as_str() != "log.from.a.newer.build"),
        "{defaults:?}"
    );
    assert_eq!(
        alter(
            &broker,
            "",
            &[(DELETE, "log.from.a.newer.build", None)],
            false
        )
        .await
        .0,
        INVALID_REQUEST
    );
    assert_eq!(broker.effective_config().log_retention_ms, 2592000000);
}

/// Kafka's rule: broker configs need DESCRIBE_CONFIGS / ALTER_CONFIGS on the cluster.
#[tokio::test]
async fn broker_configs_need_the_cluster_acls() {
    use kafka_protocol::messages::CreateAclsRequest;
    use kafka_protocol::messages::create_acls_request::AclCreation;
    const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
    const RESOURCE_CLUSTER: i8 = 4;
    const LITERAL: i8 = 3;
    const DESCRIBE_CONFIGS: i8 = 10;
    const ALTER_CONFIGS: i8 = 11;
    const ALLOW: i8 = 3;

    let dir = tempfile::tempdir().expect("tempdir");
    let broker = broker_with(dir.path(), Store::Memory, Arc::new(SystemClock), |config| {
        config.authorizer = "acl".into();
        config.super_users = "User:admin".into();
    })
    .await;
    let user = |name: &str| {
        Caller::new(
            Principal::user(name),
            "SASL_PLAINTEXT".into(),
            std::net::IpAddr::from([127, 0, 0, 1]),
        )
    };
    let (admin, bob) = (user("admin"), user("bob"));
    let set_retention = [(SET, "log.retention.ms", Some("60000"))];
    assert_eq!(
        alter_as(&broker, &bob, "", &set_retention, false).await.0,
        CLUSTER_AUTHORIZATION_FAILED
    );
    assert_eq!(
        describe_as(&broker, &bob, BROKER, "0").await.error_code,
        CLUSTER_AUTHORIZATION_FAILED
    );
    assert!(
        describe_as(&broker, &admin, BROKER, "")
            .await
            .configs
            .is_empty(),
        "a refused change stores nothing"
    );

    let grant = |operation: i8| {
        AclCreation::default()
            .with_resource_type(RESOURCE_CLUSTER)
            .with_resource_name(text("kafka-cluster"))
            .with_resource_pattern_type(LITERAL)
            .with_principal(text("User:bob"))
            .with_host(text("*"))
            .with_operation(operation)
            .with_permission_type(ALLOW)
    };
    let ResponseKind::CreateAcls(created) = call_as(
        &broker,
        &admin,
        ApiKey::CreateAcls,
        3,
        RequestKind::CreateAcls(
            CreateAclsRequest::default()
                .with_creations(vec![grant(DESCRIBE_CONFIGS), grant(ALTER_CONFIGS)]),
        ),
    )
    .await
    else {
        panic!("not a CreateAcls response");
    };
    assert!(
        created.results.iter().all(|r| r.error_code == 0),
        "{created:?}"
    );
    assert_eq!(
        alter_as(&broker, &bob, "", &set_retention, false).await,
        (0, String::new())
    );
    let own = describe_as(&broker, &bob, BROKER, "0").await;
    assert_eq!(entry(&own, "log.retention.ms").0.as_deref(), Some("60000"));
}
