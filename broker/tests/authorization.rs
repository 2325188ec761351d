//! The ACL authorizer at the handler boundary, in process: a real broker with
//! `authorizer = acl`, requests from chosen principals through `handlers::handle`. What a
//! denied request gets back (Kafka's error, in Kafka's place), what Metadata shows, and
//! that an ACL change applies to the next request. The black-box tests (tests/test_acls.py)
//! do the same with real clients over SASL.

mod handler_support;

use std::net::IpAddr;
use std::sync::Arc;

use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, CreateAclsRequest, CreateTopicsRequest, DeleteAclsRequest, GroupId,
    InitProducerIdRequest, JoinGroupRequest, MetadataRequest, ProduceRequest, RequestKind,
    ResponseKind,
};
use kafka_protocol::protocol::StrBytes;
use strata_broker::broker::{Broker, SystemClock};
use strata_broker::security::{Caller, Principal};

use handler_support::{Store, batch, broker_with, call_as, name};

const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
const GROUP_AUTHORIZATION_FAILED: i16 = 30;
const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
const SECURITY_DISABLED: i16 = 54;

fn user(name: &str) -> Caller {
    Caller::new(
        Principal::user(name),
        "SASL_PLAINTEXT".into(),
        IpAddr::from([127, 0, 0, 1]),
    )
}

async fn acl_broker(dir: &std::path::Path) -> Arc<Broker> {
    broker_with(dir, Store::Memory, Arc::new(SystemClock), |config| {
        config.authorizer = "acl".into();
        config.super_users = "User:admin".into();
    })
    .await
}

async fn create_topics(broker: &Arc<Broker>, as_: &Caller, topics: &[&str]) -> Vec<i16> {
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(
            topics
                .iter()
                .map(|t| {
                    CreatableTopic::default()
                        .with_name(name(t))
                        .with_num_partitions(1)
                        .with_replication_factor(1)
                })
                .collect(),
        );
    let ResponseKind::CreateTopics(r) = call_as(
        broker,
        as_,
        ApiKey::CreateTopics,
        7,
        RequestKind::CreateTopics(request),
    )
    .await
    else {
        panic!("not a CreateTopics response");
    };
    topics
        .iter()
        .map(|t| {
            r.topics
                .iter()
                .find(|r| r.name.0.as_str() == *t)
                .map_or(-1, |r| r.error_code)
        })
        .collect()
}

/// (resource type, name, pattern, principal, operation) as Kafka codes: TOPIC 2, GROUP 3,
/// CLUSTER 4; LITERAL 3, PREFIXED 4; READ 3, WRITE 4, DESCRIBE 8; ALLOW 3.
fn allow(
    resource_type: i8,
    resource: &str,
    pattern: i8,
    principal: &str,
    operation: i8,
) -> AclCreation {
    AclCreation::default()
        .with_resource_type(resource_type)
        .with_resource_name(StrBytes::from_string(resource.into()))
        .with_resource_pattern_type(pattern)
        .with_principal(StrBytes::from_string(principal.into()))
        .with_host(StrBytes::from_static_str("*"))
        .with_operation(operation)
        .with_permission_type(3)
}

async fn create_acls(broker: &Arc<Broker>, as_: &Caller, creations: Vec<AclCreation>) -> Vec<i16> {
    let ResponseKind::CreateAcls(r) = call_as(
        broker,
        as_,
        ApiKey::CreateAcls,
        3,
        RequestKind::CreateAcls(CreateAclsRequest::default().with_creations(creations)),
    )
    .await
    else {
        panic!("not a CreateAcls response");
    };
    r.results.iter().map(|r| r.error_code).collect()
}

/// The error of producing one batch to each topic, in order.
async fn produce(broker: &Arc<Broker>, as_: &Caller, topics: &[&str]) -> Vec<i16> {
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(
            topics
                .iter()
                .map(|t| {
                    TopicProduceData::default()
                        .with_name(name(t))
                        .with_partition_data(vec![
                            PartitionProduceData::default()
                                .with_index(0)
                                .with_records(Some(batch(&["v"]))),
                        ])
                })
                .collect(),
        );
    let ResponseKind::Produce(r) = call_as(
        broker,
        as_,
        ApiKey::Produce,
        9,
        RequestKind::Produce(request),
    )
    .await
    else {
        panic!("not a Produce response");
    };
    topics
        .iter()
        .map(|t| {
            r.responses
                .iter()
                .find(|r| r.name.0.as_str() == *t)
                .map_or(-1, |r| r.partition_responses[0].error_code)
        })
        .collect()
}

