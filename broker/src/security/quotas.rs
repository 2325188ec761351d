//! Client quotas (Kafka's KIP-13, KIP-55, KIP-124, KIP-219): produce and fetch byte rates
//! and a request-time percentage, per user and/or client id, set through
//! AlterClientQuotas and kept in the metadata store (kind `quotas`).
//!
//! Entities and precedence are Kafka's. An entity is a user, a client id, or both; either
//! may be the default (`<default>`). For a connection of user U and client C the first
//! entity holding the quota applies: U+C, U+default-client, U, default-user+C,
//! default-user+default-client, default-user, C, default-client. Connections matched by the
//! same entity share its quota on this broker (quotas are per broker, as in Kafka).
//!
//! Measurement is per client, as in Kafka: the usage counter is keyed by the connection's
//! own user and/or client id, shaped like the entity whose quota applies (a `<default>`
//! user quota is each user's own, not shared). Each counter keeps [`WINDOWS`] one-second
//! samples. When the rate over them exceeds the quota, the throttle time is how long the
//! excess takes to drain at the quota: `(rate − quota) / quota × window`, Kafka's formula;
//! request-quota throttles are bounded by one sample ([`SAMPLE`]) as Kafka bounds them,
//! byte-rate ones only by [`MAX_THROTTLE`]. KIP-219: the response is sent at once with
//! `throttle_time_ms`, and the connection reads nothing more for that long.
//! `request_percentage` counts handler time: 100 is one thread's worth per second.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::cluster::{MetadataStore, SecurityKind, StoreError};

/// Samples per quota, each [`SAMPLE`] long (Kafka's quota.window.num and
/// quota.window.size.seconds defaults).
pub const WINDOWS: usize = 11;
pub const SAMPLE: Duration = Duration::from_secs(1);
/// Longest throttle given at once (a sanity bound; Kafka has none for byte rates).
const MAX_THROTTLE: Duration = Duration::from_secs(3600);
/// The smallest quotas AlterClientQuotas accepts: below, throttle arithmetic stops being
/// meaningful (and a rate of 1e-300 would overflow it).
pub const MIN_BYTE_RATE: f64 = 1.0;
pub const MIN_REQUEST_PERCENTAGE: f64 = 0.01;
/// Client counters kept per broker; a client beyond them goes unmeasured until idle ones
/// are dropped.
const MAX_TRACKED: usize = 100_000;
/// Longest user or client id kept as is in a counter's key (longer ones are hashed).
const MAX_KEPT_NAME: usize = 255;

/// The name of a default entity in AlterClientQuotas is null; stored as this.
const DEFAULT: &str = "<default>";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QuotaKind {
    Produce,
    Fetch,
    Request,
}

impl QuotaKind {
    pub fn key(self) -> &'static str {
        match self {
            QuotaKind::Produce => "producer_byte_rate",
            QuotaKind::Fetch => "consumer_byte_rate",
            QuotaKind::Request => "request_percentage",
        }
    }

    pub fn from_key(key: &str) -> Option<QuotaKind> {
        [QuotaKind::Produce, QuotaKind::Fetch, QuotaKind::Request]
            .into_iter()
            .find(|k| k.key() == key)
    }

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            QuotaKind::Produce => "produce",
            QuotaKind::Fetch => "fetch",
            QuotaKind::Request => "request",
        }
    }
}

/// A quota entity: a user and/or a client id; `Some("<default>")` is the default one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Entity {
    pub user: Option<String>,
    pub client_id: Option<String>,
}

impl Entity {
    /// The store key: `user=<u>;client-id=<c>`, a missing part left out. Names are
    /// percent-escaped for `%`, `;` and `=`.
    pub fn key(&self) -> String {
        let escape = |s: &str| {
            s.replace('%', "%25")
                .replace(';', "%3B")
                .replace('=', "%3D")
        };
        let mut parts = Vec::new();
        if let Some(user) = &self.user {
            parts.push(format!("user={}", escape(user)));
        }
        if let Some(client) = &self.client_id {
            parts.push(format!("client-id={}", escape(client)));
        }
        parts.join(";")
    }

