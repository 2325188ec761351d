//! `strata reassign start|list|cancel` and `strata elect-leaders`: partition reassignment
//! (as `kafka-reassign-partitions.sh`, whose JSON plan `start --file` reads) and
//! preferred or unclean leader election (as `kafka-leader-election.sh`), through the
//! admin API.

use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use strata_proto::admin::{
    ElectLeadersRequest, ListReassignmentsRequest, OngoingReassignment, PartitionOutcome,
    PartitionReassignment, PartitionRef, ReassignPartitionsRequest,
};

use super::{Target, connect, failed, ids, print_json, table};

#[derive(clap::Subcommand)]
pub enum ReassignCommand {
    /// Move partitions to new replicas, the preferred leader first. Each `--move` is
    /// `TOPIC/PARTITION=BROKER,BROKER,...`; `--file` reads a plan in
    /// kafka-reassign-partitions' JSON format
    /// (`{"partitions":[{"topic":"t","partition":0,"replicas":[1,2]}]}`).
    Start {
        #[arg(long = "move", value_name = "TOPIC/PARTITION=IDS")]
        moves: Vec<String>,
        #[arg(long, value_name = "FILE")]
        file: Option<std::path::PathBuf>,
        /// Allow a replica list of another length than the partition's replication
        /// factor.
        #[arg(long)]
        allow_replication_factor_change: bool,
        /// Wait until every move completes, printing progress.
        #[arg(long)]
        wait: bool,
        /// With `--wait`: give up (exit 1) after this long.
        #[arg(long, value_name = "MS", default_value_t = 600_000)]
        timeout_ms: u64,
    },
    /// Partitions whose replicas are being moved (reassignments and drains).
    List,
    /// Cancel reassignments: the partitions go back to the replicas before them.
    Cancel {
        /// `TOPIC/PARTITION`; repeat for several.
        #[arg(long = "partition", value_name = "TOPIC/PARTITION", required = true)]
        partitions: Vec<String>,
    },
}

/// kafka-reassign-partitions' plan format (its `version` field is accepted and ignored).
#[derive(Deserialize)]
struct Plan {
    partitions: Vec<PlannedPartition>,
}

#[derive(Deserialize)]
struct PlannedPartition {
    topic: String,
    partition: i32,
    replicas: Vec<i32>,
}

/// `TOPIC/PARTITION`, the topic possibly containing `/`-free Kafka names only.
fn partition_ref(text: &str) -> anyhow::Result<PartitionRef> {
    let (topic, partition) = text
        .rsplit_once('/')
        .with_context(|| format!("`{text}`: expected TOPIC/PARTITION"))?;
    let partition = partition
        .parse()
        .with_context(|| format!("`{text}`: the partition is not a number"))?;
    Ok(PartitionRef {
        topic: topic.to_string(),
        partition,
    })
}

fn planned_move(text: &str) -> anyhow::Result<PartitionReassignment> {
    let (partition, replicas) = text
        .split_once('=')
        .with_context(|| format!("`{text}`: expected TOPIC/PARTITION=BROKER,BROKER,..."))?;
    let PartitionRef { topic, partition } = partition_ref(partition)?;
    let replicas = replicas
        .split(',')
        .map(|id| {
            id.trim()
                .parse()
                .with_context(|| format!("`{text}`: `{id}` is not a broker id"))
        })
        .collect::<anyhow::Result<Vec<i32>>>()?;
    Ok(PartitionReassignment {
        topic,
        partition,
        replicas,
        cancel: false,
    })
}

/// Prints each partition's outcome; fails if any was refused.
fn report(target: &Target, results: &[PartitionOutcome], done: &str) -> anyhow::Result<()> {
    if target.json {
        print_json(&results)?;
    } else {
        let rows = results
            .iter()
            .map(|r| {
                let outcome = if r.error.is_empty() {
                    done.to_string()
                } else {
                    format!("{}: {}", r.error, r.message)
                };
                vec![r.topic.clone(), r.partition.to_string(), outcome]
            })
            .collect();
        table(&["TOPIC", "PARTITION", "RESULT"], rows);
    }
    let refused = results.iter().filter(|r| !r.error.is_empty()).count();
    if refused > 0 {
        bail!("{refused} of {} partitions refused", results.len());
    }
    Ok(())
}

fn ongoing_table(ongoing: &[OngoingReassignment]) {
    let rows = ongoing
        .iter()
        .map(|o| {
            vec![
                o.topic.clone(),
                o.partition.to_string(),
                ids(&o.replicas),
                ids(&o.adding),
                ids(&o.removing),
                ids(&o.isr),
                if o.leader < 0 {
                    "none".into()
                } else {
                    o.leader.to_string()
                },
            ]
        })
        .collect();
    table(
        &[
            "TOPIC",
            "PARTITION",
            "REPLICAS",
            "ADDING",
            "REMOVING",
            "ISR",
            "LEADER",
        ],
        rows,
    );
}

