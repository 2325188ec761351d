//! DescribeClientQuotas and AlterClientQuotas (KIP-546) over security/quotas.rs.
//! DESCRIBE_CONFIGS on the cluster describes, ALTER_CONFIGS on the cluster alters. Entity
//! types are `user` and `client-id` (a null name is the default entity); keys are
//! producer_byte_rate, consumer_byte_rate and request_percentage. Kafka's `ip` entity
//! (connection_creation_rate) is refused with INVALID_REQUEST.

use std::collections::BTreeMap;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    AlterClientQuotasRequest, AlterClientQuotasResponse, DescribeClientQuotasRequest,
    DescribeClientQuotasResponse, ResponseKind, alter_client_quotas_response,
    describe_client_quotas_response,
};

use super::{Authz, str_bytes};
use crate::broker::Broker;
use crate::security::acl::AclOperation;
use crate::security::quotas::{Entity, QuotaKind};

const MATCH_EXACT: i8 = 0;
const MATCH_DEFAULT: i8 = 1;
const MATCH_ANY: i8 = 2;

/// An entity from (type, name) pairs; an error names what is wrong.
fn entity<'a>(parts: impl Iterator<Item = (&'a str, Option<&'a str>)>) -> Result<Entity, String> {
    let mut entity = Entity {
        user: None,
        client_id: None,
    };
    for (kind, name) in parts {
        let slot = match kind {
            "user" => &mut entity.user,
            "client-id" => &mut entity.client_id,
            other => return Err(format!("unsupported quota entity type `{other}`")),
        };
        if slot.is_some() {
            return Err(format!("entity type `{kind}` given twice"));
        }
        *slot = Some(Entity::name_or_default(name));
    }
    if entity.user.is_none() && entity.client_id.is_none() {
        return Err("the entity is empty".into());
    }
    Ok(entity)
}

fn entity_data(entity: &Entity) -> Vec<describe_client_quotas_response::EntityData> {
    let part = |kind: &str, name: &str| {
        describe_client_quotas_response::EntityData::default()
            .with_entity_type(str_bytes(kind))
            .with_entity_name((!Entity::is_default(name)).then(|| str_bytes(name)))
    };
    let mut parts = Vec::new();
    if let Some(user) = &entity.user {
        parts.push(part("user", user));
    }
    if let Some(client) = &entity.client_id {
        parts.push(part("client-id", client));
    }
    parts
}

pub fn describe(
    broker: &Broker,
    authz: &Authz,
    request: DescribeClientQuotasRequest,
) -> ResponseKind {
    let error = |code: ResponseError, message: Option<String>| {
        ResponseKind::DescribeClientQuotas(
            DescribeClientQuotasResponse::default()
                .with_error_code(code.code())
                .with_error_message(message.map(str_bytes)),
        )
    };
    if !authz.allows_cluster(AclOperation::DescribeConfigs) {
        return error(ResponseError::ClusterAuthorizationFailed, None);
    }
    // Each component filters one entity type.
    let mut filters: Vec<(String, i8, Option<String>)> = Vec::new();
    for c in &request.components {
        let kind = c.entity_type.to_string();
        if kind != "user" && kind != "client-id" {
            return error(
                ResponseError::InvalidRequest,
                Some(format!("unsupported quota entity type `{kind}`")),
            );
        }
        if !matches!(c.match_type, MATCH_EXACT | MATCH_DEFAULT | MATCH_ANY) {
            return error(
                ResponseError::InvalidRequest,
                Some(format!("unknown match type {}", c.match_type)),
            );
        }
        filters.push((kind, c.match_type, c._match.as_ref().map(|m| m.to_string())));
    }
    let matches = |entity: &Entity| {
        let value = |kind: &str| match kind {
            "user" => entity.user.as_deref(),
            _ => entity.client_id.as_deref(),
        };
        let components_match =
            filters.iter().all(
                |(kind, match_type, name)| match (value(kind), *match_type) {
                    (None, _) => false,
                    (Some(v), MATCH_EXACT) => Some(v) == name.as_deref() && !Entity::is_default(v),
                    (Some(v), MATCH_DEFAULT) => Entity::is_default(v),
                    (Some(_), _) => true,
                },
            );
        // strict: the entity has no other types than the filter's.
        let no_others = !request.strict
            || [
                ("user", entity.user.is_some()),
                ("client-id", entity.client_id.is_some()),
            ]
            .iter()
            .all(|(kind, present)| !present || filters.iter().any(|(k, _, _)| k == kind));
        components_match && no_others
    };
    let entries = broker
        .security
        .quotas
        .all()
        .into_iter()
        .filter(|(entity, _)| matches(entity))
        .map(|(entity, values)| {
            describe_client_quotas_response::EntryData::default()
                .with_entity(entity_data(&entity))
                .with_values(
                    values
                        .into_iter()
                        .map(|(key, value)| {
                            describe_client_quotas_response::ValueData::default()
                                .with_key(str_bytes(key))
                                .with_value(value)
                        })
                        .collect(),
                )
        })
        .collect();
    ResponseKind::DescribeClientQuotas(
        DescribeClientQuotasResponse::default().with_entries(Some(entries)),
    )
}

