//! Topic administration: CreateTopics, DeleteTopics, CreatePartitions, DescribeConfigs,
//! AlterConfigs, IncrementalAlterConfigs (BROKER resources go to `broker_configs`).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, CreatePartitionsRequest, CreatePartitionsResponse,
    CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    DescribeConfigsRequest, DescribeConfigsResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse, ResponseKind, TopicName, alter_configs_response,
    incremental_alter_configs_request, incremental_alter_configs_response,
};
use kafka_protocol::protocol::StrBytes;

use super::{admin_error_code, str_bytes, topic_name};
use crate::broker::{AdminError, Broker, NewTopic};
use crate::cluster::StoreError;
use crate::topic_config::{self, Described, TopicConfigError};

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const SOURCE_DYNAMIC_TOPIC: i8 = 1;
const SOURCE_DEFAULT: i8 = 5;

fn error_parts(broker: &Broker, api: &str, error: &AdminError) -> (i16, Option<StrBytes>) {
    let code = admin_error_code(error);
    broker.metrics.error(api, code);
    (code.code(), Some(str_bytes(error.to_string())))
}

fn source(described: &Described) -> i8 {
    if described.is_default {
        SOURCE_DEFAULT
    } else {
        SOURCE_DYNAMIC_TOPIC
    }
}

/// A topic config's source and synonyms for DescribeConfigs, as Kafka reports them: an
/// override is DYNAMIC_TOPIC_CONFIG; an inherited value has the source of the broker
/// setting it comes from (`broker_rows`: this broker's DescribeConfigs rows), dynamic,
/// static or default. Synonyms list the override, then the broker setting's levels.
fn topic_source_and_synonyms(
    described: &Described,
    broker_rows: &[crate::broker::dynamic_config::Described],
) -> (i8, Vec<DescribeConfigsSynonym>) {
    let broker_row = topic_config::def(described.name).and_then(|def| {
        let setting = crate::broker::dynamic_config::SETTINGS
            .iter()
            .find(|s| s.setting == def.broker_setting)?;
        broker_rows.iter().find(|row| row.name == setting.name)
    });
    let mut synonyms = Vec::new();
    if !described.is_default {
        synonyms.push(
            DescribeConfigsSynonym::default()
                .with_name(str_bytes(described.name))
                .with_value(Some(str_bytes(described.value.clone())))
                .with_source(SOURCE_DYNAMIC_TOPIC),
        );
    }
    if let Some(row) = broker_row {
        synonyms.extend(row.synonyms.iter().map(|(name, value, source)| {
            DescribeConfigsSynonym::default()
                .with_name(str_bytes(name.clone()))
                .with_value(value.clone().map(str_bytes))
                .with_source(*source)
        }));
    }
    let source = match broker_row {
        Some(row) if described.is_default => row.source,
        _ => source(described),
    };
    (source, synonyms)
}

/// Admits `adding` partitions into a request that already added `added`, within
/// `max_partitions_per_request`: one request must not open an unbounded number of logs.
fn within_request_limit(broker: &Broker, added: &mut i64, adding: i64) -> Result<(), AdminError> {
    let limit = broker.config.max_partitions_per_request;
    if *added + adding > limit {
        return Err(AdminError::PolicyViolation(format!(
            "this request would add {} partitions; at most {limit} may be added per request (broker setting max_partitions_per_request)",
            *added + adding
        )));
    }
    *added += adding;
    Ok(())
}

/// A CreateTopics answer for a topic that was not created.
fn refused(broker: &Broker, name: TopicName, error: &AdminError) -> CreatableTopicResult {
    let (code, message) = error_parts(broker, "CreateTopics", error);
    CreatableTopicResult::default()
        .with_name(name)
        .with_error_code(code)
        .with_error_message(message)
        .with_num_partitions(-1)
        .with_replication_factor(-1)
}

