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
    /// Held from a reload's read to its swap (see credentials.rs).
    reloading: tokio::sync::Mutex<()>,
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
            reloading: tokio::sync::Mutex::new(()),
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
        let _reloading = self.reloading.lock().await;
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

    /// Creates the bindings of `acl_bootstrap_file` that are missing; returns how many.
    pub async fn bootstrap(&self, path: &str) -> anyhow::Result<usize> {
        use anyhow::Context;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("setting `acl_bootstrap_file`: read {path}"))?;
        let wanted = parse_bootstrap(&text)?;
        let snapshot = self.snapshot();
        let missing: Vec<AclBinding> = wanted
            .into_iter()
            .filter(|b| !snapshot.acls().bindings().contains(b))
            .collect();
        if !missing.is_empty() {
            self.create(&missing)
                .await
                .context("store the bootstrap ACLs")?;
        }
        Ok(missing.len())
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

/// `acl_bootstrap_file`'s lines: `PRINCIPAL,ALLOW|DENY,OPERATION,RESOURCE_TYPE,
/// PATTERN_TYPE,NAME[,HOST]`. The principal is everything before `,ALLOW,` or `,DENY,` (a
/// certificate DN holds commas). Blank lines and `#` comments are skipped.
fn parse_bootstrap(text: &str) -> anyhow::Result<Vec<AclBinding>> {
    use super::acl::{AclPermissionType, PatternType, WILDCARD_HOST};
    let mut bindings = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let error =
            |why: &str| anyhow::anyhow!("setting `acl_bootstrap_file`: line {}: {why}", index + 1);
        let upper = line.to_ascii_uppercase();
        let split = [",ALLOW,", ",DENY,"]
            .iter()
            .filter_map(|p| upper.find(p))
            .min()
            .ok_or_else(|| error("no ,ALLOW, or ,DENY, after the principal"))?;
        let principal = line[..split].trim();
        let fields: Vec<&str> = line[split + 1..].split(',').map(str::trim).collect();
        if !(5..=6).contains(&fields.len()) {
            return Err(error(
                "expected PRINCIPAL,ALLOW|DENY,OPERATION,RESOURCE_TYPE,PATTERN_TYPE,NAME[,HOST]",
            ));
        }
        let parse = |what: &str, value: &str| error(&format!("{what} `{value}` is not valid"));
        let binding = AclBinding {
            permission: fields[0]
                .parse::<AclPermissionType>()
                .map_err(|_| parse("permission", fields[0]))?,
            operation: fields[1]
                .parse::<AclOperation>()
                .map_err(|_| parse("operation", fields[1]))?,
            resource_type: fields[2]
                .parse::<ResourceType>()
                .map_err(|_| parse("resource type", fields[2]))?,
            pattern_type: fields[3]
                .parse::<PatternType>()
                .map_err(|_| parse("pattern type", fields[3]))?,
            resource_name: fields[4].to_string(),
            host: fields.get(5).copied().unwrap_or(WILDCARD_HOST).to_string(),
            principal: principal.to_string(),
        };
        binding
            .validate_for_create()
            .map_err(|e| error(&e.to_string()))?;
        bindings.push(binding);
    }
    Ok(bindings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_lines_parse_with_dn_principals_and_optional_hosts() {
        let bindings = parse_bootstrap(
            "# producers\nUser:orders-app,ALLOW,WRITE,TOPIC,PREFIXED,orders-\n\
             User:CN=reader,O=Acme,allow,read,group,literal,readers,10.0.0.1\n",
        )
        .expect("parses");
        assert_eq!(bindings.len(), 2);
        assert_eq!(bindings[0].principal, "User:orders-app");
        assert_eq!(bindings[0].operation, AclOperation::Write);
        assert_eq!(bindings[0].host, "*");
        assert_eq!(bindings[1].principal, "User:CN=reader,O=Acme");
        assert_eq!(bindings[1].resource_type, ResourceType::Group);
        assert_eq!(bindings[1].host, "10.0.0.1");
        for bad in [
            "User:a,ALLOW,WRITE,TOPIC",
            "User:a,MAYBE,WRITE,TOPIC,LITERAL,t",
            "User:a,ALLOW,FLY,TOPIC,LITERAL,t",
            "User:a,ALLOW,WRITE,TOPIC,ANY,t",
        ] {
            let error = parse_bootstrap(bad).expect_err(bad).to_string();
            assert!(error.contains("line 1"), "{error}");
        }
    }
}
