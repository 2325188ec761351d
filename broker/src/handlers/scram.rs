//! DescribeUserScramCredentials and AlterUserScramCredentials (KIP-554): SCRAM users in
//! the metadata store. Descriptions carry the mechanism and iterations, never a salt or
//! a key. DESCRIBE on the cluster describes, ALTER on the cluster alters.

use std::collections::HashSet;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse, ResponseKind,
};

use super::{Authz, str_bytes};
use crate::broker::Broker;
use crate::security::acl::AclOperation;
use crate::security::credentials::CredentialChange;
use crate::security::scram::{ScramCredential, ScramMechanism};

/// Users one AlterUserScramCredentials request may change.
const MAX_CHANGES: usize = 1000;

pub fn describe(
    broker: &Broker,
    authz: &Authz,
    request: DescribeUserScramCredentialsRequest,
) -> ResponseKind {
    if !authz.allows_cluster(AclOperation::Describe) {
        return ResponseKind::DescribeUserScramCredentials(
            DescribeUserScramCredentialsResponse::default()
                .with_error_code(ResponseError::ClusterAuthorizationFailed.code()),
        );
    }
    let known = broker.security.credentials.describe();
    let info = |credentials: &[(ScramMechanism, u32)]| {
        credentials
            .iter()
            .map(|(m, i)| {
                CredentialInfo::default()
                    .with_mechanism(m.kafka_type())
                    .with_iterations(*i as i32)
            })
            .collect::<Vec<_>>()
    };
    let results = match request.users {
        // Null or empty: every user.
        None => known
            .iter()
            .map(|(user, credentials)| {
                DescribeUserScramCredentialsResult::default()
                    .with_user(str_bytes(user.clone()))
                    .with_credential_infos(info(credentials))
            })
            .collect(),
        Some(users) if users.is_empty() => known
            .iter()
            .map(|(user, credentials)| {
                DescribeUserScramCredentialsResult::default()
                    .with_user(str_bytes(user.clone()))
                    .with_credential_infos(info(credentials))
            })
            .collect(),
        Some(users) => {
            let mut seen = HashSet::new();
            users
                .into_iter()
                .map(|u| {
                    let name = u.name.to_string();
                    let result =
                        DescribeUserScramCredentialsResult::default().with_user(u.name.clone());
                    if !seen.insert(name.clone()) {
                        return result
                            .with_error_code(ResponseError::DuplicateResource.code())
                            .with_error_message(Some(str_bytes("the user is named twice")));
                    }
                    match known.iter().find(|(user, _)| *user == name) {
                        Some((_, credentials)) => result.with_credential_infos(info(credentials)),
                        None => result
                            .with_error_code(ResponseError::ResourceNotFound.code())
                            .with_error_message(Some(str_bytes(format!(
                                "attempt to describe a user credential that does not exist: {name}"
                            )))),
                    }
                })
                .collect()
        }
    };
    ResponseKind::DescribeUserScramCredentials(
        DescribeUserScramCredentialsResponse::default().with_results(results),
    )
}