    /// AlterClientQuotas' null name is the default entity.
    pub fn name_or_default(name: Option<&str>) -> String {
        name.unwrap_or(DEFAULT).to_string()
    }

    pub fn is_default(name: &str) -> bool {
        name == DEFAULT
    }
}

/// One entity's quotas, as stored (version 1 JSON).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QuotaRecord {
    pub version: u32,
    pub entity: Option<Entity>,
    pub values: BTreeMap<String, f64>,
}

/// One-second samples of one (entity, quota).
struct Usage {
    samples: [(Instant, f64); WINDOWS],
    current: usize,
    last_used: Instant,
}

impl Usage {
    fn new(now: Instant) -> Usage {
        Usage {
            samples: [(now, 0.0); WINDOWS],
            current: 0,
            last_used: now,
        }
    }

    /// Adds `amount` now; returns the rate per second over the samples.
    fn record(&mut self, amount: f64, now: Instant) -> (f64, Duration) {
        if now.duration_since(self.samples[self.current].0) >= SAMPLE {
            self.current = (self.current + 1) % WINDOWS;
            self.samples[self.current] = (now, 0.0);
        }
        self.samples[self.current].1 += amount;
        self.last_used = now;
        // Samples older than the whole window are stale.
        let horizon = SAMPLE * WINDOWS as u32;
        let mut total = 0.0;
        let mut oldest = now;
        for (start, value) in &self.samples {
            if now.duration_since(*start) < horizon {
                total += value;
                oldest = oldest.min(*start);
            }
        }
        // At least (WINDOWS - 1) samples of elapsed time, as Kafka measures, so a burst
        // at the start of a window is not read as a huge rate.
        let elapsed = now
            .duration_since(oldest)
            .max(SAMPLE * (WINDOWS as u32 - 1));
        (total / elapsed.as_secs_f64(), elapsed)
    }
}

pub struct Quotas {
    store: Arc<dyn MetadataStore>,
    /// A std lock: read per request, replaced on a change.
    configured: RwLock<HashMap<Entity, BTreeMap<String, f64>>>,
    /// Held from a reload's read to its swap (see credentials.rs).
    reloading: tokio::sync::Mutex<()>,
    /// When idle counters were last dropped (a std lock, taken with `usage`).
    last_purge: Mutex<Instant>,
    /// Per-client usage, keyed by the client's own names shaped like the matched entity.
    /// A std lock: held for one sample update.
    usage: Mutex<HashMap<(Entity, QuotaKind), Usage>>,
}

impl Quotas {
    pub fn new(store: Arc<dyn MetadataStore>) -> Quotas {
        Quotas {
            store,
            configured: RwLock::new(HashMap::new()),
            reloading: tokio::sync::Mutex::new(()),
            last_purge: Mutex::new(Instant::now()),
            usage: Mutex::new(HashMap::new()),
        }
    }

    pub async fn reload(&self) -> Result<(), StoreError> {
        let _reloading = self.reloading.lock().await;
        let records = self.store.list_security(SecurityKind::Quota).await?;
        let mut configured = HashMap::new();
        for (key, value) in records {
            match serde_json::from_str::<QuotaRecord>(&value) {
                Ok(QuotaRecord {
                    entity: Some(entity),
                    values,
                    ..
                }) => {
                    configured.insert(entity, values);
                }
                Ok(_) => tracing::warn!(%key, "skipping a quota record without an entity"),
                Err(e) => tracing::warn!(%key, error = %e, "skipping an unreadable quota record"),
            }
        }
        *self.configured.write().unwrap_or_else(|p| p.into_inner()) = configured;
        Ok(())
    }

