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

    /// The month's cost if things go on as they did: what the last day (or the time since
    /// the topic was first seen, if shorter, but at least a minute) cost in requests,
    /// reads and inter-zone bytes, scaled to 730 hours, plus a month of storage at
    /// `stored_bytes`.
    pub fn projected_month(&self, now_ms: i64, stored_bytes: u64, prices: &PriceTable) -> f64 {
        let span_ms = (now_ms - self.first_seen_ms).clamp(60_000, DAY_MS) as f64;
        let day = self.last_day(now_ms).costs(prices);
        let flow = day.put_requests + day.get_requests + day.read_bytes + day.inter_zone;
        flow * super::prices::MONTH_MS / span_ms
            + prices.storage(stored_bytes as f64, super::prices::MONTH_MS)
    }
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

    #[test]
    fn memory_does_not_grow_with_time() {
        let mut w = Windows::new(0);
        let size = std::mem::size_of_val(&w);
        for minute in 0..100_000i64 {
            w.add(minute * 60_000, &puts(1.0));
        }
        assert_eq!(std::mem::size_of_val(&w), size);
        assert!(size < 5 * 1024, "{size} bytes per topic");
        assert_eq!(w.last_hour(99_999 * 60_000).put_requests, 60.0);
    }

    #[test]
    fn projection_scales_the_observed_span_to_a_month_and_adds_storage() {
        let prices = PriceTable {
            put_per_1000: 1000.0, // $1 a PUT
            ..PriceTable::ZERO
        };
        let start = 5 * DAY_MS;
        let mut w = Windows::new(start);
        w.add(start, &puts(1.0));
        // One PUT in the first hour: 730 a month.
        let p = w.projected_month(start + HOUR_MS, 0, &prices);
        assert!((p - 730.0).abs() < 1e-6, "{p}");
        // Less than a minute in: the span counts as a minute.
        let p = w.projected_month(start + 1000, 0, &prices);
        assert!((p - 730.0 * 60.0).abs() < 1e-6, "{p}");
        // After two days the span is the last day, which holds nothing any more.
        let p = w.projected_month(start + 2 * DAY_MS, 0, &prices);
        assert_eq!(p, 0.0);
        // Storage: a month at today's size.
        let prices = PriceTable {
            storage_per_gb_month: 0.5,
            ..PriceTable::ZERO
        };
        let p = w.projected_month(start + HOUR_MS, 4 << 30, &prices);
        assert!((p - 2.0).abs() < 1e-9, "{p}");
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
