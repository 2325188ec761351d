//! One set of scenarios, run against every MetadataStore: the embedded store and a real
//! etcd (Debian's etcd-server, started here on free loopback ports; the test fails, not
//! skips, when etcd cannot start). The manifest-root stores (tiered storage) get the same
//! treatment.

mod etcd_support;
use etcd_support::{free_port, start_etcd};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use strata_broker::cluster::embedded::EmbeddedStore;
use strata_broker::cluster::etcd::EtcdStore;
use strata_broker::cluster::manifests::{EmbeddedManifests, EtcdManifests};
use strata_broker::cluster::{BrokerInfo, MetadataStore, PartitionRecord, StoreError, TopicRecord};
use strata_tiering::{ManifestStore, ManifestStoreError, PartitionId};
use uuid::Uuid;

fn topic(name: &str, partitions: usize) -> TopicRecord {
    TopicRecord {
        name: name.to_string(),
        id: Uuid::new_v4(),
        partitions: (0..partitions)
            .map(|_| PartitionRecord::new(vec![0]))
            .collect(),
        configs: BTreeMap::from([("retention.ms".to_string(), "1000".to_string())]),
    }
}

/// The contract every store must keep. `reopen` gives a second handle on the same data,
/// as a restarted broker would get.
async fn scenarios(
    store: Arc<dyn MetadataStore>,
    reopen: impl AsyncFn() -> Arc<dyn MetadataStore>,
) {
    let cluster_id = store.cluster_id().await.expect("cluster id");
    assert_eq!(cluster_id.len(), 22);
    assert_eq!(
        store.cluster_id().await.expect("again"),
        cluster_id,
        "the cluster id is stable"
    );
    assert!(store.list_topics().await.expect("list").is_empty());

    let orders = topic("orders", 3);
    store.create_topic(&orders).await.expect("create");
    let duplicate = topic("orders", 1);
    assert!(
        matches!(store.create_topic(&duplicate).await, Err(StoreError::AlreadyExists(name)) if name == "orders")
    );
    store
        .create_topic(&topic("payments", 1))
        .await
        .expect("create another");

    let mut changed = orders.clone();
    changed
        .configs
        .insert("segment.bytes".into(), "4096".into());
    changed.partitions.push(PartitionRecord::new(vec![0]));
    store.update_topic(&changed).await.expect("update");
    assert!(matches!(
        store.update_topic(&topic("ghost", 1)).await,
        Err(StoreError::NotFound(_))
    ));

    // Versioned reads and compare-and-swap: one topic read alone (not a prefix of
    // another name), a write against a stale version refused.
    store
        .create_topic(&topic("orders2", 1))
        .await
        .expect("a name with orders as prefix");
    let (read, version) = store
        .get_topic_versioned("orders")
        .await
        .expect("get")
        .expect("orders exists");
    assert_eq!(read, changed);
    assert!(
        store
            .get_topic_versioned("order")
            .await
            .expect("get")
            .is_none()
    );
    assert!(store.update_topic_if(&read, version).await.expect("cas"));
    let (_, newer) = store
        .get_topic_versioned("orders")
        .await
        .expect("get")
        .expect("orders exists");
    assert_ne!(newer, version, "a write moves the version");
    assert!(
        !store
            .update_topic_if(&read, version)
            .await
            .expect("stale cas")
    );
    store.delete_topic("orders2").await.expect("delete orders2");

    let again = reopen().await;
    assert_eq!(
        again.cluster_id().await.expect("cluster id after reopen"),
        cluster_id
    );
    let mut topics = again.list_topics().await.expect("list after reopen");
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(topics.len(), 2);
    assert_eq!(topics[0], changed, "updates are durable and complete");

    let deleted = again.delete_topic("orders").await.expect("delete");
    assert_eq!(deleted.map(|t| t.id), Some(orders.id));
    assert!(
        again
            .delete_topic("orders")
            .await
            .expect("delete twice")
            .is_none()
    );
    let names: Vec<_> = again
        .list_topics()
        .await
        .expect("list")
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, vec!["payments".to_string()]);
    // The name is free again, with a new id.
    again
        .create_topic(&topic("orders", 1))
        .await
        .expect("re-create");
    security_records(store.clone(), &reopen).await;
    broker_configs(store, &reopen).await;
}

