//! Who a connection is and what it may do: TLS and SASL authenticate a connection once, at
//! the listener, to one [`Principal`]; the handlers check each request against the ACLs.
//! Below the handlers no code asks who the caller is (docs/security.md).
//!
//! - [`scram`] and [`plain`]: the SASL mechanisms' server side, pure state machines over
//!   the bytes of SaslAuthenticate; credentials are salted SCRAM keys, never passwords.
//! - [`acl`]: Kafka's ACL model (resources, patterns, operations, hosts) and the decision
//!   rule, deny before allow.
//! - [`principal`]: the principal of a client certificate (its subject DN, in RFC 2253
//!   form as Kafka prints it) and `ssl_principal_mapping_rules`.

pub mod acl;
pub mod plain;
pub mod principal;
pub mod scram;

use std::fmt;

/// An authenticated identity, Kafka's `KafkaPrincipal`: a type (always `User` here) and a
/// name. Unauthenticated connections are `User:ANONYMOUS`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Principal {
    pub principal_type: String,
    pub name: String,
}

impl Principal {
    pub const USER_TYPE: &'static str = "User";

    pub fn user(name: impl Into<String>) -> Principal {
        Principal {
            principal_type: Principal::USER_TYPE.to_string(),
            name: name.into(),
        }
    }

    pub fn anonymous() -> Principal {
        Principal::user("ANONYMOUS")
    }

    /// Parses `Type:name` (Kafka's `KafkaPrincipal` string form); the name may contain
    /// colons.
    pub fn parse(text: &str) -> Option<Principal> {
        let (principal_type, name) = text.split_once(':')?;
        if principal_type.is_empty() || name.is_empty() {
            return None;
        }
        Some(Principal {
            principal_type: principal_type.to_string(),
            name: name.to_string(),
        })
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.principal_type, self.name)
    }
}
