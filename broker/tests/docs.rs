//! docs/configuration.md must list every broker setting and every topic config with the
//! default the code has, and nothing that is not a setting, so the reference cannot
//! drift from the code.

use std::collections::BTreeMap;

use strata_broker::broker::dynamic_config::SETTINGS;
use strata_broker::config::Config;
use strata_broker::topic_config::{DEFS, REMOVED};

/// Rows of the markdown tables: first cell (a `name` in backticks) → second cell.
fn rows(doc: &str) -> BTreeMap<String, String> {
    doc.lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let name = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            Some((name.to_string(), cells.get(2)?.to_string()))
        })
        .collect()
}

fn doc() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/configuration.md"
    ))
    .expect("read docs/configuration.md")
}

/// A default as the reference writes it: `` `value` `` first, or "empty" for "".
fn documented_as(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) if s.is_empty() => "empty".to_string(),
        toml::Value::String(s) => format!("`{s}`"),
        other => format!("`{other}`"),
    }
}

#[test]
fn configuration_reference_lists_every_setting_with_its_default() {
    let rows = rows(&doc());
    let defaults = toml::Table::try_from(Config::default()).expect("serialize defaults");
    let mut wrong = Vec::new();
    for (name, value) in &defaults {
        let expected = documented_as(value);
        match rows.get(name) {
            None => wrong.push(format!("{name}: no row")),
            Some(cell) if !cell.starts_with(&expected) => wrong.push(format!(
                "{name}: documented default `{cell}`, code has {expected}"
            )),
            Some(_) => {}
        }
    }
    let config = Config::default();
    for def in DEFS {
        // A topic config defaults to a broker setting (named in backticks) or is fixed.
        let expected = if def.broker_setting == "(fixed)" {
            documented_as(&toml::Value::String((def.default)(&config)))
        } else {
            format!("`{}`", def.broker_setting)
        };
        match rows.get(def.name) {
            None => wrong.push(format!("{}: no row", def.name)),
            Some(cell) if !cell.starts_with(&expected) => wrong.push(format!(
                "{}: documented default `{cell}`, code has {expected}",
                def.name
            )),
            Some(_) => {}
        }
    }
    for (name, _) in REMOVED {
        match rows.get(*name) {
            Some(cell) if cell.starts_with("removed") => {}
            other => wrong.push(format!("{name}: documented as {other:?}, not as removed")),
        }
    }
    // A broker config under its Kafka name names its setting (`min.insync.replicas` and
    // `unclean.leader.election.enable` are topic configs too, defaulting to that setting),
    // and the dynamic ones say so.
    // (Settings listed under Strata's own name are in the broker settings table.)
    for setting in SETTINGS.iter().filter(|s| s.name != s.setting) {
        let expected = format!("`{}`", setting.setting);
        match rows.get(setting.name) {
            None => wrong.push(format!("{}: no row", setting.name)),
            Some(cell) if !cell.starts_with(&expected) => wrong.push(format!(
                "{}: documented setting `{cell}`, code has {expected}",
                setting.name
            )),
            Some(_) => {}
        }
    }
    let doc = doc();
    for setting in SETTINGS.iter().filter(|s| s.dynamic) {
        let row = format!("| `{}` | `{}` | yes |", setting.name, setting.setting);
        if !doc.contains(&row) {
            wrong.push(format!("{}: not documented as dynamic", setting.name));
        }
    }
    assert!(
        wrong.is_empty(),
        "docs/configuration.md is out of date:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn configuration_reference_lists_nothing_that_is_not_a_setting() {
    let defaults = toml::Table::try_from(Config::default()).expect("serialize defaults");
    let stale: Vec<String> = rows(&doc())
        .into_keys()
        .filter(|name| {
            !defaults.contains_key(name)
                && !DEFS.iter().any(|d| d.name == name)
                && !REMOVED.iter().any(|(removed, _)| removed == name)
                && !SETTINGS.iter().any(|s| s.name == name)
        })
        .collect();
    assert!(
        stale.is_empty(),
        "docs/configuration.md documents settings the code does not have: {stale:?}"
    );
}
