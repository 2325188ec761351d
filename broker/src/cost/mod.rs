//! The cost ledger: what each topic costs to run, estimated from what this broker counts
//! and a price table (`cost_price_table`, [`PriceTable`]).
//!
//! Counted, per topic:
//! - object-store requests by billing class ([`RequestClass`]: PUT/COPY/POST/LIST, and
//!   GET/SELECT/HEAD; DELETE is free), as the tiering crate's `ObjectStoreBackend` sends
//!   them (this ledger is its [`RequestObserver`]). A key under `topics/<topic>.<id>/` is the
//!   topic's. A shared object (`diskless/...`) holds several topics: a
//!   [`KeyAttribution`], when one is installed, splits its requests by weight; without
//!   one they go to the pseudo-topic [`SHARED`]. A LIST goes to the topic whose prefix
//!   it lists (the scrubber's per-partition LISTs, a topic deletion's), a wider LIST and
//!   any other key to [`CLUSTER`]. The backend is under `RetryingStore` and every other
//!   decorator, so each attempt of a retried call is counted (S3 bills each), and a
//!   multipart upload that fails counts the create and the parts it sent; requests
//!   object_store retries inside one call (HTTP-level retries) are not seen, so a
//!   failing store is under-counted a little;
//! - bytes read back from the store (successful GETs);
//! - bytes stored: the manifests' live bytes, set by the broker that leads each partition;
//!   for a diskless topic, by the merge owner of each partition (its manifest's live bytes
//!   plus its unmerged runs), 0 from the others ([`Ledger::refresh_stored_bytes`]); the
//!   cluster's figure is the sum over brokers;
//! - inter-zone bytes: replication records fetched by a follower from a leader of
//!   another `rack`, and produce/fetch records of clients whose zone is known
//!   ([`client_zone`]) and differs from this broker's rack (produce: only for topics
//!   that exist and partitions that accepted the records).
//!
//! Entries are only ever made for open topics and the two pseudo-topics, whose names
//! have parentheses, which no Kafka topic name can contain; a tick drops the rest.
//!
//! Each topic keeps fixed buckets ([`window`]): the last hour, the last day, and totals
//! since the broker started. Counters and windows are in memory and reset on restart. A
//! topic's projected month is its last day's buckets (or less, if seen for less) divided
//! by the span they cover, scaled to 730 hours, plus a month of storage at the current
//! size. Budgets are judged only once that span is an hour ([`JUDGE_AFTER_MS`]): when
//! this broker's share alone is above the topic's `cost.budget.usd.month`,
//! `strata_cost_budget_exceeded{topic}` is 1 and a warning is logged (at most once an
//! hour per topic, whatever the projection does in between). The topic-level signal is
//! the projection summed over brokers (the alert, `strata cost`). Every broker answers
//! for what it counted (`GetCostLedger`); `strata cost` sums the brokers.

mod prices;
pub mod window;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use prometheus::{CounterVec, GaugeVec, Opts, Registry};
use strata_tiering::store::{RequestClass, RequestObserver};

use crate::sys::Clock;
pub use prices::{GB, MONTH_MS, PriceTable};
use window::Windows;
pub use window::{Costs, Projection, Usage};

/// Where requests on shared objects go when no [`KeyAttribution`] claims them.
pub const SHARED: &str = "(shared)";
/// Where LISTs and keys that belong to no topic go.
pub const CLUSTER: &str = "(cluster)";
/// How often the ledger accrues storage and checks budgets (the broker's `cost_ledger`
/// loop, `crate::broker::cost_ledger::tick_broker`).
pub const TICK_MS: u64 = 5_000;
/// At most one budget warning per topic this often.
pub const WARN_EVERY_MS: i64 = 3_600_000;
/// Budgets are not judged on a projection that covers less than this: a start-up burst
/// scaled from a few minutes to a month would raise false alarms.
pub const JUDGE_AFTER_MS: i64 = window::HOUR_MS;

/// Splits a shared object's requests between the topics it holds: `(topic, weight)`
/// pairs (weights need not sum to 1; they are normalised). `None`: not known, charged to
/// [`SHARED`].
pub trait KeyAttribution: Send + Sync + 'static {
    fn attribute(&self, key: &str) -> Option<Vec<(String, f64)>>;
}

