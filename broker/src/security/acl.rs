//! Kafka's ACL model: what a binding says, which requests may create one, how
//! DescribeAcls/DeleteAcls filters select bindings, and the decision rule of Kafka's
//! `StandardAuthorizer` ([`Acls::authorize`]).
//!
//! A binding grants or denies one principal (or `User:*`, every principal) one operation
//! (or `ALL`) on the resources one pattern names, from one host (or `*`). A pattern is
//! `LITERAL` (exactly that name; the name `*` means every resource of the type) or
//! `PREFIXED` (every name that starts with it). `ANY`, `MATCH` and `UNKNOWN` exist only in
//! filters and on the wire, never in a stored binding ([`AclBinding::validate_for_create`]).
//!
//! The decision, for a principal at a host performing an operation on a resource:
//! 1. a binding applies when its pattern names the resource, its principal is the caller's
//!    or `User:*`, and its host is the caller's or `*`;
//! 2. an applicable DENY of the operation, or of `ALL`, denies;
//! 3. else an applicable ALLOW of the operation, of `ALL`, or of an operation that implies
//!    it (READ, WRITE, DELETE and ALTER imply DESCRIBE; ALTER_CONFIGS implies
//!    DESCRIBE_CONFIGS) allows; implication holds for ALLOW only, so a DENY of READ does
//!    not deny DESCRIBE;
//! 4. else the request is denied, except that `allow.everyone.if.no.acl.found` allows it
//!    when no binding at all (of any principal, host or operation) names the resource.
//!
//! Super users bypass all of this; the caller checks them first ([`super_users`]).
//!
//! # Stored format
//!
//! One binding is one metadata-store record under [`AclBinding::key`], a JSON object
//! ([`AclBinding::to_record`]), version 1:
//!
//! | field           | JSON   | value                                                   |
//! |-----------------|--------|---------------------------------------------------------|
//! | `version`       | number | `1`                                                     |
//! | `resource_type` | string | `TOPIC` `GROUP` `CLUSTER` `TRANSACTIONAL_ID` `DELEGATION_TOKEN` `USER` |
//! | `resource_name` | string | the literal name, `*`, or the prefix                    |
//! | `pattern_type`  | string | `LITERAL` or `PREFIXED`                                 |
//! | `principal`     | string | `Type:name`, e.g. `User:alice`, or `User:*`             |
//! | `host`          | string | an IP address as Kafka prints it ([`host_address`]), or `*` |
//! | `operation`     | string | `ALL` `READ` `WRITE` `CREATE` `DELETE` `ALTER` `DESCRIBE` `CLUSTER_ACTION` `DESCRIBE_CONFIGS` `ALTER_CONFIGS` `IDEMPOTENT_WRITE` `CREATE_TOKENS` `DESCRIBE_TOKENS` |
//! | `permission`    | string | `ALLOW` or `DENY`                                       |
//!
//! Readers ignore fields they do not know, so a later version may add fields and keep
//! version 1 readers working; a change of meaning bumps the version.

mod authorize;
#[cfg(test)]
mod tests;

pub use authorize::{Acls, Decision, DecisionCache, host_address};

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::Principal;

/// The principal of a binding that applies to every principal (Kafka's
/// `WILDCARD_PRINCIPAL`; the type is `User` whatever the caller's type is).
pub const WILDCARD_PRINCIPAL: &str = "User:*";
/// The host of a binding that applies from every host.
pub const WILDCARD_HOST: &str = "*";
/// The name of a literal binding that applies to every resource of its type.
pub const WILDCARD_RESOURCE: &str = "*";
/// The one name of the CLUSTER resource.
pub const CLUSTER_NAME: &str = "kafka-cluster";
/// The version [`AclBinding::to_record`] writes and [`AclBinding::from_record`] reads.
pub const RECORD_VERSION: u32 = 1;

