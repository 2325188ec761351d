//! `strata rebalance`: spreads replicas and preferred leaders evenly over the live brokers
//! that are not draining (after adding brokers, say), moving as few replicas as it can,
//! then runs the moves as reassignments in bounded batches, optionally throttled, and
//! ends with a preferred leader election.
//!
//! The plan ([`plan`]) is greedy: while some broker holds two or more replicas more than
//! another, one replica of the most loaded broker moves to the broker topic creation
//! would pick to replace it (`cluster::placement::replacement`: a rack the partition's
//! other replicas do not use, then the least loaded), as long as that lowers the spread
//! and keeps the partition in as many racks; of the replicas it could move, one of the
//! topic it holds most of (and the receiver least of) goes first, so each topic is spread
//! too. Then preferred leadership (the first replica) is spread the same way by
//! reordering replica lists, which moves no data. Each step evens the load strictly, so
//! the plan ends; a balanced cluster gives an empty plan. Partitions being moved already, or with a replica on a broker that is down or
//! draining, are left alone.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use anyhow::bail;
use serde::Serialize;
use strata_broker::cluster::BrokerInfo;
use strata_broker::cluster::placement;
use strata_proto::admin::{
    AlterBrokerConfigsRequest, ClusterStatusRequest, ElectLeadersRequest, ListReassignmentsRequest,
    ListTopicsRequest, PartitionReassignment, ReassignPartitionsRequest,
};

use super::{Target, connect, failed, ids, print_json, table};

/// Kafka's names of the dynamic broker configs `--throttle` sets.
const THROTTLE_CONFIGS: [&str; 2] = [
    "leader.replication.throttled.rate",
    "follower.replication.throttled.rate",
];

#[derive(clap::Args)]
pub struct RebalanceArgs {
    /// Print the plan (and write it with --plan-file) without moving anything.
    #[arg(long)]
    dry_run: bool,
    /// Write the plan as kafka-reassign-partitions JSON (`strata reassign start --file`
    /// reads it).
    #[arg(long, value_name = "FILE")]
    plan_file: Option<std::path::PathBuf>,
    /// Partitions moving at once; the next start as these complete.
    #[arg(long, value_name = "N", default_value_t = 10)]
    max_moves: usize,
    /// Bound the catch-up of the replicas being added, in bytes per second per broker
    /// (the dynamic broker configs leader. and follower.replication.throttled.rate, as a
    /// cluster default); the cluster default's earlier rates (or none) are put back once
    /// every move is done, or when the run is interrupted. With nothing to move, a
    /// throttle of this rate left by an earlier run is removed.
    #[arg(long, value_name = "BYTES_PER_SEC")]
    throttle: Option<u64>,
    /// Give up waiting (exit 1) after this long; moves under way go on, and a throttle
    /// stays set until `strata rebalance --clear-throttle`.
    #[arg(long, value_name = "MS", default_value_t = 3_600_000)]
    timeout_ms: u64,
    /// Skip the preferred leader election at the end (leaders then move when
    /// `leader_rebalance_interval_ms` next runs, if it is on).
    #[arg(long)]
    no_leader_election: bool,
    /// Only remove the cluster-default throttle rates (a previous `--throttle` left them
    /// set after a timeout), then exit.
    #[arg(long, conflicts_with_all = ["dry_run", "throttle"])]
    clear_throttle: bool,
}

/// A partition's placement, as the plan sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub topic: String,
    pub partition: i32,
    /// The preferred leader first.
    pub replicas: Vec<i32>,
}

/// One partition's change: `target` replaces `current` (the same brokers reordered when
/// only the preferred leader changes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Move {
    pub topic: String,
    pub partition: i32,
    pub current: Vec<i32>,
    pub target: Vec<i32>,
}

impl Move {
    /// Replicas that must be copied to a new broker.
    pub fn added(&self) -> usize {
        self.target
            .iter()
            .filter(|r| !self.current.contains(r))
            .count()
    }
}

