use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::{MetadataRequest, RequestHeader};

use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::*;

fn request_frame<R: Encodable>(api_key: ApiKey, version: i16, body: &R, trailing: &[u8]) -> Bytes {
    let mut buf = BytesMut::new();
    let header = RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(42)
        .with_client_id(Some(StrBytes::from_static_str("test")));
    header
        .encode(&mut buf, api_key.request_header_version(version))
        .expect("header");
    body.encode(&mut buf, version).expect("body");
    buf.put_slice(trailing);
    buf.freeze()
}

#[tokio::test]
async fn frames_are_read_whole_and_limits_checked_first() {
    let mut input: &[u8] = &[0, 0, 0, 3, 1, 2, 3, 0, 0, 0, 1, 9];
    assert_eq!(
        read_frame(&mut input, 100).await.expect("frame").as_deref(),
        Some(&[1u8, 2, 3][..])
    );
    assert_eq!(
        read_frame(&mut input, 100).await.expect("frame").as_deref(),
        Some(&[9u8][..])
    );
    assert!(
        read_frame(&mut input, 100)
            .await
            .expect("clean end")
            .is_none()
    );

    let mut huge: &[u8] = &[0x7f, 0xff, 0xff, 0xff];
    assert!(matches!(
        read_frame(&mut huge, 1 << 20).await,
        Err(FrameError::TooLarge { .. })
    ));
    let mut negative: &[u8] = &[0xff, 0xff, 0xff, 0xfe];
    assert!(matches!(
        read_frame(&mut negative, 1 << 20).await,
        Err(FrameError::Negative(-2))
    ));
    let mut short: &[u8] = &[0, 0, 0, 10, 1, 2];
    assert!(matches!(
        read_frame(&mut short, 1 << 20).await,
        Err(FrameError::Truncated)
    ));
}

#[test]
fn trailing_bytes_after_a_body_are_tolerated() {
    let body = MetadataRequest::default().with_topics(None);
    let frame = request_frame(ApiKey::Metadata, 13, &body, &[0, 0, 0]);
    let request = decode_request(frame).expect("decodes despite 3 extra bytes");
    assert_eq!(request.header.correlation_id, 42);
    assert!(matches!(request.body, RequestKind::Metadata(_)));
}

#[test]
fn unknown_keys_unsupported_versions_and_garbage_are_errors() {
    assert!(matches!(
        decode_request(Bytes::from_static(&[0, 3, 0])),
        Err(DecodeError::Short(3))
    ));
    let unknown = Bytes::from_static(&[0x27, 0x0f, 0, 0, 0, 0, 0, 1]);
    assert!(matches!(
        decode_request(unknown),
        Err(DecodeError::UnknownApiKey(9999))
    ));
    let too_new = Bytes::from_static(&[0, 0, 0, 99, 0, 0, 0, 5, 0, 0]);
    assert!(matches!(
        decode_request(too_new),
        Err(DecodeError::UnsupportedVersion {
            api_key: ApiKey::Produce,
            version: 99,
            correlation_id: 5
        })
    ));
    let garbage = Bytes::from_static(&[0, 3, 0, 1, 0, 0, 0, 1, 0xff, 0xff, 0x12]);
    assert!(matches!(
        decode_request(garbage),
        Err(DecodeError::Malformed { .. })
    ));
}

#[test]
fn a_huge_array_count_fails_cleanly() {
    // Metadata v1 claiming 2^31-1 topics in a 20-byte body.
    let mut frame = BytesMut::new();
    frame.put_i16(3);
    frame.put_i16(1);
    frame.put_i32(7);
    frame.put_i16(3);
    frame.put_slice(b"abc");
    frame.put_i32(i32::MAX);
    assert!(matches!(
        decode_request(frame.freeze()),
        Err(DecodeError::Malformed { .. })
    ));
}