/// Topic names Metadata shows `as_` (all topics), sorted.
async fn visible_topics(broker: &Arc<Broker>, as_: &Caller) -> Vec<String> {
    let ResponseKind::Metadata(r) = call_as(
        broker,
        as_,
        ApiKey::Metadata,
        12,
        RequestKind::Metadata(MetadataRequest::default().with_topics(None)),
    )
    .await
    else {
        panic!("not a Metadata response");
    };
    let mut names: Vec<String> = r
        .topics
        .iter()
        .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn prefixed_write_allows_its_topics_only_and_metadata_hides_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = acl_broker(dir.path()).await;
    let admin = user("admin");
    let alice = user("alice");
    assert_eq!(
        create_topics(&broker, &admin, &["orders-eu", "payments"]).await,
        [0, 0]
    );
    // Without any ACL alice may do nothing and sees nothing.
    assert_eq!(
        produce(&broker, &alice, &["orders-eu"]).await,
        [TOPIC_AUTHORIZATION_FAILED]
    );
    assert!(visible_topics(&broker, &alice).await.is_empty());
    // Only a super user may create ACLs.
    let write_orders = || vec![allow(2, "orders-", 4, "User:alice", 4)];
    assert_eq!(
        create_acls(&broker, &alice, write_orders()).await,
        [CLUSTER_AUTHORIZATION_FAILED]
    );
    assert_eq!(create_acls(&broker, &admin, write_orders()).await, [0]);
    // WRITE on the prefix: produce to orders-eu, not to payments, in one request.
    assert_eq!(
        produce(&broker, &alice, &["orders-eu", "payments"]).await,
        [0, TOPIC_AUTHORIZATION_FAILED]
    );
    // DESCRIBE is implied by WRITE: Metadata shows orders-eu, hides payments, and refuses
    // payments by name.
    assert_eq!(visible_topics(&broker, &alice).await, ["orders-eu"]);
    let ResponseKind::Metadata(named) = call_as(
        &broker,
        &alice,
        ApiKey::Metadata,
        12,
        RequestKind::Metadata(MetadataRequest::default().with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(name("payments"))),
        ]))),
    )
    .await
    else {
        panic!("not a Metadata response");
    };
    assert_eq!(named.topics[0].error_code, TOPIC_AUTHORIZATION_FAILED);
    // Creating topics needs CREATE.
    assert_eq!(
        create_topics(&broker, &alice, &["orders-us"]).await,
        [TOPIC_AUTHORIZATION_FAILED]
    );
    // Idempotent producers: WRITE on any topic is enough (KIP-679); nothing is not.
    let init = |who: Caller| {
        let broker = broker.clone();
        async move {
            let ResponseKind::InitProducerId(r) = call_as(
                &broker,
                &who,
                ApiKey::InitProducerId,
                4,
                RequestKind::InitProducerId(
                    InitProducerIdRequest::default().with_transaction_timeout_ms(60_000),
                ),
            )
            .await
            else {
                panic!("not an InitProducerId response");
            };
            r.error_code
        }
    };
    assert_eq!(init(alice.clone()).await, 0);
    assert_eq!(init(user("mallory")).await, CLUSTER_AUTHORIZATION_FAILED);
    // Removing the ACL applies to the next request.
    let ResponseKind::DeleteAcls(deleted) = call_as(
        &broker,
        &admin,
        ApiKey::DeleteAcls,
        3,
        RequestKind::DeleteAcls(DeleteAclsRequest::default().with_filters(vec![
            DeleteAclsFilter::default()
                .with_resource_type_filter(2)
                .with_resource_name_filter(Some(StrBytes::from_static_str("orders-")))
                .with_pattern_type_filter(4)
                .with_principal_filter(None)
                .with_host_filter(None)
                .with_operation(1)
                .with_permission_type(1),
        ])),
    )
    .await
    else {
        panic!("not a DeleteAcls response");
    };
    assert_eq!(deleted.filter_results[0].matching_acls.len(), 1);
    assert_eq!(
        produce(&broker, &alice, &["orders-eu"]).await,
        [TOPIC_AUTHORIZATION_FAILED]
    );
    // Listing ACLs needs DESCRIBE on the cluster.
    let ResponseKind::DescribeAcls(listed) = call_as(
        &broker,
        &user("carol"),
        ApiKey::DescribeAcls,
        2,
        RequestKind::DescribeAcls(
            kafka_protocol::messages::DescribeAclsRequest::default()
                .with_resource_type_filter(1)
                .with_resource_name_filter(None)
                .with_pattern_type_filter(1)
                .with_principal_filter(None)
                .with_host_filter(None)
                .with_operation(1)
                .with_permission_type(1),
        ),
    )
    .await
    else {
        panic!("not a DescribeAcls response");
    };
    assert_eq!(listed.error_code, CLUSTER_AUTHORIZATION_FAILED);
    // The super user is never refused.
    assert_eq!(
        produce(&broker, &admin, &["orders-eu", "payments"]).await,
        [0, 0]
    );
}