pub async fn create_topics(
    broker: &Arc<Broker>,
    request: CreateTopicsRequest,
    version: i16,
) -> ResponseKind {
    // Refusals the handler decides are answered in place; the other topics are created
    // together (one store write for the request), then answered in request order.
    let mut slots: Vec<Result<TopicName, CreatableTopicResult>> =
        Vec::with_capacity(request.topics.len());
    let mut pending = Vec::new();
    let mut added = 0i64;
    // As Kafka: a name given more than once gets one answer, INVALID_REQUEST, and none
    // of its copies is created or charged to the request's partition budget.
    let mut seen = HashSet::new();
    let duplicates: HashSet<TopicName> = request
        .topics
        .iter()
        .filter(|t| !seen.insert(&t.name))
        .map(|t| t.name.clone())
        .collect();
    let mut answered = HashSet::new();
    for topic in request.topics {
        if duplicates.contains(&topic.name) {
            if answered.insert(topic.name.clone()) {
                slots.push(Err(CreatableTopicResult::default()
                    .with_name(topic.name)
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(str_bytes("Duplicate topic name.")))
                    .with_num_partitions(-1)
                    .with_replication_factor(-1)));
            }
            continue;
        }
        let name = topic.name.0.to_string();
        let configs: BTreeMap<String, String> = topic
            .configs
            .iter()
            .filter_map(|c| Some((c.name.to_string(), c.value.as_ref()?.to_string())))
            .collect();
        let mut partitions = topic.num_partitions;
        let mut factor = topic.replication_factor;
        let node = broker.config.node_id;
        if !topic.assignments.is_empty() {
            let valid = topic
                .assignments
                .iter()
                .all(|a| a.broker_ids.len() == 1 && a.broker_ids[0].0 == node);
            if !valid || partitions != -1 || factor != -1 {
                let message = format!(
                    "replica assignments may only name broker {node}, with num_partitions and replication_factor -1"
                );
                slots.push(Err(CreatableTopicResult::default()
                    .with_name(topic.name)
                    .with_error_code(ResponseError::InvalidReplicaAssignment.code())
                    .with_error_message(Some(str_bytes(message)))));
                continue;
            }
            partitions = topic.assignments.len() as i32;
            factor = 1;
        }
        let requested = if partitions == -1 {
            broker.effective_config().num_partitions
        } else {
            partitions
        };
        // A topic that exists, or a partition count Kafka refuses, gets Kafka's error for
        // that (create_topic answers it) without using the request's partition budget.
        let refused_anyway = broker.topics.get(&name).is_some()
            || !(partitions == -1 || (1..=100_000).contains(&partitions));
        let charged = if refused_anyway {
            Ok(())
        } else {
            within_request_limit(broker, &mut added, i64::from(requested.max(0)))
        };
        match charged {
            Ok(()) => {
                pending.push(NewTopic {
                    name,
                    num_partitions: partitions,
                    replication_factor: factor,
                    configs,
                });
                slots.push(Ok(topic.name));
            }
            Err(e) => slots.push(Err(refused(broker, topic.name, &e))),
        }
    }
    let mut created = broker
        .create_topics(pending, request.validate_only)
        .await
        .into_iter();
    let mut results = Vec::with_capacity(slots.len());
    for slot in slots {
        let name = match slot {
            Ok(name) => name,
            Err(result) => {
                results.push(result);
                continue;
            }
        };
        let outcome = created.next().unwrap_or_else(|| {
            Err(AdminError::Store(StoreError::Unavailable(
                "no result for the topic".into(),
            )))
        });
        let result = match outcome {
            Ok(created) => {
                let mut result = CreatableTopicResult::default()
                    .with_name(name)
                    .with_num_partitions(created.record.partitions.len() as i32)
                    .with_replication_factor(1);
                if version >= 7 && !request.validate_only {
                    result = result.with_topic_id(created.id);
                }
                if version >= 5 {
                    let configs = created
                        .config
                        .describe()
                        .into_iter()
                        .map(|d| {
                            CreatableTopicConfigs::default()
                                .with_name(str_bytes(d.name))
                                .with_config_source(source(&d))
                                .with_value(Some(str_bytes(d.value)))
                        })
                        .collect();
                    result = result.with_configs(Some(configs));
                }
                result
            }
            Err(e) => refused(broker, name, &e),
        };
        results.push(result);
    }
    ResponseKind::CreateTopics(CreateTopicsResponse::default().with_topics(results))
}

