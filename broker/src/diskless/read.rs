//! Reads of diskless partitions: Fetch and ListOffsets, and the write cache.
//!
//! Offsets below the head's `merged` are in the partition's tiered manifest and are read
//! as any tiered partition's history (`crate::partition::remote`). Offsets at or above it
//! are in runs: byte ranges of shared objects, read from the write cache when this broker
//! wrote the object, else with a ranged read through the segment cache. Stored batches
//! carry base offset 0; each is patched with its offset, counted from its run's `base`.
//!
//! read_committed (isolation level 1) reads stop at the head's last stable offset
//! (`Head::last_stable`: the first offset of the oldest open transaction, else `next`);
//! from there up to `next` they are empty, not out of range, as in Kafka. Merged history
//! is all below it (merging stops there). Such a read also returns the aborted
//! transactions with records among those returned (first offset below their end, abort
//! marker at or after the fetch offset): from the runs' `aborted` entries (each with the
//! run of its marker, so only runs ending after the fetch offset are looked at), and for a
//! read of merged history also from the segment's transaction index
//! (`crate::partition::remote::aborted_in_remote`), each listed once. read_uncommitted
//! reads are bounded by `next` and list nothing: control batches come back like any
//! batch and clients skip them. ListOffsets answers LATEST with the last stable offset for
//! read_committed callers and finds no record at or past it by timestamp.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use strata_tiering::{ObjectRef, RemoteLog};

use super::state::{PartitionState, Run};
use crate::log::format;
use crate::log::txn::AbortedTxn;
use crate::partition::remote::{RemoteReadError, RemoteReader};

/// The shared objects this broker wrote, newest kept, up to a byte budget.
pub struct WriteCache {
    capacity: u64,
    /// A std mutex: held for a map access, never across an await.
    inner: Mutex<CacheInner>,
}

#[derive(Default)]
struct CacheInner {
    objects: HashMap<String, Bytes>,
    order: VecDeque<String>,
    bytes: u64,
}

