//! Where diskless partitions' heads, runs and producer entries live: next to the rest of
//! the cluster metadata, in the same store.
//!
//! - etcd: `<prefix>/diskless/<topic_id>/<partition>/head`, `.../runs/<base:020>` and
//!   `.../producers/<producer_id>`, each a JSON value ([`super::state`]). A head's version
//!   is its mod_revision. An append is one transaction per at most
//!   [`ETCD_TXN_PARTITIONS`] partitions: it compares every touched head's mod_revision
//!   (create_revision 0 for a new one) and puts the heads, runs and producer entries.
//!   Every append changes the head, so comparing heads serialises appends to a partition
//!   across brokers.
//! - Embedded (one broker): `<metadata dir>/diskless/<topic_id>-<partition>`, one JSON
//!   file per partition holding head, runs and producers with a version counter,
//!   rewritten atomically under a mutex.
//!
//! Both answer a failed compare by naming the partition and writing nothing for it; an
//! error (etcd unreachable, a timeout) may or may not have written: the caller re-reads.
//! A failure part way through returns the partitions committed before it and names the
//! failed ones ([`AppendOutcome::failed`]); an etcd write larger than one transaction
//! (128 operations, 1.5 MiB) is never sent and is named failed too.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::state::{Head, PartitionKey, PartitionState, ProducerEntry, Run};
use crate::cluster::StoreError;
use crate::cluster::manifests::prefix_end;

const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Partitions per etcd transaction: each takes a compare and a put of its head, a run
/// and a few producer entries; etcd's default `--max-txn-ops` is 128 per list.
pub const ETCD_TXN_PARTITIONS: usize = 40;
/// Keys per page when everything is loaded, under gRPC's 4 MiB message limit.
const LOAD_PAGE_KEYS: i64 = 2000;

/// What an append commits for one partition.
#[derive(Debug, Clone)]
pub struct AppendWrite {
    pub key: PartitionKey,
    /// The head version the commit was computed from (0: no head stored yet).
    pub expected: u64,
    pub head: Head,
    /// Usually one; see [`super::state::Plan::runs`].
    pub runs: Vec<Run>,
    pub producers: Vec<(i64, ProducerEntry)>,
    /// Producer entries to delete (expired: idle past `producer_id_expiration_ms`).
    pub expire: Vec<i64>,
}

/// What [`DisklessStore::append_versioned`] did.
#[derive(Debug, Clone, Default)]
pub struct AppendOutcome {
    /// Partitions whose compare failed: nothing was written for them.
    pub conflicts: Vec<PartitionKey>,
    /// The new head version of every partition written.
    pub versions: Vec<(PartitionKey, u64)>,
    /// Partitions whose commit failed, with why: the store failed during their
    /// transaction (it may or may not have been written: re-read), or it was never sent
    /// (a write too large for one transaction, or one after a store failure).
    pub failed: Vec<(PartitionKey, StoreError)>,
}

/// A change under `diskless/` seen by a watch.
#[derive(Debug, Clone)]
pub struct DisklessChange {
    pub revision: i64,
    /// Partitions whose records changed.
    pub partitions: Vec<PartitionKey>,
    /// The changes themselves, in order, for a view to apply without reading the
    /// partitions again. A partition with a change that could not be decoded is in
    /// `partitions` and not here: it must be read again.
    pub events: Vec<DisklessEvent>,
}

/// One record changed under `diskless/`, at store revision `revision`.
#[derive(Debug, Clone)]
pub struct DisklessEvent {
    pub key: PartitionKey,
    pub revision: i64,
    pub change: RecordChange,
}

#[derive(Debug, Clone)]
pub enum RecordChange {
    Head(Head),
    /// The head is gone: the topic was deleted.
    HeadDeleted,
    Run(i64, Option<Run>),
    Producer(i64, Option<ProducerEntry>),
}

