//! The decision over a snapshot of every binding, indexed so that its cost does not grow
//! with the number of bindings, and a bounded cache of decisions tied to one snapshot.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};

use super::{
    AclBinding, AclBindingFilter, AclOperation, AclPermissionType, PatternType, ResourceType,
    WILDCARD_HOST, WILDCARD_PRINCIPAL, WILDCARD_RESOURCE,
};
use crate::security::Principal;

#[cfg(test)]
mod tests;

/// The outcome of a decision. Two values, not a bool, so a call site reads as what it
/// decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    Allowed,
    Denied,
}

impl Decision {
    pub fn is_allowed(self) -> bool {
        self == Decision::Allowed
    }
}

/// An immutable snapshot of every binding, indexed for decisions. Built whole from the
/// metadata store's bindings and replaced whole when one changes (ACL changes are rare;
/// decisions happen on every request).
///
/// Cost of [`Acls::authorize`]: per resource type, literal patterns and prefixes sit in
/// hash maps keyed by name, so a decision does two lookups for the literal name and the
/// `*` wildcard, plus one per distinct prefix length (among that type's prefixed
/// patterns) up to the name's length; then, in each pattern that applies, two lookups
/// for the principal and `User:*`, and a check of host and operation per binding found.
/// The total number of bindings, and other principals' bindings on the same resource,
/// cost nothing. Building is O(n log n) in the number of bindings.
#[derive(Debug, Clone, Default)]
pub struct Acls {
    /// Sorted and without duplicates: the DescribeAcls order.
    bindings: Vec<AclBinding>,
    by_type: HashMap<ResourceType, TypeIndex>,
}

#[derive(Debug, Clone, Default)]
struct TypeIndex {
    /// LITERAL patterns by name; the wildcard is the name `*`.
    literal: HashMap<String, PatternAcls>,
    /// PREFIXED patterns by prefix.
    prefixed: HashMap<String, PatternAcls>,
    /// The distinct byte lengths of `prefixed`'s keys, ascending: a name is looked up
    /// only at the lengths some prefix has.
    prefix_lengths: Vec<usize>,
}

/// The bindings of one pattern, by principal string (never empty).
#[derive(Debug, Clone, Default)]
struct PatternAcls {
    by_principal: HashMap<String, Vec<usize>>,
}

/// What the bindings say about one request, before any default.
#[derive(Debug, Default)]
struct Evaluation {
    allowed: bool,
    denied: bool,
    /// Some binding names the resource (whatever its principal, host or operation).
    resource_has_acls: bool,
}

impl Acls {
    /// Indexes the bindings. Bindings are expected to have passed
    /// [`AclBinding::validate_for_create`]; one that did not is kept for DescribeAcls and
    /// behaves as in Kafka: a pattern type other than LITERAL or PREFIXED applies to
    /// nothing, and a permission other than ALLOW denies.
    pub fn new(mut bindings: Vec<AclBinding>) -> Acls {
        bindings.sort();
        bindings.dedup();
        let mut by_type: HashMap<ResourceType, TypeIndex> = HashMap::new();
        for (id, binding) in bindings.iter().enumerate() {
            let index = by_type.entry(binding.resource_type).or_default();
            let patterns = match binding.pattern_type {
                PatternType::Literal => &mut index.literal,
                PatternType::Prefixed => &mut index.prefixed,
                PatternType::Any | PatternType::Match | PatternType::Unknown => continue,
            };
            patterns
                .entry(binding.resource_name.clone())
                .or_default()
                .by_principal
                .entry(binding.principal.clone())
                .or_default()
                .push(id);
        }
        for index in by_type.values_mut() {
            let mut lengths: Vec<usize> = index.prefixed.keys().map(String::len).collect();
            lengths.sort_unstable();
            lengths.dedup();
            index.prefix_lengths = lengths;
        }
        Acls { bindings, by_type }
    }

    /// Every binding, sorted.
    pub fn bindings(&self) -> &[AclBinding] {
        &self.bindings
    }

    pub fn len(&self) -> usize {
        self.bindings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bindings.is_empty()
    }

