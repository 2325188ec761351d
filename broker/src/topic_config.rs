//! Topic configuration with Kafka's names. A topic stores only its overrides; the
//! effective value of anything else comes from the broker default (a `log_*` setting) or
//! Kafka's own default.
//!
//! Every topic config Kafka 4 has is listed in [`DEFS`], with one of three statuses:
//! honoured; accepted with no effect in Strata's design (its doc says so, and why); or
//! accepted only at Kafka's default value (any other value is refused with INVALID_CONFIG
//! naming why). Configs Kafka 4 removed are in [`REMOVED`] and always refused, as are
//! names Kafka never had.

use std::collections::BTreeMap;

use crate::config::{Config, ConfigError};
use crate::log::format::Codec;
use crate::log::{LogConfig, Recompression};

/// One topic config Strata understands.
pub struct ConfigDef {
    pub name: &'static str,
    /// The broker setting holding the default.
    pub broker_setting: &'static str,
    /// The default under a broker configuration.
    pub default: fn(&Config) -> String,
    kind: Kind,
    pub doc: &'static str,
}

#[derive(Clone, Copy)]
enum Kind {
    /// An integer in [min, max].
    Long(i64, i64),
    Bool,
    /// A number in [0, 1].
    Ratio,
    /// Empty (none), or a finite number of US dollars ≥ 0.
    Dollars,
    OneOf(&'static [&'static str]),
    /// A comma-separated list of some of these values (empty too, as Kafka's `ValidList`).
    List(&'static [&'static str]),
    /// Kafka's throttled-replica list: empty, `*`, or `partition:broker` pairs.
    Replicas,
    /// gzip's level: -1 (the codec's default) or 1 to 9.
    GzipLevel,
    /// Only Kafka's default value, `only`, is accepted; `why` says why any other is refused.
    Fixed {
        only: &'static str,
        why: &'static str,
    },
}

/// Topic configs Kafka 4 removed, with why they are refused.
pub const REMOVED: &[(&str, &str)] = &[
    (
        "message.format.version",
        "removed in Kafka 4.0: every batch is message format v2 (magic 2)",
    ),
    (
        "message.downconversion.enable",
        "removed in Kafka 4.0: brokers no longer down-convert records for old consumers",
    ),
    (
        "message.timestamp.difference.max.ms",
        "removed in Kafka 4.0: use message.timestamp.before.max.ms and message.timestamp.after.max.ms",
    ),
];

