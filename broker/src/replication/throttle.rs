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
//! A replica that has caught up is not throttled either, even before it joins the ISR
//! (Kafka's `shouldFollowerThrottle`: `!isReplicaInSync && …`): the join rule wants the
//! replica's fetch offset at the high watermark, and a replica held back behind the moves
//! still copying while produce moves the high watermark would never join. The leader
//! counts a replica caught up when it fetches from the high watermark or from where the
//! log ended at its previous fetch
//! ([`crate::partition::isr::ReplicaState::throttled_fetch`]); the follower when its fetch
//! offset is at the leader's high watermark from the last answer (its own is capped at
//! its log end). So the throttle bounds the copy of what a replica is missing; the moves
//! in flight complete as long as the rate exceeds their summed write rate.
//!
//! Each side is a token bucket with debt. Each throttled partition, one at a time,
//! reserves the most it may move (at most `rate` bytes) in the same step that checks the
//! bucket, so concurrent fetches cannot both pass a check the first one's bytes would
//! have failed; once the answer is known the reservation is settled to the bytes that
//! moved (its first batch goes whole, so it may exceed the reservation by one batch).
//! While the balance is negative every throttled partition is held until it has
//! refilled, at `rate` bytes per second. Over any stretch of time the throttled bytes
//! therefore stay within `rate` per second plus one second's burst, one reservation and
//! one batch per partition in flight. The leader leaves held partitions' records out of
//! its answer (the follower's fetch still counts, so the ISR sees it), the follower
//! leaves held partitions out of its request; both sides are checked, so whichever rate
//! is lower wins.
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

    /// Checks and reserves in one step: `Err` with the hold while the balance is
    /// negative, else takes `bytes` off the balance.
    fn reserve(&mut self, rate: f64, bytes: usize, now: Instant) -> Result<(), Duration> {
        if let Some(wait) = self.hold(rate, now) {
            return Err(wait);
        }
        self.balance -= bytes as f64;
        Ok(())
    }

    /// Gives a reservation of `reserved` bytes back and charges the `moved` bytes
    /// instead; returns the time this adds to the hold.
    fn settle(&mut self, rate: f64, reserved: usize, moved: usize, now: Instant) -> Duration {
        self.balance += reserved as f64;
        self.charge(rate, moved, now)
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
    #[cfg(test)]
    pub fn hold(&self, now: Instant) -> Option<Duration> {
        let rate = self.rate()?;
        self.lock().hold(rate as f64, now)
    }

    /// Lets one throttled partition move up to `max` bytes (fewer if the rate is lower),
    /// or says how long it is held. The reservation is settled with the bytes that moved;
    /// dropped unsettled, it is given back whole.
    pub fn reserve(&self, max: usize, now: Instant) -> Result<Reservation<'_>, Duration> {
        let Some(rate) = self.rate() else {
            return Ok(Reservation {
                throttle: self,
                rate: None,
                granted: max,
            });
        };
        let granted = max.min(usize::try_from(rate).unwrap_or(usize::MAX));
        self.lock().reserve(rate as f64, granted, now)?;
        Ok(Reservation {
            throttle: self,
            rate: Some(rate),
            granted,
        })
    }
}

/// Bytes one throttled partition may move, taken off its side's bucket until settled.
pub struct Reservation<'a> {
    throttle: &'a Throttle,
    /// The rate it was reserved under; `None` when no throttle was set.
    rate: Option<i64>,
    granted: usize,
}

impl Reservation<'_> {
    /// The most the partition may move (its first batch goes whole regardless).
    pub fn granted(&self) -> usize {
        self.granted
    }

    /// Counts the `moved` bytes instead of the reservation.
    pub fn settle(mut self, moved: usize, now: Instant) {
        let Some(rate) = self.rate.take() else {
            return;
        };
        // A rate changed meanwhile started a fresh bucket: the old reservation is moot,
        // the bytes count against the new rate.
        let current = self.throttle.rate();
        let reserved = if current == Some(rate) {
            self.granted
        } else {
            0
        };
        let Some(current) = current else {
            return;
        };
        let held = self
            .throttle
            .lock()
            .settle(current as f64, reserved, moved, now);
        self.throttle.bytes.inc_by(moved as u64);
        self.throttle.held_ms.inc_by(held.as_millis() as u64);
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if let Some(rate) = self.rate.take()
            && self.throttle.rate() == Some(rate)
        {
            self.throttle.lock().balance += self.granted as f64;
        }
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
        let unlimited = throttle.leader.reserve(1 << 30, now).expect("no throttle");
        assert_eq!(unlimited.granted(), 1 << 30);
        unlimited.settle(1 << 30, now);
        assert_eq!(throttle.leader.hold(now), None);
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
        let reserved = throttle.leader.reserve(1 << 30, now).expect("even balance");
        assert_eq!(reserved.granted(), 1000, "at most the rate per partition");
        reserved.settle(3000, now);
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

    #[test]
    fn a_reservation_counts_before_its_bytes_move_and_a_dropped_one_is_given_back() {
        let metrics = Metrics::new().expect("metrics");
        let config = Config {
            follower_replication_throttled_rate: 1000,
            ..Config::default()
        };
        let throttle = ReplicationThrottle::new(&config, &metrics);
        let side = &throttle.follower;
        let now = Instant::now();
        // Two partitions asked at once: the first one's reservation (the whole rate, a
        // second's worth) already counts, so the second cannot pass the same check.
        let first = side.reserve(5000, now).expect("even balance");
        assert_eq!(first.granted(), 1000, "at most the rate per partition");
        assert!(
            side.reserve(5000, now).is_err(),
            "the first one's bytes count"
        );
        // Dropped unsettled (its fetch failed), the reservation is given back whole.
        drop(first);
        let second = side.reserve(5000, now).expect("the balance is even again");
        // It moved 200 bytes: they are what counts, not the 1000 reserved.
        second.settle(200, now);
        assert!(
            side.hold(now)
                .is_some_and(|h| h <= Duration::from_millis(200))
        );
        assert_eq!(
            metrics
                .replication_throttled_bytes
                .with_label_values(&["follower"])
                .get(),
            200
        );
    }
}
