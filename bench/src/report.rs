//! `table`: turns the JSON lines the other modes print into a Markdown results table.
//!
//! Runs that share a name are repetitions of one scenario: the summary row shows the
//! median throughput with the range, and the latencies of the run whose throughput was
//! the median (percentiles of different runs cannot be averaged).

use std::path::PathBuf;

use anyhow::Context;
use serde_json::Value;

pub fn table(files: &[PathBuf], every_run: bool) -> anyhow::Result<String> {
    let mut results: Vec<Value> = Vec::new();
    for path in files {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        for line in text.lines().filter(|l| l.starts_with('{')) {
            results.push(
                serde_json::from_str(line)
                    .with_context(|| format!("parse a result line in {}", path.display()))?,
            );
        }
    }
    let mut groups: Vec<(String, Vec<&Value>)> = Vec::new();
    for result in &results {
        let name = if every_run {
            format!("run {}", groups.len() + 1)
        } else {
            text(&result["name"])
        };
        match groups.iter_mut().find(|(n, _)| *n == name) {
            Some((_, runs)) => runs.push(result),
            None => groups.push((name, vec![result])),
        }
    }
    let mut out = String::from(
        "| scenario | mode | partitions | record bytes | acks | records per run | runs | MiB/s | records/s | ack latency p50 / p99 / p999 (ms) | end-to-end p50 / p99 / p999 (ms) | status |\n\
         |---|---|---:|---:|---|---:|---:|---:|---:|---|---|---|\n",
    );
    for (_, runs) in &groups {
        out.push_str(&row(runs));
        out.push('\n');
    }
    Ok(out)
}

/// The throughput figures: the e2e mode nests its producer's.
fn numbers(result: &Value) -> &Value {
    if result["mode"] == "e2e" {
        &result["produce"]
    } else {
        result
    }
}

fn row(runs: &[&Value]) -> String {
    let mut by_throughput: Vec<&Value> = runs.to_vec();
    by_throughput.sort_by(|a, b| {
        let a = numbers(a)["mib_per_s"].as_f64().unwrap_or(0.0);
        let b = numbers(b)["mib_per_s"].as_f64().unwrap_or(0.0);
        a.total_cmp(&b)
    });
    let median = by_throughput[by_throughput.len() / 2];
    let failures: Vec<String> = runs
        .iter()
        .filter(|r| r["ok"].as_bool() != Some(true))
        .map(|r| failure(r))
        .collect();
    let status = if failures.is_empty() {
        "ok".to_string()
    } else {
        format!("FAILED {}/{}: {}", failures.len(), runs.len(), failures[0])
    };
    let mut throughput = fixed(&numbers(median)["mib_per_s"], 1);
    if runs.len() > 1 {
        let low = fixed(&numbers(by_throughput[0])["mib_per_s"], 1);
        let high = fixed(&numbers(by_throughput[runs.len() - 1])["mib_per_s"], 1);
        throughput = format!("{throughput} ({low}–{high})");
    }
    let cells = [
        text(&median["name"]),
        text(&median["mode"]),
        text(&median["partitions"]),
        text(&median["record_size"]),
        text(&median["acks"]),
        text(&numbers(median)["records"]),
        runs.len().to_string(),
        throughput,
        fixed(&numbers(median)["records_per_s"], 0),
        latency(&numbers(median)["ack_latency_ms"]),
        latency(&median["e2e_latency_ms"]),
        status,
    ];
    format!("| {} |", cells.join(" | "))
}

fn failure(result: &Value) -> String {
    for field in [
        &result["error"],
        &result["first_error"],
        &result["produce"]["first_error"],
        &result["consume"]["first_error"],
    ] {
        if let Some(message) = field.as_str() {
            return message.replace('|', "/");
        }
    }
    "see the JSON line".to_string()
}

fn text(value: &Value) -> String {
    match value {
        Value::Null => "–".into(),
        Value::String(s) => s.replace('|', "/"),
        other => other.to_string(),
    }
}

fn fixed(value: &Value, decimals: usize) -> String {
    value
        .as_f64()
        .map_or_else(|| "–".into(), |v| format!("{v:.decimals$}"))
}

fn latency(value: &Value) -> String {
    if value.is_null() {
        return "–".into();
    }
    format!(
        "{} / {} / {}",
        fixed(&value["p50"], 2),
        fixed(&value["p99"], 2),
        fixed(&value["p999"], 2)
    )
}
