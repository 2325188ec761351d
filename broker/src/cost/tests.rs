use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use prometheus::Registry;
use strata_tiering::store::{RequestClass, RequestObserver};

use super::*;

struct TestClock(AtomicI64);

impl Clock for TestClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

fn ledger() -> (Arc<TestClock>, Registry, Ledger) {
    let clock = Arc::new(TestClock(AtomicI64::new(1_000_000_000)));
    let registry = Registry::new();
    let ledger = Ledger::new(&registry, clock.clone()).expect("ledger");
    (clock, registry, ledger)
}

fn sample(registry: &Registry, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    for family in registry.gather() {
        if family.name() != name {
            continue;
        }
        for m in family.get_metric() {
            let matches = labels.iter().all(|(k, v)| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == *k && l.value() == *v)
            });
            if matches {
                // A family is either a counter or a gauge; the other reads 0.
                return Some(m.get_counter().get_value() + m.get_gauge().get_value());
            }
        }
    }
    None
}

fn usage(ledger: &Ledger, topic: &str) -> Usage {
    ledger
        .snapshot()
        .into_iter()
        .find(|t| t.topic == topic)
        .map(|t| t.since_start.0)
        .unwrap_or_default()
}

const ORDERS_KEY: &str =
    "topics/orders.00000000-0000-0000-0000-000000000001/0/00000000000000000000-x.segment";

#[test]
fn keys_are_charged_to_their_topic_shared_objects_and_lists_to_pseudo_topics() {
    let (_clock, registry, ledger) = ledger();
    RequestObserver::requests(&ledger, ORDERS_KEY, RequestClass::Put, 5);
    RequestObserver::requests(&ledger, ORDERS_KEY, RequestClass::Get, 2);
    RequestObserver::bytes_read(&ledger, ORDERS_KEY, 100);
    RequestObserver::requests(
        &ledger,
        "diskless/2026120716/1-abc.batches",
        RequestClass::Put,
        1,
    );
    ledger.lists("topics/", 3);
    let orders = usage(&ledger, "orders");
    assert_eq!(
        (orders.put_requests, orders.get_requests, orders.read_bytes),
        (5.0, 2.0, 100.0)
    );
    assert_eq!(usage(&ledger, SHARED).put_requests, 1.0);
    assert_eq!(usage(&ledger, CLUSTER).put_requests, 3.0);
    assert_eq!(
        sample(
            &registry,
            "cost_requests_total",
            &[("topic", "orders"), ("class", "put")]
        ),
        Some(5.0)
    );
    assert_eq!(
        sample(
            &registry,
            "cost_requests_total",
            &[("topic", "orders"), ("class", "get")]
        ),
        Some(2.0)
    );
    // Nothing but the key's topic and the two pseudo-topics has an entry.
    let names: Vec<String> = ledger.snapshot().into_iter().map(|t| t.topic).collect();
    assert_eq!(names, ["(cluster)", "(shared)", "orders"]);
}

struct ByRunBytes;

impl KeyAttribution for ByRunBytes {
    fn attribute(&self, key: &str) -> Option<Vec<(String, f64)>> {
        key.ends_with("known.batches")
            .then(|| vec![("a".to_string(), 300.0), ("b".to_string(), 100.0)])
    }
}

#[test]
fn an_attribution_splits_shared_objects_by_weight() {
    let (_clock, registry, ledger) = ledger();
    ledger.set_attribution(Arc::new(ByRunBytes));
    RequestObserver::requests(
        &ledger,
        "diskless/2026120716/1-known.batches",
        RequestClass::Put,
        4,
    );
    RequestObserver::bytes_read(&ledger, "diskless/2026120716/1-known.batches", 1000);
    assert_eq!(usage(&ledger, "a").put_requests, 3.0);
    assert_eq!(usage(&ledger, "b").put_requests, 1.0);
    assert_eq!(usage(&ledger, "a").read_bytes, 750.0);
    // A key the attribution does not know still goes to _shared.
    RequestObserver::requests(
        &ledger,
        "diskless/2026120716/1-other.batches",
        RequestClass::Get,
        1,
    );
    assert_eq!(usage(&ledger, SHARED).get_requests, 1.0);
    assert_eq!(
        sample(
            &registry,
            "cost_requests_total",
            &[("topic", "b"), ("class", "put")]
        ),
        Some(1.0)
    );
}

