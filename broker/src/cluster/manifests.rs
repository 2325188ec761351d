//! Where partition manifest roots live (see `strata_tiering::manifest`): next to the rest
//! of the cluster metadata, in the same store, one small value per partition replaced by
//! compare-and-swap.
//!
//! - Embedded: `<metadata dir>/manifests/<topic_id>-<partition>`, each file an 8-byte
//!   big-endian version followed by the root, rewritten atomically.
//! - etcd: `<prefix>/manifests/<topic_id>/<partition>`, the root as the value; the version
//!   is the key's mod_revision and a save is a transaction comparing it.
//!
//! Opening many partitions must not cost a request each: start-up lists which topics
//! have roots at all (a directory listing, or one keys-only range in pages), and a topic's
//! roots are read together (etcd: one range over the topic's prefix, in pages of at most
//! [`LOAD_PAGE_KEYS`] roots so an answer stays far below the client's message limit).

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use etcd_client::{Client, Compare, CompareOp, GetOptions, GetResponse, KeyValue, Txn, TxnOp};
use strata_tiering::{ManifestStore, ManifestStoreError, PartitionId};
use uuid::Uuid;

use crate::log::write_atomically;

const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Roots per page of a range read: a root is at most about 10 KiB with the default
/// manifest shape, so a page stays near 1 MiB, under the gRPC client's 4 MiB limit.
const LOAD_PAGE_KEYS: i64 = 100;
/// Keys per page of the keys-only listing (a key is under 100 bytes).
const LIST_PAGE_KEYS: i64 = 10_000;

pub struct EmbeddedManifests {
    dir: PathBuf,
    /// Serializes read-compare-write. A tokio mutex: held across the file I/O. The
    /// version is read from the file each time, so a second handle (or a restarted
    /// broker) always compares against what is on disk.
    lock: tokio::sync::Mutex<()>,
}

impl EmbeddedManifests {
    pub fn new(metadata_dir: &std::path::Path) -> EmbeddedManifests {
        EmbeddedManifests {
            dir: metadata_dir.join("manifests"),
            lock: tokio::sync::Mutex::new(()),
        }
    }

    fn path(&self, id: &PartitionId) -> PathBuf {
        self.dir
            .join(format!("{}-{}", id.topic_id.simple(), id.partition))
    }

    async fn read(&self, id: &PartitionId) -> Result<Option<(Bytes, u64)>, ManifestStoreError> {
        let path = self.path(id);
        let read = tokio::task::spawn_blocking(move || std::fs::read(path))
            .await
            .map_err(|e| ManifestStoreError::Unavailable(e.to_string()))?;
        match read {
            Ok(bytes) if bytes.len() >= 8 => {
                let mut version = [0u8; 8];
                version.copy_from_slice(&bytes[..8]);
                Ok(Some((
                    Bytes::from(bytes).slice(8..),
                    u64::from_be_bytes(version),
                )))
            }
            Ok(_) => Err(ManifestStoreError::Unavailable(format!(
                "manifest file {} is truncated",
                self.path(id).display()
            ))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ManifestStoreError::Unavailable(format!(
                "read {}: {e}",
                self.path(id).display()
            ))),
        }
    }
}

#[async_trait::async_trait]
impl ManifestStore for EmbeddedManifests {
    async fn load(&self, id: &PartitionId) -> Result<Option<(Bytes, u64)>, ManifestStoreError> {
        let _guard = self.lock.lock().await;
        self.read(id).await
    }

    async fn save(
        &self,
        id: &PartitionId,
        bytes: Bytes,
        expected: Option<u64>,
    ) -> Result<u64, ManifestStoreError> {
        let _guard = self.lock.lock().await;
        let current = self.read(id).await?.map(|(_, v)| v);
        if current != expected {
            return Err(ManifestStoreError::Conflict);
        }
        let version = current.map_or(1, |v| v + 1);
        let mut content = Vec::with_capacity(8 + bytes.len());
        content.extend_from_slice(&version.to_be_bytes());
        content.extend_from_slice(&bytes);
        let dir = self.dir.clone();
        let path = self.path(id);
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir)?;
            write_atomically(&path, &content)
        })
        .await
        .map_err(|e| ManifestStoreError::Unavailable(e.to_string()))?
        .map_err(|e| ManifestStoreError::Unavailable(format!("write manifest of {id}: {e}")))?;
        Ok(version)
    }

    async fn delete(&self, id: &PartitionId) -> Result<(), ManifestStoreError> {
        let _guard = self.lock.lock().await;
        match std::fs::remove_file(self.path(id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(
                ManifestStoreError::Unavailable(format!("delete manifest of {id}: {e}")),
            ),
            _ => Ok(()),
        }
    }

    /// One listing of the directory. File names are `<topic_id>-<partition>`; anything
    /// else (a `.tmp` left by a crash during a save, which was never the root) is not a
    /// root.
    async fn topics_with_roots(&self) -> Result<Option<HashSet<Uuid>>, ManifestStoreError> {
        let _guard = self.lock.lock().await;
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Some(HashSet::new())),
            Err(e) => {
                return Err(ManifestStoreError::Unavailable(format!(
                    "list {}: {e}",
                    self.dir.display()
                )));
            }
        };
        let mut topics = HashSet::new();
        for entry in entries {
            let entry = entry.map_err(|e| {
                ManifestStoreError::Unavailable(format!("list {}: {e}", self.dir.display()))
            })?;
            let name = entry.file_name();
            if let Some((topic, partition)) = name.to_str().and_then(|n| n.split_once('-'))
                && partition.parse::<i32>().is_ok()
                && let Ok(topic) = Uuid::parse_str(topic)
            {
                topics.insert(topic);
            }
        }
        Ok(Some(topics))
    }
}

