//! The replication throttle: a bound, in bytes per second, on the catch-up traffic of
//! replicas a reassignment is adding, so that a rebalance does not take the disk and
//! network producers and consumers need (Kafka's `leader.replication.throttled.rate` and
//! `follower.replication.throttled.rate`, dynamic broker configs).
//!
//! Which replicas are throttled is decided per partition, not by configuration: a replica
//! in the partition's `adding` list and not in its (maximal) ISR
//! ([`crate::partition::isr::ReplicaState::catching_up`]). In-sync followers are never
//! throttled, so acks=all produce does not wait on the throttle. Kafka's topic configs
//! `*.replication.throttled.replicas` are accepted and have no effect.
//!
//! Each side is a token bucket with debt. While the balance is not negative, throttled
//! partitions may move data (one partition's answer at most `rate` bytes, its first batch
//! whole); what they move is charged, and a balance driven below zero holds every
//! throttled partition back until it has refilled, at `rate` bytes per second. Over any
//! stretch of time the throttled bytes therefore stay within `rate` per second plus one
//! second's burst and one answer. The leader leaves held partitions out of its answer
//! (the follower's fetch still counts, so the ISR sees it), the follower leaves them out
//! of its request; both sides are checked, so whichever rate is lower wins.
//!
//! The buckets are pure state with the time passed in; [`Throttle`] adds the rate in
//! force, a lock and the metrics.

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use prometheus::IntCounter;

use crate::config::Config;
use crate::telemetry::Metrics;

/// The rate that means no throttle (Kafka's default, Long.MAX_VALUE).
pub const UNLIMITED: i64 = i64::MAX;

/// The most a bucket saves up while idle: one second at its rate.
const BURST_SECONDS: f64 = 1.0;

/// A token bucket that may go into debt. `balance` is in bytes.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    balance: f64,
    refilled: Instant,
}

impl Bucket {
    fn new(now: Instant) -> Bucket {
        Bucket {
            balance: 0.0,
            refilled: now,
        }
    }

    fn refill(&mut self, rate: f64, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.balance = (self.balance + elapsed * rate).min(rate * BURST_SECONDS);
        self.refilled = now;
    }

    /// How long throttled traffic must wait, if it must.
    fn hold(&mut self, rate: f64, now: Instant) -> Option<Duration> {
        self.refill(rate, now);
        (self.balance < 0.0).then(|| Duration::from_secs_f64(-self.balance / rate))
    }

    /// Charges `bytes`; returns the time this adds to the hold.
    fn charge(&mut self, rate: f64, bytes: usize, now: Instant) -> Duration {
        self.refill(rate, now);
        let debt_before = (-self.balance).max(0.0);
        self.balance -= bytes as f64;
        let debt_after = (-self.balance).max(0.0);
        Duration::from_secs_f64((debt_after - debt_before) / rate)
    }
}

/// One side's throttle: the rate in force and its bucket.
pub struct Throttle {
    rate: AtomicI64,
    /// A std mutex: never held across an await; a few arithmetic operations.
    bucket: Mutex<Bucket>,
    bytes: IntCounter,
    held_ms: IntCounter,
}

impl Throttle {
    fn new(rate: i64, bytes: IntCounter, held_ms: IntCounter) -> Throttle {
        Throttle {
            rate: AtomicI64::new(rate),
            bucket: Mutex::new(Bucket::new(Instant::now())),
            bytes,
            held_ms,
        }
    }

    /// The rate in force, if there is one.
    pub fn rate(&self) -> Option<i64> {
        let rate = self.rate.load(Ordering::Relaxed);
        (rate != UNLIMITED && rate > 0).then_some(rate)
    }

