//! What one client may hold of the broker: connection slots (in total and per address)
//! and bytes of requests and responses in flight.
//!
//! Both are plain structs with RAII guards: a [`ConnectionSlot`] or a [`Reservation`] is
//! given back when dropped, however its connection ends (error, shutdown, panic in a
//! handler), so the counts cannot leak.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use prometheus::IntGauge;
use tokio::sync::oneshot;

/// Why a connection was refused; the `reason` label of `strata_connections_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    MaxConnections,
    MaxConnectionsPerIp,
}

impl Refusal {
    pub fn label(self) -> &'static str {
        match self {
            Refusal::MaxConnections => "max_connections",
            Refusal::MaxConnectionsPerIp => "max_connections_per_ip",
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    /// Only addresses with open connections are present, so the map is never larger than
    /// `max_connections`.
    by_ip: HashMap<IpAddr, usize>,
}

/// Connection slots: `max_total` in all, `per_ip` per address unless overridden.
#[derive(Debug)]
pub struct ConnectionLimits {
    max_total: usize,
    per_ip: usize,
    overrides: HashMap<IpAddr, usize>,
    /// A std mutex: held for a hash update, never across an await.
    counts: Mutex<Counts>,
}

impl ConnectionLimits {
    pub fn new(max_total: usize, per_ip: usize, overrides: HashMap<IpAddr, usize>) -> Self {
        ConnectionLimits {
            max_total,
            per_ip,
            overrides,
            counts: Mutex::new(Counts::default()),
        }
    }

    fn counts(&self) -> MutexGuard<'_, Counts> {
        // Counts are updated in single statements; a poisoned lock still holds valid ones.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for a connection from `ip`, or why there is none.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionSlot, Refusal> {
        // An IPv4 client of a dual-stack listener shows as ::ffff:a.b.c.d.
        let ip = ip.to_canonical();
        let limit = self.overrides.get(&ip).copied().unwrap_or(self.per_ip);
        let mut counts = self.counts();
        if counts.total >= self.max_total {
            return Err(Refusal::MaxConnections);
        }
        let from_ip = counts.by_ip.get(&ip).copied().unwrap_or(0);
        if from_ip >= limit {
            return Err(Refusal::MaxConnectionsPerIp);
        }
        counts.total += 1;
        counts.by_ip.insert(ip, from_ip + 1);
        Ok(ConnectionSlot {
            limits: self.clone(),
            ip,
        })
    }

    /// (total, addresses with a connection).
    #[cfg(test)]
    fn open(&self) -> (usize, usize) {
        let counts = self.counts();
        (counts.total, counts.by_ip.len())
    }
}

/// An admitted connection; its slot is free again when this is dropped.
#[derive(Debug)]
pub struct ConnectionSlot {
    limits: Arc<ConnectionLimits>,
    ip: IpAddr,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut counts = self.limits.counts();
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.by_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.by_ip.remove(&self.ip);
            }
        }
    }
}

struct Waiter {
    bytes: usize,
    granted: oneshot::Sender<Reservation>,
}

#[derive(Default)]
struct Budget {
    used: usize,
    /// First come, first served: a large request is not starved by a stream of small ones.
    waiters: VecDeque<Waiter>,
}

/// Bytes of requests in flight across all connections (Kafka's queued.max.request.bytes):
/// from the size prefix until the handler is done. Requests wait for room before their
/// body is read. Responses are not counted: a client slow to read them would hold every
/// other connection back (a connection holds at most one response that is not a
/// Produce's, and up to 1024 pipelined Produce requests and their small responses, each
/// charged at least 4 KiB here).
pub struct ByteBudget {
    limit: usize,
    /// A std mutex: held to update a count and pop waiters, never across an await.
    state: Mutex<Budget>,
    /// `strata_queued_request_bytes`.
    gauge: IntGauge,
}

impl ByteBudget {
    pub fn new(limit: usize, gauge: IntGauge) -> Arc<ByteBudget> {
        Arc::new(ByteBudget {
            limit,
            state: Mutex::new(Budget::default()),
            gauge,
        })
    }

    fn state(&self) -> MutexGuard<'_, Budget> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `bytes` taken while `used` bytes are; one request larger than the whole budget
    /// still goes through alone rather than waiting forever.
    fn fits(&self, used: usize, bytes: usize) -> bool {
        used == 0 || used.saturating_add(bytes) <= self.limit
    }

    fn take(self: &Arc<Self>, state: &mut Budget, bytes: usize) -> Reservation {
        state.used = state.used.saturating_add(bytes);
        self.gauge.set(state.used as i64);
        Reservation {
            budget: self.clone(),
            bytes,
        }
    }

