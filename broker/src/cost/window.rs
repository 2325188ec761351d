//! Usage over time in fixed buckets, so memory stays constant however long a broker
//! runs: 60 one-minute buckets (the last hour) and 24 one-hour buckets (the last day) per
//! topic, 84 buckets of 48 bytes, about 4 KiB a topic. A bucket older than its ring is
//! reused (zeroed) when time reaches its slot again.

use super::prices::PriceTable;
use strata_tiering::store::RequestClass;

/// What a topic used: raw quantities, priced only when shown.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub put_requests: f64,
    pub get_requests: f64,
    pub read_bytes: f64,
    pub inter_zone_bytes: f64,
    /// Bytes stored × milliseconds they were stored.
    pub stored_byte_ms: f64,
}

/// [`Usage`] in dollars, by item.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Costs {
    pub put_requests: f64,
    pub get_requests: f64,
    pub storage: f64,
    pub read_bytes: f64,
    pub inter_zone: f64,
}

impl Costs {
    /// Each item with the name it has in `strata_cost_estimated_usd_total{item}`.
    pub fn items(&self) -> [(&'static str, f64); 5] {
        [
            ("put_requests", self.put_requests),
            ("get_requests", self.get_requests),
            ("storage", self.storage),
            ("read_bytes", self.read_bytes),
            ("inter_zone", self.inter_zone),
        ]
    }

    pub fn total(&self) -> f64 {
        self.put_requests + self.get_requests + self.storage + self.read_bytes + self.inter_zone
    }
}

impl Usage {
    pub fn add(&mut self, other: &Usage) {
        self.put_requests += other.put_requests;
        self.get_requests += other.get_requests;
        self.read_bytes += other.read_bytes;
        self.inter_zone_bytes += other.inter_zone_bytes;
        self.stored_byte_ms += other.stored_byte_ms;
    }

    pub fn requests(class: RequestClass, count: f64) -> Usage {
        match class {
            RequestClass::Put => Usage {
                put_requests: count,
                ..Usage::default()
            },
            RequestClass::Get => Usage {
                get_requests: count,
                ..Usage::default()
            },
        }
    }

    pub fn costs(&self, prices: &PriceTable) -> Costs {
        Costs {
            put_requests: prices.requests(RequestClass::Put, self.put_requests),
            get_requests: prices.requests(RequestClass::Get, self.get_requests),
            storage: prices.storage(self.stored_byte_ms, 1.0),
            read_bytes: prices.read(self.read_bytes),
            inter_zone: prices.inter_zone(self.inter_zone_bytes),
        }
    }
}

/// `N` buckets of `width_ms` each; bucket `i` holds time slot `t / width_ms` where
/// `t / width_ms % N == i`.
#[derive(Debug, Clone)]
struct Ring<const N: usize> {
    width_ms: i64,
    slots: [(i64, Usage); N],
}

impl<const N: usize> Ring<N> {
    fn new(width_ms: i64) -> Self {
        Ring {
            width_ms,
            slots: [(i64::MIN, Usage::default()); N],
        }
    }

    fn add(&mut self, now_ms: i64, usage: &Usage) {
        let slot = now_ms.div_euclid(self.width_ms);
        let bucket = &mut self.slots[slot.rem_euclid(N as i64) as usize];
        if bucket.0 != slot {
            *bucket = (slot, Usage::default());
        }
        bucket.1.add(usage);
    }

    /// Everything in the last `N` slots, the current (partial) one included.
    fn sum(&self, now_ms: i64) -> Usage {
        let current = now_ms.div_euclid(self.width_ms);
        let mut total = Usage::default();
        for (slot, usage) in &self.slots {
            if *slot <= current && *slot > current - N as i64 {
                total.add(usage);
            }
        }
        total
    }
}

pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 24 * HOUR_MS;

/// One topic's usage: the last hour, the last day, and everything since it was first
/// seen (since this broker started: counters reset on restart).
#[derive(Debug, Clone)]
pub struct Windows {
    minutes: Ring<60>,
    hours: Ring<24>,
    pub since_start: Usage,
    pub first_seen_ms: i64,
}

impl Windows {
    pub fn new(now_ms: i64) -> Windows {
        Windows {
            minutes: Ring::new(60_000),
            hours: Ring::new(HOUR_MS),
            since_start: Usage::default(),
            first_seen_ms: now_ms,
        }
    }

    pub fn add(&mut self, now_ms: i64, usage: &Usage) {
        self.minutes.add(now_ms, usage);
        self.hours.add(now_ms, usage);
        self.since_start.add(usage);
    }

    pub fn last_hour(&self, now_ms: i64) -> Usage {
        self.minutes.sum(now_ms)
    }

    pub fn last_day(&self, now_ms: i64) -> Usage {
        self.hours.sum(now_ms)
    }