/// Why a binding, a filter, a name or a stored record was refused.
#[derive(Debug, thiserror::Error)]
pub enum AclError {
    #[error(
        "an ACL cannot be stored for the resource type {0}; use TOPIC, GROUP, CLUSTER, TRANSACTIONAL_ID, DELEGATION_TOKEN or USER"
    )]
    InvalidResourceType(ResourceType),
    #[error("an ACL cannot be stored with the pattern type {0}; use LITERAL or PREFIXED")]
    InvalidPatternType(PatternType),
    #[error("an ACL cannot be stored for the operation {0}; name one operation or ALL")]
    InvalidOperation(AclOperation),
    #[error("an ACL cannot be stored with the permission type {0}; use ALLOW or DENY")]
    InvalidPermission(AclPermissionType),
    #[error("an ACL's resource name must not be empty")]
    EmptyResourceName,
    #[error("the only valid name for the CLUSTER resource is {CLUSTER_NAME}, not {0:?}")]
    InvalidClusterName(String),
    #[error("the principal {0:?} is not of the form Type:name (for example User:alice)")]
    InvalidPrincipal(String),
    #[error("the operation {operation} does not apply to a {resource_type} resource, which supports {}", supported_list(.resource_type))]
    UnsupportedOperation {
        resource_type: ResourceType,
        operation: AclOperation,
    },
    #[error("an ACL filter cannot have an UNKNOWN {0}")]
    UnknownInFilter(&'static str),
    #[error("{name:?} is not {kind}")]
    UnknownName { kind: &'static str, name: String },
    #[error("the ACL record is not a valid JSON binding: {0}")]
    Record(#[from] serde_json::Error),
    #[error("the ACL record has version {0}, and this broker reads version {RECORD_VERSION}")]
    UnsupportedRecordVersion(u32),
}

/// Defines one of Kafka's ACL enums: its wire code (`from_code`/`code`), the name Kafka
/// prints (`Display`, serde), and a forgiving parse (`FromStr`: case, `_` and `-` are
/// ignored, so `cluster_action`, `ClusterAction` and `CLUSTER-ACTION` are all
/// CLUSTER_ACTION, as kafka-acls accepts both spellings).
macro_rules! kafka_enum {
    (
        $(#[$meta:meta])*
        $name:ident, $kind:literal {
            $($(#[$vmeta:meta])* $variant:ident = $code:literal, $text:literal;)*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[repr(i8)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant = $code,)*
        }

        impl $name {
            /// Every value, in code order.
            pub const VALUES: &'static [$name] = &[$($name::$variant),*];

            /// The value of a wire code; `None` for a code Kafka does not define.
            pub fn from_code(code: i8) -> Option<$name> {
                match code {
                    $($code => Some($name::$variant),)*
                    _ => None,
                }
            }

            pub fn code(self) -> i8 {
                self as i8
            }

            /// The name as Kafka prints it.
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        impl FromStr for $name {
            type Err = AclError;

            fn from_str(text: &str) -> Result<$name, AclError> {
                $name::VALUES
                    .iter()
                    .copied()
                    .find(|value| same_name(value.name(), text))
                    .ok_or_else(|| AclError::UnknownName { kind: $kind, name: text.to_string() })
            }
        }
    };
}

/// Whether `text` spells `name`, ignoring case, `_` and `-`.
fn same_name(name: &str, text: &str) -> bool {
    fn significant(s: &str) -> impl Iterator<Item = char> + '_ {
        s.chars()
            .filter(|c| *c != '_' && *c != '-')
            .map(|c| c.to_ascii_lowercase())
    }
    significant(name).eq(significant(text))
}

kafka_enum! {
    /// The kind of resource a binding names (Kafka's `ResourceType`).
    ResourceType, "a resource type" {
        Unknown = 0, "UNKNOWN";
        /// Filters only: every type.
        Any = 1, "ANY";
        Topic = 2, "TOPIC";
        Group = 3, "GROUP";
        /// The single cluster resource, named [`CLUSTER_NAME`].
        Cluster = 4, "CLUSTER";
        TransactionalId = 5, "TRANSACTIONAL_ID";
        DelegationToken = 6, "DELEGATION_TOKEN";
        User = 7, "USER";
    }
}

kafka_enum! {
    /// How a binding's resource name selects resources (Kafka's `PatternType`).
    PatternType, "a pattern type" {
        Unknown = 0, "UNKNOWN";
        /// Filters only: bindings of any pattern type whose name equals the filter's.
        Any = 1, "ANY";
        /// Filters only: the bindings that would apply to the filter's resource name.
        Match = 2, "MATCH";
        /// Exactly the name, or every resource when the name is `*`.
        Literal = 3, "LITERAL";
        /// Every resource whose name starts with the name.
        Prefixed = 4, "PREFIXED";
    }
}

kafka_enum! {
    /// What a binding allows or denies (Kafka's `AclOperation`).
    AclOperation, "an ACL operation" {
        Unknown = 0, "UNKNOWN";
        /// Filters only: every operation.
        Any = 1, "ANY";
        /// In a binding: every operation.
        All = 2, "ALL";
        Read = 3, "READ";
        Write = 4, "WRITE";
        Create = 5, "CREATE";
        Delete = 6, "DELETE";
        Alter = 7, "ALTER";
        Describe = 8, "DESCRIBE";
        ClusterAction = 9, "CLUSTER_ACTION";
        DescribeConfigs = 10, "DESCRIBE_CONFIGS";
        AlterConfigs = 11, "ALTER_CONFIGS";
        IdempotentWrite = 12, "IDEMPOTENT_WRITE";
        CreateTokens = 13, "CREATE_TOKENS";
        DescribeTokens = 14, "DESCRIBE_TOKENS";
    }
}

kafka_enum! {
    /// Whether a binding allows or denies (Kafka's `AclPermissionType`).
    AclPermissionType, "an ACL permission type" {
        Unknown = 0, "UNKNOWN";
        /// Filters only: both.
        Any = 1, "ANY";
        Deny = 2, "DENY";
        Allow = 3, "ALLOW";
    }
}

impl ResourceType {
    /// The operations a binding on this type may name besides ALL (the table kafka-acls
    /// enforces, Kafka's `AclEntry.supportedOperations`); empty for ANY and UNKNOWN.
    pub fn supported_operations(self) -> &'static [AclOperation] {
        use AclOperation::*;
        match self {
            ResourceType::Topic => &[
                Read,
                Write,
                Create,
                Describe,
                Delete,
                Alter,
                DescribeConfigs,
                AlterConfigs,
            ],
            ResourceType::Group => &[Read, Describe, Delete],
            ResourceType::Cluster => &[
                Create,
                ClusterAction,
                DescribeConfigs,
                AlterConfigs,
                IdempotentWrite,
                Alter,
                Describe,
            ],
            ResourceType::TransactionalId => &[Describe, Write],
            ResourceType::DelegationToken => &[Describe],
            ResourceType::User => &[CreateTokens, DescribeTokens],
            ResourceType::Any | ResourceType::Unknown => &[],
        }
    }
}

/// `READ, WRITE, …, ALL`: the operations of a type, for an error sentence.
fn supported_list(resource_type: &ResourceType) -> String {
    let mut names: Vec<&str> = resource_type
        .supported_operations()
        .iter()
        .map(|op| op.name())
        .collect();
    names.push(AclOperation::All.name());
    names.join(", ")
}

/// One ACL: a resource pattern and an entry (principal, host, operation, permission).
/// The derived order (type, name, pattern, principal, host, operation, permission) is
/// the order DescribeAcls lists bindings in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AclBinding {
    pub resource_type: ResourceType,
    pub resource_name: String,
    /// LITERAL or PREFIXED in a stored binding.
    pub pattern_type: PatternType,
    /// `Type:name`, e.g. `User:alice`, or [`WILDCARD_PRINCIPAL`].
    pub principal: String,
    /// An address as [`host_address`] prints it, or [`WILDCARD_HOST`].
    pub host: String,
    pub operation: AclOperation,
    pub permission: AclPermissionType,
}

impl AclBinding {
    /// Kafka's CreateAcls checks, with the same outcome as a Kafka broker plus the
    /// operation-per-type table kafka-acls applies (a broker would store, say, a
    /// IDEMPOTENT_WRITE binding on a topic, which can never apply to anything): concrete
    /// type, LITERAL or PREFIXED, a concrete operation valid for the type, ALLOW or DENY,
    /// a non-empty name, `kafka-cluster` for the cluster, a `Type:name` principal.
    ///
    /// A PREFIXED `*` is accepted, as Kafka does: it is an ordinary prefix (names starting
    /// with `*`), not a wildcard. The host is not checked, as in Kafka; a host that is not
    /// an address as [`host_address`] prints it simply never applies.
    pub fn validate_for_create(&self) -> Result<(), AclError> {
        if matches!(
            self.resource_type,
            ResourceType::Any | ResourceType::Unknown
        ) {
            return Err(AclError::InvalidResourceType(self.resource_type));
        }
        if !matches!(
            self.pattern_type,
            PatternType::Literal | PatternType::Prefixed
        ) {
            return Err(AclError::InvalidPatternType(self.pattern_type));
        }
        if matches!(self.operation, AclOperation::Any | AclOperation::Unknown) {
            return Err(AclError::InvalidOperation(self.operation));
        }
        if !matches!(
            self.permission,
            AclPermissionType::Allow | AclPermissionType::Deny
        ) {
            return Err(AclError::InvalidPermission(self.permission));
        }
        if self.resource_name.is_empty() {
            return Err(AclError::EmptyResourceName);
        }
        if self.resource_type == ResourceType::Cluster && self.resource_name != CLUSTER_NAME {
            return Err(AclError::InvalidClusterName(self.resource_name.clone()));
        }
        if Principal::parse(&self.principal).is_none() {
            return Err(AclError::InvalidPrincipal(self.principal.clone()));
        }
        if self.operation != AclOperation::All
            && !self
                .resource_type
                .supported_operations()
                .contains(&self.operation)
        {
            return Err(AclError::UnsupportedOperation {
                resource_type: self.resource_type,
                operation: self.operation,
            });
        }
        Ok(())
    }

    /// The metadata-store key of this binding:
    /// `TYPE/PATTERN/name/principal/host/OPERATION/PERMISSION`, e.g.
    /// `TOPIC/PREFIXED/orders-/User:alice/*/READ/ALLOW`, with `%` and `/` in the three
    /// free-text fields written `%25` and `%2F`. Distinct bindings have distinct keys (no
    /// field holds an unescaped `/`), so storing under the key makes a second CreateAcls
    /// of the same binding a no-op, as in Kafka; keys of one resource share a prefix.
    /// Records are found by this key: changing the format orphans stored ACLs.
    pub fn key(&self) -> String {
        format!(
            "{}/{}/{}/{}/{}/{}/{}",
            self.resource_type,
            self.pattern_type,
            escape_key_field(&self.resource_name),
            escape_key_field(&self.principal),
            escape_key_field(&self.host),
            self.operation,
            self.permission
        )
    }

    /// The stored record (see the module doc for the format).
    pub fn to_record(&self) -> Result<Vec<u8>, AclError> {
        #[derive(Serialize)]
        struct Record<'a> {
            version: u32,
            #[serde(flatten)]
            binding: &'a AclBinding,
        }
        Ok(serde_json::to_vec(&Record {
            version: RECORD_VERSION,
            binding: self,
        })?)
    }

    /// Reads a stored record, refusing a version this broker does not know.
    pub fn from_record(bytes: &[u8]) -> Result<AclBinding, AclError> {
        #[derive(Deserialize)]
        struct Version {
            version: u32,
        }
        let Version { version } = serde_json::from_slice(bytes)?;
        if version != RECORD_VERSION {
            return Err(AclError::UnsupportedRecordVersion(version));
        }
        Ok(serde_json::from_slice(bytes)?)
    }

    /// The filter that matches exactly this binding (Kafka's `AclBinding.toFilter`).
    pub fn to_filter(&self) -> AclBindingFilter {
        AclBindingFilter {
            resource_type: self.resource_type,
            resource_name: Some(self.resource_name.clone()),
            pattern_type: self.pattern_type,
            principal: Some(self.principal.clone()),
            host: Some(self.host.clone()),
            operation: self.operation,
            permission: self.permission,
        }
    }
}

/// Kafka's `AclBinding.toString`, as kafka-acls and the authorizer log print bindings.
impl fmt::Display for AclBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "(pattern=ResourcePattern(resourceType={}, name={}, patternType={}), \
             entry=(principal={}, host={}, operation={}, permissionType={}))",
            self.resource_type,
            self.resource_name,
            self.pattern_type,
            self.principal,
            self.host,
            self.operation,
            self.permission
        )
    }
}

