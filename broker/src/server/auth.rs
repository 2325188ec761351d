//! A connection's authentication: SaslHandshake and SaslAuthenticate (v0–v2), and the
//! gate every other request passes.
//!
//! On a SASL listener a connection may send ApiVersions, SaslHandshake and
//! SaslAuthenticate before it has authenticated; anything else closes it, as Kafka does.
//! A failed authentication is answered (SASL_AUTHENTICATION_FAILED, the same message for
//! an unknown user and a wrong password) and the connection closed.
//!
//! Re-authentication (KIP-368): with `connections_max_reauth_ms` (or a token that
//! expires) the SaslAuthenticate response carries the session lifetime; the client
//! authenticates again on the same connection before it ends, as the same principal. A
//! request after the end, other than a new handshake, closes the connection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    RequestKind, ResponseKind, SaslAuthenticateRequest, SaslAuthenticateResponse,
    SaslHandshakeRequest, SaslHandshakeResponse,
};

use crate::broker::Broker;
use crate::config::{SaslMechanism, SecurityProtocol};
use crate::handlers::str_bytes;
use crate::protocol::Request;
use crate::security::scram::{ScramMechanism, ScramServer};
use crate::security::{Caller, Principal, Security, plain};
use crate::sys::Clock;
use crate::telemetry::Metrics;

/// What the connection does with a request.
pub enum Gate {
    /// Pass it to the handlers.
    Handle(Request),
    /// Answer it here and go on.
    Answer(ResponseKind),
    /// Answer it here, then close the connection.
    AnswerAndClose(ResponseKind),
    /// Close the connection without an answer; the reason is a metric label.
    Close(&'static str),
}

enum State {
    /// No exchange under way.
    Idle,
    /// SaslHandshake chose a mechanism; SaslAuthenticate comes next.
    Chosen(SaslMechanism),
    /// SCRAM: the server-first message went out; the client-final is next.
    ScramFinal(Box<ScramServer>, SaslMechanism),
}

pub struct Session {
    security: Arc<Security>,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    sasl: bool,
    caller: Caller,
    state: State,
    authenticated: bool,
    /// The mechanism of the first authentication: re-authentication must use it (KIP-368).
    mechanism: Option<SaslMechanism>,
    /// When the current authentication ends (KIP-368); `None` never.
    expires: Option<Instant>,
}

impl Session {
    pub fn new(broker: &Broker, protocol: SecurityProtocol, caller: Caller) -> Session {
        Session {
            security: broker.security.clone(),
            metrics: broker.metrics.clone(),
            clock: broker.clock.clone(),
            sasl: protocol.uses_sasl(),
            caller,
            state: State::Idle,
            authenticated: !protocol.uses_sasl(),
            mechanism: None,
            expires: None,
        }
    }

    pub fn caller(&self) -> &Caller {
        &self.caller
    }

    pub async fn admit(&mut self, request: Request) -> Gate {
        let version = request.version;
        let request = match request.body {
            RequestKind::SaslHandshake(_) if version == 0 => {
                return Gate::AnswerAndClose(ResponseKind::SaslHandshake(
                    SaslHandshakeResponse::default()
                        .with_error_code(ResponseError::UnsupportedVersion.code())
                        .with_mechanisms(self.mechanism_names()),
                ));
            }
            RequestKind::SaslHandshake(r) => return self.handshake(r),
            RequestKind::SaslAuthenticate(r) => return self.authenticate(r, version).await,
            body => Request { body, ..request },
        };
        if !self.sasl {
            return Gate::Handle(request);
        }
        let expired = self.expires.is_some_and(|at| Instant::now() >= at);
        if matches!(request.body, RequestKind::ApiVersions(_)) && !expired {
            return Gate::Handle(request);
        }
        if !self.authenticated {
            return Gate::Close("unauthenticated_request");
        }
        if !matches!(self.state, State::Idle) {
            return Gate::Close("illegal_sasl_state");
        }
        if expired {
            return Gate::Close("session_expired");
        }
        Gate::Handle(request)
    }

    fn mechanism_names(&self) -> Vec<kafka_protocol::protocol::StrBytes> {
        self.security
            .mechanisms()
            .iter()
            .map(|m| str_bytes(m.name()))
            .collect()
    }

    fn handshake(&mut self, request: SaslHandshakeRequest) -> Gate {
        let response = SaslHandshakeResponse::default().with_mechanisms(self.mechanism_names());
        if !self.sasl || !matches!(self.state, State::Idle) {
            // Kafka answers a handshake on a listener without SASL, or in the middle of an
            // exchange, with ILLEGAL_SASL_STATE; in the middle it also closes.
            let response = ResponseKind::SaslHandshake(
                response.with_error_code(ResponseError::IllegalSaslState.code()),
            );
            return if self.sasl {
                Gate::AnswerAndClose(response)
            } else {
                Gate::Answer(response)
            };
        }
        let chosen = SaslMechanism::parse(&request.mechanism)
            .filter(|m| self.security.mechanisms().contains(m))
            // KIP-368: a re-authentication keeps the first mechanism.
            .filter(|m| self.mechanism.is_none_or(|first| first == *m));
        match chosen {
            Some(mechanism) => {
                self.state = State::Chosen(mechanism);
                Gate::Answer(ResponseKind::SaslHandshake(response))
            }
            None => Gate::AnswerAndClose(ResponseKind::SaslHandshake(
                response.with_error_code(ResponseError::UnsupportedSaslMechanism.code()),
            )),
        }
    }

