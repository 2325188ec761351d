//! The admin commands of the `strata` binary: clients of the admin API
//! (`proto/strata/admin.proto`) that print human tables, or JSON with `--json`.
//! docs/cli.md is their contract.

mod cost;
mod etcd;
mod placement;
mod rebalance;
mod transactions;
pub use cost::cost;
pub use etcd::{EtcdCommand, etcd};
pub use placement::{ReassignCommand, elect_leaders, reassign};
pub use rebalance::{RebalanceArgs, rebalance};
pub use transactions::{TransactionsCommand, transactions};

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;
use strata_proto::admin::admin_client::AdminClient;
use strata_proto::admin::{
    AlterTopicConfigRequest, CacheStatsRequest, CacheStatsResponse, ClusterStatusRequest,
    ClusterStatusResponse, CreateTopicRequest, DeleteTopicRequest, DescribeTopicRequest,
    DrainRequest, ListTopicsRequest, PartitionTiering, ShutdownRequest, TieringStatusRequest,
    Topic,
};
use tonic::transport::Channel;

#[derive(clap::Args, Clone)]
pub struct Target {
    /// A broker's admin API (its `admin_listen`).
    #[arg(
        long,
        value_name = "HOST:PORT",
        env = "STRATA_ADMIN",
        default_value = "127.0.0.1:9094",
        global = true
    )]
    pub admin: String,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// CA (PEM) of the admin API's certificate: talk TLS to it.
    #[arg(long, value_name = "FILE", env = "STRATA_ADMIN_CA", global = true)]
    pub ca: Option<std::path::PathBuf>,
    /// Client certificate (PEM) for mutual TLS; with --key.
    #[arg(long, value_name = "FILE", env = "STRATA_ADMIN_CERT", global = true)]
    pub cert: Option<std::path::PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long, value_name = "FILE", env = "STRATA_ADMIN_KEY", global = true)]
    pub key: Option<std::path::PathBuf>,
    /// A file holding the admin API's bearer token (the broker's admin_token_file).
    #[arg(
        long,
        value_name = "FILE",
        env = "STRATA_ADMIN_TOKEN_FILE",
        global = true
    )]
    pub token_file: Option<std::path::PathBuf>,
}

/// How the CLI reaches admin APIs: TLS and a bearer token, from the Target's flags.
/// Set once per process, before the first connection.
static ACCESS: std::sync::OnceLock<Access> = std::sync::OnceLock::new();

#[derive(Clone, Default)]
struct Access {
    tls: Option<tonic::transport::ClientTlsConfig>,
    token: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

impl Target {
    fn access(&self) -> anyhow::Result<Access> {
        let read = |flag: &str, path: &std::path::Path| {
            std::fs::read(path).with_context(|| format!("{flag}: read {}", path.display()))
        };
        let mut access = Access::default();
        if self.ca.is_some() || self.cert.is_some() {
            let mut tls = tonic::transport::ClientTlsConfig::new();
            if let Some(ca) = &self.ca {
                tls =
                    tls.ca_certificate(tonic::transport::Certificate::from_pem(read("--ca", ca)?));
            }
            match (&self.cert, &self.key) {
                (Some(cert), Some(key)) => {
                    tls = tls.identity(tonic::transport::Identity::from_pem(
                        read("--cert", cert)?,
                        read("--key", key)?,
                    ));
                }
                (None, None) => {}
                _ => bail!("--cert and --key go together"),
            }
            access.tls = Some(tls);
        }
        if let Some(path) = &self.token_file {
            let token = String::from_utf8(read("--token-file", path)?)
                .context("--token-file: the token is not text")?;
            access.token = Some(
                format!("Bearer {}", token.trim())
                    .parse()
                    .context("--token-file: the token is not a valid header value")?,
            );
        }
        Ok(access)
    }
}

/// Adds the bearer token to every call.
#[derive(Clone)]
pub struct Authorization(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Authorization {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", token.clone());
        }
        Ok(request)
    }
}