fn escape_key_field(text: &str) -> String {
    text.replace('%', "%25").replace('/', "%2F")
}

/// The filter of DescribeAcls and DeleteAcls (Kafka's `AclBindingFilter`): `ANY` or
/// `None` in a field matches every value; principal and host compare exactly (a filter
/// for `*` selects the wildcard bindings, not every binding).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AclBindingFilter {
    pub resource_type: ResourceType,
    pub resource_name: Option<String>,
    /// ANY: bindings of either pattern type with exactly the filter's name. MATCH: the
    /// bindings that apply to a resource of the filter's name (that literal name, the
    /// literal `*`, and the prefixes of the name). LITERAL, PREFIXED: that type only.
    pub pattern_type: PatternType,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: AclOperation,
    pub permission: AclPermissionType,
}

impl AclBindingFilter {
    /// The filter that matches every binding.
    pub fn any() -> AclBindingFilter {
        AclBindingFilter {
            resource_type: ResourceType::Any,
            resource_name: None,
            pattern_type: PatternType::Any,
            principal: None,
            host: None,
            operation: AclOperation::Any,
            permission: AclPermissionType::Any,
        }
    }

    /// Kafka's check of a DescribeAcls or DeleteAcls filter: no UNKNOWN anywhere.
    pub fn validate(&self) -> Result<(), AclError> {
        if self.resource_type == ResourceType::Unknown {
            return Err(AclError::UnknownInFilter("resource type"));
        }
        if self.pattern_type == PatternType::Unknown {
            return Err(AclError::UnknownInFilter("pattern type"));
        }
        if self.operation == AclOperation::Unknown {
            return Err(AclError::UnknownInFilter("operation"));
        }
        if self.permission == AclPermissionType::Unknown {
            return Err(AclError::UnknownInFilter("permission type"));
        }
        Ok(())
    }

