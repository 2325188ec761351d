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
    /// Every address this broker binds must be its own: a Kafka listener on the admin
    /// API's port (say) fails at start with "address in use", after the store was opened.
    fn check_ports_are_distinct(&self, listeners: &[super::Listener]) -> Result<(), ConfigError> {
        let mut bound: Vec<(String, std::net::SocketAddr)> = listeners
            .iter()
            .map(|l| (format!("listeners ({})", l.name), l.bind))
            .collect();
        bound.push(("http".into(), self.http_addr()?));
        bound.push(("admin_listen".into(), self.admin_addr()?));
        if matches!(self.metadata_url()?, super::MetadataUrl::Etcd { .. }) {
            bound.push(("replication_listen".into(), self.replication_addr()?));
        }
        for (i, (a_name, a)) in bound.iter().enumerate() {
            for (b_name, b) in &bound[i + 1..] {
                // The same address, or a wildcard of the other's family; the IPv6 wildcard
                // also takes IPv4 (Linux's default dual stack).
                let covers = |w: &std::net::SocketAddr, o: &std::net::SocketAddr| {
                    w.ip().is_unspecified() && (w.is_ipv6() || w.is_ipv4() == o.is_ipv4())
                };
                let overlap = a.ip() == b.ip() || covers(a, b) || covers(b, a);
                if a.port() == b.port() && a.port() != 0 && overlap {
                    return Err(invalid(
                        if a_name.starts_with("listeners") {
                            "listeners"
                        } else {
                            b_name.as_str()
                        },
                        format!("{a_name} and {b_name} both use port {}", a.port()),
                    ));
                }
            }
        }
        Ok(())
    }

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
        self.check_ports_are_distinct(&listeners)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_on_another_listeners_port_is_refused() {
        let clash = Config {
            listeners: "PLAINTEXT://127.0.0.1:9092,SASL_SSL://0.0.0.0:9094".into(),
            advertised_listeners: "SASL_SSL://broker.example:9094".into(),
            ssl_cert_file: "/dev/null".into(),
            ssl_key_file: "/dev/null".into(),
            ..Config::default()
        };
        match clash.validate() {
            Err(ConfigError::Invalid { setting, message }) => {
                assert_eq!(setting, "listeners");
                assert!(
                    message.contains("admin_listen") && message.contains("9094"),
                    "{message}"
                );
            }
            other => panic!("expected a port clash, got {other:?}"),
        }
        let distinct = Config {
            admin_listen: "127.0.0.1:9095".into(),
            ..clash
        };
        distinct.validate().expect("distinct ports");
    }
}
