//! The APIs and versions this broker implements. ApiVersions advertises exactly this
//! table and the decoder refuses anything outside it, so the two cannot disagree.

use kafka_protocol::messages::ApiKey;
use kafka_protocol::messages::api_versions_response::ApiVersion;

/// The one table of supported APIs: [`SUPPORTED`] and [`name`] are both generated from
/// it, so a new API gets its metric and trace name with its versions.
macro_rules! supported_apis {
    ($($key:ident $min:literal ..= $max:literal,)*) => {
        /// (API, lowest version, highest version). Every version in a range is handled:
        /// newer fields that a single broker has no use for are ignored or answered with
        /// defaults.
        pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[$((ApiKey::$key, $min, $max)),*];

        /// A static name per API, for metric labels and trace spans; "other" for an API
        /// outside the table (the decoder refuses those).
        pub fn name(api_key: ApiKey) -> &'static str {
            match api_key {
                $(ApiKey::$key => stringify!($key),)*
                _ => "other",
            }
        }
    };
}

supported_apis! {
    Produce 3..=12,
    Fetch 4..=16,
    ListOffsets 1..=9,
    Metadata 0..=13,
    ApiVersions 0..=4,
    CreateTopics 2..=7,
    DeleteTopics 1..=6,
    DeleteRecords 0..=2,
    DescribeConfigs 1..=4,
    AlterConfigs 0..=2,
    CreatePartitions 0..=3,
    IncrementalAlterConfigs 0..=1,
    DescribeCluster 0..=1,
    // Operators' tools (issue 20): one log dir per broker, producers per partition.
    DescribeLogDirs 1..=4,
    AlterReplicaLogDirs 1..=2,
    DescribeProducers 0..=0,
    InitProducerId 0..=5,
    // Transactions. EndTxn 5, TxnOffsetCommit 5 and Produce 12 are KIP-890 part 2's (the
    // epoch bumped at every EndTxn, partitions added by their leaders); Kafka 4 clients use
    // them only when ApiVersions finalizes transaction.version 2 (`transaction_version`),
    // as Kafka's brokers advertise them too. Other clients stop at lower versions.
    AddPartitionsToTxn 0..=5,
    AddOffsetsToTxn 0..=4,
    EndTxn 0..=5,
    TxnOffsetCommit 0..=5,
    DescribeTransactions 0..=0,
    ListTransactions 0..=1,
    WriteTxnMarkers 1..=1,
    FindCoordinator 0..=6,
    JoinGroup 0..=9,
    SyncGroup 0..=5,
    Heartbeat 0..=4,
    LeaveGroup 0..=5,
    OffsetCommit 2..=9,
    OffsetFetch 1..=9,
    ListGroups 0..=5,
    DescribeGroups 0..=5,
    DeleteGroups 0..=2,
    OffsetDelete 0..=0,
    // Answered by the connection (server/auth.rs), not the handlers. SaslHandshake v0
    // must be listed (librdkafka's "SASL handshake" feature test asks for it), but a v0
    // handshake (raw tokens after it) is refused: every current client uses v1.
    SaslHandshake 0..=1,
    SaslAuthenticate 0..=2,
    DescribeAcls 1..=3,
    CreateAcls 1..=3,
    DeleteAcls 1..=3,
    DescribeUserScramCredentials 0..=0,
    AlterUserScramCredentials 0..=0,
    DescribeClientQuotas 0..=1,
    AlterClientQuotas 0..=1,
    AlterPartitionReassignments 0..=1,
    ListPartitionReassignments 0..=0,
    ElectLeaders 0..=2,
}

pub fn supports(api_key: ApiKey, version: i16) -> bool {
    SUPPORTED
        .iter()
        .any(|(key, min, max)| *key == api_key && (*min..=*max).contains(&version))
}

pub fn advertised() -> Vec<ApiVersion> {
    SUPPORTED
        .iter()
        .map(|(key, min, max)| {
            ApiVersion::default()
                .with_api_key(*key as i16)
                .with_min_version(*min)
                .with_max_version(*max)
        })
        .collect()
}
