//! SCRAM credentials: kept in the metadata store (kind `scram`, key `<user>/<mechanism>`,
//! the value [`ScramCredential::to_record`]) and cached here for logins.
//!
//! The store holds only salted keys: a password is hashed as it arrives (bootstrap file,
//! PLAIN login) and dropped. Every broker reloads the cache when the store changes, so a
//! user created through one broker can log in through any other within a metadata round.
//!
//! `sasl_bootstrap_users_file` holds `NAME:MECHANISM:PASSWORD` lines (a mounted Secret).
//! At start each line's credential is created, or replaced when the password no longer
//! matches; a line whose password still matches is left alone, so restarts do not rewrite
//! the store. Blank lines and lines starting with `#` are skipped; the password is
//! everything after the second colon.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::scram::{ScramCredential, ScramMechanism};
use crate::cluster::{MetadataStore, SecurityKind, StoreError};

/// The setting errors name.
const BOOTSTRAP_SETTING: &str = "sasl_bootstrap_users_file";

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("setting `{BOOTSTRAP_SETTING}`: cannot read {path}: {message}")]
    Read { path: String, message: String },
    /// Never carries the line itself: it holds a password.
    #[error(
        "setting `{BOOTSTRAP_SETTING}`: line {line} is not NAME:MECHANISM:PASSWORD with MECHANISM SCRAM-SHA-256 or SCRAM-SHA-512"
    )]
    Syntax { line: usize },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One user's credential change, as AlterUserScramCredentials asks for it.
pub enum CredentialChange {
    Upsert(String, ScramCredential),
    Delete(String, ScramMechanism),
}

impl CredentialChange {
    pub fn user(&self) -> &str {
        match self {
            CredentialChange::Upsert(user, _) | CredentialChange::Delete(user, _) => user,
        }
    }

    fn key(&self) -> String {
        match self {
            CredentialChange::Upsert(user, credential) => key(user, credential.mechanism),
            CredentialChange::Delete(user, mechanism) => key(user, *mechanism),
        }
    }
}

fn key(user: &str, mechanism: ScramMechanism) -> String {
    format!("{user}/{}", mechanism.name())
}

pub struct Credentials {
    store: Arc<dyn MetadataStore>,
    /// A std lock: held for a map lookup or swap, never across an await.
    by_user: RwLock<HashMap<String, Vec<ScramCredential>>>,
    /// Held from a reload's read to its swap (a tokio mutex: across the store read), so
    /// a reload that read before a change cannot install after the change's own reload.
    reloading: tokio::sync::Mutex<()>,
}

impl Credentials {
    pub fn new(store: Arc<dyn MetadataStore>) -> Credentials {
        Credentials {
            store,
            by_user: RwLock::new(HashMap::new()),
            reloading: tokio::sync::Mutex::new(()),
        }
    }

    /// Replaces the cache with what the store holds. A record that does not parse is
    /// skipped with a warning (one bad record must not lock every user out).
    pub async fn reload(&self) -> Result<(), StoreError> {
        let _reloading = self.reloading.lock().await;
        let records = self.store.list_security(SecurityKind::Scram).await?;
        let mut by_user: HashMap<String, Vec<ScramCredential>> = HashMap::new();
        for (key, value) in records {
            let Some((user, _)) = key.rsplit_once('/') else {
                tracing::warn!(%key, "skipping a SCRAM record with an unreadable key");
                continue;
            };
            match ScramCredential::from_record(&value) {
                Ok(credential) => by_user
                    .entry(user.to_string())
                    .or_default()
                    .push(credential),
                Err(e) => tracing::warn!(%key, error = %e, "skipping an unreadable SCRAM record"),
            }
        }
        *self.by_user.write().unwrap_or_else(|p| p.into_inner()) = by_user;
        Ok(())
    }

    pub fn get(&self, user: &str, mechanism: ScramMechanism) -> Option<ScramCredential> {
        let by_user = self.by_user.read().unwrap_or_else(|p| p.into_inner());
        by_user
            .get(user)?
            .iter()
            .find(|c| c.mechanism == mechanism)
            .cloned()
    }

    /// Every user's credentials, sorted by name, for DescribeUserScramCredentials.
    pub fn describe(&self) -> Vec<(String, Vec<(ScramMechanism, u32)>)> {
        let by_user = self.by_user.read().unwrap_or_else(|p| p.into_inner());
        let mut users: Vec<_> = by_user
            .iter()
            .map(|(user, credentials)| {
                let mut infos: Vec<_> = credentials
                    .iter()
                    .map(|c| (c.mechanism, c.iterations))
                    .collect();
                infos.sort_by_key(|(m, _)| m.kafka_type());
                (user.clone(), infos)
            })
            .collect();
        users.sort_by(|a, b| a.0.cmp(&b.0));
        users
    }