pub struct EtcdManifests {
    client: Client,
    prefix: String,
}

impl EtcdManifests {
    pub fn new(client: Client, prefix: &str) -> EtcdManifests {
        EtcdManifests {
            client,
            prefix: prefix.trim_end_matches('/').to_string(),
        }
    }

    fn key(&self, id: &PartitionId) -> String {
        format!("{}/{}", self.topic_prefix(id.topic_id), id.partition)
    }

    fn topic_prefix(&self, topic_id: Uuid) -> String {
        format!("{}/manifests/{topic_id}", self.prefix)
    }

    /// Every key under `prefix`, in pages of `page` keys, at the revision of the first
    /// page (so the pages are one snapshot); `f` sees each page. No sort option: etcd
    /// returns keys in ascending order anyway, and a sort order makes it ignore the limit
    /// (it reads the whole rest of the range for every page, then truncates).
    async fn range_pages(
        &self,
        prefix: &str,
        page: i64,
        keys_only: bool,
        mut f: impl FnMut(&GetResponse),
    ) -> Result<(), ManifestStoreError> {
        let range_end = prefix_end(prefix.as_bytes());
        let mut start = prefix.as_bytes().to_vec();
        let mut revision = 0;
        let mut kv = self.client.kv_client();
        loop {
            let mut options = GetOptions::new()
                .with_range(range_end.clone())
                .with_limit(page);
            if keys_only {
                options = options.with_keys_only();
            }
            if revision > 0 {
                options = options.with_revision(revision);
            }
            let response = timed(kv.get(start.clone(), Some(options))).await?;
            if revision == 0 {
                revision = response.header().map_or(0, |h| h.revision());
            }
            f(&response);
            match response.kvs().last() {
                Some(last) if response.more() => {
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => return Ok(()),
            }
        }
    }
}

/// The first key after every key that starts with `prefix` (etcd's prefix rule; the
/// diskless store's ranges use it too).
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// A stored root and the revision a commit must compare against (etcd revisions are
/// positive).
fn root(kv: &KeyValue) -> (Bytes, u64) {
    let revision = u64::try_from(kv.mod_revision()).unwrap_or_default();
    (Bytes::copy_from_slice(kv.value()), revision)
}

async fn timed<T>(
    call: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, ManifestStoreError> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(result) => result.map_err(|e| ManifestStoreError::Unavailable(e.to_string())),
        Err(_) => Err(ManifestStoreError::Unavailable(format!(
            "etcd did not answer within {CALL_TIMEOUT:?}"
        ))),
    }
}

#[async_trait::async_trait]
impl ManifestStore for EtcdManifests {
    async fn load(&self, id: &PartitionId) -> Result<Option<(Bytes, u64)>, ManifestStoreError> {
        let mut kv = self.client.kv_client();
        let response = timed(kv.get(self.key(id), None)).await?;
        Ok(response.kvs().first().map(root))
    }

    async fn save(
        &self,
        id: &PartitionId,
        bytes: Bytes,
        expected: Option<u64>,
    ) -> Result<u64, ManifestStoreError> {
        let key = self.key(id);
        let compare = match expected {
            None => Compare::create_revision(key.clone(), CompareOp::Equal, 0),
            Some(version) => Compare::mod_revision(key.clone(), CompareOp::Equal, version as i64),
        };
        let txn = Txn::new()
            .when([compare])
            .and_then([TxnOp::put(key, bytes.to_vec(), None)]);
        let mut kv = self.client.kv_client();
        let response = timed(kv.txn(txn)).await?;
        if !response.succeeded() {
            return Err(ManifestStoreError::Conflict);
        }
        let revision = response.header().map_or(0, |h| h.revision());
        Ok(revision as u64)
    }

    async fn delete(&self, id: &PartitionId) -> Result<(), ManifestStoreError> {
        let mut kv = self.client.kv_client();
        timed(kv.delete(self.key(id), None)).await?;
        Ok(())
    }

    /// One range over `<prefix>/manifests/<topic_id>/`, in pages. Keys that are not a
    /// partition index in `0..partitions` are not this topic's roots and are skipped.
    async fn load_topic(
        &self,
        _topic: &str,
        topic_id: Uuid,
        partitions: i32,
    ) -> Result<Vec<Option<(Bytes, u64)>>, ManifestStoreError> {
        let mut roots = vec![None; usize::try_from(partitions).unwrap_or(0)];
        let prefix = format!("{}/", self.topic_prefix(topic_id));
        self.range_pages(&prefix, LOAD_PAGE_KEYS, false, |response| {
            for kv in response.kvs() {
                let index = kv
                    .key()
                    .strip_prefix(prefix.as_bytes())
                    .and_then(|p| std::str::from_utf8(p).ok())
                    .and_then(|p| p.parse::<usize>().ok());
                if let Some(slot) = index.and_then(|i| roots.get_mut(i)) {
                    *slot = Some(root(kv));
                }
            }
        })
        .await?;
        Ok(roots)
    }

    /// One keys-only range over `<prefix>/manifests/`, in pages.
    async fn topics_with_roots(&self) -> Result<Option<HashSet<Uuid>>, ManifestStoreError> {
        let prefix = format!("{}/manifests/", self.prefix);
        let mut topics = HashSet::new();
        self.range_pages(&prefix, LIST_PAGE_KEYS, true, |response| {
            for kv in response.kvs() {
                let topic = kv
                    .key()
                    .strip_prefix(prefix.as_bytes())
                    .and_then(|rest| std::str::from_utf8(rest).ok())
                    .and_then(|rest| rest.split_once('/'))
                    .and_then(|(topic, _)| Uuid::parse_str(topic).ok());
                if let Some(topic) = topic {
                    topics.insert(topic);
                }
            }
        })
        .await?;
        Ok(Some(topics))
    }
}
