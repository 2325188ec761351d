//! Fuzz target for request decoding (`protocol::decode_request`), on stable Rust.
//!
//! Inputs are valid requests of every supported API and version, encoded with
//! kafka-protocol and then damaged (bytes flipped, inserted, deleted; length and count
//! fields overwritten with huge values), plus arbitrary bytes behind a valid header, plus
//! the committed corpus in `tests/fuzz-corpus/requests/` (hostile inputs found earlier).
//! Every input must decode or fail without a panic, and no single allocation may exceed
//! what the frame's own size justifies: a decoder that trusts a count it was told instead
//! of the bytes it was given fails here.
//!
//! `STRATA_FUZZ_CASES=N` sets the cases per property (default keeps `cargo test` quick).

mod fuzz_support;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use proptest::prelude::*;
use strata_broker::protocol::{DecodeError, decode_request, versions};

#[global_allocator]
static ALLOCATOR: fuzz_support::Measuring = fuzz_support::Measuring;

/// The largest single allocation decoding `frame_len` bytes may ask for. A decoded element
/// can be a few hundred bytes in memory for each byte of its encoding, and a vector grows
/// by doubling; a claimed count of 2^31 asks for gigabytes, far past this.
fn allocation_bound(frame_len: usize) -> usize {
    64 * 1024 + frame_len * 1024
}

fn decode_checked(frame: Bytes) {
    let len = frame.len();
    let (result, largest) = fuzz_support::largest_allocation(|| decode_request(frame));
    if let Err(DecodeError::Malformed { message, .. }) = &result {
        assert_ne!(
            message, "decoder panicked",
            "the decoder panicked on a {len}-byte frame"
        );
    }
    assert!(
        largest <= allocation_bound(len),
        "decoding a {len}-byte frame allocated {largest} bytes at once"
    );
}

fn name(s: &'static str) -> StrBytes {
    StrBytes::from_static_str(s)
}

