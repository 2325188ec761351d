//! The follower's side of replication: one fetch loop per leader this broker follows,
//! fetching every partition it follows there in one long-poll request.
//!
//! [`run`] starts a loop for each leader that appears in the partitions' replica state;
//! a loop ends when it has no partition left to fetch (leadership moved).
//!
//! Partitions where this broker is a replica being added, not in sync yet and below the
//! leader's high watermark go through the follower's replication throttle
//! ([`super::throttle`]): while it holds they are left out of the request.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use strata_proto::replication::replication_client::ReplicationClient;
use strata_proto::replication::{FetchRequest, PartitionData, PartitionError, PartitionFetch};
use tonic::transport::{Channel, Endpoint};
use tracing::{debug, info, warn};

use super::ReplicaHost;
use super::throttle::Reservation;
use crate::partition::Partition;
use crate::supervise::Supervisor;

/// Pause after an error before the next fetch from the same leader.
const BACKOFF: Duration = Duration::from_millis(200);

/// Starts and reaps fetch loops as leadership changes; runs until shutdown. Each fetch
/// loop is supervised on its own (task `replication_fetch`), so a panic while applying one
/// leader's data is restarted with a backoff instead of respawned every tick.
pub async fn run(broker: Arc<dyn ReplicaHost>, supervisor: Arc<Supervisor>) {
    let mut loops = Loops(HashMap::new());
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = broker.shutdown().cancelled() => break,
            _ = ticker.tick() => {}
        }
        loops.0.retain(|_, handle| !handle.is_finished());
        let leaders: HashSet<i32> = followed(&*broker).into_iter().map(|f| f.leader).collect();
        for leader in leaders {
            loops.0.entry(leader).or_insert_with(|| {
                let broker = broker.clone();
                supervisor.spawn_instance(
                    "replication_fetch",
                    Some(format!("leader {leader}")),
                    move || fetch_loop(broker.clone(), leader),
                )
            });
        }
    }
}

/// The fetch loops `run` started, by leader; aborted when `run` ends, however it ends, so
/// a restarted `run` never leaves its predecessor's loops fetching beside its own.
struct Loops(HashMap<i32, tokio::task::JoinHandle<()>>);

impl Drop for Loops {
    fn drop(&mut self) {
        for handle in self.0.values() {
            handle.abort();
        }
    }
}

/// A partition this broker follows, where it stands.
struct Followed {
    partition: Arc<Partition>,
    topic_id: uuid::Uuid,
    leader: i32,
    epoch: i32,
    fetch_offset: i64,
    last_fetched_epoch: i32,
    /// This broker is a replica being added, not in sync yet: its fetches are throttled.
    catching_up: bool,
}

fn followed(broker: &dyn ReplicaHost) -> Vec<Followed> {
    let mut out = Vec::new();
    for (topic_id, partition) in broker.partitions_with_topic_ids() {
        {
            if let Some((leader, epoch, fetch_offset, last_fetched_epoch)) =
                partition.follower_position()
                && leader != broker.config().node_id
            {
                out.push(Followed {
                    catching_up: partition.catching_up(broker.config().node_id),
                    partition: partition.clone(),
                    topic_id,
                    leader,
                    epoch,
                    fetch_offset,
                    last_fetched_epoch,
                });
            }
        }
    }
    out
}

pub(crate) async fn connect(
    broker: &dyn ReplicaHost,
    leader: i32,
) -> Option<ReplicationClient<Channel>> {
    let address = broker.replication_address(leader)?;
    // Read at each connect, so a rotated certificate is used from the next connection.
    let tls = match crate::security::grpc::replication_client_tls(broker.config()) {
        Ok(tls) => tls,
        Err(e) => {
            warn!(leader, error = %e, "cannot load the replication client certificate");
            return None;
        }
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{address}"))
        .ok()?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true);
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).ok()?;
    }
    match endpoint.connect().await {
        Ok(channel) => Some(
            ReplicationClient::new(channel)
                .max_decoding_message_size(super::response_limit(broker.config()))
                .max_encoding_message_size(4 << 20),
        ),
        Err(e) => {
            debug!(leader, %address, error = %e, "cannot reach the leader for replication");
            None
        }
    }
}

