//! Telling a dead broker from a slow one, sooner than its session expires.
//!
//! A broker's session (its etcd lease, `broker_session_timeout_ms`) is what takes it out
//! of the cluster, and it must be long enough that a busy broker, a GC-like stall or a
//! slow fsync does not cost it its partitions. A crashed process is another matter: its
//! host's kernel refuses connections to the ports it listened on at once. So peers probe
//! each other's replication listener every `broker_probe_interval_ms` (the controller
//! probes every broker, every broker probes the controller), and a broker whose listener
//! accepted before and then refused [`REFUSALS_FOR_DEAD`] probes in a row has its session
//! ended by the prober ([`MetadataStore::end_broker_session`]).
//!
//! Why this is safe enough:
//! - Only a refused connection counts. It is evidence, not proof: a REJECT firewall rule
//!   or a Service with no endpoints refuses for a live broker, so each broker ends a
//!   node's session at most once per session timeout, and only the session (lease) it
//!   saw that node registered under. A stalled process still has its listening socket
//!   (the kernel accepts into its backlog), a partitioned or powered-off host answers
//!   nothing (a timeout): both are left to the lease, as before.
//! - A broker binds its replication listener before it registers, so a registered
//!   broker that refuses is not starting up, and one that never accepted (a wrong
//!   advertised address) is never judged by its refusals.
//! - Ending a session is what its expiry does. Leadership moves by the controller's
//!   compare-and-swap with a new leader epoch, so a process that was wrongly judged dead
//!   is fenced exactly as one whose lease expired during a stall, and joins again.
//!
//! [`MetadataStore::end_broker_session`]: crate::cluster::MetadataStore::end_broker_session

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, info, warn};

use super::Broker;
use crate::cluster::BrokerInfo;

/// Refused probes in a row, each one probe interval apart, that show a broker is dead.
const REFUSALS_FOR_DEAD: u32 = 2;
/// The longest a probe waits to connect; a peer that does not answer by then is left to
/// its lease.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// The pause between the two probes of [`refuses_connections`]: short, so that a
/// follower whose leader crashed has it taken out before clients ask again (librdkafka
/// asks for Metadata 100 ms after its connection broke, then once a second).
const RECHECK_AFTER: Duration = Duration::from_millis(30);

/// What one probe of a listener found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Probe {
    Accepted,
    /// Nothing listens there: the host answered with a refusal.
    Refused,
    /// No answer in time, no route, or a name that does not resolve: nothing is known.
    Unknown,
}

/// Connects to `address` (`HOST:PORT`) and closes the connection at once.
pub(crate) async fn probe(address: &str, timeout: Duration) -> Probe {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(address)).await {
        Ok(Ok(_)) => Probe::Accepted,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Probe::Refused,
        _ => Probe::Unknown,
    }
}

/// Whether `address` refused two connections in a row, [`RECHECK_AFTER`] apart.
pub(crate) async fn refuses_connections(address: &str) -> bool {
    if probe(address, PROBE_TIMEOUT).await != Probe::Refused {
        return false;
    }
    tokio::time::sleep(RECHECK_AFTER).await;
    probe(address, PROBE_TIMEOUT).await == Probe::Refused
}

/// When this broker last ended each peer's session. A broker wrongly judged (a refusal
/// from a filter on the path, not a crash) rejoins and may be judged again: at most one
/// revocation per node per session timeout keeps that from cycling faster than its
/// session would expire anyway.
#[derive(Default)]
pub(super) struct Revocations(std::sync::Mutex<HashMap<i32, std::time::Instant>>);

impl Revocations {
    /// Whether `node_id`'s session may be ended now: none was, within `within`.
    fn allowed(&self, node_id: i32, within: Duration) -> bool {
        let last = self.0.lock().unwrap_or_else(|p| p.into_inner());
        last.get(&node_id).is_none_or(|t| t.elapsed() >= within)
    }

    fn record(&self, node_id: i32) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node_id, std::time::Instant::now());
    }
}