/// A client's zone: the Fetch request's `rack_id` (KIP-392's `client.rack`) if it has
/// one, else a `strata_az=<zone>` element of the comma-separated `client.id`
/// (`myapp,strata_az=us-east-1a`), the convention for requests that carry no rack.
pub fn client_zone(client_id: &str, rack_id: Option<&str>) -> Option<String> {
    if let Some(rack) = rack_id.map(str::trim).filter(|r| !r.is_empty()) {
        return Some(rack.to_string());
    }
    client_id
        .split(',')
        .filter_map(|item| item.trim().strip_prefix("strata_az="))
        .map(str::trim)
        .find(|zone| !zone.is_empty())
        .map(str::to_string)
}

struct TopicLedger {
    windows: Windows,
    stored_bytes: u64,
    budget_usd_month: Option<f64>,
    projected_usd_month: f64,
    exceeded: bool,
    last_warned_ms: Option<i64>,
}

impl TopicLedger {
    fn new(now_ms: i64) -> TopicLedger {
        TopicLedger {
            windows: Windows::new(now_ms),
            stored_bytes: 0,
            budget_usd_month: None,
            projected_usd_month: 0.0,
            exceeded: false,
            last_warned_ms: None,
        }
    }
}

/// One topic as [`Ledger::snapshot`] reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicCost {
    pub topic: String,
    pub last_hour: (Usage, Costs),
    pub last_day: (Usage, Costs),
    pub since_start: (Usage, Costs),
    pub stored_bytes: u64,
    pub projection: Projection,
    pub budget_usd_month: Option<f64>,
    /// This broker's share of the projection is over the budget (judged only once the
    /// projection covers an hour).
    pub budget_exceeded: bool,
}

struct CostMetrics {
    requests: CounterVec,
    read_bytes: CounterVec,
    inter_zone_bytes: CounterVec,
    stored_bytes: GaugeVec,
    estimated_usd: CounterVec,
    projected_usd_month: GaugeVec,
    budget_exceeded: GaugeVec,
    budget_usd_month: GaugeVec,
}

impl CostMetrics {
    /// Registered on the broker's registry, whose namespace adds `strata_`.
    fn register(registry: &Registry) -> prometheus::Result<CostMetrics> {
        fn counter(
            r: &Registry,
            name: &str,
            help: &str,
            labels: &[&str],
        ) -> prometheus::Result<CounterVec> {
            let c = CounterVec::new(Opts::new(name, help), labels)?;
            r.register(Box::new(c.clone()))?;
            Ok(c)
        }
        fn gauge(r: &Registry, name: &str, help: &str) -> prometheus::Result<GaugeVec> {
            let g = GaugeVec::new(Opts::new(name, help), &["topic"])?;
            r.register(Box::new(g.clone()))?;
            Ok(g)
        }
        Ok(CostMetrics {
            requests: counter(
                registry,
                "cost_requests_total",
                "Object-store requests by billing class (put: PUT/COPY/POST/LIST, get: GET/SELECT/HEAD), by topic, each retry attempt included; shared objects split by attribution.",
                &["topic", "class"],
            )?,
            read_bytes: counter(
                registry,
                "cost_read_bytes_total",
                "Bytes read back from the object store, by topic.",
                &["topic"],
            )?,
            inter_zone_bytes: counter(
                registry,
                "cost_inter_zone_bytes_total",
                "Bytes that crossed availability zones (replication from a leader of another rack; clients of a known other zone), by topic.",
                &["topic"],
            )?,
            stored_bytes: gauge(
                registry,
                "cost_stored_bytes",
                "Bytes in the object store by topic, for the partitions this broker leads (manifests' live bytes).",
            )?,
            estimated_usd: counter(
                registry,
                "cost_estimated_usd_total",
                "Estimated cost in US dollars by topic and item (put_requests, get_requests, storage, read_bytes, inter_zone), at the cost_price_table prices.",
                &["topic", "item"],
            )?,
            projected_usd_month: gauge(
                registry,
                "cost_projected_usd_month",
                "This broker's share of a topic's projected cost for a month (730 h): the last day's rate (over the span its buckets cover) plus a month of storage at the current size; sum over brokers.",
            )?,
            budget_exceeded: gauge(
                registry,
                "cost_budget_exceeded",
                "1 while this broker's share of a topic's projected month alone exceeds the whole topic's cost.budget.usd.month (judged once the projection covers an hour), else 0. The topic-level signal is the projection summed over brokers.",
            )?,
            budget_usd_month: gauge(
                registry,
                "cost_budget_usd_month",
                "A topic's cost.budget.usd.month (no series without a budget), for alerts on the projection summed over brokers.",
            )?,
        })
    }
}