/// Every topic config, in the order DescribeConfigs lists them.
pub const DEFS: &[ConfigDef] = &[
    ConfigDef {
        name: "cleanup.policy",
        broker_setting: "(fixed)",
        default: |_| "delete".into(),
        kind: Kind::List(&["compact", "delete"]),
        doc: "`delete`: retention.ms and retention.bytes remove old segments. `compact`: the cleaner keeps the last record of each key (no time or size retention). Both: compaction and retention. Empty: neither; records are kept forever.",
    },
    ConfigDef {
        name: "delete.retention.ms",
        broker_setting: "(fixed)",
        default: |_| "86400000".into(),
        kind: Kind::Long(0, i64::MAX),
        doc: "Compacted topics: a tombstone (null value) stays readable at least this long after its segment was sealed, so consumers see the delete.",
    },
    ConfigDef {
        name: "min.cleanable.dirty.ratio",
        broker_setting: "(fixed)",
        default: |_| "0.5".into(),
        kind: Kind::Ratio,
        doc: "Compacted topics: clean a partition once this share of its sealed bytes was written since the last clean. Lower cleans more often (more disk I/O) and keeps fewer superseded records.",
    },
    ConfigDef {
        name: "min.compaction.lag.ms",
        broker_setting: "(fixed)",
        default: |_| "0".into(),
        kind: Kind::Long(0, i64::MAX),
        doc: "Compacted topics: a segment is cleaned only once its newest record is at least this old.",
    },
    ConfigDef {
        name: "max.compaction.lag.ms",
        broker_setting: "(fixed)",
        default: |_| i64::MAX.to_string(),
        kind: Kind::Long(1, i64::MAX),
        doc: "Compacted topics: a partition is cleaned regardless of min.cleanable.dirty.ratio once its oldest uncleaned sealed segment is this old.",
    },
    ConfigDef {
        name: "retention.ms",
        broker_setting: "log_retention_ms",
        default: |c| c.log_retention_ms.to_string(),
        kind: Kind::Long(-1, i64::MAX),
        doc: "Delete whole segments whose newest record is older than this; -1 keeps forever.",
    },
    ConfigDef {
        name: "retention.bytes",
        broker_setting: "log_retention_bytes",
        default: |c| c.log_retention_bytes.to_string(),
        kind: Kind::Long(-1, i64::MAX),
        doc: "Delete oldest segments while the partition is larger than this; -1 means no limit.",
    },
    ConfigDef {
        name: "segment.bytes",
        broker_setting: "log_segment_bytes",
        default: |c| c.log_segment_bytes.to_string(),
        kind: Kind::Long(14, i32::MAX as i64),
        doc: "Roll to a new segment at this size.",
    },
    ConfigDef {
        name: "segment.ms",
        broker_setting: "log_segment_ms",
        default: |c| c.log_segment_ms.to_string(),
        kind: Kind::Long(1, i64::MAX),
        doc: "Roll to a new segment after this long.",
    },
    ConfigDef {
        name: "max.message.bytes",
        broker_setting: "message_max_bytes",
        default: |c| c.message_max_bytes.to_string(),
        kind: Kind::Long(0, i32::MAX as i64),
        doc: "Largest record batch accepted.",
    },
    ConfigDef {
        name: "flush.messages",
        broker_setting: "log_flush_messages",
        default: |c| c.log_flush_messages.to_string(),
        kind: Kind::Long(1, i64::MAX),
        doc: "fsync before acknowledging once this many messages are unflushed.",
    },
    ConfigDef {
        name: "flush.ms",
        broker_setting: "log_flush_ms",
        default: |c| c.log_flush_ms.to_string(),
        kind: Kind::Long(0, i64::MAX),
        doc: "fsync at most this long after an append.",
    },
    ConfigDef {
        name: "index.interval.bytes",
        broker_setting: "log_index_interval_bytes",
        default: |c| c.log_index_interval_bytes.to_string(),
        kind: Kind::Long(0, i32::MAX as i64),
        doc: "Bytes between sparse index entries.",
    },
    ConfigDef {
        name: "message.timestamp.type",
        broker_setting: "log_message_timestamp_type",
        default: |c| c.log_message_timestamp_type.clone(),
        kind: Kind::OneOf(&["CreateTime", "LogAppendTime"]),
        doc: "Keep the producer's timestamps or stamp batches with the broker's time.",
    },
    ConfigDef {
        name: "min.insync.replicas",
        broker_setting: "min_insync_replicas",
        default: |c| c.min_insync_replicas.to_string(),
        kind: Kind::Long(1, i32::MAX as i64),
        doc: "Replicas that must hold a batch for acks=all.",
    },
    ConfigDef {
        name: "local.retention.ms",
        broker_setting: "log_local_retention_ms",
        default: |c| c.log_local_retention_ms.to_string(),
        kind: Kind::Long(-2, i64::MAX),
        doc: "Tiered storage: how long segments stay on local disk once uploaded; -2 means retention.ms.",
    },
    ConfigDef {
        name: "local.retention.bytes",
        broker_setting: "log_local_retention_bytes",
        default: |c| c.log_local_retention_bytes.to_string(),
        kind: Kind::Long(-2, i64::MAX),
        doc: "Tiered storage: local bytes per partition kept once uploaded; -2 means retention.bytes.",
    },
    ConfigDef {
        name: "remote.storage.enable",
        broker_setting: "remote_storage_enable",
        default: |c| c.remote_storage_enable.to_string(),
        kind: Kind::Bool,
        doc: "Tiered storage for this topic: upload sealed segments to the object store and serve history from it.",
    },
    ConfigDef {
        name: "diskless.enable",
        broker_setting: "(fixed)",
        default: |_| "false".into(),
        kind: Kind::Bool,
        doc: "Strata: a diskless topic keeps no local logs and no replicas. Every broker takes produce for any of its partitions, collects batches for diskless_append_interval_ms into one shared object per broker, and commits their offsets in the metadata store; any broker serves reads. Set only at creation. Costs object-store PUTs instead of inter-zone replication traffic, and adds up to the append interval to produce latency.",
    },
    ConfigDef {
        name: "unclean.leader.election.enable",
        broker_setting: "unclean_leader_election_enable",
        default: |c| c.unclean_leader_election_enable.to_string(),
        kind: Kind::Bool,
        doc: "Elect a replica outside the ISR when no in-sync replica is alive, losing what only the dead replicas held.",
    },
    ConfigDef {
        name: "compression.type",
        broker_setting: "(fixed)",
        default: |_| "producer".into(),
        kind: Kind::OneOf(&["producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"]),
        doc: "`producer` keeps each batch as the producer compressed it. A codec: a batch compressed otherwise is decompressed and recompressed to it on produce (CPU on the broker).",
    },
    ConfigDef {
        name: "compression.gzip.level",
        broker_setting: "(fixed)",
        default: |_| "-1".into(),
        kind: Kind::GzipLevel,
        doc: "Level of batches the broker recompresses to gzip: 1 (fastest) to 9 (smallest), -1 the codec's default (6).",
    },
    ConfigDef {
        name: "compression.lz4.level",
        broker_setting: "(fixed)",
        default: |_| "9".into(),
        kind: Kind::Long(1, 17),
        doc: "Level of batches the broker recompresses to lz4: 1 to 17.",
    },
    ConfigDef {
        name: "compression.zstd.level",
        broker_setting: "(fixed)",
        default: |_| "3".into(),
        kind: Kind::Long(-131072, 22),
        doc: "Level of batches the broker recompresses to zstd: -131072 (fastest) to 22 (smallest).",
    },
    ConfigDef {
        name: "message.timestamp.before.max.ms",
        broker_setting: "(fixed)",
        default: |_| i64::MAX.to_string(),
        kind: Kind::Long(0, i64::MAX),
        doc: "CreateTime topics: a record whose timestamp is more than this before the broker's clock is refused with INVALID_TIMESTAMP.",
    },
    ConfigDef {
        name: "message.timestamp.after.max.ms",
        broker_setting: "(fixed)",
        default: |_| "3600000".into(),
        kind: Kind::Long(0, i64::MAX),
        doc: "CreateTime topics: a record whose timestamp is more than this after the broker's clock is refused with INVALID_TIMESTAMP.",
    },
    ConfigDef {
        name: "segment.index.bytes",
        broker_setting: "(fixed)",
        default: |_| "10485760".into(),
        kind: Kind::Long(4, i32::MAX as i64),
        doc: "Accepted, no effect in Strata: its index files grow with the segment (one entry per index.interval.bytes) instead of being preallocated to a size.",
    },
    ConfigDef {
        name: "segment.jitter.ms",
        broker_setting: "(fixed)",
        default: |_| "0".into(),
        kind: Kind::Fixed {
            only: "0",
            why: "Strata rolls every partition's segment exactly at segment.ms; random jitter is not implemented",
        },
        doc: "Only 0 is accepted: Strata rolls segments exactly at segment.ms.",
    },
    ConfigDef {
        name: "file.delete.delay.ms",
        broker_setting: "(fixed)",
        default: |_| "60000".into(),
        kind: Kind::Long(0, i64::MAX),
        doc: "Accepted, no effect in Strata: a deleted segment's files are removed at once; readers that still hold them open keep reading them.",
    },
    ConfigDef {
        name: "preallocate",
        broker_setting: "(fixed)",
        default: |_| "false".into(),
        kind: Kind::Bool,
        doc: "Accepted, no effect in Strata: segment files grow as batches are appended and are never preallocated.",
    },
    ConfigDef {
        name: "leader.replication.throttled.replicas",
        broker_setting: "(fixed)",
        default: |_| String::new(),
        kind: Kind::Replicas,
        doc: "Accepted (empty, `*` or partition:broker pairs), no effect in Strata: the throttled replicas are those a reassignment is adding, until they are in sync (rates: leader./follower.replication.throttled.rate).",
    },
    ConfigDef {
        name: "follower.replication.throttled.replicas",
        broker_setting: "(fixed)",
        default: |_| String::new(),
        kind: Kind::Replicas,
        doc: "Accepted (empty, `*` or partition:broker pairs), no effect in Strata: the throttled replicas are those a reassignment is adding, until they are in sync (rates: leader./follower.replication.throttled.rate).",
    },
    ConfigDef {
        name: "remote.log.copy.disable",
        broker_setting: "(fixed)",
        default: |_| "false".into(),
        kind: Kind::Fixed {
            only: "false",
            why: "Strata uploads every sealed segment of a tiered topic; turn remote.storage.enable off to stop uploads",
        },
        doc: "Only false is accepted: a tiered topic uploads every sealed segment; turn remote.storage.enable off to stop uploads.",
    },
    ConfigDef {
        name: "remote.log.delete.on.disable",
        broker_setting: "(fixed)",
        default: |_| "false".into(),
        kind: Kind::Fixed {
            only: "false",
            why: "turning remote.storage.enable off keeps what was uploaded readable in Strata; deleting it on disable is not implemented",
        },
        doc: "Only false is accepted: turning remote.storage.enable off keeps what was uploaded readable.",
    },
    ConfigDef {
        name: "cost.budget.usd.month",
        broker_setting: "(fixed)",
        default: |_| String::new(),
        kind: Kind::Dollars,
        doc: "Strata: a monthly budget in US dollars; when the topic's projected month (docs/cost.md) exceeds it, strata_cost_budget_exceeded{topic} is 1 and a warning is logged. Empty: no budget.",
    },
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TopicConfigError {
    #[error("unknown topic config `{0}`")]
    Unknown(String),
    #[error("topic config `{name}` = `{value}` is invalid: {reason}")]
    Invalid {
        name: String,
        value: String,
        reason: String,
    },
}

impl TopicConfigError {
    /// The broker setting behind the failing topic config, for start-up errors.
    pub fn broker_setting(&self) -> String {
        let name = match self {
            TopicConfigError::Unknown(name) | TopicConfigError::Invalid { name, .. } => name,
        };
        DEFS.iter()
            .find(|d| d.name == name)
            .map_or(name.clone(), |d| d.broker_setting.to_string())
    }
}

impl ConfigDef {
    /// The Kafka ConfigType code DescribeConfigs reports: BOOLEAN 1, STRING 2, LONG 5,
    /// DOUBLE 6.
    pub fn kafka_type(&self) -> i8 {
        match self.kind {
            Kind::Bool => 1,
            Kind::Ratio | Kind::Dollars => 6,
            Kind::OneOf(_) => 2,
            Kind::Long(..) => 5,
            Kind::GzipLevel => 3,
            Kind::List(_) | Kind::Replicas => 7,
            Kind::Fixed { only, .. } if only == "true" || only == "false" => 1,
            Kind::Fixed { .. } => 5,
        }
    }

    /// Whether the config holds a comma-separated list (IncrementalAlterConfigs APPEND
    /// and SUBTRACT apply to these only).
    pub fn is_list(&self) -> bool {
        matches!(self.kind, Kind::List(_) | Kind::Replicas)
    }
}

pub fn def(name: &str) -> Option<&'static ConfigDef> {
    DEFS.iter().find(|d| d.name == name)
}

