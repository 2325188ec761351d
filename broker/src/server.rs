//! The Kafka listener: accepts connections and runs one task per connection.
//!
//! A connection handles its requests one at a time, in order, as Kafka does (clients
//! match responses to requests by order as well as by correlation id). Shutdown: the
//! listener stops accepting, each connection finishes the request it is handling and
//! closes when it would wait for the next one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use kafka_protocol::messages::ApiKey;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;
use tracing::{debug, info, warn};

use crate::broker::Broker;
use crate::handlers;
use crate::protocol::{self, DecodeError};

pub async fn accept_loop(
    broker: Arc<Broker>,
    listener: TcpListener,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let broker = broker.clone();
                let cancel = cancel.clone();
                tracker.spawn(async move {
                    broker.metrics.connections.inc();
                    if let Err(e) = connection(&broker, stream, peer, cancel).await {
                        debug!(%peer, error = %e, "connection ended with an error");
                    }
                    broker.metrics.connections.dec();
                });
            }
            Err(e) => {
                // Usually EMFILE: back off instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
    info!("stopped accepting Kafka connections");
}

async fn connection(
    broker: &Arc<Broker>,
    stream: TcpStream,
    peer: SocketAddr,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let (mut reader, writer) = stream.into_split();
    let mut writer = BufWriter::with_capacity(64 * 1024, writer);
    let max = broker.config.max_request_bytes as usize;
    // As Kafka shows it in DescribeGroups.
    let client_host = format!("/{}", peer.ip());
    loop {
        let frame = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            frame = protocol::read_frame(&mut reader, max) => frame,
        };
        let frame = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) => return Ok(()),
            Err(protocol::FrameError::Io(e)) => {
                debug!(%peer, error = %e, "connection closed by the peer");
                return Ok(());
            }
            Err(e) => {
                warn!(%peer, error = %e, "closing connection: bad frame");
                broker
                    .metrics
                    .error("(frame)", kafka_protocol::ResponseError::InvalidRequest);
                return Ok(());
            }
        };
        let started = Instant::now();
        let request = match protocol::decode_request(frame) {
            Ok(request) => request,
            Err(DecodeError::UnsupportedVersion {
                api_key: ApiKey::ApiVersions,
                version,
                correlation_id,
            }) => {
                debug!(%peer, version, "ApiVersions version too new; answering per KIP-511");
                let bytes = protocol::api_versions_fallback(correlation_id)
                    .map_err(std::io::Error::other)?;
                writer.write_all(&bytes).await?;
                writer.flush().await?;
                continue;
            }
            Err(e) => {
                warn!(%peer, error = %e, "closing connection: undecodable request");
                broker
                    .metrics
                    .error("(decode)", kafka_protocol::ResponseError::InvalidRequest);
                return Ok(());
            }
        };
        let api_key = request.api_key;
        let version = request.version;
        let correlation_id = request.header.correlation_id;
        let api = api_name(api_key);
        let span = tracing::trace_span!(target: crate::telemetry::TRACE, "kafka.request",
            otel.name = api, otel.kind = "server", kafka.api = api, kafka.version = version,
            kafka.client_id = request.header.client_id.as_ref().map_or("", |c| c.as_str()),
            kafka.correlation_id = correlation_id, net.peer = %peer);
        let response = handlers::handle(broker, request, &client_host)
            .instrument(span.clone())
            .await;
        if let Some(response) = response {
            let encoded = span.in_scope(|| {
                protocol::encode_response(api_key, version, correlation_id, &response)
            });
            match encoded {
                Ok(bytes) => {
                    writer.write_all(&bytes).await?;
                    writer.flush().await?;
                }
                Err(e) => {
                    warn!(%peer, api, version, error = %e, "closing connection: could not encode a response");
                    return Ok(());
                }
            }
        }
        broker.metrics.requests.with_label_values(&[api]).inc();
        broker
            .metrics
            .request_latency
            .with_label_values(&[api])
            .observe(started.elapsed().as_secs_f64());
    }
}

/// A static name per API for metric labels.
pub fn api_name(api_key: ApiKey) -> &'static str {
    match api_key {
        ApiKey::Produce => "Produce",
        ApiKey::Fetch => "Fetch",
        ApiKey::ListOffsets => "ListOffsets",
        ApiKey::Metadata => "Metadata",
        ApiKey::ApiVersions => "ApiVersions",
        ApiKey::CreateTopics => "CreateTopics",
        ApiKey::DeleteTopics => "DeleteTopics",
        ApiKey::DeleteRecords => "DeleteRecords",
        ApiKey::DescribeConfigs => "DescribeConfigs",
        ApiKey::AlterConfigs => "AlterConfigs",
        ApiKey::CreatePartitions => "CreatePartitions",
        ApiKey::IncrementalAlterConfigs => "IncrementalAlterConfigs",
        ApiKey::DescribeCluster => "DescribeCluster",
        _ => "other",
    }
}
