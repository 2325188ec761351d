//! Applying client quotas to one request (security/quotas.rs measures): produce counts
//! the request's bytes, fetch the records in the response, and requests their handler
//! time. The response carries the largest throttle time, and the connection then reads
//! nothing for that long (KIP-219).
//!
//! A Fetch from a client already over its fetch quota is answered without records (the
//! records are not counted), as Kafka does. The request quota does not count Fetch,
//! Produce, JoinGroup and SyncGroup: their handler time is mostly waiting (long polls,
//! acks=all, rebalances), which Kafka does not count either; byte quotas cover the first
//! two. OffsetCommit and LeaveGroup are skipped as well: they wait for the offsets
//! topic's replicas.

use std::time::Duration;

use kafka_protocol::messages::ResponseKind;

use crate::broker::Broker;
use crate::security::Caller;
use crate::security::quotas::QuotaKind;

/// The throttle for one handled request, set into `response`. `produce` says the request
/// was a Produce (an acks=0 produce has no response, and is throttled by the pause alone).
pub fn throttle(
    broker: &Broker,
    caller: &Caller,
    client_id: &str,
    request_bytes: usize,
    handled_in: Duration,
    produce: bool,
    mut response: Option<&mut ResponseKind>,
) -> Duration {
    let quotas = &broker.security.quotas;
    let user = caller.principal.name.as_str();
    let mut throttles = Vec::with_capacity(2);
    if produce {
        throttles.push((
            QuotaKind::Produce,
            quotas.record(user, client_id, QuotaKind::Produce, request_bytes as f64),
        ));
    }
    match response.as_deref_mut() {
        Some(ResponseKind::Produce(_)) | None => {}
        Some(ResponseKind::Fetch(r)) => {
            let pending = quotas.pending(user, client_id, QuotaKind::Fetch);
            if !pending.is_zero() {
                // Empty record sets, not null ones: librdkafka refuses a null one (and
                // drops the whole response with it).
                for partition in r.responses.iter_mut().flat_map(|t| t.partitions.iter_mut()) {
                    partition.records = Some(bytes::Bytes::new());
                }
                throttles.push((QuotaKind::Fetch, pending));
            } else {
                let bytes: usize = r
                    .responses
                    .iter()
                    .flat_map(|t| &t.partitions)
                    .map(|p| p.records.as_ref().map_or(0, |b| b.len()))
                    .sum();
                throttles.push((
                    QuotaKind::Fetch,
                    quotas.record(user, client_id, QuotaKind::Fetch, bytes as f64),
                ));
            }
        }
        Some(_) => {}
    }
    let waits = produce
        || matches!(
            response.as_deref(),
            Some(
                ResponseKind::Fetch(_)
                    | ResponseKind::JoinGroup(_)
                    | ResponseKind::SyncGroup(_)
                    | ResponseKind::OffsetCommit(_)
                    | ResponseKind::LeaveGroup(_)
            )
        );
    if !waits {
        throttles.push((
            QuotaKind::Request,
            quotas.record(
                user,
                client_id,
                QuotaKind::Request,
                handled_in.as_secs_f64() * 1000.0,
            ),
        ));
    }
    let mut longest = Duration::ZERO;
    for (kind, throttle) in throttles {
        if throttle.is_zero() {
            continue;
        }
        broker
            .metrics
            .throttle_time_ms
            .with_label_values(&[&caller.principal.to_string(), kind.label()])
            .inc_by(throttle.as_millis() as u64);
        longest = longest.max(throttle);
    }
    if let Some(response) = response
        && !longest.is_zero()
    {
        // Whole milliseconds, rounded up: a throttle under 1 ms is still a throttle.
        let ms = longest.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        set_throttle_time(response, ms);
    }
    longest
}

/// Sets `throttle_time_ms` on the responses that carry it.
fn set_throttle_time(response: &mut ResponseKind, ms: i32) {
    macro_rules! throttled {
        ($($kind:ident),* $(,)?) => {
            match response {
                $(ResponseKind::$kind(r) => r.throttle_time_ms = ms,)*
                _ => {}
            }
        };
    }
    throttled!(
        Produce,
        Fetch,
        ListOffsets,
        Metadata,
        ApiVersions,
        CreateTopics,
        DeleteTopics,
        DeleteRecords,
        DescribeConfigs,
        AlterConfigs,
        CreatePartitions,
        IncrementalAlterConfigs,
        DescribeCluster,
        InitProducerId,
        FindCoordinator,
        JoinGroup,
        SyncGroup,
        Heartbeat,
        LeaveGroup,
        OffsetCommit,
        OffsetFetch,
        ListGroups,
        DescribeGroups,
        DeleteGroups,
        OffsetDelete,
        DescribeAcls,
        CreateAcls,
        DeleteAcls,
        DescribeUserScramCredentials,
        AlterUserScramCredentials,
        DescribeClientQuotas,
        AlterClientQuotas,
    );
}