/// The items of a list-valued config's value: trimmed, empty ones dropped.
pub fn list_items(value: &str) -> Vec<&str> {
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .collect()
}

fn is_bool(value: &str) -> bool {
    let value = value.trim();
    value.eq_ignore_ascii_case("true") || value.eq_ignore_ascii_case("false")
}

/// Overrides as stored: booleans in lowercase, however the client spelled them, so
/// that what DescribeConfigs reports and what the code compares are one spelling.
pub fn normalize(overrides: &mut BTreeMap<String, String>) {
    for (name, value) in overrides.iter_mut() {
        let boolean = def(name).is_some_and(|def| def.kafka_type() == 1);
        if boolean && is_bool(value) {
            *value = value.trim().to_ascii_lowercase();
        }
    }
}

/// Checks one value against its definition.
pub fn check(name: &str, value: &str) -> Result<(), TopicConfigError> {
    let bad = |reason: String| TopicConfigError::Invalid {
        name: name.into(),
        value: value.into(),
        reason,
    };
    if let Some((_, why)) = REMOVED.iter().find(|(removed, _)| *removed == name) {
        return Err(bad((*why).to_string()));
    }
    let def = def(name).ok_or_else(|| TopicConfigError::Unknown(name.to_string()))?;
    let long = |min: i64, max: i64| -> Result<i64, TopicConfigError> {
        let v: i64 = value
            .trim()
            .parse()
            .map_err(|_| bad("not an integer".into()))?;
        if v < min || v > max {
            return Err(bad(format!("must be between {min} and {max}")));
        }
        Ok(v)
    };
    match def.kind {
        Kind::Long(min, max) => {
            long(min, max)?;
        }
        Kind::GzipLevel => {
            if long(-1, 9)? == 0 {
                return Err(bad("must be -1 (the default) or between 1 and 9".into()));
            }
        }
        Kind::Ratio => {
            let v: f64 = value
                .trim()
                .parse()
                .map_err(|_| bad("not a number".into()))?;
            if !(0.0..=1.0).contains(&v) {
                return Err(bad("must be between 0 and 1".into()));
            }
        }
        Kind::Dollars => {
            if !value.trim().is_empty() {
                let v: f64 = value
                    .trim()
                    .parse()
                    .map_err(|_| bad("not a number".into()))?;
                if !v.is_finite() || v < 0.0 {
                    return Err(bad("must be a number of US dollars, at least 0".into()));
                }
            }
        }
        Kind::Bool => {
            // Kafka parses booleans ignoring case (`TRUE`, `False`).
            if !is_bool(value) {
                return Err(bad("must be true or false".into()));
            }
        }
        Kind::OneOf(options) => {
            if !options.contains(&value.trim()) {
                return Err(bad(format!("must be one of {}", options.join(", "))));
            }
        }
        Kind::List(options) => {
            let items = list_items(value);
            if let Some(item) = items.iter().find(|item| !options.contains(item)) {
                return Err(bad(format!(
                    "`{item}` is not one of {}",
                    options.join(", ")
                )));
            }
        }
        Kind::Replicas => {
            let items = list_items(value);
            let pair = |item: &str| {
                item.split_once(':').is_some_and(|(partition, broker)| {
                    partition.trim().parse::<u32>().is_ok() && broker.trim().parse::<u32>().is_ok()
                })
            };
            if !(items == ["*"] || items.iter().all(|item| pair(item))) {
                return Err(bad(
                    "must be empty, `*`, or a list of partition:broker pairs such as 0:1,1:2"
                        .into(),
                ));
            }
        }
        Kind::Fixed { only, why } => {
            let matches = if is_bool(only) {
                value.trim().eq_ignore_ascii_case(only)
            } else {
                value.trim() == only
            };
            if !matches {
                return Err(bad(format!("only {only} is supported: {why}")));
            }
        }
    }
    Ok(())
}