/// Dynamic broker configs: the cluster default and each broker's set are separate, a set
/// is replaced whole and only if it is still what the writer read, an empty set removes
/// it, and they survive a reopen.
async fn broker_configs(
    store: Arc<dyn MetadataStore>,
    reopen: &impl AsyncFn() -> Arc<dyn MetadataStore>,
) {
    use strata_broker::cluster::{BrokerConfigs, ConfigScope};
    let set = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    assert_eq!(
        store.broker_configs().await.expect("read"),
        BrokerConfigs::default()
    );
    let none = BTreeMap::new();
    let set_if = async |store: &Arc<dyn MetadataStore>,
                        scope,
                        expected: &BTreeMap<String, String>,
                        configs: &BTreeMap<String, String>| {
        store
            .set_broker_configs(scope, expected, configs)
            .await
            .expect("write")
    };
    let default = set(&[("log.retention.ms", "60000"), ("num.partitions", "3")]);
    assert!(set_if(&store, ConfigScope::ClusterDefault, &none, &default).await);
    let one = set(&[("log.retention.ms", "1000")]);
    assert!(set_if(&store, ConfigScope::Broker(1), &none, &one).await);
    let twelve = set(&[("log.flush.interval.ms", "5")]);
    assert!(set_if(&store, ConfigScope::Broker(12), &none, &twelve).await);
    // A change against a stale expectation is refused and writes nothing: another broker
    // changed the set meanwhile (or created it).
    let lost = set(&[("log.retention.ms", "5")]);
    assert!(!set_if(&store, ConfigScope::Broker(1), &none, &lost).await);
    assert!(!set_if(&store, ConfigScope::Broker(1), &twelve, &lost).await);
    assert!(!set_if(&store, ConfigScope::Broker(7), &one, &lost).await);
    // Replaced whole, not merged.
    let replaced = set(&[("log.segment.bytes", "2097152")]);
    assert!(set_if(&store, ConfigScope::Broker(1), &one, &replaced).await);
    assert!(set_if(&store, ConfigScope::Broker(12), &twelve, &none).await);
    let again = reopen().await;
    let stored = again.broker_configs().await.expect("read after reopen");
    assert_eq!(
        stored.cluster_default,
        set(&[("log.retention.ms", "60000"), ("num.partitions", "3")])
    );
    assert_eq!(
        stored.brokers,
        BTreeMap::from([(1, set(&[("log.segment.bytes", "2097152")]))])
    );
    assert_eq!(
        stored.scope(ConfigScope::Broker(12)),
        BTreeMap::new(),
        "an emptied set is gone"
    );
    assert!(
        again
            .set_broker_configs(ConfigScope::ClusterDefault, &default, &BTreeMap::new())
            .await
            .expect("remove the cluster default")
    );
    assert!(
        again
            .broker_configs()
            .await
            .expect("read")
            .cluster_default
            .is_empty()
    );
}

/// Security records: one change is all or nothing, kinds are separate, and they survive a
/// reopen. Keys may hold `/` and `:` (user names, principals).
async fn security_records(
    store: Arc<dyn MetadataStore>,
    reopen: &impl AsyncFn() -> Arc<dyn MetadataStore>,
) {
    use strata_broker::cluster::SecurityKind;
    assert!(
        store
            .list_security(SecurityKind::Scram)
            .await
            .expect("list")
            .is_empty()
    );
    let put = |k: &str, v: &str| (k.to_string(), v.to_string());
    store
        .change_security(
            SecurityKind::Scram,
            &[
                put("alice/SCRAM-SHA-256", "a1"),
                put("team/bob/SCRAM-SHA-512", "b1"),
            ],
            &[],
        )
        .await
        .expect("put");
    store
        .change_security(SecurityKind::Acl, &[put("User:alice|topic", "acl")], &[])
        .await
        .expect("put acl");
    store
        .change_security(
            SecurityKind::Scram,
            &[put("carol/SCRAM-SHA-256", "c1")],
            &[
                "alice/SCRAM-SHA-256".to_string(),
                "nobody/SCRAM-SHA-256".to_string(),
            ],
        )
        .await
        .expect("change");
    let again = reopen().await;
    let mut scram = again
        .list_security(SecurityKind::Scram)
        .await
        .expect("list");
    scram.sort();
    assert_eq!(
        scram,
        vec![
            put("carol/SCRAM-SHA-256", "c1"),
            put("team/bob/SCRAM-SHA-512", "b1")
        ]
    );
    assert_eq!(
        again.list_security(SecurityKind::Acl).await.expect("acls"),
        vec![put("User:alice|topic", "acl")]
    );
    assert!(
        again
            .list_security(SecurityKind::Quota)
            .await
            .expect("quotas")
            .is_empty()
    );
}