type Client = AdminClient<tonic::codegen::InterceptedService<Channel, Authorization>>;

#[derive(clap::Subcommand)]
pub enum TopicsCommand {
    /// Every topic with its partition count, replication factor and config overrides.
    List,
    /// One topic's partitions: leader, epoch, replicas, in-sync replicas.
    Describe { name: String },
    /// Create a topic.
    Create {
        name: String,
        /// Partitions [default: the broker's num_partitions].
        #[arg(long, value_name = "N")]
        partitions: Option<i32>,
        /// Replicas per partition [default: the broker's default_replication_factor].
        #[arg(long, value_name = "N")]
        replication_factor: Option<i32>,
        /// A topic config, `KEY=VALUE`; repeatable.
        #[arg(long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
    },
    /// Change config overrides; others stay as they are.
    Alter {
        name: String,
        /// Set `KEY=VALUE`; repeatable.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Remove an override (back to the broker default); repeatable.
        #[arg(long = "delete", value_name = "KEY")]
        delete: Vec<String>,
    },
    /// Delete a topic (and, for tiered topics, its objects in the bucket).
    Delete { name: String },
}

async fn connect(address: &str) -> anyhow::Result<Client> {
    let access = ACCESS.get().cloned().unwrap_or_default();
    let scheme = if access.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let mut endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{address}"))
        .with_context(|| format!("`{address}` is not HOST:PORT"))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30));
    if let Some(tls) = access.tls {
        endpoint = endpoint
            .tls_config(tls)
            .context("the TLS settings (--ca, --cert, --key)")?;
    }
    let channel = endpoint.connect().await.with_context(|| {
        format!("cannot reach the admin API at {address} (is a broker running there? see --admin)")
    })?;
    Ok(
        AdminClient::with_interceptor(channel, Authorization(access.token))
            .max_decoding_message_size(256 << 20),
    )
}

/// A gRPC error as the user should read it.
fn failed(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", status.message())
}

fn key_values(items: &[String]) -> anyhow::Result<HashMap<String, String>> {
    items
        .iter()
        .map(|item| match item.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => bail!("`{item}` is not KEY=VALUE"),
        })
        .collect()
}

/// Runs `work` on a small runtime; errors print as `strata: ...` and exit 1.
pub fn run(target: &Target, work: impl Future<Output = anyhow::Result<()>>) -> ExitCode {
    match target.access() {
        Ok(access) => {
            let _ = ACCESS.set(access);
        }
        Err(e) => {
            eprintln!("strata: {e:#}");
            return ExitCode::from(2);
        }
    }
    let Some(runtime) = runtime(tokio::runtime::Builder::new_current_thread()) else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(work) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strata: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Builds a runtime with every driver on; `None` (after saying why) if it cannot start.
pub fn runtime(mut builder: tokio::runtime::Builder) -> Option<tokio::runtime::Runtime> {
    match builder.enable_all().build() {
        Ok(runtime) => Some(runtime),
        Err(e) => {
            eprintln!("strata: cannot start the async runtime: {e}");
            None
        }
    }
}

fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Left-aligned columns, two spaces apart.
fn table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let text: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", text.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row);
    }
}

fn ids(list: &[i32]) -> String {
    let text: Vec<String> = list.iter().map(i32::to_string).collect();
    text.join(",")
}

fn sorted(configs: &HashMap<String, String>) -> BTreeMap<&String, &String> {
    configs.iter().collect()
}

