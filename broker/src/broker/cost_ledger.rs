//! What the cost ledger (`crate::cost`, a layer below) needs from the broker: the stored
//! bytes of the partitions it leads, the topics' budgets, the client hooks of the produce
//! and fetch handlers, and the admin API's answer.

use std::collections::HashMap;

use kafka_protocol::messages::{ProduceRequest, ResponseKind};

use super::Broker;
use crate::cost::{Costs, Usage, client_zone};

/// One ledger tick: this broker's stored bytes per topic, then storage accrual and
/// budget checks (`crate::cost::Ledger::tick`). A replicated topic: the manifests' live
/// bytes of the partitions this broker leads. A diskless topic: those of the partitions
/// it merge-owns (`crate::diskless::merge::owner`), their manifests' live bytes plus their
/// unmerged runs. A broker reports 0 for what another is responsible for, so the
/// cluster's sum follows responsibility when it moves.
pub async fn tick_broker(broker: &Broker) {
    let ledger = &broker.metrics.cost;
    let mut budgets = Vec::new();
    let mut stored = Vec::new();
    let live: Vec<i32> = broker.live_brokers().iter().map(|b| b.node_id).collect();
    for topic in broker.topics.all() {
        budgets.push((topic.name.clone(), topic.config.cost_budget_usd_month()));
        let bytes = match (&broker.diskless, topic.diskless) {
            (Some(diskless), true) => {
                diskless_stored_bytes(diskless, &topic, &live, broker.config.node_id).await
            }
            _ => topic
                .partitions
                .iter()
                .filter(|p| p.is_leader())
                .filter_map(|p| p.remote().map(|remote| remote.marks().live_bytes))
                .sum(),
        };
        stored.push((topic.name.clone(), bytes));
    }
    ledger.refresh_stored_bytes(&stored);
    ledger.tick(&budgets);
}

/// The bytes of a diskless topic's partitions that `node_id` merge-owns among `live`.
/// A manifest root is read again only when the view shows it changed (a merge moved
/// `merged`, retention or DeleteRecords moved the start).
async fn diskless_stored_bytes(
    diskless: &crate::diskless::Diskless,
    topic: &crate::registry::Topic,
    live: &[i32],
    node_id: i32,
) -> u64 {
    let mut bytes = 0;
    for partition in 0..topic.partition_count() {
        let key = crate::diskless::PartitionKey {
            topic_id: topic.id,
            partition,
        };
        if crate::diskless::merge::owner(live, &key) != Some(node_id) {
            continue;
        }
        let head = diskless.view.get(&key).head.clone();
        bytes += head.run_bytes;
        if head.merged <= head.log_start {
            continue;
        }
        let Ok(partition) = diskless.partition(key, &topic.name).await else {
            continue;
        };
        let marks = partition.remote.marks();
        if marks.end_offset.unwrap_or(0) < head.merged || marks.log_start_offset < head.log_start {
            let _ = partition.remote.reload().await;
        }
        bytes += partition.remote.marks().live_bytes;
    }
    bytes
}

/// A shared object's key → [(topic, bytes in it)].
type SharesByKey = HashMap<String, Vec<(String, f64)>>;

/// Splits the requests of a shared object (`diskless/...`) between the topics it holds,
/// by their bytes in it: an object this broker wrote lately from what the appender
/// recorded before its PUT, another from the view's runs that reference it. The index
/// of the view's runs is rebuilt on a miss, at most once a second.
pub struct SharedObjectAttribution {
    diskless: std::sync::Arc<crate::diskless::Diskless>,
    broker: std::sync::Weak<Broker>,
    /// (when built, key → [(topic, bytes)]). A std mutex: held for a lookup or a rebuild.
    index: std::sync::Mutex<(Option<std::time::Instant>, SharesByKey)>,
}

impl SharedObjectAttribution {
    /// Installs the attribution of shared objects on the broker's ledger.
    pub fn install(broker: &std::sync::Arc<Broker>) {
        let Some(diskless) = broker.diskless.clone() else {
            return;
        };
        broker
            .metrics
            .cost
            .set_attribution(std::sync::Arc::new(SharedObjectAttribution {
                diskless,
                broker: std::sync::Arc::downgrade(broker),
                index: Default::default(),
            }));
    }

    fn rebuild(&self) -> SharesByKey {
        let mut index = SharesByKey::new();
        let Some(broker) = self.broker.upgrade() else {
            return index;
        };
        let names: HashMap<uuid::Uuid, String> = broker
            .topics
            .all()
            .iter()
            .map(|t| (t.id, t.name.clone()))
            .collect();
        for (key, state) in self.diskless.view.all() {
            let Some(name) = names.get(&key.topic_id) else {
                continue;
            };
            for run in state.runs.values() {
                let shares = index.entry(run.key.clone()).or_default();
                match shares.iter_mut().find(|(topic, _)| topic == name) {
                    Some((_, bytes)) => *bytes += run.len as f64,
                    None => shares.push((name.clone(), run.len as f64)),
                }
            }
        }
        index
    }
}

impl crate::cost::KeyAttribution for SharedObjectAttribution {
    fn attribute(&self, key: &str) -> Option<Vec<(String, f64)>> {
        if let Some(shares) = self.diskless.appender.shares.get(key) {
            return Some(shares);
        }
        let mut index = self.index.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(shares) = index.1.get(key) {
            return Some(shares.clone());
        }
        if index
            .0
            .is_some_and(|built| built.elapsed() < std::time::Duration::from_secs(1))
        {
            return None;
        }
        *index = (Some(std::time::Instant::now()), self.rebuild());
        index.1.get(key).cloned()
    }
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
            // Any broker takes produce for a diskless partition.
            let led = (topic.diskless && topic.has_partition(p.index))
                || topic
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