pub async fn delete_topics(
    broker: &Arc<Broker>,
    request: DeleteTopicsRequest,
    version: i16,
) -> ResponseKind {
    // Before v6 topics are named in `topic_names`; from v6 in `topics`, by name or id.
    let targets: Vec<(Option<String>, uuid::Uuid)> = if version >= 6 {
        request
            .topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id))
            .collect()
    } else {
        request
            .topic_names
            .iter()
            .map(|n| (Some(n.0.to_string()), uuid::Uuid::nil()))
            .collect()
    };
    let mut responses = Vec::with_capacity(targets.len());
    for (name, id) in targets {
        let name = name.or_else(|| broker.topics.by_id(id).map(|t| t.name.clone()));
        let result = DeletableTopicResult::default()
            .with_name(name.as_deref().map(topic_name))
            .with_topic_id(id);
        let Some(name) = name else {
            responses.push(result.with_error_code(ResponseError::UnknownTopicId.code()));
            continue;
        };
        responses.push(match broker.delete_topic(&name).await {
            Ok(deleted_id) => result.with_topic_id(deleted_id),
            Err(e) => {
                let (code, message) = error_parts(broker, "DeleteTopics", &e);
                result.with_error_code(code).with_error_message(message)
            }
        });
    }
    ResponseKind::DeleteTopics(DeleteTopicsResponse::default().with_responses(responses))
}

pub async fn create_partitions(
    broker: &Arc<Broker>,
    request: CreatePartitionsRequest,
) -> ResponseKind {
    let mut results = Vec::with_capacity(request.topics.len());
    let mut added = 0i64;
    for topic in request.topics {
        let result = CreatePartitionsTopicResult::default().with_name(topic.name.clone());
        let current = broker
            .topics
            .get(&topic.name.0)
            .map_or(0, |t| i64::from(t.partition_count()));
        let adding = (i64::from(topic.count) - current).max(0);
        // An unknown topic, or a count that does not grow it, gets Kafka's error for that
        // without using the request's partition budget.
        let refused_anyway = broker.topics.get(&topic.name.0).is_none() || adding == 0;
        let charged = if refused_anyway {
            Ok(())
        } else {
            within_request_limit(broker, &mut added, adding)
        };
        // Null means "place them"; so does an empty list (kafka-protocol's default, which
        // Kafka would refuse as too few assignments): an empty list can never be valid.
        let assignments = topic
            .assignments
            .filter(|a| !a.is_empty())
            .map(|assignments| {
                assignments
                    .into_iter()
                    .map(|a| a.broker_ids.into_iter().map(|id| id.0).collect())
                    .collect()
            });
        let outcome = match charged {
            Ok(()) => {
                broker
                    .create_partitions(
                        &topic.name.0,
                        topic.count,
                        assignments,
                        request.validate_only,
                    )
                    .await
            }
            Err(e) => Err(e),
        };
        results.push(match outcome {
            Ok(()) => result,
            Err(e) => {
                let (code, message) = error_parts(broker, "CreatePartitions", &e);
                result.with_error_code(code).with_error_message(message)
            }
        });
    }
    ResponseKind::CreatePartitions(CreatePartitionsResponse::default().with_results(results))
}