pub async fn status(target: &Target) -> anyhow::Result<()> {
    let status = cluster_status(&target.admin).await?;
    if target.json {
        return print_json(&status);
    }
    println!(
        "cluster {}  controller {}  answered by {} (strata {})",
        status.cluster_id,
        if status.controller < 0 {
            "none".to_string()
        } else {
            status.controller.to_string()
        },
        status.answered_by,
        status.version
    );
    println!(
        "{} topics, {} partitions, {} offline, {} under-replicated",
        status.topics,
        status.partitions,
        status.offline_partitions,
        status.under_replicated_partitions
    );
    let rows = status
        .brokers
        .iter()
        .map(|b| {
            let mut state = Vec::new();
            if b.controller {
                state.push("controller");
            }
            if b.draining {
                state.push("draining");
            }
            vec![
                b.node_id.to_string(),
                format!("{}:{}", b.host, b.port),
                b.rack.clone(),
                b.leaders.to_string(),
                b.replicas.to_string(),
                b.admin.clone(),
                state.join(","),
            ]
        })
        .collect();
    table(
        &[
            "NODE", "KAFKA", "RACK", "LEADERS", "REPLICAS", "ADMIN", "STATE",
        ],
        rows,
    );
    Ok(())
}

async fn cluster_status(admin: &str) -> anyhow::Result<ClusterStatusResponse> {
    Ok(connect(admin)
        .await?
        .cluster_status(ClusterStatusRequest {})
        .await
        .map_err(failed)?
        .into_inner())
}

pub async fn topics(target: &Target, command: TopicsCommand) -> anyhow::Result<()> {
    let mut client = connect(&target.admin).await?;
    match command {
        TopicsCommand::List => {
            let topics = client
                .list_topics(ListTopicsRequest {})
                .await
                .map_err(failed)?
                .into_inner()
                .topics;
            if target.json {
                return print_json(&topics);
            }
            let rows = topics
                .iter()
                .map(|t| {
                    let configs: Vec<String> = sorted(&t.configs)
                        .into_iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    vec![
                        t.name.clone(),
                        t.partitions.len().to_string(),
                        t.partitions
                            .first()
                            .map_or(0, |p| p.replicas.len())
                            .to_string(),
                        if t.internal { "yes" } else { "" }.to_string(),
                        configs.join(" "),
                    ]
                })
                .collect();
            table(&["TOPIC", "PARTITIONS", "RF", "INTERNAL", "CONFIGS"], rows);
        }
        TopicsCommand::Describe { name } => {
            let topic = client
                .describe_topic(DescribeTopicRequest { name })
                .await
                .map_err(failed)?
                .into_inner();
            print_topic(target, &topic)?;
        }
        TopicsCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
        } => {
            let topic = client
                .create_topic(CreateTopicRequest {
                    name,
                    partitions: partitions.unwrap_or(0),
                    replication_factor: replication_factor.unwrap_or(0),
                    configs: key_values(&configs)?,
                })
                .await
                .map_err(failed)?
                .into_inner();
            print_topic(target, &topic)?;
        }
        TopicsCommand::Alter { name, set, delete } => {
            let topic = client
                .alter_topic_config(AlterTopicConfigRequest {
                    name,
                    set: key_values(&set)?,
                    delete,
                })
                .await
                .map_err(failed)?
                .into_inner();
            print_topic(target, &topic)?;
        }
        TopicsCommand::Delete { name } => {
            client
                .delete_topic(DeleteTopicRequest { name: name.clone() })
                .await
                .map_err(failed)?;
            if target.json {
                return print_json(&serde_json::json!({ "deleted": name }));
            }
            println!("deleted topic {name}");
        }
    }
    Ok(())
}

fn print_topic(target: &Target, topic: &Topic) -> anyhow::Result<()> {
    if target.json {
        return print_json(topic);
    }
    let configs: Vec<String> = sorted(&topic.configs)
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    // `diskless.enable` is fixed at creation and stored as an override when on.
    let diskless = topic
        .configs
        .get("diskless.enable")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    println!(
        "topic {}  {} partitions  mode: {}  configs: {}",
        topic.name,
        topic.partitions.len(),
        if diskless { "diskless" } else { "replicated" },
        if configs.is_empty() {
            "(defaults)".to_string()
        } else {
            configs.join(" ")
        }
    );
    partition_rows(std::slice::from_ref(topic));
    Ok(())
}