    /// Waits until `bytes` fit, behind earlier waiters. Dropping the future gives back
    /// whatever it was granted.
    pub async fn reserve(self: &Arc<Self>, bytes: usize) -> Reservation {
        let granted = {
            let mut state = self.state();
            if state.waiters.is_empty() && self.fits(state.used, bytes) {
                return self.take(&mut state, bytes);
            }
            let (tx, rx) = oneshot::channel();
            state.waiters.push_back(Waiter { bytes, granted: tx });
            rx
        };
        match granted.await {
            Ok(reservation) => reservation,
            // Only if the budget itself were gone, which an `Arc` to it rules out.
            Err(_) => Reservation {
                budget: self.clone(),
                bytes: 0,
            },
        }
    }

    fn release(self: &Arc<Self>, bytes: usize) {
        let mut grants = Vec::new();
        {
            let mut state = self.state();
            state.used = state.used.saturating_sub(bytes);
            while let Some(head) = state.waiters.front() {
                if head.granted.is_closed() {
                    state.waiters.pop_front();
                    continue;
                }
                if !self.fits(state.used, head.bytes) {
                    break;
                }
                let Some(waiter) = state.waiters.pop_front() else {
                    break;
                };
                let reservation = self.take(&mut state, waiter.bytes);
                grants.push((waiter.granted, reservation));
            }
            self.gauge.set(state.used as i64);
        }
        // Outside the lock: a waiter that went away hands its reservation back, and
        // dropping it calls `release` again.
        for (granted, reservation) in grants {
            drop(granted.send(reservation));
        }
    }

    #[cfg(test)]
    fn used(&self) -> usize {
        self.state().used
    }
}

/// Bytes counted in a [`ByteBudget`] until this is dropped.
pub struct Reservation {
    budget: Arc<ByteBudget>,
    bytes: usize,
}

impl Reservation {
    /// Gives back all but `keep` bytes (nothing if it holds no more than that).
    pub fn shrink_to(&mut self, keep: usize) {
        if self.bytes > keep {
            self.budget.release(self.bytes - keep);
            self.bytes = keep;
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.budget.release(self.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn slots_are_bounded_in_total_and_per_address_and_come_back() {
        let overrides = HashMap::from([(ip(9), 3)]);
        let limits = Arc::new(ConnectionLimits::new(4, 2, overrides));
        let a1 = limits.admit(ip(1)).expect("first");
        let _a2 = limits.admit(ip(1)).expect("second");
        assert_eq!(
            limits.admit(ip(1)).expect_err("third from one address"),
            Refusal::MaxConnectionsPerIp
        );
        let _b = limits.admit(ip(9)).expect("override");
        let _c = limits.admit(ip(9)).expect("override allows more than 2");
        assert_eq!(
            limits.admit(ip(2)).expect_err("fifth in all"),
            Refusal::MaxConnections
        );
        drop(a1);
        let _again = limits.admit(ip(1)).expect("a freed slot");
        assert_eq!(limits.open(), (4, 2));
    }

    #[test]
    fn an_override_of_zero_refuses_the_address() {
        let limits = Arc::new(ConnectionLimits::new(10, 5, HashMap::from([(ip(1), 0)])));
        assert_eq!(
            limits.admit(ip(1)).expect_err("blocked"),
            Refusal::MaxConnectionsPerIp
        );
        assert!(limits.admit(ip(2)).is_ok());
    }

    fn budget(limit: usize) -> Arc<ByteBudget> {
        ByteBudget::new(limit, IntGauge::new("b", "b").expect("gauge"))
    }

    #[tokio::test]
    async fn requests_wait_for_room_in_order() {
        let budget = budget(100);
        let first = budget.reserve(60).await;
        let b = budget.clone();
        let big = tokio::spawn(async move { b.reserve(80).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let b = budget.clone();
        let small = tokio::spawn(async move { b.reserve(10).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        // 10 would fit beside 60, but 80 came first.
        assert!(!big.is_finished() && !small.is_finished());
        drop(first);
        let big = big.await.expect("big granted");
        let small = small.await.expect("small granted");
        assert_eq!(budget.used(), 90);
        drop((big, small));
        assert_eq!(budget.used(), 0);
    }

    #[tokio::test]
    async fn a_request_larger_than_the_budget_goes_alone() {
        let budget = budget(100);
        let alone = budget.reserve(500).await;
        assert_eq!(budget.used(), 500);
        drop(alone);
        assert_eq!(budget.used(), 0);
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_frees_its_grant() {
        let budget = budget(100);
        let first = budget.reserve(100).await;
        let b = budget.clone();
        let gone = tokio::spawn(async move { b.reserve(50).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        gone.abort();
        let _ = gone.await;
        drop(first);
        assert_eq!(budget.used(), 0);
        let _ok = budget.reserve(100).await;
    }
}