    /// The bindings a DescribeAcls or DeleteAcls filter selects, in order.
    pub fn matching<'a>(
        &'a self,
        filter: &'a AclBindingFilter,
    ) -> impl Iterator<Item = &'a AclBinding> + 'a {
        self.bindings.iter().filter(|b| filter.matches(b))
    }

    /// Kafka's decision from the bindings alone: an applicable DENY denies, else an
    /// applicable ALLOW allows, else denied (see the module doc of `acl`). Super users
    /// and `allow.everyone.if.no.acl.found` are the caller's ([`Acls::has_acls_for`],
    /// or [`Acls::authorize_with_default`] for both in one pass).
    ///
    /// `host` is the client address as [`host_address`] prints it. Principals compare
    /// in their `Type:name` form.
    pub fn authorize(
        &self,
        principal: &Principal,
        host: &str,
        operation: AclOperation,
        resource_type: ResourceType,
        resource_name: &str,
    ) -> Decision {
        self.authorize_with_default(
            principal,
            host,
            operation,
            resource_type,
            resource_name,
            false,
        )
    }

    /// [`Acls::authorize`], except that a resource no binding names at all gets
    /// `allow_if_no_acls` (Kafka's `allow.everyone.if.no.acl.found`).
    pub fn authorize_with_default(
        &self,
        principal: &Principal,
        host: &str,
        operation: AclOperation,
        resource_type: ResourceType,
        resource_name: &str,
        allow_if_no_acls: bool,
    ) -> Decision {
        let principal = principal.to_string();
        let evaluation = self.evaluate(&principal, host, operation, resource_type, resource_name);
        if evaluation.denied {
            Decision::Denied
        } else if evaluation.allowed || (allow_if_no_acls && !evaluation.resource_has_acls) {
            Decision::Allowed
        } else {
            Decision::Denied
        }
    }

    /// Whether any binding (any principal, host, operation or permission) applies to the
    /// resource: when none does, `allow.everyone.if.no.acl.found` allows everyone.
    pub fn has_acls_for(&self, resource_type: ResourceType, resource_name: &str) -> bool {
        self.by_type
            .get(&resource_type)
            .is_some_and(|index| index.applicable(resource_name).next().is_some())
    }

    fn evaluate(
        &self,
        principal: &str,
        host: &str,
        operation: AclOperation,
        resource_type: ResourceType,
        resource_name: &str,
    ) -> Evaluation {
        let mut evaluation = Evaluation::default();
        let Some(index) = self.by_type.get(&resource_type) else {
            return evaluation;
        };
        let principals: &[&str] = if principal == WILDCARD_PRINCIPAL {
            &[WILDCARD_PRINCIPAL]
        } else {
            &[principal, WILDCARD_PRINCIPAL]
        };
        for pattern in index.applicable(resource_name) {
            evaluation.resource_has_acls = true;
            for principal in principals {
                let Some(ids) = pattern.by_principal.get(*principal) else {
                    continue;
                };
                for &id in ids {
                    match entry_decision(&self.bindings[id], host, operation) {
                        Some(Decision::Denied) => {
                            evaluation.denied = true;
                            return evaluation;
                        }
                        Some(Decision::Allowed) => evaluation.allowed = true,
                        None => {}
                    }
                }
            }
        }
        evaluation
    }
}

impl TypeIndex {
    /// The patterns that name the resource: its literal name, the literal wildcard, and
    /// every prefix of it that is a prefixed pattern.
    fn applicable<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a PatternAcls> + 'a {
        let exact = self.literal.get(name);
        let wildcard = (name != WILDCARD_RESOURCE)
            .then(|| self.literal.get(WILDCARD_RESOURCE))
            .flatten();
        let prefixes = self
            .prefix_lengths
            .iter()
            .take_while(move |len| **len <= name.len())
            .filter_map(move |len| name.get(..*len))
            .filter_map(move |prefix| self.prefixed.get(prefix));
        exact.into_iter().chain(wildcard).chain(prefixes)
    }
}

/// What one binding, whose pattern and principal already apply, says about the request
/// (Kafka's `StandardAuthorizerData.findResult`): `None` when its host or operation does
/// not apply. Implied operations count for ALLOW only.
pub(super) fn entry_decision(
    binding: &AclBinding,
    host: &str,
    operation: AclOperation,
) -> Option<Decision> {
    if binding.host != WILDCARD_HOST && binding.host != host {
        return None;
    }
    let allow = binding.permission == AclPermissionType::Allow;
    if binding.operation != AclOperation::All {
        let applies = if allow {
            match operation {
                AclOperation::Describe => matches!(
                    binding.operation,
                    AclOperation::Describe
                        | AclOperation::Read
                        | AclOperation::Write
                        | AclOperation::Delete
                        | AclOperation::Alter
                ),
                AclOperation::DescribeConfigs => matches!(
                    binding.operation,
                    AclOperation::DescribeConfigs | AclOperation::AlterConfigs
                ),
                _ => binding.operation == operation,
            }
        } else {
            binding.operation == operation
        };
        if !applies {
            return None;
        }
    }
    Some(if allow {
        Decision::Allowed
    } else {
        Decision::Denied
    })
}