fn rack_count(brokers: &[BrokerInfo], replicas: &[i32]) -> usize {
    replicas
        .iter()
        .map(|id| {
            brokers
                .iter()
                .find(|b| b.node_id == *id)
                .and_then(|b| b.rack.clone())
        })
        .collect::<BTreeSet<_>>()
        .len()
}

/// The moves that even out replicas, then preferred leaders, over `brokers` (live, not
/// draining). `partitions` are those the plan may change.
pub fn plan(brokers: &[BrokerInfo], partitions: &[Placement]) -> Vec<Move> {
    if brokers.is_empty() {
        return Vec::new();
    }
    let mut placed: Vec<Vec<i32>> = partitions.iter().map(|p| p.replicas.clone()).collect();
    let mut topics: HashMap<&str, usize> = HashMap::new();
    let topic_of: Vec<usize> = partitions
        .iter()
        .map(|p| {
            let next = topics.len();
            *topics.entry(p.topic.as_str()).or_insert(next)
        })
        .collect();
    spread_replicas(brokers, &mut placed, &topic_of);
    spread_leaders(brokers, &mut placed);
    partitions
        .iter()
        .zip(placed)
        .filter(|(p, target)| p.replicas != *target)
        .map(|(p, target)| Move {
            topic: p.topic.clone(),
            partition: p.partition,
            current: p.replicas.clone(),
            target,
        })
        .collect()
}

fn load_of(
    brokers: &[BrokerInfo],
    placed: &[Vec<i32>],
    leaders_only: bool,
) -> BTreeMap<i32, usize> {
    let mut load: BTreeMap<i32, usize> = brokers.iter().map(|b| (b.node_id, 0)).collect();
    for replicas in placed {
        let counted = if leaders_only {
            &replicas[..replicas.len().min(1)]
        } else {
            &replicas[..]
        };
        for r in counted {
            if let Some(n) = load.get_mut(r) {
                *n += 1;
            }
        }
    }
    load
}

/// Moves replicas off the most loaded brokers until no move lowers the spread. Of the
/// replicas the most loaded broker could give away, the one whose topic it holds most of
/// and the receiving broker least of goes first (a follower before a leader), so that
/// each topic, not only the total, ends up spread.
fn spread_replicas(brokers: &[BrokerInfo], placed: &mut [Vec<i32>], topic_of: &[usize]) {
    let mut load = load_of(brokers, placed, false);
    let mut per_topic: HashMap<(usize, i32), i64> = HashMap::new();
    for (replicas, &topic) in placed.iter().zip(topic_of) {
        for &r in replicas {
            *per_topic.entry((topic, r)).or_default() += 1;
        }
    }
    // Brokers none of whose replicas can move any more.
    let mut stuck: BTreeSet<i32> = BTreeSet::new();
    loop {
        let Some((&over, &most)) = load
            .iter()
            .filter(|(id, _)| !stuck.contains(id))
            .max_by_key(|(id, n)| (**n, std::cmp::Reverse(**id)))
        else {
            return;
        };
        let least = load.values().copied().min().unwrap_or(0);
        if most <= least + 1 {
            return;
        }
        let chosen = placed
            .iter()
            .enumerate()
            .filter_map(|(i, replicas)| {
                let position = replicas.iter().position(|&r| r == over)?;
                let to = placement::move_target(brokers, replicas, over, &load)?;
                let improves = load.get(&to).copied().unwrap_or(usize::MAX) + 1 < most;
                let mut next = replicas.clone();
                next[position] = to;
                let keeps_racks = rack_count(brokers, &next) >= rack_count(brokers, replicas);
                let topic = topic_of[i];
                let skew = per_topic.get(&(topic, to)).copied().unwrap_or(0)
                    - per_topic.get(&(topic, over)).copied().unwrap_or(0);
                (improves && keeps_racks).then_some(((skew, position == 0, i), to, next))
            })
            .min_by_key(|(key, _, _)| *key);
        match chosen {
            Some(((_, _, i), to, next)) => {
                // A broker that had nothing to give may have now: the loads changed.
                stuck.clear();
                placed[i] = next;
                *load.entry(over).or_default() -= 1;
                *load.entry(to).or_default() += 1;
                *per_topic.entry((topic_of[i], over)).or_default() -= 1;
                *per_topic.entry((topic_of[i], to)).or_default() += 1;
            }
            None => {
                stuck.insert(over);
            }
        }
    }
}

