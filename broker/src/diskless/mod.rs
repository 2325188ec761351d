//! Diskless topics (`diskless.enable`): partitions with no local log and no replicas.
//! Every broker takes produce for any diskless partition and serves reads of it; the
//! data lives in the object store, the order in the metadata store.
//!
//! ## Truth rules
//!
//! - The metadata store is the truth of a partition's offsets: its `head`
//!   ([`state::Head`]: log start, next offset, merged offset) and its `runs`
//!   ([`state::Run`]), each a range of offsets stored as a byte range of one shared
//!   object. An offset exists once the commit that assigned it succeeded, and not before.
//! - Objects before metadata: a broker collects the batches of one append interval (all
//!   partitions) into one shared object, PUTs it, and only then commits runs that point
//!   into it. A crash between the two leaves an object no run names, which the scrubber
//!   removes; no offset was assigned, and the producer, never answered, retries.
//! - Commits are compare-and-swap on each partition's head, so two brokers appending to
//!   one partition are serialised: the loser re-reads and recomputes its offsets. The
//!   stored batches carry base offset 0; readers patch each batch's base offset from its
//!   run's `base`.
//! - Idempotence lives with the partition, in its producer entries
//!   ([`state::ProducerEntry`]), which every commit reads and writes under the same
//!   compare: a retry that reaches another broker is still recognised as a duplicate.
//! - Transactions live with the partition too, in its head: `open` maps each producer
//!   with a transaction open here to the offset of its first transactional batch since
//!   its last marker (the oldest bounds the last stable offset, `Head::last_stable`).
//!   A transactional batch is verified with its coordinator by the broker that takes
//!   the produce when that broker's view shows no transaction of the producer open here;
//!   an unverified one only joins a transaction open at commit time (else it is refused
//!   retriably, and the retry is verified). A marker is a control batch the coordinator
//!   has any broker append through its own appender (no leader): checked for its epoch
//!   only (an older epoch than the producer entry's is refused; a newer one fences the
//!   older batches), it removes the producer from `open`, and an ABORT of an open
//!   transaction records an `AbortedEntry` with the run that holds the marker (as the
//!   local log's `.txnindex` keeps it with the marker's segment). At most
//!   `state::MAX_OPEN_TRANSACTIONS` (256) transactions are open per partition: a batch
//!   that would open one more is refused with KAFKA_STORAGE_ERROR (retriable) until one
//!   ends. A producer with a transaction open is never expired.
//! - Merged data (below `merged`) is in the partition's tiered manifest, in the tiered
//!   format; runs below `merged` may linger until trimmed and are ignored.
//!
//! ## Modules
//!
//! `state` (records and the pure commit logic), `store` (etcd and embedded stores),
//! `view` (every broker's view of every partition, kept by a watch), `append` (the
//! appender: shared objects and commits), `read` (Fetch and ListOffsets, the write
//! cache), `metrics`. Merging, retention, scrubbing and deletion are MERGE's modules;
//! `compact` compacts the merged history of compacted topics.

pub mod compact;
pub mod merge;
pub mod retention;
pub mod scrub;
pub mod shares;
pub mod state;
pub mod store;

pub use state::{Head, PartitionKey, PartitionState, ProducerEntry, Run};
pub use store::{AppendWrite, DisklessStore, DisklessWatch};

pub mod append;
pub mod metrics;
pub mod read;
pub mod view;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use strata_tiering::RemoteLog;
use tokio_util::sync::CancellationToken;

use crate::tier::Tiering;

/// A diskless partition's merged history: its tiered manifest (`RemoteLog`), opened on
/// first use. MERGE commits merged segments to it at leader epoch 0.
pub struct DisklessPartition {
    pub key: PartitionKey,
    pub topic: String,
    pub remote: Arc<RemoteLog>,
}