/// Two brokers racing to create the same topic: exactly one wins.
async fn racing_creates(store: Arc<dyn MetadataStore>) {
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.create_topic(&topic("race", 1)).await.is_ok()
        }));
    }
    let mut winners = 0;
    for task in tasks {
        winners += usize::from(task.await.expect("task"));
    }
    assert_eq!(winners, 1);
}

/// CreateTopics of many topics goes to the store in one call: every new name is created,
/// a taken name (stored before, or twice in the batch) fails alone, and more topics than
/// one etcd transaction holds are all created. The records survive a reopen.
async fn batched_creates<F>(store: Arc<dyn MetadataStore>, reopen: F)
where
    F: AsyncFn() -> Arc<dyn MetadataStore>,
{
    store
        .create_topic(&topic("batch-taken", 1))
        .await
        .expect("create");
    let mut batch: Vec<TopicRecord> = (0..150).map(|i| topic(&format!("batch-{i}"), 3)).collect();
    batch.insert(70, topic("batch-taken", 2));
    batch.push(topic("batch-5", 1));
    let results = store.create_topics(&batch).await.expect("create topics");
    assert_eq!(results.len(), batch.len());
    for (record, result) in batch.iter().zip(&results) {
        let expect_taken = record.name == "batch-taken"
            || (record.name == "batch-5" && record.partitions.len() == 1);
        if expect_taken {
            assert!(
                matches!(result, Err(StoreError::AlreadyExists(name)) if *name == record.name),
                "{} is taken: {result:?}",
                record.name
            );
        } else {
            assert!(result.is_ok(), "{}: {result:?}", record.name);
        }
    }
    let stored = reopen().await.list_topics().await.expect("list");
    let batch_topics: Vec<_> = stored
        .iter()
        .filter(|t| t.name.starts_with("batch-"))
        .collect();
    assert_eq!(batch_topics.len(), 151);
    assert!(
        batch_topics
            .iter()
            .filter(|t| t.name != "batch-taken")
            .all(|t| t.partitions.len() == 3)
    );
}

#[tokio::test]
async fn embedded_store_keeps_the_contract() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    let store: Arc<dyn MetadataStore> = Arc::new(EmbeddedStore::open(&path).expect("open"));
    scenarios(store.clone(), async || {
        Arc::new(EmbeddedStore::open(&path).expect("reopen")) as Arc<dyn MetadataStore>
    })
    .await;
    batched_creates(store.clone(), async || {
        Arc::new(EmbeddedStore::open(&path).expect("reopen")) as Arc<dyn MetadataStore>
    })
    .await;
    racing_creates(store).await;
}

#[tokio::test]
async fn etcd_store_keeps_the_contract() {
    let etcd = start_etcd();
    let endpoints = vec![etcd.endpoint.clone()];
    let store: Arc<dyn MetadataStore> = Arc::new(
        EtcdStore::connect(&endpoints, "test-a")
            .await
            .expect("connect"),
    );
    scenarios(store, async || {
        Arc::new(
            EtcdStore::connect(&endpoints, "test-a")
                .await
                .expect("reconnect"),
        ) as Arc<dyn MetadataStore>
    })
    .await;
    // Prefixes isolate clusters sharing one etcd.
    let other: Arc<dyn MetadataStore> = Arc::new(
        EtcdStore::connect(&endpoints, "test-b")
            .await
            .expect("connect"),
    );
    assert!(other.list_topics().await.expect("list").is_empty());
    batched_creates(other.clone(), async || {
        Arc::new(
            EtcdStore::connect(&endpoints, "test-b")
                .await
                .expect("reconnect"),
        ) as Arc<dyn MetadataStore>
    })
    .await;
    racing_creates(other).await;
}