#[tokio::test]
async fn a_group_needs_read_on_the_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = acl_broker(dir.path()).await;
    let admin = user("admin");
    let bob = user("bob");
    let join = |who: Caller| {
        let broker = broker.clone();
        async move {
            let request = JoinGroupRequest::default()
                .with_group_id(GroupId(StrBytes::from_static_str("readers")))
                .with_session_timeout_ms(10_000)
                .with_rebalance_timeout_ms(10_000)
                .with_protocol_type(StrBytes::from_static_str("consumer"));
            let ResponseKind::JoinGroup(r) = call_as(
                &broker,
                &who,
                ApiKey::JoinGroup,
                5,
                RequestKind::JoinGroup(request),
            )
            .await
            else {
                panic!("not a JoinGroup response");
            };
            r.error_code
        }
    };
    assert_eq!(join(bob.clone()).await, GROUP_AUTHORIZATION_FAILED);
    // READ on another group does not help; READ on this one lets the join through to the
    // coordinator (which then answers on its own terms).
    assert_eq!(
        create_acls(&broker, &admin, vec![allow(3, "writers", 3, "User:bob", 3)]).await,
        [0]
    );
    assert_eq!(join(bob.clone()).await, GROUP_AUTHORIZATION_FAILED);
    assert_eq!(
        create_acls(&broker, &admin, vec![allow(3, "readers", 3, "User:bob", 3)]).await,
        [0]
    );
    assert_ne!(join(bob).await, GROUP_AUTHORIZATION_FAILED);
}

#[tokio::test]
async fn without_the_acl_authorizer_everything_is_allowed_and_acl_apis_say_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = broker_with(dir.path(), Store::Memory, Arc::new(SystemClock), |_| {}).await;
    let alice = user("alice");
    assert_eq!(create_topics(&broker, &alice, &["t"]).await, [0]);
    assert_eq!(produce(&broker, &alice, &["t"]).await, [0]);
    assert_eq!(visible_topics(&broker, &alice).await, ["t"]);
    assert_eq!(
        create_acls(&broker, &alice, vec![allow(2, "t", 3, "User:bob", 3)]).await,
        [SECURITY_DISABLED]
    );
}

