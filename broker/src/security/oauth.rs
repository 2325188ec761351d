//! SASL/OAUTHBEARER (RFC 7628, Kafka's KIP-255 and KIP-768): the client sends a JWT, which
//! the broker checks against the issuer's JWKS.
//!
//! A token is accepted when its signature verifies with the JWKS key its header names
//! (`kid`; a JWKS of one key needs none) under an asymmetric algorithm (RSA, RSA-PSS,
//! ECDSA, EdDSA: never HMAC, never `none`), it has not expired (`exp` is required, 30 s of
//! clock skew allowed), it is already valid (`nbf`), and it carries the expected issuer
//! and audience when those are configured. The principal is the claim
//! `sasl_oauthbearer_sub_claim_name` (default `sub`); the session ends when the token
//! expires (KIP-368).
//!
//! The JWKS is read at start and every hour, and again when a token names a key id it
//! does not hold (at most once a minute, so unknown ids cannot make the broker hammer the
//! issuer). A JWKS that cannot be read at start is logged; logins fail until it can be.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use super::Principal;
use crate::config::Config;

const REFRESH_INTERVAL: Duration = Duration::from_secs(3600);
const UNKNOWN_KID_REFRESH: Duration = Duration::from_secs(60);
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on a JWKS document and on a client's token message.
const MAX_BYTES: usize = 1 << 20;
const MAX_MESSAGE: usize = 64 * 1024;
const CLOCK_SKEW_S: u64 = 30;

#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    #[error("OAUTHBEARER is not configured")]
    NotConfigured,
    #[error("the OAUTHBEARER message is malformed: {0}")]
    Malformed(&'static str),
    #[error("the token is not valid: {0}")]
    Invalid(String),
    #[error("the token names key id {0:?}, which the JWKS does not hold")]
    UnknownKey(Option<String>),
    #[error("the token's principal claim `{0}` is missing or not a string")]
    NoPrincipal(String),
    #[error("cannot read the JWKS from {url}: {message}")]
    Jwks { url: String, message: String },
}

struct Keys {
    by_kid: HashMap<String, (DecodingKey, Option<Algorithm>)>,
    /// Keys without a `kid`: usable only when the JWKS holds exactly one key.
    anonymous: Vec<(DecodingKey, Option<Algorithm>)>,
    fetched: Option<Instant>,
}

pub struct OAuthValidator {
    url: String,
    issuer: Option<String>,
    audience: Option<String>,
    principal_claim: String,
    /// A std lock: held to look up or swap keys, never across an await.
    keys: RwLock<Keys>,
    /// Serializes refreshes, and remembers the last attempt (a tokio mutex: held across
    /// the fetch).
    last_attempt: tokio::sync::Mutex<Option<Instant>>,
    http: reqwest::Client,
}

fn non_empty(s: &str) -> Option<String> {
    Some(s.trim().to_string()).filter(|s| !s.is_empty())
}

impl OAuthValidator {
    pub async fn open(config: &Config) -> anyhow::Result<OAuthValidator> {
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .build()
            .map_err(|e| anyhow::anyhow!("build the JWKS HTTP client: {e}"))?;
        let validator = OAuthValidator {
            url: config.sasl_oauthbearer_jwks_url.trim().to_string(),
            issuer: non_empty(&config.sasl_oauthbearer_expected_issuer),
            audience: non_empty(&config.sasl_oauthbearer_expected_audience),
            principal_claim: config.sasl_oauthbearer_sub_claim_name.trim().to_string(),
            keys: RwLock::new(Keys {
                by_kid: HashMap::new(),
                anonymous: Vec::new(),
                fetched: None,
            }),
            last_attempt: tokio::sync::Mutex::new(None),
            http,
        };
        if let Err(e) = validator.refresh(Duration::ZERO).await {
            tracing::warn!(error = %e, "OAUTHBEARER logins will fail until the JWKS can be read");
        }
        Ok(validator)
    }

    async fn fetch(&self) -> Result<JwkSet, OAuthError> {
        let error = |message: String| OAuthError::Jwks {
            url: self.url.clone(),
            message,
        };
        let bytes = if let Some(path) = self.url.strip_prefix("file://") {
            let bytes = tokio::fs::read(path)
                .await
                .map_err(|e| error(e.to_string()))?;
            bytes::Bytes::from(bytes)
        } else {
            let response = self
                .http
                .get(&self.url)
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .map_err(|e| error(e.to_string()))?;
            if response
                .content_length()
                .is_some_and(|l| l > MAX_BYTES as u64)
            {
                return Err(error("the document is larger than 1 MiB".into()));
            }
            response.bytes().await.map_err(|e| error(e.to_string()))?
        };
        if bytes.len() > MAX_BYTES {
            return Err(error("the document is larger than 1 MiB".into()));
        }
        serde_json::from_slice(&bytes).map_err(|e| error(format!("not a JWKS: {e}")))
    }