fn record_batch() -> Bytes {
    let records: Vec<Record> = (0..3)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            sequence: i,
            timestamp_type: TimestampType::Creation,
            offset: i64::from(i),
            timestamp: 1_700_000_000_000,
            key: Some(Bytes::from_static(b"key")),
            value: Some(Bytes::from_static(b"value")),
            headers: [(name("h"), Some(Bytes::from_static(b"v")))]
                .into_iter()
                .collect(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("encode a record batch");
    buf.freeze()
}

/// Requests with arrays, strings and records filled in, so that mutations land in them.
fn populated(api_key: ApiKey) -> Option<RequestKind> {
    let topic = || TopicName(name("events"));
    Some(match api_key {
        ApiKey::Metadata => {
            RequestKind::Metadata(MetadataRequest::default().with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(topic())),
                MetadataRequestTopic::default().with_name(Some(TopicName(name("other")))),
            ])))
        }
        ApiKey::Produce => RequestKind::Produce(
            ProduceRequest::default()
                .with_acks(-1)
                .with_timeout_ms(1000)
                .with_topic_data(vec![
                    TopicProduceData::default()
                        .with_name(topic())
                        .with_partition_data(vec![
                            PartitionProduceData::default()
                                .with_index(0)
                                .with_records(Some(record_batch())),
                        ]),
                ]),
        ),
        ApiKey::Fetch => RequestKind::Fetch(
            FetchRequest::default()
                .with_max_bytes(1 << 20)
                .with_topics(vec![
                    FetchTopic::default()
                        .with_topic(topic())
                        .with_partitions(vec![
                            FetchPartition::default().with_partition_max_bytes(1 << 20),
                        ]),
                ]),
        ),
        ApiKey::CreateTopics => {
            RequestKind::CreateTopics(CreateTopicsRequest::default().with_topics(vec![
                CreatableTopic::default()
                    .with_name(topic())
                    .with_num_partitions(3)
                    .with_replication_factor(1)
                    .with_configs(vec![
                        CreatableTopicConfig::default()
                            .with_name(name("cleanup.policy"))
                            .with_value(Some(name("compact"))),
                    ]),
            ]))
        }
        // Operators' tools (issue 20).
        ApiKey::DescribeLogDirs => {
            RequestKind::DescribeLogDirs(DescribeLogDirsRequest::default().with_topics(Some(vec![
                describe_log_dirs_request::DescribableLogDirTopic::default()
                    .with_topic(topic())
                    .with_partitions(vec![0, 1, 2]),
            ])))
        }
        ApiKey::AlterReplicaLogDirs => {
            RequestKind::AlterReplicaLogDirs(AlterReplicaLogDirsRequest::default().with_dirs(vec![
                alter_replica_log_dirs_request::AlterReplicaLogDir::default()
                    .with_path(name("/var/lib/strata"))
                    .with_topics(vec![
                        alter_replica_log_dirs_request::AlterReplicaLogDirTopic::default()
                            .with_name(topic())
                            .with_partitions(vec![0, 1]),
                    ]),
            ]))
        }
        ApiKey::DescribeProducers => {
            RequestKind::DescribeProducers(DescribeProducersRequest::default().with_topics(vec![
                describe_producers_request::TopicRequest::default()
                    .with_name(topic())
                    .with_partition_indexes(vec![0, 1]),
            ]))
        }
        ApiKey::CreatePartitions => {
            RequestKind::CreatePartitions(CreatePartitionsRequest::default().with_topics(vec![
                create_partitions_request::CreatePartitionsTopic::default()
                    .with_name(topic())
                    .with_count(4)
                    .with_assignments(Some(vec![
                        create_partitions_request::CreatePartitionsAssignment::default()
                            .with_broker_ids(vec![BrokerId(1), BrokerId(2)]),
                    ])),
            ]))
        }
        ApiKey::JoinGroup => RequestKind::JoinGroup(
            JoinGroupRequest::default()
                .with_group_id(GroupId(name("group")))
                .with_protocol_type(name("consumer"))
                .with_protocols(vec![
                    JoinGroupRequestProtocol::default()
                        .with_name(name("range"))
                        .with_metadata(Bytes::from_static(b"\0\0\0\0\0\x01\0\x06events")),
                ]),
        ),
        ApiKey::AddPartitionsToTxn => {
            let topics = vec![
                add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                    .with_name(topic())
                    .with_partitions(vec![0, 1, 2]),
            ];
            RequestKind::AddPartitionsToTxn(
                AddPartitionsToTxnRequest::default()
                    .with_v3_and_below_transactional_id(TransactionalId(name("tx")))
                    .with_v3_and_below_producer_id(ProducerId(7))
                    .with_v3_and_below_topics(topics.clone())
                    .with_transactions(vec![
                        add_partitions_to_txn_request::AddPartitionsToTxnTransaction::default()
                            .with_transactional_id(TransactionalId(name("tx")))
                            .with_producer_id(ProducerId(7))
                            .with_verify_only(true)
                            .with_topics(topics),
                    ]),
            )
        }
        ApiKey::TxnOffsetCommit => RequestKind::TxnOffsetCommit(
            TxnOffsetCommitRequest::default()
                .with_transactional_id(TransactionalId(name("tx")))
                .with_group_id(GroupId(name("group")))
                .with_producer_id(ProducerId(7))
                .with_topics(vec![
                    txn_offset_commit_request::TxnOffsetCommitRequestTopic::default()
                        .with_name(topic())
                        .with_partitions(vec![
                            txn_offset_commit_request::TxnOffsetCommitRequestPartition::default()
                                .with_committed_offset(42),
                        ]),
                ]),
        ),
        _ => return None,
    })
}

