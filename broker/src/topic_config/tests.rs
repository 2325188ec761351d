#[test]
fn a_topic_default_no_topic_could_have_is_refused() {
    // Not a value message.timestamp.type takes; Config::load has no rule for it.
    let env = [(
        "STRATA_LOG_MESSAGE_TIMESTAMP_TYPE".to_string(),
        "Sometimes".to_string(),
    )];
    let config = Config::load(None, env.into_iter(), &BTreeMap::new()).expect("loads");
    let err = super::check_defaults(&config).expect_err("not a timestamp type");
    assert!(
        err.to_string().contains("log_message_timestamp_type"),
        "{err}"
    );
    super::check_defaults(&Config::default()).expect("the defaults are valid");
}

use super::*;

#[test]
fn overrides_beat_broker_defaults() {
    let broker = Config {
        log_retention_ms: 1000,
        ..Config::default()
    };
    let overrides = BTreeMap::from([("segment.bytes".to_string(), "2097152".to_string())]);
    let config = TopicConfig::resolve(&overrides, &broker).expect("valid");
    let log = config.log_config();
    assert_eq!(log.segment_bytes, 2097152);
    assert_eq!(log.retention_ms, 1000);
    let described = config.describe();
    let seg = described
        .iter()
        .find(|d| d.name == "segment.bytes")
        .expect("listed");
    assert!(!seg.is_default);
    assert_eq!(seg.value, "2097152");
}

#[test]
fn segment_floors_refuse_new_values_and_lift_stored_ones() {
    let broker = Config::default();
    let tiny = BTreeMap::from([("segment.bytes".to_string(), "14".to_string())]);
    let err = check_floors(&tiny, &broker).expect_err("below the floor");
    assert!(err.to_string().contains("log_segment_bytes_min"), "{err}");
    assert!(err.to_string().contains("1048576"), "{err}");
    let fast = BTreeMap::from([("segment.ms".to_string(), "1".to_string())]);
    let err = check_floors(&fast, &broker).expect_err("below the floor");
    assert!(err.to_string().contains("log_segment_ms_min"), "{err}");
    let ok = BTreeMap::from([("segment.bytes".to_string(), "1048576".to_string())]);
    assert!(check_floors(&ok, &broker).is_ok());
    // A topic stored before the floor existed still loads, at the floor.
    let stored = TopicConfig::resolve(&tiny, &broker).expect("loads");
    assert_eq!(stored.log_config().segment_bytes, 1 << 20);
    let lowered = Config {
        log_segment_bytes_min: 14,
        ..Config::default()
    };
    assert!(check_floors(&tiny, &lowered).is_ok());
    let kept = TopicConfig::resolve(&tiny, &lowered).expect("loads");
    assert_eq!(kept.log_config().segment_bytes, 14);
}

#[test]
fn bad_values_are_refused() {
    assert!(matches!(
        check("segment.bytes", "1"),
        Err(TopicConfigError::Invalid { .. })
    ));
    assert!(matches!(
        check("retention.ms", "soon"),
        Err(TopicConfigError::Invalid { .. })
    ));
    assert!(matches!(
        check("nope", "1"),
        Err(TopicConfigError::Unknown(_))
    ));
    assert!(check("message.timestamp.type", "LogAppendTime").is_ok());
}

/// Kafka 4.1's topic configs (TopicConfig, QuotaConfig's throttled-replica lists) and
/// the ones Kafka 4.0 removed.
const KAFKA_TOPIC_CONFIGS: &[&str] = &[
    "cleanup.policy",
    "compression.type",
    "compression.gzip.level",
    "compression.lz4.level",
    "compression.zstd.level",
    "delete.retention.ms",
    "file.delete.delay.ms",
    "flush.messages",
    "flush.ms",
    "follower.replication.throttled.replicas",
    "index.interval.bytes",
    "leader.replication.throttled.replicas",
    "local.retention.bytes",
    "local.retention.ms",
    "max.compaction.lag.ms",
    "max.message.bytes",
    "message.timestamp.type",
    "message.timestamp.before.max.ms",
    "message.timestamp.after.max.ms",
    "min.cleanable.dirty.ratio",
    "min.compaction.lag.ms",
    "min.insync.replicas",
    "preallocate",
    "remote.storage.enable",
    "remote.log.copy.disable",
    "remote.log.delete.on.disable",
    "retention.bytes",
    "retention.ms",
    "segment.bytes",
    "segment.index.bytes",
    "segment.jitter.ms",
    "segment.ms",
    "unclean.leader.election.enable",
];

/// Topic configs of Strata's own (Kafka has no such name).
const STRATA_TOPIC_CONFIGS: &[&str] = &["diskless.enable", "cost.budget.usd.month"];