#[test]
fn dollars_are_counts_times_prices() {
    let (_clock, registry, ledger) = ledger();
    ledger.configure(
        PriceTable {
            put_per_1000: 10.0,
            get_per_1000: 1.0,
            inter_zone_per_gb: 0.5,
            ..PriceTable::ZERO
        },
        "a",
    );
    ledger.requests("t", RequestClass::Put, 3.0);
    ledger.requests("t", RequestClass::Get, 7.0);
    ledger.inter_zone("t", GB * 2.0);
    let usd = |item| {
        sample(
            &registry,
            "cost_estimated_usd_total",
            &[("topic", "t"), ("item", item)],
        )
    };
    assert!((usd("put_requests").expect("ok") - 0.03).abs() < 1e-12);
    assert!((usd("get_requests").expect("ok") - 0.007).abs() < 1e-12);
    assert!((usd("inter_zone").expect("ok") - 1.0).abs() < 1e-12);
    let snap = ledger.snapshot();
    assert!((snap[0].last_hour.1.total() - 1.037).abs() < 1e-12);
}

#[test]
fn client_bytes_count_only_for_a_known_other_zone() {
    let (_clock, _registry, ledger) = ledger();
    ledger.client_bytes("t", Some("b"), 100); // no rack configured: never inter-zone
    assert_eq!(usage(&ledger, "t").inter_zone_bytes, 0.0);
    ledger.configure(PriceTable::default(), "a");
    ledger.client_bytes("t", Some("a"), 100);
    ledger.client_bytes("t", None, 100);
    assert_eq!(usage(&ledger, "t").inter_zone_bytes, 0.0);
    ledger.client_bytes("t", Some("b"), 100);
    assert_eq!(usage(&ledger, "t").inter_zone_bytes, 100.0);
}

#[test]
fn client_zone_from_rack_id_or_client_id() {
    assert_eq!(
        client_zone("app", Some("use1-az1")).as_deref(),
        Some("use1-az1")
    );
    assert_eq!(
        client_zone("myapp,strata_az=us-east-1a", None).as_deref(),
        Some("us-east-1a")
    );
    // The rack id wins; an empty one falls back to the client id.
    assert_eq!(
        client_zone("myapp,strata_az=us-east-1a", Some("us-east-1b")).as_deref(),
        Some("us-east-1b")
    );
    assert_eq!(
        client_zone("strata_az=z1", Some(" ")).as_deref(),
        Some("z1")
    );
    assert_eq!(client_zone("myapp", None), None);
    assert_eq!(client_zone("myapp,strata_az=", None), None);
    assert_eq!(client_zone("xstrata_az=z", None), None);
}

#[test]
fn storage_accrues_per_tick_and_budgets_raise_the_metric_once_warned() {
    let (clock, registry, ledger) = ledger();
    ledger.configure(
        PriceTable {
            storage_per_gb_month: 1.0,
            put_per_1000: 1000.0,
            ..PriceTable::ZERO
        },
        "",
    );
    let topics = vec![("t".to_string(), Some(100.0)), ("free".to_string(), None)];
    ledger.set_stored_bytes("t", 1 << 30);
    ledger.tick(&topics);
    clock.0.fetch_add(MONTH_MS as i64 / 10, Ordering::Relaxed);
    ledger.tick(&topics);
    let storage = sample(
        &registry,
        "cost_estimated_usd_total",
        &[("topic", "t"), ("item", "storage")],
    );
    assert!((storage.expect("ok") - 0.1).abs() < 1e-9, "{storage:?}");
    // Under budget: a month of 1 GiB is $1.
    assert_eq!(
        sample(&registry, "cost_budget_exceeded", &[("topic", "t")]),
        Some(0.0)
    );
    let projected = sample(&registry, "cost_projected_usd_month", &[("topic", "t")]).expect("ok");
    assert!((projected - 1.0).abs() < 1e-9, "{projected}");
    // 10 PUTs at $1 within the last day, divided by the span the day's buckets cover
    // (23 h and the current partial hour), scaled to a month.
    ledger.requests("t", RequestClass::Put, 10.0);
    ledger.tick(&topics);
    let now = clock.now_ms();
    let covered = (23 * window::HOUR_MS + now.rem_euclid(window::HOUR_MS)) as f64;
    assert_eq!(
        sample(&registry, "cost_budget_exceeded", &[("topic", "t")]),
        Some(1.0)
    );
    let projected = sample(&registry, "cost_projected_usd_month", &[("topic", "t")]).expect("ok");
    assert!(
        (projected - (1.0 + 10.0 * MONTH_MS / covered)).abs() < 1e-6,
        "{projected}"
    );
    assert_eq!(
        sample(&registry, "cost_budget_usd_month", &[("topic", "t")]),
        Some(100.0)
    );
    assert_eq!(
        sample(&registry, "cost_budget_usd_month", &[("topic", "free")]),
        None
    );
    // A topic without a budget is never over it.
    ledger.requests("free", RequestClass::Put, 1000.0);
    ledger.tick(&topics);
    assert_eq!(
        sample(&registry, "cost_budget_exceeded", &[("topic", "free")]),
        Some(0.0)
    );
    // A deleted topic's series go.
    ledger.tick(&[("t".to_string(), Some(100.0))]);
    assert_eq!(
        sample(&registry, "cost_projected_usd_month", &[("topic", "free")]),
        None
    );
    assert!(ledger.snapshot().iter().all(|t| t.topic != "free"));
}

