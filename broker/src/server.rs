//! The Kafka listener: accepts connections and runs one task per connection.
//!
//! A connection handles its requests in order and answers them in order, as Kafka does
//! (clients match responses to requests by order as well as by correlation id). A Produce
//! starts once the Produce before it is done with what later requests could observe: for
//! acks=all, its appends, not its wait for the ISR (see [`handlers::ordering`]), so up to
//! [`PIPELINED_REQUESTS`] of a client's produce requests wait for replication together,
//! each in its own task (a response being written never stalls or cancels a handler).
//! Any other request, and every request while a client quota is configured, starts only
//! once every earlier one is answered. Shutdown: the listener stops accepting, each
//! connection finishes and answers the requests it has started and closes when it would
//! wait for the next one.
//!
//! What a client can hold, and for how long (settings in docs/configuration.md):
//! - a connection slot: `max_connections` in all (at most half the open-files limit),
//!   `max_connections_per_ip` per address; a connection over a limit is accepted and
//!   closed at once, as Kafka does, so the client sees a close rather than a hang;
//! - time: `connections_max_idle_ms` between requests while none is pending (and to
//!   write a response), `request_read_timeout_ms` from a request's first byte to its last;
//! - memory: a request's bytes are counted in `queued_max_request_bytes` from its size
//!   prefix until its handler is done (for acks=all, after its ISR wait: a producer's
//!   connection can hold up to [`PIPELINED_REQUESTS`] requests, and at most
//!   [`per_connection_bytes`] of them, that long). Responses are not counted, except that a
//!   request started behind unanswered ones keeps [`REQUEST_CHARGE`] until its response is
//!   written; a connection holds at most one response that is not a Produce's at a time.
//!   A request waits for room before its body is read; nothing fails.
//!
//! Every line a client can provoke goes through one [`LogLimiter`] keyed by its address;
//! the metrics count every event.
//!
//! Listeners: one accept loop per Kafka listener (`listeners`), all sharing the limits
//! above. On an SSL or SASL_SSL listener the TLS handshake comes first, within
//! `request_read_timeout_ms`; a client that speaks plaintext to it fails the handshake and
//! is closed. On SASL listeners a connection must authenticate ([`auth`]) before any
//! request but ApiVersions, SaslHandshake and SaslAuthenticate.

mod auth;
mod limits;
mod quota;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt as _;
use futures::stream::FuturesOrdered;
use kafka_protocol::messages::ApiKey;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;
use tracing::{debug, info, warn};

use crate::broker::Broker;
use crate::config::SecurityProtocol;
use crate::handlers;
use crate::protocol::{self, DecodeError};
use crate::ratelimit::{LogLimiter, Verdict};
use crate::security::tls::{TlsAcceptor, TlsFiles};
use crate::security::{Caller, Principal};
use auth::{Gate, Session};
use limits::{ByteBudget, ConnectionLimits, Reservation};

/// Lines per peer address per [`LOG_INTERVAL`] for events a client can provoke.
const LOG_LINES_PER_PEER: u32 = 10;
/// Lines per [`LOG_INTERVAL`] over all peers.
const LOG_LINES_TOTAL: u32 = 100;
const LOG_INTERVAL: Duration = Duration::from_secs(60);
/// Peer addresses the log limiter remembers; beyond, only the total bound applies.
const LOG_PEERS_TRACKED: usize = 4096;
/// How long accept waits after a failure (EMFILE, mostly) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Pause before answering a failed SaslAuthenticate (Kafka's default).
const FAILED_AUTHENTICATION_DELAY: Duration = Duration::from_millis(100);
/// Read buffer per connection. Only the size prefix and small requests pass through it;
/// a body larger than the buffer is read straight into its own allocation.
const READ_BUFFER: usize = 1024;

/// One bound Kafka listener.
struct Bound {
    name: Arc<str>,
    protocol: SecurityProtocol,
    socket: TcpListener,
}

/// The bound Kafka listeners, ready to serve.
pub struct KafkaListeners {
    shared: Arc<Listener>,
    bound: Vec<Bound>,
    tls: Option<(Arc<TlsAcceptor>, TlsFiles)>,
}