/// The client address as Kafka's ACLs name hosts: Java's `InetAddress.getHostAddress()`.
/// IPv4 is dotted; an IPv4-mapped IPv6 address (what a dual-stack listener reports for
/// an IPv4 client) is its IPv4 address, as Java converts it; other IPv6 addresses are
/// eight lower-case hex groups without zero compression (`0:0:0:0:0:0:0:1`, not `::1`),
/// which is how operators write IPv6 hosts in Kafka ACLs.
pub fn host_address(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => v6
                .segments()
                .iter()
                .map(|group| format!("{group:x}"))
                .collect::<Vec<_>>()
                .join(":"),
        },
    }
}

/// Decisions of one [`Acls`] snapshot, memoised. The cache owns its snapshot, so a cached
/// answer can never outlive the bindings it came from: when ACLs change, the caller
/// builds a new `DecisionCache` around the new `Acls` and swaps an `Arc` to it; the old
/// cache is dropped with its snapshot.
///
/// Bounded: when it holds `capacity` decisions it is cleared before the next insert
/// (cheap, and a working set that fits stays warm; one that does not costs a clear every
/// `capacity` misses). Each lookup builds an owned key (three strings); that is the price
/// of the hit, against the index walk it saves.
#[derive(Debug)]
pub struct DecisionCache {
    acls: Acls,
    allow_if_no_acls: bool,
    capacity: usize,
    /// std Mutex: held for one map lookup or insert, never across an await or a decision.
    decisions: Mutex<HashMap<DecisionKey, Decision>>,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct DecisionKey {
    principal: Principal,
    host: String,
    operation: AclOperation,
    resource_type: ResourceType,
    resource_name: String,
}

/// Longest resource name a decision is cached for (Kafka's topic names stop at 249).
const MAX_CACHED_NAME: usize = 255;

impl DecisionCache {
    /// A cache of up to `capacity` decisions (0 caches nothing) of
    /// [`Acls::authorize_with_default`] with `allow_everyone_if_no_acl_found`.
    pub fn new(acls: Acls, allow_everyone_if_no_acl_found: bool, capacity: usize) -> DecisionCache {
        DecisionCache {
            acls,
            allow_if_no_acls: allow_everyone_if_no_acl_found,
            capacity,
            decisions: Mutex::new(HashMap::new()),
        }
    }

    pub fn acls(&self) -> &Acls {
        &self.acls
    }

    /// [`Acls::authorize_with_default`], answered from the cache when it can be.
    pub fn authorize(
        &self,
        principal: &Principal,
        host: &str,
        operation: AclOperation,
        resource_type: ResourceType,
        resource_name: &str,
    ) -> Decision {
        // Names come straight from requests (up to 32 KiB each): only names a real topic
        // or group could have are cached, so the cache stays under capacity x ~300 bytes.
        if self.capacity == 0 || resource_name.len() > MAX_CACHED_NAME {
            return self.decide(principal, host, operation, resource_type, resource_name);
        }
        let key = DecisionKey {
            principal: principal.clone(),
            host: host.to_string(),
            operation,
            resource_type,
            resource_name: resource_name.to_string(),
        };
        if let Some(decision) = self.lock().get(&key) {
            return *decision;
        }
        let decision = self.decide(principal, host, operation, resource_type, resource_name);
        let mut decisions = self.lock();
        if decisions.len() >= self.capacity {
            decisions.clear();
        }
        decisions.insert(key, decision);
        decision
    }

    /// How many decisions the cache holds.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn decide(
        &self,
        principal: &Principal,
        host: &str,
        operation: AclOperation,
        resource_type: ResourceType,
        resource_name: &str,
    ) -> Decision {
        self.acls.authorize_with_default(
            principal,
            host,
            operation,
            resource_type,
            resource_name,
            self.allow_if_no_acls,
        )
    }

    /// The map is valid after any panic (every write is a single insert or clear), so a
    /// poisoned lock is used as is.
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<DecisionKey, Decision>> {
        self.decisions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