#[test]
fn api_versions_fallback_is_a_v0_response_with_error_35() {
    let bytes = api_versions_fallback(77).expect("encode");
    let mut body = bytes.slice(4..);
    let header = ResponseHeader::decode(&mut body, 0).expect("v0 header");
    assert_eq!(header.correlation_id, 77);
    let response = ApiVersionsResponse::decode(&mut body, 0).expect("v0 body");
    assert_eq!(response.error_code, 35);
    assert!(
        response
            .api_keys
            .iter()
            .any(|k| k.api_key == ApiKey::ApiVersions as i16 && k.max_version == 4)
    );
}

#[test]
fn every_advertised_version_decodes_a_default_request() {
    use kafka_protocol::messages::*;
    for (key, min, max) in versions::SUPPORTED {
        for version in *min..=*max {
            let mut body = BytesMut::new();
            let kind = match key {
                ApiKey::ApiVersions => RequestKind::ApiVersions(ApiVersionsRequest::default()),
                ApiKey::Metadata => RequestKind::Metadata(MetadataRequest::default()),
                ApiKey::Produce => RequestKind::Produce(ProduceRequest::default()),
                ApiKey::Fetch => RequestKind::Fetch(FetchRequest::default()),
                ApiKey::ListOffsets => RequestKind::ListOffsets(ListOffsetsRequest::default()),
                ApiKey::CreateTopics => RequestKind::CreateTopics(CreateTopicsRequest::default()),
                ApiKey::DeleteTopics => RequestKind::DeleteTopics(DeleteTopicsRequest::default()),
                ApiKey::DeleteRecords => {
                    RequestKind::DeleteRecords(DeleteRecordsRequest::default())
                }
                ApiKey::DescribeConfigs => {
                    RequestKind::DescribeConfigs(DescribeConfigsRequest::default())
                }
                ApiKey::AlterConfigs => RequestKind::AlterConfigs(AlterConfigsRequest::default()),
                ApiKey::CreatePartitions => {
                    RequestKind::CreatePartitions(CreatePartitionsRequest::default())
                }
                ApiKey::IncrementalAlterConfigs => {
                    RequestKind::IncrementalAlterConfigs(IncrementalAlterConfigsRequest::default())
                }
                ApiKey::DescribeCluster => {
                    RequestKind::DescribeCluster(DescribeClusterRequest::default())
                }
                ApiKey::DescribeLogDirs => {
                    RequestKind::DescribeLogDirs(DescribeLogDirsRequest::default())
                }
                ApiKey::AlterReplicaLogDirs => {
                    RequestKind::AlterReplicaLogDirs(AlterReplicaLogDirsRequest::default())
                }
                ApiKey::DescribeProducers => {
                    RequestKind::DescribeProducers(DescribeProducersRequest::default())
                }
                ApiKey::InitProducerId => {
                    RequestKind::InitProducerId(InitProducerIdRequest::default())
                }
                ApiKey::FindCoordinator => {
                    RequestKind::FindCoordinator(FindCoordinatorRequest::default())
                }
                ApiKey::JoinGroup => RequestKind::JoinGroup(JoinGroupRequest::default()),
                ApiKey::SyncGroup => RequestKind::SyncGroup(SyncGroupRequest::default()),
                ApiKey::Heartbeat => RequestKind::Heartbeat(HeartbeatRequest::default()),
                ApiKey::LeaveGroup => RequestKind::LeaveGroup(LeaveGroupRequest::default()),
                ApiKey::OffsetCommit => RequestKind::OffsetCommit(OffsetCommitRequest::default()),
                ApiKey::OffsetFetch => RequestKind::OffsetFetch(OffsetFetchRequest::default()),
                ApiKey::ListGroups => RequestKind::ListGroups(ListGroupsRequest::default()),
                ApiKey::DescribeGroups => {
                    RequestKind::DescribeGroups(DescribeGroupsRequest::default())
                }
                ApiKey::DeleteGroups => RequestKind::DeleteGroups(DeleteGroupsRequest::default()),
                ApiKey::OffsetDelete => RequestKind::OffsetDelete(OffsetDeleteRequest::default()),
                ApiKey::SaslHandshake => {
                    RequestKind::SaslHandshake(SaslHandshakeRequest::default())
                }
                ApiKey::SaslAuthenticate => {
                    RequestKind::SaslAuthenticate(SaslAuthenticateRequest::default())
                }
                ApiKey::DescribeAcls => RequestKind::DescribeAcls(DescribeAclsRequest::default()),
                ApiKey::CreateAcls => RequestKind::CreateAcls(CreateAclsRequest::default()),
                ApiKey::DeleteAcls => RequestKind::DeleteAcls(DeleteAclsRequest::default()),
                ApiKey::DescribeUserScramCredentials => RequestKind::DescribeUserScramCredentials(
                    DescribeUserScramCredentialsRequest::default(),
                ),
                ApiKey::AlterUserScramCredentials => RequestKind::AlterUserScramCredentials(
                    AlterUserScramCredentialsRequest::default(),
                ),
                ApiKey::DescribeClientQuotas => {
                    RequestKind::DescribeClientQuotas(DescribeClientQuotasRequest::default())
                }
                ApiKey::AlterClientQuotas => {
                    RequestKind::AlterClientQuotas(AlterClientQuotasRequest::default())
                }
                ApiKey::AlterPartitionReassignments => RequestKind::AlterPartitionReassignments(
                    AlterPartitionReassignmentsRequest::default(),
                ),
                ApiKey::ListPartitionReassignments => RequestKind::ListPartitionReassignments(
                    ListPartitionReassignmentsRequest::default(),
                ),
                ApiKey::ElectLeaders => RequestKind::ElectLeaders(ElectLeadersRequest::default()),
                ApiKey::AddPartitionsToTxn => {
                    RequestKind::AddPartitionsToTxn(AddPartitionsToTxnRequest::default())
                }
                ApiKey::AddOffsetsToTxn => {
                    RequestKind::AddOffsetsToTxn(AddOffsetsToTxnRequest::default())
                }
                ApiKey::EndTxn => RequestKind::EndTxn(EndTxnRequest::default()),
                ApiKey::TxnOffsetCommit => {
                    RequestKind::TxnOffsetCommit(TxnOffsetCommitRequest::default())
                }
                ApiKey::DescribeTransactions => {
                    RequestKind::DescribeTransactions(DescribeTransactionsRequest::default())
                }
                ApiKey::ListTransactions => {
                    RequestKind::ListTransactions(ListTransactionsRequest::default())
                }
                ApiKey::WriteTxnMarkers => {
                    RequestKind::WriteTxnMarkers(WriteTxnMarkersRequest::default())
                }
                other => panic!("add {other:?} to this test"),
            };
            kind.encode(&mut body, version)
                .unwrap_or_else(|e| panic!("{key:?} v{version}: {e}"));
            let mut frame = BytesMut::new();
            let header = RequestHeader::default()
                .with_request_api_key(*key as i16)
                .with_request_api_version(version)
                .with_correlation_id(1);
            header
                .encode(&mut frame, key.request_header_version(version))
                .expect("header");
            frame.put_slice(&body);
            let request = decode_request(frame.freeze())
                .unwrap_or_else(|e| panic!("{key:?} v{version}: {e}"));
            assert_eq!(request.version, version);
        }
    }
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// Random bytes after a valid-looking prefix never panic or abort the decoder.
        #[test]
        fn decoder_survives_random_frames(key in 0i16..70, version in 0i16..14, tail in proptest::collection::vec(any::<u8>(), 0..120)) {
            let mut frame = BytesMut::new();
            frame.put_i16(key);
            frame.put_i16(version);
            frame.put_i32(1);
            frame.put_slice(&tail);
            let _ = decode_request(frame.freeze());
        }
    }
}

#[test]
fn every_supported_api_has_its_own_name() {
    let names: std::collections::HashSet<_> = versions::SUPPORTED
        .iter()
        .map(|(key, ..)| versions::name(*key))
        .collect();
    assert_eq!(names.len(), versions::SUPPORTED.len());
    assert!(!names.contains("other"));
    assert_eq!(
        versions::name(kafka_protocol::messages::ApiKey::JoinGroup),
        "JoinGroup"
    );
}