/// Ends the session `session` of `node_id`, registered as `info`, unless one of its
/// sessions was ended within `within`. Returns whether it was ended.
async fn end_session(
    store: &dyn crate::cluster::MetadataStore,
    revocations: &Revocations,
    within: Duration,
    node_id: i32,
    info: &BrokerInfo,
    session: i64,
) -> Result<bool, crate::cluster::StoreError> {
    if !revocations.allowed(node_id, within) {
        return Ok(false);
    }
    let ended = store.end_broker_session(node_id, info, session).await?;
    if ended {
        revocations.record(node_id);
    }
    Ok(ended)
}

/// One probed peer, for as long as its registration stays the same.
struct Peer {
    info: BrokerInfo,
    /// It accepted a probe since it registered: only then do refusals count.
    accepted: bool,
    /// The session (lease) it was registered under when it accepted: only that session is
    /// ended, never a later incarnation's with the same info.
    session: Option<i64>,
    refusals: u32,
}

impl Peer {
    /// Records a probe; true once the peer is shown dead.
    fn record(&mut self, probe: Probe) -> bool {
        match probe {
            Probe::Accepted => {
                self.accepted = true;
                self.refusals = 0;
            }
            Probe::Refused if self.accepted => self.refusals += 1,
            Probe::Refused | Probe::Unknown => {}
        }
        self.refusals >= REFUSALS_FOR_DEAD
    }
}

