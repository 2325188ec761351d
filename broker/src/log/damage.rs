//! Stored data found damaged, and what was done about it: process-wide counters (exported
//! as `strata_storage_damage_total` and `strata_storage_repairs_total`) and a log line per
//! partition and minute at most, so a damaged segment read by every fetch does not flood
//! the log.
//!
//! | tier | kind | found by |
//! |---|---|---|
//! | local | batch | a read (Fetch, ListOffsets) or an upload: framing or CRC-32C |
//! | local | index | a read whose index entry did not lead to its batch |
//! | remote | object | a remote read: framing or CRC-32C, after a fresh GET |
//!
//! Repairs (`action`): `local_index_rebuilt`, `local_dropped_for_remote` (the damaged
//! segment, and the local ones before it, were dropped; the remote tier serves them),
//! `remote_reuploaded` (the leader's local copy replaced the damaged object).

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use prometheus::{IntCounterVec, Opts};

pub static FOUND: LazyLock<IntCounterVec> = LazyLock::new(|| {
    IntCounterVec::new(
        Opts::new(
            "storage_damage_total",
            "Damaged stored data found (CRC-32C or framing), by tier (local, remote) and kind (batch, index, object)",
        ),
        &["tier", "kind"],
    )
    .expect("valid metric")
});

pub static REPAIRS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    IntCounterVec::new(
        Opts::new(
            "storage_repairs_total",
            "Repairs of damaged stored data, by action (local_index_rebuilt, local_dropped_for_remote, remote_reuploaded)",
        ),
        &["action"],
    )
    .expect("valid metric")
});

/// When each partition last logged damage (ms since the epoch).
static LAST_LOGGED: LazyLock<Mutex<HashMap<String, i64>>> = LazyLock::new(Default::default);

const LOG_INTERVAL_MS: i64 = 60_000;

/// Counts damage and says whether to log it now: the first time for `partition`, `tier`
/// and `kind`, then at most once a minute.
pub fn found(tier: &str, kind: &str, partition: &str) -> bool {
    FOUND.with_label_values(&[tier, kind]).inc();
    once_a_minute(&format!("{partition}/{tier}/{kind}"))
}

/// True the first time for `key`, then at most once a minute: for log lines and for
/// repair attempts that a read retried by a client would otherwise repeat.
pub fn once_a_minute(key: &str) -> bool {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let mut last = LAST_LOGGED.lock().unwrap_or_else(|e| e.into_inner());
    if last.len() > 10_000 {
        last.retain(|_, at| now - *at < LOG_INTERVAL_MS);
    }
    let at = last.entry(key.to_string()).or_insert(i64::MIN);
    if now.saturating_sub(*at) < LOG_INTERVAL_MS {
        return false;
    }
    *at = now;
    true
}

pub fn repaired(action: &str) {
    REPAIRS.with_label_values(&[action]).inc();
}
