//! The ACL authorizer (`authorizer = acl`): ACL bindings in the metadata store (kind
//! `acls`, key [`AclBinding::key`], value [`AclBinding::to_record`]), a decision cache
//! over one snapshot of them, and the rule for super users.
//!
//! Changes made through this broker replace the snapshot at once; changes made through
//! another broker arrive with the next metadata round that sees the store move (every
//! `metadata_refresh_interval_ms` at most). A new snapshot comes with an empty cache, so a
//! cached decision never outlives the ACLs it was made from.
//!
//! With `authorizer = none` every request is allowed and the ACL APIs answer
//! SECURITY_DISABLED, as Kafka does without an authorizer.

use std::sync::{Arc, RwLock};

use super::acl::{
    AclBinding, AclBindingFilter, AclOperation, Acls, DecisionCache, ResourceType, host_address,
};
use super::{Caller, Principal};
use crate::cluster::{MetadataStore, SecurityKind, StoreError};
use crate::config::Config;

/// Decisions cached per snapshot; the cache starts over when full.
const CACHE_ENTRIES: usize = 100_000;
/// etcd refuses transactions of more than 128 operations by default: larger changes are
/// written in parts of this many (each part all or nothing).
const CHANGES_PER_TRANSACTION: usize = 100;

pub struct Authorizer {
    enabled: bool,
    super_users: Vec<Principal>,
    allow_if_no_acl: bool,
    store: Arc<dyn MetadataStore>,
    /// A std lock: held to clone or swap the Arc.
    current: RwLock<Arc<DecisionCache>>,
}

impl Authorizer {
    pub fn new(config: &Config, store: Arc<dyn MetadataStore>) -> anyhow::Result<Authorizer> {
        use anyhow::Context;
        let super_users =
            super::acl::super_users(&config.super_users).context("setting `super_users`")?;
        let allow_if_no_acl = config.allow_everyone_if_no_acl_found;
        Ok(Authorizer {
            enabled: config.acl_authorizer(),
            super_users,
            allow_if_no_acl,
            store,
            current: RwLock::new(Arc::new(DecisionCache::new(
                Acls::new(Vec::new()),
                allow_if_no_acl,
                CACHE_ENTRIES,
            ))),
        })
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    fn snapshot(&self) -> Arc<DecisionCache> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether `caller` may do `operation` on the resource.
    pub fn allowed(
        &self,
        caller: &Caller,
        operation: AclOperation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        if !self.enabled || self.super_users.contains(&caller.principal) {
            return true;
        }
        self.snapshot()
            .authorize(
                &caller.principal,
                &host_address(caller.address),
                operation,
                resource_type,
                name,
            )
            .is_allowed()
    }

    /// Whether `caller` may do `operation` on some resource of the type: Kafka's rule for
    /// IDEMPOTENT_WRITE implied by WRITE on any topic (KIP-679), and for listing.
    pub fn allowed_on_any(
        &self,
        caller: &Caller,
        operation: AclOperation,
        resource_type: ResourceType,
    ) -> bool {
        if !self.enabled || self.super_users.contains(&caller.principal) {
            return true;
        }
        let principal = caller.principal.to_string();
        let host = host_address(caller.address);
        let snapshot = self.snapshot();
        let bindings = snapshot.acls().bindings();
        let applies = |b: &AclBinding| {
            b.resource_type == resource_type
                && (b.principal == principal || b.principal == super::acl::WILDCARD_PRINCIPAL)
                && (b.host == host || b.host == super::acl::WILDCARD_HOST)
        };
        let operation_matches =
            |b: &AclBinding| b.operation == operation || b.operation == AclOperation::All;
        // A deny on every resource of the type (the literal wildcard) denies all; any
        // other allow that is not itself denied lets the caller through somewhere.
        let denied_everywhere = bindings.iter().any(|b| {
            applies(b)
                && operation_matches(b)
                && b.permission == super::acl::AclPermissionType::Deny
                && b.pattern_type == super::acl::PatternType::Literal
                && b.resource_name == super::acl::WILDCARD_RESOURCE
        });
        !denied_everywhere
            && bindings.iter().any(|b| {
                applies(b)
                    && operation_matches(b)
                    && b.permission == super::acl::AclPermissionType::Allow
                    && snapshot
                        .authorize(
                            &caller.principal,
                            &host,
                            operation,
                            resource_type,
                            &b.resource_name,
                        )
                        .is_allowed()
            })
    }

    /// The bindings `filter` matches.
    pub fn describe(&self, filter: &AclBindingFilter) -> Vec<AclBinding> {
        let snapshot = self.snapshot();
        snapshot.acls().matching(filter).cloned().collect()
    }

    /// Re-reads the bindings from the store. A record that does not parse is skipped
    /// with a warning.
    pub async fn reload(&self) -> Result<(), StoreError> {
        if !self.enabled {
            return Ok(());
        }
        let records = self.store.list_security(SecurityKind::Acl).await?;
        let mut bindings = Vec::with_capacity(records.len());
        for (key, value) in records {
            match AclBinding::from_record(value.as_bytes()) {
                Ok(binding) => bindings.push(binding),
                Err(e) => tracing::warn!(%key, error = %e, "skipping an unreadable ACL record"),
            }
        }
        let unchanged = {
            let current = self.snapshot();
            current.acls().bindings().len() == bindings.len() && {
                let mut old: Vec<&AclBinding> = current.acls().bindings().iter().collect();
                let mut new: Vec<&AclBinding> = bindings.iter().collect();
                old.sort();
                new.sort();
                old == new
            }
        };
        if !unchanged {
            let next = Arc::new(DecisionCache::new(
                Acls::new(bindings),
                self.allow_if_no_acl,
                CACHE_ENTRIES,
            ));
            *self.current.write().unwrap_or_else(|p| p.into_inner()) = next;
        }
        Ok(())
    }

    /// Stores new bindings (already validated) and applies them here at once.
    pub async fn create(&self, bindings: &[AclBinding]) -> Result<(), StoreError> {
        let mut puts = Vec::with_capacity(bindings.len());
        for binding in bindings {
            let record = binding.to_record().map_err(|e| StoreError::Corrupt {
                key: binding.key(),
                message: e.to_string(),
            })?;
            puts.push((binding.key(), String::from_utf8_lossy(&record).into_owned()));
        }
        for part in puts.chunks(CHANGES_PER_TRANSACTION) {
            self.store
                .change_security(SecurityKind::Acl, part, &[])
                .await?;
        }
        self.reload().await
    }

    /// Removes the bindings each filter matches; returns them per filter.
    pub async fn delete(
        &self,
        filters: &[AclBindingFilter],
    ) -> Result<Vec<Vec<AclBinding>>, StoreError> {
        let snapshot = self.snapshot();
        let matched: Vec<Vec<AclBinding>> = filters
            .iter()
            .map(|f| snapshot.acls().matching(f).cloned().collect())
            .collect();
        let mut keys: Vec<String> = matched.iter().flatten().map(AclBinding::key).collect();
        keys.sort();
        keys.dedup();
        for part in keys.chunks(CHANGES_PER_TRANSACTION) {
            self.store
                .change_security(SecurityKind::Acl, &[], part)
                .await?;
        }
        self.reload().await?;
        Ok(matched)
    }
}
