//! DescribeAcls, CreateAcls and DeleteAcls: Kafka's ACL APIs over the authorizer's store.
//! DESCRIBE on the cluster lists ACLs, ALTER on the cluster changes them. Without the ACL
//! authorizer all three answer SECURITY_DISABLED, as Kafka does without an authorizer.

use std::collections::BTreeMap;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse, ResponseKind,
};
use kafka_protocol::protocol::StrBytes;

use super::{Authz, str_bytes};
use crate::broker::Broker;
use crate::security::acl::{
    AclBinding, AclBindingFilter, AclOperation, AclPermissionType, PatternType, ResourceType,
};

/// Bindings one CreateAcls request may create; the rest are refused, so one request
/// cannot hold the store for long. (DeleteAcls removes what its filters match, in etcd
/// transactions of 100.)
const MAX_CHANGES: usize = 1000;

fn disabled() -> (i16, Option<StrBytes>) {
    (
        ResponseError::SecurityDisabled.code(),
        Some(str_bytes(
            "No authorizer is configured (authorizer = none).",
        )),
    )
}

fn denied() -> (i16, Option<StrBytes>) {
    (
        ResponseError::ClusterAuthorizationFailed.code(),
        Some(str_bytes("Cluster authorization failed.")),
    )
}

/// A filter from its wire fields; `None` for an unknown code.
#[allow(clippy::too_many_arguments)]
fn filter(
    resource_type: i8,
    resource_name: Option<&StrBytes>,
    pattern_type: i8,
    principal: Option<&StrBytes>,
    host: Option<&StrBytes>,
    operation: i8,
    permission: i8,
) -> Result<AclBindingFilter, String> {
    let filter = AclBindingFilter {
        resource_type: ResourceType::from_code(resource_type)
            .ok_or_else(|| format!("unknown resource type {resource_type}"))?,
        resource_name: resource_name.map(|s| s.to_string()),
        pattern_type: PatternType::from_code(pattern_type)
            .ok_or_else(|| format!("unknown pattern type {pattern_type}"))?,
        principal: principal.map(|s| s.to_string()),
        host: host.map(|s| s.to_string()),
        operation: AclOperation::from_code(operation)
            .ok_or_else(|| format!("unknown operation {operation}"))?,
        permission: AclPermissionType::from_code(permission)
            .ok_or_else(|| format!("unknown permission type {permission}"))?,
    };
    filter.validate().map_err(|e| e.to_string())?;
    Ok(filter)
}

pub fn describe_acls(broker: &Broker, authz: &Authz, request: DescribeAclsRequest) -> ResponseKind {
    let respond = |(code, message): (i16, Option<StrBytes>)| {
        ResponseKind::DescribeAcls(
            DescribeAclsResponse::default()
                .with_error_code(code)
                .with_error_message(message),
        )
    };
    let authorizer = &broker.security.authorizer;
    if !authorizer.enabled() {
        return respond(disabled());
    }
    if !authz.allows_cluster(AclOperation::Describe) {
        return respond(denied());
    }
    let filter = match filter(
        request.resource_type_filter,
        request.resource_name_filter.as_ref(),
        request.pattern_type_filter,
        request.principal_filter.as_ref(),
        request.host_filter.as_ref(),
        request.operation,
        request.permission_type,
    ) {
        Ok(filter) => filter,
        Err(message) => {
            return respond((
                ResponseError::InvalidRequest.code(),
                Some(str_bytes(message)),
            ));
        }
    };
    // Grouped by resource pattern, as Kafka answers.
    let mut by_resource: BTreeMap<(i8, String, i8), Vec<AclDescription>> = BTreeMap::new();
    for binding in authorizer.describe(&filter) {
        by_resource
            .entry((
                binding.resource_type.code(),
                binding.resource_name.clone(),
                binding.pattern_type.code(),
            ))
            .or_default()
            .push(
                AclDescription::default()
                    .with_principal(str_bytes(binding.principal))
                    .with_host(str_bytes(binding.host))
                    .with_operation(binding.operation.code())
                    .with_permission_type(binding.permission.code()),
            );
    }
    let resources = by_resource
        .into_iter()
        .map(|((resource_type, name, pattern_type), acls)| {
            DescribeAclsResource::default()
                .with_resource_type(resource_type)
                .with_resource_name(str_bytes(name))
                .with_pattern_type(pattern_type)
                .with_acls(acls)
        })
        .collect();
    ResponseKind::DescribeAcls(DescribeAclsResponse::default().with_resources(resources))
}