    /// Whether any quota is configured (without one, requests skip the accounting).
    pub fn any(&self) -> bool {
        !self
            .configured
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// Every configured entity with its quotas.
    pub fn all(&self) -> Vec<(Entity, BTreeMap<String, f64>)> {
        let configured = self.configured.read().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<_> = configured
            .iter()
            .map(|(e, v)| (e.clone(), v.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Replaces the quotas of the entities given (an empty map removes the entity).
    pub async fn change(
        &self,
        changes: &[(Entity, BTreeMap<String, f64>)],
    ) -> Result<(), StoreError> {
        let mut puts = Vec::new();
        let mut deletes = Vec::new();
        for (entity, values) in changes {
            if values.is_empty() {
                deletes.push(entity.key());
            } else {
                let record = QuotaRecord {
                    version: 1,
                    entity: Some(entity.clone()),
                    values: values.clone(),
                };
                let json = serde_json::to_string(&record).map_err(|e| StoreError::Corrupt {
                    key: entity.key(),
                    message: e.to_string(),
                })?;
                puts.push((entity.key(), json));
            }
        }
        self.store
            .change_security(SecurityKind::Quota, &puts, &deletes)
            .await?;
        self.reload().await
    }

    /// The entity whose `kind` quota applies to user `user` and client `client_id`, with
    /// the quota, by Kafka's precedence.
    fn resolve(&self, user: &str, client_id: &str, kind: QuotaKind) -> Option<(Entity, f64)> {
        let configured = self.configured.read().unwrap_or_else(|p| p.into_inner());
        if configured.is_empty() {
            return None;
        }
        let some = |s: &str| Some(s.to_string());
        let candidates = [
            (some(user), some(client_id)),
            (some(user), some(DEFAULT)),
            (some(user), None),
            (some(DEFAULT), some(client_id)),
            (some(DEFAULT), some(DEFAULT)),
            (some(DEFAULT), None),
            (None, some(client_id)),
            (None, some(DEFAULT)),
        ];
        for (user, client_id) in candidates {
            let entity = Entity { user, client_id };
            if let Some(value) = configured.get(&entity).and_then(|v| v.get(kind.key())) {
                return Some((entity, *value));
            }
        }
        None
    }

    /// Counts `amount` (bytes, or handler milliseconds for the request quota) for the
    /// connection's user and client id; returns how long to throttle it (zero when under
    /// its quota or without one).
    pub fn record(&self, user: &str, client_id: &str, kind: QuotaKind, amount: f64) -> Duration {
        self.measure(user, client_id, kind, amount)
    }

    /// The throttle the client has earned so far, without counting anything (a Fetch
    /// that would be throttled is answered empty, as Kafka does).
    pub fn pending(&self, user: &str, client_id: &str, kind: QuotaKind) -> Duration {
        self.measure(user, client_id, kind, 0.0)
    }

    fn measure(&self, user: &str, client_id: &str, kind: QuotaKind, amount: f64) -> Duration {
        let Some((entity, quota)) = self.resolve(user, client_id, kind) else {
            return Duration::ZERO;
        };
        // request_percentage: percent of one second of handler time per second.
        let bound = match kind {
            QuotaKind::Request => quota / 100.0 * 1000.0,
            _ => quota,
        };
        if !(bound > 0.0 && bound.is_finite()) {
            return Duration::ZERO;
        }
        // The client's own counter: its names where the entity names one. Names longer
        // than a real one are kept as a hash, so a client cannot grow the map by
        // kilobytes per id.
        let bounded = |name: &str| {
            if name.len() <= MAX_KEPT_NAME {
                name.to_string()
            } else {
                use std::hash::{Hash, Hasher};
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                name.hash(&mut hasher);
                format!("#{:016x}", hasher.finish())
            }
        };
        let key = Entity {
            user: entity.user.as_ref().map(|_| bounded(user)),
            client_id: entity.client_id.as_ref().map(|_| bounded(client_id)),
        };
        let now = Instant::now();
        let mut usage = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        // Counters idle for a whole window are dropped, at most once a second.
        let mut last_purge = self.last_purge.lock().unwrap_or_else(|p| p.into_inner());
        if now.duration_since(*last_purge) >= SAMPLE {
            *last_purge = now;
            let stale = now.checked_sub(SAMPLE * WINDOWS as u32);
            usage.retain(|_, u| stale.is_none_or(|s| u.last_used > s));
        }
        drop(last_purge);
        if !usage.contains_key(&(key.clone(), kind)) {
            // Every tracked client is active: a new one goes unmeasured rather than
            // resetting everyone's debt.
            if amount == 0.0 || usage.len() >= MAX_TRACKED {
                return Duration::ZERO;
            }
        }
        let (rate, window) = usage
            .entry((key, kind))
            .or_insert_with(|| Usage::new(now))
            .record(amount, now);
        if rate <= bound {
            return Duration::ZERO;
        }
        let cap = match kind {
            QuotaKind::Request => SAMPLE,
            _ => MAX_THROTTLE,
        };
        let seconds = window.as_secs_f64() * (rate - bound) / bound;
        Duration::try_from_secs_f64(seconds.min(cap.as_secs_f64())).unwrap_or(cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_keys_escape_separators() {
        let entity = Entity {
            user: Some("a;b=c%".into()),
            client_id: Some(DEFAULT.into()),
        };
        assert_eq!(entity.key(), "user=a%3Bb%3Dc%25;client-id=<default>");
        let user_only = Entity {
            user: Some("alice".into()),
            client_id: None,
        };
        assert_eq!(user_only.key(), "user=alice");
    }

    #[test]
    fn a_rate_over_the_quota_gives_the_time_the_excess_takes_to_drain() {
        let start = Instant::now();
        let mut usage = Usage::new(start);
        // 20 MB in the first instant, measured over the minimum window of 10 s: 2 MB/s.
        let (rate, window) = usage.record(20e6, start);
        assert!((rate - 2e6).abs() < 1.0, "{rate}");
        assert_eq!(window, SAMPLE * 10);
        // Against a 1 MB/s quota that is 10 s of throttle: (2 - 1) / 1 x 10 s.
        let throttle = window.mul_f64((rate - 1e6) / 1e6);
        assert_eq!(throttle.as_secs(), 10);
    }
}

#[cfg(test)]
mod usage_tests {
    use super::*;

    fn quotas(entity: Entity, key: &str, value: f64) -> Quotas {
        // The store is not read: the quotas are set directly.
        let dir = std::env::temp_dir().join(format!("strata-quota-test-{}", uuid::Uuid::new_v4()));
        let store = crate::cluster::embedded::EmbeddedStore::open(&dir).expect("store");
        let _ = std::fs::remove_dir(&dir);
        let quotas = Quotas::new(Arc::new(store));
        quotas
            .configured
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(entity, [(key.to_string(), value)].into_iter().collect());
        quotas
    }

    #[test]
    fn a_default_user_quota_is_each_users_own() {
        let quotas = quotas(
            Entity {
                user: Some(DEFAULT.into()),
                client_id: None,
            },
            "producer_byte_rate",
            1000.0,
        );
        assert!(
            !quotas
                .record("alice", "app", QuotaKind::Produce, 50_000.0)
                .is_zero()
        );
        // Bob is under his own quota whatever alice did.
        assert!(
            quotas
                .record("bob", "app", QuotaKind::Produce, 1.0)
                .is_zero()
        );
        // A client id change does not escape a user quota.
        assert!(
            !quotas
                .pending("alice", "other-app", QuotaKind::Produce)
                .is_zero()
        );
    }

    #[test]
    fn tiny_quotas_and_huge_amounts_do_not_overflow() {
        let quotas = quotas(
            Entity {
                user: None,
                client_id: Some(DEFAULT.into()),
            },
            "request_percentage",
            1e-300,
        );
        let throttle = quotas.record("u", "c", QuotaKind::Request, 1e300);
        assert_eq!(throttle, SAMPLE, "request throttles stop at one sample");
        let quotas = quotas_bytes(1e-15);
        assert_eq!(
            quotas.record("u", "c", QuotaKind::Produce, f64::MAX),
            MAX_THROTTLE
        );
    }

    fn quotas_bytes(value: f64) -> Quotas {
        quotas(
            Entity {
                user: Some(DEFAULT.into()),
                client_id: None,
            },
            "producer_byte_rate",
            value,
        )
    }
}
