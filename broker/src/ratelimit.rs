//! Rate-limited logging: a log line that a client can trigger at will (a bad frame, an
//! undecodable request, a refused connection) must not let that client write the
//! broker's disk. [`LogLimiter`] decides whether such a line may be written; the caller
//! counts every event in its own metric and the suppressed ones in
//! `strata_log_lines_suppressed_total`, so nothing is lost but the text.
//!
//! Each key (a peer IP, usually) has a token bucket of `burst` lines refilled over
//! `interval`, and every line must also pass one global bucket, so that many keys (an
//! attacker owns many IPv6 addresses) still add up to a bounded rate. The map of buckets
//! is bounded too: when it is full, idle buckets are dropped, and a key that still finds
//! no room is judged by the global bucket alone.
//!
//! A pure state machine: the caller passes the time in, so tests run without sleeping.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What the caller should do with one loggable event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Write the line; `suppressed` lines of this key were dropped since its last one
    /// (worth putting in the line, so a reader knows the log is thinned).
    Log { suppressed: u64 },
    /// Do not write it; count it as suppressed.
    Suppress,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
    suppressed: u64,
}

impl Bucket {
    fn full(burst: f64, now: Instant) -> Bucket {
        Bucket {
            tokens: burst,
            refilled: now,
            suppressed: 0,
        }
    }

    fn refill(&mut self, burst: f64, per_second: f64, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * per_second).min(burst);
        self.refilled = now;
    }

    fn take(&mut self) -> bool {
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Debug)]
struct State<K> {
    keys: HashMap<K, Bucket>,
    global: Bucket,
}

/// Per-key and global token buckets for log lines. Cheap enough to consult on every
/// event: one uncontended lock and a hash lookup.
#[derive(Debug)]
pub struct LogLimiter<K> {
    burst: f64,
    per_second: f64,
    global_burst: f64,
    global_per_second: f64,
    max_keys: usize,
    /// A std mutex: never held across an await, and the critical section is a few
    /// arithmetic operations.
    state: Mutex<State<K>>,
}

impl<K: Hash + Eq + Clone> LogLimiter<K> {
    /// At most `burst` lines per key per `interval` (refilled evenly), at most
    /// `global_burst` per `interval` over all keys, and at most `max_keys` keys tracked.
    pub fn new(
        burst: u32,
        global_burst: u32,
        interval: Duration,
        max_keys: usize,
        now: Instant,
    ) -> LogLimiter<K> {
        let seconds = interval.as_secs_f64().max(f64::MIN_POSITIVE);
        let burst = f64::from(burst.max(1));
        let global_burst = f64::from(global_burst.max(1));
        LogLimiter {
            burst,
            per_second: burst / seconds,
            global_burst,
            global_per_second: global_burst / seconds,
            max_keys: max_keys.max(1),
            state: Mutex::new(State {
                keys: HashMap::new(),
                global: Bucket::full(global_burst, now),
            }),
        }
    }

    /// Whether a line for `key` may be written at `now`.
    pub fn check(&self, key: &K, now: Instant) -> Verdict {
        // A poisoned lock only means another thread panicked mid-update of counters that
        // stay valid numbers; keep limiting.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let State { keys, global } = &mut *state;
        global.refill(self.global_burst, self.global_per_second, now);
        if !keys.contains_key(key) && keys.len() >= self.max_keys {
            // A bucket that has refilled completely holds no memory of anything: dropping
            // it changes no verdict.
            let (burst, per_second) = (self.burst, self.per_second);
            // Its suppressed count is dropped with it (the metric has counted each one):
            // keeping such buckets let a flood from many addresses fill the map for good.
            keys.retain(|_, bucket| {
                bucket.refill(burst, per_second, now);
                bucket.tokens < burst
            });
        }
        if !keys.contains_key(key) && keys.len() >= self.max_keys {
            return if global.take() {
                Verdict::Log { suppressed: 0 }
            } else {
                Verdict::Suppress
            };
        }
        let bucket = keys
            .entry(key.clone())
            .or_insert_with(|| Bucket::full(self.burst, now));
        bucket.refill(self.burst, self.per_second, now);
        if bucket.tokens >= 1.0 && global.take() {
            bucket.tokens -= 1.0;
            let suppressed = std::mem::take(&mut bucket.suppressed);
            Verdict::Log { suppressed }
        } else {
            bucket.suppressed += 1;
            Verdict::Suppress
        }
    }

    /// Keys tracked now (for tests and a sanity bound).
    pub fn tracked_keys(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    fn logged(limiter: &LogLimiter<u32>, key: u32, n: usize, now: Instant) -> usize {
        (0..n)
            .filter(|_| matches!(limiter.check(&key, now), Verdict::Log { .. }))
            .count()
    }

    #[test]
    fn a_key_gets_its_burst_then_its_refill_rate() {
        let start = Instant::now();
        let limiter = LogLimiter::new(5, 1000, MINUTE, 16, start);
        assert_eq!(logged(&limiter, 1, 100, start), 5);
        // 12 s is a fifth of the interval: one more line.
        assert_eq!(logged(&limiter, 1, 100, start + MINUTE / 5), 1);
        // Another key is not held back by the first.
        assert_eq!(logged(&limiter, 2, 100, start), 5);
    }

    #[test]
    fn the_next_line_reports_how_many_were_suppressed() {
        let start = Instant::now();
        let limiter = LogLimiter::new(1, 1000, MINUTE, 16, start);
        assert_eq!(limiter.check(&1, start), Verdict::Log { suppressed: 0 });
        for _ in 0..7 {
            assert_eq!(limiter.check(&1, start), Verdict::Suppress);
        }
        assert_eq!(
            limiter.check(&1, start + MINUTE),
            Verdict::Log { suppressed: 7 }
        );
    }

    #[test]
    fn many_keys_are_bounded_by_the_global_bucket_and_the_map_size() {
        let start = Instant::now();
        let limiter = LogLimiter::new(10, 50, MINUTE, 100, start);
        let total: usize = (0..10_000).map(|key| logged(&limiter, key, 3, start)).sum();
        assert_eq!(total, 50);
        assert!(limiter.tracked_keys() <= 100, "{}", limiter.tracked_keys());
    }

    #[test]
    fn idle_keys_make_room_for_new_ones() {
        let start = Instant::now();
        let limiter = LogLimiter::new(2, 1000, MINUTE, 4, start);
        for key in 0..4 {
            assert_eq!(logged(&limiter, key, 1, start), 1);
        }
        assert_eq!(limiter.tracked_keys(), 4);
        // Once the old keys have refilled they are forgotten, and a new key gets its own
        // bucket instead of sharing the global one.
        let later = start + MINUTE;
        assert_eq!(logged(&limiter, 99, 5, later), 2);
        assert_eq!(limiter.tracked_keys(), 1);
    }
}
