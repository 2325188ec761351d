//! Request handlers in process: a real broker (embedded metadata, logs on a temp dir) driven
//! through `handlers::handle` with requests and responses passed as bytes, as the server
//! does, without sockets. Every scenario runs against both object stores (in memory and
//! the local directory). Quicker and more precise than the black-box suite about what
//! each handler answers; that suite stays as it is. The partition read path across the
//! tiers is in `read_path.rs`.

#[macro_use]
mod handler_support;

use std::sync::Arc;

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ApiKey, DescribeGroupsRequest, FindCoordinatorRequest, GroupId, HeartbeatRequest,
    JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, RequestKind,
    ResponseKind, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;
use strata_broker::broker::{Broker, SystemClock};
use strata_broker::group::state::GroupState;

use handler_support::{
    ILLEGAL_GENERATION, KAFKA_STORAGE_ERROR, MEMBER_ID_REQUIRED, ManualClock, OFFSET_OUT_OF_RANGE,
    Store, UNKNOWN_MEMBER_ID, UNKNOWN_TOPIC_OR_PARTITION, batch, broker, broker_with, call,
    call_as_client, caller, create, fetch, latest, name, produce, wait_for,
};

on_every_store!(
    produce_fetch_and_list_offsets_through_the_handlers,
    errors_are_kafka_error_codes,
    a_damaged_batch_on_disk_is_a_storage_error_and_nothing_else_fails,
    topic_administration_through_the_handlers,
    committed_offsets_through_the_group_handlers,
    one_consumer_joins_syncs_heartbeats_and_leaves,
    the_first_join_waits_for_the_initial_rebalance_delay,
    a_silent_consumer_is_expired_after_its_session_timeout,
    a_join_racing_a_delete_never_lands_in_the_deleted_group,
    a_join_racing_offset_expiry_never_lands_in_the_removed_group,
    a_member_leaving_while_its_group_is_deleted_does_not_bring_it_back,
    offset_delete_and_leave_load_the_group_before_looking_it_up,
    a_refused_join_makes_no_group,
    client_bytes_are_charged_only_to_topics_that_exist,
);

async fn produce_fetch_and_list_offsets_through_the_handlers(store: Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = broker(dir.path(), store).await;
    create(&broker, "orders", 2).await;
    assert_eq!(
        produce(&broker, "orders", 0, batch(&["a", "b", "c"])).await,
        (0, 0)
    );
    assert_eq!(produce(&broker, "orders", 0, batch(&["d"])).await, (0, 3));
    assert_eq!(produce(&broker, "orders", 1, batch(&["x"])).await, (0, 0));
    assert_eq!(
        fetch(&broker, "orders", 0, 0).await,
        (0, 4, vec!["a".into(), "b".into(), "c".into(), "d".into()])
    );
    assert_eq!(
        fetch(&broker, "orders", 0, 3).await,
        (0, 4, vec!["d".into()])
    );
    assert_eq!(latest(&broker, "orders", 0).await, 4);
    assert_eq!(latest(&broker, "orders", 1).await, 1);
}

async fn errors_are_kafka_error_codes(store: Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = broker(dir.path(), store).await;
    create(&broker, "orders", 1).await;
    produce(&broker, "orders", 0, batch(&["a"])).await;
    assert_eq!(
        produce(&broker, "missing", 0, batch(&["a"])).await.0,
        UNKNOWN_TOPIC_OR_PARTITION
    );
    assert_eq!(
        fetch(&broker, "missing", 0, 0).await.0,
        UNKNOWN_TOPIC_OR_PARTITION
    );
    assert_eq!(fetch(&broker, "orders", 0, 5).await.0, OFFSET_OUT_OF_RANGE);
    assert_eq!(
        fetch(&broker, "orders", 7, 0).await.0,
        UNKNOWN_TOPIC_OR_PARTITION
    );
}

async fn a_damaged_batch_on_disk_is_a_storage_error_and_nothing_else_fails(store: Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = broker(dir.path(), store).await;
    create(&broker, "orders", 1).await;
    produce(&broker, "orders", 0, batch(&["first"])).await;
    produce(&broker, "orders", 0, batch(&["second"])).await;
    produce(&broker, "orders", 0, batch(&["third"])).await;
    // The second batch's last byte (its record's value), behind the broker's back.
    let topic = broker.topics.get("orders").expect("topic");
    let log = topic.partitions[0].dir().join(format!("{:020}.log", 0));
    let mut bytes = std::fs::read(&log).expect("read the segment");
    let first = 12 + u32::from_be_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize;
    let second = first
        + 12
        + u32::from_be_bytes(bytes[first + 8..first + 12].try_into().expect("4 bytes")) as usize;
    bytes[second - 1] ^= 0x40;
    std::fs::write(&log, &bytes).expect("write the segment");
    assert_eq!(
        fetch(&broker, "orders", 0, 0).await,
        (0, 3, vec!["first".into()])
    );
    assert_eq!(fetch(&broker, "orders", 0, 1).await.0, KAFKA_STORAGE_ERROR);
    assert_eq!(
        fetch(&broker, "orders", 0, 2).await,
        (0, 3, vec!["third".into()])
    );
    assert_eq!(
        produce(&broker, "orders", 0, batch(&["fourth"])).await,
        (0, 3)
    );
}