/// A metadata round reuses its last read while the revision stands still, so the revision
/// must move with every change a round depends on (topics, brokers, drains, the
/// controller) and must not move on reads or refused writes.
#[tokio::test]
async fn etcd_revision_moves_exactly_when_metadata_changes() {
    let etcd = start_etcd();
    let store = EtcdStore::connect(std::slice::from_ref(&etcd.endpoint), "rev")
        .await
        .expect("connect");
    let revision = async || {
        store
            .revision()
            .await
            .expect("revision")
            .expect("etcd has one")
    };
    let start = revision().await;
    store.list_topics_versioned().await.expect("list");
    store.live_brokers().await.expect("brokers");
    assert_eq!(revision().await, start, "reads change nothing");

    let mut changes = vec![start];
    store.create_topic(&topic("t", 1)).await.expect("create");
    changes.push(revision().await);
    let (mut record, version) = store
        .get_topic_versioned("t")
        .await
        .expect("get")
        .expect("exists");
    record.partitions[0].isr = vec![1];
    assert!(store.update_topic_if(&record, version).await.expect("cas"));
    let after_cas = revision().await;
    changes.push(after_cas);
    assert!(
        !store
            .update_topic_if(&record, version)
            .await
            .expect("stale cas"),
        "a stale version is refused"
    );
    assert_eq!(
        revision().await,
        after_cas,
        "a refused write changes nothing"
    );
    let session = store.open_session(5000).await.expect("session");
    let info = BrokerInfo {
        node_id: 1,
        host: "127.0.0.1".into(),
        port: 9092,
        rack: None,
        replication: "127.0.0.1:9093".into(),
        admin: String::new(),
        listeners: Vec::new(),
        principal: String::new(),
    };
    store
        .register_broker(&info, session)
        .await
        .expect("register");
    changes.push(revision().await);
    assert_eq!(store.campaign(1, session).await.expect("campaign"), 1);
    let after_campaign = revision().await;
    changes.push(after_campaign);
    assert_eq!(store.campaign(2, session).await.expect("lost campaign"), 1);
    assert_eq!(
        revision().await,
        after_campaign,
        "a lost campaign changes nothing"
    );
    store.set_draining(1, true).await.expect("drain");
    changes.push(revision().await);
    store.close_session(session).await.expect("close");
    changes.push(revision().await);
    assert!(store.live_brokers().await.expect("brokers").is_empty());
    assert!(
        changes.windows(2).all(|w| w[1] > w[0]),
        "every change moved the revision: {changes:?}"
    );
}

fn broker_info(node_id: i32, replication: &str) -> BrokerInfo {
    BrokerInfo {
        node_id,
        host: "127.0.0.1".into(),
        port: 9092,
        rack: None,
        replication: replication.into(),
        admin: String::new(),
        listeners: Vec::new(),
        principal: String::new(),
    }
}

/// The view's watch reports every change a broker's view is read from, at the revision
/// it was made, and nothing of what changes with traffic (producer ids).
#[tokio::test]
async fn etcd_view_watch_reports_each_change_of_the_view() {
    let etcd = start_etcd();
    let store = EtcdStore::connect(std::slice::from_ref(&etcd.endpoint), "watch")
        .await
        .expect("connect");
    let start = store
        .revision()
        .await
        .expect("revision")
        .expect("etcd has one");
    let mut watch = store
        .watch_view(start)
        .await
        .expect("watch")
        .expect("etcd watches");
    let next = async |watch: &mut Box<dyn strata_broker::cluster::ViewWatch>| {
        tokio::time::timeout(Duration::from_secs(10), watch.next_change())
            .await
            .expect("a change within 10 s")
            .expect("the watch is open")
    };
    // Traffic, not the view: no event for it.
    store.allocate_producer_ids(10).await.expect("producer ids");
    store.create_topic(&topic("t", 1)).await.expect("create");
    let created = store
        .revision()
        .await
        .expect("revision")
        .expect("etcd has one");
    assert_eq!(next(&mut watch).await, created, "a topic record");
    let session = store.open_session(5000).await.expect("session");
    store
        .register_broker(&broker_info(1, "127.0.0.1:1"), session)
        .await
        .expect("register");
    let registered = next(&mut watch).await;
    assert!(registered > created, "a registration");
    assert_eq!(store.campaign(1, session).await.expect("campaign"), 1);
    assert!(next(&mut watch).await > registered, "the controller");
    store.set_draining(1, true).await.expect("drain");
    next(&mut watch).await;
    // A watch opened at an old revision replays what happened since (each key range in
    // its own order: whichever comes first, it is a change after `start`).
    let latest = store
        .revision()
        .await
        .expect("revision")
        .expect("etcd has one");
    let mut replay = store
        .watch_view(start)
        .await
        .expect("watch")
        .expect("etcd watches");
    let replayed = next(&mut replay).await;
    assert!(
        replayed > start && replayed <= latest,
        "replayed from the start: {replayed} not in {start}..={latest}"
    );
}

