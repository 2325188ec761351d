//! `strata etcd`: care of the etcd that holds the cluster's metadata.
//!
//! - `snapshot` reads the Strata cluster id from etcd (`<prefix>/cluster_id`; it refuses
//!   an etcd without one: an empty etcd, whose snapshots would rotate out the good ones),
//!   streams etcd's maintenance snapshot (the whole database, every prefix) to a
//!   temporary file, uploads it to the object store under
//!   `<object_store>/etcd-snapshots/<cluster id>/<UTC time>-r<revision>.db`, then deletes
//!   all but the newest `--keep` of that cluster id: clusters sharing a bucket, or a new
//!   cluster after all of etcd was lost, never delete another's snapshots. Tiered segments
//!   live under `<object_store>/<cluster id>/`, so the scrubber never sees these objects.
//!   The Helm chart's CronJob runs it.
//! - `snapshots` lists them (`<cluster id>/<name>`), `fetch` downloads one for
//!   `etcdutl snapshot restore` (docs/deploy.md, "Restoring etcd from a snapshot").
//! - `after-restore` raises leader epochs and the producer id counter of a restored etcd
//!   (module `after_restore`).
//! - `rejoin` is the start-up decision of one member of the chart's etcd whose data
//!   directory is empty (templates/etcd.yaml): `new` only on evidence of a first
//!   install, otherwise `existing` after re-adding the member (module `rejoin`).
//!
//! The object store and etcd security settings are the broker's: `--config` names its
//! strata.toml, and STRATA_* variables and AWS_* credentials are read as `serve` reads
//! them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use etcd_client::{Client, ConnectOptions};
use strata_broker::cluster::etcd::EtcdSecurity;
use strata_broker::config::{Config, MetadataUrl};
use strata_tiering::{Body, RemoteStore};
use tokio::io::AsyncWriteExt;

mod after_restore;
mod rejoin;

/// Where snapshots go, under the object store's URL.
const SNAPSHOT_PREFIX: &str = "etcd-snapshots";
/// Multipart part size of a snapshot upload.
const PART_BYTES: u64 = 16 * 1024 * 1024;
/// How long one etcd call may take (a snapshot's stream excepted).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(clap::Subcommand)]
pub enum EtcdCommand {
    /// Take a snapshot of etcd, upload it to the object store, keep the newest `--keep`.
    Snapshot {
        #[command(flatten)]
        settings: Settings,
        /// Snapshots to keep in the bucket, this one included; older ones are deleted.
        #[arg(long, value_name = "N", default_value_t = 7)]
        keep: usize,
    },
    /// List the snapshots in the object store, by cluster id, oldest first.
    Snapshots {
        #[command(flatten)]
        settings: Settings,
    },
    /// Download a snapshot (a name `snapshots` lists, or `latest` with `--cluster-id`) to
    /// a file.
    Fetch {
        #[command(flatten)]
        settings: Settings,
        /// The snapshot's name as `snapshots` lists it, e.g.
        /// 6f1c.../20261207T130000Z-r4242.db, or `latest` (the newest of `--cluster-id`).
        name: String,
        /// The cluster whose newest snapshot `latest` means.
        #[arg(long, value_name = "ID")]
        cluster_id: Option<String>,
        /// The file to write.
        #[arg(long, value_name = "FILE")]
        output: PathBuf,
    },
    /// After restoring a snapshot, before the brokers start: raise every partition's
    /// leader epoch and the producer id counter past what was used after the snapshot.
    AfterRestore {
        #[command(flatten)]
        settings: Settings,
        /// Added to every partition's leader epoch.
        #[arg(long, value_name = "N", default_value_t = 1_000_000)]
        epoch_bump: i32,
        /// Added to the next producer id.
        #[arg(long, value_name = "N", default_value_t = 1_000_000_000_000)]
        producer_id_bump: i64,
    },
    /// Decide how a member with an empty data directory starts (the chart's etcd): prints
    /// `new`, or `existing` and the `--initial-cluster` after re-adding the member.
    Rejoin {
        /// Client URLs of the other members, comma separated.
        #[arg(long, value_name = "URL,...", value_delimiter = ',', required = true)]
        endpoints: Vec<String>,
        /// This member's name (`--name` of etcd).
        #[arg(long)]
        name: String,
        /// This member's peer URL (`--initial-advertise-peer-urls` of etcd).
        #[arg(long, value_name = "URL")]
        peer_url: String,
        /// Peer URLs of the other members, comma separated: asked whether the cluster
        /// formed before (`GET /members`), before any quorum exists.
        #[arg(long, value_name = "URL,...", value_delimiter = ',')]
        peers: Vec<String>,
        /// Where to tell the other members that this one has no data while deciding
        /// (its peer listener, `--listen-peer-urls` of etcd), e.g. http://0.0.0.0:2380.
        #[arg(long, value_name = "URL")]
        listen_peer: Option<String>,
        /// Seconds to wait for evidence before giving up (or, with a majority of the
        /// members known to be empty and none formed, before starting `new`).
        #[arg(long, value_name = "SECONDS", default_value_t = 300)]
        wait: u64,
        /// Seconds the rejoin lock is held (never released early): how long a second
        /// member rejoining at the same time waits for this one to start.
        #[arg(long, value_name = "SECONDS", default_value_t = 90)]
        lock_ttl: i64,
    },
}

