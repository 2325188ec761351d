//! Whose bytes a shared object holds, for the cost ledger (`crate::cost`): a shared
//! object carries batches of every diskless topic a broker wrote in one append interval,
//! so its PUT, and every GET of it, is split between those topics by their bytes in it.
//!
//! The ledger is told about a request as it is sent, before the object's runs are
//! committed, so the appender records each object's shares here just before its PUT.
//! Objects other brokers wrote are attributed from the view's runs (the broker's side,
//! `crate::broker::cost_ledger`). Only the most recent objects are kept: older ones are
//! found through the view while their runs exist.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// Objects whose shares are kept: at 4 flushes a second, the last minute or so of what
/// this broker wrote (merges read objects up to `diskless_merge_max_age_ms` old; older
/// ones come from the view).
const RECENT_OBJECTS: usize = 256;

/// [(topic, bytes)] of one object.
type TopicBytes = Vec<(Arc<str>, u64)>;

#[derive(Default)]
pub struct ObjectShares {
    /// (key, [(topic, bytes)]), oldest first. A std mutex: held for a push or a scan.
    recent: Mutex<VecDeque<(String, TopicBytes)>>,
}

impl ObjectShares {
    /// Records the bytes each topic has in the object about to be written at `key`.
    pub fn record<'a>(&self, key: &str, shares: impl IntoIterator<Item = (&'a Arc<str>, &'a u64)>) {
        let shares = shares
            .into_iter()
            .map(|(topic, bytes)| (topic.clone(), *bytes))
            .collect();
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() >= RECENT_OBJECTS {
            recent.pop_front();
        }
        recent.push_back((key.to_string(), shares));
    }

    /// The topics of an object this broker wrote lately, weighted by their bytes.
    pub fn get(&self, key: &str) -> Option<Vec<(String, f64)>> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, shares)| {
                shares
                    .iter()
                    .map(|(topic, bytes)| (topic.to_string(), *bytes as f64))
                    .collect()
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_objects_are_found_and_the_oldest_forgotten() {
        let shares = ObjectShares::default();
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        shares.record("k0", [(&a, &3u64), (&b, &1u64)]);
        assert_eq!(
            shares.get("k0"),
            Some(vec![("a".to_string(), 3.0), ("b".to_string(), 1.0)])
        );
        for i in 1..=RECENT_OBJECTS {
            shares.record(&format!("k{i}"), [(&a, &1u64)]);
        }
        assert_eq!(shares.get("k0"), None);
        assert!(shares.get(&format!("k{RECENT_OBJECTS}")).is_some());
        assert_eq!(shares.get("unknown"), None);
    }
}