pub async fn alter(
    broker: &Broker,
    authz: &Authz<'_>,
    request: AlterUserScramCredentialsRequest,
) -> ResponseKind {
    let mut users: Vec<String> = request
        .deletions
        .iter()
        .map(|d| d.name.to_string())
        .chain(request.upsertions.iter().map(|u| u.name.to_string()))
        .collect();
    users.sort();
    users.dedup();
    let result = |user: &str, error: Option<ResponseError>, message: Option<String>| {
        AlterUserScramCredentialsResult::default()
            .with_user(str_bytes(user))
            .with_error_code(error.map_or(0, |e| e.code()))
            .with_error_message(message.map(str_bytes))
    };
    if !authz.allows_cluster(AclOperation::Alter) {
        let results = users
            .iter()
            .map(|u| result(u, Some(ResponseError::ClusterAuthorizationFailed), None))
            .collect();
        return ResponseKind::AlterUserScramCredentials(
            AlterUserScramCredentialsResponse::default().with_results(results),
        );
    }
    // Kafka's rules: a user changed twice for one mechanism in one request is refused
    // whole; unknown mechanisms, bad iteration counts and empty names are refused.
    let mut errors: std::collections::BTreeMap<String, (ResponseError, String)> =
        Default::default();
    let mut seen = HashSet::new();
    let mut changes = Vec::new();
    for d in &request.deletions {
        let name = d.name.to_string();
        match ScramMechanism::from_kafka_type(d.mechanism) {
            _ if name.is_empty() => {
                errors.insert(
                    name,
                    (
                        ResponseError::UnacceptableCredential,
                        "empty user name".into(),
                    ),
                );
            }
            None => {
                errors.insert(
                    name,
                    (
                        ResponseError::UnsupportedSaslMechanism,
                        "unknown SCRAM mechanism".into(),
                    ),
                );
            }
            Some(m) if !seen.insert((name.clone(), m.kafka_type())) => {
                errors.insert(
                    name,
                    (
                        ResponseError::DuplicateResource,
                        "a user's mechanism is changed twice".into(),
                    ),
                );
            }
            Some(m) => {
                if broker.security.credentials.get(&name, m).is_none() {
                    errors.insert(
                        name.clone(),
                        (
                            ResponseError::ResourceNotFound,
                            "attempt to delete a user credential that does not exist".into(),
                        ),
                    );
                }
                changes.push(CredentialChange::Delete(name, m));
            }
        }
    }
    for u in &request.upsertions {
        let name = u.name.to_string();
        let iterations = u32::try_from(u.iterations).unwrap_or(0);
        match ScramMechanism::from_kafka_type(u.mechanism) {
            _ if name.is_empty() => {
                errors.insert(
                    name,
                    (
                        ResponseError::UnacceptableCredential,
                        "empty user name".into(),
                    ),
                );
            }
            None => {
                errors.insert(
                    name,
                    (
                        ResponseError::UnsupportedSaslMechanism,
                        "unknown SCRAM mechanism".into(),
                    ),
                );
            }
            Some(_)
                if !(ScramMechanism::MIN_ITERATIONS..=ScramMechanism::MAX_ITERATIONS)
                    .contains(&iterations) =>
            {
                errors.insert(
                    name,
                    (
                        ResponseError::UnacceptableCredential,
                        format!(
                            "iterations must be between {} and {}",
                            ScramMechanism::MIN_ITERATIONS,
                            ScramMechanism::MAX_ITERATIONS
                        ),
                    ),
                );
            }
            Some(_) if u.salt.is_empty() || u.salted_password.is_empty() => {
                errors.insert(
                    name,
                    (
                        ResponseError::UnacceptableCredential,
                        "salt and salted password must not be empty".into(),
                    ),
                );
            }
            Some(m) if !seen.insert((name.clone(), m.kafka_type())) => {
                errors.insert(
                    name,
                    (
                        ResponseError::DuplicateResource,
                        "a user's mechanism is changed twice".into(),
                    ),
                );
            }
            Some(m) => changes.push(CredentialChange::Upsert(
                name,
                ScramCredential::from_salted_password(m, &u.salted_password, &u.salt, iterations),
            )),
        }
    }
    if users.len() > MAX_CHANGES {
        for u in &users[MAX_CHANGES..] {
            errors.insert(
                u.clone(),
                (
                    ResponseError::PolicyViolation,
                    format!("at most {MAX_CHANGES} users per request"),
                ),
            );
        }
    }
    changes.retain(|c| !errors.contains_key(c.user()));
    let stored = if changes.is_empty() {
        Ok(())
    } else {
        broker.security.credentials.change(&changes).await
    };
    let results = users
        .iter()
        .map(|u| match (errors.get(u), &stored) {
            (Some((error, message)), _) => result(u, Some(*error), Some(message.clone())),
            (None, Ok(())) => result(u, None, None),
            (None, Err(e)) => result(
                u,
                Some(ResponseError::UnknownServerError),
                Some(format!("could not store the credential: {e}")),
            ),
        })
        .collect();
    ResponseKind::AlterUserScramCredentials(
        AlterUserScramCredentialsResponse::default().with_results(results),
    )
}