/// Reorders replica lists so that each broker is the preferred leader of an even share.
fn spread_leaders(brokers: &[BrokerInfo], placed: &mut [Vec<i32>]) {
    let mut leaders = load_of(brokers, placed, true);
    let mut stuck: BTreeSet<i32> = BTreeSet::new();
    loop {
        let Some((&over, &most)) = leaders
            .iter()
            .filter(|(id, _)| !stuck.contains(id))
            .max_by_key(|(id, n)| (**n, std::cmp::Reverse(**id)))
        else {
            return;
        };
        // The partition led by `over` whose least-leading other replica leads fewest.
        let chosen = placed
            .iter()
            .enumerate()
            .filter(|(_, replicas)| replicas.first() == Some(&over))
            .filter_map(|(i, replicas)| {
                replicas
                    .iter()
                    .enumerate()
                    .skip(1)
                    .filter_map(|(position, r)| leaders.get(r).map(|n| (*n, position)))
                    .min()
                    .map(|(n, position)| (n, i, position))
            })
            .min()
            .filter(|(n, _, _)| n + 1 < most);
        match chosen {
            Some((_, i, position)) => {
                let to = placed[i][position];
                placed[i].swap(0, position);
                *leaders.entry(over).or_default() -= 1;
                *leaders.entry(to).or_default() += 1;
            }
            None => {
                stuck.insert(over);
            }
        }
    }
}

/// kafka-reassign-partitions' plan format.
#[derive(Serialize)]
struct PlanFile<'a> {
    version: u32,
    partitions: Vec<PlanFileEntry<'a>>,
}

#[derive(Serialize)]
struct PlanFileEntry<'a> {
    topic: &'a str,
    partition: i32,
    replicas: &'a [i32],
}

fn write_plan_file(path: &std::path::Path, moves: &[Move]) -> anyhow::Result<()> {
    let file = PlanFile {
        version: 1,
        partitions: moves
            .iter()
            .map(|m| PlanFileEntry {
                topic: &m.topic,
                partition: m.partition,
                replicas: &m.target,
            })
            .collect(),
    };
    let text = serde_json::to_string_pretty(&file)?;
    std::fs::write(path, text + "\n")
        .map_err(|e| anyhow::anyhow!("write the plan to {}: {e}", path.display()))
}

/// What the cluster looks like to the planner: the brokers that may hold replicas, the
/// partitions it may move, and how many it leaves alone.
struct Snapshot {
    brokers: Vec<BrokerInfo>,
    partitions: Vec<Placement>,
    left_alone: usize,
}

async fn snapshot(client: &mut super::Client) -> anyhow::Result<Snapshot> {
    let status = client
        .cluster_status(ClusterStatusRequest {})
        .await
        .map_err(failed)?
        .into_inner();
    let brokers: Vec<BrokerInfo> = status
        .brokers
        .iter()
        .filter(|b| !b.draining)
        .map(|b| BrokerInfo {
            node_id: b.node_id,
            host: b.host.clone(),
            port: b.port,
            rack: (!b.rack.is_empty()).then(|| b.rack.clone()),
            replication: String::new(),
            admin: b.admin.clone(),
            listeners: Vec::new(),
            principal: String::new(),
        })
        .collect();
    let moving: BTreeSet<(String, i32)> = client
        .list_reassignments(ListReassignmentsRequest {})
        .await
        .map_err(failed)?
        .into_inner()
        .reassignments
        .into_iter()
        .map(|r| (r.topic, r.partition))
        .collect();
    let topics = client
        .list_topics(ListTopicsRequest {})
        .await
        .map_err(failed)?
        .into_inner()
        .topics;
    let eligible: BTreeSet<i32> = brokers.iter().map(|b| b.node_id).collect();
    let mut partitions = Vec::new();
    let mut left_alone = 0;
    for topic in topics {
        for p in topic.partitions {
            // Diskless partitions have no replicas: nothing to place.
            if p.replicas.is_empty() {
                continue;
            }
            let movable = !moving.contains(&(topic.name.clone(), p.index))
                && p.removing.is_empty()
                && p.replicas.iter().all(|r| eligible.contains(r));
            if movable {
                partitions.push(Placement {
                    topic: topic.name.clone(),
                    partition: p.index,
                    replicas: p.replicas,
                });
            } else {
                left_alone += 1;
            }
        }
    }
    partitions.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    Ok(Snapshot {
        brokers,
        partitions,
        left_alone,
    })
}