/// Reassignment and leader election need ALTER on the cluster, listing DESCRIBE; without
/// them each is refused whole, and with them the one broker answers (its own id is the
/// only assignable broker).
#[tokio::test]
async fn reassignments_and_elections_need_the_cluster_acls() {
    use kafka_protocol::messages::alter_partition_reassignments_request::{
        ReassignablePartition, ReassignableTopic,
    };
    use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
    use kafka_protocol::messages::{
        AlterPartitionReassignmentsRequest, BrokerId, ElectLeadersRequest,
        ListPartitionReassignmentsRequest,
    };

    let dir = tempfile::tempdir().expect("tempdir");
    let broker = acl_broker(dir.path()).await;
    let admin = user("admin");
    let ops = user("ops");
    assert_eq!(create_topics(&broker, &admin, &["moved"]).await, vec![0]);
    let reassign = |replicas: Vec<i32>| {
        RequestKind::AlterPartitionReassignments(
            AlterPartitionReassignmentsRequest::default().with_topics(vec![
                ReassignableTopic::default()
                    .with_name(name("moved"))
                    .with_partitions(vec![
                        ReassignablePartition::default()
                            .with_partition_index(0)
                            .with_replicas(Some(replicas.into_iter().map(BrokerId).collect())),
                    ]),
            ]),
        )
    };
    let elect = || {
        RequestKind::ElectLeaders(
            ElectLeadersRequest::default()
                .with_election_type(0)
                .with_topic_partitions(Some(vec![
                    TopicPartitions::default()
                        .with_topic(name("moved"))
                        .with_partitions(vec![0]),
                ])),
        )
    };
    let list =
        || RequestKind::ListPartitionReassignments(ListPartitionReassignmentsRequest::default());
    // ElectLeaders v0 has no top-level error: the refusal goes on each partition.
    let ResponseKind::ElectLeaders(v0) =
        call_as(&broker, &ops, ApiKey::ElectLeaders, 0, elect()).await
    else {
        panic!("not an ElectLeaders response");
    };
    let codes: Vec<i16> = v0
        .replica_election_results
        .iter()
        .flat_map(|t| t.partition_result.iter().map(|p| p.error_code))
        .collect();
    assert_eq!(codes, vec![CLUSTER_AUTHORIZATION_FAILED]);
    // (top-level error, partition errors) of each answer.
    async fn outcome(broker: &Arc<Broker>, as_: &Caller, body: RequestKind) -> (i16, Vec<i16>) {
        let (key, version) = match &body {
            RequestKind::AlterPartitionReassignments(_) => (ApiKey::AlterPartitionReassignments, 1),
            RequestKind::ElectLeaders(_) => (ApiKey::ElectLeaders, 2),
            _ => (ApiKey::ListPartitionReassignments, 0),
        };
        match call_as(broker, as_, key, version, body).await {
            ResponseKind::AlterPartitionReassignments(r) => (
                r.error_code,
                r.responses
                    .iter()
                    .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
                    .collect(),
            ),
            ResponseKind::ElectLeaders(r) => (
                r.error_code,
                r.replica_election_results
                    .iter()
                    .flat_map(|t| t.partition_result.iter().map(|p| p.error_code))
                    .collect(),
            ),
            ResponseKind::ListPartitionReassignments(r) => (r.error_code, Vec::new()),
            _ => panic!("unexpected response"),
        }
    }
    for (body, partitions) in [
        (reassign(vec![0]), vec![]),
        (elect(), vec![CLUSTER_AUTHORIZATION_FAILED]),
        (list(), vec![]),
    ] {
        assert_eq!(
            outcome(&broker, &ops, body).await,
            (CLUSTER_AUTHORIZATION_FAILED, partitions)
        );
    }
    const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
    const ELECTION_NOT_NEEDED: i16 = 84;
    assert_eq!(
        outcome(&broker, &admin, reassign(vec![0])).await,
        (0, vec![0])
    );
    assert_eq!(
        outcome(&broker, &admin, reassign(vec![0, 7])).await,
        (0, vec![INVALID_REPLICA_ASSIGNMENT])
    );
    // v1 (KIP-860) refuses a new replication factor unless the request allows it.
    const INVALID_REPLICATION_FACTOR: i16 = 38;
    let RequestKind::AlterPartitionReassignments(grow) = reassign(vec![0, 7]) else {
        unreachable!()
    };
    let strict =
        RequestKind::AlterPartitionReassignments(grow.with_allow_replication_factor_change(false));
    assert_eq!(
        outcome(&broker, &admin, strict).await,
        (0, vec![INVALID_REPLICATION_FACTOR])
    );
    assert_eq!(
        outcome(&broker, &admin, elect()).await,
        (0, vec![ELECTION_NOT_NEEDED])
    );
    assert_eq!(outcome(&broker, &admin, list()).await, (0, vec![]));
}
