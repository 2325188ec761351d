//! Dynamic broker configs: settings an operator changes with DescribeConfigs /
//! IncrementalAlterConfigs / AlterConfigs on a BROKER resource, without a restart.
//!
//! Values live in the metadata store under Kafka's names ([`crate::cluster::BrokerConfigs`]):
//! the cluster default (a BROKER resource named "") and one set per broker (named by its
//! node id). A broker's effective configuration is, per setting and as in Kafka: its own
//! dynamic value, else the cluster default, else the static value (file, `STRATA_*`
//! variable or flag), else the built-in default.
//!
//! Every broker reads the stored values in its metadata round (and once at start-up, before
//! it opens a log), so a change made through any broker reaches all of them within
//! `metadata_refresh_interval_ms`; the broker that took the change applies it at once.
//! Topics keep their own overrides; everything else about them follows the new defaults.
//!
//! Only the settings marked dynamic in [`SETTINGS`] may be stored. A stored value that does
//! not apply (a name written by a newer build, a value another broker's static settings
//! accepted) is dropped on its own and logged once, as in Kafka: the other values apply
//! (see [`effective_with_dropped`]). Every apply and alter runs under `Broker::admin`, and
//! a metadata round does not apply a read begun before this broker stored a change.

use std::collections::BTreeMap;
use std::sync::Arc;

use tracing::{info, warn};

use super::Broker;
use crate::cluster::{BrokerConfigs, ConfigScope, StoreError};
use crate::config::Config;
use crate::registry::Topic;
use crate::topic_config::TopicConfig;

/// Kafka's DescribeConfigs config sources.
pub const SOURCE_DYNAMIC_BROKER: i8 = 2;
pub const SOURCE_DYNAMIC_DEFAULT_BROKER: i8 = 3;
pub const SOURCE_STATIC_BROKER: i8 = 4;
pub const SOURCE_DEFAULT: i8 = 5;

/// One broker setting as DescribeConfigs shows it.
pub struct BrokerSetting {
    /// Kafka's name.
    pub name: &'static str,
    /// The Strata setting (TOML key) behind it.
    pub setting: &'static str,
    /// Whether it may be changed at run time (cluster default or per broker).
    pub dynamic: bool,
}

const fn fixed(name: &'static str, setting: &'static str) -> BrokerSetting {
    BrokerSetting {
        name,
        setting,
        dynamic: false,
    }
}

const fn dynamic(name: &'static str, setting: &'static str) -> BrokerSetting {
    BrokerSetting {
        name,
        setting,
        dynamic: true,
    }
}

/// The broker settings DescribeConfigs lists, in order. The dynamic ones are the topic
/// defaults (applied to every topic without its own override), `num.partitions` and the
/// replication throttle rates.
pub const SETTINGS: &[BrokerSetting] = &[
    fixed("broker.id", "node_id"),
    dynamic("num.partitions", "num_partitions"),
    fixed("default.replication.factor", "default_replication_factor"),
    fixed("auto.create.topics.enable", "auto_create_topics"),
    fixed("socket.request.max.bytes", "max_request_bytes"),
    dynamic("log.segment.bytes", "log_segment_bytes"),
    dynamic("log.roll.ms", "log_segment_ms"),
    dynamic("log.retention.ms", "log_retention_ms"),
    dynamic("log.retention.bytes", "log_retention_bytes"),
    fixed(
        "log.retention.check.interval.ms",
        "log_housekeeping_interval_ms",
    ),
    dynamic("log.flush.interval.messages", "log_flush_messages"),
    dynamic("log.flush.interval.ms", "log_flush_ms"),
    dynamic("log.index.interval.bytes", "log_index_interval_bytes"),
    dynamic("message.max.bytes", "message_max_bytes"),
    dynamic("log.message.timestamp.type", "log_message_timestamp_type"),
    dynamic("min.insync.replicas", "min_insync_replicas"),
    dynamic(
        "unclean.leader.election.enable",
        "unclean_leader_election_enable",
    ),
    dynamic("log.local.retention.ms", "log_local_retention_ms"),
    dynamic("log.local.retention.bytes", "log_local_retention_bytes"),
    dynamic(
        "leader.replication.throttled.rate",
        "leader_replication_throttled_rate",
    ),
    dynamic(
        "follower.replication.throttled.rate",
        "follower_replication_throttled_rate",
    ),
    fixed("log.cleaner.backoff.ms", "log_cleaner_interval_ms"),
    fixed(
        "log.cleaner.dedupe.buffer.size",
        "log_cleaner_dedupe_buffer_bytes",
    ),
    // PEM files have no Kafka name of their own (Kafka's keystore holds both): Strata's.
    fixed("ssl_cert_file", "ssl_cert_file"),
    fixed("ssl_key_file", "ssl_key_file"),
    fixed("ssl_ca_file", "ssl_ca_file"),
    fixed("ssl.client.auth", "ssl_client_auth"),
];

