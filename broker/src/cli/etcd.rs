//! `strata etcd`: care of the etcd that holds the cluster's metadata.
//!
//! - `snapshot` streams etcd's maintenance snapshot (the whole database, every prefix) to
//!   a temporary file, uploads it to the object store under
//!   `<object_store>/etcd-snapshots/<UTC time>-r<revision>.db`, then deletes all but the
//!   newest `--keep`. Tiered segments live under `<object_store>/<cluster id>/`, so the
//!   scrubber never sees these objects. The Helm chart's CronJob runs it.
//! - `snapshots` lists them, `fetch` downloads one for `etcdutl snapshot restore`
//!   (docs/deploy.md, "Restoring etcd from a snapshot").
//! - `rejoin` is the start-up decision of one member of the chart's etcd whose data
//!   directory is empty (templates/etcd.yaml): with a reachable cluster that has a quorum,
//!   it replaces the member's stale entry and prints `existing` and the
//!   `--initial-cluster` to start with; with no member answering it prints `new` (a
//!   first install); with members answering but no quorum it fails.
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

/// Where snapshots go, under the object store's URL.
const SNAPSHOT_PREFIX: &str = "etcd-snapshots";
/// Multipart part size of a snapshot upload.
const PART_BYTES: u64 = 16 * 1024 * 1024;
/// Tries of a member add, a second apart.
const ADD_ATTEMPTS: u32 = 30;
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
    /// List the snapshots in the object store, oldest first.
    Snapshots {
        #[command(flatten)]
        settings: Settings,
    },
    /// Download a snapshot (a name `snapshots` lists, or `latest`) to a file.
    Fetch {
        #[command(flatten)]
        settings: Settings,
        /// The snapshot's name, e.g. 20261207T130000Z-r4242.db, or `latest`.
        name: String,
        /// The file to write.
        #[arg(long, value_name = "FILE")]
        output: PathBuf,
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
                output,
            } => fetch(&settings.load()?, &name, &output).await,
            EtcdCommand::Rejoin {
                endpoints,
                name,
                peer_url,
            } => rejoin(&endpoints, &name, &peer_url).await,
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
async fn snapshot_client(config: &Config) -> anyhow::Result<(Client, Vec<String>)> {
    let MetadataUrl::Etcd { endpoints, .. } = config.metadata_url()? else {
        bail!("setting `metadata`: a snapshot needs an etcd:// URL, not the embedded store");
    };
    let security = EtcdSecurity::from_config(config)?;
    let mut options = ConnectOptions::new().with_connect_timeout(CALL_TIMEOUT);
    let mut urls = endpoints.clone();
    if security.ca_pem.is_some() || security.identity_pem.is_some() {
        let mut tls = etcd_client::TlsOptions::new();
        if let Some(ca) = &security.ca_pem {
            tls = tls.ca_certificate(etcd_client::Certificate::from_pem(ca));
        }
        if let Some((cert, key)) = &security.identity_pem {
            tls = tls.identity(etcd_client::Identity::from_pem(cert, key));
        }
        options = options.with_tls(tls);
        for url in &mut urls {
            let host = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"))
                .unwrap_or(url);
            *url = format!("https://{host}");
        }
    }
    if let Some((name, password)) = &security.user {
        options = options.with_user(name.clone(), password.clone());
    }
    let client = Client::connect(&urls, Some(options))
        .await
        .with_context(|| format!("connect to etcd at {}", endpoints.join(",")))?;
    Ok((client, endpoints))
}