#[test]
fn a_cost_budget_is_empty_or_dollars_at_least_zero() {
    for ok in ["", "0", "12.5", " 100 "] {
        assert!(check("cost.budget.usd.month", ok).is_ok(), "{ok}");
    }
    for bad in ["-1", "NaN", "inf", "ten"] {
        assert!(check("cost.budget.usd.month", bad).is_err(), "{bad}");
    }
    let resolve = |value: &str| {
        let overrides = BTreeMap::from([("cost.budget.usd.month".to_string(), value.to_string())]);
        TopicConfig::resolve(&overrides, &Config::default())
            .expect("resolve")
            .cost_budget_usd_month()
    };
    assert_eq!(resolve("12.5"), Some(12.5));
    assert_eq!(
        TopicConfig::resolve(&BTreeMap::new(), &Config::default())
            .expect("resolve")
            .cost_budget_usd_month(),
        None
    );
}

#[test]
fn every_kafka_topic_config_is_defined_and_removed_ones_are_refused_with_why() {
    for name in KAFKA_TOPIC_CONFIGS {
        assert!(def(name).is_some(), "{name} has no definition");
    }
    for name in STRATA_TOPIC_CONFIGS {
        assert!(def(name).is_some(), "{name} has no definition");
    }
    assert_eq!(
        DEFS.len(),
        KAFKA_TOPIC_CONFIGS.len() + STRATA_TOPIC_CONFIGS.len(),
        "no config Kafka lacks but Strata's own"
    );
    for (name, why) in REMOVED {
        let err = check(name, "3.0").expect_err("removed");
        assert!(err.to_string().contains(why), "{err}");
        assert!(err.to_string().contains("Kafka 4.0"), "{err}");
        // Also when a stored topic named one (it never loads with it).
        let overrides = BTreeMap::from([(name.to_string(), "x".to_string())]);
        assert!(TopicConfig::resolve(&overrides, &Config::default()).is_err());
    }
    // Every default is valid for its own config.
    let described = TopicConfig::resolve(&BTreeMap::new(), &Config::default())
        .expect("defaults resolve")
        .describe();
    assert_eq!(described.len(), DEFS.len());
}

#[test]
fn configs_strata_cannot_honour_accept_only_kafkas_default() {
    assert!(check("segment.jitter.ms", "0").is_ok());
    let err = check("segment.jitter.ms", "1000").expect_err("jitter is not implemented");
    assert!(err.to_string().contains("only 0 is supported"), "{err}");
    assert!(err.to_string().contains("segment.ms"), "{err}");
    assert!(check("remote.log.copy.disable", "false").is_ok());
    assert!(check("remote.log.copy.disable", "true").is_err());
    assert!(check("remote.log.delete.on.disable", "true").is_err());
    // Accepted with no effect: any valid value.
    assert!(check("preallocate", "true").is_ok());
    assert!(check("segment.index.bytes", "1048576").is_ok());
    assert!(check("segment.index.bytes", "3").is_err());
    assert!(check("file.delete.delay.ms", "0").is_ok());
}

#[test]
fn list_and_level_values_are_checked() {
    assert!(check("cleanup.policy", "compact, delete").is_ok());
    assert!(check("cleanup.policy", "delete,compact").is_ok());
    let err = check("cleanup.policy", "compact,shred").expect_err("not a policy");
    assert!(err.to_string().contains("`shred`"), "{err}");
    // Empty, as Kafka's ValidList allows: no deletion, no compaction.
    assert!(check("cleanup.policy", "").is_ok());
    let kept = BTreeMap::from([("cleanup.policy".to_string(), String::new())]);
    let kept = TopicConfig::resolve(&kept, &Config::default())
        .expect("valid")
        .log_config();
    assert!(!kept.compact);
    assert_eq!((kept.retention_ms, kept.retention_bytes), (-1, -1));
    for ok in ["", "*", "0:1", "0:1, 1:2"] {
        assert!(
            check("leader.replication.throttled.replicas", ok).is_ok(),
            "{ok}"
        );
    }
    for bad in ["all", "0", "0:x", "*,0:1", "-1:2"] {
        assert!(
            check("follower.replication.throttled.replicas", bad).is_err(),
            "{bad}"
        );
    }
    assert!(check("compression.type", "zstd").is_ok());
    assert!(check("compression.type", "brotli").is_err());
    assert!(check("compression.gzip.level", "-1").is_ok());
    assert!(check("compression.gzip.level", "9").is_ok());
    assert!(check("compression.gzip.level", "0").is_err());
    assert!(check("compression.gzip.level", "10").is_err());
    assert!(check("compression.lz4.level", "17").is_ok());
    assert!(check("compression.lz4.level", "0").is_err());
    assert!(check("compression.zstd.level", "-5").is_ok());
    assert!(check("compression.zstd.level", "23").is_err());
}