pub async fn reassign(target: &Target, command: ReassignCommand) -> anyhow::Result<()> {
    let mut client = connect(&target.admin).await?;
    match command {
        ReassignCommand::Start {
            moves,
            file,
            allow_replication_factor_change,
            wait,
            timeout_ms,
        } => {
            let mut partitions = moves
                .iter()
                .map(|m| planned_move(m))
                .collect::<anyhow::Result<Vec<_>>>()?;
            if let Some(file) = file {
                let text = std::fs::read_to_string(&file)
                    .with_context(|| format!("read {}", file.display()))?;
                let plan: Plan = serde_json::from_str(&text)
                    .with_context(|| format!("{} is not a reassignment plan", file.display()))?;
                partitions.extend(plan.partitions.into_iter().map(|p| PartitionReassignment {
                    topic: p.topic,
                    partition: p.partition,
                    replicas: p.replicas,
                    cancel: false,
                }));
            }
            if partitions.is_empty() {
                bail!("nothing to move: give --move TOPIC/PARTITION=IDS or --file PLAN");
            }
            let moved: Vec<(String, i32)> = partitions
                .iter()
                .map(|p| (p.topic.clone(), p.partition))
                .collect();
            let answer = client
                .reassign_partitions(ReassignPartitionsRequest {
                    partitions,
                    allow_replication_factor_change,
                })
                .await
                .map_err(failed)?
                .into_inner();
            report(target, &answer.results, "started")?;
            if wait {
                let deadline = std::time::Instant::now() + Duration::from_millis(timeout_ms);
                loop {
                    let ongoing: Vec<OngoingReassignment> = client
                        .list_reassignments(ListReassignmentsRequest {})
                        .await
                        .map_err(failed)?
                        .into_inner()
                        .reassignments
                        .into_iter()
                        .filter(|o| moved.contains(&(o.topic.clone(), o.partition)))
                        .collect();
                    if ongoing.is_empty() {
                        break;
                    }
                    if std::time::Instant::now() >= deadline {
                        bail!(
                            "timed out with {} partitions still moving; `strata reassign list` shows them",
                            ongoing.len()
                        );
                    }
                    if !target.json {
                        println!(
                            "{} of {} partitions still moving",
                            ongoing.len(),
                            moved.len()
                        );
                        ongoing_table(&ongoing);
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                if !target.json {
                    println!("done: every partition is on its new replicas");
                }
            }
            Ok(())
        }
        ReassignCommand::List => {
            let ongoing = client
                .list_reassignments(ListReassignmentsRequest {})
                .await
                .map_err(failed)?
                .into_inner()
                .reassignments;
            if target.json {
                return print_json(&ongoing);
            }
            if ongoing.is_empty() {
                println!("no reassignment in progress");
            } else {
                ongoing_table(&ongoing);
            }
            Ok(())
        }
        ReassignCommand::Cancel { partitions } => {
            let partitions = partitions
                .iter()
                .map(|p| {
                    let PartitionRef { topic, partition } = partition_ref(p)?;
                    Ok(PartitionReassignment {
                        topic,
                        partition,
                        replicas: Vec::new(),
                        cancel: true,
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let answer = client
                .reassign_partitions(ReassignPartitionsRequest {
                    partitions,
                    allow_replication_factor_change: true,
                })
                .await
                .map_err(failed)?
                .into_inner();
            report(target, &answer.results, "cancelled")
        }
    }
}

/// `strata elect-leaders [--unclean] (--partition TOPIC/PARTITION ... | --all-partitions)`.
pub async fn elect_leaders(
    target: &Target,
    unclean: bool,
    partitions: Vec<String>,
    all_partitions: bool,
) -> anyhow::Result<()> {
    let partitions = partitions
        .iter()
        .map(|p| partition_ref(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let answer = connect(&target.admin)
        .await?
        .elect_leaders(ElectLeadersRequest {
            unclean,
            partitions,
            all_partitions,
        })
        .await
        .map_err(failed)?
        .into_inner();
    if all_partitions && answer.results.is_empty() && !target.json {
        println!("every partition already has the leader an election would choose");
        return Ok(());
    }
    report(target, &answer.results, "elected")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_and_partitions_parse_and_bad_ones_say_why() {
        let m = planned_move("orders/3=2,1").expect("parses");
        assert_eq!(
            (m.topic.as_str(), m.partition, m.replicas),
            ("orders", 3, vec![2, 1])
        );
        for bad in ["orders/3", "orders=1", "orders/x=1", "orders/3=1,a"] {
            assert!(planned_move(bad).is_err(), "{bad}");
        }
        let plan: Plan = serde_json::from_str(
            r#"{"version":1,"partitions":[{"topic":"t","partition":0,"replicas":[1,2],"log_dirs":["any","any"]}]}"#,
        )
        .expect("kafka-reassign-partitions' format");
        assert_eq!(plan.partitions[0].replicas, vec![1, 2]);
    }
}