pub fn setting(name: &str) -> Option<&'static BrokerSetting> {
    SETTINGS.iter().find(|s| s.name == name)
}

/// Why a dynamic change is refused. Kafka answers all of these with INVALID_REQUEST.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DynamicConfigError {
    #[error("Cannot update these configs dynamically: {0}")]
    ReadOnly(String),
    #[error("Unknown broker config: {0}")]
    Unknown(String),
    #[error("Invalid value `{value}` for configuration {name}: {reason}")]
    Invalid {
        name: String,
        value: String,
        reason: String,
    },
}

/// The setting `name` names, if it may be set dynamically.
fn dynamic_setting(name: &str) -> Result<&'static BrokerSetting, DynamicConfigError> {
    match setting(name) {
        None => Err(DynamicConfigError::Unknown(name.to_string())),
        Some(s) if !s.dynamic => Err(DynamicConfigError::ReadOnly(name.to_string())),
        Some(s) => Ok(s),
    }
}

/// Checks that every name in `configs` may be set dynamically.
pub fn check_names<'a>(
    names: impl IntoIterator<Item = &'a String>,
) -> Result<(), DynamicConfigError> {
    names
        .into_iter()
        .try_for_each(|name| dynamic_setting(name).map(drop))
}

/// `static_config` with the dynamic values for its broker applied (the cluster default,
/// then the broker's own), each checked as at start-up, and the values this broker does
/// not apply with the reason.
///
/// As Kafka's DynamicBrokerConfig does, a value that does not apply (an unknown or
/// read-only name, say one a newer build stored; a value that does not parse, is out of
/// range or breaks a start-up check) is dropped on its own: the others still apply, and
/// the setting keeps the value below it (the cluster default, else the static one).
/// `log.segment.bytes` and `log.roll.ms` below this broker's static floors
/// (`log_segment_bytes_min`, `log_segment_ms_min`) are lifted to them, as
/// [`TopicConfig::resolve`] lifts topic overrides, unless `clamp` is false (a change being
/// checked, refused instead).
pub fn effective_with_dropped(
    static_config: &Config,
    stored: &BrokerConfigs,
    clamp: bool,
) -> (Config, Vec<DynamicConfigError>) {
    let mut dropped = Vec::new();
    let Ok(mut table) = toml::Table::try_from(static_config) else {
        // Cannot happen: a Config always serializes. Nothing dynamic applies then.
        return (static_config.clone(), dropped);
    };
    let mut config = static_config.clone();
    let own = stored.scope(ConfigScope::Broker(static_config.node_id));
    for (name, value) in stored.cluster_default.iter().chain(own.iter()) {
        match apply_one(&config, &table, name, value, clamp) {
            Ok((next_table, next_config)) => {
                table = next_table;
                config = next_config;
            }
            Err(e) => dropped.push(e),
        }
    }
    (config, dropped)
}