/// The broker's floor under a topic config a client could set low enough to make the
/// broker create files without bound: `(floor, broker setting)`.
fn floor(name: &str, broker: &Config) -> Option<(i64, &'static str)> {
    match name {
        "segment.bytes" => Some((broker.log_segment_bytes_min, "log_segment_bytes_min")),
        "segment.ms" => Some((broker.log_segment_ms_min, "log_segment_ms_min")),
        _ => None,
    }
}

/// Refuses overrides below the broker's floors (see [`floor`]). Runs where a client sets
/// configs (CreateTopics, AlterConfigs, IncrementalAlterConfigs), not where stored topics
/// are loaded: a topic stored before the floor was raised still loads, and
/// [`TopicConfig::resolve`] lifts its value to the floor.
pub fn check_floors(
    overrides: &BTreeMap<String, String>,
    broker: &Config,
) -> Result<(), TopicConfigError> {
    for (name, value) in overrides {
        let Some((min, setting)) = floor(name, broker) else {
            continue;
        };
        if value.trim().parse::<i64>().is_ok_and(|v| v < min) {
            return Err(TopicConfigError::Invalid {
                name: name.clone(),
                value: value.clone(),
                reason: format!(
                    "must be at least {min}, this cluster's floor (broker setting {setting})"
                ),
            });
        }
    }
    Ok(())
}