pub fn describe_configs(broker: &Arc<Broker>, request: DescribeConfigsRequest) -> ResponseKind {
    let results = request
        .resources
        .into_iter()
        .map(|resource| {
            let keys: Option<Vec<String>> = resource
                .configuration_keys
                .as_ref()
                .map(|k| k.iter().map(|s| s.to_string()).collect());
            // No keys (null or empty, as in Kafka) means every config.
            let wanted = |name: &str| {
                keys.as_ref()
                    .is_none_or(|k| k.is_empty() || k.iter().any(|w| w == name))
            };
            let result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            match resource.resource_type {
                RESOURCE_TOPIC => {
                    let Some(topic) = broker.topics.get(&resource.resource_name) else {
                        broker
                            .metrics
                            .error("DescribeConfigs", ResponseError::UnknownTopicOrPartition);
                        return result
                            .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                            .with_error_message(Some(str_bytes(format!(
                                "topic `{}` does not exist",
                                resource.resource_name
                            ))));
                    };
                    let broker_rows = crate::broker::dynamic_config::describe(
                        &broker.config,
                        &broker.effective_config(),
                        &broker.stored_broker_configs(),
                        crate::cluster::ConfigScope::Broker(broker.config.node_id),
                    );
                    let configs = topic
                        .config
                        .describe()
                        .into_iter()
                        .filter(|d| wanted(d.name))
                        .map(|d| {
                            let (source, synonyms) = topic_source_and_synonyms(&d, &broker_rows);
                            DescribeConfigsResourceResult::default()
                                .with_name(str_bytes(d.name))
                                .with_config_source(source)
                                .with_synonyms(if request.include_synonyms {
                                    synonyms
                                } else {
                                    Vec::new()
                                })
                                .with_config_type(d.kafka_type)
                                .with_documentation(
                                    request.include_documentation.then(|| str_bytes(d.doc)),
                                )
                                .with_value(Some(str_bytes(d.value)))
                        })
                        .collect();
                    result.with_configs(configs)
                }
                RESOURCE_BROKER => {
                    super::broker_configs::describe(broker, &resource, request.include_synonyms)
                }
                other => result
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(str_bytes(format!(
                        "resource type {other} is not supported"
                    )))),
            }
        })
        .collect();
    ResponseKind::DescribeConfigs(DescribeConfigsResponse::default().with_results(results))
}

/// Validates the resource of an alter request; returns the topic name or an error.
fn alter_target(resource_type: i8, name: &StrBytes) -> Result<String, (i16, StrBytes)> {
    match resource_type {
        RESOURCE_TOPIC => Ok(name.to_string()),
        other => Err((
            ResponseError::InvalidRequest.code(),
            str_bytes(format!("resource type {other} is not supported")),
        )),
    }
}

/// What Kafka refuses in an alter resource before looking at any config, with
/// INVALID_REQUEST: a config named twice (rather than pick one), a value missing where
/// the operation needs one, an operation that does not exist. `configs` are (name,
/// operation, has a value); AlterConfigs' operation is SET.
fn malformed_resource<'a>(
    configs: impl IntoIterator<Item = (&'a StrBytes, i8, bool)>,
) -> Option<(i16, StrBytes)> {
    let mut seen = std::collections::BTreeSet::new();
    let mut null = Vec::new();
    let mut problem = None;
    for (name, operation, has_value) in configs {
        if !seen.insert(name.as_str()) {
            problem.get_or_insert(format!(
                "config `{}` is named more than once in this resource; Kafka refuses duplicate config keys",
                name.as_str()
            ));
        }
        if !(OP_SET..=OP_SUBTRACT).contains(&operation) {
            problem.get_or_insert(format!(
                "operation {operation} of config `{}` does not exist (0 SET, 1 DELETE, 2 APPEND, 3 SUBTRACT)",
                name.as_str()
            ));
        }
        if operation != OP_DELETE && !has_value {
            null.push(name.as_str());
        }
    }
    if problem.is_none() && !null.is_empty() {
        problem = Some(format!("null value not supported for: {}", null.join(", ")));
    }
    problem.map(|message| (ResponseError::InvalidRequest.code(), str_bytes(message)))
}

/// Resources a request names more than once: Kafka answers each of their entries with
/// INVALID_REQUEST, [`DUPLICATE_RESOURCE`], and applies none of them.
fn duplicated_resources<'a>(
    resources: impl IntoIterator<Item = (i8, &'a StrBytes)>,
) -> HashSet<(i8, &'a str)> {
    let mut seen = HashSet::new();
    resources
        .into_iter()
        .filter(|(kind, name)| !seen.insert((*kind, name.as_str())))
        .map(|(kind, name)| (kind, name.as_str()))
        .collect()
}

const DUPLICATE_RESOURCE: &str = "Each resource must appear at most once.";