/// `table` (the configuration `config`) with `name` set to `value`, checked.
fn apply_one(
    config: &Config,
    table: &toml::Table,
    name: &str,
    value: &str,
    clamp: bool,
) -> Result<(toml::Table, Config), DynamicConfigError> {
    let def = dynamic_setting(name)?;
    let invalid = |reason: String| DynamicConfigError::Invalid {
        name: name.to_string(),
        value: value.to_string(),
        reason,
    };
    let current = table
        .get(def.setting)
        .ok_or_else(|| invalid(format!("no broker setting {}", def.setting)))?;
    let mut typed = crate::config::typed_value(name, value, current).map_err(|e| {
        invalid(match e {
            crate::config::ConfigError::Invalid { message, .. } => message,
            other => other.to_string(),
        })
    })?;
    let floor = match def.setting {
        "log_segment_bytes" => Some(config.log_segment_bytes_min),
        "log_segment_ms" => Some(config.log_segment_ms_min),
        _ => None,
    };
    if clamp
        && let (Some(floor), toml::Value::Integer(v)) = (floor, &typed)
        && *v < floor
    {
        typed = toml::Value::Integer(floor);
    }
    let mut table = table.clone();
    table.insert(def.setting.to_string(), typed);
    // A value out of the setting's range (an i32 setting given 3000000000) fails here.
    let next: Config = table
        .clone()
        .try_into()
        .map_err(|e: toml::de::Error| invalid(e.message().trim().to_string()))?;
    let check = |e: crate::config::ConfigError| {
        invalid(match e {
            crate::config::ConfigError::Invalid { message, setting } => {
                format!("{message} (broker setting {setting})")
            }
            other => other.to_string(),
        })
    };
    next.validate().map_err(check)?;
    crate::topic_config::check_defaults(&next).map_err(check)?;
    Ok((table, next))
}

/// [`effective_with_dropped`], refusing the first value that does not apply.
pub fn effective(
    static_config: &Config,
    stored: &BrokerConfigs,
) -> Result<Config, DynamicConfigError> {
    let (config, dropped) = effective_with_dropped(static_config, stored, false);
    match dropped.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(config),
    }
}

/// One row of DescribeConfigs for a BROKER resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Described {
    pub name: String,
    /// `None` for a sensitive setting.
    pub value: Option<String>,
    pub source: i8,
    pub read_only: bool,
    pub sensitive: bool,
    /// Kafka's ConfigType: BOOLEAN 1, STRING 2, INT 3, LONG 5, DOUBLE 6, PASSWORD 9.
    pub config_type: i8,
    /// Where the value could come from, highest precedence first: (name, value, source).
    pub synonyms: Vec<(String, Option<String>, i8)>,
}