fn print_plan(snapshot: &Snapshot, moves: &[Move]) {
    let rows = moves
        .iter()
        .map(|m| {
            vec![
                m.topic.clone(),
                m.partition.to_string(),
                ids(&m.current),
                ids(&m.target),
                if m.added() == 0 {
                    "leader order".to_string()
                } else {
                    format!("{} replica(s)", m.added())
                },
            ]
        })
        .collect();
    table(&["TOPIC", "PARTITION", "CURRENT", "TARGET", "MOVES"], rows);
    let before: Vec<Vec<i32>> = snapshot
        .partitions
        .iter()
        .map(|p| p.replicas.clone())
        .collect();
    let mut after = before.clone();
    let index: HashMap<(&str, i32), usize> = snapshot
        .partitions
        .iter()
        .enumerate()
        .map(|(i, p)| ((p.topic.as_str(), p.partition), i))
        .collect();
    for m in moves {
        if let Some(&i) = index.get(&(m.topic.as_str(), m.partition)) {
            after[i] = m.target.clone();
        }
    }
    let (replicas_before, replicas_after) = (
        load_of(&snapshot.brokers, &before, false),
        load_of(&snapshot.brokers, &after, false),
    );
    let (leaders_before, leaders_after) = (
        load_of(&snapshot.brokers, &before, true),
        load_of(&snapshot.brokers, &after, true),
    );
    println!();
    let rows = snapshot
        .brokers
        .iter()
        .map(|b| {
            let id = b.node_id;
            vec![
                id.to_string(),
                b.rack.clone().unwrap_or_default(),
                format!("{} -> {}", replicas_before[&id], replicas_after[&id]),
                format!("{} -> {}", leaders_before[&id], leaders_after[&id]),
            ]
        })
        .collect();
    table(&["NODE", "RACK", "REPLICAS", "PREFERRED LEADERS"], rows);
}

/// Sets the throttle rates as the cluster default; returns the values they replaced
/// (absent: none) and the brokers whose own rates beat the cluster default.
async fn set_throttle(
    client: &mut super::Client,
    rate: u64,
) -> anyhow::Result<(HashMap<String, String>, Vec<i32>)> {
    let request = AlterBrokerConfigsRequest {
        node_id: -1,
        set: THROTTLE_CONFIGS
            .iter()
            .map(|name| (name.to_string(), rate.to_string()))
            .collect(),
        remove: Vec::new(),
    };
    let answer = client
        .alter_broker_configs(request)
        .await
        .map_err(failed)?
        .into_inner();
    Ok((answer.previous, answer.overridden_on))
}

/// Puts the cluster-default throttle rates back to `previous` (removes those it lacks);
/// returns the values this replaced.
async fn restore_throttle(
    client: &mut super::Client,
    previous: &HashMap<String, String>,
) -> anyhow::Result<HashMap<String, String>> {
    let request = AlterBrokerConfigsRequest {
        node_id: -1,
        set: previous.clone(),
        remove: THROTTLE_CONFIGS
            .iter()
            .filter(|name| !previous.contains_key(**name))
            .map(|n| n.to_string())
            .collect(),
    };
    let answer = client
        .alter_broker_configs(request)
        .await
        .map_err(failed)?
        .into_inner();
    Ok(answer.previous)
}