fn duplicate_resource() -> (i16, StrBytes) {
    (
        ResponseError::InvalidRequest.code(),
        StrBytes::from_static_str(DUPLICATE_RESOURCE),
    )
}

pub async fn alter_configs(broker: &Arc<Broker>, request: AlterConfigsRequest) -> ResponseKind {
    let mut responses = Vec::with_capacity(request.resources.len());
    let names: Vec<(i8, StrBytes)> = request
        .resources
        .iter()
        .map(|r| (r.resource_type, r.resource_name.clone()))
        .collect();
    let duplicated = duplicated_resources(names.iter().map(|(kind, name)| (*kind, name)));
    for resource in request.resources {
        let response = alter_configs_response::AlterConfigsResourceResponse::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name.clone());
        if resource.resource_type == RESOURCE_BROKER {
            let outcome =
                super::broker_configs::alter(broker, &resource, request.validate_only).await;
            responses.push(match outcome {
                Ok(()) => response,
                Err((code, message)) => response
                    .with_error_code(code)
                    .with_error_message(Some(message)),
            });
            continue;
        }
        let configs = resource
            .configs
            .iter()
            .map(|c| (&c.name, OP_SET, c.value.is_some()));
        let key = (resource.resource_type, resource.resource_name.as_str());
        let target = if duplicated.contains(&key) {
            Err(duplicate_resource())
        } else {
            alter_target(resource.resource_type, &resource.resource_name)
                .and_then(|topic| malformed_resource(configs).map_or(Ok(topic), Err))
        };
        let topic = match target {
            Ok(topic) => topic,
            Err((code, message)) => {
                responses.push(
                    response
                        .with_error_code(code)
                        .with_error_message(Some(message)),
                );
                continue;
            }
        };
        // AlterConfigs replaces the whole set of overrides.
        let configs: BTreeMap<String, String> = resource
            .configs
            .iter()
            .filter_map(|c| Some((c.name.to_string(), c.value.as_ref()?.to_string())))
            .collect();
        responses.push(
            match broker
                .set_topic_configs(&topic, |_| Ok(configs.clone()), request.validate_only)
                .await
            {
                Ok(()) => response,
                Err(e) => {
                    let (code, message) = error_parts(broker, "AlterConfigs", &e);
                    response.with_error_code(code).with_error_message(message)
                }
            },
        );
    }
    ResponseKind::AlterConfigs(AlterConfigsResponse::default().with_responses(responses))
}

/// Items an APPEND may give or leave in a list-valued config. Bounds the edit's work and
/// the value kept in the metadata store; a throttled-replicas list of every replica of a
/// 30,000-partition topic at replication factor 3 still fits.
const MAX_LIST_ITEMS: usize = 100_000;

/// The start of a value too long to quote whole in an error message.
fn excerpt(value: &str) -> String {
    match value.char_indices().nth(64) {
        Some((end, _)) => format!("{}...", &value[..end]),
        None => value.to_string(),
    }
}

const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