fn text(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The settings Kafka types INT (3); other integers are LONG (5).
const INT_SETTINGS: &[&str] = &[
    "broker.id",
    "num.partitions",
    "socket.request.max.bytes",
    "log.segment.bytes",
    "log.index.interval.bytes",
    "message.max.bytes",
    "min.insync.replicas",
];

/// Kafka's ConfigType of the setting `name`, whose value is like `value`.
fn config_type(name: &str, value: &toml::Value) -> i8 {
    match value {
        toml::Value::Boolean(_) => 1,
        toml::Value::Integer(_) if INT_SETTINGS.contains(&name) => 3,
        toml::Value::Integer(_) => 5,
        toml::Value::Float(_) => 6,
        _ => 2,
    }
}

/// The DescribeConfigs rows of a BROKER resource. The cluster default lists only what is
/// set at that level (as Kafka does); a broker lists every setting in [`SETTINGS`] with
/// its effective value, then the sensitive settings without their values.
pub fn describe(
    static_config: &Config,
    effective: &Config,
    stored: &BrokerConfigs,
    scope: ConfigScope,
) -> Vec<Described> {
    let table = |c: &Config| toml::Table::try_from(c).unwrap_or_default();
    let (static_table, effective_table) = (table(static_config), table(effective));
    let default_table = table(&Config::default());
    let type_of = |s: &BrokerSetting| {
        static_table
            .get(s.setting)
            .map_or(2, |value| config_type(s.name, value))
    };
    if scope == ConfigScope::ClusterDefault {
        return stored
            .cluster_default
            .iter()
            .map(|(name, value)| Described {
                name: name.clone(),
                value: Some(value.clone()),
                source: SOURCE_DYNAMIC_DEFAULT_BROKER,
                read_only: false,
                sensitive: false,
                config_type: setting(name).map_or(2, type_of),
                synonyms: vec![(
                    name.clone(),
                    Some(value.clone()),
                    SOURCE_DYNAMIC_DEFAULT_BROKER,
                )],
            })
            .collect();
    }
    let own = stored.scope(scope);
    let mut rows: Vec<Described> = SETTINGS
        .iter()
        .map(|s| {
            let mut synonyms = Vec::new();
            let mut add = |value: Option<String>, source| {
                if let Some(value) = value {
                    synonyms.push((s.name.to_string(), Some(value), source));
                }
            };
            add(own.get(s.name).cloned(), SOURCE_DYNAMIC_BROKER);
            add(
                stored.cluster_default.get(s.name).cloned(),
                SOURCE_DYNAMIC_DEFAULT_BROKER,
            );
            let static_value = static_table.get(s.setting);
            let default_value = default_table.get(s.setting);
            if static_value != default_value {
                add(static_value.map(text), SOURCE_STATIC_BROKER);
            }
            add(default_value.map(text), SOURCE_DEFAULT);
            Described {
                name: s.name.to_string(),
                value: effective_table.get(s.setting).map(text),
                source: synonyms
                    .first()
                    .map_or(SOURCE_DEFAULT, |(_, _, source)| *source),
                read_only: !s.dynamic,
                sensitive: false,
                config_type: type_of(s),
                synonyms,
            }
        })
        .collect();
    rows.extend(Config::SENSITIVE.iter().map(|setting| Described {
        name: setting.to_string(),
        value: None,
        source: if static_table.get(*setting) != default_table.get(*setting) {
            SOURCE_STATIC_BROKER
        } else {
            SOURCE_DEFAULT
        },
        read_only: true,
        sensitive: true,
        config_type: 9,
        synonyms: Vec::new(),
    }));
    rows
}

/// What this broker last read of the dynamic configs, and its configuration with them.
pub(super) struct DynamicConfigs {
    /// Written only with `Broker::admin` held, so that the comparison with what is in
    /// force, this write and the topics' update happen as one step.
    state: std::sync::RwLock<(Arc<BrokerConfigs>, Arc<Config>)>,
    /// Changes this broker stored (bumped, with `Broker::admin` held, before the store
    /// write): a metadata round whose read began before one must not apply what it read
    /// (possibly the values before the change) over it.
    changes: std::sync::atomic::AtomicU64,
    /// The dropped values already logged, so that each is logged once and not every round.
    warned: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

impl DynamicConfigs {
    pub(super) fn new(static_config: &Config) -> DynamicConfigs {
        DynamicConfigs {
            state: std::sync::RwLock::new((
                Arc::new(BrokerConfigs::default()),
                Arc::new(static_config.clone()),
            )),
            changes: std::sync::atomic::AtomicU64::new(0),
            warned: std::sync::Mutex::new(std::collections::BTreeSet::new()),
        }
    }

    /// How many changes this broker has stored; see [`Broker::apply_broker_configs_read`].
    pub(super) fn changes(&self) -> u64 {
        self.changes.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Logs the values in `dropped` not logged before; forgets those no longer dropped,
    /// so that one dropped again later is logged again.
    fn warn_dropped(&self, dropped: &[DynamicConfigError]) {
        let now: std::collections::BTreeSet<String> =
            dropped.iter().map(ToString::to_string).collect();
        let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
        for reason in now.difference(&warned) {
            warn!(reason = %reason, "a stored dynamic broker config does not apply to this broker; it keeps the value below it");
        }
        *warned = now;
    }
}

/// Why a change of dynamic broker configs failed.
#[derive(Debug, thiserror::Error)]
pub enum AlterBrokerConfigsError {
    #[error(transparent)]
    Refused(#[from] DynamicConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Broker {
    /// The configuration in force: the static settings with the dynamic ones applied.
    /// Read it where a dynamic setting matters (topic defaults, `num.partitions`).
    pub fn effective_config(&self) -> Arc<Config> {
        self.dynamic_configs
            .state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clone()
    }

    /// The dynamic configs as this broker last read them.
    pub fn stored_broker_configs(&self) -> Arc<BrokerConfigs> {
        self.dynamic_configs
            .state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }

    /// Reads the dynamic configs from the store and applies them (start-up).
    pub(crate) async fn refresh_broker_configs(&self) -> Result<(), StoreError> {
        let stored = self.store.broker_configs().await?;
        let admin = self.admin.lock().await;
        self.apply_broker_configs(&admin, stored);
        Ok(())
    }

    /// Applies `stored`, read by a metadata round that began when
    /// [`DynamicConfigs::changes`] was `changes_before_read`, unless this broker stored a
    /// change since: that change is in force already and the read may predate it.
    pub(crate) async fn apply_broker_configs_read(
        &self,
        stored: BrokerConfigs,
        changes_before_read: u64,
    ) {
        let admin = self.admin.lock().await;
        if self.dynamic_configs.changes() == changes_before_read {
            self.apply_broker_configs(&admin, stored);
        }
    }

    /// Applies `stored` if it differs from what is in force: the new effective
    /// configuration (values that do not apply dropped, see [`effective_with_dropped`]),
    /// then every open topic's configuration resolved against it. The caller holds
    /// `admin` (the guard is the proof), so that applies and alters happen in order.
    fn apply_broker_configs(
        &self,
        _admin: &tokio::sync::MutexGuard<'_, ()>,
        stored: BrokerConfigs,
    ) {
        if *self.stored_broker_configs() == stored {
            return;
        }
        let (config, dropped) = effective_with_dropped(&self.config, &stored, true);
        self.dynamic_configs.warn_dropped(&dropped);
        info!(
            cluster_default = ?stored.cluster_default,
            own = ?stored.scope(ConfigScope::Broker(self.config.node_id)),
            dropped = dropped.len(),
            "dynamic broker configs applied"
        );
        self.replication_throttle.set_rates(&config);
        let config = Arc::new(config);
        *self
            .dynamic_configs
            .state
            .write()
            .unwrap_or_else(|p| p.into_inner()) = (Arc::new(stored), config.clone());
        for topic in self.topics.all() {
            let resolved = match TopicConfig::resolve(&topic.record.configs, &config) {
                Ok(resolved) => resolved,
                Err(e) => {
                    warn!(topic = %topic.name, error = %e, "cannot apply the new broker defaults to a topic");
                    continue;
                }
            };
            let log_config = resolved.log_config();
            if log_config != topic.config.log_config() {
                for partition in &topic.partitions {
                    partition.set_config(log_config.clone());
                }
            }
            self.topics.insert(Arc::new(Topic {
                name: topic.name.clone(),
                id: topic.id,
                partitions: topic.partitions.clone(),
                diskless: topic.diskless,
                config: resolved,
                record: topic.record.clone(),
                store_version: topic.store_version,
            }));
        }
    }

    /// Changes the dynamic configs of `scope` with `edit` (given the stored set, returns the
    /// new one), after checking that the values it sets or changes apply to this broker
    /// (values stored before, such as a name only a newer build knows, are left to the
    /// apply, which drops them). Nothing is stored when `validate_only`. The write is a
    /// compare-and-swap on the set it edited: when another broker changed it meanwhile,
    /// the edit runs again on the new set.
    pub async fn alter_broker_configs(
        &self,
        scope: ConfigScope,
        edit: impl Fn(&BTreeMap<String, String>) -> Result<BTreeMap<String, String>, DynamicConfigError>,
        validate_only: bool,
    ) -> Result<(), AlterBrokerConfigsError> {
        const ATTEMPTS: usize = 5;
        let admin = self.admin.lock().await;
        for _ in 0..ATTEMPTS {
            let mut stored = self.store.broker_configs().await?;
            let current = stored.scope(scope);
            let next = edit(&current)?;
            let changed = |name: &String| next.get(name) != current.get(name);
            check_names(next.keys().filter(|name| changed(name)))?;
            stored.set_scope(scope, next.clone());
            let (_, dropped) = effective_with_dropped(&self.config, &stored, false);
            // `scope` is this broker's or the cluster default, both of which apply here.
            if let Some(refused) = dropped.into_iter().find(|e| match e {
                DynamicConfigError::Invalid { name, value, .. } => {
                    next.get(name) == Some(value) && changed(name)
                }
                DynamicConfigError::ReadOnly(name) | DynamicConfigError::Unknown(name) => {
                    changed(name)
                }
            }) {
                return Err(refused.into());
            }
            if validate_only {
                return Ok(());
            }
            // Before the write: a metadata round reading meanwhile must not apply its read.
            self.dynamic_configs
                .changes
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if self
                .store
                .set_broker_configs(scope, &current, &next)
                .await?
            {
                self.apply_broker_configs(&admin, stored);
                return Ok(());
            }
        }
        Err(StoreError::Unavailable(format!(
            "the dynamic broker configs kept changing under {ATTEMPTS} attempts to change them"
        ))
        .into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_broker_value_beats_the_cluster_default_which_beats_the_static_one() {
        let static_config = Config {
            node_id: 1,
            log_retention_ms: 5000,
            log_flush_ms: 7,
            ..Config::default()
        };
        let stored = BrokerConfigs {
            cluster_default: set(&[("log.retention.ms", "60000"), ("num.partitions", "4")]),
            brokers: BTreeMap::from([
                (1, set(&[("log.retention.ms", "1000")])),
                (2, set(&[("num.partitions", "9")])),
            ]),
        };
        let config = effective(&static_config, &stored).expect("applies");
        assert_eq!(config.log_retention_ms, 1000);
        assert_eq!(config.num_partitions, 4, "broker 2's value is not ours");
        assert_eq!(config.log_flush_ms, 7);

        let rows = describe(&static_config, &config, &stored, ConfigScope::Broker(1));
        let row = |name: &str| {
            rows.iter()
                .find(|r| r.name == name)
                .expect("listed")
                .clone()
        };
        let retention = row("log.retention.ms");
        assert_eq!(retention.value.as_deref(), Some("1000"));
        assert_eq!(retention.source, SOURCE_DYNAMIC_BROKER);
        assert!(!retention.read_only);
        let sources: Vec<i8> = retention.synonyms.iter().map(|s| s.2).collect();
        assert_eq!(
            sources,
            [
                SOURCE_DYNAMIC_BROKER,
                SOURCE_DYNAMIC_DEFAULT_BROKER,
                SOURCE_STATIC_BROKER,
                SOURCE_DEFAULT
            ]
        );
        assert_eq!(row("num.partitions").source, SOURCE_DYNAMIC_DEFAULT_BROKER);
        assert_eq!(row("log.flush.interval.ms").source, SOURCE_STATIC_BROKER);
        assert_eq!(row("log.roll.ms").source, SOURCE_DEFAULT);
        assert!(row("broker.id").read_only);
        let secret = row("etcd_password");
        assert!(secret.sensitive && secret.value.is_none());
        assert_eq!(secret.config_type, 9, "PASSWORD");
        assert_eq!(row("num.partitions").config_type, 3, "INT");
        assert_eq!(row("min.insync.replicas").config_type, 3, "INT");
        assert_eq!(row("log.retention.ms").config_type, 5, "LONG");
        assert_eq!(row("unclean.leader.election.enable").config_type, 1);

        let defaults = describe(
            &static_config,
            &config,
            &stored,
            ConfigScope::ClusterDefault,
        );
        let names: Vec<&str> = defaults.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["log.retention.ms", "num.partitions"]);
        assert!(
            defaults
                .iter()
                .all(|r| r.source == SOURCE_DYNAMIC_DEFAULT_BROKER)
        );
    }

    #[test]
    fn read_only_unknown_and_invalid_values_are_refused_by_name() {
        let config = Config::default();
        let with_default = |pairs: &[(&str, &str)]| BrokerConfigs {
            cluster_default: set(pairs),
            ..BrokerConfigs::default()
        };
        assert_eq!(
            effective(&config, &with_default(&[("broker.id", "3")])),
            Err(DynamicConfigError::ReadOnly("broker.id".into()))
        );
        assert_eq!(
            effective(&config, &with_default(&[("no.such.config", "3")])),
            Err(DynamicConfigError::Unknown("no.such.config".into()))
        );
        for (name, value) in [
            ("log.retention.ms", "soon"),
            ("num.partitions", "0"),
            ("log.message.timestamp.type", "Sometimes"),
            ("unclean.leader.election.enable", "maybe"),
        ] {
            match effective(&config, &with_default(&[(name, value)])) {
                Err(DynamicConfigError::Invalid { name: n, .. }) => assert_eq!(n, name),
                other => panic!("{name}={value}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_value_that_does_not_apply_is_dropped_alone() {
        let static_config = Config {
            node_id: 1,
            log_retention_ms: 7 * 86_400_000,
            log_segment_bytes_min: 4 << 20,
            log_segment_bytes: 8 << 20,
            ..Config::default()
        };
        let stored = BrokerConfigs {
            cluster_default: set(&[
                ("log.retention.ms", "2592000000"),
                ("log.from.a.newer.build", "1"),
                ("log.segment.bytes", "2097152"),
                ("num.partitions", "3000000000"),
                ("log.flush.interval.ms", "soon"),
            ]),
            brokers: BTreeMap::from([(1, set(&[("broker.id", "3"), ("num.partitions", "6")]))]),
        };
        let (config, dropped) = effective_with_dropped(&static_config, &stored, true);
        assert_eq!(config.log_retention_ms, 2592000000, "the other keys apply");
        assert_eq!(config.log_segment_bytes, 4 << 20, "lifted to the floor");
        assert_eq!(
            config.num_partitions, 6,
            "the broker's own value still applies"
        );
        assert_eq!(config.log_flush_ms, static_config.log_flush_ms);
        let mut names: Vec<String> = dropped
            .iter()
            .map(|e| match e {
                DynamicConfigError::Unknown(n) | DynamicConfigError::ReadOnly(n) => n.clone(),
                DynamicConfigError::Invalid { name, .. } => name.clone(),
            })
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "broker.id",
                "log.flush.interval.ms",
                "log.from.a.newer.build",
                "num.partitions"
            ]
        );
        // Checked as a change, the value under the floor is refused rather than lifted.
        let (_, dropped) = effective_with_dropped(&static_config, &stored, false);
        assert!(dropped.iter().any(
            |e| matches!(e, DynamicConfigError::Invalid { name, .. } if name == "log.segment.bytes")
        ));
    }

    #[test]
    fn a_value_out_of_the_settings_range_is_refused_by_name() {
        for (name, value) in [
            ("num.partitions", "3000000000"),
            ("min.insync.replicas", "10000000000"),
        ] {
            let stored = BrokerConfigs {
                cluster_default: set(&[(name, value)]),
                ..BrokerConfigs::default()
            };
            match effective(&Config::default(), &stored) {
                Err(DynamicConfigError::Invalid {
                    name: n, value: v, ..
                }) => {
                    assert_eq!((n.as_str(), v.as_str()), (name, value));
                }
                other => panic!("{name}={value}: {other:?}"),
            }
        }
    }
}