    async fn authenticate(&mut self, request: SaslAuthenticateRequest, version: i16) -> Gate {
        let token = request.auth_bytes;
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Idle => Gate::AnswerAndClose(ResponseKind::SaslAuthenticate(
                SaslAuthenticateResponse::default()
                    .with_error_code(ResponseError::IllegalSaslState.code())
                    .with_error_message(Some(str_bytes(
                        "SaslAuthenticate must follow a SaslHandshake",
                    ))),
            )),
            State::Chosen(
                mechanism @ (SaslMechanism::ScramSha256 | SaslMechanism::ScramSha512),
            ) => {
                let scram = match mechanism {
                    SaslMechanism::ScramSha256 => ScramMechanism::Sha256,
                    _ => ScramMechanism::Sha512,
                };
                let mut server = ScramServer::new(scram);
                let first = server.client_first(&token).and_then(|user| {
                    let credential = self.security.credentials.get(&user, scram);
                    server.server_first(credential.as_ref())
                });
                match first {
                    Ok(server_first) => {
                        self.state = State::ScramFinal(Box::new(server), mechanism);
                        Gate::Answer(ResponseKind::SaslAuthenticate(
                            SaslAuthenticateResponse::default()
                                .with_auth_bytes(Bytes::from(server_first)),
                        ))
                    }
                    Err(e) => self.failed(mechanism, &e.to_string()),
                }
            }
            State::ScramFinal(mut server, mechanism) => match server.client_final(&token) {
                Ok(outcome) => self.succeeded(
                    mechanism,
                    Principal::user(outcome.username),
                    Bytes::from(outcome.server_final),
                    None,
                    version,
                ),
                Err(e) => self.failed(mechanism, &e.to_string()),
            },
            State::Chosen(SaslMechanism::Plain) => {
                let login = match plain::parse(&token) {
                    Ok(login) => login,
                    Err(e) => return self.failed(SaslMechanism::Plain, &e.to_string()),
                };
                // PBKDF2 at the credential's iterations: milliseconds of CPU, kept off the
                // async workers.
                let security = self.security.clone();
                let user = login.username.clone();
                let verified = tokio::task::spawn_blocking(move || {
                    security
                        .credentials
                        .verify_password(&login.username, &login.password)
                })
                .await
                .unwrap_or(false);
                if verified {
                    self.succeeded(
                        SaslMechanism::Plain,
                        Principal::user(user),
                        Bytes::new(),
                        None,
                        version,
                    )
                } else {
                    self.failed(SaslMechanism::Plain, "invalid username or password")
                }
            }
            State::Chosen(SaslMechanism::OAuthBearer) => {
                match self.security.validate_oauth_token(&token).await {
                    Ok((principal, expires_at_ms)) => self.succeeded(
                        SaslMechanism::OAuthBearer,
                        principal,
                        Bytes::new(),
                        expires_at_ms,
                        version,
                    ),
                    Err(e) => self.failed(SaslMechanism::OAuthBearer, &e.to_string()),
                }
            }
        }
    }

    /// The client authenticated as `principal`. `token_expires_at_ms` (Unix ms) bounds the
    /// session besides `connections_max_reauth_ms`.
    fn succeeded(
        &mut self,
        mechanism: SaslMechanism,
        principal: Principal,
        auth_bytes: Bytes,
        token_expires_at_ms: Option<i64>,
        version: i16,
    ) -> Gate {
        if self.authenticated && principal != self.caller.principal {
            // KIP-368: re-authentication may not change who the connection is.
            self.count(mechanism, "failed");
            return Gate::Close("reauthentication_changed_principal");
        }
        self.count(mechanism, "ok");
        self.mechanism = Some(mechanism);
        let mut lifetime_ms = self.security.reauth_ms();
        if let Some(at) = token_expires_at_ms {
            // A token inside its clock-skew grace after `exp` gets a session of at least
            // a second: 0 would tell the client "no expiry", and a few milliseconds would
            // make it re-authenticate in a loop (librdkafka starts at 90% of the lifetime).
            let left = (at - self.clock.now_ms()).max(1000);
            lifetime_ms = Some(lifetime_ms.map_or(left, |l| l.min(left)));
        }
        self.expires = lifetime_ms.map(|ms| Instant::now() + Duration::from_millis(ms as u64));
        self.caller.principal = principal;
        self.authenticated = true;
        let mut response = SaslAuthenticateResponse::default().with_auth_bytes(auth_bytes);
        if version >= 1 {
            response = response.with_session_lifetime_ms(lifetime_ms.unwrap_or(0));
        }
        Gate::Answer(ResponseKind::SaslAuthenticate(response))
    }

    /// `reason` is for the broker's debug log only: the client gets Kafka's one message,
    /// so it cannot tell an unknown user from a wrong password.
    fn failed(&mut self, mechanism: SaslMechanism, reason: &str) -> Gate {
        self.count(mechanism, "failed");
        tracing::debug!(peer = %self.caller.address, mechanism = mechanism.name(), reason,
            "SASL authentication failed");
        Gate::AnswerAndClose(ResponseKind::SaslAuthenticate(
            SaslAuthenticateResponse::default()
                .with_error_code(ResponseError::SaslAuthenticationFailed.code())
                .with_error_message(Some(str_bytes(format!(
                    "Authentication failed during authentication due to invalid credentials with SASL mechanism {}",
                    mechanism.name()
                )))),
        ))
    }

    fn count(&self, mechanism: SaslMechanism, result: &str) {
        self.metrics
            .authentications
            .with_label_values(&[&self.caller.listener, mechanism.name(), result])
            .inc();
    }
}