impl PartitionState {
    /// Applies watched changes newer than this state's head version (changes at or below
    /// it are in the state already: this broker's own commits, or the load it started
    /// from). Returns false when the partition is gone.
    pub fn apply_events<'a>(
        &mut self,
        events: impl IntoIterator<Item = &'a DisklessEvent>,
    ) -> bool {
        let seen = self.head_version;
        for event in events {
            if event.revision <= seen as i64 {
                continue;
            }
            match &event.change {
                RecordChange::Head(head) => {
                    self.head = head.clone();
                    self.head_version = event.revision as u64;
                }
                RecordChange::HeadDeleted => return false,
                RecordChange::Run(base, Some(run)) => {
                    self.runs.insert(*base, run.clone());
                }
                RecordChange::Run(base, None) => {
                    self.runs.remove(base);
                }
                RecordChange::Producer(id, Some(entry)) => {
                    self.producers.insert(*id, entry.clone());
                }
                RecordChange::Producer(id, None) => {
                    self.producers.remove(id);
                }
            }
        }
        true
    }
}

#[async_trait::async_trait]
pub trait DisklessWatch: Send {
    /// Waits for the next change. An error ends the watch (etcd went away or compacted
    /// the revisions it had to replay): the caller loads everything again.
    async fn next_change(&mut self) -> Result<DisklessChange, StoreError>;
}

#[async_trait::async_trait]
pub trait DisklessStore: Send + Sync {
    async fn load(&self, key: &PartitionKey) -> Result<Option<PartitionState>, StoreError>;
    async fn load_all(&self) -> Result<Vec<(PartitionKey, PartitionState)>, StoreError> {
        Ok(self.load_all_at().await?.0)
    }
    /// Everything, with the store revision it was read at (0 for a store without
    /// revisions), to start a watch from.
    async fn load_all_at(&self) -> Result<(Vec<(PartitionKey, PartitionState)>, i64), StoreError>;
    /// Commits appends: per partition, compare head_version, put head + new runs +
    /// producer entries. Returns the keys whose compare failed (nothing written for them).
    async fn append(&self, writes: &[AppendWrite]) -> Result<Vec<PartitionKey>, StoreError> {
        let mut outcome = self.append_versioned(writes).await?;
        match outcome.failed.pop() {
            Some((_, error)) => Err(error),
            None => Ok(outcome.conflicts),
        }
    }
    /// [`DisklessStore::append`], also returning the new head versions, and, when the
    /// store fails part way, which partitions were committed before and which failed
    /// (`Err` only when nothing could be tried).
    async fn append_versioned(&self, writes: &[AppendWrite]) -> Result<AppendOutcome, StoreError>;
    /// MERGE: replaces the head if its version is still `expected` and deletes the runs
    /// listed (by base offset).
    async fn trim(
        &self,
        key: &PartitionKey,
        expected: u64,
        head: &Head,
        delete_runs: &[i64],
    ) -> Result<bool, StoreError>;
    async fn delete_topic(&self, topic_id: Uuid) -> Result<(), StoreError>;
    /// Watch (etcd): every change under diskless/ after `revision`; `None` for the
    /// embedded store (its only writer is this broker).
    async fn watch(
        &self,
        after_revision: i64,
    ) -> Result<Option<Box<dyn DisklessWatch>>, StoreError>;
}

fn corrupt(key: impl Into<String>, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        key: key.into(),
        message: e.to_string(),
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

// ---------------------------------------------------------------------------------------
// Embedded

/// One partition's file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct PartitionFile {
    version: u64,
    head: Head,
    #[serde(default)]
    runs: BTreeMap<i64, Run>,
    #[serde(default)]
    producers: BTreeMap<i64, ProducerEntry>,
}

impl PartitionFile {
    fn state(self) -> PartitionState {
        PartitionState {
            head: self.head,
            head_version: self.version,
            runs: self.runs,
            producers: self.producers,
        }
    }
}

pub struct EmbeddedDisklessStore {
    dir: PathBuf,
    /// Serialises read-compare-write; a std mutex, held only over the file I/O, which is
    /// small and synchronous.
    lock: std::sync::Mutex<()>,
}

impl EmbeddedDisklessStore {
    pub fn new(metadata_dir: &std::path::Path) -> EmbeddedDisklessStore {
        EmbeddedDisklessStore {
            dir: metadata_dir.join("diskless"),
            lock: std::sync::Mutex::new(()),
        }
    }