/// Diskless topics (`diskless.enable`): the flag is fixed at creation (a diskless topic
/// has no local logs to turn into, and a replicated one has no runs to turn into), and a
/// diskless topic is always tiered. cleanup.policy=compact is allowed: the merge owner
/// compacts the merged history (`crate::diskless::compact`). `stored` is `None` at
/// creation.
pub fn check_diskless(
    stored: Option<&BTreeMap<String, String>>,
    configs: &BTreeMap<String, String>,
) -> Result<(), TopicConfigError> {
    let flag = |configs: &BTreeMap<String, String>, name: &str| {
        configs
            .get(name)
            .map(|v| v.trim().eq_ignore_ascii_case("true"))
    };
    let diskless = flag(configs, "diskless.enable").unwrap_or(false);
    let invalid = |name: &str, reason: &str| TopicConfigError::Invalid {
        name: name.into(),
        value: configs.get(name).cloned().unwrap_or_default(),
        reason: reason.into(),
    };
    if let Some(stored) = stored
        && flag(stored, "diskless.enable").unwrap_or(false) != diskless
    {
        return Err(invalid(
            "diskless.enable",
            "diskless.enable is fixed at creation",
        ));
    }
    if !diskless {
        return Ok(());
    }
    if flag(configs, "remote.storage.enable") == Some(false) {
        return Err(invalid(
            "remote.storage.enable",
            "a diskless topic is always in the object store",
        ));
    }
    Ok(())
}