async fn snapshot(config: &Config, keep: usize) -> anyhow::Result<()> {
    if keep == 0 {
        bail!("--keep 0 would delete the snapshot just taken; keep at least 1");
    }
    let store = object_store(config)?;
    let (mut client, endpoints) = snapshot_client(config).await?;
    let status = tokio::time::timeout(CALL_TIMEOUT, client.status())
        .await
        .context("ask etcd for its revision: timed out")?
        .context("ask etcd for its revision")?;
    let revision = status.header().map_or(0, |h| h.revision());
    let name = format!("{}-r{revision}.db", utc_stamp(SystemTime::now()));
    let temp = std::env::temp_dir().join(format!("strata-etcd-{}-{name}", std::process::id()));
    let written = download_snapshot(&mut client, &temp).await;
    let uploaded = match written {
        Ok(bytes) => upload(&store, &name, &temp).await.map(|()| bytes),
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_file(&temp);
    let bytes = uploaded?;
    println!(
        "snapshot {SNAPSHOT_PREFIX}/{name}: {bytes} bytes at revision {revision} from {} to {store}",
        endpoints.join(",")
    );
    let names = snapshot_names(&store).await?;
    let surplus = names.len().saturating_sub(keep);
    for old in &names[..surplus] {
        store
            .delete(&format!("{SNAPSHOT_PREFIX}/{old}"))
            .await
            .with_context(|| format!("delete the old snapshot {old}"))?;
        println!("deleted {SNAPSHOT_PREFIX}/{old}");
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

async fn upload(
    store: &strata_tiering::store::ObjectStoreBackend,
    name: &str,
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
        .put_body(&format!("{SNAPSHOT_PREFIX}/{name}"), &body, PART_BYTES)
        .await
        .with_context(|| format!("upload the snapshot {name}"))
}

/// The snapshots in the store, oldest first (their names start with the UTC time).
async fn snapshot_names(
    store: &strata_tiering::store::ObjectStoreBackend,
) -> anyhow::Result<Vec<String>> {
    let prefix = format!("{SNAPSHOT_PREFIX}/");
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
    println!("{:<40} {:>14}", "SNAPSHOT", "BYTES");
    for object in objects.iter().filter(|o| o.key.ends_with(".db")) {
        let name = object.key.strip_prefix(&prefix).unwrap_or(&object.key);
        println!("{name:<40} {:>14}", object.size);
    }
    Ok(())
}

async fn fetch(config: &Config, name: &str, output: &Path) -> anyhow::Result<()> {
    let store = object_store(config)?;
    let name = if name == "latest" {
        match snapshot_names(&store).await?.pop() {
            Some(newest) => newest,
            None => bail!("no snapshot under {SNAPSHOT_PREFIX}/ in {store}"),
        }
    } else {
        name.to_string()
    };
    let bytes = store
        .get(&format!("{SNAPSHOT_PREFIX}/{name}"))
        .await
        .with_context(|| format!("download the snapshot {name}"))?;
    std::fs::write(output, &bytes).with_context(|| format!("write {}", output.display()))?;
    println!(
        "{name}: {} bytes written to {}",
        bytes.len(),
        output.display()
    );
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

/// The decision of `rejoin`, printed for the start script.
async fn rejoin(endpoints: &[String], name: &str, peer_url: &str) -> anyhow::Result<()> {
    // Require a leader: without one, either the cluster is still forming (a first
    // install, all members starting together) or it lost its quorum, where changing
    // membership is impossible anyway.
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(3))
        .with_timeout(Duration::from_secs(5))
        .with_require_leader(true);
    let listed = match tokio::time::timeout(
        Duration::from_secs(10),
        Client::connect(endpoints, Some(options)),
    )
    .await
    {
        // A leader that lost its followers may still call itself leader for a while: a
        // linearizable read proves a quorum (etcd's /health makes the same one).
        Ok(Ok(mut client)) => match client.get("health", None).await {
            Ok(_) => match client.member_list().await {
                Ok(list) => Ok((client, list.members().to_vec())),
                Err(e) => Err(format!("no leader: {e}")),
            },
            Err(e) => Err(format!("no quorum: {e}")),
        },
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".to_string()),
    };
    let (mut client, members) = match listed {
        Ok(listed) => listed,
        Err(why) => {
            // A member answers only once its cluster has formed: one that answers
            // without a leader belongs to a cluster that lost its quorum. Starting a
            // new cluster beside it would hide its data; refuse instead.
            if let Some(formed) = answering_member(endpoints).await {
                bail!(
                    "{formed} answers but its cluster has no leader: it lost its quorum. A member without data cannot join it, and a new cluster would hide the old one's data. Bring back the members that hold data, or restore a snapshot (docs/deploy.md, \"Restoring etcd from a snapshot\")"
                );
            }
            eprintln!(
                "no etcd cluster at {} ({why}): a first install, new",
                endpoints.join(",")
            );
            println!("new");
            return Ok(());
        }
    };
    let mine = members
        .iter()
        .find(|m| m.peer_urls().iter().any(|u| u == peer_url) || m.name() == name);
    let members = match mine {
        // Added, never started (a previous attempt, or a late first start): start as is.
        Some(member) if member.name().is_empty() => members.clone(),
        Some(member) => {
            eprintln!(
                "member {name} ({:x}) is in the cluster but its data is gone: removing and re-adding it",
                member.id()
            );
            client
                .member_remove(member.id())
                .await
                .with_context(|| format!("remove the stale member {name}"))?;
            add_member(&mut client, peer_url).await?
        }
        None => {
            eprintln!("member {name} is not in the cluster: adding it");
            add_member(&mut client, peer_url).await?
        }
    };
    let mut initial = Vec::new();
    for member in &members {
        let member_name = if member.peer_urls().iter().any(|u| u == peer_url) {
            name
        } else if member.name().is_empty() {
            // Another member added but not started yet: the chart names each member
            // after its pod, the first label of its peer URL's host.
            let url = member.peer_urls().first().map_or("", String::as_str);
            pod_of(url).with_context(|| {
                format!(
                    "another member ({:x}) has no name and a peer URL {url:?} that names no pod",
                    member.id()
                )
            })?
        } else {
            member.name()
        };
        for url in member.peer_urls() {
            initial.push(format!("{member_name}={url}"));
        }
    }
    println!("existing");
    println!("{}", initial.join(","));
    Ok(())
}

/// The first of `endpoints` that answers a status request (served without a leader).
async fn answering_member(endpoints: &[String]) -> Option<String> {
    for endpoint in endpoints {
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(3));
        let connected = tokio::time::timeout(
            Duration::from_secs(5),
            Client::connect([endpoint], Some(options)),
        )
        .await;
        if let Ok(Ok(mut client)) = connected
            && client.status().await.is_ok()
        {
            return Some(endpoint.clone());
        }
    }
    None
}

/// `http://strata-etcd-1.strata-etcd-peers.ns.svc:2380` → `strata-etcd-1`.
fn pod_of(peer_url: &str) -> Option<&str> {
    let host = peer_url.split("://").nth(1)?.split([':', '/']).next()?;
    host.split('.').next().filter(|label| !label.is_empty())
}

async fn add_member(
    client: &mut Client,
    peer_url: &str,
) -> anyhow::Result<Vec<etcd_client::Member>> {
    // Right after a member is removed etcd may refuse the add ("unhealthy cluster": a
    // member it has not heard from lately); it accepts once the others are active.
    let mut attempt = 1;
    loop {
        match client.member_add([peer_url], None).await {
            Ok(added) => return Ok(added.member_list().to_vec()),
            Err(e) if attempt < ADD_ATTEMPTS => {
                eprintln!("adding the member {peer_url} failed ({e}); retrying");
                attempt += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => {
                return Err(e).with_context(|| format!("add the member {peer_url}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_sort_as_time_does() {
        let at = |secs| utc_stamp(SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "19700101T000000Z");
        assert_eq!(at(951_782_400), "20000229T000000Z");
        assert_eq!(at(1_796_648_645), "20261207T130405Z");
        assert!(at(1_796_648_645) < at(1_796_648_646));
    }

    #[test]
    fn a_peer_url_names_its_pod() {
        assert_eq!(
            pod_of("http://s-etcd-1.s-etcd-peers.ns.svc.cluster.local:2380"),
            Some("s-etcd-1")
        );
        assert_eq!(pod_of("http://127.0.0.1:2380"), Some("127"));
        assert_eq!(pod_of("nonsense"), None);
    }
}