fn describe_restored(previous: &HashMap<String, String>) -> String {
    if previous.is_empty() {
        "replication throttle cleared".to_string()
    } else {
        let mut values: Vec<String> = previous.iter().map(|(k, v)| format!("{k}={v}")).collect();
        values.sort();
        format!(
            "replication throttle cleared; the cluster default's earlier rates are back: {}",
            values.join(", ")
        )
    }
}

/// Ctrl-C, or the session ending (SIGHUP, SIGTERM: a dropped `kubectl exec`, say).
async fn interrupted() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut hangup), Ok(mut terminate)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
    ) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = hangup.recv() => {}
        _ = terminate.recv() => {}
    }
}

/// Errors worth trying again: the admin endpoint restarting, a leader or the controller
/// moving, the metadata store briefly away.
fn transient(status: &tonic::Status) -> bool {
    use tonic::Code;
    matches!(
        status.code(),
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Aborted
            | Code::ResourceExhausted
            | Code::Unknown
            | Code::Internal
    )
}

#[derive(Serialize)]
struct Outcome {
    moved: usize,
    refused: Vec<String>,
    leaders_elected: usize,
}

pub async fn rebalance(target: &Target, args: RebalanceArgs) -> anyhow::Result<()> {
    let mut client = connect(&target.admin).await?;
    if args.clear_throttle {
        restore_throttle(&mut client, &HashMap::new()).await?;
        println!("replication throttle cleared");
        return Ok(());
    }
    if args.max_moves == 0 {
        bail!("--max-moves must be at least 1");
    }
    if args.throttle == Some(0) {
        bail!("--throttle must be at least 1 byte per second");
    }
    let snapshot = snapshot(&mut client).await?;
    let moves = plan(&snapshot.brokers, &snapshot.partitions);
    if let Some(path) = &args.plan_file {
        write_plan_file(path, &moves)?;
    }
    if args.dry_run {
        if target.json {
            return print_json(&moves);
        }
        if snapshot.left_alone > 0 {
            println!(
                "{} partition(s) left alone: being moved already, or with a replica on a broker that is down or draining",
                snapshot.left_alone
            );
        }
        if moves.is_empty() {
            println!("the cluster is balanced: nothing to move");
        } else {
            print_plan(&snapshot, &moves);
        }
        return Ok(());
    }
    if !target.json {
        if moves.is_empty() {
            println!("the cluster is balanced: nothing to move");
        } else {
            println!(
                "{} partition(s) to change, {} replica(s) to copy",
                moves.len(),
                moves.iter().map(Move::added).sum::<usize>()
            );
        }
    }
    // The cluster-default rates this run replaced, put back at the end.
    let mut replaced: Option<HashMap<String, String>> = None;
    if let Some(rate) = args.throttle {
        let (previous, overridden_on) = set_throttle(&mut client, rate).await?;
        if moves.is_empty() {
            // Nothing to move: a throttle of this rate left by an earlier run that timed
            // out or was interrupted is not needed any more; a rate someone else set stays.
            let leftover = |v: &String| v == &rate.to_string();
            let keep: HashMap<String, String> =
                previous.into_iter().filter(|(_, v)| !leftover(v)).collect();
            restore_throttle(&mut client, &keep).await?;
            if !target.json {
                println!("{}", describe_restored(&keep));
            }
        } else {
            if !overridden_on.is_empty() {
                eprintln!(
                    "strata: broker(s) {} have their own replication throttle rate, which beats the cluster default: --throttle does not change it there (`kafka-configs --entity-type brokers --entity-name ID --describe` shows it)",
                    ids(&overridden_on)
                );
            }
            if !target.json {
                println!("replication throttle set to {rate} bytes/s per broker");
            }
            replaced = Some(previous);
        }
    }
    let outcome = tokio::select! {
        outcome = run_moves(&mut client, target, &args, &moves) => Some(outcome),
        _ = interrupted() => None,
    };
    let outcome = match outcome {
        Some(Ok(outcome)) => outcome,
        None => {
            // The moves under way go on unthrottled: a throttle left behind would slow
            // whatever catch-up comes later (a drain, say), with no one to clear it.
            if let Some(previous) = &replaced {
                match restore_throttle(&mut client, previous).await {
                    Ok(_) => eprintln!("strata: {}", describe_restored(previous)),
                    Err(e) => eprintln!(
                        "strata: clearing the replication throttle failed ({e}); `strata rebalance --clear-throttle` removes it"
                    ),
                }
            }
            bail!(
                "interrupted: the moves submitted go on, unthrottled (`strata reassign list` shows them); the rest were not submitted"
            );
        }
        Some(Err(e)) => {
            if replaced.is_some() {
                eprintln!(
                    "strata: the replication throttle stays set while moves are under way; `strata rebalance --clear-throttle` removes it"
                );
            }
            return Err(e);
        }
    };
    if let Some(previous) = &replaced {
        restore_throttle(&mut client, previous).await?;
        if !target.json {
            println!("{}", describe_restored(previous));
        }
    }
    let mut elected = 0;
    if !args.no_leader_election {
        let answer = client
            .elect_leaders(ElectLeadersRequest {
                unclean: false,
                partitions: Vec::new(),
                all_partitions: true,
            })
            .await
            .map_err(failed)?
            .into_inner();
        elected = answer.results.iter().filter(|r| r.error.is_empty()).count();
    }
    let outcome = Outcome {
        leaders_elected: elected,
        ..outcome
    };
    if target.json {
        print_json(&outcome)?;
    } else {
        println!(
            "done: {} partition(s) moved, {} refused, {} preferred leader(s) elected",
            outcome.moved,
            outcome.refused.len(),
            outcome.leaders_elected
        );
    }
    if !outcome.refused.is_empty() {
        bail!("refused: {}", outcome.refused.join("; "));
    }
    Ok(())
}