async fn topic_administration_through_the_handlers(store: Store) {
    use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::{
        CreatePartitionsRequest, DeleteTopicsRequest, DescribeConfigsRequest,
        IncrementalAlterConfigsRequest, MetadataRequest,
    };

    let dir = tempfile::tempdir().expect("tempdir");
    let broker = broker(dir.path(), store).await;
    create(&broker, "orders", 2).await;

    let metadata = |broker: Arc<Broker>| async move {
        let body = MetadataRequest::default().with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(name("orders"))),
        ]));
        let ResponseKind::Metadata(response) =
            call(&broker, ApiKey::Metadata, 9, RequestKind::Metadata(body)).await
        else {
            panic!("not a Metadata response");
        };
        let topic = &response.topics[0];
        (
            topic.error_code,
            topic
                .partitions
                .iter()
                .map(|p| (p.partition_index, *p.leader_id))
                .collect::<Vec<_>>(),
        )
    };
    assert_eq!(metadata(broker.clone()).await, (0, vec![(0, 0), (1, 0)]));

    // CreatePartitions: 2 -> 3.
    let body = CreatePartitionsRequest::default()
        .with_topics(vec![
            CreatePartitionsTopic::default()
                .with_name(name("orders"))
                .with_count(3),
        ])
        .with_timeout_ms(10_000);
    let ResponseKind::CreatePartitions(response) = call(
        &broker,
        ApiKey::CreatePartitions,
        1,
        RequestKind::CreatePartitions(body),
    )
    .await
    else {
        panic!("not a CreatePartitions response");
    };
    assert_eq!(response.results[0].error_code, 0, "{response:?}");
    assert_eq!(metadata(broker.clone()).await.1.len(), 3);
    assert_eq!(produce(&broker, "orders", 2, batch(&["new"])).await, (0, 0));

    // IncrementalAlterConfigs sets retention.ms; DescribeConfigs shows it.
    let body = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("orders"))
            .with_configs(vec![
                AlterableConfig::default()
                    .with_name(StrBytes::from_static_str("retention.ms"))
                    .with_config_operation(0)
                    .with_value(Some(StrBytes::from_static_str("3600000"))),
            ]),
    ]);
    let ResponseKind::IncrementalAlterConfigs(response) = call(
        &broker,
        ApiKey::IncrementalAlterConfigs,
        1,
        RequestKind::IncrementalAlterConfigs(body),
    )
    .await
    else {
        panic!("not an IncrementalAlterConfigs response");
    };
    assert_eq!(response.responses[0].error_code, 0, "{response:?}");
    let body = DescribeConfigsRequest::default().with_resources(vec![
        DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("orders"))
            .with_configuration_keys(Some(vec![StrBytes::from_static_str("retention.ms")])),
    ]);
    let ResponseKind::DescribeConfigs(response) = call(
        &broker,
        ApiKey::DescribeConfigs,
        3,
        RequestKind::DescribeConfigs(body),
    )
    .await
    else {
        panic!("not a DescribeConfigs response");
    };
    let configs = &response.results[0].configs;
    assert_eq!(configs.len(), 1, "{response:?}");
    assert_eq!(configs[0].value.as_deref(), Some("3600000"));

    // DeleteTopics: gone for Fetch and Metadata.
    let body = DeleteTopicsRequest::default()
        .with_topic_names(vec![name("orders")])
        .with_timeout_ms(10_000);
    let ResponseKind::DeleteTopics(response) = call(
        &broker,
        ApiKey::DeleteTopics,
        4,
        RequestKind::DeleteTopics(body),
    )
    .await
    else {
        panic!("not a DeleteTopics response");
    };
    assert_eq!(response.responses[0].error_code, 0, "{response:?}");
    assert_eq!(
        fetch(&broker, "orders", 0, 0).await.0,
        UNKNOWN_TOPIC_OR_PARTITION
    );
    assert_eq!(metadata(broker.clone()).await.0, UNKNOWN_TOPIC_OR_PARTITION);
}

