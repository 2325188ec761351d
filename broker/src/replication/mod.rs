//! Replication of the hot set over the network: followers pull from leaders over gRPC
//! (`proto/strata/replication.proto`; the leader side is [`server`], the follower side
//! [`fetcher`]). The state each partition keeps (role, ISR, high watermark) is
//! `crate::partition::isr`; this layer moves bytes between brokers and feeds it.
//!
//! When a follower's log diverges from the new leader's (it held records a deposed leader
//! never got acknowledged), the leader answers with the end of the follower's last epoch
//! in its own log and the follower truncates there (KIP-101/KIP-320), so logs never
//! diverge below the high watermark.
//!
//! Fencing: a leader knows it is deposed when the topic record names another leader or a
//! newer epoch. Until it learns that, it cannot acknowledge acks=all writes: followers
//! that know the new epoch stop fetching from it, so its high watermark stops, and its
//! ISR shrink fails the compare-and-swap. Uploads are fenced by the manifest's epoch.

pub mod fetcher;
pub mod server;
pub mod throttle;

use crate::config::Config;

/// What replication needs from the broker: the narrow handle the fetcher and the
/// replication service get instead of the whole broker (which implements it), so this
/// layer does not import the one above.
pub trait ReplicaHost: Send + Sync + 'static {
    fn now_ms(&self) -> i64;
    fn shutdown(&self) -> &tokio_util::sync::CancellationToken;
    fn config(&self) -> &Config;
    /// The throttle on reassignment catch-up, with the rates in force.
    fn replication_throttle(&self) -> &throttle::ReplicationThrottle;
    fn cluster_id(&self) -> &str;
    /// Every partition of every open topic, with its topic's id.
    fn partitions_with_topic_ids(
        &self,
    ) -> Vec<(uuid::Uuid, std::sync::Arc<crate::partition::Partition>)>;
    fn partition_by_topic_id(
        &self,
        topic_id: uuid::Uuid,
        index: i32,
    ) -> Option<std::sync::Arc<crate::partition::Partition>>;
    /// Where broker `node_id` serves replication, if it is known.
    fn replication_address(&self, node_id: i32) -> Option<String>;
    /// The replication stream to `leader` broke, or a new connection failed: the leader
    /// may have crashed. The host checks whether it refuses connections, and if so ends
    /// its session so leadership moves at once.
    fn leader_unreachable(&self, _leader: i32) {}
    /// Records fetched from `leader`, bytes by topic: the cost ledger counts them as
    /// inter-zone when the leader's rack differs from this broker's.
    fn replicated_from(&self, _leader: i32, _bytes_by_topic: &[(&str, u64)]) {}
    /// The certificate principal broker `node_id` registered (empty without TLS), if it
    /// is known: a follower's client certificate must show it.
    fn registered_principal(&self, node_id: i32) -> Option<String>;
    /// Whether replication runs over mutual TLS (certificates and a CA configured).
    fn replication_mtls(&self) -> bool;
    /// Whether `certificate` (DER) shows `principal`.
    fn certificate_shows(&self, certificate: &[u8], principal: &str) -> bool;
    /// Writes a transaction marker, as the leader, to a partition a coordinator named
    /// (the transaction coordinator's request); answered once the partition's ISR holds it.
    fn write_txn_marker(
        &self,
        topic_id: uuid::Uuid,
        partition: i32,
        marker: crate::log::txn::MarkerRequest,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<(), crate::partition::PartitionError>>
                + Send
                + '_,
        >,
    >;
    /// Whether the partition is in the producer's open transaction, as this broker's
    /// transaction coordinator knows it: a Kafka error code, 0 if it is.
    fn verify_transaction(
        &self,
        request: crate::log::txn::VerifyRequest,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = i16> + Send + '_>>;
}

/// Largest replication response, in bytes, either side accepts. The leader stops adding
/// records at `replica_fetch_max_bytes` but always sends the first batch it has whole,
/// and a batch can be as large as a produce request.
pub fn response_limit(config: &Config) -> usize {
    (config.replica_fetch_max_bytes as usize)
        .saturating_add(config.max_request_bytes as usize)
        .saturating_add(1 << 20)
}
