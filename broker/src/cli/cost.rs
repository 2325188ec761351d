//! `strata cost`: the cost ledger of every live broker (GetCostLedger), summed per topic.
//! Each broker counts what it did (its requests, its replication fetches, the stored
//! bytes of the partitions it leads), so the cluster's figure is the sum.

use std::collections::BTreeMap;

use anyhow::Context;
use serde::Serialize;
use strata_proto::admin::{CostPrices, CostWindow, GetCostLedgerRequest, TopicCost};

/// As the brokers judge (`strata_broker::cost::JUDGE_AFTER_MS`).
const JUDGE_AFTER_MS: u64 = strata_broker::cost::JUDGE_AFTER_MS as u64;

use super::{Target, bytes, connect, every_broker, failed, print_json, table};

#[derive(Serialize)]
struct Broker {
    node_id: i32,
    prices: Option<CostPrices>,
}

#[derive(Serialize)]
struct Report {
    brokers: Vec<Broker>,
    topics: Vec<TopicCost>,
}

fn add(into: &mut Option<CostWindow>, from: Option<CostWindow>) {
    let Some(from) = from else { return };
    let into = into.get_or_insert_with(CostWindow::default);
    into.put_requests += from.put_requests;
    into.get_requests += from.get_requests;
    into.read_bytes += from.read_bytes;
    into.inter_zone_bytes += from.inter_zone_bytes;
    into.stored_byte_hours += from.stored_byte_hours;
    into.put_requests_usd += from.put_requests_usd;
    into.get_requests_usd += from.get_requests_usd;
    into.storage_usd += from.storage_usd;
    into.read_bytes_usd += from.read_bytes_usd;
    into.inter_zone_usd += from.inter_zone_usd;
    into.total_usd += from.total_usd;
}

/// Adds one broker's answer for a topic to the cluster's.
fn merge(into: &mut TopicCost, from: TopicCost) {
    add(&mut into.last_hour, from.last_hour);
    add(&mut into.last_day, from.last_day);
    add(&mut into.since_start, from.since_start);
    into.stored_bytes += from.stored_bytes;
    into.projected_usd_month += from.projected_usd_month;
    into.budget_usd_month = into.budget_usd_month.or(from.budget_usd_month);
    // The shortest span any broker scaled from: one that just started inflates the sum.
    into.projection_covered_ms = into.projection_covered_ms.min(from.projection_covered_ms);
    // Over budget in the cluster: the summed projection, not any one broker's, and only
    // on an hour of data at least (as the brokers judge).
    into.budget_exceeded = into.projection_covered_ms >= JUDGE_AFTER_MS
        && into
            .budget_usd_month
            .is_some_and(|budget| into.projected_usd_month > budget);
}

fn usd(value: f64) -> String {
    if value == 0.0 {
        "$0".to_string()
    } else if value < 0.01 {
        format!("${value:.6}")
    } else {
        format!("${value:.2}")
    }
}

pub async fn cost(target: &Target) -> anyhow::Result<()> {
    let mut brokers = Vec::new();
    let mut topics: BTreeMap<String, TopicCost> = BTreeMap::new();
    for (node, address) in every_broker(&target.admin).await? {
        let answer = async {
            connect(&address)
                .await?
                .get_cost_ledger(GetCostLedgerRequest {})
                .await
                .map_err(failed)
        }
        .await
        .with_context(|| format!("broker {node} ({address})"))?
        .into_inner();
        brokers.push(Broker {
            node_id: answer.answered_by,
            prices: answer.prices,
        });
        for topic in answer.topics {
            let into = topics
                .entry(topic.topic.clone())
                .or_insert_with(|| TopicCost {
                    topic: topic.topic.clone(),
                    projection_covered_ms: u64::MAX,
                    ..TopicCost::default()
                });
            merge(into, topic);
        }
    }
    let report = Report {
        brokers,
        topics: topics.into_values().collect(),
    };
    if target.json {
        return print_json(&report);
    }
    let window_usd = |w: &Option<CostWindow>| usd(w.as_ref().map_or(0.0, |w| w.total_usd));
    let rows = report
        .topics
        .iter()
        .map(|t| {
            let hour = t.last_hour.unwrap_or_default();
            vec![
                t.topic.clone(),
                window_usd(&t.last_hour),
                window_usd(&t.last_day),
                if t.projection_covered_ms < JUDGE_AFTER_MS {
                    format!("{} (< 1 h of data)", usd(t.projected_usd_month))
                } else {
                    usd(t.projected_usd_month)
                },
                match t.budget_usd_month {
                    None => "-".to_string(),
                    Some(b) if t.budget_exceeded => format!("{} EXCEEDED", usd(b)),
                    Some(b) => usd(b),
                },
                format!("{:.0}/{:.0}", hour.put_requests, hour.get_requests),
                bytes(hour.inter_zone_bytes as u64),
                bytes(t.stored_bytes),
            ]
        })
        .collect();
    table(
        &[
            "TOPIC",
            "LAST_HOUR",
            "LAST_DAY",
            "MONTH(PROJECTED)",
            "BUDGET",
            "PUT/GET(HOUR)",
            "INTER_ZONE(HOUR)",
            "STORED",
        ],
        rows,
    );
    Ok(())
}
