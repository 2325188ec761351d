//! `strata transactions list|describe|abort`: the transactions the brokers coordinate
//! (as `kafka-transactions.sh` shows them), and an operator's abort of a hanging one.

use anyhow::Context;
use strata_proto::admin::{AbortTransactionRequest, ListTransactionsRequest, Transaction};

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
}

/// (coordinator node, transaction) from every broker.
async fn all(target: &Target) -> anyhow::Result<Vec<(i32, Transaction)>> {
    let mut found = Vec::new();
    for (node, address) in every_broker(&target.admin).await? {
        let answer = async {
            connect(&address)
                .await?
                .list_transactions(ListTransactionsRequest {})
                .await
                .map_err(failed)
        }
        .await
        .with_context(|| format!("broker {node} ({address})"))?
        .into_inner();
        found.extend(
            answer
                .transactions
                .into_iter()
                .map(|t| (answer.answered_by, t)),
        );
    }
    Ok(found)
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
    }
    Ok(())
}