impl Broker {
    /// The probe loop of this module. Does nothing with `broker_probe_interval_ms` 0 or
    /// a store of one broker.
    pub async fn run_peer_probes(self: Arc<Self>) {
        let interval = self.config.broker_probe_interval_ms;
        if interval <= 0 {
            return;
        }
        let every = Duration::from_millis(interval as u64);
        let ttl = Duration::from_millis(self.config.broker_session_timeout_ms as u64);
        let mut peers: HashMap<i32, Peer> = HashMap::new();
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let targets = self.probe_targets();
            peers.retain(|id, peer| targets.iter().any(|t| t.node_id == *id && *t == peer.info));
            let probes = futures::future::join_all(
                targets
                    .iter()
                    .map(|t| probe(&t.replication, every.min(PROBE_TIMEOUT))),
            )
            .await;
            for (target, found) in targets.into_iter().zip(probes) {
                let node_id = target.node_id;
                let peer = peers.entry(node_id).or_insert_with(|| Peer {
                    info: target,
                    accepted: false,
                    session: None,
                    refusals: 0,
                });
                let dead = peer.record(found);
                if found == Probe::Accepted && peer.session.is_none() {
                    // Read after the accept: the registration of the process that
                    // accepted, or of none yet (read again at the next accept).
                    match self.store.broker_session(node_id).await {
                        Ok(session) => peer.session = session,
                        Err(e) => debug!(node_id, error = %e, "cannot read a peer's session"),
                    }
                }
                if !dead {
                    continue;
                }
                let Some(session) = peer.session else {
                    peers.remove(&node_id);
                    continue; // its session is unknown: left to its expiry
                };
                let revocations = self.membership.revocations();
                match end_session(
                    &*self.store,
                    &revocations,
                    ttl,
                    node_id,
                    &peer.info,
                    session,
                )
                .await
                {
                    Ok(ended) => {
                        info!(node_id, address = %peer.info.replication, ended,
                            "broker refuses connections at its replication address: ended its session");
                        peers.remove(&node_id);
                        if ended {
                            self.wake_metadata_round();
                        }
                    }
                    Err(e) => {
                        warn!(node_id, error = %e, "cannot end the session of a broker that refuses connections")
                    }
                }
            }
        }
    }

    /// Checks a peer at once, outside the probe loop's rhythm: a follower's replication
    /// stream to its leader broke after the leader answered on it (the fetcher calls this
    /// for no other failure), so the peer accepted before. Two refusals [`RECHECK_AFTER`]
    /// apart show it crashed, and the session it is registered under at the start of the
    /// check is ended, at most once per node per session timeout. One check per peer at a
    /// time.
    pub(super) fn check_peer(&self, node_id: i32) {
        if node_id == self.config.node_id || self.config.broker_probe_interval_ms <= 0 {
            return;
        }
        let Some(info) = self.broker_info(node_id) else {
            return; // already out of the view
        };
        let checking = self.membership.checking_peers();
        if !checking
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node_id)
        {
            return;
        }
        let store = self.store.clone();
        let revocations = self.membership.revocations();
        let ttl = Duration::from_millis(self.config.broker_session_timeout_ms as u64);
        tokio::spawn(async move {
            let session = store.broker_session(node_id).await.ok().flatten();
            if let Some(session) = session
                && refuses_connections(&info.replication).await
            {
                match end_session(&*store, &revocations, ttl, node_id, &info, session).await {
                    Ok(ended) => info!(node_id, address = %info.replication, ended,
                        "leader refuses connections at its replication address: ended its session"),
                    Err(e) => warn!(node_id, error = %e,
                        "cannot end the session of a leader that refuses connections"),
                }
            }
            checking
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&node_id);
        });
    }

    /// Whom this broker probes: every other live broker if it is the controller, else
    /// the controller, so that between them every broker is watched by the controller
    /// and the controller by every broker.
    fn probe_targets(&self) -> Vec<BrokerInfo> {
        let view = self.cluster_view();
        let me = self.config.node_id;
        view.brokers
            .iter()
            .filter(|b| b.node_id != me && !b.replication.is_empty())
            .filter(|b| view.controller == me || b.node_id == view.controller)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> Peer {
        Peer {
            info: BrokerInfo {
                node_id: 2,
                host: "h".into(),
                port: 1,
                rack: None,
                replication: "h:2".into(),
                admin: String::new(),
                listeners: Vec::new(),
                principal: String::new(),
            },
            accepted: false,
            session: None,
            refusals: 0,
        }
    }

    #[test]
    fn refusals_count_only_after_the_peer_accepted() {
        let mut p = peer();
        for _ in 0..5 {
            assert!(
                !p.record(Probe::Refused),
                "never seen alive: a wrong address"
            );
        }
        assert!(!p.record(Probe::Accepted));
        assert!(!p.record(Probe::Refused));
        assert!(p.record(Probe::Refused));
    }

    #[test]
    fn an_answer_or_silence_between_refusals_resets_or_keeps_the_count() {
        let mut p = peer();
        p.record(Probe::Accepted);
        assert!(!p.record(Probe::Refused));
        assert!(!p.record(Probe::Accepted), "alive again: start over");
        assert!(!p.record(Probe::Refused));
        assert!(!p.record(Probe::Unknown), "a timeout proves nothing");
        assert!(p.record(Probe::Refused));
    }

    #[tokio::test]
    async fn a_closed_port_refuses_and_a_listening_one_accepts() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let open = listener.local_addr().expect("its address").to_string();
        assert_eq!(probe(&open, PROBE_TIMEOUT).await, Probe::Accepted);
        assert!(!refuses_connections(&open).await);
        // Bound but not listening: the port stays ours (nothing else can take it
        // meanwhile) and connections to it are refused.
        let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
        socket
            .bind("127.0.0.1:0".parse().expect("an address"))
            .expect("bind a loopback port");
        let closed = socket.local_addr().expect("its address").to_string();
        assert!(refuses_connections(&closed).await);
    }

    #[test]
    fn a_node_s_session_is_ended_at_most_once_per_session_timeout() {
        let revocations = Revocations::default();
        let ttl = Duration::from_secs(3600);
        assert!(revocations.allowed(2, ttl));
        revocations.record(2);
        assert!(!revocations.allowed(2, ttl), "judged again within the TTL");
        assert!(revocations.allowed(3, ttl), "another node is not held back");
        assert!(revocations.allowed(2, Duration::ZERO), "after the TTL");
    }
}
