//! What the cost ledger (`crate::cost`, a layer below) needs from the broker: the stored
//! bytes of the partitions it leads, the topics' budgets, the client hooks of the produce
//! and fetch handlers, and the admin API's answer.

use kafka_protocol::messages::{ProduceRequest, ResponseKind};

use super::Broker;
use crate::cost::{Costs, Usage, client_zone};

/// One ledger tick: this broker's stored bytes per topic (the manifests' live bytes of
/// the partitions it leads; the cluster's figure is the sum over brokers), then storage
/// accrual and budget checks (`crate::cost::Ledger::tick`).
pub fn tick_broker(broker: &Broker) {
    let ledger = &broker.metrics.cost;
    let mut budgets = Vec::new();
    for topic in broker.topics.all() {
        budgets.push((topic.name.clone(), topic.config.cost_budget_usd_month()));
        // A topic without local partitions (diskless) has no leader here: whoever knows
        // its stored bytes sets them (`Ledger::set_stored_bytes`); they are not zeroed.
        if topic.partitions.is_empty() {
            continue;
        }
        let stored: u64 = topic
            .partitions
            .iter()
            .filter(|p| p.is_leader())
            .filter_map(|p| p.remote().map(|remote| remote.marks().live_bytes))
            .sum();
        ledger.set_stored_bytes(&topic.name, stored);
    }
    ledger.tick(&budgets);
}

/// Produce: the records of a client in a known zone other than this broker's cross zones
/// (counted whether or not they are accepted: the transfer happened).
pub fn count_client_produce(broker: &Broker, client_id: &str, request: &ProduceRequest) {
    let Some(zone) = client_zone(client_id, None) else {
        return;
    };
    for topic in &request.topic_data {
        let bytes: usize = topic
            .partition_data
            .iter()
            .filter_map(|p| p.records.as_ref().map(|r| r.len()))
            .sum();
        broker
            .metrics
            .cost
            .client_bytes(topic.name.as_str(), Some(&zone), bytes as u64);
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
                projected_usd_month: t.projected_usd_month,
                budget_usd_month: t.budget_usd_month,
                budget_exceeded: t.budget_exceeded,
            })
            .collect(),
    }
}