/// A topic's overrides after one IncrementalAlterConfigs resource's operations, as Kafka
/// applies them: SET and DELETE on any config; APPEND and SUBTRACT on list-valued ones,
/// starting from the override or, without one, the default.
fn edit_topic_configs(
    current: &BTreeMap<String, String>,
    operations: &[incremental_alter_configs_request::AlterableConfig],
    broker_config: &crate::config::Config,
) -> Result<BTreeMap<String, String>, AdminError> {
    let invalid = |name: &str, value: &str, reason: String| {
        AdminError::InvalidConfig(TopicConfigError::Invalid {
            name: name.to_string(),
            value: value.to_string(),
            reason,
        })
    };
    let mut configs = current.clone();
    for op in operations {
        let name = op.name.to_string();
        let value = op.value.as_ref().map(|v| v.to_string());
        match op.config_operation {
            OP_SET => {
                configs.insert(name, value.unwrap_or_default());
            }
            OP_DELETE => {
                configs.remove(&name);
            }
            operation @ (OP_APPEND | OP_SUBTRACT) => {
                let verb = if operation == OP_APPEND {
                    "append"
                } else {
                    "subtract"
                };
                let value = value.unwrap_or_default();
                let Some(def) = topic_config::def(&name) else {
                    // Unknown or removed: refused as a SET of it would be.
                    topic_config::check(&name, &value)?;
                    return Err(invalid(&name, &value, "not a topic config".into()));
                };
                if !def.is_list() {
                    return Err(invalid(
                        &name,
                        &value,
                        format!("{verb} is allowed only for list-valued configs"),
                    ));
                }
                let old = configs
                    .get(&name)
                    .cloned()
                    .unwrap_or_else(|| (def.default)(broker_config));
                let mut items: Vec<&str> = topic_config::list_items(&old);
                let given = topic_config::list_items(&value);
                let too_long = |count: usize| {
                    invalid(
                        &name,
                        &excerpt(&value),
                        format!(
                            "a list-valued config holds at most {MAX_LIST_ITEMS} items, not {count}"
                        ),
                    )
                };
                if given.len() > MAX_LIST_ITEMS {
                    return Err(too_long(given.len()));
                }
                if operation == OP_APPEND {
                    let mut present: HashSet<&str> = items.iter().copied().collect();
                    for item in given {
                        if present.insert(item) {
                            items.push(item);
                        }
                    }
                } else {
                    let given: HashSet<&str> = given.into_iter().collect();
                    items.retain(|item| !given.contains(item));
                }
                if items.len() > MAX_LIST_ITEMS {
                    return Err(too_long(items.len()));
                }
                let joined = items.join(",");
                configs.insert(name, joined);
            }
            operation => {
                return Err(invalid(
                    &name,
                    value.as_deref().unwrap_or_default(),
                    format!(
                        "operation {operation} does not exist (0 SET, 1 DELETE, 2 APPEND, 3 SUBTRACT)"
                    ),
                ));
            }
        }
    }
    Ok(configs)
}

pub async fn incremental_alter_configs(
    broker: &Arc<Broker>,
    request: IncrementalAlterConfigsRequest,
) -> ResponseKind {
    let mut responses = Vec::with_capacity(request.resources.len());
    let names: Vec<(i8, StrBytes)> = request
        .resources
        .iter()
        .map(|r| (r.resource_type, r.resource_name.clone()))
        .collect();
    let duplicated = duplicated_resources(names.iter().map(|(kind, name)| (*kind, name)));
    for resource in request.resources {
        let response = incremental_alter_configs_response::AlterConfigsResourceResponse::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name.clone());
        if resource.resource_type == RESOURCE_BROKER {
            let outcome =
                super::broker_configs::incremental_alter(broker, &resource, request.validate_only)
                    .await;
            responses.push(match outcome {
                Ok(()) => response,
                Err((code, message)) => response
                    .with_error_code(code)
                    .with_error_message(Some(message)),
            });
            continue;
        }
        let configs = resource
            .configs
            .iter()
            .map(|c| (&c.name, c.config_operation, c.value.is_some()));
        let key = (resource.resource_type, resource.resource_name.as_str());
        let target = if duplicated.contains(&key) {
            Err(duplicate_resource())
        } else {
            alter_target(resource.resource_type, &resource.resource_name)
                .and_then(|topic| malformed_resource(configs).map_or(Ok(topic), Err))
        };
        let name = match target {
            Ok(name) => name,
            Err((code, message)) => {
                responses.push(
                    response
                        .with_error_code(code)
                        .with_error_message(Some(message)),
                );
                continue;
            }
        };
        let edit = |current: &BTreeMap<String, String>| {
            edit_topic_configs(current, &resource.configs, &broker.config)
        };
        responses.push(
            match broker
                .set_topic_configs(&name, edit, request.validate_only)
                .await
            {
                Ok(()) => response,
                Err(e) => {
                    let (code, message) = error_parts(broker, "IncrementalAlterConfigs", &e);
                    response.with_error_code(code).with_error_message(message)
                }
            },
        );
    }
    ResponseKind::IncrementalAlterConfigs(
        IncrementalAlterConfigsResponse::default().with_responses(responses),
    )
}
