//! The membership loop in process: a real broker (embedded metadata store, logs on a temp
//! dir) whose metadata store the test also writes, as the controller or another broker
//! would. One metadata round (`Broker::refresh`) must then open, change, take over or
//! close what the store says, and leave disk and registry in step with it.

use std::collections::BTreeMap;
use std::sync::Arc;

use strata_broker::broker::{Broker, SystemClock};
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