impl WriteCache {
    pub fn new(capacity: u64) -> WriteCache {
        WriteCache {
            capacity,
            inner: Mutex::new(CacheInner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn insert(&self, key: &str, bytes: Bytes) {
        if bytes.len() as u64 > self.capacity {
            return;
        }
        let mut inner = self.lock();
        inner.bytes += bytes.len() as u64;
        // A key inserted again replaces its object: counted once, evicted as the newest.
        if let Some(old) = inner.objects.insert(key.to_string(), bytes) {
            inner.bytes -= old.len() as u64;
            inner.order.retain(|k| k != key);
        }
        inner.order.push_back(key.to_string());
        while inner.bytes > self.capacity {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            if let Some(evicted) = inner.objects.remove(&oldest) {
                inner.bytes -= evicted.len() as u64;
            }
        }
    }

    pub fn get(&self, key: &str) -> Option<Bytes> {
        self.lock().objects.get(key).cloned()
    }
}

/// Why a diskless read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("offset {offset} is out of range [{log_start}, {next}]")]
    OutOfRange {
        offset: i64,
        log_start: i64,
        next: i64,
    },
    #[error(transparent)]
    Remote(#[from] RemoteReadError),
    #[error("shared object {key} is damaged at byte {position}")]
    Corrupt { key: String, position: u64 },
    /// The view's runs do not cover the offset (a gap, or none starting at or before
    /// it): the view is caught mid-change. Retriable.
    #[error("no run holds offset {offset}; the view is being updated")]
    Gap { offset: i64 },
}

/// The object id the segment cache keys a shared object by: the uuid in its name
/// (`<node_id>-<uuid>.batches`), or one derived from the whole key.
fn object_ref(run: &Run) -> ObjectRef {
    let id = run
        .key
        .rsplit('/')
        .next()
        .and_then(|name| name.strip_suffix(".batches"))
        .and_then(|name| name.split_once('-'))
        .and_then(|(_, id)| uuid::Uuid::parse_str(id).ok())
        .unwrap_or_else(|| {
            // FNV-1a of the key: stable across brokers, for keys not written by Strata.
            let hash = run.key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
            uuid::Uuid::from_u64_pair(hash, !hash)
        });
    ObjectRef {
        key: run.key.clone(),
        id,
        size: run.size,
    }
}

/// A run's bytes: from the write cache or a ranged read through the segment cache.
async fn run_bytes(
    cache: &WriteCache,
    reader: &RemoteReader,
    run: &Run,
) -> Result<Bytes, ReadError> {
    let range = run.pos..run.pos.saturating_add(run.len);
    // A slice of a cached object holds the whole object only until the caller has
    // copied its batches out (`patched_batches`): no response pins a shared object.
    if let Some(object) = cache.get(&run.key)
        && range.end <= object.len() as u64
    {
        return Ok(object.slice(range.start as usize..range.end as usize));
    }
    let bytes = reader
        .cache
        .read(&object_ref(run), range)
        .await
        .map_err(|e| ReadError::Remote(e.into()))?;
    if bytes.len() as u64 != run.len {
        return Err(ReadError::Corrupt {
            key: run.key.clone(),
            position: run.pos + bytes.len() as u64,
        });
    }
    Ok(bytes)
}

/// The batches of `bytes` (one run, base offset `base`), each patched with its offset:
/// those whose last offset is at least `from` and below `upto`, stopping at the first
/// batch reaching `upto` or once `max_bytes` are taken (at least one batch, KIP-74).
/// Also whether the run was read to its end.
fn patched_batches(
    run: &Run,
    bytes: &[u8],
    (from, upto): (i64, i64),
    max_bytes: usize,
    out: &mut BytesMut,
) -> Result<bool, ReadError> {
    let corrupt = |position: usize| ReadError::Corrupt {
        key: run.key.clone(),
        position: run.pos + position as u64,
    };
    let mut position = 0;
    let mut offset = run.base;
    while position < bytes.len() {
        let Some((_, size, last_delta)) = format::read_batch_prefix(&bytes[position..]) else {
            return Err(corrupt(position));
        };
        if size < format::BATCH_HEADER_LEN || position + size > bytes.len() || last_delta < 0 {
            return Err(corrupt(position));
        }
        let last = offset + i64::from(last_delta);
        if last >= upto {
            return Ok(false);
        }
        if last >= from {
            if !out.is_empty() && out.len() + size > max_bytes {
                return Ok(false);
            }
            let start = out.len();
            out.extend_from_slice(&bytes[position..position + size]);
            format::patch_batch(&mut out[start..], offset, 0);
        }
        offset = last + 1;
        position += size;
    }
    if offset != run.end {
        return Err(corrupt(position));
    }
    Ok(true)
}

/// Reads from `offset` (at or above `merged`, below `upto`) through the runs, up to
/// `max_bytes` (at least one batch) and never a batch reaching `upto` (`next`, or for
/// read_committed the last stable offset). The runs read must start at or before
/// `offset` and follow one another up to `upto` without a gap, else
/// [`ReadError::Gap`]: records are never skipped.
pub async fn read_runs(
    state: &PartitionState,
    cache: &WriteCache,
    reader: &RemoteReader,
    (offset, upto): (i64, i64),
    max_bytes: usize,
) -> Result<Bytes, ReadError> {
    let mut out = BytesMut::new();
    let first = state
        .runs
        .range(..=offset)
        .next_back()
        .map_or(offset, |(base, _)| *base);
    // The next offset the following run must start at (the first may start before).
    let mut expected: Option<i64> = None;
    for run in state
        .runs
        .range(first.max(state.head.merged)..)
        .map(|(_, r)| r)
    {
        if run.end <= offset {
            continue;
        }
        if run.base >= upto {
            break;
        }
        let gap = match expected {
            None => run.base > offset,
            Some(e) => run.base != e,
        };
        if gap {
            return Err(ReadError::Gap {
                offset: expected.unwrap_or(offset),
            });
        }
        expected = Some(run.end);
        if !out.is_empty() && out.len() >= max_bytes {
            return Ok(out.freeze());
        }
        let bytes = run_bytes(cache, reader, run).await?;
        if !patched_batches(run, &bytes, (offset, upto), max_bytes, &mut out)? {
            return Ok(out.freeze());
        }
    }
    if expected.unwrap_or(offset) < upto {
        return Err(ReadError::Gap {
            offset: expected.unwrap_or(offset),
        });
    }
    Ok(out.freeze())
}

/// ListOffsets over a diskless partition's manifest: by `timestamp`, or MAX_TIMESTAMP
/// (`None`: only a record whose timestamp is at least the runs' largest, `in_runs`),
/// considering only records at or after `from` (the partition's log start).
pub async fn merged_search(
    reader: &RemoteReader,
    remote: &RemoteLog,
    timestamp: Option<i64>,
    in_runs: Option<(i64, i64)>,
    from: i64,
) -> Result<Option<(i64, i64)>, ReadError> {
    use crate::partition::remote::{remote_max_timestamp_from, remote_offset_for_timestamp_from};
    Ok(match timestamp {
        Some(ts) => remote_offset_for_timestamp_from(reader, remote, ts, from).await?,
        None => {
            let at_least = in_runs.map_or(i64::MIN, |(_, ts)| ts);
            remote_max_timestamp_from(reader, remote, at_least, from).await?
        }
    })
}

/// Reads from `offset` below `merged` through the partition's manifest. The manifest is
/// reloaded first when it ends below `merged` (another broker merged since). For
/// read_committed (`aborted`), also the aborted transactions the read segment's
/// transaction index lists among the records returned.
pub async fn read_merged(
    remote: &Arc<RemoteLog>,
    reader: &RemoteReader,
    merged: i64,
    offset: i64,
    max_bytes: usize,
    aborted: Option<&mut Vec<AbortedTxn>>,
) -> Result<Bytes, ReadError> {
    use crate::partition::remote::{aborted_in_remote, read_remote};
    if remote.marks().end_offset.is_none_or(|end| end < merged) {
        remote
            .reload()
            .await
            .map_err(|e| ReadError::Remote(e.into()))?;
    }
    let (bytes, entry) = read_remote(reader, remote, offset, max_bytes).await?;
    if let Some(aborted) = aborted
        && let Some(end) = crate::log::txn::records_end(&bytes)
        && let Some(entry) = &entry
    {
        let mut listed = aborted_in_remote(reader, remote, entry).await?;
        listed.retain(|a| overlaps(a, offset, end));
        aborted.extend(listed);
    }
    Ok(bytes)
}

/// Whether aborted transaction `a` has records in `[from, end)`.
fn overlaps(a: &AbortedTxn, from: i64, end: i64) -> bool {
    a.first_offset < end && a.last_offset >= from
}

/// The aborted transactions with records in `[from, end)` that the runs list: an entry
/// lives with the run of its abort marker, at or after `from` for an overlapping entry,
/// so the runs ending after `from` are enough. A transaction whose records are below
/// `merged` is also in a merged segment's transaction index, from where a read of the
/// merged history takes it; the caller merges both lists ([`merge_aborted`]).
pub fn aborted_in_runs(state: &PartitionState, from: i64, end: i64) -> Vec<AbortedTxn> {
    let mut aborted: Vec<AbortedTxn> = state
        .runs
        .values()
        .filter(|run| run.end > from)
        .flat_map(|run| run.aborted.iter())
        .map(|e| AbortedTxn::from(*e))
        .filter(|a| overlaps(a, from, end))
        .collect();
    merge_aborted(&mut aborted, Vec::new());
    aborted
}

/// Adds `more` to `aborted`, each entry once, in (first offset, producer id) order.
pub fn merge_aborted(aborted: &mut Vec<AbortedTxn>, more: Vec<AbortedTxn>) {
    aborted.extend(more);
    aborted.sort_by_key(|a| (a.first_offset, a.producer_id, a.last_offset));
    aborted.dedup();
}

/// ListOffsets by timestamp over the runs: the first record at or after `from` with a
/// timestamp >= `timestamp` (runs are skipped by their max timestamp).
pub async fn runs_offset_for_timestamp(
    state: &PartitionState,
    cache: &WriteCache,
    reader: &RemoteReader,
    timestamp: i64,
    from: i64,
) -> Result<Option<(i64, i64)>, ReadError> {
    for run in state.live_runs() {
        if run.max_ts < timestamp || run.end <= from {
            continue;
        }
        let mut out = BytesMut::new();
        let bytes = run_bytes(cache, reader, run).await?;
        patched_batches(run, &bytes, (from, i64::MAX), usize::MAX, &mut out)?;
        let mut position = 0;
        while position < out.len() {
            let Some((_, size, _)) = format::read_batch_prefix(&out[position..]) else {
                break;
            };
            let batch = &out[position..(position + size).min(out.len())];
            if format::parse_validated_header(batch).max_timestamp >= timestamp {
                let found = crate::log::first_at_or_after(batch, timestamp, from, i64::MAX)
                    .map_err(|_| ReadError::Corrupt {
                        key: run.key.clone(),
                        position: run.pos,
                    })?;
                if found.is_some() {
                    return Ok(found);
                }
            }
            position += size;
        }
    }
    Ok(None)
}

/// The offset of the record with the largest timestamp in the runs at or after `from`
/// (the first of equals), with that timestamp. Runs wholly at or after `from` are judged
/// by their max timestamp; a run reaching below `from` is read record by record, since
/// its max timestamp may be a record's below `from`.
pub async fn runs_max_timestamp(
    state: &PartitionState,
    cache: &WriteCache,
    reader: &RemoteReader,
    from: i64,
) -> Result<Option<(i64, i64)>, ReadError> {
    use crate::log::records::{Budget, MAX_INFLATED_BYTES, for_each_timestamp};
    let mut straddling: Option<(i64, i64)> = None;
    for run in state.live_runs().filter(|r| r.base < from && r.end > from) {
        let mut out = BytesMut::new();
        let bytes = run_bytes(cache, reader, run).await?;
        patched_batches(run, &bytes, (from, i64::MAX), usize::MAX, &mut out)?;
        let mut position = 0;
        while let Some((_, size, _)) = format::read_batch_prefix(&out[position..]) {
            let batch = &out[position..(position + size).min(out.len())];
            for_each_timestamp(batch, &mut Budget::new(MAX_INFLATED_BYTES), |offset, ts| {
                if offset >= from && straddling.is_none_or(|(_, best)| ts > best) {
                    straddling = Some((offset, ts));
                }
                true
            })
            .map_err(|_| ReadError::Corrupt {
                key: run.key.clone(),
                position: run.pos,
            })?;
            position += size;
        }
    }
    let whole = state
        .live_runs()
        .filter(|r| r.base >= from)
        .map(|r| r.max_ts)
        .max();
    match (straddling, whole) {
        // The straddling run comes first: it wins a tie.
        (Some(found), Some(max)) if found.1 >= max => Ok(Some(found)),
        (found, None) => Ok(found),
        (_, Some(max)) => runs_offset_for_timestamp(state, cache, reader, max, from).await,
    }
}

#[cfg(test)]
mod tests;