    fn path(&self, key: &PartitionKey) -> PathBuf {
        self.dir
            .join(format!("{}-{}", key.topic_id.simple(), key.partition))
    }

    fn read(&self, key: &PartitionKey) -> Result<Option<PartitionFile>, StoreError> {
        let path = self.path(key);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| corrupt(path.display().to_string(), e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(unavailable(format!("read {}: {e}", path.display()))),
        }
    }

    fn write(&self, key: &PartitionKey, file: &PartitionFile) -> Result<(), StoreError> {
        let path = self.path(key);
        let bytes = serde_json::to_vec(file).map_err(unavailable)?;
        std::fs::create_dir_all(&self.dir)
            .and_then(|()| crate::log::write_atomically(&path, &bytes))
            .map_err(|e| unavailable(format!("write {}: {e}", path.display())))
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn parse_name(name: &str) -> Option<PartitionKey> {
        let (topic, partition) = name.rsplit_once('-')?;
        Some(PartitionKey {
            topic_id: Uuid::parse_str(topic).ok()?,
            partition: partition.parse().ok()?,
        })
    }

    fn keys(&self) -> Result<Vec<PartitionKey>, StoreError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(unavailable(format!("list {}: {e}", self.dir.display()))),
        };
        Ok(entries
            .flatten()
            .filter_map(|e| Self::parse_name(e.file_name().to_str()?))
            .collect())
    }
}

#[async_trait::async_trait]
impl DisklessStore for EmbeddedDisklessStore {
    async fn load(&self, key: &PartitionKey) -> Result<Option<PartitionState>, StoreError> {
        let _guard = self.guard();
        Ok(self.read(key)?.map(PartitionFile::state))
    }

    async fn load_all_at(&self) -> Result<(Vec<(PartitionKey, PartitionState)>, i64), StoreError> {
        let _guard = self.guard();
        let mut all = Vec::new();
        for key in self.keys()? {
            if let Some(file) = self.read(&key)? {
                all.push((key, file.state()));
            }
        }
        all.sort_by_key(|(key, _)| *key);
        Ok((all, 0))
    }

    async fn append_versioned(&self, writes: &[AppendWrite]) -> Result<AppendOutcome, StoreError> {
        let _guard = self.guard();
        let mut outcome = AppendOutcome::default();
        for (i, write) in writes.iter().enumerate() {
            let mut file = match self.read(&write.key) {
                Ok(file) => file.unwrap_or_default(),
                Err(e) => {
                    outcome
                        .failed
                        .extend(writes[i..].iter().map(|w| (w.key, e.clone())));
                    break;
                }
            };
            if file.version != write.expected {
                outcome.conflicts.push(write.key);
                continue;
            }
            file.version += 1;
            file.head = write.head.clone();
            for run in &write.runs {
                file.runs.insert(run.base, run.clone());
            }
            for (id, entry) in &write.producers {
                file.producers.insert(*id, entry.clone());
            }
            for id in &write.expire {
                file.producers.remove(id);
            }
            if let Err(e) = self.write(&write.key, &file) {
                outcome
                    .failed
                    .extend(writes[i..].iter().map(|w| (w.key, e.clone())));
                break;
            }
            outcome.versions.push((write.key, file.version));
        }
        Ok(outcome)
    }

    async fn trim(
        &self,
        key: &PartitionKey,
        expected: u64,
        head: &Head,
        delete_runs: &[i64],
    ) -> Result<bool, StoreError> {
        let _guard = self.guard();
        let Some(mut file) = self.read(key)? else {
            return Ok(false);
        };
        if file.version != expected {
            return Ok(false);
        }
        file.version += 1;
        file.head = head.clone();
        for base in delete_runs {
            file.runs.remove(base);
        }
        self.write(key, &file)?;
        Ok(true)
    }