fn default_request(api_key: ApiKey) -> RequestKind {
    macro_rules! defaults {
        ($($key:ident => $request:ident),* $(,)?) => {
            match api_key {
                $(ApiKey::$key => RequestKind::$key($request::default()),)*
                other => panic!("no default request for {other:?}: add it here"),
            }
        };
    }
    defaults!(
        Produce => ProduceRequest,
        Fetch => FetchRequest,
        ListOffsets => ListOffsetsRequest,
        Metadata => MetadataRequest,
        ApiVersions => ApiVersionsRequest,
        CreateTopics => CreateTopicsRequest,
        DeleteTopics => DeleteTopicsRequest,
        DeleteRecords => DeleteRecordsRequest,
        DescribeConfigs => DescribeConfigsRequest,
        AlterConfigs => AlterConfigsRequest,
        CreatePartitions => CreatePartitionsRequest,
        IncrementalAlterConfigs => IncrementalAlterConfigsRequest,
        DescribeCluster => DescribeClusterRequest,
        DescribeLogDirs => DescribeLogDirsRequest,
        AlterReplicaLogDirs => AlterReplicaLogDirsRequest,
        DescribeProducers => DescribeProducersRequest,
        InitProducerId => InitProducerIdRequest,
        FindCoordinator => FindCoordinatorRequest,
        JoinGroup => JoinGroupRequest,
        SyncGroup => SyncGroupRequest,
        Heartbeat => HeartbeatRequest,
        LeaveGroup => LeaveGroupRequest,
        OffsetCommit => OffsetCommitRequest,
        OffsetFetch => OffsetFetchRequest,
        ListGroups => ListGroupsRequest,
        DescribeGroups => DescribeGroupsRequest,
        DeleteGroups => DeleteGroupsRequest,
        OffsetDelete => OffsetDeleteRequest,
        SaslHandshake => SaslHandshakeRequest,
        SaslAuthenticate => SaslAuthenticateRequest,
        DescribeAcls => DescribeAclsRequest,
        CreateAcls => CreateAclsRequest,
        DeleteAcls => DeleteAclsRequest,
        DescribeUserScramCredentials => DescribeUserScramCredentialsRequest,
        AlterUserScramCredentials => AlterUserScramCredentialsRequest,
        DescribeClientQuotas => DescribeClientQuotasRequest,
        AlterClientQuotas => AlterClientQuotasRequest,
        AlterPartitionReassignments => AlterPartitionReassignmentsRequest,
        ListPartitionReassignments => ListPartitionReassignmentsRequest,
        ElectLeaders => ElectLeadersRequest,
        AddPartitionsToTxn => AddPartitionsToTxnRequest,
        AddOffsetsToTxn => AddOffsetsToTxnRequest,
        EndTxn => EndTxnRequest,
        TxnOffsetCommit => TxnOffsetCommitRequest,
        DescribeTransactions => DescribeTransactionsRequest,
        ListTransactions => ListTransactionsRequest,
        WriteTxnMarkers => WriteTxnMarkersRequest,
    )
}

fn frame(api_key: ApiKey, version: i16, body: &RequestKind) -> Option<Bytes> {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(name("fuzz")))
        .encode(&mut buf, api_key.request_header_version(version))
        .ok()?;
    // Some populated fields do not exist in old versions; those seeds are skipped.
    body.encode(&mut buf, version).ok()?;
    Some(buf.freeze())
}

/// Every supported API and version, encoded empty and (where built above) populated.
fn seeds() -> Vec<Bytes> {
    let mut seeds = Vec::new();
    for &(api_key, min, max) in versions::SUPPORTED {
        for version in min..=max {
            seeds.extend(frame(api_key, version, &default_request(api_key)));
            if let Some(body) = populated(api_key) {
                seeds.extend(frame(api_key, version, &body));
            }
        }
    }
    seeds.extend(corpus());
    seeds
}

/// The committed corpus: one request frame (without the size prefix) per file, in hex.
fn corpus() -> Vec<Bytes> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-corpus/requests");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read the corpus {}: {e}", dir.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path).expect("read a corpus file");
            Bytes::from(hex(&text).unwrap_or_else(|| panic!("{} is not hex", path.display())))
        })
        .collect()
}

fn hex(text: &str) -> Option<Vec<u8>> {
    let digits: Vec<u8> = text
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .flat_map(|line| line.bytes())
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok())
        .collect()
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip {
        at: usize,
        bit: u8,
    },
    Insert {
        at: usize,
        bytes: Vec<u8>,
    },
    Delete {
        at: usize,
        len: usize,
    },
    Truncate {
        at: usize,
    },
    /// A length or count field claiming far more than follows.
    HugeLength {
        at: usize,
        form: usize,
    },
}

