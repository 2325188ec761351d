//! TLS and authentication of the two gRPC services, admin and replication.
//!
//! With `ssl_cert_file` set both serve TLS with the broker's certificate (reloaded as the
//! Kafka listeners' is). Replication then requires a client certificate that chains to
//! `ssl_ca_file` (mutual TLS: a process without a broker's certificate cannot join the
//! stream), and the leader takes the follower's identity from that certificate: the
//! principal must be the one the claimed replica registered in the metadata store
//! ([`crate::cluster::BrokerInfo::principal`]). The admin API asks for a client
//! certificate and accepts either one or `admin_token_file`'s bearer token.
//!
//! Without certificates both services are plaintext, as before; the admin API still
//! requires the token when `admin_token_file` is set.

use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use super::tls::{TlsAcceptor, TlsFiles};
use crate::config::{ClientAuth, Config};

/// Handshakes under way at once per gRPC listener; more connections wait for a slot.
const HANDSHAKES_AT_ONCE: usize = 64;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The acceptor of one gRPC listener, with its reload task.
pub fn acceptor(
    config: &Config,
    client_auth: ClientAuth,
    cancel: &CancellationToken,
) -> anyhow::Result<Option<Arc<TlsAcceptor>>> {
    let Some(files) = TlsFiles::from_config(config)? else {
        return Ok(None);
    };
    let client_auth = if files.has_ca() {
        client_auth
    } else {
        ClientAuth::None
    };
    let files = files.with_client_auth(client_auth).with_h2();
    let acceptor = TlsAcceptor::new(files.load()?);
    tokio::spawn(acceptor.clone().watch(files, cancel.clone()));
    Ok(Some(acceptor))
}

/// TLS connections of `listener`: handshakes run concurrently (a slow client holds one
/// slot, for at most ten seconds); failed ones are dropped.
pub fn incoming(
    listener: TcpListener,
    acceptor: Arc<TlsAcceptor>,
) -> impl Stream<Item = Result<TlsStream<TcpStream>, std::io::Error>> {
    tokio_stream::wrappers::TcpListenerStream::new(listener)
        .filter_map(|accepted| async move {
            match accepted {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    Some(stream)
                }
                Err(e) => {
                    tracing::debug!(error = %e, "accept failed on a gRPC listener");
                    None
                }
            }
        })
        .map(move |stream| {
            let tls = acceptor.acceptor();
            async move {
                let peer = stream.peer_addr().ok();
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                    Ok(Ok(stream)) => Some(Ok(stream)),
                    Ok(Err(e)) => {
                        tracing::debug!(?peer, error = %e, "gRPC TLS handshake failed");
                        None
                    }
                    Err(_) => None,
                }
            }
        })
        .buffer_unordered(HANDSHAKES_AT_ONCE)
        .filter_map(|stream| async move { stream })
}

/// The client TLS of the replication fetcher: the broker's certificate as its identity,
/// `ssl_ca_file` to verify the leader. `None` without certificates.
pub fn replication_client_tls(
    config: &Config,
) -> anyhow::Result<Option<tonic::transport::ClientTlsConfig>> {
    use anyhow::Context;
    if config.ssl_cert_file.trim().is_empty() || config.ssl_ca_file.trim().is_empty() {
        return Ok(None);
    }
    let read = |setting: &str, path: &str| {
        std::fs::read(path.trim()).with_context(|| format!("setting `{setting}`: read {path}"))
    };
    let cert = read("ssl_cert_file", &config.ssl_cert_file)?;
    let key = read("ssl_key_file", &config.ssl_key_file)?;
    let ca = read("ssl_ca_file", &config.ssl_ca_file)?;
    Ok(Some(
        tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(ca))
            .identity(tonic::transport::Identity::from_pem(cert, key)),
    ))
}

/// The bearer token of `admin_token_file`, trimmed; `None` when unset.
pub fn admin_token(config: &Config) -> anyhow::Result<Option<String>> {
    use anyhow::Context;
    let path = config.admin_token_file.trim();
    if path.is_empty() {
        return Ok(None);
    }
    let token = std::fs::read_to_string(path)
        .with_context(|| format!("setting `admin_token_file`: read {path}"))?;
    let token = token.trim().to_string();
    anyhow::ensure!(
        token.len() >= 16,
        "setting `admin_token_file`: the token in {path} is shorter than 16 characters"
    );
    Ok(Some(token))
}

/// Constant-time comparison of a presented token with the configured one.
pub fn token_matches(presented: &str, expected: &str) -> bool {
    use subtle::ConstantTimeEq;
    presented.len() == expected.len() && bool::from(presented.as_bytes().ct_eq(expected.as_bytes()))
}