/// Binds every Kafka listener and loads the TLS certificate if one is configured; an
/// error names the listener or setting.
pub async fn bind(broker: &Arc<Broker>) -> anyhow::Result<KafkaListeners> {
    let tls = match TlsFiles::from_config(&broker.config)? {
        Some(files) => {
            let config = files.load()?;
            Some((TlsAcceptor::new(config), files))
        }
        None => None,
    };
    let mut bound = Vec::new();
    for listener in &broker.listeners {
        let socket = TcpListener::bind(listener.bind).await.with_context(|| {
            format!(
                "bind the Kafka listener {} on {}",
                listener.name, listener.bind
            )
        })?;
        info!(listener = %listener.name, protocol = %listener.protocol, bind = %listener.bind,
            advertised = %format!("{}:{}", listener.advertised_host, listener.advertised_port),
            "Kafka listener bound");
        bound.push(Bound {
            name: listener.name.as_str().into(),
            protocol: listener.protocol,
            socket,
        });
    }
    Ok(KafkaListeners {
        shared: Arc::new(Listener::new(broker.clone())),
        bound,
        tls,
    })
}

impl KafkaListeners {
    /// Accepts connections on every listener until `cancel`; connection tasks go to
    /// `tracker`, so shutdown can wait for them.
    pub async fn run(self, cancel: CancellationToken, tracker: TaskTracker) {
        let mut loops = Vec::new();
        let acceptor = self.tls.as_ref().map(|(acceptor, _)| acceptor.clone());
        if let Some((acceptor, files)) = self.tls {
            loops.push(tokio::spawn(acceptor.watch(files, cancel.clone())));
        }
        for bound in self.bound {
            let tls = if bound.protocol.uses_tls() {
                acceptor.clone()
            } else {
                None
            };
            loops.push(tokio::spawn(accept_loop(
                self.shared.clone(),
                bound,
                tls,
                cancel.clone(),
                tracker.clone(),
            )));
        }
        for handle in loops {
            let _ = handle.await;
        }
    }
}

/// What every connection task shares.
struct Listener {
    broker: Arc<Broker>,
    limits: Arc<ConnectionLimits>,
    budget: Arc<ByteBudget>,
    log: LogLimiter<IpAddr>,
    idle: Duration,
    read_timeout: Duration,
}

impl Listener {
    fn new(broker: Arc<Broker>) -> Listener {
        let config = &broker.config;
        let max_connections = effective_max_connections(config.max_connections as u64);
        let overrides = config
            .connection_overrides()
            .unwrap_or_default()
            .into_iter()
            .map(|(ip, n)| (ip, n as usize))
            .collect();
        let limits = Arc::new(ConnectionLimits::new(
            max_connections as usize,
            config.max_connections_per_ip as usize,
            overrides,
        ));
        let budget = ByteBudget::new(
            config.queued_max_request_bytes as usize,
            broker.metrics.queued_request_bytes.clone(),
        );
        Listener {
            limits,
            budget,
            log: LogLimiter::new(
                LOG_LINES_PER_PEER,
                LOG_LINES_TOTAL,
                LOG_INTERVAL,
                LOG_PEERS_TRACKED,
                Instant::now(),
            ),
            idle: Duration::from_millis(config.connections_max_idle_ms as u64),
            read_timeout: Duration::from_millis(config.request_read_timeout_ms as u64),
            broker,
        }
    }

    /// Whether a line a client provoked may be logged; counts it as suppressed if not.
    fn may_log(&self, ip: IpAddr, event: &'static str) -> Option<u64> {
        match self.log.check(&ip, Instant::now()) {
            Verdict::Log { suppressed } => Some(suppressed),
            Verdict::Suppress => {
                self.broker
                    .metrics
                    .log_lines_suppressed
                    .with_label_values(&[event])
                    .inc();
                None
            }
        }
    }

    fn closed(&self, reason: &'static str) {
        self.broker
            .metrics
            .connections_closed
            .with_label_values(&[reason])
            .inc();
    }
}

