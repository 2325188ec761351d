//! The broker's membership loop: keeps its session (etcd lease) and registration alive,
//! campaigns for controller, reads the cluster's metadata when a watch on it reports a
//! change (or, without a watch, when the store's revision moved; in any case every 30 s),
//! runs the controller's reconciliation when it is the
//! controller, applies topic records to the local partitions (opening, closing,
//! leading, following) and proposes ISR changes for the partitions it leads.
//!
//! etcd unreachable: the broker keeps serving with what it last read. Its lease may
//! expire meanwhile; the controller then moves its leaderships, and the broker learns
//! that (and follows) once it reads metadata again. When its keep-alive reports the
//! lease gone (expired, or ended by a peer), it stops leading every partition at once,
//! re-registers with a new lease and takes the roles of the records it last read.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, info, warn};

use super::{Broker, Topic};
use crate::cluster::controller::{self, Brokers};
use crate::cluster::{BrokerInfo, ClusterView, StoreError, TopicRecord};
use crate::partition::Partition;
use crate::partition::isr::Transition;
use crate::registry::Roots;

/// This broker's view of the cluster, as the membership loop last read it.
#[derive(Default)]
pub(super) struct Membership {
    /// The brokers, controller and drains as last read from the metadata store.
    view: std::sync::RwLock<Arc<ClusterView>>,
    /// When the controller last moved leaders back to preferred replicas.
    last_rebalance_ms: std::sync::atomic::AtomicI64,
    /// The last metadata read in full, reused while the store's revision stands still.
    snapshot: std::sync::Mutex<Option<MetadataSnapshot>>,
    /// The revision of the last change the view's watch reported (or the revision it
    /// started from); `None` while no watch is open, when each round asks the store.
    watched_revision: std::sync::Mutex<Option<i64>>,
    /// Wakes the metadata loop for a round at once: the watch saw a change.
    changed: tokio::sync::Notify,
    /// Brokers that left the view lately, and when: Metadata keeps naming them for
    /// [`DEPARTED_LISTED_FOR`] (see [`Broker::metadata_brokers`]).
    departed: std::sync::Mutex<Vec<(BrokerInfo, std::time::Instant)>>,
    /// Peers being checked after a broken replication stream (`Broker::check_peer`).
    checking_peers: Arc<std::sync::Mutex<std::collections::HashSet<i32>>>,
    /// When this broker last ended each peer's session (`super::liveness`): at most once
    /// per node per session timeout.
    revocations: Arc<super::liveness::Revocations>,
}

impl Membership {
    pub(super) fn checking_peers(&self) -> Arc<std::sync::Mutex<std::collections::HashSet<i32>>> {
        self.checking_peers.clone()
    }

    pub(super) fn revocations(&self) -> Arc<super::liveness::Revocations> {
        self.revocations.clone()
    }
}

/// A metadata round's full read, and the store revision it was taken at.
#[derive(Clone)]
struct MetadataSnapshot {
    revision: i64,
    session: i64,
    read_at: std::time::Instant,
    controller: i32,
    brokers: Vec<BrokerInfo>,
    draining: BTreeSet<i32>,
    topics: Vec<(TopicRecord, u64)>,
    broker_configs: crate::cluster::BrokerConfigs,
}

/// Even with the revision standing still, metadata is read in full this often: a guard
/// against a store whose revision went back (an etcd restored from a snapshot), and
/// against a watch that stopped delivering without an error.
const FULL_READ_EVERY: Duration = Duration::from_secs(30);

/// How long a broker that left the cluster stays in Metadata's broker list.
const DEPARTED_LISTED_FOR: Duration = Duration::from_secs(5);

/// The least time between the starts of two metadata rounds woken by the watch.
const MIN_ROUND_GAP: Duration = Duration::from_millis(100);

/// How long the view's watch waits before it is opened again after it failed.
const WATCH_RETRY: Duration = Duration::from_secs(1);

