//! `floor-server`: the least a Kafka broker can do for a producer, as a latency floor.
//!
//! A tokio server, one task per connection like the broker's listener, that answers
//! ApiVersions, Metadata and Produce from memory: it frames and decodes each request,
//! counts the records of each batch to hand out base offsets, and writes the encoded
//! response straight to the socket (TCP_NODELAY). It stores nothing, validates nothing
//! and has no budget, quota or metrics. Driven by the same `strata-bench produce` at the
//! same rate, its latency is what this machine, loopback and librdkafka cost before any
//! broker work: the floor a broker's latency is compared with (bench/latency.sh).
//!
//! Not a broker: it trusts its client (a local benchmark) and answers every topic asked
//! for with `--partitions` partitions led by itself.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, BrokerId, MetadataResponse, ProduceResponse, RequestHeader,
    RequestKind, ResponseHeader, ResponseKind, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The versions answered: enough for librdkafka's producer. Produce stops before v13
/// (topic ids) so topics are named in both directions.
const VERSIONS: [(ApiKey, i16, i16); 3] = [
    (ApiKey::Produce, 3, 9),
    (ApiKey::Metadata, 1, 12),
    (ApiKey::ApiVersions, 0, 3),
];

/// Offset of the record count in a v2 record batch header, and the header's length.
const RECORD_COUNT_AT: usize = 57;
const BATCH_HEADER_LEN: usize = 61;

#[derive(clap::Args)]
pub struct FloorArgs {
    /// Address to listen on (loopback).
    #[arg(long, default_value = "127.0.0.1:9192")]
    pub listen: SocketAddr,
    /// Partitions every topic has.
    #[arg(long, default_value_t = 1)]
    pub partitions: i32,
    /// Tokio worker threads; default: one per core, as the broker.
    #[arg(long)]
    pub workers: Option<usize>,
}

/// Next offset per (topic, partition).
type Offsets = Arc<Mutex<HashMap<(StrBytes, i32), i64>>>;

/// Serves until the process is killed.
pub fn run(args: &FloorArgs) -> anyhow::Result<()> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = args.workers {
        builder.worker_threads(workers.max(1));
    }
    let runtime = builder.enable_all().build().context("start the runtime")?;
    runtime.block_on(serve(args.listen, args.partitions))
}

async fn serve(listen: SocketAddr, partitions: i32) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("bind {listen}"))?;
    println!("floor-server: listening on {listen}");
    let offsets = Offsets::default();
    loop {
        let (stream, _) = listener.accept().await.context("accept")?;
        stream.set_nodelay(true).context("set TCP_NODELAY")?;
        let offsets = offsets.clone();
        tokio::spawn(async move {
            if let Err(error) = connection(stream, listen, partitions, offsets).await {
                eprintln!("floor-server: connection ended: {error:#}");
            }
        });
    }
}

async fn connection(
    mut stream: TcpStream,
    listen: SocketAddr,
    partitions: i32,
    offsets: Offsets,
) -> anyhow::Result<()> {
    loop {
        let mut size = [0u8; 4];
        match stream.read_exact(&mut size).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let size = usize::try_from(i32::from_be_bytes(size)).context("negative frame size")?;
        let mut frame = BytesMut::zeroed(size);
        stream
            .read_exact(&mut frame)
            .await
            .context("read a frame")?;
        let response = answer(frame.freeze(), listen, partitions, &offsets)?;
        stream
            .write_all(&response)
            .await
            .context("write a response")?;
    }
}