    /// The month's cost if things go on as they did: what the last day cost in requests,
    /// reads and inter-zone bytes, divided by the span those buckets actually cover (23
    /// whole hours and the current partial one, or less since the topic was first seen)
    /// and scaled to 730 hours, plus a month of storage at `stored_bytes`. A short span
    /// scales a burst a long way: see [`Projection::covered_ms`].
    pub fn projected_month(
        &self,
        now_ms: i64,
        stored_bytes: u64,
        prices: &PriceTable,
    ) -> Projection {
        let day_buckets_span = 23 * HOUR_MS + now_ms.rem_euclid(HOUR_MS);
        let covered_ms = (now_ms - self.first_seen_ms).clamp(0, day_buckets_span);
        let day = self.last_day(now_ms).costs(prices);
        let flow = day.put_requests + day.get_requests + day.read_bytes + day.inter_zone;
        let usd_month = flow * super::prices::MONTH_MS / covered_ms.max(1) as f64
            + prices.storage(stored_bytes as f64, super::prices::MONTH_MS);
        Projection {
            usd_month,
            covered_ms,
        }
    }
}

/// A projected month and the span of counts it was scaled from.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Projection {
    pub usd_month: f64,
    /// How much time the counts cover; under an hour the projection is shown but budgets
    /// are not judged on it.
    pub covered_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn puts(n: f64) -> Usage {
        Usage::requests(RequestClass::Put, n)
    }

    #[test]
    fn the_hour_and_the_day_forget_what_is_older() {
        let start = 10 * DAY_MS;
        let mut w = Windows::new(start);
        w.add(start, &puts(1.0));
        w.add(start + 30 * 60_000, &puts(2.0));
        let at = start + 59 * 60_000;
        assert_eq!(w.last_hour(at).put_requests, 3.0);
        // 61 minutes on, the first minute left the hour; the day keeps both.
        let at = start + 61 * 60_000;
        assert_eq!(w.last_hour(at).put_requests, 2.0);
        assert_eq!(w.last_day(at).put_requests, 3.0);
        // A day and an hour later, nothing is left in either window.
        let at = start + DAY_MS + HOUR_MS;
        assert_eq!(w.last_hour(at).put_requests, 0.0);
        assert_eq!(w.last_day(at).put_requests, 0.0);
        assert_eq!(w.since_start.put_requests, 3.0);
        // A reused slot starts from zero: 60 minutes after the first add, same slot.
        w.add(start + 60 * 60_000, &puts(5.0));
        assert_eq!(w.last_hour(start + 60 * 60_000).put_requests, 7.0);
        assert_eq!(w.last_hour(start + 90 * 60_000).put_requests, 5.0);
    }

    fn occupied<const N: usize>(ring: &Ring<N>) -> usize {
        ring.slots
            .iter()
            .filter(|(slot, _)| *slot != i64::MIN)
            .count()
    }

    #[test]
    fn buckets_are_reused_so_entries_stay_bounded() {
        let mut w = Windows::new(0);
        for minute in 0..100_000i64 {
            w.add(minute * 60_000, &puts(1.0));
        }
        // 100,000 minutes of adds still occupy at most 60 + 24 buckets, and each holds
        // only its own slot: the sums are a full hour and a full day, not more.
        assert_eq!(occupied(&w.minutes), 60);
        assert_eq!(occupied(&w.hours), 24);
        let now = 99_999 * 60_000;
        assert_eq!(w.last_hour(now).put_requests, 60.0);
        assert_eq!(w.last_day(now).put_requests, 23.0 * 60.0 + 40.0);
        assert_eq!(w.since_start.put_requests, 100_000.0);
    }

    #[test]
    fn projection_divides_by_the_span_the_buckets_cover() {
        let prices = PriceTable {
            put_per_1000: 1000.0, // $1 a PUT
            ..PriceTable::ZERO
        };
        let start = 5 * DAY_MS;
        let mut w = Windows::new(start);
        w.add(start, &puts(1.0));
        // One PUT in the first hour: 730 a month.
        let p = w.projected_month(start + HOUR_MS, 0, &prices);
        assert!((p.usd_month - 730.0).abs() < 1e-6, "{p:?}");
        assert_eq!(p.covered_ms, HOUR_MS);
        // One second in: scaled from that second (no 1-minute floor), and flagged short.
        let p = w.projected_month(start + 1000, 0, &prices);
        assert!((p.usd_month - 730.0 * 3600.0).abs() < 1e-3, "{p:?}");
        assert_eq!(p.covered_ms, 1000);
        // Half-way through an hour, a day and more after the start: the day buckets
        // cover 23.5 h, and that is the divisor (not 24 h).
        let now = start + 2 * DAY_MS + HOUR_MS / 2;
        w.add(now, &puts(47.0));
        let p = w.projected_month(now, 0, &prices);
        assert_eq!(p.covered_ms, 23 * HOUR_MS + HOUR_MS / 2);
        assert!((p.usd_month - 47.0 * 730.0 / 23.5).abs() < 1e-6, "{p:?}");
        // Storage: a month at today's size.
        let prices = PriceTable {
            storage_per_gb_month: 0.5,
            ..PriceTable::ZERO
        };
        let p = w.projected_month(start + HOUR_MS, 4 << 30, &prices);
        assert!((p.usd_month - 2.0).abs() < 1e-9, "{p:?}");
    }

    #[test]
    fn costs_price_each_item() {
        let prices = PriceTable::default();
        let usage = Usage {
            put_requests: 2000.0,
            get_requests: 10_000.0,
            read_bytes: 0.0,
            inter_zone_bytes: (1u64 << 30) as f64,
            stored_byte_ms: (1u64 << 30) as f64 * super::super::prices::MONTH_MS,
        };
        let c = usage.costs(&prices);
        assert!((c.put_requests - 0.01).abs() < 1e-12);
        assert!((c.get_requests - 0.004).abs() < 1e-12);
        assert!((c.inter_zone - 0.02).abs() < 1e-12);
        assert!((c.storage - 0.023).abs() < 1e-12);
        assert!((c.total() - 0.057).abs() < 1e-12);
    }
}