/// Encodings of lies: i32/u32/i16 maxima, a varint of 2^32-1 and of 2^31, -2.
const HUGE: &[&[u8]] = &[
    &[0x7f, 0xff, 0xff, 0xff],
    &[0xff, 0xff, 0xff, 0xff],
    &[0x7f, 0xff],
    &[0xff, 0xff, 0xff, 0xff, 0x0f],
    &[0x80, 0x80, 0x80, 0x80, 0x08],
    &[0xff, 0xff, 0xff, 0xfe],
];

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), 1usize..16).prop_map(|(at, len)| Mutation::Delete { at, len }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        (any::<usize>(), 0..HUGE.len()).prop_map(|(at, form)| Mutation::HugeLength { at, form }),
    ]
}

fn apply(frame: &mut Vec<u8>, mutation: &Mutation) {
    // Positions past the fixed 8-byte key/version/correlation prefix, so that mutations
    // reach the body decoders instead of stopping at "unknown API key".
    let body_at = |at: usize, len: usize| 8 + at % (len.saturating_sub(8) + 1);
    match mutation {
        Mutation::Flip { at, bit } if frame.len() > 8 => {
            let i = body_at(*at, frame.len() - 1);
            frame[i] ^= 1 << bit;
        }
        Mutation::Insert { at, bytes } => {
            let i = body_at(*at, frame.len()).min(frame.len());
            frame.splice(i..i, bytes.iter().copied());
        }
        Mutation::Delete { at, len } if frame.len() > 8 => {
            let i = body_at(*at, frame.len() - 1);
            let end = (i + len).min(frame.len());
            frame.drain(i..end);
        }
        Mutation::Truncate { at } => {
            let i = body_at(*at, frame.len()).min(frame.len());
            frame.truncate(i);
        }
        Mutation::HugeLength { at, form } => {
            let lie = HUGE[*form];
            let i = body_at(*at, frame.len()).min(frame.len());
            let end = (i + lie.len()).min(frame.len());
            frame.splice(i..end, lie.iter().copied());
        }
        _ => {}
    }
}

fn config(default_cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases: fuzz_support::cases(default_cases),
        // Shrinking a decoder failure can take long; the input printed is enough.
        max_shrink_iters: 1000,
        ..ProptestConfig::default()
    }
}

#[test]
fn every_seed_decodes_and_the_corpus_is_refused_without_a_large_allocation() {
    let seeds = seeds();
    let supported: usize = versions::SUPPORTED
        .iter()
        .map(|(_, min, max)| usize::try_from(max - min + 1).expect("a version range"))
        .sum();
    assert!(
        seeds.len() >= supported,
        "only {} seeds for {supported} API versions",
        seeds.len()
    );
    let corpus = corpus();
    for frame in &seeds[..seeds.len() - corpus.len()] {
        decode_request(frame.clone()).expect("a valid encoding decodes");
    }
    assert!(!corpus.is_empty(), "the committed corpus is missing");
    for frame in corpus {
        decode_checked(frame);
    }
}

proptest! {
    #![proptest_config(config(3000))]

    #[test]
    fn mutated_valid_requests_fail_cleanly_and_allocate_in_proportion(
        seed in any::<prop::sample::Index>(),
        mutations in proptest::collection::vec(mutation(), 1..5),
    ) {
        let seeds = SEEDS.with(|seeds| seeds.clone());
        let mut frame = seeds[seed.index(seeds.len())].to_vec();
        for mutation in &mutations {
            apply(&mut frame, mutation);
        }
        decode_checked(Bytes::from(frame));
    }

    #[test]
    fn arbitrary_bodies_behind_a_valid_header_fail_cleanly(
        api in any::<prop::sample::Index>(),
        version in any::<prop::sample::Index>(),
        body in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let (api_key, min, max) = versions::SUPPORTED[api.index(versions::SUPPORTED.len())];
        let version = min + i16::try_from(version.index(usize::try_from(max - min + 1).expect("range"))).expect("version");
        let mut frame = BytesMut::new();
        frame.put_i16(api_key as i16);
        frame.put_i16(version);
        frame.put_i32(7);
        frame.put_slice(&body);
        decode_checked(frame.freeze());
    }

    #[test]
    fn arbitrary_bytes_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
        decode_checked(Bytes::from(bytes));
    }
}

thread_local! {
    static SEEDS: Vec<Bytes> = seeds();
}