impl Broker {
    pub fn cluster_view(&self) -> Arc<ClusterView> {
        self.membership
            .view
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Live brokers for Metadata: this one alone until the first metadata read.
    pub fn live_brokers(&self) -> Vec<BrokerInfo> {
        let view = self.cluster_view();
        if view.brokers.is_empty() {
            vec![self.own_info()]
        } else {
            view.brokers.clone()
        }
    }

    /// The brokers Metadata lists: the live ones, and those that left in the last
    /// [`DEPARTED_LISTED_FOR`]. librdkafka drops a broker missing from a Metadata answer
    /// and, when the same answer moves a partition from it to a new leader, the drop
    /// races the move: the partition's queued records then wait for its next periodic
    /// check (up to a second) instead of going to the new leader at once. A departed
    /// broker leads nothing, so a client that connects to it meanwhile is only refused.
    pub fn metadata_brokers(&self) -> Vec<BrokerInfo> {
        let mut brokers = self.live_brokers();
        let departed = self
            .membership
            .departed
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for (info, left) in departed.iter() {
            if left.elapsed() < DEPARTED_LISTED_FOR
                && !brokers.iter().any(|b| b.node_id == info.node_id)
            {
                brokers.push(info.clone());
            }
        }
        brokers
    }

    /// Keeps the brokers that left between the `before` and `after` views.
    fn note_departed(&self, before: &[BrokerInfo], after: &[BrokerInfo]) {
        let mut departed = self
            .membership
            .departed
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        departed.retain(|(info, left)| {
            left.elapsed() < DEPARTED_LISTED_FOR && !after.iter().any(|b| b.node_id == info.node_id)
        });
        let now = std::time::Instant::now();
        for gone in before
            .iter()
            .filter(|b| !after.iter().any(|a| a.node_id == b.node_id))
        {
            departed.retain(|(info, _)| info.node_id != gone.node_id);
            departed.push((gone.clone(), now));
        }
    }

    /// The controller for Metadata; this broker until one is known (kafkajs sends
    /// InitProducerId to it, so it must be live).
    pub fn controller_id(&self) -> i32 {
        let view = self.cluster_view();
        if view.brokers.iter().any(|b| b.node_id == view.controller) {
            view.controller
        } else {
            self.config.node_id
        }
    }

    pub fn is_controller(&self) -> bool {
        self.cluster_view().controller == self.config.node_id
    }

    pub fn broker_info(&self, node_id: i32) -> Option<BrokerInfo> {
        self.cluster_view()
            .brokers
            .iter()
            .find(|b| b.node_id == node_id)
            .cloned()
    }

    /// A live broker's info; this broker's own even before the first metadata read.
    pub fn broker_info_or_own(&self, node_id: i32) -> Option<BrokerInfo> {
        if node_id == self.config.node_id {
            return Some(self.own_info());
        }
        self.broker_info(node_id)
    }

    pub fn own_info(&self) -> BrokerInfo {
        BrokerInfo {
            node_id: self.config.node_id,
            host: self.advertised_host.clone(),
            port: self.advertised_port,
            rack: (!self.config.rack.is_empty()).then(|| self.config.rack.clone()),
            replication: self.config.replication_advertised(),
            admin: self.config.admin_advertised(),
            listeners: self
                .listeners
                .iter()
                .map(|l| crate::cluster::ListenerEndpoint {
                    name: l.name.clone(),
                    host: l.advertised_host.clone(),
                    port: l.advertised_port,
                })
                .collect(),
            principal: self.security.own_principal().unwrap_or_default(),
        }
    }

    /// Opens a session and registers, retrying while a previous incarnation's lease is
    /// still alive (a restart faster than `broker_session_timeout_ms`). A process that
    /// has just started (`restarted`) then steps down where others are in sync
    /// ([`controller::step_down`]) before it applies any role.
    pub async fn join_cluster(&self, restarted: bool) -> anyhow::Result<i64> {
        let info = self.own_info();
        let ttl = self.config.broker_session_timeout_ms;
        let deadline = std::time::Instant::now() + Duration::from_millis(ttl as u64 * 3);
        let mut warned = false;
        loop {
            let session = self.store.open_session(ttl).await?;
            match self.store.register_broker(&info, session).await {
                Ok(()) => {
                    info!(node_id = info.node_id, session, "registered in the cluster");
                    if restarted {
                        self.step_down_after_start().await?;
                    }
                    self.refresh(session).await;
                    return Ok(session);
                }
                Err(StoreError::AlreadyExists(_)) if std::time::Instant::now() < deadline => {
                    let _ = self.store.close_session(session).await;
                    if !warned {
                        warn!(
                            node_id = info.node_id,
                            "node id still registered by a previous incarnation; waiting for its session to expire"
                        );
                        warned = true;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(StoreError::AlreadyExists(_)) => anyhow::bail!(
                    "node id {} is registered by another live broker: every broker of a cluster needs its own node_id",
                    info.node_id
                ),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// See [`controller::step_down`]. Each topic is changed by compare-and-swap, retried
    /// on conflicts; the broker does not start until every change is stored.
    async fn step_down_after_start(&self) -> anyhow::Result<()> {
        let me = self.config.node_id;
        let mut handed_off = 0;
        for _ in 0..32 {
            let live = self.store.live_brokers().await?;
            let mut conflicts = 0;
            for (record, version) in self.store.list_topics_versioned().await? {
                let record = record.normalize();
                let Some(next) = controller::step_down(&record, me, &live) else {
                    continue;
                };
                if self.store.update_topic_if(&next, version).await? {
                    for (i, (old, new)) in
                        record.partitions.iter().zip(&next.partitions).enumerate()
                    {
                        if old != new {
                            handed_off += 1;
                            info!(topic = %next.name, partition = i, leader = new.leader, epoch = new.leader_epoch,
                                isr = ?new.isr, "left the ISR on start; rejoining once caught up");
                        }
                    }
                } else {
                    conflicts += 1;
                }
            }
            if conflicts == 0 {
                if handed_off > 0 {
                    info!(partitions = handed_off, "stepped down after start");
                }
                return Ok(());
            }
        }
        anyhow::bail!("topic records kept changing while this broker was stepping down after start")
    }

    /// Keeps a watch open on the keys of the cluster view and wakes the metadata loop at
    /// each change, so a change reaches this broker in milliseconds and a quiet cluster
    /// costs etcd nothing. Without a watch (it failed, or etcd is out of reach) the loop
    /// polls the store's revision each round, as it does with a store that cannot watch.
    pub async fn watch_view(self: Arc<Self>) {
        let mut outage = Outage::default();
        loop {
            let opened = match self.store.revision().await {
                Ok(Some(revision)) => self
                    .store
                    .watch_view(revision)
                    .await
                    .map(|watch| watch.map(|w| (revision, w))),
                Ok(None) => Ok(None),
                Err(e) => Err(e),
            };
            match opened {
                Ok(None) => return, // the store cannot watch: the rounds poll
                Ok(Some((revision, mut watch))) => {
                    outage.recovered();
                    self.set_watched_revision(Some(revision));
                    loop {
                        let change = tokio::select! {
                            _ = self.shutdown.cancelled() => return,
                            change = watch.next_change() => change,
                        };
                        match change {
                            Ok(revision) => {
                                self.advance_watched_revision(revision);
                                self.membership.changed.notify_one();
                            }
                            Err(e) => {
                                outage.failed("watch cluster metadata", &e);
                                break;
                            }
                        }
                    }
                }
                Err(e) => outage.failed("watch cluster metadata", &e),
            }
            // Until a new watch is open, each round asks the store; one now reads what
            // the broken watch may have missed.
            self.set_watched_revision(None);
            self.membership.changed.notify_one();
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(WATCH_RETRY) => {}
            }
        }
    }

    fn set_watched_revision(&self, revision: Option<i64>) {
        *self
            .membership
            .watched_revision
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = revision;
    }

    /// Records a change the watch reported; events may arrive out of revision order
    /// (one watch per key range), and the view is as new as the newest of them.
    fn advance_watched_revision(&self, revision: i64) {
        let mut watched = self
            .membership
            .watched_revision
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *watched = Some(watched.map_or(revision, |w| w.max(revision)));
    }

    fn watched_revision(&self) -> Option<i64> {
        *self
            .membership
            .watched_revision
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Runs a metadata round soon, as a watched change does (say after this broker
    /// ended another's session).
    pub(super) fn wake_metadata_round(&self) {
        self.membership.changed.notify_one();
    }

    /// The metadata loop: a round every `metadata_refresh_interval_ms` until shutdown, with
    /// the session [`Broker::keep_session`] publishes. The session is renewed by its own
    /// loop, so a slow metadata round (many topics, a slow etcd) cannot cost the lease.
    /// Both are supervised loops that may be restarted, so the session lives in a channel
    /// their owner keeps; [`Broker::end_session`] closes it after both stopped.
    pub async fn run_metadata_rounds(self: Arc<Self>, current: tokio::sync::watch::Receiver<i64>) {
        let interval = Duration::from_millis(self.config.metadata_refresh_interval_ms as u64);
        let mut outage = Outage::default();
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_round: Option<tokio::time::Instant> = None;
        loop {
            let watched = tokio::select! {
                _ = self.shutdown.cancelled() => break,
                _ = ticker.tick() => false,
                _ = self.membership.changed.notified() => true,
            };
            // Each round re-reads every topic and security record: a burst of watched
            // changes is taken in rounds at least MIN_ROUND_GAP apart, not back to back.
            if watched && let Some(last) = last_round {
                tokio::select! {
                    _ = self.shutdown.cancelled() => break,
                    _ = tokio::time::sleep_until(last + MIN_ROUND_GAP) => {}
                }
            }
            last_round = Some(tokio::time::Instant::now());
            let session = *current.borrow();
            match self.refresh_once(session).await {
                Ok(()) => outage.recovered(),
                Err(e) => outage.failed("read cluster metadata", &e),
            }
        }
    }

    /// Ends the session at shutdown, so the controller moves this broker's leaderships at
    /// once instead of at the session's expiry.
    pub async fn end_session(&self, session: i64) {
        if let Err(e) = self.store.close_session(session).await {
            warn!(error = %e, "could not end the session; the controller will notice at its expiry");
        }
    }

    /// Renews the session every third of its lifetime; when it has expired (cut off from
    /// etcd for too long), joins again and publishes the new session.
    pub async fn keep_session(self: Arc<Self>, sessions: Arc<tokio::sync::watch::Sender<i64>>) {
        let every = Duration::from_millis(self.config.broker_session_timeout_ms as u64 / 3);
        let mut outage = Outage::default();
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let session = *sessions.borrow();
            match self.store.keep_alive(session).await {
                Ok(true) => outage.recovered(),
                Ok(false) => {
                    warn!(
                        "this broker's session is gone (expired, or ended by a peer); dropping every role and joining again"
                    );
                    // Out of the cluster, its leaderships may be another's by now: it
                    // neither acknowledges nor uploads until it has joined and read them.
                    self.drop_all_roles().await;
                    match self.join_cluster(false).await {
                        Ok(s) => {
                            sessions.send_replace(s);
                            self.reapply_roles().await;
                        }
                        Err(e) => warn!(error = %e, "re-joining the cluster failed"),
                    }
                }
                Err(e) => outage.failed("renew the session", &e),
            }
        }
    }

    /// One metadata round: read, reconcile (controller), apply, propose ISR changes.
    pub async fn refresh(&self, session: i64) {
        if let Err(e) = self.refresh_once(session).await {
            warn!(error = %e, "metadata refresh failed; serving with the last metadata");
        }
    }

    async fn refresh_once(&self, session: i64) -> Result<(), StoreError> {
        let config_changes = self.dynamic_configs.changes();
        let MetadataSnapshot {
            controller,
            brokers,
            draining,
            mut topics,
            broker_configs,
            ..
        } = self.read_metadata(session).await?;
        // Before the topics: a topic opened this round takes the new defaults.
        self.apply_broker_configs_read(broker_configs, config_changes)
            .await;
        let before = std::mem::replace(
            &mut *self
                .membership
                .view
                .write()
                .unwrap_or_else(|p| p.into_inner()),
            Arc::new(ClusterView {
                brokers: brokers.clone(),
                controller,
                draining: draining.clone(),
            }),
        );
        self.note_departed(&before.brokers, &brokers);
        if controller == self.config.node_id {
            self.reconcile(&mut topics, &brokers, &draining).await?;
        }
        let records: Vec<(TopicRecord, u64)> = topics
            .into_iter()
            .map(|(t, version)| (t.normalize(), version))
            .collect();
        self.apply_topics(records).await;
        self.propose_isr_changes().await;
        self.report_replication();
        Ok(())
    }

    /// The round's metadata: read in full (campaign, brokers, drains, topics) when the
    /// store's revision moved since the last full read, or that read is older than
    /// [`FULL_READ_EVERY`]; otherwise the last read again, for one small etcd request.
    /// The revision is taken before the reads, so a change racing them is seen next round.
    async fn read_metadata(&self, session: i64) -> Result<MetadataSnapshot, StoreError> {
        // With a watch open, the last change it reported stands for the store's revision:
        // no request at all while nothing of the view changes.
        let revision = match self.watched_revision() {
            Some(revision) => Some(revision),
            None => self.store.revision().await?,
        };
        if let Some(revision) = revision {
            let last = self
                .membership
                .snapshot
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(last) = last.as_ref()
                && last.revision == revision
                && last.session == session
                && last.read_at.elapsed() < FULL_READ_EVERY
            {
                return Ok(last.clone());
            }
        }
        let mut broker_configs_failed = false;
        let snapshot = MetadataSnapshot {
            revision: revision.unwrap_or(-1),
            session,
            read_at: std::time::Instant::now(),
            controller: self.store.campaign(self.config.node_id, session).await?,
            brokers: self.store.live_brokers().await?,
            draining: self.store.draining().await?.into_iter().collect(),
            // Before the topics: the later the topics are read, the less a round that
            // applies them lags behind topic changes made here meanwhile.
            broker_configs: match self.store.broker_configs().await {
                Ok(configs) => configs,
                Err(e) => {
                    broker_configs_failed = true;
                    tracing::warn!(error = %e, "could not read the dynamic broker configs; keeping the ones read before");
                    (*self.stored_broker_configs()).clone()
                }
            },
            topics: self.store.list_topics_versioned().await?,
        };
        // Credentials, quotas and ACLs changed through other brokers arrive with the same
        // reads. After a failed read (of those, or of the broker configs) the snapshot is not kept, so the next round reads
        // again rather than waiting for the store to move.
        let refreshed = self.security.refresh().await;
        if let Err(e) = &refreshed {
            tracing::warn!(error = %e, "could not re-read credentials, quotas and ACLs; keeping the ones read before");
        }
        if revision.is_some() && refreshed.is_ok() && !broker_configs_failed {
            *self
                .membership
                .snapshot
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(snapshot.clone());
        }
        Ok(snapshot)
    }

    async fn reconcile(
        &self,
        topics: &mut [(TopicRecord, u64)],
        brokers: &[BrokerInfo],
        draining: &BTreeSet<i32>,
    ) -> Result<(), StoreError> {
        let view = Brokers {
            live: brokers,
            draining,
        };
        let rebalance = self.config.leader_rebalance_interval_ms > 0 && {
            let now = self.clock.now_ms();
            let last = self
                .membership
                .last_rebalance_ms
                .load(std::sync::atomic::Ordering::Relaxed);
            let due = now - last >= self.config.leader_rebalance_interval_ms;
            if due {
                self.membership
                    .last_rebalance_ms
                    .store(now, std::sync::atomic::Ordering::Relaxed);
            }
            due
        };
        let records: Vec<TopicRecord> = topics.iter().map(|(t, _)| t.clone().normalize()).collect();
        let mut load = controller::load(&records);
        for (entry, record) in topics.iter_mut().zip(records) {
            let unclean = crate::topic_config::TopicConfig::resolve(
                &record.configs,
                &self.effective_config(),
            )
            .map(|c| c.unclean_leader_election())
            .unwrap_or(false);
            let Some(next) = controller::reconcile(&record, &view, &mut load, unclean, rebalance)
            else {
                continue;
            };
            if self.store.update_topic_if(&next, entry.1).await? {
                for (i, (old, new)) in record.partitions.iter().zip(&next.partitions).enumerate() {
                    if old == new {
                        continue;
                    }
                    info!(topic = %next.name, partition = i, leader = new.leader,
                        epoch = new.leader_epoch, isr = ?new.isr, replicas = ?new.replicas,
                        "controller changed a partition");
                    if old.leader != new.leader {
                        let cause = if !brokers.iter().any(|b| b.node_id == old.leader) {
                            "failover"
                        } else if draining.contains(&old.leader) {
                            "drain"
                        } else {
                            "preferred"
                        };
                        self.metrics
                            .leader_elections
                            .with_label_values(&[cause])
                            .inc();
                    }
                }
                entry.0 = next;
                // Its new version is past the one it replaced.
                entry.1 += 1;
            }
        }
        // Diskless partitions have no leader by design: never offline.
        let offline = topics
            .iter()
            .filter(|(t, _)| !t.is_diskless())
            .flat_map(|(t, _)| &t.partitions)
            .filter(|p| p.leader < 0)
            .count();
        self.metrics
            .offline_partitions
            .with_label_values::<&str>(&[])
            .set(offline as i64);
        Ok(())
    }

    /// Role and ISR gauges over this broker's partitions.
    fn report_replication(&self) {
        let (mut leader, mut follower, mut none) = (0i64, 0i64, 0i64);
        let (mut under_replicas, mut under_min_isr) = (0i64, 0i64);
        for topic in self.topics.all() {
            let min_isr = topic.config.min_insync_replicas();
            for partition in &topic.partitions {
                let state = partition.replica_state();
                match state.role {
                    crate::partition::isr::Role::Leader => {
                        leader += 1;
                        under_replicas += i64::from(state.isr.len() < state.replicas.len());
                        under_min_isr += i64::from(state.isr.len() < min_isr);
                    }
                    crate::partition::isr::Role::Follower => follower += 1,
                    crate::partition::isr::Role::None => none += 1,
                }
            }
        }
        let m = &self.metrics;
        m.partitions.with_label_values(&["leader"]).set(leader);
        m.partitions.with_label_values(&["follower"]).set(follower);
        m.partitions.with_label_values(&["none"]).set(none);
        m.under_replicated
            .with_label_values(&["replicas"])
            .set(under_replicas);
        m.under_replicated
            .with_label_values(&["min_isr"])
            .set(under_min_isr);
    }

    /// Whether the store holds topic `name` with id `id` right now. A store error answers
    /// "unknown", which keeps the local state as it is until a later round.
    async fn stored_now(&self, name: &str, id: uuid::Uuid) -> bool {
        match self.store.get_topic_versioned(name).await {
            Ok(found) => found.is_some_and(|(record, _)| record.id == id),
            Err(e) => {
                warn!(topic = name, error = %e, "cannot confirm a topic with the metadata store");
                true
            }
        }
    }

    /// Brings local topics and partition roles in line with the stored records, each with
    /// its store version.
    async fn apply_topics(&self, records: Vec<(TopicRecord, u64)>) {
        let _admin = self.admin.lock().await;
        let now = self.clock.now_ms();
        let stored: HashSet<(String, uuid::Uuid)> = records
            .iter()
            .map(|(r, _)| (r.name.clone(), r.id))
            .collect();
        // Topics deleted (or re-created under a new id) elsewhere. The round's read may
        // predate a topic this broker created since (it holds the admin lock now, so
        // nothing changes under it): the store confirms before any files are deleted.
        // Without this, a first consumer group's __consumer_offsets was created, then
        // closed and emptied by the round that had read the topics just before.
        for topic in self.topics.all() {
            if !stored.contains(&(topic.name.clone(), topic.id))
                && !self.stored_now(&topic.name, topic.id).await
            {
                self.close_deleted_topic(&topic);
            }
        }
        for (record, version) in records {
            let local = self.topics.get(&record.name);
            let topic = match local {
                Some(t) if t.id == record.id => {
                    // An older version than installed here is a read from before a change
                    // this broker committed and installed since (a CreatePartitions: it
                    // would hide the new partitions from Metadata until the next round).
                    // Only the version decides: after an etcd restore a record may have
                    // fewer partitions than here and must still be applied.
                    if t.record == record || version < t.store_version {
                        continue;
                    }
                    match self.update_local_topic(&t, record, version).await {
                        Ok(t) => t,
                        Err(e) => {
                            warn!(topic = %t.name, error = %e, "cannot apply a topic change");
                            continue;
                        }
                    }
                }
                // Likewise a topic deleted here since the read is not opened again.
                _ if !self.stored_now(&record.name, record.id).await => continue,
                _ => match self.open_topic(record.clone(), Roots::Read).await {
                    Ok(mut t) => {
                        info!(topic = %t.name, "opened a topic created on another broker");
                        t.store_version = version;
                        let t = Arc::new(t);
                        self.topics.insert(t.clone());
                        t
                    }
                    Err(e) => {
                        warn!(topic = %record.name, error = %e, "cannot open a topic");
                        continue;
                    }
                },
            };
            self.apply_roles(&topic, now);
        }
    }

    /// Stops leading every partition at once, without waiting for the store: each led
    /// partition takes its last record with no leader, so acks=all waiters are answered
    /// NOT_LEADER_OR_FOLLOWER, produce is refused and the uploader (which writes only
    /// while leading) stops. For a broker whose session is gone. Under the admin lock, as
    /// a metadata round applies records: the two never interleave partition by partition.
    pub async fn drop_all_roles(&self) {
        let _admin = self.admin.lock().await;
        let now = self.clock.now_ms();
        for topic in self.topics.all() {
            for (partition, record) in topic.partitions.iter().zip(&topic.record.partitions) {
                let state = partition.replica_state();
                if state.role != crate::partition::isr::Role::Leader {
                    continue;
                }
                let mut leaderless = record.clone();
                leaderless.leader = -1;
                leaderless.leader_epoch = state.epoch;
                match partition.apply_record(&leaderless, now) {
                    Ok(_) => {
                        info!(topic = %topic.name, partition = partition.index, "stopped leading: session gone");
                        self.groups
                            .partition_led(self, &topic.name, partition, false);
                    }
                    Err(e) => {
                        warn!(topic = %topic.name, partition = partition.index, error = %e, "cannot stop leading")
                    }
                }
            }
        }
    }

    /// Gives every partition the role of the last record read again, after
    /// [`Broker::drop_all_roles`]: a round skips records it has applied already. Under
    /// the admin lock, with the records installed by the latest round (read under it), so
    /// a record a concurrent round installed is never replaced by an older one.
    pub async fn reapply_roles(&self) {
        let _admin = self.admin.lock().await;
        let now = self.clock.now_ms();
        for topic in self.topics.all() {
            self.apply_roles(&topic, now);
        }
    }

    /// Gives each of `topic`'s partitions the role its record names.
    pub(super) fn apply_roles(&self, topic: &Topic, now: i64) {
        for (partition, p) in topic.partitions.iter().zip(&topic.record.partitions) {
            match partition.apply_record(p, now) {
                Ok(Transition::BecameLeader) => {
                    info!(topic = %topic.name, partition = partition.index, epoch = p.leader_epoch, "leading");
                    if partition.remote().is_some() {
                        tokio::spawn(claim_manifest(partition.clone(), p.leader_epoch));
                    }
                    self.groups
                        .partition_led(self, &topic.name, partition, true);
                }
                Ok(Transition::BecameFollower) | Ok(Transition::Stopped) => {
                    info!(topic = %topic.name, partition = partition.index, leader = p.leader, epoch = p.leader_epoch, "following");
                    self.groups
                        .partition_led(self, &topic.name, partition, false);
                }
                Ok(Transition::Unchanged) => {}
                Err(e) => {
                    warn!(topic = %topic.name, partition = partition.index, error = %e, "cannot take the new role")
                }
            }
        }
    }

    /// A topic, opened from the store if another broker just created it (rather than at
    /// the next refresh).
    pub async fn open_stored_topic(&self, name: &str) -> Option<Arc<Topic>> {
        if let Some(topic) = self.topics.get(name) {
            return Some(topic);
        }
        let record = self
            .store
            .list_topics()
            .await
            .ok()?
            .into_iter()
            .find(|t| t.name == name)?
            .normalize();
        let _admin = self.admin.lock().await;
        if let Some(topic) = self.topics.get(name) {
            return Some(topic);
        }
        match self.open_topic(record, Roots::Read).await {
            Ok(topic) => {
                let topic = Arc::new(topic);
                self.topics.insert(topic.clone());
                Some(topic)
            }
            Err(e) => {
                warn!(topic = name, error = %e, "cannot open a topic created on another broker");
                None
            }
        }
    }

    /// A new record for a topic this broker has open: new partitions, configs.
    pub(super) async fn update_local_topic(
        &self,
        topic: &Topic,
        record: TopicRecord,
        store_version: u64,
    ) -> Result<Arc<Topic>, crate::broker::AdminError> {
        let config =
            crate::topic_config::TopicConfig::resolve(&record.configs, &self.effective_config())?;
        let mut partitions = topic.partitions.clone();
        // A diskless topic opens no local logs, however many partitions it has.
        let local = if topic.diskless {
            0
        } else {
            record.partitions.len()
        };
        for index in partitions.len()..local {
            partitions.push(Arc::new(
                self.open_partition(&record, &config, index).await?,
            ));
        }
        if config.log_config() != topic.config.log_config() {
            for p in &partitions {
                p.set_config(config.log_config());
            }
        }
        let next = Arc::new(Topic {
            name: topic.name.clone(),
            id: topic.id,
            partitions,
            diskless: topic.diskless,
            config,
            record,
            store_version,
        });
        self.topics.insert(next.clone());
        Ok(next)
    }

    fn close_deleted_topic(&self, topic: &Topic) {
        self.topics.remove(&topic.name);
        for partition in &topic.partitions {
            if let Err(e) = partition.delete_files() {
                warn!(topic = %topic.name, partition = partition.index, error = %e, "could not remove a deleted topic's log");
            }
        }
        let _ = std::fs::remove_dir(self.topics.topic_dir(&topic.name, topic.id));
        if topic.diskless
            && let Some(diskless) = &self.diskless
        {
            // Its view entries and cached manifests (the deleting broker removes the data).
            diskless.remove_topic(topic.id);
        }
        self.metrics
            .forget_topic(&topic.name, topic.partitions.len() as i32);
        info!(topic = %topic.name, "closed a topic deleted on another broker");
    }

    /// Stores the ISR changes due on partitions this broker leads (Kafka's AlterPartition).
    async fn propose_isr_changes(&self) {
        let now = self.clock.now_ms();
        let lag = self.config.replica_lag_time_max_ms;
        let view = self.cluster_view();
        let live = |id: i32| view.brokers.iter().any(|b| b.node_id == id);
        for topic in self.topics.all() {
            for partition in &topic.partitions {
                let Some(isr) = partition.isr_change(now, lag, live) else {
                    continue;
                };
                let state = partition.replica_state();
                partition.set_proposed_isr(Some(isr.clone()));
                let index = partition.index as usize;
                let me = self.config.node_id;
                // Refusals decided by the stored record are final; a store error leaves
                // it unknown whether the write landed.
                let mut refused = false;
                let stored = self
                    .edit_stored_topic(&topic.name, |record| {
                        let refuse = |why: &str| {
                            crate::broker::AdminError::Store(StoreError::Unavailable(why.into()))
                        };
                        let Some(p) = record.partitions.get_mut(index) else {
                            refused = true;
                            return Err(refuse("the partition is gone"));
                        };
                        if p.leader != me || p.leader_epoch != state.epoch {
                            refused = true;
                            return Err(refuse("no longer the leader"));
                        }
                        if p.isr == isr {
                            return Ok(()); // an earlier attempt landed
                        }
                        // Built on the ISR we know: if the controller changed it since,
                        // our proposal could undo its change (a dead broker put back).
                        if p.isr != state.isr {
                            refused = true;
                            return Err(refuse("the stored ISR changed meanwhile"));
                        }
                        // Nor may it put back a broker a reassignment (or its cancel)
                        // removed from the replicas since.
                        if !isr.iter().all(|r| p.replicas.contains(r)) {
                            refused = true;
                            return Err(refuse("a proposed member is no longer a replica"));
                        }
                        p.isr = isr.clone();
                        Ok(())
                    })
                    .await;
                match stored {
                    Ok(record) => {
                        info!(topic = %topic.name, partition = index, from = ?state.isr, to = ?isr, "ISR changed");
                        let change = if isr.len() > state.isr.len() {
                            "expand"
                        } else {
                            "shrink"
                        };
                        self.metrics.isr_changes.with_label_values(&[change]).inc();
                        if let Some(p) = record.partitions.get(index)
                            && let Err(e) = partition.apply_record(p, now)
                        {
                            warn!(topic = %topic.name, partition = index, error = %e, "cannot apply the ISR change");
                        }
                    }
                    Err(e) if refused => {
                        // The next refresh applies the stored record; propose from there.
                        partition.set_proposed_isr(None);
                        info!(topic = %topic.name, partition = index, error = %e, "ISR change refused");
                    }
                    Err(e) => {
                        // It may have been stored: keep counting the proposal (the
                        // maximal ISR stays safe) and retry it next round.
                        debug!(topic = %topic.name, partition = index, error = %e, "ISR change not confirmed; will retry");
                    }
                }
            }
        }
    }
}

/// Makes a new leader's epoch the manifest's, so the deposed leader's uploads and
/// retention fail from now on. Retried while this broker still leads in `epoch`; the
/// uploader also claims before its first write, so nothing of ours lands unclaimed.
async fn claim_manifest(partition: Arc<Partition>, epoch: i32) {
    let mut backoff = Duration::from_millis(200);
    while partition.leading_epoch() == Some(epoch) && !partition.is_deleted() {
        let Some(remote) = partition.remote() else {
            return;
        };
        match remote.claim(epoch).await {
            Ok(()) => return,
            Err(e) => {
                warn!(partition = %remote.id, epoch, error = %e, "cannot claim the manifest for the new epoch; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Logs an etcd outage once when it starts, every 30 s while it lasts, and when it ends,
/// rather than every refresh round.
#[derive(Default)]
struct Outage {
    since: Option<std::time::Instant>,
    last_warning: Option<std::time::Instant>,
}

impl Outage {
    fn failed(&mut self, what: &str, error: &StoreError) {
        let now = std::time::Instant::now();
        let since = *self.since.get_or_insert(now);
        if self
            .last_warning
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(30))
        {
            self.last_warning = Some(now);
            warn!(%error, down_for_s = now.duration_since(since).as_secs(),
                "cannot {what}; serving with the last metadata");
        }
    }

    fn recovered(&mut self) {
        if let Some(since) = self.since.take() {
            self.last_warning = None;
            info!(
                down_for_ms = since.elapsed().as_millis() as u64,
                "the metadata store is reachable again"
            );
        }
    }
}