async fn committed_offsets_through_the_group_handlers(store: Store) {
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
    use kafka_protocol::messages::{
        GroupId, ListGroupsRequest, OffsetCommitRequest, OffsetFetchRequest,
    };

    let dir = tempfile::tempdir().expect("tempdir");
    let broker = broker(dir.path(), store).await;
    create(&broker, "orders", 2).await;
    let group = GroupId(StrBytes::from_static_str("billing"));
    // A "simple" commit: no member, generation -1 (assign() consumers do this).
    let body = OffsetCommitRequest::default()
        .with_group_id(group.clone())
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![
            OffsetCommitRequestTopic::default()
                .with_name(name("orders"))
                .with_partitions(vec![
                    OffsetCommitRequestPartition::default()
                        .with_partition_index(1)
                        .with_committed_offset(42),
                ]),
        ]);
    let ResponseKind::OffsetCommit(response) = call(
        &broker,
        ApiKey::OffsetCommit,
        7,
        RequestKind::OffsetCommit(body),
    )
    .await
    else {
        panic!("not an OffsetCommit response");
    };
    assert_eq!(
        response.topics[0].partitions[0].error_code, 0,
        "{response:?}"
    );

    let body = OffsetFetchRequest::default()
        .with_group_id(group.clone())
        .with_topics(Some(vec![
            OffsetFetchRequestTopic::default()
                .with_name(name("orders"))
                .with_partition_indexes(vec![0, 1]),
        ]));
    let ResponseKind::OffsetFetch(response) = call(
        &broker,
        ApiKey::OffsetFetch,
        7,
        RequestKind::OffsetFetch(body),
    )
    .await
    else {
        panic!("not an OffsetFetch response");
    };
    let offsets: Vec<(i32, i64)> = response.topics[0]
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.committed_offset))
        .collect();
    assert_eq!(offsets, vec![(0, -1), (1, 42)]);

    let ResponseKind::ListGroups(response) = call(
        &broker,
        ApiKey::ListGroups,
        4,
        RequestKind::ListGroups(ListGroupsRequest::default()),
    )
    .await
    else {
        panic!("not a ListGroups response");
    };
    assert!(
        response.groups.iter().any(|g| g.group_id == group),
        "{response:?}"
    );
}

const GROUP: &str = "billing";
const SESSION_TIMEOUT_MS: i32 = 10_000;
/// Subscription metadata as the consumer would send it; the broker only stores and
/// returns it, so any bytes do.
const RANGE_METADATA: &[u8] = b"range: orders";
const STICKY_METADATA: &[u8] = b"cooperative-sticky: orders";

fn group_id() -> GroupId {
    GroupId(StrBytes::from_static_str(GROUP))
}

fn member(id: &str) -> StrBytes {
    StrBytes::from_string(id.to_string())
}

/// JoinGroup for the consumer protocol, offering the range assignor, then the sticky one.
async fn join(broker: &Arc<Broker>, version: i16, member_id: &str) -> JoinGroupResponse {
    let protocol = |name: &'static str, metadata: &'static [u8]| {
        JoinGroupRequestProtocol::default()
            .with_name(StrBytes::from_static_str(name))
            .with_metadata(Bytes::from_static(metadata))
    };
    let mut body = JoinGroupRequest::default()
        .with_group_id(group_id())
        .with_session_timeout_ms(SESSION_TIMEOUT_MS)
        .with_member_id(member(member_id))
        .with_protocol_type(StrBytes::from_static_str("consumer"))
        .with_protocols(vec![
            protocol("range", RANGE_METADATA),
            protocol("cooperative-sticky", STICKY_METADATA),
        ]);
    if version >= 1 {
        body = body.with_rebalance_timeout_ms(30_000);
    }
    let ResponseKind::JoinGroup(response) = call(
        broker,
        ApiKey::JoinGroup,
        version,
        RequestKind::JoinGroup(body),
    )
    .await
    else {
        panic!("not a JoinGroup response");
    };
    response
}

/// The two JoinGroups of a consumer since KIP-394: the first is answered
/// MEMBER_ID_REQUIRED with the id to join with.
async fn join_as_new_member(broker: &Arc<Broker>, version: i16) -> JoinGroupResponse {
    let first = join(broker, version, "").await;
    assert_eq!(first.error_code, MEMBER_ID_REQUIRED, "{first:?}");
    assert_eq!(first.generation_id, -1, "{first:?}");
    assert!(
        first.member_id.starts_with("handler-tests-"),
        "a member id from the client id: {first:?}"
    );
    let joined = join(broker, version, &first.member_id).await;
    assert_eq!(joined.error_code, 0, "{joined:?}");
    assert_eq!(joined.member_id, first.member_id, "{joined:?}");
    joined
}

async fn sync(
    broker: &Arc<Broker>,
    version: i16,
    generation: i32,
    member_id: &str,
    assignment: &'static [u8],
) -> SyncGroupResponse {
    let mut body = SyncGroupRequest::default()
        .with_group_id(group_id())
        .with_generation_id(generation)
        .with_member_id(member(member_id))
        .with_assignments(vec![
            SyncGroupRequestAssignment::default()
                .with_member_id(member(member_id))
                .with_assignment(Bytes::from_static(assignment)),
        ]);
    if version >= 5 {
        body = body
            .with_protocol_type(Some(StrBytes::from_static_str("consumer")))
            .with_protocol_name(Some(StrBytes::from_static_str("range")));
    }
    let ResponseKind::SyncGroup(response) = call(
        broker,
        ApiKey::SyncGroup,
        version,
        RequestKind::SyncGroup(body),
    )
    .await
    else {
        panic!("not a SyncGroup response");
    };
    response
}

async fn heartbeat(broker: &Arc<Broker>, generation: i32, member_id: &str) -> i16 {
    let body = HeartbeatRequest::default()
        .with_group_id(group_id())
        .with_generation_id(generation)
        .with_member_id(member(member_id));
    let ResponseKind::Heartbeat(response) =
        call(broker, ApiKey::Heartbeat, 4, RequestKind::Heartbeat(body)).await
    else {
        panic!("not a Heartbeat response");
    };
    response.error_code
}