fn partition_rows(topics: &[Topic]) {
    let rows = topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                vec![
                    t.name.clone(),
                    p.index.to_string(),
                    if p.leader < 0 && p.replicas.is_empty() {
                        // Diskless: every broker serves it.
                        "any".to_string()
                    } else if p.leader < 0 {
                        "none".to_string()
                    } else {
                        p.leader.to_string()
                    },
                    p.leader_epoch.to_string(),
                    ids(&p.replicas),
                    ids(&p.isr),
                    ids(&p.removing),
                ]
            })
        })
        .collect();
    table(
        &[
            "TOPIC",
            "PARTITION",
            "LEADER",
            "EPOCH",
            "REPLICAS",
            "ISR",
            "REMOVING",
        ],
        rows,
    );
}

/// Placement and leadership of every partition (or one topic's).
pub async fn partitions(target: &Target, topic: Option<String>) -> anyhow::Result<()> {
    let mut client = connect(&target.admin).await?;
    let topics = match topic {
        Some(name) => vec![
            client
                .describe_topic(DescribeTopicRequest { name })
                .await
                .map_err(failed)?
                .into_inner(),
        ],
        None => {
            client
                .list_topics(ListTopicsRequest {})
                .await
                .map_err(failed)?
                .into_inner()
                .topics
        }
    };
    if target.json {
        return print_json(&topics);
    }
    partition_rows(&topics);
    Ok(())
}

/// The admin addresses of every live broker (each answers for what it leads); the
/// given address alone when brokers did not say.
async fn every_broker(admin: &str) -> anyhow::Result<Vec<(i32, String)>> {
    let status = cluster_status(admin).await?;
    let mut all: Vec<(i32, String)> = status
        .brokers
        .iter()
        .map(|b| {
            let address = if b.node_id == status.answered_by || b.admin.is_empty() {
                admin.to_string()
            } else {
                b.admin.clone()
            };
            (b.node_id, address)
        })
        .collect();
    all.dedup_by(|a, b| a.1 == b.1);
    Ok(all)
}

/// Tiering status of every partition, asked of each partition's leader.
pub async fn tiering(target: &Target, topic: Option<String>) -> anyhow::Result<()> {
    if let Some(name) = &topic {
        // Brokers answer for what they lead; a topic unknown to all would print nothing.
        connect(&target.admin)
            .await?
            .describe_topic(DescribeTopicRequest { name: name.clone() })
            .await
            .map_err(failed)?;
    }
    let mut rows: Vec<PartitionTiering> = Vec::new();
    for (node, address) in every_broker(&target.admin).await? {
        let answer = async {
            connect(&address)
                .await?
                .tiering_status(TieringStatusRequest {
                    topic: topic.clone().unwrap_or_default(),
                })
                .await
                .map_err(failed)
        }
        .await
        .with_context(|| format!("broker {node} ({address})"))?;
        rows.extend(answer.into_inner().partitions);
    }
    rows.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    if target.json {
        return print_json(&rows);
    }
    let rows = rows
        .iter()
        .map(|p| {
            vec![
                p.topic.clone(),
                p.partition.to_string(),
                if p.remote_storage_enable { "on" } else { "off" }.to_string(),
                p.log_start_offset.to_string(),
                p.local_log_start_offset.to_string(),
                p.high_watermark.to_string(),
                if p.remote_end_offset < 0 {
                    "-".to_string()
                } else {
                    p.remote_end_offset.to_string()
                },
                format!("{}/{}", p.remote_segments, bytes(p.remote_bytes)),
                format!("{}/{}", p.local_segments, bytes(p.local_bytes)),
                format!(
                    "{}/{}/{}s",
                    p.upload_pending_segments,
                    bytes(p.upload_lag_bytes),
                    p.upload_lag_ms / 1000
                ),
                format!(
                    "{}/{}/{}",
                    bytes(p.manifest_root_bytes),
                    p.manifest_tail_entries,
                    p.manifest_spill_refs
                ),
            ]
        })
        .collect();
    table(
        &[
            "TOPIC",
            "PARTITION",
            "TIERED",
            "LOG_START",
            "LOCAL_START",
            "HW",
            "REMOTE_END",
            "REMOTE(SEGS/SIZE)",
            "LOCAL(SEGS/SIZE)",
            "UPLOAD_LAG(SEGS/SIZE/AGE)",
            "MANIFEST(SIZE/ENTRIES/SPILLS)",
        ],
        rows,
    );
    Ok(())
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n}B")
    } else {
        format!("{value:.1}{}", UNITS[unit])
    }
}

