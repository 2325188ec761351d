//! The membership loop in process: a real broker (embedded metadata store, logs on a temp
//! dir) whose metadata store the test also writes, as the controller or another broker
//! would. One metadata round (`Broker::refresh`) must then open, change, take over or
//! close what the store says, and leave disk and registry in step with it.

use std::collections::BTreeMap;
use std::sync::Arc;

use strata_broker::broker::{AdminError, Broker, SystemClock};
use strata_broker::cluster::{MetadataStore, PartitionRecord, TopicRecord};
use strata_broker::config::Config;
use strata_broker::telemetry::Metrics;
use uuid::Uuid;

struct Member {
    _dir: tempfile::TempDir,
    broker: Arc<Broker>,
    store: Arc<dyn MetadataStore>,
    session: i64,
}

async fn member() -> Member {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config {
        data_dir: dir.path().join("data"),
        auto_create_topics: false,
        ..Config::default()
    };
    let stores = strata_broker::cluster::open(&config).await.expect("stores");
    let store = stores.metadata.clone();
    let broker = Broker::open(
        config,
        stores.metadata,
        None,
        Arc::new(Metrics::new().expect("metrics")),
        Arc::new(SystemClock),
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .expect("open the broker");
    let session = broker.join_cluster(true).await.expect("join");
    Member {
        _dir: dir,
        broker,
        store,
        session,
    }
}

fn partition(leader: i32, epoch: i32, replicas: &[i32], isr: &[i32]) -> PartitionRecord {
    PartitionRecord {
        leader,
        leader_epoch: epoch,
        replicas: replicas.to_vec(),
        isr: isr.to_vec(),
        removing: Vec::new(),
        adding: Vec::new(),
    }
}

fn record(name: &str, partitions: Vec<PartitionRecord>) -> TopicRecord {
    TopicRecord {
        name: name.to_string(),
        id: Uuid::new_v4(),
        partitions,
        configs: BTreeMap::new(),
    }
}

async fn stored(store: &Arc<dyn MetadataStore>, name: &str) -> TopicRecord {
    store
        .list_topics()
        .await
        .expect("list topics")
        .into_iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("topic {name} is not in the store"))
}

#[tokio::test]
async fn a_topic_another_broker_created_is_opened_and_led() {
    let m = member().await;
    let me = m.broker.config.node_id;
    let topic = record(
        "made-elsewhere",
        vec![
            partition(me, 3, &[me], &[me]),
            partition(me, 1, &[me], &[me]),
        ],
    );
    m.store.create_topic(&topic).await.expect("create");
    assert!(m.broker.topics.get("made-elsewhere").is_none());
    m.broker.refresh(m.session).await;
    let open = m
        .broker
        .topics
        .get("made-elsewhere")
        .expect("opened by the metadata round");
    assert_eq!(open.id, topic.id);
    assert_eq!(open.partitions.len(), 2);
    assert_eq!(open.partitions[0].leading_epoch(), Some(3));
    assert_eq!(open.partitions[1].leading_epoch(), Some(1));
    assert!(open.partitions[0].dir().is_dir(), "no log directory");
}

#[tokio::test]
async fn a_topic_deleted_in_the_store_is_closed_and_its_logs_removed() {
    let m = member().await;
    let me = m.broker.config.node_id;
    let topic = record("short-lived", vec![partition(me, 0, &[me], &[me])]);
    m.store.create_topic(&topic).await.expect("create");
    m.broker.refresh(m.session).await;
    let dir = m
        .broker
        .topics
        .get("short-lived")
        .expect("opened")
        .partitions[0]
        .dir();
    assert!(dir.is_dir());
    m.store.delete_topic("short-lived").await.expect("delete");
    m.broker.refresh(m.session).await;
    assert!(
        m.broker.topics.get("short-lived").is_none(),
        "still open after the store deleted it"
    );
    assert!(!dir.exists(), "{} is left on disk", dir.display());
}

#[tokio::test]
async fn a_config_edit_keeps_what_another_broker_stored_since_the_last_refresh() {
    let m = member().await;
    let me = m.broker.config.node_id;
    let mut topic = record("edited-twice", vec![partition(me, 0, &[me], &[me])]);
    m.store.create_topic(&topic).await.expect("create");
    m.broker.refresh(m.session).await;
    // Another broker changes the overrides; this one has not refreshed since.
    topic
        .configs
        .insert("segment.bytes".into(), "2097152".into());
    m.store.update_topic(&topic).await.expect("update");
    let cached = m.broker.topics.get("edited-twice").expect("opened");
    assert!(cached.record.configs.is_empty(), "the cache is stale");
    m.broker
        .set_topic_configs(
            "edited-twice",
            |current| {
                let mut next = current.clone();
                next.insert("retention.ms".into(), "60000".into());
                Ok(next)
            },
            false,
        )
        .await
        .expect("alter");
    let expected = BTreeMap::from([
        ("retention.ms".to_string(), "60000".to_string()),
        ("segment.bytes".to_string(), "2097152".to_string()),
    ]);
    assert_eq!(stored(&m.store, "edited-twice").await.configs, expected);
    let after = m.broker.topics.get("edited-twice").expect("still open");
    assert_eq!(after.record.configs, expected);
    assert_eq!(after.partitions[0].log_config().segment_bytes, 2_097_152);
}