/// The effective configuration of a topic.
#[derive(Debug, Clone)]
pub struct TopicConfig {
    values: BTreeMap<&'static str, String>,
    overrides: BTreeMap<String, String>,
}

/// One row of DescribeConfigs.
pub struct Described {
    pub name: &'static str,
    pub value: String,
    pub is_default: bool,
    pub doc: &'static str,
    pub kafka_type: i8,
}

impl TopicConfig {
    pub fn resolve(
        overrides: &BTreeMap<String, String>,
        broker: &Config,
    ) -> Result<TopicConfig, TopicConfigError> {
        let mut values = BTreeMap::new();
        for def in DEFS {
            let value = overrides
                .get(def.name)
                .cloned()
                .unwrap_or_else(|| (def.default)(broker));
            check(def.name, &value)?;
            let mut value = if def.is_list() {
                list_items(&value).join(",")
            } else if def.kafka_type() == 1 {
                value.trim().to_ascii_lowercase()
            } else {
                value.trim().to_string()
            };
            if let Some((min, _)) = floor(def.name, broker)
                && value.parse::<i64>().is_ok_and(|v| v < min)
            {
                value = min.to_string();
            }
            values.insert(def.name, value);
        }
        for (name, value) in overrides {
            if def(name).is_none() {
                // Refused with the reason of a removed config, else as unknown.
                check(name, value)?;
            }
        }
        Ok(TopicConfig {
            values,
            overrides: overrides.clone(),
        })
    }

    fn long(&self, name: &str) -> i64 {
        self.values
            .get(name)
            .and_then(|v| v.parse().ok())
            .unwrap_or_default()
    }

    pub fn min_insync_replicas(&self) -> usize {
        self.long("min.insync.replicas").max(1) as usize
    }

