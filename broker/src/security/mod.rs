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
pub mod authorizer;
pub mod credentials;
pub mod grpc;
pub mod oauth;
pub mod plain;
pub mod principal;
pub mod quotas;
pub mod scram;
pub mod tls;

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;

use crate::cluster::MetadataStore;
use crate::config::{Config, SaslMechanism};
use credentials::Credentials;
use principal::PrincipalMapper;

/// The broker's security state: the settings, the credential cache and the ACLs.
pub struct Security {
    pub credentials: Credentials,
    pub authorizer: authorizer::Authorizer,
    pub quotas: quotas::Quotas,
    pub oauth: Option<oauth::OAuthValidator>,
    mechanisms: Vec<SaslMechanism>,
    reauth_ms: i64,
    mapper: PrincipalMapper,
    own_principal: Option<String>,
}

impl Security {
    /// Reads the security settings and what the store holds; creates the bootstrap users.
    pub async fn open(config: &Config, store: Arc<dyn MetadataStore>) -> anyhow::Result<Security> {
        use anyhow::Context;
        let mapper = PrincipalMapper::parse(&config.ssl_principal_mapping_rules)
            .context("setting `ssl_principal_mapping_rules`")?;
        let authorizer = authorizer::Authorizer::new(config, store.clone())?;
        authorizer.reload().await.context("read ACLs")?;
        if !config.acl_bootstrap_file.trim().is_empty() {
            anyhow::ensure!(
                authorizer.enabled(),
                "setting `acl_bootstrap_file`: ACLs need `authorizer = acl`"
            );
            let created = authorizer
                .bootstrap(config.acl_bootstrap_file.trim())
                .await?;
            tracing::info!(created, "bootstrap ACLs applied");
        }
        let quotas = quotas::Quotas::new(store.clone());
        quotas.reload().await.context("read client quotas")?;
        let credentials = Credentials::new(store);
        credentials
            .reload()
            .await
            .context("read SCRAM credentials")?;
        if !config.sasl_bootstrap_users_file.trim().is_empty() {
            let written = credentials
                .bootstrap(config.sasl_bootstrap_users_file.trim())
                .await?;
            tracing::info!(written, "SASL bootstrap users applied");
        }
        let mechanisms = config.sasl_mechanisms()?;
        let oauth = if mechanisms.contains(&SaslMechanism::OAuthBearer)
            && !config.sasl_oauthbearer_jwks_url.trim().is_empty()
        {
            Some(oauth::OAuthValidator::open(config).await?)
        } else {
            None
        };
        let own_principal = own_certificate_principal(config, &mapper)?;
        Ok(Security {
            own_principal,
            credentials,
            authorizer,
            quotas,
            oauth,
            mechanisms,
            reauth_ms: config.connections_max_reauth_ms,
            mapper,
        })
    }

    /// The enabled SASL mechanisms, as SaslHandshake lists them.
    pub fn mechanisms(&self) -> &[SaslMechanism] {
        &self.mechanisms
    }

    /// `connections_max_reauth_ms`, if sessions expire.
    pub fn reauth_ms(&self) -> Option<i64> {
        (self.reauth_ms > 0).then_some(self.reauth_ms)
    }

    /// The principal of a verified client certificate: its subject DN, mapped by
    /// `ssl_principal_mapping_rules`. An error (an unreadable subject, or a DN no rule
    /// matches) refuses the connection, as Kafka does.
    pub fn certificate_principal(
        &self,
        certificate: &CertificateDer<'_>,
    ) -> Result<Principal, principal::PrincipalError> {
        let dn = principal::subject_dn(certificate.as_ref())?;
        Ok(Principal::user(self.mapper.map(&dn)?))
    }

    /// The principal of this broker's own certificate (`ssl_cert_file`), which its
    /// replication client presents; `None` without one.
    pub fn own_principal(&self) -> Option<String> {
        self.own_principal.clone()
    }

    /// Validates an OAUTHBEARER client message: the principal and the token's expiry
    /// (Unix ms).
    pub async fn validate_oauth_token(
        &self,
        message: &[u8],
    ) -> Result<(Principal, Option<i64>), oauth::OAuthError> {
        match &self.oauth {
            Some(validator) => validator.validate(message).await,
            None => Err(oauth::OAuthError::NotConfigured),
        }
    }

    /// Re-reads what other brokers may have changed in the store.
    /// Each part is read on its own, so one that fails does not hold back the others; the
    /// first error is returned.
    pub async fn refresh(&self) -> Result<(), crate::cluster::StoreError> {
        let credentials = self.credentials.reload().await;
        let quotas = self.quotas.reload().await;
        let acls = self.authorizer.reload().await;
        credentials.and(quotas).and(acls)
    }
}

/// Who sent a request: the connection's principal, the listener it came in on and the
/// client's address. One per connection, changed only by (re-)authentication.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    /// The listener name (`PLAINTEXT`, `CLIENT`): Metadata answers with its addresses.
    pub listener: Arc<str>,
    pub address: IpAddr,
}

impl Caller {
    pub fn new(principal: Principal, listener: Arc<str>, address: IpAddr) -> Caller {
        Caller {
            principal,
            listener,
            address,
        }
    }

    /// The client's address as Kafka shows it (DescribeGroups): `/IP`.
    pub fn client_host(&self) -> String {
        format!("/{}", self.address)
    }
}

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

/// The mapped principal of the leaf of `ssl_cert_file`, if one is configured.
fn own_certificate_principal(
    config: &Config,
    mapper: &PrincipalMapper,
) -> anyhow::Result<Option<String>> {
    use anyhow::Context;
    use rustls::pki_types::pem::PemObject;
    let path = config.ssl_cert_file.trim();
    if path.is_empty() {
        return Ok(None);
    }
    let pem =
        std::fs::read(path).with_context(|| format!("setting `ssl_cert_file`: read {path}"))?;
    let leaf = CertificateDer::pem_slice_iter(&pem)
        .next()
        .with_context(|| format!("setting `ssl_cert_file`: {path} holds no PEM certificate"))?
        .with_context(|| format!("setting `ssl_cert_file`: {path} is not PEM"))?;
    let dn =
        principal::subject_dn(leaf.as_ref()).context("setting `ssl_cert_file`: the subject")?;
    let name = mapper
        .map(&dn)
        .context("setting `ssl_principal_mapping_rules`: this broker's own certificate")?;
    Ok(Some(Principal::user(name).to_string()))
}
