//! What the cost ledger (`crate::cost`, a layer below) needs from the broker: the stored
//! bytes of the partitions it leads, the topics' budgets, the client hooks of the produce
//! and fetch handlers, and the admin API's answer.

use kafka_protocol::messages::{ProduceRequest, ResponseKind};

use super::Broker;
use crate::cost::{Costs, Usage, client_zone};

/// One ledger tick: this broker's stored bytes per topic, then storage accrual and
/// budget checks (`crate::cost::Ledger::tick`). A topic with local partitions: the
/// manifests' live bytes of the partitions this broker leads. A topic without (diskless):
/// what the installed provider (`Ledger::set_stored_bytes_provider`) returns for it, else
/// 0, so that the cluster's sum follows responsibility when it moves between brokers.
pub fn tick_broker(broker: &Broker) {
    let ledger = &broker.metrics.cost;
    let mut budgets = Vec::new();
    let mut local = Vec::new();
    for topic in broker.topics.all() {
        budgets.push((topic.name.clone(), topic.config.cost_budget_usd_month()));
        let led = (!topic.partitions.is_empty()).then(|| {
            topic
                .partitions
                .iter()
                .filter(|p| p.is_leader())
                .filter_map(|p| p.remote().map(|remote| remote.marks().live_bytes))
                .sum()
        });
        local.push((topic.name.clone(), led));
    }
    ledger.refresh_stored_bytes(&local);
    ledger.tick(&budgets);
}

/// The record bytes a client of a known zone sent in one Produce, per partition, for the
/// partitions this broker leads of topics that exist: nothing else is counted, so a
/// client cannot create ledger entries or series with made-up topic names.
pub struct ClientProduce {
    zone: String,
    partitions: Vec<(String, i32, u64)>,
}

/// Before the Produce is handled (it consumes the request).
pub fn client_produce(
    broker: &Broker,
    client_id: &str,
    request: &ProduceRequest,
) -> Option<ClientProduce> {
    let zone = client_zone(client_id, None)?;
    let mut partitions = Vec::new();
    for data in &request.topic_data {
        let Some(topic) = broker.topics.get(data.name.as_str()) else {
            continue;
        };
        for p in &data.partition_data {
            let led = topic
                .partitions
                .iter()
                .any(|local| local.index == p.index && local.is_leader());
            let bytes = p.records.as_ref().map_or(0, |r| r.len() as u64);
            if led && bytes > 0 {
                partitions.push((topic.name.clone(), p.index, bytes));
            }
        }
    }
    (!partitions.is_empty()).then_some(ClientProduce { zone, partitions })
}

/// After the Produce: the partitions that accepted the records (all of them when
/// `acks=0` gives no response) crossed zones if the client's zone is another.
pub fn count_client_produce(
    broker: &Broker,
    produce: Option<ClientProduce>,
    response: Option<&ResponseKind>,
) {
    let Some(produce) = produce else { return };
    let accepted = |topic: &str, index: i32| match response {
        Some(ResponseKind::Produce(r)) => r.responses.iter().any(|t| {
            t.name.as_str() == topic
                && t.partition_responses
                    .iter()
                    .any(|p| p.index == index && p.error_code == 0)
        }),
        Some(_) => false,
        None => true,
    };
    for (topic, index, bytes) in &produce.partitions {
        if accepted(topic, *index) {
            broker
                .metrics
                .cost
                .client_bytes(topic, Some(&produce.zone), *bytes);
        }
    }
}

/// Fetch: the records sent to a client in a known zone other than this broker's.
pub fn count_client_fetch(broker: &Broker, zone: Option<String>, response: &ResponseKind) {
    let (Some(zone), ResponseKind::Fetch(response)) = (zone, response) else {
        return;
    };
    for topic in &response.responses {
        let bytes: usize = topic
            .partitions
            .iter()
            .filter_map(|p| p.records.as_ref().map(|r| r.len()))
            .sum();
        if bytes == 0 {
            continue;
        }
        let name = if topic.topic.is_empty() {
            match broker.topics.by_id(topic.topic_id) {
                Some(t) => t.name.clone(),
                None => continue,
            }
        } else {
            topic.topic.to_string()
        };
        broker
            .metrics
            .cost
            .client_bytes(&name, Some(&zone), bytes as u64);
    }
}

/// This broker's answer to the admin API's GetCostLedger.
pub fn ledger_answer(broker: &Broker) -> strata_proto::admin::GetCostLedgerResponse {
    use strata_proto::admin::{CostPrices, CostWindow, GetCostLedgerResponse, TopicCost};
    let ledger = &broker.metrics.cost;
    let p = ledger.prices();
    let window = |(u, c): (Usage, Costs)| CostWindow {
        put_requests: u.put_requests,
        get_requests: u.get_requests,
        read_bytes: u.read_bytes,
        inter_zone_bytes: u.inter_zone_bytes,
        stored_byte_hours: u.stored_byte_ms / 3_600_000.0,
        put_requests_usd: c.put_requests,
        get_requests_usd: c.get_requests,
        storage_usd: c.storage,
        read_bytes_usd: c.read_bytes,
        inter_zone_usd: c.inter_zone,
        total_usd: c.total(),
    };
    GetCostLedgerResponse {
        answered_by: broker.config.node_id,
        prices: Some(CostPrices {
            put_per_1000: p.put_per_1000,
            get_per_1000: p.get_per_1000,
            storage_per_gb_month: p.storage_per_gb_month,
            read_per_gb: p.read_per_gb,
            inter_zone_per_gb: p.inter_zone_per_gb,
        }),
        topics: ledger
            .snapshot()
            .into_iter()
            .map(|t| TopicCost {
                topic: t.topic,
                last_hour: Some(window(t.last_hour)),
                last_day: Some(window(t.last_day)),
                since_start: Some(window(t.since_start)),
                stored_bytes: t.stored_bytes,
                projected_usd_month: t.projection.usd_month,
                projection_covered_ms: t.projection.covered_ms.max(0) as u64,
                budget_usd_month: t.budget_usd_month,
                budget_exceeded: t.budget_exceeded,
            })
            .collect(),
    }
}
