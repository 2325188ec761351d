//! Checks of the security settings (docs/security.md). The files they name (certificates,
//! the bootstrap users, the JWKS) are read by the security module at start, whose errors
//! name the setting too.

use super::{Config, ConfigError, invalid};

/// `ssl_client_auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    None,
    Requested,
    Required,
}

/// A mechanism of `sasl_enabled_mechanisms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SaslMechanism {
    ScramSha256,
    ScramSha512,
    Plain,
    OAuthBearer,
}

impl SaslMechanism {
    pub const ALL: [SaslMechanism; 4] = [
        SaslMechanism::ScramSha256,
        SaslMechanism::ScramSha512,
        SaslMechanism::Plain,
        SaslMechanism::OAuthBearer,
    ];

    /// The IANA name, as SaslHandshake carries it.
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::OAuthBearer => "OAUTHBEARER",
        }
    }

    pub fn parse(name: &str) -> Option<SaslMechanism> {
        SaslMechanism::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(name.trim()))
    }
}

impl Config {
    pub fn client_auth(&self) -> Result<ClientAuth, ConfigError> {
        match self.ssl_client_auth.trim().to_ascii_lowercase().as_str() {
            "" | "none" => Ok(ClientAuth::None),
            "requested" => Ok(ClientAuth::Requested),
            "required" => Ok(ClientAuth::Required),
            other => Err(invalid(
                "ssl_client_auth",
                format!("`{other}` is not none, requested or required"),
            )),
        }
    }

    /// `sasl_enabled_mechanisms`, in the order given, without repeats.
    pub fn sasl_mechanisms(&self) -> Result<Vec<SaslMechanism>, ConfigError> {
        let mut mechanisms = Vec::new();
        for name in self.sasl_enabled_mechanisms.split(',').map(str::trim) {
            if name.is_empty() {
                continue;
            }
            let mechanism = SaslMechanism::parse(name).ok_or_else(|| {
                invalid(
                    "sasl_enabled_mechanisms",
                    format!(
                        "`{name}` is not one of SCRAM-SHA-256, SCRAM-SHA-512, PLAIN, OAUTHBEARER"
                    ),
                )
            })?;
            if !mechanisms.contains(&mechanism) {
                mechanisms.push(mechanism);
            }
        }
        Ok(mechanisms)
    }

    /// Whether the ACL authorizer is on.
    pub fn acl_authorizer(&self) -> bool {
        self.authorizer.trim().eq_ignore_ascii_case("acl")
    }

    pub(super) fn check_security(&self) -> Result<(), ConfigError> {
        let listeners = self.kafka_listeners()?;
        let tls = listeners.iter().any(|l| l.protocol.uses_tls());
        let sasl = listeners.iter().any(|l| l.protocol.uses_sasl());
        if tls {
            for (setting, value) in [
                ("ssl_cert_file", &self.ssl_cert_file),
                ("ssl_key_file", &self.ssl_key_file),
            ] {
                if value.trim().is_empty() {
                    return Err(invalid(
                        setting,
                        "must be set: a listener uses SSL or SASL_SSL",
                    ));
                }
            }
        }
        if self.client_auth()? != ClientAuth::None && self.ssl_ca_file.trim().is_empty() {
            return Err(invalid(
                "ssl_ca_file",
                format!(
                    "must be set when ssl_client_auth is {}: client certificates are checked against it",
                    self.ssl_client_auth
                ),
            ));
        }
        // Replication between brokers uses mutual TLS once certificates are configured;
        // without a CA it could not verify the other brokers.
        if matches!(self.metadata_url()?, super::MetadataUrl::Etcd { .. })
            && !self.ssl_cert_file.trim().is_empty()
            && self.ssl_ca_file.trim().is_empty()
        {
            return Err(invalid(
                "ssl_ca_file",
                "must be set with ssl_cert_file in a cluster: replication between brokers uses mutual TLS",
            ));
        }
        if self.etcd_cert_file.trim().is_empty() != self.etcd_key_file.trim().is_empty() {
            return Err(invalid(
                "etcd_cert_file",
                "goes with `etcd_key_file`: set both or neither",
            ));
        }
        if self.etcd_username.trim().is_empty() && !self.etcd_password.is_empty() {
            return Err(invalid("etcd_username", "must be set with etcd_password"));
        }
        let mechanisms = self.sasl_mechanisms()?;
        if sasl && mechanisms.is_empty() {
            return Err(invalid(
                "sasl_enabled_mechanisms",
                "must name a mechanism: a listener uses SASL",
            ));
        }
        if sasl && mechanisms.contains(&SaslMechanism::OAuthBearer) {
            let url = self.sasl_oauthbearer_jwks_url.trim();
            if !["https://", "http://", "file://"]
                .iter()
                .any(|scheme| url.starts_with(scheme))
            {
                return Err(invalid(
                    "sasl_oauthbearer_jwks_url",
                    "must be an https://, http:// or file:// URL when OAUTHBEARER is enabled",
                ));
            }
        }
        if self.sasl_oauthbearer_sub_claim_name.trim().is_empty() {
            return Err(invalid(
                "sasl_oauthbearer_sub_claim_name",
                "must not be empty",
            ));
        }
        if self.connections_max_reauth_ms < 0 {
            return Err(invalid("connections_max_reauth_ms", "must be >= 0"));
        }
        let authorizer = self.authorizer.trim().to_ascii_lowercase();
        if !["none", "acl"].contains(&authorizer.as_str()) {
            return Err(invalid("authorizer", "must be `none` or `acl`"));
        }
        for entry in self.super_users.split(';').map(str::trim) {
            if entry.is_empty() {
                continue;
            }
            match entry.split_once(':') {
                Some((kind, name)) if !kind.is_empty() && !name.is_empty() => {}
                _ => {
                    return Err(invalid(
                        "super_users",
                        format!("`{entry}` is not a principal such as User:admin"),
                    ));
                }
            }
        }
        Ok(())
    }
}