    /// Reads the JWKS again unless an attempt was made within `min_gap`.
    async fn refresh(&self, min_gap: Duration) -> Result<(), OAuthError> {
        let mut last = self.last_attempt.lock().await;
        if last.is_some_and(|at| at.elapsed() < min_gap) {
            return Ok(());
        }
        *last = Some(Instant::now());
        let set = self.fetch().await?;
        let mut by_kid = HashMap::new();
        let mut anonymous = Vec::new();
        for jwk in &set.keys {
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                continue; // symmetric or unsupported keys are not usable for verification
            };
            let algorithm = jwk
                .common
                .key_algorithm
                .and_then(|a| a.to_string().parse::<Algorithm>().ok());
            match &jwk.common.key_id {
                Some(kid) => {
                    by_kid.insert(kid.clone(), (key, algorithm));
                }
                None => anonymous.push((key, algorithm)),
            }
        }
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        *keys = Keys {
            by_kid,
            anonymous,
            fetched: Some(Instant::now()),
        };
        Ok(())
    }

    fn key_for(&self, kid: Option<&str>) -> Option<(DecodingKey, Option<Algorithm>)> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        match kid {
            Some(kid) => keys.by_kid.get(kid).cloned(),
            None if keys.by_kid.len() + keys.anonymous.len() == 1 => keys
                .anonymous
                .first()
                .or_else(|| keys.by_kid.values().next())
                .cloned(),
            None => None,
        }
    }

    fn stale(&self) -> bool {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        keys.fetched
            .is_none_or(|at| at.elapsed() >= REFRESH_INTERVAL)
    }

    /// Checks a client's OAUTHBEARER message; returns the principal and the token's
    /// expiry (Unix ms).
    pub async fn validate(&self, message: &[u8]) -> Result<(Principal, Option<i64>), OAuthError> {
        let token = bearer_token(message)?;
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| OAuthError::Invalid(e.to_string()))?;
        if !is_asymmetric(header.alg) {
            return Err(OAuthError::Invalid(format!(
                "algorithm {:?} is not accepted",
                header.alg
            )));
        }
        if self.stale()
            && let Err(e) = self.refresh(UNKNOWN_KID_REFRESH).await
        {
            tracing::warn!(error = %e, "JWKS refresh failed; using the keys read before");
        }
        let kid = header.kid.as_deref();
        let (key, key_algorithm) = match self.key_for(kid) {
            Some(found) => found,
            None => {
                if let Err(e) = self.refresh(UNKNOWN_KID_REFRESH).await {
                    tracing::warn!(error = %e, "JWKS refresh failed");
                }
                self.key_for(kid)
                    .ok_or_else(|| OAuthError::UnknownKey(header.kid.clone()))?
            }
        };
        if key_algorithm.is_some_and(|a| a != header.alg) {
            return Err(OAuthError::Invalid(
                "the token's algorithm is not its key's".into(),
            ));
        }
        let mut validation = Validation::new(header.alg);
        validation.leeway = CLOCK_SKEW_S;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp"]);
        match &self.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
        }
        let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            &key,
            &validation,
        )
        .map_err(|e| OAuthError::Invalid(e.to_string()))?;
        let name = data
            .claims
            .get(&self.principal_claim)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| OAuthError::NoPrincipal(self.principal_claim.clone()))?;
        let expires = data
            .claims
            .get("exp")
            .and_then(|v| v.as_i64())
            .map(|s| s.saturating_mul(1000));
        Ok((Principal::user(name), expires))
    }
}

fn is_asymmetric(algorithm: Algorithm) -> bool {
    !matches!(
        algorithm,
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
    )
}

/// The token of a client's first message: `gs2-header %x01 (key=value %x01)* %x01`, one
/// key being `auth=Bearer <token>` (RFC 7628 §3.1).
fn bearer_token(message: &[u8]) -> Result<&str, OAuthError> {
    if message.len() > MAX_MESSAGE {
        return Err(OAuthError::Malformed("longer than 64 KiB"));
    }
    let text = std::str::from_utf8(message).map_err(|_| OAuthError::Malformed("not UTF-8"))?;
    let mut parts = text.split('\u{1}');
    let gs2 = parts.next().unwrap_or_default();
    if !gs2.starts_with("n,") && !gs2.starts_with("y,") {
        return Err(OAuthError::Malformed("no GS2 header"));
    }
    for part in parts {
        if let Some(auth) = part.strip_prefix("auth=") {
            let token = auth
                .strip_prefix("Bearer ")
                .or_else(|| auth.strip_prefix("bearer "))
                .ok_or(OAuthError::Malformed(
                    "the auth value is not `Bearer <token>`",
                ))?;
            return Ok(token.trim());
        }
    }
    Err(OAuthError::Malformed("no auth=Bearer value"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_found_and_malformed_messages_refused() {
        let message = b"n,,\x01host=broker\x01auth=Bearer abc.def.ghi\x01\x01";
        assert_eq!(bearer_token(message).expect("token"), "abc.def.ghi");
        let with_authzid = b"n,a=alice,\x01auth=Bearer t\x01\x01";
        assert_eq!(bearer_token(with_authzid).expect("token"), "t");
        for bad in [
            &b""[..],
            b"\x01auth=Bearer t\x01\x01",
            b"n,,\x01auth=Basic t\x01\x01",
            b"n,,\x01\x01",
            b"n,,\xff\x01",
        ] {
            assert!(bearer_token(bad).is_err(), "{bad:?}");
        }
    }
}
