//! Where partition manifest roots live (see `strata_tiering::manifest`): next to the rest
//! of the cluster metadata, in the same store, one small value per partition replaced by
//! compare-and-swap.
//!
//! - Embedded: `<metadata dir>/manifests/<topic_id>-<partition>`, each file an 8-byte
//!   big-endian version followed by the root, rewritten atomically.
//! - etcd: `<prefix>/manifests/<topic_id>/<partition>`, the root as the value; the version
//!   is the key's mod_revision and a save is a transaction comparing it.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};
use strata_tiering::{ManifestStore, ManifestStoreError, PartitionId};

use crate::log::write_atomically;

const CALL_TIMEOUT: Duration = Duration::from_secs(5);

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
        format!("{}/manifests/{}/{}", self.prefix, id.topic_id, id.partition)
    }
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
        Ok(response
            .kvs()
            .first()
            .map(|kv| (Bytes::copy_from_slice(kv.value()), kv.mod_revision() as u64)))
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
}
