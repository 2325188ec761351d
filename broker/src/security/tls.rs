//! TLS for the Kafka listeners: a rustls server configuration built from PEM files, and
//! rebuilt when they change on disk.
//!
//! cert-manager (and a Kubernetes Secret volume in general) replaces the files by swapping
//! a `..data` symlink, so a change shows as a new inode or modification time of the path
//! as resolved. [`TlsFiles::watch`] looks once a second; a new configuration is built
//! completely (certificate, key, CA) before it replaces the old one, so connections in
//! flight keep theirs and new ones get the new certificate. A half-written or mismatched
//! pair is refused with a warning and the old configuration stays.
//!
//! The crypto provider is aws-lc-rs, named explicitly: the process also links ring through
//! other crates, and rustls refuses to pick a default when both are present.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{ClientAuth, Config};

/// How often the certificate files are checked for a change.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("setting `{setting}`: cannot read {path}: {message}")]
    Read {
        setting: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("setting `{setting}`: {path} holds no {what}")]
    Empty {
        setting: &'static str,
        path: PathBuf,
        what: &'static str,
    },
    #[error("the TLS configuration is not valid: {0}")]
    Rustls(String),
}

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The files of the TLS settings.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
    ca: Option<PathBuf>,
    client_auth: ClientAuth,
    /// ALPN protocols offered: none for Kafka, `h2` for gRPC (tonic's clients insist).
    alpn: Vec<Vec<u8>>,
}

/// What identifies one version of a file: a replaced file has a new inode or mtime.
type Stamp = Option<(u64, u64, i64, i64, u64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.dev(), m.ino(), m.mtime(), m.mtime_nsec(), m.len()))
}

fn read(setting: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::Read {
        setting,
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn certificates(
    setting: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(setting, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Read {
            setting,
            path: path.to_path_buf(),
            message: format!("not PEM certificates: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            setting,
            path: path.to_path_buf(),
            what: "PEM certificate",
        });
    }
    Ok(certs)
}

impl TlsFiles {
    /// The TLS files of `config`, or `None` when no certificate is configured.
    pub fn from_config(config: &Config) -> Result<Option<TlsFiles>, crate::config::ConfigError> {
        if config.ssl_cert_file.trim().is_empty() {
            return Ok(None);
        }
        let ca = Some(config.ssl_ca_file.trim())
            .filter(|p| !p.is_empty())
            .map(PathBuf::from);
        Ok(Some(TlsFiles {
            cert: PathBuf::from(config.ssl_cert_file.trim()),
            key: PathBuf::from(config.ssl_key_file.trim()),
            ca,
            client_auth: config.client_auth()?,
            alpn: Vec::new(),
        }))
    }

    /// The same files with another client-certificate rule (the gRPC listeners ask for
    /// client certificates whatever `ssl_client_auth` says for Kafka clients).
    pub fn with_client_auth(mut self, client_auth: ClientAuth) -> TlsFiles {
        self.client_auth = client_auth;
        self
    }

    /// Offers HTTP/2 by ALPN, as gRPC clients require.
    pub fn with_h2(mut self) -> TlsFiles {
        self.alpn = vec![b"h2".to_vec()];
        self
    }

    pub fn has_ca(&self) -> bool {
        self.ca.is_some()
    }

    fn stamps(&self) -> [Stamp; 3] {
        [
            stamp(&self.cert),
            stamp(&self.key),
            self.ca.as_deref().and_then(stamp),
        ]
    }

    /// Reads the files and builds a server configuration.
    pub fn load(&self) -> Result<ServerConfig, TlsError> {
        let chain = certificates("ssl_cert_file", &self.cert)?;
        let key_pem = read("ssl_key_file", &self.key)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Read {
            setting: "ssl_key_file",
            path: self.key.clone(),
            message: format!("no PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
        })?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Rustls(e.to_string()))?;
        let builder = match (&self.ca, self.client_auth) {
            (_, ClientAuth::None) | (None, _) => builder.with_no_client_auth(),
            (Some(ca), auth) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in certificates("ssl_ca_file", ca)? {
                    roots
                        .add(cert)
                        .map_err(|e| TlsError::Rustls(format!("ssl_ca_file: {e}")))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(roots.into(), provider());
                let verifier = if auth == ClientAuth::Requested {
                    verifier.allow_unauthenticated()
                } else {
                    verifier
                };
                builder.with_client_cert_verifier(
                    verifier
                        .build()
                        .map_err(|e| TlsError::Rustls(format!("ssl_ca_file: {e}")))?,
                )
            }
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| TlsError::Rustls(format!("ssl_cert_file and ssl_key_file: {e}")))?;
        config.alpn_protocols = self.alpn.clone();
        Ok(config)
    }
}

/// The current server configuration, swapped whole on a reload.
pub struct TlsAcceptor {
    current: RwLock<Arc<ServerConfig>>,
}

impl TlsAcceptor {
    pub fn new(config: ServerConfig) -> Arc<TlsAcceptor> {
        Arc::new(TlsAcceptor {
            current: RwLock::new(Arc::new(config)),
        })
    }

    /// The configuration for a connection accepted now.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let current = match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        tokio_rustls::TlsAcceptor::from(current)
    }

    fn replace(&self, config: ServerConfig) {
        let config = Arc::new(config);
        match self.current.write() {
            Ok(mut guard) => *guard = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
    }

    /// Rebuilds the configuration whenever the files change, until `cancel`.
    pub async fn watch(self: Arc<Self>, files: TlsFiles, cancel: CancellationToken) {
        let mut seen = files.stamps();
        let mut ticker = tokio::time::interval(RELOAD_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let now = files.stamps();
            if now == seen {
                continue;
            }
            seen = now;
            match files.load() {
                Ok(config) => {
                    self.replace(config);
                    info!(cert = %files.cert.display(), "TLS certificate reloaded");
                }
                // A rotation that writes the files one after the other passes through a
                // mismatched pair: the next change completes it.
                Err(e) => {
                    warn!(error = %e, "TLS files changed but cannot be used; keeping the previous certificate")
                }
            }
        }
    }
}