/// The per-topic cost counts of this broker; see the module doc.
pub struct Ledger {
    clock: Arc<dyn Clock>,
    prices: RwLock<PriceTable>,
    /// This broker's zone (`rack`); empty: client traffic is never inter-zone.
    rack: RwLock<String>,
    attribution: RwLock<Option<Arc<dyn KeyAttribution>>>,
    /// Set once by the integrator; called on every tick, outside the `topics` lock.
    topics: Mutex<HashMap<String, TopicLedger>>,
    metrics: CostMetrics,
    /// When storage was last accrued.
    last_tick_ms: Mutex<Option<i64>>,
}

impl Ledger {
    pub fn new(registry: &Registry, clock: Arc<dyn Clock>) -> prometheus::Result<Ledger> {
        Ok(Ledger {
            clock,
            prices: RwLock::new(PriceTable::default()),
            rack: RwLock::new(String::new()),
            attribution: RwLock::new(None),
            topics: Mutex::new(HashMap::new()),
            metrics: CostMetrics::register(registry)?,
            last_tick_ms: Mutex::new(None),
        })
    }

    /// Sets the price table and this broker's zone (at start-up, from the configuration).
    pub fn configure(&self, prices: PriceTable, rack: &str) {
        *self.prices.write().unwrap_or_else(|p| p.into_inner()) = prices;
        *self.rack.write().unwrap_or_else(|p| p.into_inner()) = rack.trim().to_string();
    }

