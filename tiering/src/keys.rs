//! Remote key layout. Every key is unique (it carries a fresh UUID), so objects are
//! written once and never overwritten: a retried or duplicated upload leaves a second
//! object, never a half-replaced one, and caches keyed by object id are never stale.
//!
//! ```text
//! topics/<topic>.<topic_id>/<partition>/<base_offset:020>-<object_id>.segment
//! topics/<topic>.<topic_id>/<partition>/manifest-<level>-<first_offset:020>-<object_id>
//! ```
//!
//! The topic id in the path keeps a re-created topic of the same name apart from the
//! old one's objects; the name is there for people browsing the bucket.
//!
//! Keys are relative to the store's root, which the broker sets to
//! `<object_store prefix>/<cluster_id>/`: clusters never share a key space.

use uuid::Uuid;

/// A partition as the remote tier names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PartitionId {
    pub topic: String,
    pub topic_id: Uuid,
    pub partition: i32,
}

impl std::fmt::Display for PartitionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// `topics/<topic>.<topic_id>/`: everything a topic owns.
pub fn topic_prefix(topic: &str, topic_id: Uuid) -> String {
    format!("topics/{topic}.{topic_id}/")
}

/// `topics/<topic>.<topic_id>/<partition>/`.
pub fn partition_prefix(id: &PartitionId) -> String {
    format!("{}{}/", topic_prefix(&id.topic, id.topic_id), id.partition)
}

pub fn segment_key(id: &PartitionId, base_offset: i64, object_id: Uuid) -> String {
    format!(
        "{}{base_offset:020}-{object_id}.segment",
        partition_prefix(id)
    )
}

pub fn manifest_key(id: &PartitionId, level: u8, first_offset: i64, object_id: Uuid) -> String {
    format!(
        "{}manifest-{level}-{first_offset:020}-{object_id}",
        partition_prefix(id)
    )
}

/// What a key under a partition prefix names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectName {
    Segment { base_offset: i64, object_id: Uuid },
    Manifest { level: u8, object_id: Uuid },
}

/// Parses the last path component of a key written by this module.
pub fn parse_object_name(key: &str) -> Option<ObjectName> {
    let name = key.rsplit('/').next()?;
    if let Some(stem) = name.strip_suffix(".segment") {
        let (base, id) = stem.split_once('-')?;
        return Some(ObjectName::Segment {
            base_offset: base.parse().ok()?,
            object_id: Uuid::parse_str(id).ok()?,
        });
    }
    let rest = name.strip_prefix("manifest-")?;
    let mut parts = rest.splitn(3, '-');
    let level = parts.next()?.parse().ok()?;
    let _first: i64 = parts.next()?.parse().ok()?;
    Some(ObjectName::Manifest {
        level,
        object_id: Uuid::parse_str(parts.next()?).ok()?,
    })
}

/// Splits `<topic>.<topic_id>` (a directory name under `topics/`).
pub fn parse_topic_dir(dir: &str) -> Option<(&str, Uuid)> {
    let (name, id) = dir.rsplit_once('.')?;
    Some((name, Uuid::parse_str(id).ok()?))
}

/// The topic a key belongs to, for per-topic metrics.
pub fn topic_of_key(key: &str) -> Option<&str> {
    let rest = key.strip_prefix("topics/")?;
    let dir = rest.split('/').next()?;
    parse_topic_dir(dir).map(|(name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_back() {
        let id = PartitionId {
            topic: "a.b-c".into(),
            topic_id: Uuid::new_v4(),
            partition: 3,
        };
        let object_id = Uuid::new_v4();
        let key = segment_key(&id, 42, object_id);
        assert!(key.starts_with(&format!("topics/a.b-c.{}/3/", id.topic_id)));
        assert_eq!(topic_of_key(&key), Some("a.b-c"));
        assert_eq!(
            parse_object_name(&key),
            Some(ObjectName::Segment {
                base_offset: 42,
                object_id
            })
        );
        let key = manifest_key(&id, 1, 7, object_id);
        assert_eq!(
            parse_object_name(&key),
            Some(ObjectName::Manifest {
                level: 1,
                object_id
            })
        );
        assert_eq!(parse_object_name("topics/x/0/junk"), None);
    }
}