    /// Whether `password` is `user`'s, by either SCRAM credential (SASL/PLAIN). This
    /// runs PBKDF2 at the credential's iteration count: call it off the async workers.
    pub fn verify_password(&self, user: &str, password: &[u8]) -> bool {
        let credentials = {
            let by_user = self.by_user.read().unwrap_or_else(|p| p.into_inner());
            by_user.get(user).cloned().unwrap_or_default()
        };
        if credentials.is_empty() {
            // The same PBKDF2 work as a wrong password, so the time taken does not tell
            // whether the user exists.
            let _ = ScramCredential::from_password(
                ScramMechanism::Sha512,
                password,
                b"strata-unknown-user",
                ScramMechanism::MIN_ITERATIONS,
            );
            return false;
        }
        credentials.iter().any(|c| c.verify_password(password))
    }

    /// Applies changes in one store transaction, then reloads the cache.
    pub async fn change(&self, changes: &[CredentialChange]) -> Result<(), StoreError> {
        let mut puts = Vec::new();
        let mut deletes = Vec::new();
        for change in changes {
            match change {
                CredentialChange::Upsert(_, credential) => {
                    puts.push((change.key(), credential.to_record()))
                }
                CredentialChange::Delete(..) => deletes.push(change.key()),
            }
        }
        self.store
            .change_security(SecurityKind::Scram, &puts, &deletes)
            .await?;
        self.reload().await
    }

    /// Creates or updates the users of `sasl_bootstrap_users_file`; returns how many
    /// credentials it wrote.
    pub async fn bootstrap(&self, path: &str) -> Result<usize, CredentialError> {
        let text = std::fs::read_to_string(path).map_err(|e| CredentialError::Read {
            path: path.to_string(),
            message: e.to_string(),
        })?;
        let users = parse_bootstrap(&text)?;
        self.reload().await?;
        let mut changes = Vec::new();
        for (user, mechanism, password) in users {
            let current = self.get(&user, mechanism);
            if current.is_some_and(|c| c.verify_password(password.as_bytes())) {
                continue;
            }
            let credential = ScramCredential::generate(
                mechanism,
                password.as_bytes(),
                ScramMechanism::MIN_ITERATIONS,
            );
            changes.push(CredentialChange::Upsert(user, credential));
        }
        if !changes.is_empty() {
            self.change(&changes).await?;
        }
        Ok(changes.len())
    }
}

/// The bootstrap file's lines as (user, mechanism, password).
fn parse_bootstrap(text: &str) -> Result<Vec<(String, ScramMechanism, String)>, CredentialError> {
    let mut users = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim_end_matches('\r');
        if trimmed.trim().is_empty() || trimmed.trim_start().starts_with('#') {
            continue;
        }
        let syntax = || CredentialError::Syntax { line: index + 1 };
        let mut fields = trimmed.splitn(3, ':');
        let (Some(user), Some(mechanism), Some(password)) =
            (fields.next(), fields.next(), fields.next())
        else {
            return Err(syntax());
        };
        let user = user.trim();
        let mechanism =
            ScramMechanism::from_name(&mechanism.trim().to_ascii_uppercase()).ok_or_else(syntax)?;
        if user.is_empty() || password.is_empty() {
            return Err(syntax());
        }
        users.push((user.to_string(), mechanism, password.to_string()));
    }
    Ok(users)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_lines_parse_and_errors_hide_the_password() {
        let users = parse_bootstrap(
            "# users\nadmin:SCRAM-SHA-512:s3cr:et\r\n\n alice : scram-sha-256 :pw\n",
        )
        .expect("parses");
        assert_eq!(
            users,
            vec![
                ("admin".into(), ScramMechanism::Sha512, "s3cr:et".into()),
                ("alice".into(), ScramMechanism::Sha256, "pw".into()),
            ]
        );
        for bad in [
            "bob:PLAIN:hunter2",
            "bob:SCRAM-SHA-512:",
            ":SCRAM-SHA-512:hunter2",
            "bob",
        ] {
            let error = parse_bootstrap(bad).expect_err(bad).to_string();
            assert!(error.contains("line 1"), "{error}");
            assert!(!error.contains("hunter2"), "{error}");
        }
    }
}