/// A broker's session is ended by another process only while its registration is the
/// one that process judged: a newer registration under the same node id is left alone.
#[tokio::test]
async fn etcd_ends_a_broker_session_only_for_the_registration_expected() {
    let etcd = start_etcd();
    let store = EtcdStore::connect(std::slice::from_ref(&etcd.endpoint), "end")
        .await
        .expect("connect");
    let old = broker_info(1, "127.0.0.1:1");
    let session = store.open_session(30_000).await.expect("session");
    store
        .register_broker(&old, session)
        .await
        .expect("register");
    assert_eq!(store.campaign(1, session).await.expect("campaign"), 1);
    let newer = broker_info(1, "127.0.0.1:2");
    assert!(
        !store
            .end_broker_session(1, &newer, session)
            .await
            .expect("end"),
        "not the registration judged"
    );
    assert_eq!(
        store.live_brokers().await.expect("brokers"),
        vec![old.clone()]
    );
    assert_eq!(
        store.broker_session(1).await.expect("lease"),
        Some(session),
        "the registration's lease"
    );
    assert!(
        !store
            .end_broker_session(1, &old, session + 1)
            .await
            .expect("end"),
        "not the incarnation (lease) judged"
    );
    assert_eq!(
        store.live_brokers().await.expect("brokers"),
        vec![old.clone()]
    );
    assert!(
        store
            .end_broker_session(1, &old, session)
            .await
            .expect("end")
    );
    assert!(store.live_brokers().await.expect("brokers").is_empty());
    let other = store.open_session(30_000).await.expect("session");
    assert_eq!(
        store.campaign(2, other).await.expect("campaign"),
        2,
        "its controllership went with it"
    );
    match store.keep_alive(session).await {
        Ok(false) => {}
        other => panic!("an ended session answered {other:?}, not Ok(false)"),
    }
    assert!(
        !store
            .end_broker_session(1, &old, session)
            .await
            .expect("end"),
        "nothing left to end"
    );
}

/// A session etcd no longer has reads as expired (`Ok(false)`), not as an outage: a
/// broker cut off from etcd past its session timeout must join again when etcd answers.
/// Read as `Unavailable`, the broker stayed out of the cluster until restarted (seen in
/// bench/outage_etcd.py with etcd paused for longer than the session).
#[tokio::test]
async fn an_expired_session_reads_as_expired_not_as_an_outage() {
    let etcd = start_etcd();
    let store = EtcdStore::connect(std::slice::from_ref(&etcd.endpoint), "expiry")
        .await
        .expect("connect");
    let session = store.open_session(2000).await.expect("session");
    assert!(
        store
            .keep_alive(session)
            .await
            .expect("renew a live session")
    );

    // Expired: not renewed for longer than its TTL (etcd revokes expired leases within
    // half a second of their expiry).
    tokio::time::sleep(Duration::from_millis(3500)).await;
    match store.keep_alive(session).await {
        Ok(false) => {}
        other => panic!("an expired session answered {other:?}, not Ok(false)"),
    }

    // Revoked (a clean shutdown by another handle, or an operator).
    let session = store.open_session(5000).await.expect("session");
    store.close_session(session).await.expect("close");
    match store.keep_alive(session).await {
        Ok(false) => {}
        other => panic!("a revoked session answered {other:?}, not Ok(false)"),
    }
}

#[tokio::test]
async fn an_unreachable_etcd_is_a_clear_error_not_a_hang() {
    let port = free_port();
    let started = Instant::now();
    let result = EtcdStore::connect(&[format!("http://127.0.0.1:{port}")], "x").await;
    match result {
        Err(StoreError::Unavailable(_)) => {}
        Err(other) => panic!("expected Unavailable, got {other}"),
        Ok(_) => panic!("connected to nothing"),
    }
    assert!(started.elapsed() < Duration::from_secs(30));
}