async fn leave(broker: &Arc<Broker>, version: i16, member_id: &str) -> LeaveGroupResponse {
    let mut body = LeaveGroupRequest::default().with_group_id(group_id());
    if version >= 3 {
        body = body.with_members(vec![
            MemberIdentity::default().with_member_id(member(member_id)),
        ]);
    } else {
        body = body.with_member_id(member(member_id));
    }
    let ResponseKind::LeaveGroup(response) = call(
        broker,
        ApiKey::LeaveGroup,
        version,
        RequestKind::LeaveGroup(body),
    )
    .await
    else {
        panic!("not a LeaveGroup response");
    };
    response
}

async fn describe(broker: &Arc<Broker>) -> DescribedGroup {
    let body = DescribeGroupsRequest::default().with_groups(vec![group_id()]);
    let ResponseKind::DescribeGroups(response) = call(
        broker,
        ApiKey::DescribeGroups,
        5,
        RequestKind::DescribeGroups(body),
    )
    .await
    else {
        panic!("not a DescribeGroups response");
    };
    assert_eq!(response.groups.len(), 1, "{response:?}");
    response.groups[0].clone()
}

fn state_of(broker: &Broker) -> Option<GroupState> {
    broker.groups.describe(GROUP).map(|d| d.state)
}

async fn group_broker(dir: &std::path::Path, store: Store) -> Arc<Broker> {
    broker_with(dir, store, Arc::new(SystemClock), |config| {
        config.group_initial_rebalance_delay_ms = 0;
    })
    .await
}

async fn one_consumer_joins_syncs_heartbeats_and_leaves(store: Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = group_broker(dir.path(), store).await;
    create(&broker, "orders", 2).await;

    let body = FindCoordinatorRequest::default()
        .with_key(StrBytes::from_static_str(GROUP))
        .with_key_type(0);
    let ResponseKind::FindCoordinator(found) = call(
        &broker,
        ApiKey::FindCoordinator,
        3,
        RequestKind::FindCoordinator(body),
    )
    .await
    else {
        panic!("not a FindCoordinator response");
    };
    assert_eq!(
        (found.error_code, *found.node_id, found.port),
        (0, 0, broker.advertised_port),
        "{found:?}"
    );

    // Joined: a group of one, whose leader it is, on the first protocol it offered.
    let joined = join_as_new_member(&broker, 7).await;
    let id = joined.member_id.to_string();
    assert_eq!(joined.generation_id, 1, "{joined:?}");
    assert_eq!(joined.leader, joined.member_id, "{joined:?}");
    assert_eq!(joined.protocol_type.as_deref(), Some("consumer"));
    assert_eq!(joined.protocol_name.as_deref(), Some("range"));
    let members: Vec<(String, Bytes)> = joined
        .members
        .iter()
        .map(|m| (m.member_id.to_string(), m.metadata.clone()))
        .collect();
    assert_eq!(
        members,
        vec![(id.clone(), Bytes::from_static(RANGE_METADATA))],
        "the leader gets every member's metadata for the chosen protocol"
    );
    assert_eq!(
        describe(&broker).await.group_state.as_str(),
        "CompletingRebalance"
    );
    // Waiting for the leader's assignment is not a reason to rejoin.
    assert_eq!(heartbeat(&broker, 1, &id).await, 0);

    // Synced: the leader's assignment comes back to it.
    let synced = sync(&broker, 5, 1, &id, b"orders-0,orders-1").await;
    assert_eq!(synced.error_code, 0, "{synced:?}");
    assert_eq!(synced.assignment, Bytes::from_static(b"orders-0,orders-1"));
    assert_eq!(synced.protocol_name.as_deref(), Some("range"));
    let described = describe(&broker).await;
    assert_eq!(described.error_code, 0, "{described:?}");
    assert_eq!(described.group_state.as_str(), "Stable", "{described:?}");
    assert_eq!(described.protocol_data.as_str(), "range", "{described:?}");
    assert_eq!(described.members.len(), 1, "{described:?}");
    let m = &described.members[0];
    assert_eq!(m.member_id.as_str(), id);
    assert_eq!(m.client_id.as_str(), "handler-tests");
    assert_eq!(m.member_metadata, Bytes::from_static(RANGE_METADATA));
    assert_eq!(
        m.member_assignment,
        Bytes::from_static(b"orders-0,orders-1")
    );

    assert_eq!(heartbeat(&broker, 1, &id).await, 0);
    assert_eq!(heartbeat(&broker, 2, &id).await, ILLEGAL_GENERATION);
    assert_eq!(heartbeat(&broker, 1, "nobody").await, UNKNOWN_MEMBER_ID);

    // The leader rejoining (its subscription changed) starts a new generation.
    let rejoined = join(&broker, 7, &id).await;
    assert_eq!(rejoined.error_code, 0, "{rejoined:?}");
    assert_eq!(rejoined.generation_id, 2, "{rejoined:?}");
    assert_eq!(heartbeat(&broker, 1, &id).await, ILLEGAL_GENERATION);
    let stale = sync(&broker, 5, 1, &id, b"stale").await;
    assert_eq!(stale.error_code, ILLEGAL_GENERATION, "{stale:?}");
    let synced = sync(&broker, 5, 2, &id, b"orders-1").await;
    assert_eq!(synced.error_code, 0, "{synced:?}");
    assert_eq!(synced.assignment, Bytes::from_static(b"orders-1"));

    // Left: the group is empty and the member unknown.
    let left = leave(&broker, 3, &id).await;
    assert_eq!(left.error_code, 0, "{left:?}");
    let results: Vec<(String, i16)> = left
        .members
        .iter()
        .map(|m| (m.member_id.to_string(), m.error_code))
        .collect();
    assert_eq!(results, vec![(id.clone(), 0)]);
    let described = describe(&broker).await;
    assert_eq!(described.group_state.as_str(), "Empty", "{described:?}");
    assert!(described.members.is_empty(), "{described:?}");
    assert_eq!(heartbeat(&broker, 2, &id).await, UNKNOWN_MEMBER_ID);
    assert_eq!(
        leave(&broker, 3, &id).await.members[0].error_code,
        UNKNOWN_MEMBER_ID
    );

    // An old client (JoinGroup v0: no member id round trip, no rebalance timeout) joins
    // the same group in one step, in a later generation.
    let old = join(&broker, 0, "").await;
    assert_eq!(old.error_code, 0, "{old:?}");
    assert!(old.generation_id > 2, "{old:?}");
    assert!(
        !old.member_id.is_empty() && old.member_id.as_str() != id,
        "{old:?}"
    );
    let old_id = old.member_id.to_string();
    let synced = sync(&broker, 0, old.generation_id, &old_id, b"orders-0").await;
    assert_eq!(synced.error_code, 0, "{synced:?}");
    assert_eq!(synced.assignment, Bytes::from_static(b"orders-0"));
    assert_eq!(leave(&broker, 0, &old_id).await.error_code, 0);
    assert_eq!(state_of(&broker), Some(GroupState::Empty));
}