    async fn delete_topic(&self, topic_id: Uuid) -> Result<(), StoreError> {
        let _guard = self.guard();
        for key in self.keys()? {
            if key.topic_id == topic_id {
                let path = self.path(&key);
                match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(unavailable(format!("delete {}: {e}", path.display())));
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    async fn watch(
        &self,
        _after_revision: i64,
    ) -> Result<Option<Box<dyn DisklessWatch>>, StoreError> {
        Ok(None)
    }
}

// ---------------------------------------------------------------------------------------
// etcd

async fn timed<T>(
    call: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(result) => result.map_err(unavailable),
        Err(_) => Err(StoreError::Unavailable(format!(
            "etcd did not answer within {CALL_TIMEOUT:?}"
        ))),
    }
}

pub struct EtcdDisklessStore {
    client: Client,
    /// `<prefix>/diskless/`.
    root: String,
}

/// What a key under `diskless/` names.
enum KeyKind {
    Head,
    Run(i64),
    Producer(i64),
}

impl EtcdDisklessStore {
    pub fn new(client: Client, prefix: &str) -> EtcdDisklessStore {
        EtcdDisklessStore {
            client,
            root: format!("{}/diskless/", prefix.trim_end_matches('/')),
        }
    }

    fn partition_prefix(&self, key: &PartitionKey) -> String {
        format!("{}{}/{}/", self.root, key.topic_id, key.partition)
    }

    fn head_key(&self, key: &PartitionKey) -> String {
        format!("{}head", self.partition_prefix(key))
    }

    fn run_key(&self, key: &PartitionKey, base: i64) -> String {
        format!("{}runs/{base:020}", self.partition_prefix(key))
    }

    fn producer_key(&self, key: &PartitionKey, producer_id: i64) -> String {
        format!("{}producers/{producer_id}", self.partition_prefix(key))
    }

    fn parse(&self, key: &[u8]) -> Option<(PartitionKey, KeyKind)> {
        parse_key(&self.root, key)
    }

    /// Adds one key-value to the states being read.
    fn absorb(
        &self,
        states: &mut BTreeMap<PartitionKey, PartitionState>,
        kv: &etcd_client::KeyValue,
    ) -> Result<(), StoreError> {
        let Some((key, kind)) = self.parse(kv.key()) else {
            tracing::warn!(key = %String::from_utf8_lossy(kv.key()), "skipping an unknown key under diskless/");
            return Ok(());
        };
        let name = || String::from_utf8_lossy(kv.key()).into_owned();
        let state = states.entry(key).or_default();
        match kind {
            KeyKind::Head => {
                state.head = serde_json::from_slice(kv.value()).map_err(|e| corrupt(name(), e))?;
                state.head_version = kv.mod_revision() as u64;
            }
            KeyKind::Run(base) => {
                let run = serde_json::from_slice(kv.value()).map_err(|e| corrupt(name(), e))?;
                state.runs.insert(base, run);
            }
            KeyKind::Producer(id) => {
                let entry = serde_json::from_slice(kv.value()).map_err(|e| corrupt(name(), e))?;
                state.producers.insert(id, entry);
            }
        }
        Ok(())
    }

    /// Everything under `from` (a prefix), in pages, at one revision.
    async fn load_prefix(
        &self,
        from: &str,
    ) -> Result<(BTreeMap<PartitionKey, PartitionState>, i64), StoreError> {
        let range_end = prefix_end(from.as_bytes());
        let mut states = BTreeMap::new();
        let mut start = from.as_bytes().to_vec();
        let mut revision = 0;
        let mut kv = self.client.kv_client();
        loop {
            let mut options = GetOptions::new()
                .with_range(range_end.clone())
                .with_limit(LOAD_PAGE_KEYS);
            if revision > 0 {
                options = options.with_revision(revision);
            }
            let response = timed(kv.get(start.clone(), Some(options))).await?;
            if revision == 0 {
                revision = response.header().map_or(0, |h| h.revision());
            }
            for kv in response.kvs() {
                self.absorb(&mut states, kv)?;
            }
            match response.kvs().last() {
                Some(last) if response.more() => {
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => break,
            }
        }
        // Runs and producers of a partition whose head is gone (a deletion under way)
        // are no partition.
        states.retain(|_, s| s.head_version > 0);
        Ok((states, revision))
    }
    /// Commits one transaction's writes: those whose compare failed are re-checked and
    /// the rest committed again, until none is left. `Err`: the store failed; the last
    /// transaction may or may not have been written.
    async fn append_chunk(
        &self,
        chunk: &[&AppendWrite],
        outcome: &mut AppendOutcome,
    ) -> Result<(), StoreError> {
        let mut kv = self.client.kv_client();
        let mut chunk: Vec<&AppendWrite> = chunk.to_vec();
        while !chunk.is_empty() {
            let mut compares = Vec::with_capacity(chunk.len());
            let mut puts = Vec::new();
            for write in &chunk {
                let head_key = self.head_key(&write.key);
                compares.push(if write.expected == 0 {
                    Compare::create_revision(head_key.clone(), CompareOp::Equal, 0)
                } else {
                    Compare::mod_revision(head_key.clone(), CompareOp::Equal, write.expected as i64)
                });
                puts.push(TxnOp::put(head_key, json(&write.head)?, None));
                for run in &write.runs {
                    puts.push(TxnOp::put(
                        self.run_key(&write.key, run.base),
                        json(run)?,
                        None,
                    ));
                }
                for (id, entry) in &write.producers {
                    puts.push(TxnOp::put(
                        self.producer_key(&write.key, *id),
                        json(entry)?,
                        None,
                    ));
                }
                for id in &write.expire {
                    puts.push(TxnOp::delete(self.producer_key(&write.key, *id), None));
                }
            }
            let response = timed(kv.txn(Txn::new().when(compares).and_then(puts))).await?;
            let revision = response.header().map_or(0, |h| h.revision()) as u64;
            if response.succeeded() {
                outcome
                    .versions
                    .extend(chunk.iter().map(|w| (w.key, revision)));
                return Ok(());
            }
            // One failed compare fails the whole transaction: find out which heads moved
            // and commit the others alone.
            let mut still = Vec::new();
            for write in &chunk {
                let response = timed(kv.get(self.head_key(&write.key), None)).await?;
                let current = response.kvs().first().map_or(0, |kv| kv.mod_revision()) as u64;
                if current == write.expected {
                    still.push(*write);
                } else {
                    outcome.conflicts.push(write.key);
                }
            }
            chunk = still;
        }
        Ok(())
    }
}

/// What a key under `root` (`<prefix>/diskless/`) names.
fn parse_key(root: &str, key: &[u8]) -> Option<(PartitionKey, KeyKind)> {
    let key = std::str::from_utf8(key).ok()?.strip_prefix(root)?;
    let mut parts = key.splitn(3, '/');
    let partition = PartitionKey {
        topic_id: Uuid::parse_str(parts.next()?).ok()?,
        partition: parts.next()?.parse().ok()?,
    };
    let rest = parts.next()?;
    let kind = if rest == "head" {
        KeyKind::Head
    } else if let Some(base) = rest.strip_prefix("runs/") {
        KeyKind::Run(base.parse().ok()?)
    } else if let Some(id) = rest.strip_prefix("producers/") {
        KeyKind::Producer(id.parse().ok()?)
    } else {
        return None;
    };
    Some((partition, kind))
}

/// Puts one etcd transaction may hold, under `--max-txn-ops` (128 by default).
pub const ETCD_TXN_PUTS: usize = 120;
/// Bytes of keys and values one etcd transaction may hold, under etcd's default
/// `--max-request-bytes` (1.5 MiB), with room for the request's framing.
pub const ETCD_TXN_BYTES: usize = 1 << 20;

/// The puts/deletes and the approximate bytes (keys and JSON values) of one write.
pub fn write_cost(write: &AppendWrite) -> (usize, usize) {
    // A key is at most ~120 bytes (prefix, topic id, partition, 20-digit base).
    const KEY: usize = 160;
    let ops = 1 + write.runs.len() + write.producers.len() + write.expire.len();
    let bytes = KEY * ops
        + json_len(&write.head)
        + write.runs.iter().map(json_len).sum::<usize>()
        + write
            .producers
            .iter()
            .map(|(_, e)| json_len(e))
            .sum::<usize>();
    (ops, bytes)
}

/// The length of a value's JSON.
fn json_len<T: Serialize>(value: &T) -> usize {
    serde_json::to_vec(value).map_or(0, |v| v.len())
}

/// Whether one partition's write fits one etcd transaction. One that does not is never
/// sent (the appender cuts its flushes so that this stays rare).
pub fn fits_one_txn(write: &AppendWrite) -> bool {
    let (ops, bytes) = write_cost(write);
    ops <= ETCD_TXN_PUTS && bytes <= ETCD_TXN_BYTES
}

/// `writes` cut into transactions of at most [`ETCD_TXN_PARTITIONS`] partitions,
/// [`ETCD_TXN_PUTS`] puts and [`ETCD_TXN_BYTES`] bytes (a partition written by many
/// producers in one flush takes a put per producer). A partition is never split; those
/// that do not fit one transaction alone are left out (see [`fits_one_txn`]).
fn txn_chunks(writes: &[AppendWrite]) -> Vec<Vec<&AppendWrite>> {
    let mut chunks = Vec::new();
    let mut chunk: Vec<&AppendWrite> = Vec::new();
    let (mut puts, mut size) = (0, 0);
    for write in writes {
        let (ops, bytes) = write_cost(write);
        if ops > ETCD_TXN_PUTS || bytes > ETCD_TXN_BYTES {
            continue;
        }
        if !chunk.is_empty()
            && (chunk.len() >= ETCD_TXN_PARTITIONS
                || puts + ops > ETCD_TXN_PUTS
                || size + bytes > ETCD_TXN_BYTES)
        {
            chunks.push(std::mem::take(&mut chunk));
            (puts, size) = (0, 0);
        }
        chunk.push(write);
        puts += ops;
        size += bytes;
    }
    if !chunk.is_empty() {
        chunks.push(chunk);
    }
    chunks
}

#[async_trait::async_trait]
impl DisklessStore for EtcdDisklessStore {
    async fn load(&self, key: &PartitionKey) -> Result<Option<PartitionState>, StoreError> {
        let (mut states, _) = self.load_prefix(&self.partition_prefix(key)).await?;
        Ok(states.remove(key))
    }

    async fn load_all_at(&self) -> Result<(Vec<(PartitionKey, PartitionState)>, i64), StoreError> {
        let (states, revision) = self.load_prefix(&self.root).await?;
        Ok((states.into_iter().collect(), revision))
    }

    async fn append_versioned(&self, writes: &[AppendWrite]) -> Result<AppendOutcome, StoreError> {
        let mut outcome = AppendOutcome::default();
        for write in writes.iter().filter(|w| !fits_one_txn(w)) {
            let (ops, bytes) = write_cost(write);
            outcome.failed.push((
                write.key,
                StoreError::Unavailable(format!(
                    "the commit of partition {} takes {ops} operations and {bytes} bytes, more than one etcd transaction holds; nothing was written",
                    write.key
                )),
            ));
        }
        let chunks = txn_chunks(writes);
        for (i, chunk) in chunks.iter().enumerate() {
            if let Err(e) = self.append_chunk(chunk, &mut outcome).await {
                // This chunk may or may not be written; those after it were not tried.
                outcome
                    .failed
                    .extend(chunks[i..].iter().flatten().map(|w| (w.key, e.clone())));
                break;
            }
        }
        Ok(outcome)
    }

    async fn trim(
        &self,
        key: &PartitionKey,
        expected: u64,
        head: &Head,
        delete_runs: &[i64],
    ) -> Result<bool, StoreError> {
        let head_key = self.head_key(key);
        let mut ops = vec![TxnOp::put(head_key.clone(), json(head)?, None)];
        // Deletes beyond one transaction's limit go in transactions after the head's
        // (see below): runs below `merged` may linger, never a head naming a deleted run.
        let (first, rest) = delete_runs.split_at(delete_runs.len().min(100));
        ops.extend(
            first
                .iter()
                .map(|base| TxnOp::delete(self.run_key(key, *base), None)),
        );
        let compare = Compare::mod_revision(head_key, CompareOp::Equal, expected as i64);
        let mut kv = self.client.kv_client();
        let response = timed(kv.txn(Txn::new().when([compare]).and_then(ops))).await?;
        if !response.succeeded() {
            return Ok(false);
        }
        // The head no longer lists them (they are below `merged`), so a crash before these
        // deletes leaves runs readers ignore; the next trim of the partition deletes them.
        for chunk in rest.chunks(100) {
            let ops: Vec<_> = chunk
                .iter()
                .map(|base| TxnOp::delete(self.run_key(key, *base), None))
                .collect();
            timed(kv.txn(Txn::new().and_then(ops))).await?;
        }
        Ok(true)
    }

    async fn delete_topic(&self, topic_id: Uuid) -> Result<(), StoreError> {
        let mut kv = self.client.kv_client();
        timed(kv.delete(
            format!("{}{}/", self.root, topic_id),
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        ))
        .await?;
        Ok(())
    }

    async fn watch(
        &self,
        after_revision: i64,
    ) -> Result<Option<Box<dyn DisklessWatch>>, StoreError> {
        let options = etcd_client::WatchOptions::new()
            .with_prefix()
            .with_start_revision(after_revision + 1);
        let mut client = self.client.watch_client();
        let stream = timed(client.watch(self.root.clone(), Some(options))).await?;
        Ok(Some(Box::new(EtcdDisklessWatch {
            stream,
            root: self.root.clone(),
        })))
    }
}

struct EtcdDisklessWatch {
    stream: etcd_client::WatchStream,
    root: String,
}

#[async_trait::async_trait]
impl DisklessWatch for EtcdDisklessWatch {
    async fn next_change(&mut self) -> Result<DisklessChange, StoreError> {
        loop {
            let Some(response) = self.stream.message().await.map_err(unavailable)? else {
                return Err(StoreError::Unavailable("etcd closed the watch".into()));
            };
            if response.canceled() || response.compact_revision() > 0 {
                return Err(StoreError::Unavailable(format!(
                    "etcd cancelled the diskless watch (compacted at revision {}): {}",
                    response.compact_revision(),
                    response.cancel_reason()
                )));
            }
            let mut partitions = Vec::new();
            let mut events = Vec::new();
            let mut undecoded = Vec::new();
            let mut revision = 0;
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                revision = revision.max(kv.mod_revision());
                let Some((key, kind)) = parse_key(&self.root, kv.key()) else {
                    continue;
                };
                if !partitions.contains(&key) {
                    partitions.push(key);
                }
                let deleted = event.event_type() == etcd_client::EventType::Delete;
                let change = match kind {
                    KeyKind::Head if deleted => Some(RecordChange::HeadDeleted),
                    KeyKind::Head => serde_json::from_slice(kv.value())
                        .ok()
                        .map(RecordChange::Head),
                    KeyKind::Run(base) if deleted => Some(RecordChange::Run(base, None)),
                    KeyKind::Run(base) => serde_json::from_slice(kv.value())
                        .ok()
                        .map(|run| RecordChange::Run(base, Some(run))),
                    KeyKind::Producer(id) if deleted => Some(RecordChange::Producer(id, None)),
                    KeyKind::Producer(id) => serde_json::from_slice(kv.value())
                        .ok()
                        .map(|entry| RecordChange::Producer(id, Some(entry))),
                };
                match change {
                    Some(change) => events.push(DisklessEvent {
                        key,
                        revision: kv.mod_revision(),
                        change,
                    }),
                    None => undecoded.push(key),
                }
            }
            events.retain(|e| !undecoded.contains(&e.key));
            if !partitions.is_empty() {
                return Ok(DisklessChange {
                    revision,
                    partitions,
                    events,
                });
            }
        }
    }
}

/// JSON for the etcd values, with a serialisation failure as a store error.
fn json<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(unavailable)
}

/// Opens the diskless store next to the metadata store named by `metadata`: the same
/// embedded directory, or the same etcd connection (`etcd`, from `cluster::Stores`).
pub fn open(
    config: &crate::config::Config,
    etcd: Option<&Client>,
) -> anyhow::Result<std::sync::Arc<dyn DisklessStore>> {
    use crate::config::MetadataUrl;
    Ok(match config.metadata_url()? {
        MetadataUrl::Embedded(dir) => std::sync::Arc::new(EmbeddedDisklessStore::new(&dir)),
        MetadataUrl::Etcd { prefix, .. } => {
            let client = etcd
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("the diskless store needs the etcd connection"))?;
            std::sync::Arc::new(EtcdDisklessStore::new(client, &prefix))
        }
    })
}

#[cfg(test)]
mod tests;