    /// Whether the filter selects the binding (Kafka's `ResourcePatternFilter.matches`
    /// and `AccessControlEntryFilter.matches`).
    pub fn matches(&self, binding: &AclBinding) -> bool {
        self.matches_pattern(binding) && self.matches_entry(binding)
    }

    fn matches_pattern(&self, binding: &AclBinding) -> bool {
        if self.resource_type != ResourceType::Any && self.resource_type != binding.resource_type {
            return false;
        }
        if !matches!(self.pattern_type, PatternType::Any | PatternType::Match)
            && self.pattern_type != binding.pattern_type
        {
            return false;
        }
        let Some(name) = &self.resource_name else {
            return true;
        };
        if self.pattern_type == PatternType::Any || self.pattern_type == binding.pattern_type {
            return *name == binding.resource_name;
        }
        // MATCH against a stored binding.
        match binding.pattern_type {
            PatternType::Literal => {
                *name == binding.resource_name || binding.resource_name == WILDCARD_RESOURCE
            }
            PatternType::Prefixed => name.starts_with(&binding.resource_name),
            PatternType::Any | PatternType::Match | PatternType::Unknown => false,
        }
    }

    fn matches_entry(&self, binding: &AclBinding) -> bool {
        self.principal
            .as_ref()
            .is_none_or(|principal| *principal == binding.principal)
            && self.host.as_ref().is_none_or(|host| *host == binding.host)
            && (self.operation == AclOperation::Any || self.operation == binding.operation)
            && (self.permission == AclPermissionType::Any || self.permission == binding.permission)
    }
}

/// Parses Kafka's `super.users`: principals separated by `;`, each `Type:name`, with
/// whitespace around entries and empty entries ignored (so `""` and `"User:a;"` are
/// fine). Duplicates are dropped, keeping the first.
pub fn super_users(text: &str) -> Result<Vec<Principal>, AclError> {
    let mut users: Vec<Principal> = Vec::new();
    for entry in text.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let principal =
            Principal::parse(entry).ok_or_else(|| AclError::InvalidPrincipal(entry.to_string()))?;
        if !users.contains(&principal) {
            users.push(principal);
        }
    }
    Ok(users)
}
