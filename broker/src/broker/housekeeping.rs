//! Housekeeping: the periodic flush, retention and cleaner rounds over every partition,
//! and the data disk's high watermark, which refuses produce while the disk is nearly
//! full.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tracing::{info, warn};

use super::Broker;
use crate::partition::Partition;

/// The data disk as housekeeping last saw it.
#[derive(Default)]
pub(super) struct DiskWatch {
    /// Set while the data disk is past `disk_high_watermark_percent`.
    pub(super) full: AtomicBool,
    /// Produce bytes accepted since the disk was last looked at, and how many may come
    /// before produce looks again (a quarter of the headroom then left): a burst cannot
    /// outrun the housekeeping ticker from below the mark to a full disk. Until the first
    /// look at the disk, every produce looks.
    appended_since_check: AtomicU64,
    recheck_bytes: AtomicU64,
}

/// Partitions whose periodic flush and retention run at the same time.
const HOUSEKEEPING_CONCURRENCY: usize = 16;

impl Broker {
    /// One pass of periodic log work over every partition; updates log gauges. Up to
    /// [`HOUSEKEEPING_CONCURRENCY`] partitions are worked on at once, so the fsyncs of a
    /// busy broker overlap instead of adding up (flush.ms stays close to its promise).
    pub async fn housekeeping(&self, force_flush: bool) {
        use futures::StreamExt;
        let now = self.clock.now_ms();
        self.check_disk();
        self.report_open_files();
        let partitions: Vec<Arc<Partition>> = self
            .topics
            .all()
            .iter()
            .flat_map(|t| t.partitions.iter().cloned())
            .collect();
        futures::stream::iter(partitions)
            .for_each_concurrent(HOUSEKEEPING_CONCURRENCY, |partition| async move {
                let expiration = self.config.producer_id_expiration_ms;
                let idle = self.config.log_release_idle_files_ms;
                match partition.housekeeping(now, force_flush, expiration, idle).await {
                    Ok(outcome) if outcome.segments > 0 => {
                        info!(topic = %partition.topic, partition = partition.index, segments = outcome.segments,
                            bytes = outcome.bytes, "retention deleted segments");
                    }
                    Ok(_) => {}
                    Err(e) => {
                        warn!(topic = %partition.topic, partition = partition.index, error = %e, "log housekeeping failed")
                    }
                }
                if partition.is_deleted() {
                    return; // its series went with the topic
                }
                let (size, segments, end, start) = partition.stats();
                let labels = [partition.topic.as_str(), &partition.index.to_string()];
                self.metrics.log_size.with_label_values(&labels).set(size as i64);
                self.metrics.log_segments.with_label_values(&labels).set(segments as i64);
                self.metrics.log_end_offset.with_label_values(&labels).set(end);
                let marks = partition.watermarks();
                self.metrics
                    .log_start_offset
                    .with_label_values(&labels)
                    .set(marks.log_start_offset);
                self.metrics
                    .last_stable_offset_lag
                    .with_label_values(&labels)
                    .set(marks.high_watermark - marks.last_stable_offset);
                self.metrics.local_log_start_offset.with_label_values(&labels).set(start);
                if let Some(remote) = partition.remote() {
                    let marks = remote.marks();
                    let m = &self.metrics;
                    m.remote_log_start_offset.with_label_values(&labels).set(marks.log_start_offset);
                    m.remote_log_end_offset
                        .with_label_values(&labels)
                        .set(marks.end_offset.unwrap_or(marks.log_start_offset));
                    m.remote_segments.with_label_values(&labels).set(marks.live_segments as i64);
                    m.remote_bytes.with_label_values(&labels).set(marks.live_bytes as i64);
                }
            })
            .await;
    }

