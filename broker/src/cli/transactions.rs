//! `strata transactions list|describe|abort|find-hanging|abort-partition`: the
//! transactions the brokers coordinate (as `kafka-transactions.sh` shows them), an
//! operator's abort of one, and, for a hanging transaction (open in a partition, unknown
//! to every coordinator), the partition-level search and abort.

use anyhow::Context;
use strata_proto::admin::{
    AbortPartitionTransactionRequest, AbortTransactionRequest, ListPartitionTransactionsRequest,
    ListTransactionsRequest, PartitionTransaction, Transaction,
};

use super::{Target, connect, every_broker, failed, print_json, table};

#[derive(clap::Subcommand)]
pub enum TransactionsCommand {
    /// Every transactional id the brokers coordinate, with its state; `--ongoing` only
    /// open transactions, oldest first.
    List {
        #[arg(long)]
        ongoing: bool,
    },
    /// One transactional id: producer, epoch, state, timeout, partitions.
    Describe { transactional_id: String },
    /// Abort the open transaction of a transactional id, as a timeout would: its
    /// producer is fenced and abort markers unblock read_committed consumers.
    Abort { transactional_id: String },
    /// Transactions open in partitions (each holds back its partition's last stable
    /// offset) that no coordinator has open: hanging. `--all` lists every open one.
    FindHanging {
        #[arg(long)]
        topic: Option<String>,
        #[arg(long)]
        all: bool,
    },
    /// Write an abort marker for a producer's open transaction in one partition, as
    /// `kafka-transactions.sh abort` does. Only for a hanging transaction: one its
    /// coordinator still runs would be aborted in this partition alone.
    AbortPartition {
        #[arg(long)]
        topic: String,
        #[arg(long)]
        partition: i32,
        #[arg(long)]
        producer_id: i64,
        /// The marker's epoch; by default the open transaction's.
        #[arg(long, default_value_t = -1)]
        producer_epoch: i32,
    },
}

/// Asks every broker listed by the cluster: each answer's (answering node, items).
async fn ask_every_broker<T, Fut>(
    target: &Target,
    ask: impl Fn(super::Client) -> Fut,
) -> anyhow::Result<Vec<(i32, T)>>
where
    Fut: std::future::Future<Output = Result<(i32, Vec<T>), tonic::Status>>,
{
    let mut found = Vec::new();
    for (node, address) in every_broker(&target.admin).await? {
        let (answered_by, items) = async { ask(connect(&address).await?).await.map_err(failed) }
            .await
            .with_context(|| format!("broker {node} ({address})"))?;
        found.extend(items.into_iter().map(|t| (answered_by, t)));
    }
    Ok(found)
}

/// The open transactions of every partition, from its leader: (leader, transaction).
async fn partition_transactions(
    target: &Target,
    topic: &Option<String>,
) -> anyhow::Result<Vec<(i32, PartitionTransaction)>> {
    let topic = topic.clone().unwrap_or_default();
    ask_every_broker(target, |mut client| {
        let topic = topic.clone();
        async move {
            let answer = client
                .list_partition_transactions(ListPartitionTransactionsRequest { topic })
                .await?
                .into_inner();
            Ok((answer.answered_by, answer.transactions))
        }
    })
    .await
}

/// (leader node, open transaction, the transactional id of a coordinator's open
/// transaction holding the partition, if any), from every broker. The partitions are
/// listed before and after the coordinators: a transaction counts as hanging only if it
/// was open in its partition both times (with the same first offset) and no coordinator
/// had it open in between, so one that began or ended meanwhile is not reported.
async fn open_in_partitions(
    target: &Target,
    topic: Option<String>,
) -> anyhow::Result<Vec<(i32, PartitionTransaction, Option<String>)>> {
    let before = partition_transactions(target, &topic).await?;
    let coordinated = all(target).await?;
    let after = partition_transactions(target, &topic).await?;
    let mut found = Vec::new();
    for (leader, open) in before {
        let name = format!("{}/{}", open.topic, open.partition);
        let owner = coordinated
            .iter()
            .find(|(_, t)| {
                t.producer_id == open.producer_id && t.start_ms >= 0 && t.partitions.contains(&name)
            })
            .map(|(_, t)| t.transactional_id.clone());
        let still_open = after.iter().any(|(_, t)| {
            t.topic == open.topic
                && t.partition == open.partition
                && t.producer_id == open.producer_id
                && t.first_offset == open.first_offset
        });
        if still_open {
            found.push((leader, open, owner));
        }
    }
    found.sort_by(|a, b| (&a.1.topic, a.1.partition).cmp(&(&b.1.topic, b.1.partition)));
    Ok(found)
}

