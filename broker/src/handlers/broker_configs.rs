//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs on BROKER resources (type 4):
//! the dynamic broker configs of `broker::dynamic_config`.
//!
//! As in Kafka, a resource is named "" (the cluster default) or by the node id of the
//! broker that receives the request (clients send it there); another id is refused with
//! INVALID_REQUEST rather than forwarded. Refused changes are INVALID_REQUEST naming the
//! config, as Kafka answers them (KAFKA-13609); APPEND and SUBTRACT are INVALID_CONFIG,
//! since no broker config is a list.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{alter_configs_request, incremental_alter_configs_request};
use kafka_protocol::protocol::StrBytes;

use super::str_bytes;
use crate::broker::Broker;
use crate::broker::dynamic_config::{self, AlterBrokerConfigsError, DynamicConfigError};
use crate::cluster::ConfigScope;

const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

/// A refusal: the error code and Kafka's message.
pub type Refusal = (i16, StrBytes);

fn refuse(broker: &Broker, api: &str, error: ResponseError, message: String) -> Refusal {
    broker.metrics.error(api, error);
    (error.code(), str_bytes(message))
}

/// The scope a resource name means on this broker.
fn scope(broker: &Broker, api: &str, name: &str) -> Result<ConfigScope, Refusal> {
    if name.is_empty() {
        return Ok(ConfigScope::ClusterDefault);
    }
    let own = broker.config.node_id;
    match name.parse::<i32>() {
        Ok(id) if id == own => Ok(ConfigScope::Broker(id)),
        Ok(_) => Err(refuse(
            broker,
            api,
            ResponseError::InvalidRequest,
            format!("Unexpected broker id, expected {own}, but received {name}"),
        )),
        Err(_) => Err(refuse(
            broker,
            api,
            ResponseError::InvalidRequest,
            format!("Node id must be an integer, but it is: {name}"),
        )),
    }
}

pub fn describe(
    broker: &Broker,
    resource: &DescribeConfigsResource,
    include_synonyms: bool,
) -> DescribeConfigsResult {
    let result = DescribeConfigsResult::default()
        .with_resource_type(resource.resource_type)
        .with_resource_name(resource.resource_name.clone());
    let scope = match scope(broker, "DescribeConfigs", &resource.resource_name) {
        Ok(scope) => scope,
        Err((code, message)) => {
            return result
                .with_error_code(code)
                .with_error_message(Some(message));
        }
    };
    // No keys (null or empty, as in Kafka) means every config.
    let wanted = |name: &str| {
        resource
            .configuration_keys
            .as_ref()
            .is_none_or(|keys| keys.is_empty() || keys.iter().any(|k| k.as_str() == name))
    };
    let configs = dynamic_config::describe(
        &broker.config,
        &broker.effective_config(),
        &broker.stored_broker_configs(),
        scope,
    )
    .into_iter()
    .filter(|row| wanted(&row.name))
    .map(|row| {
        let synonyms = if include_synonyms {
            row.synonyms
                .into_iter()
                .map(|(name, value, source)| {
                    DescribeConfigsSynonym::default()
                        .with_name(str_bytes(name))
                        .with_value(value.map(str_bytes))
                        .with_source(source)
                })
                .collect()
        } else {
            Vec::new()
        };
        DescribeConfigsResourceResult::default()
            .with_name(str_bytes(row.name))
            .with_value(row.value.map(str_bytes))
            .with_read_only(row.read_only)
            .with_config_source(row.source)
            .with_is_sensitive(row.sensitive)
            .with_config_type(row.config_type)
            .with_synonyms(synonyms)
    })
    .collect();
    result.with_configs(configs)
}

fn alter_refusal(broker: &Broker, api: &str, error: AlterBrokerConfigsError) -> Refusal {
    let code = match &error {
        AlterBrokerConfigsError::Refused(_) => ResponseError::InvalidRequest,
        AlterBrokerConfigsError::Store(_) => ResponseError::RequestTimedOut,
    };
    refuse(broker, api, code, error.to_string())
}

/// Kafka refuses a request that names one config twice.
fn no_duplicates<'a>(
    broker: &Broker,
    api: &str,
    names: impl Iterator<Item = &'a StrBytes>,
) -> Result<(), Refusal> {
    let mut seen = std::collections::BTreeSet::new();
    for name in names {
        if !seen.insert(name.as_str()) {
            return Err(refuse(
                broker,
                api,
                ResponseError::InvalidRequest,
                "Error due to duplicate config keys".into(),
            ));
        }
    }
    Ok(())
}

fn null_value(broker: &Broker, api: &str, name: &str) -> Refusal {
    refuse(
        broker,
        api,
        ResponseError::InvalidRequest,
        format!("Null value not supported for : {name}"),
    )
}

pub async fn incremental_alter(
    broker: &Broker,
    resource: &incremental_alter_configs_request::AlterConfigsResource,
    validate_only: bool,
) -> Result<(), Refusal> {
    const API: &str = "IncrementalAlterConfigs";
    let scope = scope(broker, API, &resource.resource_name)?;
    no_duplicates(broker, API, resource.configs.iter().map(|c| &c.name))?;
    for op in &resource.configs {
        match (op.config_operation, &op.value) {
            (OP_SET, None) => return Err(null_value(broker, API, &op.name)),
            (OP_SET | OP_DELETE, _) => {}
            (OP_APPEND, _) => {
                return Err(refuse(
                    broker,
                    API,
                    ResponseError::InvalidConfig,
                    format!(
                        "Config value append is not allowed for config key: {}",
                        op.name
                    ),
                ));
            }
            (OP_SUBTRACT, _) => {
                return Err(refuse(
                    broker,
                    API,
                    ResponseError::InvalidConfig,
                    format!(
                        "Config value subtract is not allowed for config key: {}",
                        op.name
                    ),
                ));
            }
            (other, _) => {
                return Err(refuse(
                    broker,
                    API,
                    ResponseError::InvalidRequest,
                    format!("Unknown operations type {other}"),
                ));
            }
        }
    }
    let edit = |current: &std::collections::BTreeMap<String, String>| {
        let mut next = current.clone();
        for op in &resource.configs {
            let name = op.name.to_string();
            match &op.value {
                Some(value) if op.config_operation == OP_SET => {
                    next.insert(name, value.to_string());
                }
                _ => {
                    // Any stored name may be deleted, so that a value this broker does not
                    // apply (a name only a newer build knows) can be removed; deleting an
                    // unstored name the broker cannot change is refused like setting it.
                    if next.remove(&name).is_none() {
                        dynamic_config::check_names([&name])?;
                    }
                }
            }
        }
        Ok::<_, DynamicConfigError>(next)
    };
    broker
        .alter_broker_configs(scope, edit, validate_only)
        .await
        .map_err(|e| alter_refusal(broker, API, e))
}

/// AlterConfigs replaces the whole set of the resource's dynamic configs.
pub async fn alter(
    broker: &Broker,
    resource: &alter_configs_request::AlterConfigsResource,
    validate_only: bool,
) -> Result<(), Refusal> {
    const API: &str = "AlterConfigs";
    let scope = scope(broker, API, &resource.resource_name)?;
    no_duplicates(broker, API, resource.configs.iter().map(|c| &c.name))?;
    let mut next = std::collections::BTreeMap::new();
    for config in &resource.configs {
        let Some(value) = &config.value else {
            return Err(null_value(broker, API, &config.name));
        };
        next.insert(config.name.to_string(), value.to_string());
    }
    broker
        .alter_broker_configs(scope, |_| Ok(next.clone()), validate_only)
        .await
        .map_err(|e| alter_refusal(broker, API, e))
}