/// The broker settings these commands read: a strata.toml, the environment, and these
/// flags over both.
#[derive(clap::Args)]
pub struct Settings {
    /// The broker's TOML configuration file (object store, S3 and etcd settings).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// `etcd://HOST:PORT[,HOST:PORT...][/PREFIX]`; the prefix is ignored: a snapshot
    /// holds all of etcd.
    #[arg(long, value_name = "URL")]
    metadata: Option<String>,
    /// `file:///DIR` or `s3://BUCKET[/PREFIX]`.
    #[arg(long, value_name = "URL")]
    object_store: Option<String>,
}

impl Settings {
    fn load(&self) -> anyhow::Result<Config> {
        let mut flags = BTreeMap::new();
        if let Some(metadata) = &self.metadata {
            flags.insert("metadata", metadata.clone());
        }
        if let Some(object_store) = &self.object_store {
            flags.insert("object_store", object_store.clone());
        }
        Config::load(self.config.as_deref(), std::env::vars(), &flags)
            .context("read the broker settings")
    }
}

pub fn etcd(command: EtcdCommand) -> ExitCode {
    let Some(runtime) = super::runtime(tokio::runtime::Builder::new_current_thread()) else {
        return ExitCode::FAILURE;
    };
    let result = runtime.block_on(async {
        match command {
            EtcdCommand::Snapshot { settings, keep } => snapshot(&settings.load()?, keep).await,
            EtcdCommand::Snapshots { settings } => list(&settings.load()?).await,
            EtcdCommand::Fetch {
                settings,
                name,
                cluster_id,
                output,
            } => fetch(&settings.load()?, &name, cluster_id.as_deref(), &output).await,
            EtcdCommand::AfterRestore {
                settings,
                epoch_bump,
                producer_id_bump,
            } => {
                after_restore::after_restore(&settings.load()?, epoch_bump, producer_id_bump).await
            }
            EtcdCommand::Rejoin {
                endpoints,
                name,
                peer_url,
                peers,
                listen_peer,
                wait,
                lock_ttl,
            } => {
                rejoin::rejoin(rejoin::Request {
                    endpoints: &endpoints,
                    peers: &peers,
                    name: &name,
                    peer_url: &peer_url,
                    listen_peer: listen_peer.as_deref(),
                    wait: Duration::from_secs(wait),
                    lock_ttl,
                })
                .await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strata: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn object_store(config: &Config) -> anyhow::Result<strata_tiering::store::ObjectStoreBackend> {
    let location = config.object_store_url()?;
    let s3 = strata_broker::tier::s3_settings(config)?;
    strata_tiering::store::open(&location, &s3)
        .map_err(anyhow::Error::msg)
        .context("set up the object store (setting `object_store`)")
}

/// A client for snapshots: no per-call deadline, since a snapshot of a large database
/// streams for longer than any fixed one.
async fn snapshot_client(config: &Config) -> anyhow::Result<(Client, Vec<String>, String)> {
    let MetadataUrl::Etcd { endpoints, prefix } = config.metadata_url()? else {
        bail!("setting `metadata`: a snapshot needs an etcd:// URL, not the embedded store");
    };
    let security = EtcdSecurity::from_config(config)?;
    let (options, urls) = security.apply(
        ConnectOptions::new().with_connect_timeout(CALL_TIMEOUT),
        &endpoints,
    );
    let client = Client::connect(&urls, Some(options))
        .await
        .with_context(|| format!("connect to etcd at {}", endpoints.join(",")))?;
    Ok((client, endpoints, prefix))
}

async fn snapshot(config: &Config, keep: usize) -> anyhow::Result<()> {
    if keep == 0 {
        bail!("--keep 0 would delete the snapshot just taken; keep at least 1");
    }
    let store = object_store(config)?;
    let (mut client, endpoints, prefix) = snapshot_client(config).await?;
    let id_key = format!("{prefix}/cluster_id");
    let found = tokio::time::timeout(CALL_TIMEOUT, client.get(id_key.as_str(), None))
        .await
        .context("read the cluster id from etcd: timed out")?
        .context("read the cluster id from etcd")?;
    let cluster_id = match found.kvs().first() {
        Some(kv) => String::from_utf8(kv.value().to_vec())
            .with_context(|| format!("{id_key} is not UTF-8"))?,
        None => bail!(
            "etcd at {} has no {id_key}: no Strata cluster uses this prefix (an empty etcd, or a wrong prefix). Refusing to snapshot: its snapshots would rotate out the good ones",
            endpoints.join(",")
        ),
    };
    if cluster_id.is_empty() || cluster_id.contains('/') {
        bail!("{id_key} holds {cluster_id:?}, not a cluster id");
    }
    let dir = format!("{SNAPSHOT_PREFIX}/{cluster_id}");
    let status = tokio::time::timeout(CALL_TIMEOUT, client.status())
        .await
        .context("ask etcd for its revision: timed out")?
        .context("ask etcd for its revision")?;
    let revision = status.header().map_or(0, |h| h.revision());
    let name = format!("{}-r{revision}.db", utc_stamp(SystemTime::now()));
    let temp = std::env::temp_dir().join(format!("strata-etcd-{}-{name}", std::process::id()));
    let written = match download_snapshot(&mut client, &temp).await {
        Ok(bytes) => verify_snapshot(&temp).map(|()| bytes),
        Err(e) => Err(e),
    };
    let uploaded = match written {
        Ok(bytes) => upload(&store, &format!("{dir}/{name}"), &temp)
            .await
            .map(|()| bytes),
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_file(&temp);
    let bytes = uploaded?;
    println!(
        "snapshot {dir}/{name}: {bytes} bytes at revision {revision} from {} to {store}",
        endpoints.join(",")
    );
    let names = snapshot_names(&store, &cluster_id).await?;
    let surplus = names.len().saturating_sub(keep);
    for old in &names[..surplus] {
        store
            .delete(&format!("{dir}/{old}"))
            .await
            .with_context(|| format!("delete the old snapshot {old}"))?;
        println!("deleted {dir}/{old}");
    }
    Ok(())
}

/// Streams etcd's snapshot into `path`; returns its size.
async fn download_snapshot(client: &mut Client, path: &Path) -> anyhow::Result<u64> {
    let mut stream = client.snapshot().await.context("start an etcd snapshot")?;
    let mut file = tokio::fs::File::create(path)
        .await
        .with_context(|| format!("create {}", path.display()))?;
    let mut bytes = 0u64;
    while let Some(message) = stream.message().await.context("read etcd's snapshot")? {
        file.write_all(message.blob())
            .await
            .with_context(|| format!("write {}", path.display()))?;
        bytes += message.blob().len() as u64;
    }
    file.sync_all()
        .await
        .with_context(|| format!("write {}", path.display()))?;
    if bytes == 0 {
        bail!("etcd sent an empty snapshot");
    }
    Ok(bytes)
}

/// Uploads `path` to `key` (under the object store's URL).
async fn upload(
    store: &strata_tiering::store::ObjectStoreBackend,
    key: &str,
    path: &Path,
) -> anyhow::Result<()> {
    let file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let len = file
        .metadata()
        .with_context(|| format!("stat {}", path.display()))?
        .len();
    let mut body = Body::new();
    body.push_file(Arc::new(file), 0, len);
    store
        .put_body(key, &body, PART_BYTES)
        .await
        .with_context(|| format!("upload the snapshot {key}"))
}

/// The snapshots of one cluster in the store, oldest first (their names start with the
/// UTC time).
async fn snapshot_names(
    store: &strata_tiering::store::ObjectStoreBackend,
    cluster_id: &str,
) -> anyhow::Result<Vec<String>> {
    let prefix = format!("{SNAPSHOT_PREFIX}/{cluster_id}/");
    let mut names: Vec<String> = store
        .list(&prefix)
        .await
        .context("list the snapshots")?
        .into_iter()
        .filter_map(|object| object.key.strip_prefix(&prefix).map(str::to_string))
        .filter(|name| name.ends_with(".db") && !name.contains('/'))
        .collect();
    names.sort();
    Ok(names)
}

async fn list(config: &Config) -> anyhow::Result<()> {
    let store = object_store(config)?;
    let prefix = format!("{SNAPSHOT_PREFIX}/");
    let mut objects = store.list(&prefix).await.context("list the snapshots")?;
    objects.sort_by(|a, b| a.key.cmp(&b.key));
    println!("{:<80} {:>14}", "SNAPSHOT (CLUSTER ID/NAME)", "BYTES");
    for object in objects.iter().filter(|o| o.key.ends_with(".db")) {
        let name = object.key.strip_prefix(&prefix).unwrap_or(&object.key);
        println!("{name:<80} {:>14}", object.size);
    }
    Ok(())
}

async fn fetch(
    config: &Config,
    name: &str,
    cluster_id: Option<&str>,
    output: &Path,
) -> anyhow::Result<()> {
    let store = object_store(config)?;
    let name = if name == "latest" {
        let Some(cluster_id) = cluster_id else {
            bail!(
                "`latest` needs --cluster-id: snapshots are kept per cluster (`strata etcd snapshots` lists them); pick one from before the incident"
            );
        };
        match snapshot_names(&store, cluster_id).await?.pop() {
            Some(newest) => format!("{cluster_id}/{newest}"),
            None => bail!("no snapshot under {SNAPSHOT_PREFIX}/{cluster_id}/ in {store}"),
        }
    } else {
        name.to_string()
    };
    let key = format!("{SNAPSHOT_PREFIX}/{name}");
    let folder = key.rsplit_once('/').map_or("", |(folder, _)| folder);
    let size = store
        .list(&format!("{folder}/"))
        .await
        .with_context(|| format!("look up the snapshot {name}"))?
        .into_iter()
        .find(|object| object.key == key)
        .with_context(|| format!("no snapshot {name} in {store}"))?
        .size;
    // Streamed in ranges to a file beside the output, checked, then renamed: a snapshot
    // can be as large as etcd's quota, and a broken one never lands at `output`.
    let partial = output.with_extension("partial");
    let fetched = download_to(&store, &key, size, &partial)
        .await
        .and_then(|()| verify_snapshot(&partial));
    if let Err(e) = fetched {
        let _ = std::fs::remove_file(&partial);
        return Err(e.context(format!("download the snapshot {name}")));
    }
    std::fs::rename(&partial, output).with_context(|| format!("write {}", output.display()))?;
    println!(
        "{name}: {size} bytes written to {} (checksum verified)",
        output.display()
    );
    Ok(())
}

async fn download_to(
    store: &strata_tiering::store::ObjectStoreBackend,
    key: &str,
    size: u64,
    path: &Path,
) -> anyhow::Result<()> {
    let mut file = tokio::fs::File::create(path)
        .await
        .with_context(|| format!("create {}", path.display()))?;
    let mut offset = 0;
    while offset < size {
        let end = (offset + PART_BYTES).min(size);
        let bytes = store
            .get_range(key, offset..end)
            .await
            .with_context(|| format!("read bytes {offset}..{end}"))?;
        if bytes.len() as u64 != end - offset {
            bail!(
                "read {} bytes at {offset} instead of {}",
                bytes.len(),
                end - offset
            );
        }
        file.write_all(&bytes)
            .await
            .with_context(|| format!("write {}", path.display()))?;
        offset = end;
    }
    file.sync_all()
        .await
        .with_context(|| format!("write {}", path.display()))?;
    Ok(())
}

/// Length of the SHA-256 etcd appends to the snapshot it streams.
const SNAPSHOT_HASH_BYTES: u64 = 32;

/// Checks the SHA-256 etcd appends to a snapshot against the bytes before it (what
/// `etcdutl snapshot restore` checks too, only later: at restore time).
fn verify_snapshot(path: &Path) -> anyhow::Result<()> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let len = file
        .metadata()
        .with_context(|| format!("stat {}", path.display()))?
        .len();
    if len <= SNAPSHOT_HASH_BYTES {
        bail!("the snapshot is {len} bytes: too short to hold etcd's checksum");
    }
    let mut digest = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut remaining = len - SNAPSHOT_HASH_BYTES;
    let mut buffer = vec![0u8; 1 << 20];
    while remaining > 0 {
        let want = remaining.min(buffer.len() as u64) as usize;
        file.read_exact(&mut buffer[..want])
            .with_context(|| format!("read {}", path.display()))?;
        digest.update(&buffer[..want]);
        remaining -= want as u64;
    }
    let mut stored = [0u8; SNAPSHOT_HASH_BYTES as usize];
    file.read_exact(&mut stored)
        .with_context(|| format!("read {}", path.display()))?;
    if digest.finish().as_ref() != stored {
        bail!("the snapshot's SHA-256 does not match its content: truncated or corrupt");
    }
    Ok(())
}

/// `YYYYMMDDTHHMMSSZ`, which sorts as time does.
fn utc_stamp(time: SystemTime) -> String {
    let secs = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_is_checked_against_its_sha256() -> std::io::Result<()> {
        let dir = std::env::temp_dir().join(format!("strata-verify-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let content = vec![7u8; 3 << 20];
        let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &content);
        let good = dir.join("good.db");
        std::fs::write(&good, [content.as_slice(), hash.as_ref()].concat())?;
        assert!(verify_snapshot(&good).is_ok());
        let truncated = dir.join("truncated.db");
        let cut = [&content[..content.len() - 1], hash.as_ref()].concat();
        std::fs::write(&truncated, cut)?;
        assert!(verify_snapshot(&truncated).is_err());
        let no_hash = dir.join("no-hash.db");
        std::fs::write(&no_hash, &content)?;
        assert!(verify_snapshot(&no_hash).is_err());
        std::fs::remove_dir_all(&dir)
    }

    #[test]
    fn stamps_sort_as_time_does() {
        let at = |secs| utc_stamp(SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "19700101T000000Z");
        assert_eq!(at(951_782_400), "20000229T000000Z");
        assert_eq!(at(1_796_648_645), "20261207T130405Z");
        assert!(at(1_796_648_645) < at(1_796_648_646));
    }
}