/// (coordinator node, transaction) from every broker.
async fn all(target: &Target) -> anyhow::Result<Vec<(i32, Transaction)>> {
    ask_every_broker(target, |mut client| async move {
        let answer = client
            .list_transactions(ListTransactionsRequest {})
            .await?
            .into_inner();
        Ok((answer.answered_by, answer.transactions))
    })
    .await
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub async fn transactions(target: &Target, command: TransactionsCommand) -> anyhow::Result<()> {
    match command {
        TransactionsCommand::List { ongoing } => {
            let mut listed = all(target).await?;
            if ongoing {
                listed.retain(|(_, t)| t.start_ms >= 0);
                listed.sort_by_key(|(_, t)| t.start_ms);
            }
            if target.json {
                let values: Vec<&Transaction> = listed.iter().map(|(_, t)| t).collect();
                return print_json(&values);
            }
            let now = now_ms();
            let rows = listed
                .iter()
                .map(|(node, t)| {
                    vec![
                        t.transactional_id.clone(),
                        node.to_string(),
                        t.producer_id.to_string(),
                        t.producer_epoch.to_string(),
                        t.state.clone(),
                        if t.start_ms >= 0 {
                            format!("{} ms", now - t.start_ms)
                        } else {
                            "-".to_string()
                        },
                        t.partitions.len().to_string(),
                    ]
                })
                .collect();
            table(
                &[
                    "TRANSACTIONAL ID",
                    "COORDINATOR",
                    "PRODUCER",
                    "EPOCH",
                    "STATE",
                    "OPEN FOR",
                    "PARTITIONS",
                ],
                rows,
            );
        }
        TransactionsCommand::Describe { transactional_id } => {
            let Some((node, t)) = all(target)
                .await?
                .into_iter()
                .find(|(_, t)| t.transactional_id == transactional_id)
            else {
                anyhow::bail!("no broker coordinates a transactional id {transactional_id}");
            };
            if target.json {
                return print_json(&t);
            }
            println!("transactional id  {}", t.transactional_id);
            println!("coordinator       {node}");
            println!(
                "producer          {} epoch {}",
                t.producer_id, t.producer_epoch
            );
            println!("state             {}", t.state);
            println!("timeout           {} ms", t.timeout_ms);
            if t.start_ms >= 0 {
                println!("open for          {} ms", now_ms() - t.start_ms);
            }
            println!("partitions        {}", t.partitions.join(" "));
        }
        TransactionsCommand::Abort { transactional_id } => {
            let mut refusals = Vec::new();
            for (node, address) in every_broker(&target.admin).await? {
                let answer = async {
                    connect(&address)
                        .await?
                        .abort_transaction(AbortTransactionRequest {
                            transactional_id: transactional_id.clone(),
                        })
                        .await
                        .map_err(|s| (s.code(), s.message().to_string()))
                        .map_err(|(code, message)| anyhow::anyhow!("{code:?}: {message}"))
                }
                .await;
                match answer {
                    Ok(_) => {
                        if target.json {
                            return print_json(&serde_json::json!({
                                "aborted": transactional_id,
                                "coordinator": node,
                            }));
                        }
                        println!(
                            "aborted the open transaction of {transactional_id} (coordinator {node})"
                        );
                        return Ok(());
                    }
                    Err(e) => refusals.push(format!("broker {node}: {e:#}")),
                }
            }
            anyhow::bail!(
                "no broker aborted {transactional_id}:\n  {}",
                refusals.join("\n  ")
            );
        }
        TransactionsCommand::FindHanging { topic, all } => {
            let mut open = open_in_partitions(target, topic).await?;
            if !all {
                open.retain(|(_, _, owner)| owner.is_none());
            }
            if target.json {
                let values: Vec<serde_json::Value> = open
                    .iter()
                    .map(|(leader, t, owner)| {
                        serde_json::json!({
                            "topic": t.topic,
                            "partition": t.partition,
                            "leader": leader,
                            "producer_id": t.producer_id,
                            "producer_epoch": t.producer_epoch,
                            "first_offset": t.first_offset,
                            "high_watermark": t.high_watermark,
                            "transactional_id": owner,
                        })
                    })
                    .collect();
                return print_json(&values);
            }
            let rows = open
                .iter()
                .map(|(leader, t, owner)| {
                    vec![
                        t.topic.clone(),
                        t.partition.to_string(),
                        leader.to_string(),
                        t.producer_id.to_string(),
                        t.producer_epoch.to_string(),
                        t.first_offset.to_string(),
                        (t.high_watermark - t.first_offset).to_string(),
                        owner
                            .clone()
                            .unwrap_or_else(|| "none (hanging)".to_string()),
                    ]
                })
                .collect();
            table(
                &[
                    "TOPIC",
                    "PARTITION",
                    "LEADER",
                    "PRODUCER",
                    "EPOCH",
                    "FIRST OFFSET",
                    "HELD BACK",
                    "TRANSACTIONAL ID",
                ],
                rows,
            );
        }
        TransactionsCommand::AbortPartition {
            topic,
            partition,
            producer_id,
            producer_epoch,
        } => {
            let mut refusals = Vec::new();
            for (node, address) in every_broker(&target.admin).await? {
                let answer = async {
                    connect(&address)
                        .await?
                        .abort_partition_transaction(AbortPartitionTransactionRequest {
                            topic: topic.clone(),
                            partition,
                            producer_id,
                            producer_epoch,
                        })
                        .await
                        .map_err(|s| anyhow::anyhow!("{:?}: {}", s.code(), s.message()))
                }
                .await;
                match answer {
                    Ok(done) => {
                        let marker_offset = done.into_inner().marker_offset;
                        if target.json {
                            return print_json(&serde_json::json!({
                                "topic": topic,
                                "partition": partition,
                                "producer_id": producer_id,
                                "leader": node,
                                "marker_offset": marker_offset,
                            }));
                        }
                        println!(
                            "aborted producer {producer_id}'s transaction in {topic}/{partition} \
                             (leader {node}, abort marker at offset {marker_offset})"
                        );
                        return Ok(());
                    }
                    Err(e) => refusals.push(format!("broker {node}: {e:#}")),
                }
            }
            anyhow::bail!(
                "no broker aborted producer {producer_id}'s transaction in {topic}/{partition}:\n  {}",
                refusals.join("\n  ")
            );
        }
    }
    Ok(())
}