async fn the_first_join_waits_for_the_initial_rebalance_delay(store: Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::starting_now();
    let broker = broker_with(dir.path(), store, clock.clone(), |config| {
        config.group_initial_rebalance_delay_ms = 3000;
    })
    .await;
    let first = join(&broker, 7, "").await;
    assert_eq!(first.error_code, MEMBER_ID_REQUIRED, "{first:?}");
    let id = first.member_id.to_string();
    let joining = tokio::spawn({
        let (broker, id) = (broker.clone(), id.clone());
        async move { join(&broker, 7, &id).await }
    });
    wait_for(
        "the join to reach the group",
        Duration::from_secs(10),
        || (state_of(&broker) == Some(GroupState::PreparingRebalance)).then_some(()),
    )
    .await;
    clock.advance(2999);
    broker.groups.tick(&*broker).await;
    tokio::task::yield_now().await;
    assert_eq!(state_of(&broker), Some(GroupState::PreparingRebalance));
    assert!(!joining.is_finished(), "answered before the initial delay");
    clock.advance(1);
    broker.groups.tick(&*broker).await;
    let joined = tokio::time::timeout(Duration::from_secs(10), joining)
        .await
        .expect("the join is answered once the delay has passed")
        .expect("the join task");
    assert_eq!(joined.error_code, 0, "{joined:?}");
    assert_eq!(
        (joined.generation_id, joined.leader.as_str()),
        (1, id.as_str())
    );
    assert_eq!(state_of(&broker), Some(GroupState::CompletingRebalance));
}

async fn a_silent_consumer_is_expired_after_its_session_timeout(store: Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::starting_now();
    let broker = broker_with(dir.path(), store, clock.clone(), |config| {
        config.group_initial_rebalance_delay_ms = 0;
    })
    .await;
    let joined = join_as_new_member(&broker, 9).await;
    let id = joined.member_id.to_string();
    let generation = joined.generation_id;
    assert_eq!(sync(&broker, 5, generation, &id, b"a").await.error_code, 0);
    // A heartbeat just inside the session keeps the member.
    clock.advance(i64::from(SESSION_TIMEOUT_MS) - 1);
    broker.groups.tick(&*broker).await;
    assert_eq!(heartbeat(&broker, generation, &id).await, 0);
    clock.advance(i64::from(SESSION_TIMEOUT_MS));
    broker.groups.tick(&*broker).await;
    assert_eq!(state_of(&broker), Some(GroupState::Stable));
    // Silent for longer than the session: gone at the next tick.
    clock.advance(1);
    broker.groups.tick(&*broker).await;
    assert_eq!(state_of(&broker), Some(GroupState::Empty));
    assert_eq!(heartbeat(&broker, generation, &id).await, UNKNOWN_MEMBER_ID);
    assert!(describe(&broker).await.members.is_empty());
}

/// A "simple" commit (no member, generation -1) of `offset` on orders-0.
async fn simple_commit(broker: &Arc<Broker>, offset: i64) -> i16 {
    use kafka_protocol::messages::OffsetCommitRequest;
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    let body = OffsetCommitRequest::default()
        .with_group_id(group_id())
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![
            OffsetCommitRequestTopic::default()
                .with_name(name("orders"))
                .with_partitions(vec![
                    OffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(offset),
                ]),
        ]);
    let ResponseKind::OffsetCommit(response) = call(
        broker,
        ApiKey::OffsetCommit,
        7,
        RequestKind::OffsetCommit(body),
    )
    .await
    else {
        panic!("not an OffsetCommit response");
    };
    response.topics[0].partitions[0].error_code
}