    /// Whether the topic is diskless (`diskless.enable`, fixed at creation).
    pub fn diskless(&self) -> bool {
        self.values
            .get("diskless.enable")
            .is_some_and(|v| v == "true")
    }

    /// `cost.budget.usd.month`; `None` when not set.
    pub fn cost_budget_usd_month(&self) -> Option<f64> {
        self.values
            .get("cost.budget.usd.month")
            .and_then(|v| v.parse().ok())
    }

    pub fn unclean_leader_election(&self) -> bool {
        self.values
            .get("unclean.leader.election.enable")
            .is_some_and(|v| v == "true")
    }

    pub fn log_config(&self) -> LogConfig {
        let policy = self
            .values
            .get("cleanup.policy")
            .map_or("delete", String::as_str);
        let compact = policy.contains("compact");
        // A compact-only topic keeps every key's last record forever: no time or size
        // retention, locally or in the remote tier.
        let delete = policy.contains("delete");
        let retention = |name| if delete { self.long(name) } else { -1 };
        LogConfig {
            compact,
            delete_retention_ms: self.long("delete.retention.ms"),
            min_cleanable_dirty_ratio: self
                .values
                .get("min.cleanable.dirty.ratio")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.5),
            min_compaction_lag_ms: self.long("min.compaction.lag.ms"),
            max_compaction_lag_ms: self.long("max.compaction.lag.ms"),
            segment_bytes: self.long("segment.bytes") as u64,
            segment_ms: self.long("segment.ms"),
            index_interval_bytes: self.long("index.interval.bytes") as u64,
            flush_messages: self.long("flush.messages"),
            flush_ms: self.long("flush.ms"),
            retention_ms: retention("retention.ms"),
            retention_bytes: retention("retention.bytes"),
            max_message_bytes: self.long("max.message.bytes") as usize,
            local_retention_ms: self.long("local.retention.ms"),
            local_retention_bytes: self.long("local.retention.bytes"),
            remote_storage: self
                .values
                .get("remote.storage.enable")
                .is_some_and(|v| v == "true"),
            log_append_time: self
                .values
                .get("message.timestamp.type")
                .is_some_and(|v| v == "LogAppendTime"),
            recompression: self.recompression(),
            timestamp_before_max_ms: self.long("message.timestamp.before.max.ms"),
            timestamp_after_max_ms: self.long("message.timestamp.after.max.ms"),
        }
    }

    /// The codec (and level) produced batches are stored in; `None` for `producer`.
    fn recompression(&self) -> Option<Recompression> {
        let (codec, level) = match self.values.get("compression.type")?.as_str() {
            "uncompressed" => (Codec::None, 0),
            "gzip" => (Codec::Gzip, self.long("compression.gzip.level")),
            "snappy" => (Codec::Snappy, 0),
            "lz4" => (Codec::Lz4, self.long("compression.lz4.level")),
            "zstd" => (Codec::Zstd, self.long("compression.zstd.level")),
            _ => return None,
        };
        Some(Recompression {
            codec,
            level: i32::try_from(level).unwrap_or_default(),
        })
    }

    pub fn describe(&self) -> Vec<Described> {
        DEFS.iter()
            .map(|def| Described {
                name: def.name,
                value: self.values.get(def.name).cloned().unwrap_or_default(),
                is_default: !self.overrides.contains_key(def.name),
                doc: def.doc,
                kafka_type: def.kafka_type(),
            })
            .collect()
    }
}

/// The broker's topic defaults (`log_segment_bytes` and the other settings topic configs
/// default to) checked with the rules of topic configs, so that a default no topic could
/// be set to is refused at start-up. The binary calls it right after `Config::load`.
pub fn check_defaults(config: &Config) -> Result<(), ConfigError> {
    TopicConfig::resolve(&BTreeMap::new(), config)
        .map(drop)
        .map_err(|e| ConfigError::Invalid {
            setting: e.broker_setting(),
            message: e.to_string(),
        })
}

#[cfg(test)]
mod tests;
