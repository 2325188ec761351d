//! Paces read-ahead by how late the broker's own threads run: the adaptive half of
//! "replays never starve live produce and fetch" (the other half is the fixed
//! `remote_read_rate_bytes`).
//!
//! The signal is the lateness of a 10 ms timer on the runtime that serves requests: when
//! that runtime's threads wait for a CPU (a replay's GETs, copies, disk-cache writes and
//! its consumer all compete for them) or are busy, a produce waits as long. Over each
//! 100 ms period the worst lateness is compared with `remote_read_backoff_lag_ms`, and
//! the segment cache halves or grows its read-ahead GETs in flight
//! ([`strata_tiering::SegmentCache::pace`]). While nothing reads ahead the loop checks
//! once a second and costs nothing else. Off by default (`remote_read_backoff_lag_ms` =
//! 0): on the shared 2-core benchmark machine it did not measurably lower produce p99
//! during a replay, and it slowed the replay.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::TierHost;

const TICK: Duration = Duration::from_millis(10);
const TICKS_PER_PERIOD: u32 = 10;
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// Whether a period whose worst timer lateness was `worst` counts as late.
pub fn is_late(worst: Duration, threshold: Duration) -> bool {
    worst > threshold
}

pub async fn run_read_pacer(broker: Arc<dyn TierHost>) {
    let Some(tiering) = broker.tiering().cloned() else {
        return;
    };
    let threshold_ms = broker.config().remote_read_backoff_lag_ms;
    if threshold_ms <= 0 {
        return;
    }
    let threshold = Duration::from_millis(threshold_ms as u64);
    let cache = &tiering.cache;
    let mut read_ahead_seen = cache.stats().read_ahead_chunks;
    loop {
        let read_ahead = cache.stats().read_ahead_chunks;
        let (limit, max) = cache.read_ahead_limit();
        if read_ahead == read_ahead_seen && limit == max {
            // Nothing read ahead since the last look, and nothing held back.
            tokio::select! {
                _ = broker.shutdown().cancelled() => return,
                _ = tokio::time::sleep(IDLE_CHECK) => {}
            }
            read_ahead_seen = cache.stats().read_ahead_chunks;
            continue;
        }
        read_ahead_seen = read_ahead;
        let mut worst = Duration::ZERO;
        for _ in 0..TICKS_PER_PERIOD {
            let start = Instant::now();
            tokio::select! {
                _ = broker.shutdown().cancelled() => return,
                _ = tokio::time::sleep(TICK) => {}
            }
            worst = worst.max(start.elapsed().saturating_sub(TICK));
        }
        cache.pace(is_late(worst, threshold));
    }
}