/// The encoded response frame (size prefix included) to one request frame.
fn answer(
    mut frame: Bytes,
    listen: SocketAddr,
    partitions: i32,
    offsets: &Offsets,
) -> anyhow::Result<Bytes> {
    anyhow::ensure!(frame.len() >= 4, "frame too short for a request header");
    let api_key = ApiKey::try_from(i16::from_be_bytes([frame[0], frame[1]]))
        .map_err(|()| anyhow::anyhow!("unknown API key"))?;
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let header = RequestHeader::decode(&mut frame, api_key.request_header_version(version))?;
    // An ApiVersions newer than ours is answered in v0 with the list (KIP-511).
    let version = if api_key == ApiKey::ApiVersions {
        version.min(3)
    } else {
        version
    };
    let request = RequestKind::decode(api_key, &mut frame, version)?;
    let response = match request {
        RequestKind::ApiVersions(_) => ResponseKind::ApiVersions(
            ApiVersionsResponse::default().with_api_keys(
                VERSIONS
                    .iter()
                    .map(|&(key, min, max)| {
                        ApiVersion::default()
                            .with_api_key(key as i16)
                            .with_min_version(min)
                            .with_max_version(max)
                    })
                    .collect(),
            ),
        ),
        RequestKind::Metadata(request) => {
            let partition = |index| {
                MetadataResponsePartition::default()
                    .with_partition_index(index)
                    .with_leader_id(BrokerId(0))
                    .with_replica_nodes(vec![BrokerId(0)])
                    .with_isr_nodes(vec![BrokerId(0)])
            };
            let topics = request
                .topics
                .unwrap_or_default()
                .into_iter()
                .filter_map(|topic| topic.name)
                .map(|name| {
                    MetadataResponseTopic::default()
                        .with_name(Some(name))
                        .with_partitions((0..partitions).map(partition).collect())
                })
                .collect();
            ResponseKind::Metadata(
                MetadataResponse::default()
                    .with_brokers(vec![
                        MetadataResponseBroker::default()
                            .with_node_id(BrokerId(0))
                            .with_host(StrBytes::from_string(listen.ip().to_string()))
                            .with_port(i32::from(listen.port())),
                    ])
                    .with_controller_id(BrokerId(0))
                    .with_topics(topics),
            )
        }
        RequestKind::Produce(request) => {
            let acks = request.acks;
            let mut offsets = offsets
                .lock()
                .map_err(|_| anyhow::anyhow!("offsets lock poisoned"))?;
            let responses = request
                .topic_data
                .into_iter()
                .map(|topic| {
                    let partitions = topic
                        .partition_data
                        .into_iter()
                        .map(|data| {
                            let records = data.records.as_deref().map_or(0, record_count);
                            let next = offsets
                                .entry((topic.name.0.clone(), data.index))
                                .or_default();
                            let base_offset = *next;
                            *next += records;
                            PartitionProduceResponse::default()
                                .with_index(data.index)
                                .with_base_offset(base_offset)
                                .with_log_append_time_ms(-1)
                        })
                        .collect();
                    TopicProduceResponse::default()
                        .with_name(TopicName(topic.name.0))
                        .with_partition_responses(partitions)
                })
                .collect();
            if acks == 0 {
                return Ok(Bytes::new());
            }
            ResponseKind::Produce(ProduceResponse::default().with_responses(responses))
        }
        _ => anyhow::bail!("{api_key:?} is not answered by the floor server"),
    };
    let mut buf = BytesMut::with_capacity(256);
    buf.extend_from_slice(&[0; 4]);
    ResponseHeader::default()
        .with_correlation_id(header.correlation_id)
        .encode(&mut buf, api_key.response_header_version(version))?;
    response.encode(&mut buf, version)?;
    let size = i32::try_from(buf.len() - 4).context("response too large")?;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    Ok(buf.freeze())
}

/// Records in a run of v2 record batches (their headers' record counts).
fn record_count(mut records: &[u8]) -> i64 {
    let mut count = 0;
    while records.len() >= BATCH_HEADER_LEN {
        let length = i32::from_be_bytes([records[8], records[9], records[10], records[11]]);
        let at = RECORD_COUNT_AT;
        count += i64::from(i32::from_be_bytes([
            records[at],
            records[at + 1],
            records[at + 2],
            records[at + 3],
        ]));
        let Some(next) = usize::try_from(length).ok().and_then(|l| l.checked_add(12)) else {
            break;
        };
        records = records.get(next..).unwrap_or_default();
    }
    count
}
