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

use futures::Stream;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use super::tls::{TlsAcceptor, TlsFiles};
use crate::config::{ClientAuth, Config};

/// Handshakes under way at once per gRPC listener; a connection over it is closed.
const HANDSHAKES_AT_ONCE: usize = 256;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

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

/// TLS connections of `listener`. Each handshake runs in its own task, at most
/// [`HANDSHAKES_AT_ONCE`] at a time and each for at most [`HANDSHAKE_TIMEOUT`]; a
/// connection arriving while every slot is taken is closed at once, so idle connections
/// cannot stop the listener from accepting (they hold a slot for the timeout at most).
/// Failed handshakes are dropped. The accept task ends when tonic drops the stream.
pub fn incoming(
    listener: TcpListener,
    acceptor: Arc<TlsAcceptor>,
) -> impl Stream<Item = Result<TlsStream<TcpStream>, std::io::Error>> {
    let (sender, receiver) = tokio::sync::mpsc::channel(HANDSHAKES_AT_ONCE);
    let slots = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES_AT_ONCE));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = sender.closed() => return,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::debug!(error = %e, "accept failed on a gRPC listener");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tracing::debug!(%peer, "closing a gRPC connection: too many TLS handshakes under way");
                continue;
            };
            let _ = stream.set_nodelay(true);
            let tls = acceptor.acceptor();
            let sender = sender.clone();
            tokio::spawn(async move {
                let _slot = slot;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        let _ = sender.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "gRPC TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "gRPC TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(receiver)
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