    /// One log-cleaner round: a compaction pass for each compacted partition that is due,
    /// one partition at a time; for tiered partitions the remote tier follows each pass.
    pub async fn clean_logs(&self) {
        let max_keys = (self.config.log_cleaner_dedupe_buffer_bytes as usize)
            / crate::log::cleaner::BYTES_PER_KEY;
        for topic in self.topics.all() {
            if !topic.config.log_config().compact {
                continue;
            }
            let name = topic.name.as_str();
            for partition in &topic.partitions {
                if self.shutdown.is_cancelled() {
                    return;
                }
                // A tiered partition is compacted by its leader, in both tiers; its
                // followers drop what the bucket holds instead.
                if topic.config.log_config().remote_storage && !partition.is_leader() {
                    continue;
                }
                let now = self.clock.now_ms();
                let started = std::time::Instant::now();
                let before_bytes = partition.stats().0;
                let tiering = self.tiering.as_ref().filter(|_| {
                    partition
                        .remote()
                        .is_some_and(|r| r.marks().end_offset.is_some())
                });
                let remote_part = async |map| {
                    let Some(tiering) = tiering else { return true };
                    match crate::tier::compact_remote(tiering, partition, map, now).await {
                        Ok(crate::tier::RemotePass {
                            rewritten,
                            stale: 0,
                            ..
                        }) => {
                            if rewritten > 0 {
                                info!(
                                    topic = name,
                                    partition = partition.index,
                                    segments = rewritten,
                                    "compacted remote segments"
                                );
                            }
                            true
                        }
                        Ok(crate::tier::RemotePass { stale, .. }) => {
                            info!(
                                topic = name,
                                partition = partition.index,
                                stale,
                                "remote segments changed during compaction; the pass runs again"
                            );
                            false
                        }
                        Err(e) => {
                            self.cleaner_failed(name, partition.index, "remote compaction", &e);
                            false
                        }
                    }
                };
                let removed = match partition.clean(now, max_keys, remote_part).await {
                    Ok(Some(removed)) => removed,
                    Ok(None) => continue,
                    Err(e) => {
                        self.cleaner_failed(name, partition.index, "compaction", &e);
                        continue;
                    }
                };
                self.cleaner_ran(name, removed);
                info!(
                    topic = name,
                    partition = partition.index,
                    before_bytes,
                    removed_bytes = removed,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "compacted"
                );
            }
        }
        self.clean_diskless(max_keys).await;
    }

    /// The diskless part of a cleaner round: a pass over the merged history of each
    /// compacted diskless partition this broker merge-owns, if one is due
    /// (`crate::diskless::compact`). Counted in the cleaner's metrics.
    async fn clean_diskless(&self, max_keys: usize) {
        use crate::diskless::merge::DisklessHost;
        let (Some(diskless), Some(tiering)) = (&self.diskless, &self.tiering) else {
            return;
        };
        let live = DisklessHost::live_brokers(self);
        let me = self.config.node_id;
        let mut owned = std::collections::HashSet::new();
        for topic in self.topics.all() {
            let config = topic.config.log_config();
            if !topic.diskless || !config.compact {
                continue;
            }
            let name = topic.name.as_str();
            for index in 0..topic.partition_count() {
                let key = crate::diskless::PartitionKey {
                    topic_id: topic.id,
                    partition: index,
                };
                if self.shutdown.is_cancelled() {
                    return;
                }
                if crate::diskless::merge::owner(&live, &key) != Some(me) {
                    continue;
                }
                owned.insert(key);
                let head = diskless.view.get(&key).head.clone();
                let first_dirty = diskless.cleaner.first_dirty(&key);
                if head.merged <= head.log_start || head.merged <= first_dirty {
                    continue; // nothing merged, or nothing merged since the last pass
                }
                let started = std::time::Instant::now();
                let partition = match diskless.partition(key, name).await {
                    Ok(partition) => partition,
                    Err(e) => {
                        self.cleaner_failed(name, index, "diskless compaction", &e);
                        continue;
                    }
                };
                let pass = crate::diskless::compact::Pass {
                    remote: &partition.remote,
                    config: config.clone(),
                    first_dirty,
                    max_keys,
                    staging: self.config.data_dir.join("diskless-compact"),
                    stopped: &|| {
                        self.shutdown.is_cancelled() || diskless.view.is_removed(key.topic_id)
                    },
                };
                let now = self.clock.now_ms();
                let result = crate::diskless::compact::compact(tiering, pass, now).await;
                // A pass that may have committed a replacement (one that failed part-way
                // too): fenced against the topic's deletion, as merges are.
                let may_have_committed = match &result {
                    Ok(cleaned) => cleaned.is_some_and(|c| c.pass.rewritten > 0),
                    Err(_) => true,
                };
                if may_have_committed {
                    let store = diskless.view.store();
                    let fenced =
                        crate::diskless::compact::fence_deleted(&**store, &key, &partition.remote);
                    match fenced.await {
                        Ok(false) => {}
                        Ok(true) => continue,
                        Err(e) => {
                            self.cleaner_failed(name, index, "diskless compaction fence", &e);
                        }
                    }
                }
                let cleaned = match result {
                    Ok(Some(cleaned)) => cleaned,
                    Ok(None) => continue,
                    Err(e) => {
                        self.cleaner_failed(name, index, "diskless compaction", &e);
                        continue;
                    }
                };
                diskless.cleaner.set_first_dirty(key, cleaned.first_dirty);
                let removed = cleaned.pass.bytes_removed;
                self.cleaner_ran(name, removed);
                info!(
                    topic = name,
                    partition = index,
                    segments = cleaned.pass.rewritten,
                    stale = cleaned.pass.stale,
                    removed_bytes = removed,
                    first_dirty = cleaned.first_dirty,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "compacted a diskless partition's merged segments"
                );
            }
        }
        diskless.cleaner.retain(|key| owned.contains(key));
    }