/// `max_connections`, but never more than half the open-files limit: the other half
/// stays for segments and the broker's own clients, whatever the setting says.
fn effective_max_connections(configured: u64) -> u64 {
    // Raising is idempotent: by now main has raised it, and this reads the limit back.
    match crate::sys::raise_open_files_limit() {
        Ok((_, limit)) if configured > limit / 2 => {
            let capped = (limit / 2).max(1);
            warn!(
                max_connections = configured,
                open_files_limit = limit,
                capped,
                "max_connections is more than half the open-files limit; capped"
            );
            capped
        }
        _ => configured,
    }
}

async fn accept_loop(
    shared: Arc<Listener>,
    listener: Bound,
    tls: Option<Arc<TlsAcceptor>>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let unspecified = IpAddr::from([0, 0, 0, 0]);
    let name = listener.name.clone();
    let protocol = listener.protocol;
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.socket.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Usually EMFILE: back off instead of spinning, and do not log 10 lines
                // a second while it lasts.
                if let Some(suppressed) = shared.may_log(unspecified, "accept_failed") {
                    warn!(error = %e, suppressed, "accept failed; retrying in 100 ms");
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let slot = match shared.limits.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(refusal) => {
                let reason = refusal.label();
                shared
                    .broker
                    .metrics
                    .connections_rejected
                    .with_label_values(&[reason])
                    .inc();
                if let Some(suppressed) = shared.may_log(peer.ip(), "connection_rejected") {
                    warn!(%peer, limit = reason, suppressed, "closing new connection: over the connection limit");
                }
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let cancel = cancel.clone();
        let tls = tls.clone();
        let name = name.clone();
        let handler_tasks = tracker.clone();
        tracker.spawn(async move {
            let _open = OpenConnection::new(&shared.broker.metrics.connections);
            let caller = Caller::new(Principal::anonymous(), name, peer.ip());
            let ended = match tls {
                None => {
                    let session = Session::new(&shared.broker, protocol, caller);
                    connection(&shared, stream, peer, session, cancel, handler_tasks).await
                }
                Some(tls) => match handshake(&shared, &tls, stream, peer).await {
                    Some((stream, principal)) => {
                        let mut caller = caller;
                        if let Some(principal) = principal {
                            caller.principal = principal;
                        }
                        let session = Session::new(&shared.broker, protocol, caller);
                        connection(&shared, stream, peer, session, cancel, handler_tasks).await
                    }
                    None => Ok(()),
                },
            };
            if let Err(e) = ended {
                debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    info!(listener = %name, "stopped accepting Kafka connections");
}

/// The TLS handshake, within the read timeout, and the principal of the client's
/// certificate if it sent one. `None` when the handshake failed (logged and counted).
async fn handshake(
    shared: &Listener,
    tls: &TlsAcceptor,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
) -> Option<(
    tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    Option<Principal>,
)> {
    let accepted = tokio::time::timeout(shared.read_timeout, tls.acceptor().accept(stream)).await;
    let stream = match accepted {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            shared.closed("tls_handshake_failed");
            if let Some(suppressed) = shared.may_log(peer.ip(), "tls_handshake_failed") {
                warn!(%peer, error = %e, suppressed, "closing connection: TLS handshake failed");
            }
            return None;
        }
        Err(_) => {
            shared.closed("tls_handshake_timeout");
            if let Some(suppressed) = shared.may_log(peer.ip(), "tls_handshake_timeout") {
                warn!(%peer, suppressed, "closing connection: no TLS handshake within request_read_timeout_ms");
            }
            return None;
        }
    };
    let leaf = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first());
    let principal = match leaf.map(|leaf| shared.broker.security.certificate_principal(leaf)) {
        None => None,
        Some(Ok(principal)) => Some(principal),
        Some(Err(e)) => {
            shared.closed("tls_principal_refused");
            if let Some(suppressed) = shared.may_log(peer.ip(), "tls_principal_refused") {
                warn!(%peer, error = %e, suppressed, "closing connection: no principal for the client certificate");
            }
            return None;
        }
    };
    Some((stream, principal))
}

/// Counts an open connection in the gauge for as long as it lives, a handler panic
/// included.
struct OpenConnection<'a>(&'a prometheus::IntGauge);

impl<'a> OpenConnection<'a> {
    fn new(gauge: &'a prometheus::IntGauge) -> OpenConnection<'a> {
        gauge.inc();
        OpenConnection(gauge)
    }
}

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The next request's frame and the budget it holds, or why the connection ends.
enum Next {
    Frame(bytes::Bytes, Held),
    Close,
}

/// Waits for a request (at most the idle time), then reads it (at most the read timeout
/// from its first byte, once budget for it is granted: its size, at least `charge`,
/// counted in `connection` too).
async fn next_frame<S: AsyncRead + Unpin>(
    shared: &Listener,
    reader: &mut BufReader<S>,
    peer: SocketAddr,
    charge: usize,
    connection: &Arc<AtomicUsize>,
) -> std::io::Result<Next> {
    let max = shared.broker.config.max_request_bytes as usize;
    // Wait for a byte that is really there (fill_buf keeps it for the reads below), so the
    // read timeout starts at the request's first byte.
    match tokio::time::timeout(shared.idle, reader.fill_buf()).await {
        Err(_) => {
            debug!(%peer, "closing idle connection");
            shared.closed("idle");
            return Ok(Next::Close);
        }
        Ok(Ok([])) => return Ok(Next::Close),
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(e),
    }
    // One read timeout from the first byte to the last, not counting the wait for budget.
    let first_byte = tokio::time::Instant::now();
    let size = tokio::time::timeout(shared.read_timeout, protocol::read_frame_size(reader, max));
    let size = match size.await {
        Err(_) => return Ok(read_timed_out(shared, peer)),
        Ok(result) => result,
    };
    let size = match frame_or_close(shared, peer, size)? {
        Some(Some(size)) => size,
        Some(None) | None => return Ok(Next::Close),
    };
    let size_read_in = first_byte.elapsed();
    // A connection that waits this long for budget is closed like a slow one: the wait
    // must not outlive a client that gave up and reconnected.
    let bytes = (size + 4).max(charge);
    let reservation =
        match tokio::time::timeout(shared.read_timeout, shared.budget.reserve(bytes)).await {
            Ok(reservation) => Held::new(reservation, bytes, connection),
            Err(_) => return Ok(read_timed_out(shared, peer)),
        };
    let left = shared.read_timeout.saturating_sub(size_read_in);
    let body = tokio::time::timeout(left, protocol::read_frame_body(reader, size));
    let body = match body.await {
        Err(_) => return Ok(read_timed_out(shared, peer)),
        Ok(result) => result,
    };
    Ok(match frame_or_close(shared, peer, body)? {
        Some(frame) => Next::Frame(frame, reservation),
        None => Next::Close,
    })
}

fn read_timed_out(shared: &Listener, peer: SocketAddr) -> Next {
    shared.closed("request_read_timeout");
    if let Some(suppressed) = shared.may_log(peer.ip(), "request_read_timeout") {
        warn!(%peer, suppressed, "closing connection: request not received within request_read_timeout_ms");
    }
    Next::Close
}

/// The value read, or `None` when the frame was bad (logged and counted) or the peer
/// went away.
fn frame_or_close<T>(
    shared: &Listener,
    peer: SocketAddr,
    read: Result<T, protocol::FrameError>,
) -> std::io::Result<Option<T>> {
    match read {
        Ok(value) => Ok(Some(value)),
        Err(protocol::FrameError::Io(e)) => {
            debug!(%peer, error = %e, "connection closed by the peer");
            Ok(None)
        }
        Err(e) => {
            shared
                .broker
                .metrics
                .error("(frame)", kafka_protocol::ResponseError::InvalidRequest);
            if let Some(suppressed) = shared.may_log(peer.ip(), "bad_frame") {
                warn!(%peer, error = %e, suppressed, "closing connection: bad frame");
            }
            Ok(None)
        }
    }
}

/// Writes one encoded response frame straight to the socket (it is one buffer already;
/// a BufWriter would copy small ones and hold 64 KiB per connection for nothing). A
/// client that does not read it within the idle time loses the connection.
async fn write_frame<S: AsyncWrite + Unpin>(
    shared: &Listener,
    writer: &mut S,
    frame: &[u8],
) -> std::io::Result<()> {
    let write = async {
        writer.write_all(frame).await?;
        // TLS streams hold the last record until flushed; TCP's flush does nothing.
        writer.flush().await
    };
    match tokio::time::timeout(shared.idle, write).await {
        Ok(result) => result,
        Err(_) => {
            shared.closed("write_timeout");
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "response not read within connections_max_idle_ms",
            ))
        }
    }
}

/// Requests a connection may have started and not yet answered. A request is started
/// once the one before it is done with its ordered part (see [`handlers::ordering`]): for
/// a Produce with acks=all, its appends; so up to this many produce requests of one
/// client wait for their ISR, or their diskless flush, together.
///
/// Java's producer and idempotent librdkafka keep at most 5 requests in flight per
/// connection and grow their batches while they wait; a plain librdkafka producer (no
/// idempotence, confluent-kafka's default) and kafkajs do not cap, and send a request
/// every `linger.ms` (5 ms) however long the answers take. A diskless produce waits for
/// its flush (`diskless_append_interval_ms`, 250 ms, plus the PUT and the commit): with 5
/// such requests started per flush, each of them 5 ms of records, the client's backlog
/// grew without bound (0.35 MiB/s for a producer offering 4 MiB/s over three brokers,
/// bench/diskless.py), and 64 still left half of it waiting: such a client sends one
/// request per partition batch, so a flush's worth is partitions × interval / linger.
/// Memory stays bounded: a request started behind others holds at least
/// [`REQUEST_CHARGE`] of the shared request budget (`queued_max_request_bytes`) until its
/// response is written, and a connection starts no more once its started requests hold
/// [`per_connection_bytes`] (so one producer waiting for a slow ISR cannot take the whole
/// budget from every other connection).
const PIPELINED_REQUESTS: usize = 1024;

/// What a request started behind unanswered ones holds of the request budget at least,
/// from its first byte until its response is written: its task and its response (which
/// may be larger than the request: an error message per partition) cost memory too, so
/// tiny requests pipelined by the thousand, or answered and left unread, stay bounded
/// (512 MiB of budget is at most 131,072 such requests at a time).
const REQUEST_CHARGE: usize = 4096;

/// Bytes one connection's started requests may hold of the request budget before it
/// starts no more of them: a sixteenth of `queued_max_request_bytes`, at least one
/// request of `max_request_bytes`.
fn per_connection_bytes(config: &crate::config::Config) -> usize {
    let queued = usize::try_from(config.queued_max_request_bytes).unwrap_or(usize::MAX);
    let one = usize::try_from(config.max_request_bytes).unwrap_or(usize::MAX);
    (queued / 16).max(one)
}

/// A request's share of the request budget, counted in its connection's total too.
struct Held {
    reservation: Reservation,
    connection: Arc<AtomicUsize>,
    bytes: usize,
}

impl Held {
    fn new(reservation: Reservation, bytes: usize, connection: &Arc<AtomicUsize>) -> Held {
        connection.fetch_add(bytes, Ordering::Relaxed);
        Held {
            reservation,
            connection: Arc::clone(connection),
            bytes,
        }
    }

    /// Gives back all but `keep` bytes.
    fn shrink_to(&mut self, keep: usize) {
        if self.bytes > keep {
            self.reservation.shrink_to(keep);
            self.connection
                .fetch_sub(self.bytes - keep, Ordering::Relaxed);
            self.bytes = keep;
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.connection.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// A request's handling, finished: what [`answer`] writes and counts.
struct Handled {
    api: &'static str,
    version: i16,
    started: Instant,
    /// The encoded response; `None` for no response (Produce with acks=0).
    encoded: Option<anyhow::Result<bytes::Bytes>>,
    throttle: Duration,
    /// What the request still holds of the budget until its response is written.
    _held: Held,
}

/// A started request's handling: its own task, so that writing earlier responses (or the
/// connection closing) never stalls or cancels a handler half way through an append.
type Handling = tokio::task::JoinHandle<Handled>;

async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Listener,
    stream: S,
    peer: SocketAddr,
    mut session: Session,
    cancel: CancellationToken,
    // Request handlers run as tasks of their own (see [`Handling`]); tracked, so shutdown
    // waits for one still appending even when its connection has already ended.
    handler_tasks: TaskTracker,
) -> std::io::Result<()> {
    let broker = &shared.broker;
    // A response may go out while the next request is read, so the halves are apart.
    let (read_half, mut writer) = tokio::io::split(stream);
    let mut reader = BufReader::with_capacity(READ_BUFFER, read_half);
    // Started requests, answered in request order.
    let mut pending: FuturesOrdered<Handling> = FuturesOrdered::new();
    // Budget bytes this connection's started requests hold (see [`Held`]).
    let held = Arc::new(AtomicUsize::new(0));
    let held_at_most = per_connection_bytes(&broker.config);
    let charge_limit = usize::try_from(broker.config.queued_max_request_bytes).unwrap_or(0);
    loop {
        // With quotas a connection is muted after each response (KIP-219), which needs
        // the responses one at a time; quotas can be set while the connection is open.
        let pipelined = if broker.security.quotas.any() {
            1
        } else {
            PIPELINED_REQUESTS
        };
        // Wait for the next request's first byte while answering started ones. The idle
        // time counts only while nothing is pending (waiting for an ISR or writing a
        // response is not idleness); the request itself is read once its first byte is
        // here, with no response written meanwhile, so write time is not counted against
        // the read timeout either.
        let mut idle_since = tokio::time::Instant::now();
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => {
                    // Finish what was started, then close before the next request.
                    answer_all(shared, &mut writer, &mut pending, peer, &cancel).await?;
                    return Ok(());
                }
                Some(handled) = pending.next() => {
                    if !answer(shared, &mut writer, handled, peer, &cancel).await? {
                        return Ok(());
                    }
                    idle_since = tokio::time::Instant::now();
                }
                // fill_buf is cancel safe: a byte it read stays buffered for next_frame.
                arrived = async { reader.fill_buf().await.map(|bytes| !bytes.is_empty()) },
                    if pending.is_empty()
                        || (pending.len() < pipelined
                            && held.load(Ordering::Relaxed) < held_at_most) => {
                    match arrived {
                        Ok(true) => break,
                        // The client closed its side: answer what it sent, then close.
                        Ok(false) => {
                            answer_all(shared, &mut writer, &mut pending, peer, &cancel).await?;
                            return Ok(());
                        }
                        Err(e) => return Err(e),
                    }
                }
                _ = tokio::time::sleep_until(idle_since + shared.idle), if pending.is_empty() => {
                    debug!(%peer, "closing idle connection");
                    shared.closed("idle");
                    return Ok(());
                }
            }
        }
        // A request started behind unanswered ones holds at least REQUEST_CHARGE until
        // its response is written.
        let charge = if pending.is_empty() {
            0
        } else {
            REQUEST_CHARGE.min(charge_limit)
        };
        // Shutdown is noticed while a request is read too: a half-read frame is dropped
        // with the connection, and nothing new starts once shutdown began.
        let next = tokio::select! {
            biased;
            _ = cancel.cancelled() => {
                answer_all(shared, &mut writer, &mut pending, peer, &cancel).await?;
                return Ok(());
            }
            next = next_frame(shared, &mut reader, peer, charge, &held) => next?,
        };
        let (frame, request_bytes) = match next {
            Next::Frame(frame, reservation) => (frame, reservation),
            Next::Close => {
                answer_all(shared, &mut writer, &mut pending, peer, &cancel).await?;
                return Ok(());
            }
        };
        let started = Instant::now();
        let frame_len = frame.len();
        let request = match protocol::decode_request(frame) {
            Ok(request) => request,
            Err(DecodeError::UnsupportedVersion {
                api_key: ApiKey::ApiVersions,
                version,
                correlation_id,
            }) => {
                debug!(%peer, version, "ApiVersions version too new; answering per KIP-511");
                let bytes = protocol::api_versions_fallback(correlation_id)
                    .map_err(std::io::Error::other)?;
                if !answer_all(shared, &mut writer, &mut pending, peer, &cancel).await? {
                    return Ok(());
                }
                write_frame(shared, &mut writer, &bytes).await?;
                continue;
            }
            Err(e) => {
                broker
                    .metrics
                    .error("(decode)", kafka_protocol::ResponseError::InvalidRequest);
                if let Some(suppressed) = shared.may_log(peer.ip(), "undecodable_request") {
                    warn!(%peer, error = %e, suppressed, "closing connection: undecodable request");
                }
                answer_all(shared, &mut writer, &mut pending, peer, &cancel).await?;
                return Ok(());
            }
        };
        let api_key = request.api_key;
        let version = request.version;
        let correlation_id = request.header.correlation_id;
        // Only a Produce starts behind unanswered Produces: any other request (a Fetch or
        // ListOffsets that must see their records, a SASL re-authentication) starts once
        // every earlier one is answered, as Kafka's one-request-at-a-time muting would
        // have it; so is every request while a quota applies. This also bounds what a
        // connection holds outside the request budget to Produce responses.
        let drain = api_key != ApiKey::Produce || broker.security.quotas.any();
        if drain && !answer_all(shared, &mut writer, &mut pending, peer, &cancel).await? {
            return Ok(());
        }
        let request = match session.admit(request).await {
            Gate::Handle(request) => request,
            Gate::Answer(response) => {
                let bytes = protocol::encode_response(api_key, version, correlation_id, &response)
                    .map_err(std::io::Error::other)?;
                if !answer_all(shared, &mut writer, &mut pending, peer, &cancel).await? {
                    return Ok(());
                }
                write_frame(shared, &mut writer, &bytes).await?;
                continue;
            }
            Gate::AnswerAndClose(response) => {
                if !answer_all(shared, &mut writer, &mut pending, peer, &cancel).await? {
                    return Ok(());
                }
                let failed_login = api_key == ApiKey::SaslAuthenticate;
                // A failed authentication is answered after a pause (Kafka's
                // connection.failed.authentication.delay.ms, 100 ms), which slows password
                // guessing, and the connection is closed a pause later: a client that
                // reads the answer and the close together may drop the answer
                // (kafka-python does).
                if failed_login {
                    tokio::time::sleep(FAILED_AUTHENTICATION_DELAY).await;
                }
                let bytes = protocol::encode_response(api_key, version, correlation_id, &response)
                    .map_err(std::io::Error::other)?;
                write_frame(shared, &mut writer, &bytes).await?;
                if failed_login {
                    tokio::time::sleep(FAILED_AUTHENTICATION_DELAY).await;
                }
                shared.closed("authentication_failed");
                return Ok(());
            }
            Gate::Close(reason) => {
                if !answer_all(shared, &mut writer, &mut pending, peer, &cancel).await? {
                    return Ok(());
                }
                shared.closed(reason);
                if let Some(suppressed) = shared.may_log(peer.ip(), reason) {
                    warn!(%peer, api = api_name(api_key), reason, suppressed, "closing connection");
                }
                return Ok(());
            }
        };
        let api = api_name(api_key);
        let span = tracing::trace_span!(target: crate::telemetry::TRACE, "kafka.request",
            otel.name = api, otel.kind = "server", kafka.api = api, kafka.version = version,
            kafka.client_id = request.header.client_id.as_ref().map_or("", |c| c.as_str()),
            kafka.correlation_id = correlation_id, net.peer = %peer);
        let quota_client_id = broker.security.quotas.any().then(|| {
            request
                .header
                .client_id
                .as_ref()
                .map_or(String::new(), |c| c.to_string())
        });
        let caller = session.caller().clone();
        let owned_broker = Arc::clone(broker);
        let handling = async move {
            let broker = &owned_broker;
            let handling = Instant::now();
            let mut response = handlers::handle(broker, request, &caller)
                .instrument(span.clone())
                .await;
            let throttle = match &quota_client_id {
                Some(client_id) => quota::throttle(
                    broker,
                    &caller,
                    client_id,
                    frame_len,
                    handling.elapsed(),
                    api_key == ApiKey::Produce,
                    response.as_mut(),
                ),
                None => Duration::ZERO,
            };
            // The request is done with. Its bytes go back to the shared budget, except the
            // charge of a request started behind others, kept until its response is
            // written: a client slow to read its responses would otherwise stall every
            // other connection, while pipelined responses left unread are bounded. One
            // connection holds at most `pipelined` responses, and more than one only when
            // they are all Produce responses.
            let mut request_bytes = request_bytes;
            request_bytes.shrink_to(charge);
            // The records a Fetch response shares with `response` are dropped with it, so
            // the encoded frame is the only copy held while the client reads it.
            let encoded = response.map(|response| {
                span.in_scope(|| {
                    protocol::encode_response(api_key, version, correlation_id, &response)
                })
            });
            Handled {
                api,
                version,
                started,
                encoded,
                throttle,
                _held: request_bytes,
            }
        };
        let (ordered_done, mut ordered) = tokio::sync::oneshot::channel();
        // The task-local the handler reports its ordered part through goes with it.
        pending.push_back(handler_tasks.spawn(handlers::ordering::scope(ordered_done, handling)));
        // The next request starts only once this one's ordered part is done; responses
        // that complete meanwhile go out.
        loop {
            tokio::select! {
                biased;
                _ = &mut ordered => break,
                Some(handled) = pending.next() => {
                    if !answer(shared, &mut writer, handled, peer, &cancel).await? {
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// Writes a finished request's response, counts it, and mutes the connection for its
/// throttle time. False if the connection should close.
async fn answer<W: AsyncWrite + Unpin>(
    shared: &Listener,
    writer: &mut W,
    handled: Result<Handled, tokio::task::JoinError>,
    peer: SocketAddr,
    cancel: &CancellationToken,
) -> std::io::Result<bool> {
    let broker = &shared.broker;
    let handled = match handled {
        Ok(handled) => handled,
        Err(e) => {
            // A handler panicked: its response is lost, and the client matches responses
            // by order, so the connection cannot go on.
            warn!(%peer, error = %e, "closing connection: a request's handler failed");
            return Ok(false);
        }
    };
    match handled.encoded {
        Some(Ok(bytes)) => write_frame(shared, writer, &bytes).await?,
        Some(Err(e)) => {
            warn!(%peer, api = handled.api, version = handled.version, error = %e,
                "closing connection: could not encode a response");
            return Ok(false);
        }
        None => {}
    }
    broker
        .metrics
        .requests
        .with_label_values(&[handled.api])
        .inc();
    broker
        .metrics
        .request_latency
        .with_label_values(&[handled.api])
        .observe(handled.started.elapsed().as_secs_f64());
    // KIP-219: the response went out at once; the connection is muted for the
    // throttle time, so a client that ignores throttle_time_ms is held back anyway.
    if !handled.throttle.is_zero() {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(false),
            _ = tokio::time::sleep(handled.throttle) => {}
        }
    }
    Ok(true)
}

/// Waits for every started request and writes their responses in order. False if the
/// connection should close.
async fn answer_all<W: AsyncWrite + Unpin>(
    shared: &Listener,
    writer: &mut W,
    pending: &mut FuturesOrdered<Handling>,
    peer: SocketAddr,
    cancel: &CancellationToken,
) -> std::io::Result<bool> {
    while let Some(handled) = pending.next().await {
        if !answer(shared, writer, handled, peer, cancel).await? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A static name per API for metric labels (from the supported-API table).
pub fn api_name(api_key: ApiKey) -> &'static str {
    crate::protocol::versions::name(api_key)
}