pub async fn create_acls(
    broker: &Broker,
    authz: &Authz<'_>,
    request: CreateAclsRequest,
) -> ResponseKind {
    let count = request.creations.len();
    let all = |(code, message): (i16, Option<StrBytes>)| {
        ResponseKind::CreateAcls(
            CreateAclsResponse::default().with_results(
                (0..count)
                    .map(|_| {
                        AclCreationResult::default()
                            .with_error_code(code)
                            .with_error_message(message.clone())
                    })
                    .collect(),
            ),
        )
    };
    let authorizer = &broker.security.authorizer;
    if !authorizer.enabled() {
        return all(disabled());
    }
    if !authz.allows_cluster(AclOperation::Alter) {
        return all(denied());
    }
    let mut results: Vec<Result<AclBinding, String>> = Vec::with_capacity(count);
    for (index, c) in request.creations.into_iter().enumerate() {
        let binding = (|| {
            if index >= MAX_CHANGES {
                return Err(format!("at most {MAX_CHANGES} ACLs per request"));
            }
            let binding = AclBinding {
                resource_type: ResourceType::from_code(c.resource_type)
                    .ok_or("unknown resource type")?,
                resource_name: c.resource_name.to_string(),
                pattern_type: PatternType::from_code(c.resource_pattern_type)
                    .ok_or("unknown pattern type")?,
                principal: c.principal.to_string(),
                host: c.host.to_string(),
                operation: AclOperation::from_code(c.operation).ok_or("unknown operation")?,
                permission: AclPermissionType::from_code(c.permission_type)
                    .ok_or("unknown permission type")?,
            };
            binding.validate_for_create().map_err(|e| e.to_string())?;
            Ok(binding)
        })();
        results.push(binding.map_err(|e: String| e));
    }
    let valid: Vec<AclBinding> = results.iter().filter_map(|r| r.clone().ok()).collect();
    let stored = if valid.is_empty() {
        Ok(())
    } else {
        authorizer.create(&valid).await
    };
    let results = results
        .into_iter()
        .map(|result| match (result, &stored) {
            (Err(message), _) => AclCreationResult::default()
                .with_error_code(ResponseError::InvalidRequest.code())
                .with_error_message(Some(str_bytes(message))),
            (Ok(_), Ok(())) => AclCreationResult::default(),
            (Ok(_), Err(e)) => AclCreationResult::default()
                .with_error_code(ResponseError::UnknownServerError.code())
                .with_error_message(Some(str_bytes(format!("could not store the ACL: {e}")))),
        })
        .collect();
    ResponseKind::CreateAcls(CreateAclsResponse::default().with_results(results))
}

pub async fn delete_acls(
    broker: &Broker,
    authz: &Authz<'_>,
    request: DeleteAclsRequest,
) -> ResponseKind {
    let count = request.filters.len();
    let all = |(code, message): (i16, Option<StrBytes>)| {
        ResponseKind::DeleteAcls(
            DeleteAclsResponse::default().with_filter_results(
                (0..count)
                    .map(|_| {
                        DeleteAclsFilterResult::default()
                            .with_error_code(code)
                            .with_error_message(message.clone())
                    })
                    .collect(),
            ),
        )
    };
    let authorizer = &broker.security.authorizer;
    if !authorizer.enabled() {
        return all(disabled());
    }
    if !authz.allows_cluster(AclOperation::Alter) {
        return all(denied());
    }
    let parsed: Vec<Result<AclBindingFilter, String>> = request
        .filters
        .iter()
        .map(|f| {
            filter(
                f.resource_type_filter,
                f.resource_name_filter.as_ref(),
                f.pattern_type_filter,
                f.principal_filter.as_ref(),
                f.host_filter.as_ref(),
                f.operation,
                f.permission_type,
            )
        })
        .collect();
    let valid: Vec<AclBindingFilter> = parsed.iter().filter_map(|f| f.clone().ok()).collect();
    let deleted = authorizer.delete(&valid).await;
    let mut matched = match &deleted {
        Ok(matched) => matched.clone().into_iter(),
        Err(_) => Vec::new().into_iter(),
    };
    let results = parsed
        .into_iter()
        .map(|f| match (f, &deleted) {
            (Err(message), _) => DeleteAclsFilterResult::default()
                .with_error_code(ResponseError::InvalidRequest.code())
                .with_error_message(Some(str_bytes(message))),
            (Ok(_), Err(e)) => DeleteAclsFilterResult::default()
                .with_error_code(ResponseError::UnknownServerError.code())
                .with_error_message(Some(str_bytes(format!("could not delete ACLs: {e}")))),
            (Ok(_), Ok(_)) => DeleteAclsFilterResult::default().with_matching_acls(
                matched
                    .next()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|b| {
                        DeleteAclsMatchingAcl::default()
                            .with_resource_type(b.resource_type.code())
                            .with_resource_name(str_bytes(b.resource_name))
                            .with_pattern_type(b.pattern_type.code())
                            .with_principal(str_bytes(b.principal))
                            .with_host(str_bytes(b.host))
                            .with_operation(b.operation.code())
                            .with_permission_type(b.permission.code())
                    })
                    .collect(),
            ),
        })
        .collect();
    ResponseKind::DeleteAcls(DeleteAclsResponse::default().with_filter_results(results))
}