/// A broker whose offsets-topic appends wait for an fsync (on the blocking pool): a
/// delete's tombstones are in the log while it waits, which is when a racing join comes in.
async fn fsyncing_group_broker(
    dir: &std::path::Path,
    store: Store,
    clock: Arc<ManualClock>,
) -> Arc<Broker> {
    broker_with(dir, store, clock, |config| {
        config.group_initial_rebalance_delay_ms = 0;
        config.log_flush_messages = 1;
        config.offsets_retention_ms = 60_000;
        config.offsets_retention_check_interval_ms = 1;
    })
    .await
}

/// Runs `deleting` (which writes the group's tombstones) and a JoinGroup that starts as
/// soon as the group's partition of the offsets topic grows (this runtime has one thread:
/// the deletion is then waiting for its fsync). The join may be told to find the
/// coordinator again (it then retries); it must end in a live group, with none of the
/// deleted group's offsets, and never in the group being deleted (before, it was answered,
/// then dropped with the group, and the member's next request found no group).
async fn join_racing<T>(broker: &Arc<Broker>, deleting: impl std::future::Future<Output = T>) -> T {
    const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    let offsets = broker
        .topics
        .get(strata_broker::group::OFFSETS_TOPIC)
        .expect("the offsets topic");
    let home = offsets
        .partition(strata_broker::group::partition_for(
            GROUP,
            offsets.partitions.len(),
        ))
        .expect("the group's partition")
        .clone();
    let written = home.log_end_offset();
    let racing_join = async {
        for _ in 0..10_000 {
            if home.log_end_offset() > written {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(home.log_end_offset() > written, "the deletion never wrote");
        join(broker, 3, "").await
    };
    // Usually the join overlaps the deletion and is refused; but the deletion can finish
    // before the join runs even on this single-threaded runtime (seen about once in six
    // runs, also with the join polled first), and the join then makes a new group.
    let (deleted, joined) = tokio::join!(deleting, racing_join);
    let joined = match joined.error_code {
        0 => joined,
        COORDINATOR_NOT_AVAILABLE => join(broker, 3, "").await,
        other => panic!("unexpected JoinGroup error {other}: {joined:?}"),
    };
    assert_eq!(joined.error_code, 0, "{joined:?}");
    let group = describe(broker).await;
    assert_eq!(
        group.group_state.as_str(),
        "CompletingRebalance",
        "{group:?}"
    );
    assert_eq!(group.members.len(), 1, "{group:?}");
    assert_eq!(group.members[0].member_id, joined.member_id);
    assert!(
        broker
            .groups
            .committed(GROUP, None)
            .iter()
            .all(|(_, _, offset)| offset.is_none()),
        "the deleted group's offsets are gone"
    );
    deleted
}

async fn a_join_racing_a_delete_never_lands_in_the_deleted_group(store: Store) {
    use kafka_protocol::messages::DeleteGroupsRequest;
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = fsyncing_group_broker(dir.path(), store, ManualClock::starting_now()).await;
    create(&broker, "orders", 1).await;
    assert_eq!(simple_commit(&broker, 7).await, 0);
    assert_eq!(state_of(&broker), Some(GroupState::Empty));
    let body = DeleteGroupsRequest::default().with_groups_names(vec![group_id()]);
    let delete = call(
        &broker,
        ApiKey::DeleteGroups,
        2,
        RequestKind::DeleteGroups(body),
    );
    let ResponseKind::DeleteGroups(deleted) = join_racing(&broker, delete).await else {
        panic!("not a DeleteGroups response");
    };
    assert_eq!(deleted.results[0].error_code, 0, "{deleted:?}");
}

async fn a_join_racing_offset_expiry_never_lands_in_the_removed_group(store: Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::starting_now();
    let broker = fsyncing_group_broker(dir.path(), store, clock.clone()).await;
    create(&broker, "orders", 1).await;
    assert_eq!(simple_commit(&broker, 7).await, 0);
    // Past the retention: the next tick expires the offset and removes the group.
    clock.advance(60_001);
    join_racing(&broker, broker.groups.tick(&broker)).await;
}

/// The partition of the offsets topic holding GROUP.
fn group_partition(broker: &Broker) -> Arc<strata_broker::partition::Partition> {
    let offsets = broker
        .topics
        .get(strata_broker::group::OFFSETS_TOPIC)
        .expect("the offsets topic");
    offsets
        .partition(strata_broker::group::partition_for(
            GROUP,
            offsets.partitions.len(),
        ))
        .expect("the group's partition")
        .clone()
}

/// Forgets the group's partition of the offsets topic and loads it again from its log, as
/// a coordinator does when it takes over: what memory shows is then what the log holds.
fn reload_groups(broker: &Arc<Broker>) {
    let home = group_partition(broker);
    broker
        .groups
        .partition_led(broker, strata_broker::group::OFFSETS_TOPIC, &home, true);
}

async fn member_commit(broker: &Arc<Broker>, generation: i32, member_id: &str) -> i16 {
    use kafka_protocol::messages::OffsetCommitRequest;
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    let body = OffsetCommitRequest::default()
        .with_group_id(group_id())
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(member(member_id))
        .with_topics(vec![
            OffsetCommitRequestTopic::default()
                .with_name(name("orders"))
                .with_partitions(vec![
                    OffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(3),
                ]),
        ]);
    let ResponseKind::OffsetCommit(response) = call(
        broker,
        ApiKey::OffsetCommit,
        7,
        RequestKind::OffsetCommit(body),
    )
    .await
    else {
        panic!("not an OffsetCommit response");
    };
    response.topics[0].partitions[0].error_code
}

/// The last member leaves while a DeleteGroups waits for the offsets topic's write lock:
/// the group is Empty when the deletion takes the lock, and the leave's write of the Empty
/// group queues behind it. That write must not land after the tombstone (a coordinator
/// loading the log would bring the deleted group back).
async fn a_member_leaving_while_its_group_is_deleted_does_not_bring_it_back(store: Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = fsyncing_group_broker(dir.path(), store, ManualClock::starting_now()).await;
    create(&broker, "orders", 1).await;
    // The interleaving is likely but not certain (the commit can hand the lock to the
    // deletion before the member leaves: NON_EMPTY_GROUP); tried until it happens.
    for _ in 0..20 {
        if leave_racing_delete(&broker).await {
            return;
        }
    }
    panic!("the leave never overlapped the deletion in 20 tries");
}

/// One try of the scenario above: whether the leave overlapped the deletion (it was
/// checked then), or not (the group is deleted and the next try starts afresh).
async fn leave_racing_delete(broker: &Arc<Broker>) -> bool {
    use kafka_protocol::messages::DeleteGroupsRequest;
    const NON_EMPTY_GROUP: i16 = 68;
    let delete_group = || {
        let body = DeleteGroupsRequest::default().with_groups_names(vec![group_id()]);
        async move {
            let ResponseKind::DeleteGroups(deleted) = call(
                broker,
                ApiKey::DeleteGroups,
                2,
                RequestKind::DeleteGroups(body),
            )
            .await
            else {
                panic!("not a DeleteGroups response");
            };
            deleted.results[0].error_code
        }
    };
    let joined = join_as_new_member(broker, 4).await;
    let id = joined.member_id.to_string();
    let synced = sync(broker, 5, joined.generation_id, &id, b"orders-0").await;
    assert_eq!(synced.error_code, 0, "{synced:?}");
    let home = group_partition(broker);
    let written = home.log_end_offset();
    // The commit holds the write lock while its append waits for the fsync (this runtime
    // has one thread); the deletion queues behind it, then the member leaves.
    let delete_queued = std::cell::Cell::new(false);
    let commit = member_commit(broker, joined.generation_id, &id);
    let delete = async {
        while home.log_end_offset() == written {
            tokio::task::yield_now().await;
        }
        delete_queued.set(true);
        delete_group().await
    };
    let leaving = async {
        while !delete_queued.get() {
            tokio::task::yield_now().await;
        }
        leave(broker, 3, &id).await
    };
    let (committed, deleted, left) = tokio::join!(biased; commit, delete, leaving);
    assert_eq!(committed, 0);
    assert_eq!(left.error_code, 0, "{left:?}");
    assert_eq!(left.members[0].error_code, 0, "{left:?}");
    if deleted == NON_EMPTY_GROUP {
        assert_eq!(delete_group().await, 0);
        return false;
    }
    assert_eq!(deleted, 0);
    assert_eq!(state_of(broker), None);
    reload_groups(broker);
    assert_eq!(state_of(broker), None, "the deleted group stays deleted");
    assert!(
        broker
            .groups
            .committed(GROUP, None)
            .iter()
            .all(|(_, _, offset)| offset.is_none())
    );
    true
}

async fn offset_delete(broker: &Arc<Broker>) -> kafka_protocol::messages::OffsetDeleteResponse {
    use kafka_protocol::messages::OffsetDeleteRequest;
    use kafka_protocol::messages::offset_delete_request::{
        OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
    };
    let body = OffsetDeleteRequest::default()
        .with_group_id(group_id())
        .with_topics(vec![
            OffsetDeleteRequestTopic::default()
                .with_name(name("orders"))
                .with_partitions(vec![
                    OffsetDeleteRequestPartition::default().with_partition_index(0),
                ]),
        ]);
    let ResponseKind::OffsetDelete(response) = call(
        broker,
        ApiKey::OffsetDelete,
        0,
        RequestKind::OffsetDelete(body),
    )
    .await
    else {
        panic!("not an OffsetDelete response");
    };
    response
}

/// A coordinator whose groups are not in memory for its current leadership (it stopped
/// leading the partition, or just took it over) loads them before OffsetDelete and
/// LeaveGroup look the group up: neither is told the group or member is unknown, and the
/// deletion applies to the groups it loaded.
async fn offset_delete_and_leave_load_the_group_before_looking_it_up(store: Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = group_broker(dir.path(), store).await;
    create(&broker, "orders", 1).await;
    assert_eq!(simple_commit(&broker, 7).await, 0);
    let home = group_partition(&broker);
    let forget = || {
        broker
            .groups
            .partition_led(&broker, strata_broker::group::OFFSETS_TOPIC, &home, false)
    };
    forget();
    assert_eq!(state_of(&broker), None, "the groups are forgotten");
    let deleted = offset_delete(&broker).await;
    assert_eq!(deleted.error_code, 0, "{deleted:?}");
    assert_eq!(deleted.topics[0].partitions[0].error_code, 0, "{deleted:?}");
    assert!(
        broker
            .groups
            .committed(GROUP, None)
            .iter()
            .all(|(_, _, offset)| offset.is_none()),
        "the loaded copy lost the offset"
    );
    reload_groups(&broker);
    assert!(
        broker
            .groups
            .committed(GROUP, None)
            .iter()
            .all(|(_, _, offset)| offset.is_none()),
        "the log holds the tombstone"
    );

    let joined = join_as_new_member(&broker, 4).await;
    let id = joined.member_id.to_string();
    let synced = sync(&broker, 5, joined.generation_id, &id, b"orders-0").await;
    assert_eq!(synced.error_code, 0, "{synced:?}");
    forget();
    let left = leave(&broker, 3, &id).await;
    assert_eq!(left.error_code, 0, "{left:?}");
    assert_eq!(left.members[0].error_code, 0, "{left:?}");
    assert_eq!(state_of(&broker), Some(GroupState::Empty));
}

/// A JoinGroup refused for its session timeout or an id too long for the group's record
/// leaves no group behind (before, an Empty one stayed until the next expiry pass).
async fn a_refused_join_makes_no_group(store: Store) {
    const INVALID_SESSION_TIMEOUT: i16 = 26;
    const INVALID_REQUEST: i16 = 42;
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = group_broker(dir.path(), store).await;
    let refused = |body: JoinGroupRequest| {
        let broker = broker.clone();
        async move {
            let ResponseKind::JoinGroup(response) =
                call(&broker, ApiKey::JoinGroup, 6, RequestKind::JoinGroup(body)).await
            else {
                panic!("not a JoinGroup response");
            };
            response.error_code
        }
    };
    let body = JoinGroupRequest::default()
        .with_group_id(group_id())
        .with_session_timeout_ms(SESSION_TIMEOUT_MS)
        .with_rebalance_timeout_ms(30_000)
        .with_protocol_type(StrBytes::from_static_str("consumer"))
        .with_protocols(vec![
            JoinGroupRequestProtocol::default()
                .with_name(StrBytes::from_static_str("range"))
                .with_metadata(Bytes::from_static(RANGE_METADATA)),
        ]);
    let too_short = body.clone().with_session_timeout_ms(1);
    assert_eq!(refused(too_short).await, INVALID_SESSION_TIMEOUT);
    assert_eq!(state_of(&broker), None);
    let too_long = body.with_group_instance_id(Some(StrBytes::from_string("i".repeat(40_000))));
    assert_eq!(refused(too_long).await, INVALID_REQUEST);
    assert_eq!(state_of(&broker), None);
    assert!(broker.groups.list().is_empty());
}

/// A client of another zone producing to names that are not topics must not create
/// ledger entries or series (a client could otherwise grow them without bound); its
/// records to a real topic's accepted partition are counted.
async fn client_bytes_are_charged_only_to_topics_that_exist(store: Store) {
    use kafka_protocol::messages::ProduceRequest;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = broker(dir.path(), store).await;
    broker
        .metrics
        .cost
        .configure(strata_broker::cost::PriceTable::default(), "zone-a");
    create(&broker, "orders", 1).await;
    let records = batch(&["a", "b"]);
    let data = |topic: &str, partition: i32| {
        TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![
                PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(records.clone())),
            ])
    };
    let mut topic_data: Vec<TopicProduceData> =
        (0..50).map(|i| data(&format!("made-up-{i}"), 0)).collect();
    topic_data.push(data("_made-up", 0));
    topic_data.push(data("orders", 0));
    topic_data.push(data("orders", 7)); // no such partition
    let body = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(topic_data);
    call_as_client(
        &broker,
        &caller(),
        "app,strata_az=zone-b",
        ApiKey::Produce,
        9,
        RequestKind::Produce(body),
    )
    .await;
    let ledger: Vec<_> = broker.metrics.cost.snapshot();
    let names: Vec<&str> = ledger.iter().map(|t| t.topic.as_str()).collect();
    assert_eq!(names, ["orders"]);
    assert_eq!(
        ledger[0].since_start.0.inter_zone_bytes,
        records.len() as f64
    );
    let series: Vec<String> = broker
        .metrics
        .registry
        .gather()
        .iter()
        .filter(|f| f.name().starts_with("strata_cost_"))
        .flat_map(|f| f.get_metric().iter())
        .flat_map(|m| m.get_label().iter())
        .filter(|l| l.name() == "topic")
        .map(|l| l.value().to_string())
        .collect();
    assert!(series.iter().all(|t| t == "orders"), "{series:?}");
}