pub async fn alter(
    broker: &Broker,
    authz: &Authz<'_>,
    request: AlterClientQuotasRequest,
) -> ResponseKind {
    let allowed = authz.allows_cluster(AclOperation::AlterConfigs);
    let current: BTreeMap<Entity, BTreeMap<String, f64>> =
        broker.security.quotas.all().into_iter().collect();
    let mut changes: Vec<(Entity, BTreeMap<String, f64>)> = Vec::new();
    let mut results = Vec::with_capacity(request.entries.len());
    for entry in &request.entries {
        let echo: Vec<alter_client_quotas_response::EntityData> = entry
            .entity
            .iter()
            .map(|e| {
                alter_client_quotas_response::EntityData::default()
                    .with_entity_type(e.entity_type.clone())
                    .with_entity_name(e.entity_name.clone())
            })
            .collect();
        let outcome = (|| {
            if !allowed {
                return Err((ResponseError::ClusterAuthorizationFailed, String::new()));
            }
            let entity = entity(
                entry
                    .entity
                    .iter()
                    .map(|e| (e.entity_type.as_str(), e.entity_name.as_deref())),
            )
            .map_err(|m| (ResponseError::InvalidRequest, m))?;
            let mut values = changes
                .iter()
                .find(|(e, _)| *e == entity)
                .map(|(_, v)| v.clone())
                .or_else(|| current.get(&entity).cloned())
                .unwrap_or_default();
            for op in &entry.ops {
                let key = op.key.to_string();
                let kind = QuotaKind::from_key(&key).ok_or_else(|| {
                    (
                        ResponseError::InvalidRequest,
                        format!("unsupported quota `{key}`"),
                    )
                })?;
                if op.remove {
                    values.remove(&key);
                } else {
                    let min = match kind {
                        QuotaKind::Request => crate::security::quotas::MIN_REQUEST_PERCENTAGE,
                        _ => crate::security::quotas::MIN_BYTE_RATE,
                    };
                    let valid = op.value.is_finite()
                        && op.value >= min
                        && (kind != QuotaKind::Request || op.value <= 10_000.0);
                    if !valid {
                        return Err((
                            ResponseError::InvalidRequest,
                            format!("`{key}` must be a number of at least {min}"),
                        ));
                    }
                    values.insert(key, op.value);
                }
            }
            Ok((entity, values))
        })();
        match outcome {
            Ok((entity, values)) => {
                if !request.validate_only {
                    changes.retain(|(e, _)| *e != entity);
                    changes.push((entity, values));
                }
                results.push(alter_client_quotas_response::EntryData::default().with_entity(echo));
            }
            Err((code, message)) => results.push(
                alter_client_quotas_response::EntryData::default()
                    .with_entity(echo)
                    .with_error_code(code.code())
                    .with_error_message((!message.is_empty()).then(|| str_bytes(message))),
            ),
        }
    }
    if !changes.is_empty()
        && let Err(e) = broker.security.quotas.change(&changes).await
    {
        for result in results.iter_mut().filter(|r| r.error_code == 0) {
            result.error_code = ResponseError::UnknownServerError.code();
            result.error_message = Some(str_bytes(format!("could not store the quotas: {e}")));
        }
    }
    ResponseKind::AlterClientQuotas(AlterClientQuotasResponse::default().with_entries(results))
}