/// The manifest-root contract: absent until saved, compare-and-swap on the version, a
/// stale writer loses, a second handle (a restarted broker) sees the latest root.
async fn manifest_scenarios(
    manifests: Arc<dyn ManifestStore>,
    reopen: impl AsyncFn() -> Arc<dyn ManifestStore>,
) {
    let id = PartitionId {
        topic: "orders".into(),
        topic_id: Uuid::new_v4(),
        partition: 2,
    };
    assert!(manifests.load(&id).await.expect("load").is_none());
    let v1 = manifests
        .save(&id, Bytes::from_static(b"one"), None)
        .await
        .expect("create");
    assert!(matches!(
        manifests
            .save(&id, Bytes::from_static(b"again"), None)
            .await,
        Err(ManifestStoreError::Conflict)
    ));
    let v2 = manifests
        .save(&id, Bytes::from_static(b"two"), Some(v1))
        .await
        .expect("update");
    assert_ne!(v1, v2);
    assert!(matches!(
        manifests
            .save(&id, Bytes::from_static(b"stale"), Some(v1))
            .await,
        Err(ManifestStoreError::Conflict)
    ));
    let other = reopen().await;
    let (bytes, version) = other.load(&id).await.expect("load").expect("present");
    assert_eq!((&bytes[..], version), (&b"two"[..], v2));
    // The other handle can continue from what it loaded; the first is now stale.
    let v3 = other
        .save(&id, Bytes::from_static(b"three"), Some(v2))
        .await
        .expect("update from the other handle");
    assert!(matches!(
        manifests
            .save(&id, Bytes::from_static(b"lost"), Some(v2))
            .await,
        Err(ManifestStoreError::Conflict)
    ));
    assert_eq!(
        manifests.load(&id).await.expect("load"),
        Some((Bytes::from_static(b"three"), v3))
    );
    // Partitions are independent.
    let sibling = PartitionId {
        partition: 3,
        ..id.clone()
    };
    assert!(manifests.load(&sibling).await.expect("load").is_none());
    manifests.delete(&id).await.expect("delete");
    assert!(other.load(&id).await.expect("load").is_none());
}

#[tokio::test]
async fn embedded_manifests_keep_the_contract() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    manifest_scenarios(Arc::new(EmbeddedManifests::new(&path)), async || {
        Arc::new(EmbeddedManifests::new(&path)) as Arc<dyn ManifestStore>
    })
    .await;
}

#[tokio::test]
async fn etcd_manifests_keep_the_contract() {
    let etcd = start_etcd();
    let endpoints = vec![etcd.endpoint.clone()];
    let connect = async || {
        let store = EtcdStore::connect(&endpoints, "test-m")
            .await
            .expect("connect");
        Arc::new(EtcdManifests::new(store.client(), "test-m")) as Arc<dyn ManifestStore>
    };
    manifest_scenarios(connect().await, connect).await;
}

/// A drain mark made on behalf of an owner (the chart's preStop) is removed only by that
/// owner's undrain, and only while nobody marked the broker since: an operator's drain
/// (`set_draining`) takes the mark over. An existing mark is not taken.
#[tokio::test]
async fn etcd_owned_drain_marks_are_undone_only_by_their_owner() {
    let etcd = start_etcd();
    let store = EtcdStore::connect(std::slice::from_ref(&etcd.endpoint), "owned")
        .await
        .expect("connect");
    assert!(store.mark_draining_owned(1, "a").await.expect("mark"));
    assert_eq!(store.draining().await.expect("draining"), vec![1]);
    // Marked already: not taken, and not removed by a stranger's undrain.
    assert!(!store.mark_draining_owned(1, "b").await.expect("mark"));
    assert!(!store.undrain_owned(1, "b").await.expect("undrain"));
    assert!(store.undrain_owned(1, "a").await.expect("undrain"));
    assert!(store.draining().await.expect("draining").is_empty());
    // Nothing left to undo: done.
    assert!(store.undrain_owned(1, "a").await.expect("undrain"));
    // An operator's drain after the owner's: the owner's undrain leaves it.
    assert!(store.mark_draining_owned(2, "c").await.expect("mark"));
    store.set_draining(2, true).await.expect("operator drain");
    assert!(!store.undrain_owned(2, "c").await.expect("undrain"));
    assert_eq!(store.draining().await.expect("draining"), vec![2]);
}