#[tokio::test]
async fn a_config_change_in_the_store_replaces_the_topic_snapshot() {
    let m = member().await;
    let me = m.broker.config.node_id;
    let mut topic = record("configured", vec![partition(me, 0, &[me], &[me])]);
    m.store.create_topic(&topic).await.expect("create");
    m.broker.refresh(m.session).await;
    let before = m.broker.topics.get("configured").expect("opened");
    topic
        .configs
        .insert("segment.bytes".into(), "2097152".into());
    m.store.update_topic(&topic).await.expect("update");
    m.broker.refresh(m.session).await;
    let after = m.broker.topics.get("configured").expect("still open");
    assert_eq!(
        after
            .record
            .configs
            .get("segment.bytes")
            .map(String::as_str),
        Some("2097152")
    );
    assert_eq!(after.config.log_config().segment_bytes, 2_097_152);
    assert_eq!(
        after.partitions[0].log_config().segment_bytes,
        2_097_152,
        "the open log did not get the new segment size"
    );
    assert!(
        Arc::ptr_eq(&before.partitions[0], &after.partitions[0]),
        "a config change must keep the open partition, not reopen it"
    );
}

/// After an etcd snapshot restore the store can hold a topic with fewer partitions than
/// a running broker has open (and an older version). Its other changes must still be
/// applied: only a record older than the one this broker installed itself is skipped.
#[tokio::test]
async fn a_stored_record_with_fewer_partitions_than_here_is_still_applied() {
    let m = member().await;
    let me = m.broker.config.node_id;
    let topic = record("restored", vec![partition(me, 0, &[me], &[me])]);
    m.store.create_topic(&topic).await.expect("create");
    m.broker.refresh(m.session).await;
    m.broker
        .create_partitions("restored", 2, None, false)
        .await
        .expect("add a partition");
    assert_eq!(
        m.broker
            .topics
            .get("restored")
            .expect("open")
            .partitions
            .len(),
        2
    );
    // The restored record: one partition, with a new epoch and a config.
    let mut restored = topic.clone();
    restored.partitions[0].leader_epoch = 6;
    restored
        .configs
        .insert("segment.bytes".into(), "2097152".into());
    m.store.update_topic(&restored).await.expect("restore");
    m.broker.refresh(m.session).await;
    let after = m.broker.topics.get("restored").expect("still open");
    assert_eq!(
        after
            .record
            .configs
            .get("segment.bytes")
            .map(String::as_str),
        Some("2097152"),
        "the restored record was skipped"
    );
    assert_eq!(after.partitions[0].leading_epoch(), Some(6));
}

/// CreatePartitions and a config change install the record they stored; a leader change
/// the controller folded into it before must take effect then, not never.
#[tokio::test]
async fn an_admin_change_applies_the_leader_epoch_its_stored_record_carries() {
    let m = member().await;
    let me = m.broker.config.node_id;
    let topic = record("grown", vec![partition(me, 0, &[me], &[me])]);
    m.store.create_topic(&topic).await.expect("create");
    m.broker.refresh(m.session).await;
    let open = m.broker.topics.get("grown").expect("open");
    assert_eq!(open.partitions[0].leading_epoch(), Some(0));

    let mut bumped = stored(&m.store, "grown").await;
    bumped.partitions[0].leader_epoch = 3;
    m.store.update_topic(&bumped).await.expect("bump the epoch");
    m.broker
        .create_partitions("grown", 2, None, false)
        .await
        .expect("add a partition");
    let open = m.broker.topics.get("grown").expect("open");
    assert_eq!(open.partitions[0].leading_epoch(), Some(3));
    m.broker.refresh(m.session).await;
    assert_eq!(
        m.broker.topics.get("grown").expect("open").partitions[0].leading_epoch(),
        Some(3)
    );

    let mut bumped = stored(&m.store, "grown").await;
    bumped.partitions[0].leader_epoch = 4;
    m.store.update_topic(&bumped).await.expect("bump the epoch");
    m.broker
        .set_topic_configs(
            "grown",
            |_| {
                Ok(BTreeMap::from([(
                    "retention.ms".to_string(),
                    "60000".to_string(),
                )]))
            },
            false,
        )
        .await
        .expect("alter configs");
    m.broker.refresh(m.session).await;
    assert_eq!(
        m.broker.topics.get("grown").expect("open").partitions[0].leading_epoch(),
        Some(4)
    );
}