fn topics(names: &[&str], budget: Option<f64>) -> Vec<(String, Option<f64>)> {
    names.iter().map(|n| (n.to_string(), budget)).collect()
}

#[test]
fn only_the_two_pseudo_topics_outlive_a_tick_not_underscore_topics() {
    let (_clock, registry, ledger) = ledger();
    ledger.set_stored_bytes("_tmp-x", 1 << 30);
    ledger.requests("_tmp-x", RequestClass::Put, 1.0);
    ledger.requests(SHARED, RequestClass::Put, 1.0);
    ledger.requests(CLUSTER, RequestClass::Put, 1.0);
    ledger.tick(&topics(&["_tmp-x"], Some(1.0)));
    assert!(ledger.snapshot().iter().any(|t| t.topic == "_tmp-x"));
    // `_tmp-x` deleted: its entry and series go; the pseudo-topics stay.
    ledger.tick(&[]);
    let names: Vec<String> = ledger.snapshot().into_iter().map(|t| t.topic).collect();
    assert_eq!(names, [CLUSTER, SHARED]);
    for name in [
        "cost_stored_bytes",
        "cost_requests_total",
        "cost_projected_usd_month",
    ] {
        assert_eq!(
            sample(&registry, name, &[("topic", "_tmp-x")]),
            None,
            "{name}"
        );
    }
}

#[test]
fn budgets_are_judged_only_on_an_hour_of_data() {
    let (clock, registry, ledger) = ledger();
    ledger.configure(
        PriceTable {
            put_per_1000: 1000.0,
            ..PriceTable::ZERO
        },
        "",
    );
    let budgeted = topics(&["t"], Some(1.0));
    ledger.tick(&budgeted);
    // A start-up burst: projected hugely, flagged short, not judged.
    ledger.requests("t", RequestClass::Put, 10.0);
    clock.0.fetch_add(60_000, Ordering::Relaxed);
    assert!(ledger.tick(&budgeted).is_empty());
    let t = &ledger.snapshot()[0];
    assert!(t.projection.usd_month > 1.0, "{t:?}");
    assert_eq!(t.projection.covered_ms, 60_000);
    assert!(!t.budget_exceeded);
    assert_eq!(
        sample(&registry, "cost_budget_exceeded", &[("topic", "t")]),
        Some(0.0)
    );
    // An hour in, the same counts are judged.
    clock
        .0
        .fetch_add(JUDGE_AFTER_MS - 60_000, Ordering::Relaxed);
    assert_eq!(ledger.tick(&budgeted), ["t"]);
    assert_eq!(
        sample(&registry, "cost_budget_exceeded", &[("topic", "t")]),
        Some(1.0)
    );
}

#[test]
fn a_flapping_projection_warns_at_most_once_an_hour() {
    let (clock, _registry, ledger) = ledger();
    ledger.configure(
        PriceTable {
            put_per_1000: 1000.0,
            ..PriceTable::ZERO
        },
        "",
    );
    ledger.tick(&topics(&["t"], Some(1.0)));
    ledger.requests("t", RequestClass::Put, 10.0);
    clock.0.fetch_add(JUDGE_AFTER_MS, Ordering::Relaxed);
    let mut warned = 0;
    // Every 10 s for 50 minutes, the budget flips above and below the projection.
    for step in 0..300 {
        let budget = if step % 2 == 0 { 1.0 } else { 1e12 };
        warned += ledger.tick(&topics(&["t"], Some(budget))).len();
        clock.0.fetch_add(10_000, Ordering::Relaxed);
    }
    assert_eq!(warned, 1);
    // An hour after the first warning, the next one.
    clock
        .0
        .fetch_add(WARN_EVERY_MS - 300 * 10_000, Ordering::Relaxed);
    assert_eq!(ledger.tick(&topics(&["t"], Some(1.0))), ["t"]);
}

#[test]
fn stored_bytes_follow_what_this_broker_reports() {
    let (_clock, _registry, ledger) = ledger();
    let stored = |topic: &str| {
        ledger
            .snapshot()
            .into_iter()
            .find(|t| t.topic == topic)
            .map(|t| t.stored_bytes)
    };
    ledger.refresh_stored_bytes(&[("replicated".to_string(), 7), ("diskless".to_string(), 500)]);
    assert_eq!(stored("replicated"), Some(7));
    assert_eq!(stored("diskless"), Some(500));
    // Responsibility for the diskless partitions moves to another broker: this one
    // reports 0 from then on.
    ledger.refresh_stored_bytes(&[("replicated".to_string(), 7), ("diskless".to_string(), 0)]);
    assert_eq!(stored("diskless"), Some(0));
}