/// Segment cache statistics of every broker.
pub async fn cache(target: &Target) -> anyhow::Result<()> {
    let mut answers: Vec<CacheStatsResponse> = Vec::new();
    for (node, address) in every_broker(&target.admin).await? {
        let answer = async {
            connect(&address)
                .await?
                .cache_stats(CacheStatsRequest {})
                .await
                .map_err(failed)
        }
        .await
        .with_context(|| format!("broker {node} ({address})"))?;
        answers.push(answer.into_inner());
    }
    if target.json {
        return print_json(&answers);
    }
    let rows = answers
        .iter()
        .map(|c| {
            let hit_ratio = if c.lookups == 0 {
                "-".to_string()
            } else {
                format!(
                    "{:.1}%",
                    100.0 * (c.lookups - c.misses.min(c.lookups)) as f64 / c.lookups as f64
                )
            };
            vec![
                c.answered_by.to_string(),
                format!(
                    "{}/{}",
                    bytes(c.memory_used_bytes),
                    bytes(c.memory_capacity_bytes)
                ),
                bytes(c.disk_capacity_bytes),
                bytes(c.chunk_bytes),
                c.lookups.to_string(),
                c.misses.to_string(),
                hit_ratio,
                bytes(c.fetched_bytes),
                c.read_ahead_chunks.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "NODE",
            "MEMORY(USED/CAP)",
            "DISK_CAP",
            "CHUNK",
            "LOOKUPS",
            "MISSES",
            "HIT_RATIO",
            "FETCHED",
            "READ_AHEAD",
        ],
        rows,
    );
    Ok(())
}

/// Marks `node` as draining (or not) and, when draining, waits until it holds no
/// replica; with `shutdown`, then asks it to stop (decommission).
pub async fn drain(
    target: &Target,
    node: i32,
    drain: bool,
    timeout: Duration,
    shutdown: bool,
) -> anyhow::Result<()> {
    let mut client = connect(&target.admin).await?;
    let request = DrainRequest {
        node_id: node,
        drain,
    };
    let mut answer = client.drain(request).await.map_err(failed)?.into_inner();
    if !drain {
        println!("broker {node} is no longer draining");
        return Ok(());
    }
    println!("broker {node} marked for draining; moving its replicas");
    let deadline = std::time::Instant::now() + timeout;
    while answer.replicas_left > 0 {
        if std::time::Instant::now() >= deadline {
            bail!(
                "timed out: broker {node} still holds {} replicas ({}); is a controller running, and are other brokers live?",
                answer.replicas_left,
                answer.partitions_left.join(" ")
            );
        }
        println!("{} replicas left on broker {node}", answer.replicas_left);
        tokio::time::sleep(Duration::from_secs(1)).await;
        answer = client.drain(request).await.map_err(failed)?.into_inner();
    }
    println!("drained: broker {node} holds no replicas");
    if shutdown {
        let address = every_broker(&target.admin)
            .await?
            .into_iter()
            .find(|(id, _)| *id == node)
            .map(|(_, address)| address)
            .with_context(|| format!("broker {node} is not live; nothing to stop"))?;
        connect(&address)
            .await?
            .shutdown(ShutdownRequest {})
            .await
            .map_err(failed)?;
        println!("decommissioned: broker {node} is shutting down and will receive no replicas");
    }
    Ok(())
}