/// Submits `moves` at most `max_moves` at a time and waits for each to complete.
async fn run_moves(
    client: &mut super::Client,
    target: &Target,
    args: &RebalanceArgs,
    moves: &[Move],
) -> anyhow::Result<Outcome> {
    let deadline = Instant::now() + Duration::from_millis(args.timeout_ms);
    let mut waiting: std::collections::VecDeque<&Move> = moves.iter().collect();
    let mut in_flight: BTreeSet<(String, i32)> = BTreeSet::new();
    let mut outcome = Outcome {
        moved: 0,
        refused: Vec::new(),
        leaders_elected: 0,
    };
    let total = moves.len();
    // A transient failure (the broker answering restarts, the controller moves) is
    // retried until the deadline: giving up would leave the queued moves unsubmitted and
    // the throttle set.
    let retry = |what: &str, status: tonic::Status| -> anyhow::Result<()> {
        if transient(&status) && Instant::now() < deadline {
            eprintln!("strata: {what} failed ({}); trying again", status.message());
            Ok(())
        } else {
            Err(failed(status))
        }
    };
    loop {
        let room = args.max_moves.saturating_sub(in_flight.len());
        let batch: Vec<&Move> = (0..room).map_while(|_| waiting.pop_front()).collect();
        if !batch.is_empty() {
            let answer = client
                .reassign_partitions(ReassignPartitionsRequest {
                    partitions: batch
                        .iter()
                        .map(|m| PartitionReassignment {
                            topic: m.topic.clone(),
                            partition: m.partition,
                            replicas: m.target.clone(),
                            cancel: false,
                        })
                        .collect(),
                    allow_replication_factor_change: false,
                })
                .await;
            match answer {
                Ok(answer) => {
                    for r in answer.into_inner().results {
                        if r.error.is_empty() {
                            in_flight.insert((r.topic, r.partition));
                        } else {
                            outcome.refused.push(format!(
                                "{}/{}: {}: {}",
                                r.topic, r.partition, r.error, r.message
                            ));
                        }
                    }
                }
                Err(status) => {
                    retry("submitting moves", status)?;
                    // The request may have been carried out before the answer was lost:
                    // the moves the listing below shows under way count as submitted,
                    // the rest are submitted again.
                    for m in batch.into_iter().rev() {
                        waiting.push_front(m);
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        let ongoing: Vec<_> = match client.list_reassignments(ListReassignmentsRequest {}).await {
            Ok(answer) => answer.into_inner().reassignments,
            Err(status) => {
                retry("listing the moves under way", status)?;
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        waiting.retain(|m| {
            // The plan leaves out partitions moving already, so a move of one of its
            // partitions under way is one this run submitted.
            let under_way = ongoing
                .iter()
                .any(|o| o.topic == m.topic && o.partition == m.partition);
            if under_way {
                in_flight.insert((m.topic.clone(), m.partition));
            }
            !under_way
        });
        let ongoing: Vec<_> = ongoing
            .into_iter()
            .filter(|o| in_flight.contains(&(o.topic.clone(), o.partition)))
            .collect();
        let still: BTreeSet<(String, i32)> = ongoing
            .iter()
            .map(|o| (o.topic.clone(), o.partition))
            .collect();
        outcome.moved += in_flight.difference(&still).count();
        in_flight = still;
        let queued = total - outcome.moved - outcome.refused.len() - in_flight.len();
        if !target.json {
            let catching_up: Vec<String> = ongoing
                .iter()
                .map(|o| {
                    let in_sync = o.adding.iter().filter(|r| o.isr.contains(r)).count();
                    format!(
                        "{}/{} ({in_sync}/{} new in sync)",
                        o.topic,
                        o.partition,
                        o.adding.len()
                    )
                })
                .collect();
            println!(
                "{} of {total} partitions done, {} moving, {queued} queued{}{}",
                outcome.moved + outcome.refused.len(),
                in_flight.len(),
                if catching_up.is_empty() { "" } else { ": " },
                catching_up.join(", ")
            );
        }
        if in_flight.is_empty() && queued == 0 {
            return Ok(outcome);
        }
        if queued > 0 && in_flight.len() < args.max_moves {
            continue; // moves completed: start the next at once
        }
        if Instant::now() >= deadline {
            bail!(
                "timed out with {} partition(s) moving and {queued} not started; `strata reassign list` shows those moving",
                in_flight.len()
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(id: i32, rack: Option<&str>) -> BrokerInfo {
        BrokerInfo {
            node_id: id,
            host: "127.0.0.1".into(),
            port: 9092,
            rack: rack.map(str::to_string),
            replication: String::new(),
            admin: String::new(),
            listeners: Vec::new(),
            principal: String::new(),
        }
    }

    /// Partitions as topic creation placed them on `brokers`.
    fn created(brokers: &[BrokerInfo], topic: &str, count: usize, rf: usize) -> Vec<Placement> {
        placement::assign(brokers, count, rf, topic.len())
            .expect("enough brokers")
            .into_iter()
            .enumerate()
            .map(|(i, replicas)| Placement {
                topic: topic.into(),
                partition: i as i32,
                replicas,
            })
            .collect()
    }

    fn apply(partitions: &[Placement], moves: &[Move]) -> Vec<Placement> {
        partitions
            .iter()
            .map(|p| {
                let moved = moves
                    .iter()
                    .find(|m| m.topic == p.topic && m.partition == p.partition);
                Placement {
                    replicas: moved.map_or(p.replicas.clone(), |m| m.target.clone()),
                    ..p.clone()
                }
            })
            .collect()
    }

    fn spread(brokers: &[BrokerInfo], partitions: &[Placement], leaders: bool) -> (usize, usize) {
        let placed: Vec<Vec<i32>> = partitions.iter().map(|p| p.replicas.clone()).collect();
        let load = load_of(brokers, &placed, leaders);
        (
            load.values().copied().min().unwrap_or(0),
            load.values().copied().max().unwrap_or(0),
        )
    }

    #[test]
    fn a_new_broker_gets_a_fair_share_with_few_moves_and_a_second_plan_is_empty() {
        let three = [broker(1, None), broker(2, None), broker(3, None)];
        let mut partitions = created(&three, "orders", 6, 3);
        partitions.extend(created(&three, "events", 6, 2));
        // 30 replicas and 12 leaders over four brokers.
        let four = [
            broker(1, None),
            broker(2, None),
            broker(3, None),
            broker(4, None),
        ];
        let moves = plan(&four, &partitions);
        let after = apply(&partitions, &moves);
        assert_eq!(spread(&four, &after, false), (7, 8), "{moves:?}");
        assert_eq!(spread(&four, &after, true), (3, 3), "{moves:?}");
        let copied: usize = moves.iter().map(Move::added).sum();
        assert!(
            copied <= 8,
            "copies {copied} replicas; 7 or 8 reach broker 4"
        );
        for m in &moves {
            let set: BTreeSet<_> = m.target.iter().collect();
            assert_eq!(set.len(), m.target.len(), "no broker twice in {m:?}");
            assert_eq!(m.target.len(), m.current.len(), "same replication factor");
        }
        assert!(plan(&four, &after).is_empty(), "idempotent");
        // Each topic is spread too: broker 4 gets replicas of both.
        for topic in ["orders", "events"] {
            let of_topic: Vec<Placement> =
                after.iter().filter(|p| p.topic == topic).cloned().collect();
            let (least, most) = spread(&four, &of_topic, false);
            assert!(
                most - least <= 2,
                "{topic}: {least}..{most} replicas per broker"
            );
        }
    }

    #[test]
    fn moves_keep_partitions_across_racks() {
        let before = [broker(1, Some("a")), broker(2, Some("b"))];
        let partitions = created(&before, "t", 8, 2);
        let after_brokers = [
            broker(1, Some("a")),
            broker(2, Some("b")),
            broker(3, Some("a")),
            broker(4, Some("b")),
        ];
        let moves = plan(&after_brokers, &partitions);
        assert!(!moves.is_empty());
        let after = apply(&partitions, &moves);
        for p in &after {
            assert_eq!(rack_count(&after_brokers, &p.replicas), 2, "{p:?}");
        }
        assert_eq!(spread(&after_brokers, &after, false), (4, 4));
    }

    #[test]
    fn with_racks_one_run_balances_and_a_second_is_empty() {
        // A replica may go to a broker in its own rack: the leaving replica's rack is
        // free. Counting it as used sent every candidate to the other rack, the rack
        // check refused, and the most loaded broker was given up on.
        let four = [
            broker(1, Some("a")),
            broker(2, Some("a")),
            broker(3, Some("b")),
            broker(4, Some("b")),
        ];
        let partitions = created(&four, "t", 24, 2);
        let mut six = four.to_vec();
        six.extend([broker(5, Some("a")), broker(6, Some("b"))]);
        let moves = plan(&six, &partitions);
        let after = apply(&partitions, &moves);
        assert_eq!(spread(&six, &after, false), (8, 8), "{moves:?}");
        for p in &after {
            assert_eq!(rack_count(&six, &p.replicas), 2, "{p:?}");
        }
        let again = plan(&six, &after);
        assert!(again.is_empty(), "a second run moves {again:?}");
    }

    #[test]
    fn a_balanced_cluster_and_a_single_broker_need_no_moves() {
        let three = [broker(1, None), broker(2, None), broker(3, None)];
        let partitions = created(&three, "t", 9, 2);
        assert!(plan(&three, &partitions).is_empty());
        let one = [broker(1, None)];
        assert!(plan(&one, &created(&one, "t", 3, 1)).is_empty());
        assert!(plan(&[], &partitions).is_empty());
    }
}