    fn cleaner_ran(&self, topic: &str, bytes_removed: u64) {
        self.metrics.cleaner_runs.with_label_values(&[topic]).inc();
        self.metrics
            .cleaner_bytes_removed
            .with_label_values(&[topic])
            .inc_by(bytes_removed);
    }

    fn cleaner_failed(
        &self,
        topic: &str,
        partition: i32,
        what: &str,
        error: &dyn std::fmt::Display,
    ) {
        self.metrics
            .cleaner_errors
            .with_label_values(&[topic])
            .inc();
        warn!(topic, partition, %error, "{what} failed; retrying at the next round");
    }

    /// Whether a produce of `incoming_bytes` must be refused for a full disk. While
    /// refusing, every call looks at the disk again (one statvfs), so produce resumes as
    /// soon as space is freed rather than at the next housekeeping pass; while accepting,
    /// a call looks again once the bytes accepted since the last look may have used a
    /// quarter of the headroom.
    pub fn disk_is_full(&self, incoming_bytes: u64) -> bool {
        let since = self
            .disk
            .appended_since_check
            .fetch_add(incoming_bytes, Ordering::Relaxed)
            .saturating_add(incoming_bytes);
        if self.disk.full.load(Ordering::Relaxed)
            || since >= self.disk.recheck_bytes.load(Ordering::Relaxed)
        {
            self.check_disk();
        }
        self.disk.full.load(Ordering::Relaxed)
    }

    /// Descriptors in use, for the gauges an operator compares with the limit.
    fn report_open_files(&self) {
        if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
            self.metrics.open_files.set(entries.count() as i64);
        }
        self.metrics
            .open_segment_files
            .set(crate::log::files::open_count() as i64);
    }

    /// Updates the disk watch from the data directory's file system usage.
    fn check_disk(&self) {
        match crate::sys::disk_usage(&self.config.data_dir) {
            Ok(usage) => {
                let used = usage.used_percent;
                self.metrics.disk_used_percent.set(used as i64);
                let limit = self.config.disk_high_watermark_percent;
                let full = limit < 100 && used >= limit as f64;
                let headroom = ((limit as f64 - used).max(0.0) / 100.0) * usage.size_bytes as f64;
                self.disk
                    .recheck_bytes
                    .store(((headroom / 4.0) as u64).max(64 << 10), Ordering::Relaxed);
                self.disk.appended_since_check.store(0, Ordering::Relaxed);
                if full != self.disk.full.swap(full, Ordering::Relaxed) {
                    if full {
                        warn!(
                            used_percent = used,
                            limit,
                            "data disk past its high-water mark: refusing produce until space is freed"
                        );
                    } else {
                        info!(
                            used_percent = used,
                            "data disk below its high-water mark: accepting produce again"
                        );
                    }
                }
            }
            Err(e) => warn!(error = %e, "cannot read the data disk's usage"),
        }
    }

    pub fn housekeeping_interval(&self) -> Duration {
        Duration::from_millis(self.config.log_housekeeping_interval_ms as u64)
    }
}