    fn set_rate(&self, rate: i64) {
        if self.rate.swap(rate, Ordering::Relaxed) != rate {
            // A new rate starts from an even balance: no debt or savings from the old one.
            *self.lock() = Bucket::new(Instant::now());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Bucket> {
        self.bucket.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long throttled partitions must wait before they may move data again; `None`
    /// when they may now (or no throttle is set).
    pub fn hold(&self, now: Instant) -> Option<Duration> {
        let rate = self.rate()?;
        self.lock().hold(rate as f64, now)
    }

    /// The most one throttled partition's answer should carry (its first batch is sent
    /// whole regardless).
    pub fn partition_limit(&self) -> Option<usize> {
        self.rate()
            .map(|rate| usize::try_from(rate).unwrap_or(usize::MAX).max(1))
    }

    /// Counts `bytes` of throttled traffic that moved.
    pub fn charge(&self, bytes: usize, now: Instant) {
        let Some(rate) = self.rate() else {
            return;
        };
        if bytes == 0 {
            return;
        }
        let held = self.lock().charge(rate as f64, bytes, now);
        self.bytes.inc_by(bytes as u64);
        self.held_ms.inc_by(held.as_millis() as u64);
    }
}

/// Both sides' throttles of one broker.
pub struct ReplicationThrottle {
    pub leader: Throttle,
    pub follower: Throttle,
}

impl ReplicationThrottle {
    pub fn new(config: &Config, metrics: &Metrics) -> ReplicationThrottle {
        let side = |side: &str, rate: i64| {
            Throttle::new(
                rate,
                metrics
                    .replication_throttled_bytes
                    .with_label_values(&[side]),
                metrics.replication_throttled_ms.with_label_values(&[side]),
            )
        };
        ReplicationThrottle {
            leader: side("leader", config.leader_replication_throttled_rate),
            follower: side("follower", config.follower_replication_throttled_rate),
        }
    }

    /// Takes the rates of `config` (the configuration in force, dynamic values applied).
    pub fn set_rates(&self, config: &Config) {
        self.leader
            .set_rate(config.leader_replication_throttled_rate);
        self.follower
            .set_rate(config.follower_replication_throttled_rate);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_holds_after_a_charge_until_the_rate_repaid_it() {
        let start = Instant::now();
        let mut bucket = Bucket::new(start);
        assert_eq!(bucket.hold(1000.0, start), None, "an even balance may send");
        let held = bucket.charge(1000.0, 500, start);
        assert_eq!(held, Duration::from_millis(500));
        assert_eq!(
            bucket.hold(1000.0, start + Duration::from_millis(200)),
            Some(Duration::from_millis(300))
        );
        assert_eq!(
            bucket.hold(1000.0, start + Duration::from_millis(500)),
            None
        );
    }

    #[test]
    fn idle_time_saves_at_most_one_second_of_rate() {
        let start = Instant::now();
        let mut bucket = Bucket::new(start);
        let later = start + Duration::from_secs(60);
        // A minute idle saves 1000 bytes, not 60000: 1500 bytes leave 500 of debt.
        let held = bucket.charge(1000.0, 1500, later);
        assert_eq!(held, Duration::from_millis(500));
        assert!(bucket.hold(1000.0, later).is_some());
    }

    #[test]
    fn bytes_over_a_stretch_stay_within_the_rate_plus_a_burst() {
        // A sender that sends 300 bytes whenever it may, polled every 10 ms for 10 s.
        let start = Instant::now();
        let mut bucket = Bucket::new(start);
        let mut sent = 0usize;
        for tick in 0..1000 {
            let now = start + Duration::from_millis(10 * tick);
            if bucket.hold(1000.0, now).is_none() {
                bucket.charge(1000.0, 300, now);
                sent += 300;
            }
        }
        assert!(sent <= 10 * 1000 + 1000 + 300, "sent {sent}");
        assert!(
            sent >= 9 * 1000,
            "sent {sent}: the throttle is a rate, not a stop"
        );
    }

    #[test]
    fn no_rate_means_no_hold_and_nothing_counted() {
        let metrics = Metrics::new().expect("metrics");
        let throttle = ReplicationThrottle::new(&Config::default(), &metrics);
        let now = Instant::now();
        throttle.leader.charge(1 << 30, now);
        assert_eq!(throttle.leader.hold(now), None);
        assert_eq!(throttle.leader.partition_limit(), None);
        assert_eq!(
            metrics
                .replication_throttled_bytes
                .with_label_values(&["leader"])
                .get(),
            0
        );

        let config = Config {
            leader_replication_throttled_rate: 1000,
            ..Config::default()
        };
        throttle.set_rates(&config);
        throttle.leader.charge(3000, now);
        assert!(throttle.leader.hold(now).is_some());
        assert_eq!(
            throttle.follower.hold(now),
            None,
            "the follower side is unset"
        );
        assert_eq!(
            metrics
                .replication_throttled_bytes
                .with_label_values(&["leader"])
                .get(),
            3000
        );
        assert_eq!(
            metrics
                .replication_throttled_ms
                .with_label_values(&["leader"])
                .get(),
            3000
        );
        // Clearing the rate lifts the hold at once.
        throttle.set_rates(&Config::default());
        assert_eq!(throttle.leader.hold(now), None);
    }
}