async fn fetch_loop(broker: Arc<dyn ReplicaHost>, leader: i32) {
    let mut client: Option<ReplicationClient<Channel>> = None;
    let wait_ms = broker.config().replica_fetch_wait_max_ms as u32;
    let max_bytes = broker.config().replica_fetch_max_bytes as u32;
    info!(leader, "replicating from a leader");
    let mut rotation = 0usize;
    // The leader answered a fetch on the current connection.
    let mut answered = false;
    // The leader's high watermark of each partition, from its last answer: a replica
    // being added that has reached it is not throttled (see `super::throttle`).
    let mut leader_high_watermarks: HashMap<(uuid::Uuid, i32), i64> = HashMap::new();
    // When each throttled partition last got a reservation (a count of grants).
    let mut last_granted: HashMap<(uuid::Uuid, i32), u64> = HashMap::new();
    let mut grants = 0u64;
    while !broker.shutdown().is_cancelled() {
        let mut partitions: Vec<Followed> = followed(&*broker)
            .into_iter()
            .filter(|f| f.leader == leader)
            .collect();
        if partitions.is_empty() {
            break;
        }
        // The leader fills its byte budget in request order: start each request at a
        // different partition so a busy one cannot starve the rest.
        rotation = rotation.wrapping_add(1);
        let len = partitions.len();
        partitions.rotate_left(rotation % len);
        if client.is_none() {
            client = connect(&*broker, leader).await;
            answered = false;
            if client.is_none() {
                // Never accepted: a refusal here may be a wrong address or a filter, not
                // a crash, so it is left to the leader's session.
                tokio::time::sleep(BACKOFF).await;
                continue;
            }
        }
        // Each throttled partition reserves what it may move, one at a time, so one
        // request cannot run the bucket into more debt than a reservation or so each.
        // The one granted longest ago asks first: a reservation of the whole rate leaves
        // the rest held, and the rotation alone can hand every grant to the same one.
        // Held partitions are left out. Unsettled reservations (a failed fetch) are given
        // back when `asked` is dropped.
        let throttle = &broker.replication_throttle().follower;
        let mut held: Option<Duration> = None;
        let mut asked: Vec<(Followed, Option<Reservation<'_>>, u32)> = Vec::with_capacity(len);
        let (mut throttled, unthrottled): (Vec<Followed>, Vec<Followed>) =
            partitions.into_iter().partition(|f| {
                f.catching_up
                    && leader_high_watermarks
                        .get(&(f.topic_id, f.partition.index))
                        .is_none_or(|&hw| f.fetch_offset < hw)
            });
        asked.extend(unthrottled.into_iter().map(|f| (f, None, max_bytes)));
        throttled.sort_by_key(|f| {
            last_granted
                .get(&(f.topic_id, f.partition.index))
                .copied()
                .unwrap_or(0)
        });
        for f in throttled {
            match throttle.reserve(max_bytes as usize, std::time::Instant::now()) {
                Ok(reserved) => {
                    grants += 1;
                    last_granted.insert((f.topic_id, f.partition.index), grants);
                    let limit = u32::try_from(reserved.granted()).unwrap_or(u32::MAX);
                    asked.push((f, Some(reserved), limit));
                }
                Err(wait) => held = Some(held.map_or(wait, |h| h.min(wait))),
            }
        }
        // Held partitions are looked at again when the throttle lifts, or sooner.
        let wait_ms = held.map_or(wait_ms, |h| {
            wait_ms.min(u32::try_from(h.as_millis()).unwrap_or(u32::MAX).max(1))
        });
        if asked.is_empty() {
            // Look again at least as often as a fetch would: leadership or the ISR may
            // change meanwhile.
            tokio::select! {
                _ = broker.shutdown().cancelled() => break,
                _ = tokio::time::sleep(Duration::from_millis(u64::from(wait_ms).max(10))) => continue,
            }
        }
        let request = FetchRequest {
            replica_id: broker.config().node_id,
            cluster_id: broker.cluster_id().to_string(),
            max_wait_ms: wait_ms,
            max_bytes,
            partitions: asked
                .iter()
                .map(|(f, _, max_bytes)| PartitionFetch {
                    topic_id: f.topic_id.as_bytes().to_vec().into(),
                    partition: f.partition.index,
                    current_leader_epoch: f.epoch,
                    fetch_offset: f.fetch_offset,
                    last_fetched_epoch: f.last_fetched_epoch,
                    max_bytes: *max_bytes,
                })
                .collect(),
        };
        let call = client
            .as_mut()
            .map(|c| c.fetch(request))
            .expect("connected above");
        let timeout = Duration::from_millis(u64::from(wait_ms)) + Duration::from_secs(5);
        let response = tokio::select! {
            _ = broker.shutdown().cancelled() => break,
            r = tokio::time::timeout(timeout, call) => r,
        };
        let response = match response {
            Ok(Ok(response)) => {
                answered = true;
                response.into_inner()
            }
            Ok(Err(status)) => {
                debug!(leader, %status, "replication fetch failed");
                client = None;
                // Only a leader that answered on this connection is checked: its listener
                // accepted, so a refusal now means it went away.
                if std::mem::take(&mut answered) {
                    broker.leader_unreachable(leader);
                }
                tokio::time::sleep(BACKOFF).await;
                continue;
            }
            Err(_) => {
                debug!(leader, "replication fetch timed out");
                client = None;
                continue;
            }
        };
        let mut backoff = false;
        let mut received: Vec<(String, u64)> = Vec::new();
        for data in response.partitions {
            let Some((f, reservation, _)) = asked.iter_mut().find(|(f, _, _)| {
                f.partition.index == data.partition
                    && f.topic_id.as_bytes()[..] == data.topic_id[..]
            }) else {
                continue;
            };
            if let Some(reserved) = reservation.take() {
                reserved.settle(data.records.len(), std::time::Instant::now());
            }
            if !data.records.is_empty() {
                received.push((f.partition.topic.clone(), data.records.len() as u64));
            }
            if data.error == PartitionError::None as i32 {
                leader_high_watermarks.insert((f.topic_id, f.partition.index), data.high_watermark);
            }
            backoff |= !apply(&*broker, f, data).await;
        }
        if !received.is_empty() {
            let received: Vec<(&str, u64)> =
                received.iter().map(|(t, b)| (t.as_str(), *b)).collect();
            broker.replicated_from(leader, &received);
        }
        if backoff {
            tokio::time::sleep(BACKOFF).await;
        }
    }
    info!(leader, "stopped replicating from a leader");
}

/// Applies one partition's answer; false if the loop should pause before fetching again.
async fn apply(broker: &dyn ReplicaHost, f: &Followed, data: PartitionData) -> bool {
    let now = broker.now_ms();
    let partition = &f.partition;
    let error = PartitionError::try_from(data.error).unwrap_or(PartitionError::StorageError);
    // The answer is for the position we asked from; if leadership or the log moved
    // meanwhile, drop it.
    if partition
        .follower_position()
        .is_none_or(|(leader, epoch, end, _)| {
            leader != f.leader || epoch != f.epoch || end != f.fetch_offset
        })
    {
        return true;
    }
    let outcome = match error {
        PartitionError::None => {
            if let Some(diverging) = data.diverging_epoch {
                partition
                    .truncate_diverging(diverging.epoch, diverging.end_offset, now)
                    .map(|_| ())
            } else {
                refresh_remote(partition, data.remote_end_offset).await;
                let appended = partition
                    .append_from_leader(&data.records, data.high_watermark, data.segment_base, now)
                    .await;
                appended.and_then(|()| partition.follow_log_start(data.log_start_offset))
            }
        }
        PartitionError::OffsetOutOfRange => restart_at(partition, &data, now).await,
        other => {
            debug!(topic = %partition.topic, partition = partition.index, leader = f.leader,
                error = ?other, "the leader refused a replication fetch");
            return false;
        }
    };
    if let Err(e) = outcome {
        warn!(topic = %partition.topic, partition = partition.index, leader = f.leader,
            error = %e, "applying replicated data failed");
        return false;
    }
    true
}

/// The leader moved its remote end: reload the manifest so local retention can drop
/// what the bucket now holds, and remote reads see it.
async fn refresh_remote(partition: &Partition, leader_remote_end: i64) {
    let Some(remote) = partition.remote() else {
        return;
    };
    if leader_remote_end >= 0
        && remote.marks().end_offset != Some(leader_remote_end)
        && let Err(e) = remote.reload().await
    {
        debug!(partition = %remote.id, error = %e, "reloading the manifest failed");
    }
}

/// The follower's log ends below the leader's local log start: restart it there. What
/// lies below is in the bucket (tiered topics) or was deleted by retention.
async fn restart_at(
    partition: &Partition,
    data: &PartitionData,
    now: i64,
) -> Result<(), crate::partition::PartitionError> {
    refresh_remote(partition, data.remote_end_offset).await;
    let offset = data.local_log_start_offset;
    let snapshot = match partition.remote() {
        Some(remote) if remote.marks().end_offset == Some(offset) => {
            remote.producer_snapshot().await.ok().flatten()
        }
        _ => None,
    };
    info!(topic = %partition.topic, partition = partition.index, offset,
        "the leader no longer has this follower's log end locally; restarting the log at its local start");
    partition.reset_log(offset, snapshot.as_deref(), now)
}