    pub fn prices(&self) -> PriceTable {
        *self.prices.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Installs how shared objects' requests are split between topics.
    pub fn set_attribution(&self, attribution: Arc<dyn KeyAttribution>) {
        *self.attribution.write().unwrap_or_else(|p| p.into_inner()) = Some(attribution);
    }

    /// Adds `usage` to `topic`, its counters and its dollar counters. The series are
    /// updated under the same lock as the entry, so a `tick` that drops the topic cannot
    /// run in between and leave a series behind.
    fn record(&self, topic: &str, usage: Usage) {
        let now = self.clock.now_ms();
        let costs = usage.costs(&self.prices());
        let mut topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        topics
            .entry(topic.to_string())
            .or_insert_with(|| TopicLedger::new(now))
            .windows
            .add(now, &usage);
        let m = &self.metrics;
        for (class, count) in [
            (RequestClass::Put, usage.put_requests),
            (RequestClass::Get, usage.get_requests),
        ] {
            if count > 0.0 {
                m.requests
                    .with_label_values(&[topic, class.as_str()])
                    .inc_by(count);
            }
        }
        if usage.read_bytes > 0.0 {
            m.read_bytes
                .with_label_values(&[topic])
                .inc_by(usage.read_bytes);
        }
        if usage.inter_zone_bytes > 0.0 {
            m.inter_zone_bytes
                .with_label_values(&[topic])
                .inc_by(usage.inter_zone_bytes);
        }
        for (item, dollars) in costs.items() {
            if dollars > 0.0 {
                m.estimated_usd
                    .with_label_values(&[topic, item])
                    .inc_by(dollars);
            }
        }
        drop(topics);
    }

    /// `count` requests of `class` for `topic` (fractional when a shared object's
    /// requests are split).
    pub fn requests(&self, topic: &str, class: RequestClass, count: f64) {
        if count > 0.0 {
            self.record(topic, Usage::requests(class, count));
        }
    }

    pub fn bytes_read(&self, topic: &str, bytes: f64) {
        if bytes > 0.0 {
            self.record(
                topic,
                Usage {
                    read_bytes: bytes,
                    ..Usage::default()
                },
            );
        }
    }

    pub fn inter_zone(&self, topic: &str, bytes: f64) {
        if bytes > 0.0 {
            self.record(
                topic,
                Usage {
                    inter_zone_bytes: bytes,
                    ..Usage::default()
                },
            );
        }
    }

    /// `bytes` of client records for `topic` sent to or from a client in `zone`: counted
    /// as inter-zone when the zone is known and differs from this broker's rack.
    pub fn client_bytes(&self, topic: &str, zone: Option<&str>, bytes: u64) {
        let Some(zone) = zone else { return };
        let crosses = {
            let rack = self.rack.read().unwrap_or_else(|p| p.into_inner());
            !rack.is_empty() && *rack != zone
        };
        if crosses {
            self.inter_zone(topic, bytes as f64);
        }
    }

    /// The bytes `topic` holds in the object store, for the partitions this broker leads
    /// (replaces the previous figure; storage cost accrues on it at each tick).
    pub fn set_stored_bytes(&self, topic: &str, bytes: u64) {
        let now = self.clock.now_ms();
        let mut topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        topics
            .entry(topic.to_string())
            .or_insert_with(|| TopicLedger::new(now))
            .stored_bytes = bytes;
        self.metrics
            .stored_bytes
            .with_label_values(&[topic])
            .set(bytes as f64);
    }

    /// Sets every open topic's stored bytes as this broker is responsible for them: the
    /// manifests' live bytes of the partitions it leads (diskless: merge-owns, unmerged
    /// runs included). A broker reports 0 for what another is responsible for, so the sum
    /// over brokers follows responsibility when it moves.
    pub fn refresh_stored_bytes(&self, topics: &[(String, u64)]) {
        for (topic, bytes) in topics {
            self.set_stored_bytes(topic, *bytes);
        }
    }

    /// Who a key's requests are charged to, with weights summing to 1.
    fn charge(&self, key: &str) -> Vec<(String, f64)> {
        if let Some(topic) = strata_tiering::keys::topic_of_key(key) {
            return vec![(topic.to_string(), 1.0)];
        }
        if key.starts_with("diskless/") {
            let attribution = self
                .attribution
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let split = attribution
                .and_then(|a| a.attribute(key))
                .and_then(|parts| {
                    let parts: Vec<(String, f64)> = parts
                        .into_iter()
                        .filter(|(_, w)| w.is_finite() && *w > 0.0)
                        .collect();
                    let total: f64 = parts.iter().map(|(_, w)| w).sum();
                    (total > 0.0).then(|| parts.into_iter().map(|(t, w)| (t, w / total)).collect())
                });
            return split.unwrap_or_else(|| vec![(SHARED.to_string(), 1.0)]);
        }
        vec![(CLUSTER.to_string(), 1.0)]
    }

    /// Accrues storage since the last tick and re-checks budgets. `topics` is every open
    /// topic with its `cost.budget.usd.month`; a topic no longer open is dropped (its
    /// series too); the two pseudo-topics [`SHARED`] and [`CLUSTER`] stay. Budgets are
    /// judged only once the projection covers at least an hour ([`JUDGE_AFTER_MS`]).
    /// Returns the topics a warning was logged for (at most once per [`WARN_EVERY_MS`]
    /// per topic, however often the projection crosses the budget).
    pub fn tick(&self, topics: &[(String, Option<f64>)]) -> Vec<String> {
        let now = self.clock.now_ms();
        let elapsed = {
            let mut last = self.last_tick_ms.lock().unwrap_or_else(|p| p.into_inner());
            let elapsed = last.map_or(0, |last| (now - last).max(0));
            *last = Some(now);
            elapsed
        };
        let prices = self.prices();
        let budgets: HashMap<&str, Option<f64>> =
            topics.iter().map(|(t, b)| (t.as_str(), *b)).collect();
        let mut warnings = Vec::new();
        let mut ledgers = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        ledgers.retain(|topic, _| {
            let keep = budgets.contains_key(topic.as_str()) || topic == SHARED || topic == CLUSTER;
            if !keep {
                self.remove_series(topic);
            }
            keep
        });
        for (topic, budget) in topics {
            ledgers
                .entry(topic.clone())
                .or_insert_with(|| TopicLedger::new(now))
                .budget_usd_month = *budget;
        }
        let m = &self.metrics;
        for (topic, ledger) in ledgers.iter_mut() {
            if ledger.stored_bytes > 0 && elapsed > 0 {
                let usage = Usage {
                    stored_byte_ms: ledger.stored_bytes as f64 * elapsed as f64,
                    ..Usage::default()
                };
                ledger.windows.add(now, &usage);
                let dollars = usage.costs(&prices).storage;
                if dollars > 0.0 {
                    m.estimated_usd
                        .with_label_values(&[topic, "storage"])
                        .inc_by(dollars);
                }
            }
            let projection = ledger
                .windows
                .projected_month(now, ledger.stored_bytes, &prices);
            ledger.projected_usd_month = projection.usd_month;
            let exceeded = projection.covered_ms >= JUDGE_AFTER_MS
                && ledger
                    .budget_usd_month
                    .is_some_and(|budget| projection.usd_month > budget);
            // Not reset when the projection dips below the budget: a projection that
            // flaps around it still warns at most once per WARN_EVERY_MS.
            if exceeded
                && ledger
                    .last_warned_ms
                    .is_none_or(|at| now - at >= WARN_EVERY_MS)
            {
                ledger.last_warned_ms = Some(now);
                warnings.push((
                    topic.clone(),
                    projection.usd_month,
                    ledger.budget_usd_month.unwrap_or_default(),
                ));
            }
            ledger.exceeded = exceeded;
            m.projected_usd_month
                .with_label_values(&[topic])
                .set(projection.usd_month);
            m.budget_exceeded
                .with_label_values(&[topic])
                .set(if exceeded { 1.0 } else { 0.0 });
            match ledger.budget_usd_month {
                Some(budget) => m.budget_usd_month.with_label_values(&[topic]).set(budget),
                None => {
                    let _ = m.budget_usd_month.remove_label_values(&[topic]);
                }
            }
        }
        drop(ledgers);
        for (topic, projected, budget) in &warnings {
            tracing::warn!(
                topic,
                projected_usd_month = projected,
                budget_usd_month = budget,
                "this broker's share of the topic's projected monthly cost exceeds its cost.budget.usd.month"
            );
        }
        warnings.into_iter().map(|(topic, _, _)| topic).collect()
    }

    fn remove_series(&self, topic: &str) {
        let m = &self.metrics;
        for class in [RequestClass::Put, RequestClass::Get] {
            let _ = m.requests.remove_label_values(&[topic, class.as_str()]);
        }
        for item in [
            "put_requests",
            "get_requests",
            "storage",
            "read_bytes",
            "inter_zone",
        ] {
            let _ = m.estimated_usd.remove_label_values(&[topic, item]);
        }
        for family in [&m.read_bytes, &m.inter_zone_bytes] {
            let _ = family.remove_label_values(&[topic]);
        }
        for family in [
            &m.stored_bytes,
            &m.projected_usd_month,
            &m.budget_exceeded,
            &m.budget_usd_month,
        ] {
            let _ = family.remove_label_values(&[topic]);
        }
    }

    /// Every topic this broker has counted, sorted by name.
    pub fn snapshot(&self) -> Vec<TopicCost> {
        let now = self.clock.now_ms();
        let prices = self.prices();
        let topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<TopicCost> = topics
            .iter()
            .map(|(topic, l)| {
                let priced = |u: Usage| (u, u.costs(&prices));
                TopicCost {
                    topic: topic.clone(),
                    last_hour: priced(l.windows.last_hour(now)),
                    last_day: priced(l.windows.last_day(now)),
                    since_start: priced(l.windows.since_start),
                    stored_bytes: l.stored_bytes,
                    projection: l.windows.projected_month(now, l.stored_bytes, &prices),
                    budget_usd_month: l.budget_usd_month,
                    budget_exceeded: l.exceeded,
                }
            })
            .collect();
        out.sort_by(|a, b| a.topic.cmp(&b.topic));
        out
    }
}

impl RequestObserver for Ledger {
    fn requests(&self, key: &str, class: RequestClass, count: u64) {
        for (topic, weight) in self.charge(key) {
            Ledger::requests(self, &topic, class, count as f64 * weight);
        }
    }

    fn lists(&self, prefix: &str, count: u64) {
        let topic = strata_tiering::keys::topic_of_key(prefix).unwrap_or(CLUSTER);
        Ledger::requests(self, topic, RequestClass::Put, count as f64);
    }

    fn bytes_read(&self, key: &str, bytes: u64) {
        for (topic, weight) in self.charge(key) {
            Ledger::bytes_read(self, &topic, bytes as f64 * weight);
        }
    }
}

#[cfg(test)]
mod tests;