#[test]
fn compression_and_timestamp_configs_reach_the_log() {
    let overrides = BTreeMap::from([
        ("compression.type".to_string(), "zstd".to_string()),
        ("compression.zstd.level".to_string(), "9".to_string()),
        (
            "cleanup.policy".to_string(),
            " delete , compact".to_string(),
        ),
        (
            "message.timestamp.after.max.ms".to_string(),
            "1000".to_string(),
        ),
    ]);
    let config = TopicConfig::resolve(&overrides, &Config::default()).expect("valid");
    let log = config.log_config();
    assert_eq!(
        log.recompression,
        Some(Recompression {
            codec: Codec::Zstd,
            level: 9
        })
    );
    assert!(log.compact);
    assert_eq!(log.timestamp_after_max_ms, 1000);
    assert_eq!(log.timestamp_before_max_ms, i64::MAX);
    let policy = config
        .describe()
        .into_iter()
        .find(|d| d.name == "cleanup.policy")
        .expect("listed");
    assert_eq!(policy.value, "delete,compact");
    assert_eq!(policy.kafka_type, 7);
    let producer = TopicConfig::resolve(&BTreeMap::new(), &Config::default()).expect("valid");
    assert_eq!(producer.log_config().recompression, None);
    assert_eq!(producer.log_config().timestamp_after_max_ms, 3_600_000);
}

#[test]
fn booleans_are_read_ignoring_case_and_stored_in_lowercase() {
    let broker = Config::default();
    let mut overrides = BTreeMap::from([
        (
            "unclean.leader.election.enable".to_string(),
            "TRUE".to_string(),
        ),
        ("preallocate".to_string(), " True".to_string()),
        ("remote.log.copy.disable".to_string(), "False".to_string()),
        ("cleanup.policy".to_string(), "compact".to_string()),
    ]);
    let config = TopicConfig::resolve(&overrides, &broker).expect("Kafka accepts these");
    assert!(config.unclean_leader_election());
    normalize(&mut overrides);
    assert_eq!(overrides["unclean.leader.election.enable"], "true");
    assert_eq!(overrides["preallocate"], "true");
    assert_eq!(overrides["remote.log.copy.disable"], "false");
    assert_eq!(
        overrides["cleanup.policy"], "compact",
        "only booleans change"
    );
    for refused in ["yes", "1", "TRUE!"] {
        assert!(check("preallocate", refused).is_err(), "{refused}");
    }
    assert!(
        check("remote.log.copy.disable", "TRUE").is_err(),
        "only false is supported"
    );
}

#[test]
fn diskless_is_fixed_at_creation_tiered_and_may_be_compacted() {
    let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let diskless = map(&[("diskless.enable", "true")]);
    assert!(check_diskless(None, &diskless).is_ok());
    assert!(
        TopicConfig::resolve(&diskless, &Config::default())
            .expect("resolves")
            .diskless()
    );
    assert!(
        !TopicConfig::resolve(&BTreeMap::new(), &Config::default())
            .expect("resolves")
            .diskless()
    );
    // Other changes pass; turning it off or on fails with the reason.
    let changed = map(&[("diskless.enable", "true"), ("retention.ms", "1000")]);
    assert!(check_diskless(Some(&diskless), &changed).is_ok());
    for (stored, new) in [(&diskless, &BTreeMap::new()), (&BTreeMap::new(), &diskless)] {
        let err = check_diskless(Some(stored), new).expect_err("flag changed");
        assert!(
            err.to_string()
                .contains("diskless.enable is fixed at creation"),
            "{err}"
        );
    }
    let untiered = map(&[
        ("diskless.enable", "true"),
        ("remote.storage.enable", "false"),
    ]);
    assert!(check_diskless(None, &untiered).is_err());
    // Compaction, at creation and by a change, as for a replicated topic.
    for policy in ["compact", "compact,delete"] {
        let compacted = map(&[("diskless.enable", "TRUE"), ("cleanup.policy", policy)]);
        assert!(check_diskless(None, &compacted).is_ok(), "{policy}");
        assert!(
            check_diskless(Some(&diskless), &compacted).is_ok(),
            "{policy}"
        );
        assert!(
            TopicConfig::resolve(&compacted, &Config::default())
                .expect("resolves")
                .log_config()
                .compact
        );
    }
    assert!(check_diskless(None, &map(&[("cleanup.policy", "compact")])).is_ok());
}