/// Everything diskless on one broker: the view, the appender, the write cache.
pub struct Diskless {
    pub view: Arc<view::DisklessView>,
    pub appender: Arc<append::Appender>,
    pub cache: Arc<read::WriteCache>,
    pub metrics: Arc<metrics::DisklessMetrics>,
    pub tiering: Arc<Tiering>,
    /// The first dirty offsets of the compacted partitions this broker merge-owns.
    pub cleaner: compact::CleanerState,
    /// A std mutex: held for a map access; opening a partition happens outside it.
    partitions: Mutex<HashMap<PartitionKey, Arc<DisklessPartition>>>,
}

/// What a fetch of a diskless partition returns.
pub struct FetchResult {
    pub records: Bytes,
    pub high_watermark: i64,
    /// The head's last stable offset ([`Head::last_stable`]).
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    /// For read_committed, the aborted transactions with records among `records`
    /// (KIP-98: the client drops them); empty otherwise.
    pub aborted: Vec<crate::log::txn::AbortedTxn>,
    /// Read from the merged history (the tiered manifest), not the runs.
    pub from_merged: bool,
}

impl Diskless {
    /// Loads the view of every diskless partition.
    pub async fn open(
        config: &crate::config::Config,
        store: Arc<dyn DisklessStore>,
        tiering: Arc<Tiering>,
        registry: &prometheus::Registry,
        clock: Arc<dyn crate::sys::Clock>,
    ) -> anyhow::Result<(Diskless, i64)> {
        use anyhow::Context;
        let view = Arc::new(view::DisklessView::new(store));
        let revision = view.load().await.context("load diskless partitions")?;
        let metrics = Arc::new(
            metrics::DisklessMetrics::register(registry).context("register diskless metrics")?,
        );
        let cache = Arc::new(read::WriteCache::new(
            config.diskless_write_cache_bytes.max(0) as u64,
        ));
        let appender = Arc::new(append::Appender::new(
            config,
            view.clone(),
            tiering.store.clone(),
            cache.clone(),
            metrics.clone(),
            clock,
        ));
        Ok((
            Diskless {
                view,
                appender,
                cache,
                metrics,
                tiering,
                cleaner: compact::CleanerState::default(),
                partitions: Mutex::new(HashMap::new()),
            },
            revision,
        ))
    }

    /// Starts the view's watch and the appender; both stop on `cancel` (the appender
    /// after flushing what is queued).
    pub fn start(
        &self,
        revision: i64,
        cancel: &CancellationToken,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        vec![
            tokio::spawn(self.view.clone().follow(revision, cancel.clone())),
            tokio::spawn(self.appender.clone().run(cancel.clone())),
        ]
    }