/// CreatePartitions checks against the stored partition count, not this broker's copy,
/// which lags until its next metadata round.
#[tokio::test]
async fn create_partitions_counts_the_stored_partitions() {
    let m = member().await;
    let me = m.broker.config.node_id;
    let mut topic = record("lagging", vec![partition(me, 0, &[me], &[me])]);
    m.store.create_topic(&topic).await.expect("create");
    m.broker.refresh(m.session).await;
    // Another broker adds a partition; no round has run here since.
    topic.partitions.push(partition(me, 0, &[me], &[me]));
    m.store.update_topic(&topic).await.expect("add a partition");
    assert_eq!(
        m.broker
            .topics
            .get("lagging")
            .expect("open")
            .partitions
            .len(),
        1
    );

    let same = m.broker.create_partitions("lagging", 2, None, false).await;
    assert!(
        matches!(&same, Err(AdminError::InvalidPartitions(message)) if message == "Topic already has 2 partition(s)."),
        "{same:?}"
    );
    // One assignment for the one partition that is really new.
    m.broker
        .create_partitions("lagging", 3, Some(vec![vec![me]]), false)
        .await
        .expect("a valid assignment");
    let open = m.broker.topics.get("lagging").expect("open");
    assert_eq!(open.partitions.len(), 3);
    assert_eq!(stored(&m.store, "lagging").await.partitions.len(), 3);
    assert_eq!(open.partitions[2].leading_epoch(), Some(0));
}

/// One of Kafka's checks of an explicit assignment: the replication factor of the
/// partitions before. (The embedded store cannot drain its one broker, so the check that
/// not every named broker is draining is tested against real clusters only.)
#[tokio::test]
async fn create_partitions_refuses_another_replication_factor() {
    let m = member().await;
    let me = m.broker.config.node_id;
    let gone = me + 40;
    let two = record("two-replicas", vec![partition(me, 0, &[me, gone], &[me])]);
    m.store.create_topic(&two).await.expect("create");
    m.broker.refresh(m.session).await;

    let refused = m
        .broker
        .create_partitions("two-replicas", 2, Some(vec![vec![me]]), false)
        .await;
    assert!(
        matches!(&refused, Err(AdminError::InvalidReplicaAssignment(message)) if message == "The manual partition assignment includes a partition with 1 replica(s), but this is not consistent with previous partitions, which have 2 replica(s)."),
        "{refused:?}"
    );

    assert_eq!(stored(&m.store, "two-replicas").await.partitions.len(), 1);
}

/// The only live broker is the controller: a partition led by a broker that is not
/// registered moves to it, with a new epoch, and the store says so.
#[tokio::test]
async fn the_controller_takes_over_a_partition_whose_leader_is_gone() {
    let m = member().await;
    let me = m.broker.config.node_id;
    let gone = me + 7;
    let topic = record(
        "orphaned",
        vec![partition(gone, 4, &[gone, me], &[gone, me])],
    );
    m.store.create_topic(&topic).await.expect("create");
    m.broker.refresh(m.session).await;
    assert!(
        m.broker.is_controller(),
        "the only broker is not the controller"
    );
    let after = stored(&m.store, "orphaned").await;
    let p = &after.partitions[0];
    assert_eq!(p.leader, me, "{p:?}");
    assert!(p.leader_epoch > 4, "{p:?}");
    assert!(!p.isr.contains(&gone), "{p:?}");
    // The round that stored the new leadership also applied it to the local partition.
    let open = m.broker.topics.get("orphaned").expect("opened");
    assert_eq!(open.partitions[0].leading_epoch(), Some(p.leader_epoch));
}

/// A broker whose session is gone stops leading at once, without a metadata round (the
/// store may be out of reach), and leads by its last records again once it has rejoined.
#[tokio::test]
async fn a_broker_whose_session_is_gone_drops_its_leaderships_until_it_rejoins() {
    let m = member().await;
    let me = m.broker.config.node_id;
    let topic = record("led-here", vec![partition(me, 3, &[me], &[me])]);
    m.store.create_topic(&topic).await.expect("create");
    m.broker.refresh(m.session).await;
    let open = m.broker.topics.get("led-here").expect("opened");
    assert_eq!(open.partitions[0].leading_epoch(), Some(3));
    m.broker.drop_all_roles().await;
    assert_eq!(open.partitions[0].leading_epoch(), None, "still leading");
    assert!(
        m.broker
            .topics
            .get("led-here")
            .expect("still open")
            .partitions[0]
            .dir()
            .is_dir(),
        "dropping a role must not delete the log"
    );
    m.broker.reapply_roles().await;
    assert_eq!(open.partitions[0].leading_epoch(), Some(3));
}