    /// The partition's merged history, opened (one metadata-store read) on first use.
    pub async fn partition(
        &self,
        key: PartitionKey,
        topic: &str,
    ) -> Result<Arc<DisklessPartition>, strata_tiering::TierError> {
        if let Some(p) = self.lock().get(&key) {
            return Ok(p.clone());
        }
        let remote = self
            .tiering
            .open_remote_log(strata_tiering::PartitionId {
                topic: topic.to_string(),
                topic_id: key.topic_id,
                partition: key.partition,
            })
            .await?;
        let partition = Arc::new(DisklessPartition {
            key,
            topic: topic.to_string(),
            remote,
        });
        Ok(self.lock().entry(key).or_insert(partition).clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PartitionKey, Arc<DisklessPartition>>> {
        self.partitions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets a deleted topic.
    pub fn remove_topic(&self, topic_id: uuid::Uuid) {
        self.view.remove_topic(topic_id);
        self.lock().retain(|k, _| k.topic_id != topic_id);
    }

    /// Reads from `offset`: OFFSET_OUT_OF_RANGE below the log start or past `next`;
    /// empty at `next`. A `read_committed` read stops at the last stable offset (empty
    /// from there up to `next`, as Kafka) and lists the aborted transactions among its
    /// records: from the runs' entries, and for merged history from the segment's
    /// transaction index.
    ///
    /// This broker's view may be behind the store (a consumer that moved here from a
    /// broker that appended more): an offset past the view's `next` first refreshes the
    /// partition from the store, and is out of range only if it is still past the
    /// refreshed `next`. If the refresh fails, the answer is empty records with the
    /// view's high watermark (the client asks again), never OFFSET_OUT_OF_RANGE, which
    /// would make it reset. A gap in the runs (a view caught mid-change) is refreshed and
    /// read once more, else answered as a retriable [`read::ReadError::Gap`].
    pub async fn fetch(
        &self,
        key: PartitionKey,
        topic: &str,
        offset: i64,
        max_bytes: usize,
        read_committed: bool,
    ) -> Result<FetchResult, read::ReadError> {
        let mut state = self.view.get(&key);
        if offset > state.head.next {
            match self.view.refresh(&key).await {
                Ok(fresh) => state = fresh,
                Err(e) => {
                    tracing::warn!(partition = %key, error = %e,
                        "cannot refresh a diskless partition for a fetch past its end");
                    return Ok(FetchResult {
                        records: Bytes::new(),
                        high_watermark: state.head.next,
                        last_stable_offset: state.head.last_stable(),
                        log_start_offset: state.head.log_start,
                        aborted: Vec::new(),
                        from_merged: false,
                    });
                }
            }
        }
        let read = (offset, max_bytes, read_committed);
        match self.fetch_from(&state, key, topic, read).await {
            Err(read::ReadError::Gap { .. }) => {
                let fresh = self
                    .view
                    .refresh(&key)
                    .await
                    .map_err(|_| read::ReadError::Gap { offset })?;
                self.fetch_from(&fresh, key, topic, read).await
            }
            result => result,
        }
    }

    async fn fetch_from(
        &self,
        state: &PartitionState,
        key: PartitionKey,
        topic: &str,
        (offset, max_bytes, read_committed): (i64, usize, bool),
    ) -> Result<FetchResult, read::ReadError> {
        let head = &state.head;
        if offset < head.log_start || offset > head.next {
            return Err(read::ReadError::OutOfRange {
                offset,
                log_start: head.log_start,
                next: head.next,
            });
        }
        let reader = self.tiering.reader();
        // Merged history is all below the last stable offset (merging stops there).
        let upto = if read_committed {
            head.last_stable()
        } else {
            head.next
        };
        let mut aborted = Vec::new();
        let records = if offset >= upto {
            Bytes::new()
        } else if offset < head.merged {
            let partition = self
                .partition(key, topic)
                .await
                .map_err(|e| read::ReadError::Remote(e.into()))?;
            let remote = &partition.remote;
            let first = read::read_merged(
                remote,
                &reader,
                head.merged,
                offset,
                max_bytes,
                read_committed.then_some(&mut aborted),
            )
            .await;
            match first {
                // The cached manifest may name a segment object that compaction (on the
                // merge owner) replaced and deleted: reload it and read once more.
                Err(read::ReadError::Remote(e)) => {
                    tracing::debug!(partition = %key, error = %e,
                        "a merged read failed; reloading the manifest");
                    remote
                        .reload()
                        .await
                        .map_err(|e| read::ReadError::Remote(e.into()))?;
                    aborted.clear();
                    read::read_merged(
                        remote,
                        &reader,
                        head.merged,
                        offset,
                        max_bytes,
                        read_committed.then_some(&mut aborted),
                    )
                    .await?
                }
                result => result?,
            }
        } else {
            read::read_runs(state, &self.cache, &reader, (offset, upto), max_bytes).await?
        };
        if read_committed && let Some(end) = crate::log::txn::records_end(&records) {
            read::merge_aborted(&mut aborted, read::aborted_in_runs(state, offset, end));
        }
        Ok(FetchResult {
            records,
            high_watermark: head.next,
            last_stable_offset: head.last_stable(),
            log_start_offset: head.log_start,
            aborted,
            from_merged: offset < head.merged,
        })
    }

    /// ListOffsets by timestamp (`timestamp` ≥ 0) or MAX_TIMESTAMP (`None`): (offset,
    /// timestamp), or `None` if no record qualifies. As in Kafka, only a record the
    /// caller may fetch qualifies: below `next`, and for `read_committed` below the last
    /// stable offset (a record found past it answers `None`, not a later one).
    pub async fn offset_for_timestamp(
        &self,
        key: PartitionKey,
        topic: &str,
        timestamp: Option<i64>,
        read_committed: bool,
    ) -> Result<Option<(i64, i64)>, read::ReadError> {
        let state = self.view.get(&key);
        let fetchable = if read_committed {
            state.head.last_stable()
        } else {
            state.head.next
        };
        let found = self.search(&state, key, topic, timestamp).await?;
        Ok(found.filter(|&(offset, _)| offset < fetchable))
    }

    async fn search(
        &self,
        state: &PartitionState,
        key: PartitionKey,
        topic: &str,
        timestamp: Option<i64>,
    ) -> Result<Option<(i64, i64)>, read::ReadError> {
        let reader = self.tiering.reader();
        let from = state.head.log_start;
        let in_runs = match timestamp {
            Some(ts) => {
                read::runs_offset_for_timestamp(state, &self.cache, &reader, ts, from).await?
            }
            None => read::runs_max_timestamp(state, &self.cache, &reader, from).await?,
        };
        if state.head.merged <= from {
            return Ok(in_runs);
        }
        let partition = self
            .partition(key, topic)
            .await
            .map_err(|e| read::ReadError::Remote(e.into()))?;
        let remote = &partition.remote;
        // The cached manifest is stale if it ends below `merged` (another broker merged
        // since) or starts below the log start (retention or DeleteRecords, through their
        // own copy, deleted segments it still names). A failed search (a segment deleted
        // meanwhile: 404) reloads and searches once more.
        let marks = remote.marks();
        if marks.end_offset.is_none_or(|end| end < state.head.merged)
            || marks.log_start_offset < from
        {
            remote
                .reload()
                .await
                .map_err(|e| read::ReadError::Remote(e.into()))?;
        }
        let merged = match read::merged_search(&reader, remote, timestamp, in_runs, from).await {
            Ok(found) => found,
            Err(e) => {
                tracing::debug!(partition = %key, error = %e,
                    "a diskless ListOffsets search failed; reloading the manifest");
                remote
                    .reload()
                    .await
                    .map_err(|e| read::ReadError::Remote(e.into()))?;
                read::merged_search(&reader, remote, timestamp, in_runs, from).await?
            }
        };
        // Merged records come before the runs' (all below `merged`): the first found
        // there is the answer by timestamp; for MAX_TIMESTAMP, `merged_search` returned
        // one only if its timestamp is at least the runs' largest.
        Ok(merged.or(in_runs))
    }
}

/// The zone a client named in its `client.id` (`strata_az=<zone>`, e.g.
/// `myapp,strata_az=us-east-1a`), for requests that carry no rack (Metadata, Produce).
pub fn client_zone(client_id: &str) -> Option<&str> {
    let (_, rest) = client_id.split_once("strata_az=")?;
    let zone = rest.split([',', ';', ' ']).next().unwrap_or_default();
    (!zone.is_empty()).then_some(zone)
}

/// The broker that answers for a diskless partition to a client in `zone`: among the live
/// brokers of that zone if there are any, else among all live brokers, by a stable hash of
/// (topic id, partition), so that a partition's clients meet on one broker (its write
/// batching and write cache) while partitions spread over the brokers.
pub fn choose_broker(
    live: &[crate::cluster::BrokerInfo],
    key: &PartitionKey,
    zone: Option<&str>,
) -> Option<i32> {
    let in_zone: Vec<i32> = match zone {
        Some(zone) => live
            .iter()
            .filter(|b| b.rack.as_deref() == Some(zone))
            .map(|b| b.node_id)
            .collect(),
        None => Vec::new(),
    };
    let mut candidates = if in_zone.is_empty() {
        live.iter().map(|b| b.node_id).collect()
    } else {
        in_zone
    };
    candidates.sort_unstable();
    candidates.dedup();
    if candidates.is_empty() {
        return None;
    }
    Some(candidates[(stable_hash(key) % candidates.len() as u64) as usize])
}

/// The live brokers a client of `listener` can reach: the only ones Metadata names for a
/// diskless partition and the only ones Fetch redirects to. (Whether a broker has
/// diskless support is not in `BrokerInfo`; every Strata broker of this version has.)
pub fn reachable(
    live: Vec<crate::cluster::BrokerInfo>,
    listener: &str,
) -> Vec<crate::cluster::BrokerInfo> {
    live.into_iter()
        .filter(|b| b.endpoint(listener).is_some())
        .collect()
}

/// FNV-1a of (topic id, partition): the same on every broker and every build.
pub fn stable_hash(key: &PartitionKey) -> u64 {
    key.topic_id
        .as_bytes()
        .iter()
        .chain(key.partition.to_be_bytes().iter())
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(node_id: i32, rack: &str) -> crate::cluster::BrokerInfo {
        crate::cluster::BrokerInfo {
            node_id,
            host: "h".into(),
            port: 9092,
            rack: Some(rack.into()),
            replication: String::new(),
            admin: String::new(),
            listeners: Vec::new(),
            principal: String::new(),
        }
    }

    #[test]
    fn zones_come_from_the_client_id_convention() {
        assert_eq!(
            client_zone("myapp,strata_az=us-east-1a"),
            Some("us-east-1a")
        );
        assert_eq!(client_zone("strata_az=b,other"), Some("b"));
        assert_eq!(client_zone("myapp"), None);
        assert_eq!(client_zone("strata_az="), None);
    }

    #[test]
    fn a_partition_goes_to_a_broker_of_the_clients_zone_and_always_the_same() {
        let live = [
            broker(1, "a"),
            broker(2, "b"),
            broker(3, "a"),
            broker(4, "b"),
        ];
        let mut seen = std::collections::BTreeSet::new();
        for partition in 0..32 {
            let key = PartitionKey {
                topic_id: uuid::Uuid::from_u128(7),
                partition,
            };
            let chosen = choose_broker(&live, &key, Some("a")).expect("a broker");
            assert!(chosen == 1 || chosen == 3, "{chosen}");
            assert_eq!(choose_broker(&live, &key, Some("a")), Some(chosen));
            seen.insert(chosen);
            // An unknown zone, or none: any live broker.
            assert!(choose_broker(&live, &key, Some("z")).is_some());
            assert!(choose_broker(&live, &key, None).is_some());
        }
        assert_eq!(seen.len(), 2, "partitions spread over the zone's brokers");
        assert_eq!(
            choose_broker(
                &[],
                &PartitionKey {
                    topic_id: uuid::Uuid::nil(),
                    partition: 0
                },
                None
            ),
            None
        );
    }

    #[test]
    fn only_brokers_with_the_callers_listener_are_chosen() {
        let with = |node_id, names: &[&str]| crate::cluster::BrokerInfo {
            listeners: names
                .iter()
                .map(|n| crate::cluster::ListenerEndpoint {
                    name: n.to_string(),
                    host: "h".into(),
                    port: 9092,
                })
                .collect(),
            ..broker(node_id, "a")
        };
        let live = vec![with(1, &["INTERNAL"]), with(2, &["INTERNAL", "CLIENT"])];
        let reached: Vec<i32> = reachable(live.clone(), "CLIENT")
            .iter()
            .map(|b| b.node_id)
            .collect();
        assert_eq!(reached, [2]);
        for partition in 0..8 {
            let key = PartitionKey {
                topic_id: uuid::Uuid::from_u128(3),
                partition,
            };
            assert_eq!(
                choose_broker(&reachable(live.clone(), "CLIENT"), &key, Some("a")),
                Some(2)
            );
        }
        // A broker registered before listeners existed answers on every listener.
        assert_eq!(reachable(vec![broker(3, "a")], "CLIENT").len(), 1);
    }
}
