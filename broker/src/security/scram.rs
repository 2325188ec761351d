//! SCRAM-SHA-256 and SCRAM-SHA-512, the server side (RFC 5802, RFC 7677), as Kafka speaks
//! them inside SaslAuthenticate. [`ScramServer`] is a pure state machine over the bytes of
//! one exchange on one connection; [`ScramCredential`] is what the broker stores for a
//! user: a salt, an iteration count and two keys derived from the password, never the
//! password itself.
//!
//! ```text
//!  client                                   ScramServer
//!  client-first-message  ───────────────►   client_first()   → user name
//!                                           (the caller looks up the user's credential)
//!                        ◄───────────────   server_first(credential)
//!  client-final-message  ───────────────►   client_final()   → server-final-message,
//!                        ◄───────────────                       or AuthenticationFailed
//! ```
//!
//! Kafka's profile of SCRAM, which this module follows:
//! - No channel binding: a client asking for it (`p=`) is refused; `n` and `y` (the client
//!   could bind but believes the server cannot) are accepted.
//! - The authorization id, if sent, must be the user name: a user cannot act as another.
//! - The only client-first extension Kafka knows is `tokenauth`, which asks to log in with
//!   a delegation token. Strata has no delegation tokens, so `tokenauth=true` is refused,
//!   as is any other extension and the mandatory-extension attribute `m=`. Extensions in
//!   the client-final-message are syntax-checked and ignored (RFC 5802 §7): the proof
//!   covers them, and none changes how the server verifies.
//! - User names are decoded from `saslname` (`=2C` is `,`, `=3D` is `=`) and not
//!   SASLprep-normalized; Kafka does not normalize either, so a name matches the credential
//!   stored under the same bytes.
//!
//! Invariants:
//! - Messages are network input: every parse is bounded by [`MAX_MESSAGE_LEN`], and no
//!   input makes a method panic. Any error ends the exchange: later calls fail too.
//! - An unknown user cannot be told from a known one by the exchange: the server answers
//!   with a salt derived from the user name under a per-process random key, the minimum
//!   iteration count, and then fails the client-final-message with the same
//!   [`ScramError::AuthenticationFailed`] as a wrong password, after the same work.
//! - Proofs and keys are compared in constant time, and no error or `Debug` output
//!   carries a password, proof, or key.
//!
//! The stored form of a credential ([`ScramCredential::to_record`], versioned JSON) is drawn
//! as a table in `scram/record.rs`.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::OnceLock;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::{digest, hmac, pbkdf2};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use subtle::{Choice, ConstantTimeEq};

/// The longest SCRAM message accepted. Real ones are under 300 bytes (a SHA-512 proof is
/// 88 base64 characters); the cap bounds the work and memory a client can ask for.
pub const MAX_MESSAGE_LEN: usize = 4096;

/// Random bytes in a server nonce (RFC 5802 asks for a fresh, unpredictable nonce; 24
/// bytes is 192 bits, 32 base64 characters).
const SERVER_NONCE_BYTES: usize = 24;

/// Salt length of credentials this broker generates. The unknown-user salt has the same
/// length so it looks like one.
const SALT_BYTES: usize = 32;

const CLIENT_FIRST: &str = "client-first-message";
const SERVER_FIRST: &str = "server-first-message";
const CLIENT_FINAL: &str = "client-final-message";

/// A SCRAM hash, as a SASL mechanism and as Kafka's `ScramMechanism` in
/// DescribeUserScramCredentials and AlterUserScramCredentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScramMechanism {
    Sha256,
    Sha512,
}

impl ScramMechanism {
    /// Kafka's lower bound for AlterUserScramCredentials (and RFC 7677's recommendation).
    pub const MIN_ITERATIONS: u32 = 4096;
    /// Kafka's upper bound for AlterUserScramCredentials. It also bounds the PBKDF2 work
    /// one SASL/PLAIN login against a SCRAM credential costs.
    pub const MAX_ITERATIONS: u32 = 16384;

    /// The SASL mechanism name, as in SaslHandshake.
    pub fn name(self) -> &'static str {
        match self {
            ScramMechanism::Sha256 => "SCRAM-SHA-256",
            ScramMechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    /// The mechanism with this SASL name; names are case-sensitive, as in Kafka.
    pub fn from_name(name: &str) -> Option<ScramMechanism> {
        match name {
            "SCRAM-SHA-256" => Some(ScramMechanism::Sha256),
            "SCRAM-SHA-512" => Some(ScramMechanism::Sha512),
            _ => None,
        }
    }

    /// Kafka's `ScramMechanism` type byte (0 is UNKNOWN and has no value here).
    pub fn kafka_type(self) -> i8 {
        match self {
            ScramMechanism::Sha256 => 1,
            ScramMechanism::Sha512 => 2,
        }
    }

    pub fn from_kafka_type(kafka_type: i8) -> Option<ScramMechanism> {
        match kafka_type {
            1 => Some(ScramMechanism::Sha256),
            2 => Some(ScramMechanism::Sha512),
            _ => None,
        }
    }

    /// Length of the hash output, hence of SaltedPassword, the keys and the proof.
    fn key_len(self) -> usize {
        self.digest().output_len()
    }

    fn digest(self) -> &'static digest::Algorithm {
        match self {
            ScramMechanism::Sha256 => &digest::SHA256,
            ScramMechanism::Sha512 => &digest::SHA512,
        }
    }

    fn hmac(self) -> hmac::Algorithm {
        match self {
            ScramMechanism::Sha256 => hmac::HMAC_SHA256,
            ScramMechanism::Sha512 => hmac::HMAC_SHA512,
        }
    }

    fn pbkdf2(self) -> pbkdf2::Algorithm {
        match self {
            ScramMechanism::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            ScramMechanism::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }

    fn hmac_sign(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        hmac::sign(&hmac::Key::new(self.hmac(), key), data)
            .as_ref()
            .to_vec()
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        digest::digest(self.digest(), data).as_ref().to_vec()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScramError {
    #[error("the SCRAM {message} is longer than {max} bytes")]
    TooLong { message: &'static str, max: usize },
    #[error("the SCRAM {message} is malformed: {reason}")]
    Malformed {
        message: &'static str,
        reason: &'static str,
    },
    #[error("the client asked for SCRAM channel binding, which Kafka does not support")]
    ChannelBindingUnsupported,
    #[error(
        "the SCRAM client-first-message carries the mandatory extension attribute m=, which \
         this broker does not understand"
    )]
    MandatoryExtension,
    #[error(
        "the client asked to authenticate with a delegation token (tokenauth=true); this \
         broker does not support delegation tokens"
    )]
    TokenAuthUnsupported,
    #[error("the SCRAM extension {name:?} is not supported")]
    UnsupportedExtension { name: String },
    #[error(
        "the SCRAM authorization id differs from the user name; Kafka lets a user act only \
         as itself"
    )]
    AuthzidMismatch,
    #[error(
        "the channel binding in the SCRAM client-final-message is not the GS2 header of the \
         client-first-message"
    )]
    ChannelBindingMismatch,
    #[error("the nonce in the SCRAM client-final-message is not the nonce of this exchange")]
    NonceMismatch,
    /// Unknown user and wrong password alike, so a client cannot probe for user names.
    #[error("authentication failed: invalid credentials")]
    AuthenticationFailed,
    #[error("the SCRAM {step} is out of order: the exchange {state}")]
    OutOfOrder {
        step: &'static str,
        state: &'static str,
    },
    /// A caller looked up the credential of another mechanism than the exchange's.
    #[error("a {credential} credential cannot answer a {exchange} exchange")]
    MechanismMismatch {
        credential: &'static str,
        exchange: &'static str,
    },
    /// A stored credential that does not parse. The reason never quotes the record, which
    /// holds key material.
    #[error("the SCRAM credential record is invalid: {reason}")]
    InvalidRecord { reason: String },
    #[error("the SCRAM credential record has version {version}, which this broker does not know")]
    UnsupportedRecordVersion { version: u64 },
}

/// What the broker stores for one user and mechanism: enough to verify a SCRAM proof or a
/// PLAIN password, not enough on its own to log in as the user. With one captured exchange
/// it is (RFC 5802 §9), so it is guarded like a password hash.
///
/// `PartialEq` compares keys in variable time: it is for tests and records, never for
/// authentication ([`ScramCredential::verify_password`] is).
#[derive(Clone, PartialEq)]
pub struct ScramCredential {
    pub mechanism: ScramMechanism,
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl ScramCredential {
    /// Derives the credential from a password: SaltedPassword = Hi(password, salt, i), the
    /// PBKDF2 of RFC 5802. Callers check `iterations` against the mechanism's bounds; 0,
    /// which PBKDF2 has no meaning for, is taken as 1.
    pub fn from_password(
        mechanism: ScramMechanism,
        password: &[u8],
        salt: &[u8],
        iterations: u32,
    ) -> ScramCredential {
        let salted_password = salted_password(mechanism, password, salt, iterations);
        ScramCredential::from_salted_password(mechanism, &salted_password, salt, iterations)
    }

    /// The credential from an already salted password: AlterUserScramCredentials carries
    /// the SaltedPassword the client computed, never the password.
    pub fn from_salted_password(
        mechanism: ScramMechanism,
        salted_password: &[u8],
        salt: &[u8],
        iterations: u32,
    ) -> ScramCredential {
        let client_key = mechanism.hmac_sign(salted_password, b"Client Key");
        ScramCredential {
            mechanism,
            salt: salt.to_vec(),
            iterations,
            stored_key: mechanism.hash(&client_key),
            server_key: mechanism.hmac_sign(salted_password, b"Server Key"),
        }
    }

    /// A credential with a fresh random salt of 32 bytes.
    ///
    /// # Panics
    /// If the operating system cannot supply random bytes (see `fill_random`).
    pub fn generate(
        mechanism: ScramMechanism,
        password: &[u8],
        iterations: u32,
    ) -> ScramCredential {
        let mut salt = [0u8; SALT_BYTES];
        fill_random(&mut salt);
        ScramCredential::from_password(mechanism, password, &salt, iterations)
    }

    /// Whether `password` is the one this credential was derived from: how SASL/PLAIN logs
    /// in against a stored SCRAM credential. Costs one PBKDF2 of `iterations` rounds.
    pub fn verify_password(&self, password: &[u8]) -> bool {
        let candidate =
            ScramCredential::from_password(self.mechanism, password, &self.salt, self.iterations);
        bool::from(candidate.stored_key.ct_eq(&self.stored_key))
    }
}

/// Shows what a credential is for, never its salt or keys.
impl fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramCredential")
            .field("mechanism", &self.mechanism)
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// The end of a successful exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramOutcome {
    /// The authenticated user (the principal `User:<username>`).
    pub username: String,
    /// `v=<server signature>`, sent back in the last SaslAuthenticate response so the client
    /// can check that the server knew its credential too.
    pub server_final: Vec<u8>,
}

/// One SCRAM exchange on one connection: `client_first`, `server_first`, `client_final`,
/// each once, in that order.
pub struct ScramServer {
    mechanism: ScramMechanism,
    server_nonce: String,
    state: State,
}

enum State {
    AwaitingClientFirst,
    AwaitingCredential(ClientFirst),
    AwaitingClientFinal {
        client_first: ClientFirst,
        server_first: String,
        credential: ScramCredential,
        /// False for the stand-in credential of an unknown user, which then fails exactly
        /// where a wrong password does.
        user_known: bool,
    },
    Complete,
    Failed,
}

impl State {
    fn describe(&self) -> &'static str {
        match self {
            State::AwaitingClientFirst => "awaits the client-first-message",
            State::AwaitingCredential(_) => "awaits the user's credential",
            State::AwaitingClientFinal { .. } => "awaits the client-final-message",
            State::Complete => "has already completed",
            State::Failed => "has already failed",
        }
    }
}

/// What the client-first-message said, kept for the rest of the exchange.
struct ClientFirst {
    username: String,
    /// `n,,` or `y,,` or with `a=<authzid>`: the client-final-message must carry it back.
    gs2_header: String,
    /// The message without its GS2 header, the first part of AuthMessage.
    bare: String,
    client_nonce: String,
}

impl ScramServer {
    /// An exchange with a fresh random server nonce.
    ///
    /// # Panics
    /// If the operating system cannot supply random bytes (see `fill_random`).
    pub fn new(mechanism: ScramMechanism) -> ScramServer {
        let mut nonce = [0u8; SERVER_NONCE_BYTES];
        fill_random(&mut nonce);
        ScramServer::with_nonce(mechanism, BASE64.encode(nonce))
    }

    /// An exchange with a chosen server nonce, for tests with known answers. The nonce must
    /// be printable ASCII without commas.
    pub fn with_nonce(mechanism: ScramMechanism, nonce: String) -> ScramServer {
        debug_assert!(
            is_valid_nonce(&nonce),
            "a SCRAM nonce is printable, without commas"
        );
        ScramServer {
            mechanism,
            server_nonce: nonce,
            state: State::AwaitingClientFirst,
        }
    }

    pub fn mechanism(&self) -> ScramMechanism {
        self.mechanism
    }

    /// Reads the client-first-message and returns the user name whose credential the
    /// caller looks up for [`ScramServer::server_first`].
    pub fn client_first(&mut self, message: &[u8]) -> Result<String, ScramError> {
        let state = std::mem::replace(&mut self.state, State::Failed);
        let State::AwaitingClientFirst = state else {
            return Err(out_of_order(CLIENT_FIRST, &state));
        };
        let client_first = parse_client_first(message)?;
        let username = client_first.username.clone();
        self.state = State::AwaitingCredential(client_first);
        Ok(username)
    }

    /// The server-first-message for the user's credential, `None` if there is no such
    /// user (the answer looks the same; the exchange fails at the client-final-message).
    pub fn server_first(
        &mut self,
        credential: Option<&ScramCredential>,
    ) -> Result<Vec<u8>, ScramError> {
        let state = std::mem::replace(&mut self.state, State::Failed);
        let State::AwaitingCredential(client_first) = state else {
            return Err(out_of_order(SERVER_FIRST, &state));
        };
        let (credential, user_known) = match credential {
            Some(credential) if credential.mechanism != self.mechanism => {
                return Err(ScramError::MechanismMismatch {
                    credential: credential.mechanism.name(),
                    exchange: self.mechanism.name(),
                });
            }
            Some(credential) => (credential.clone(), true),
            None => (
                unknown_user_credential(self.mechanism, &client_first.username),
                false,
            ),
        };
        let server_first = format!(
            "r={}{},s={},i={}",
            client_first.client_nonce,
            self.server_nonce,
            BASE64.encode(&credential.salt),
            credential.iterations
        );
        let reply = server_first.clone().into_bytes();
        self.state = State::AwaitingClientFinal {
            client_first,
            server_first,
            credential,
            user_known,
        };
        Ok(reply)
    }

    /// Reads the client-final-message and checks its proof; on success the exchange is
    /// complete and the outcome carries the server-final-message.
    pub fn client_final(&mut self, message: &[u8]) -> Result<ScramOutcome, ScramError> {
        let state = std::mem::replace(&mut self.state, State::Failed);
        let State::AwaitingClientFinal {
            client_first,
            server_first,
            credential,
            user_known,
        } = state
        else {
            return Err(out_of_order(CLIENT_FINAL, &state));
        };
        let text = message_text(message, CLIENT_FINAL)?;

        // No attribute value can hold a comma (base64, printable nonce, extension values),
        // so splitting on commas finds the attributes exactly.
        let (without_proof, proof_attribute) = text
            .rsplit_once(',')
            .ok_or_else(|| malformed(CLIENT_FINAL, "it has no proof (p=)"))?;
        let proof = proof_attribute
            .strip_prefix("p=")
            .ok_or_else(|| malformed(CLIENT_FINAL, "its last attribute is not the proof (p=)"))?;
        let mut attributes = without_proof.split(',');
        let channel_binding = attributes
            .next()
            .and_then(|attribute| attribute.strip_prefix("c="))
            .ok_or_else(|| {
                malformed(
                    CLIENT_FINAL,
                    "it does not open with the channel binding (c=)",
                )
            })?;
        let nonce = attributes
            .next()
            .and_then(|attribute| attribute.strip_prefix("r="))
            .ok_or_else(|| {
                malformed(
                    CLIENT_FINAL,
                    "the nonce (r=) does not follow the channel binding",
                )
            })?;
        for extension in attributes {
            parse_extension(extension, CLIENT_FINAL)?;
        }
        let channel_binding = BASE64
            .decode(channel_binding)
            .map_err(|_| malformed(CLIENT_FINAL, "the channel binding (c=) is not base64"))?;
        let proof = BASE64
            .decode(proof)
            .map_err(|_| malformed(CLIENT_FINAL, "the proof (p=) is not base64"))?;

        if channel_binding != client_first.gs2_header.as_bytes() {
            return Err(ScramError::ChannelBindingMismatch);
        }
        // RFC 5802 wants exactly client nonce + server nonce. librdkafka sends its client
        // nonce once more in front (it prepends it to the server's r=, which already
        // starts with it), and Kafka accepts any nonce that ends with the combined one;
        // so do we. The proof covers the message as sent either way.
        let combined = format!("{}{}", client_first.client_nonce, self.server_nonce);
        if !nonce.ends_with(&combined) {
            return Err(ScramError::NonceMismatch);
        }

        let auth_message = format!("{},{},{}", client_first.bare, server_first, without_proof);
        let accepted = proof_matches(&credential, auth_message.as_bytes(), &proof)
            & Choice::from(u8::from(user_known));
        if !bool::from(accepted) {
            return Err(ScramError::AuthenticationFailed);
        }
        let server_signature = self
            .mechanism
            .hmac_sign(&credential.server_key, auth_message.as_bytes());
        self.state = State::Complete;
        Ok(ScramOutcome {
            username: client_first.username,
            server_final: format!("v={}", BASE64.encode(server_signature)).into_bytes(),
        })
    }
}

/// Shows the mechanism and where the exchange is, never the nonce, credential or user.
impl fmt::Debug for ScramServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramServer")
            .field("mechanism", &self.mechanism)
            .field("state", &self.state.describe())
            .finish_non_exhaustive()
    }
}

/// `gs2-header client-first-message-bare`:
/// `(n|y|p=cb),[a=authzid],[m=ext,]n=saslname,r=nonce[,ext=value...]`.
fn parse_client_first(message: &[u8]) -> Result<ClientFirst, ScramError> {
    let text = message_text(message, CLIENT_FIRST)?;
    let (flag, rest) = text
        .split_once(',')
        .ok_or_else(|| malformed(CLIENT_FIRST, "it has no GS2 header"))?;
    match flag {
        "n" | "y" => {}
        _ if flag.starts_with("p=") => return Err(ScramError::ChannelBindingUnsupported),
        _ => {
            return Err(malformed(
                CLIENT_FIRST,
                "the GS2 channel binding flag is not n, y or p=",
            ));
        }
    }
    let (authzid, bare) = rest
        .split_once(',')
        .ok_or_else(|| malformed(CLIENT_FIRST, "the GS2 header does not end with a comma"))?;
    let authzid = match authzid {
        "" => None,
        _ => {
            let encoded = authzid.strip_prefix("a=").ok_or_else(|| {
                malformed(
                    CLIENT_FIRST,
                    "the GS2 authorization id does not start with a=",
                )
            })?;
            Some(decode_saslname(
                encoded,
                "the authorization id (a=) is not a valid saslname",
            )?)
        }
    };
    let gs2_header = &text[..text.len() - bare.len()];

    let mut attributes = bare.split(',');
    let first = attributes.next().unwrap_or_default();
    if first.starts_with("m=") {
        return Err(ScramError::MandatoryExtension);
    }
    let username = first.strip_prefix("n=").ok_or_else(|| {
        malformed(
            CLIENT_FIRST,
            "the user name (n=) does not follow the GS2 header",
        )
    })?;
    let username = decode_saslname(username, "the user name (n=) is not a valid saslname")?;
    let client_nonce = attributes
        .next()
        .and_then(|attribute| attribute.strip_prefix("r="))
        .ok_or_else(|| malformed(CLIENT_FIRST, "the nonce (r=) does not follow the user name"))?;
    if !is_valid_nonce(client_nonce) {
        return Err(malformed(
            CLIENT_FIRST,
            "the nonce (r=) is empty or not printable ASCII",
        ));
    }
    for extension in attributes {
        let (name, value) = parse_extension(extension, CLIENT_FIRST)?;
        // Kafka reads the flag case-insensitively; any other value means an ordinary login.
        if name == "tokenauth" {
            if value.eq_ignore_ascii_case("true") {
                return Err(ScramError::TokenAuthUnsupported);
            }
        } else {
            return Err(ScramError::UnsupportedExtension {
                name: name.to_string(),
            });
        }
    }
    if let Some(authzid) = authzid
        && authzid != username
    {
        return Err(ScramError::AuthzidMismatch);
    }
    Ok(ClientFirst {
        username,
        gs2_header: gs2_header.to_string(),
        bare: bare.to_string(),
        client_nonce: client_nonce.to_string(),
    })
}

/// The message as text, after the checks every message gets.
fn message_text<'a>(message: &'a [u8], step: &'static str) -> Result<&'a str, ScramError> {
    if message.len() > MAX_MESSAGE_LEN {
        return Err(ScramError::TooLong {
            message: step,
            max: MAX_MESSAGE_LEN,
        });
    }
    if message.is_empty() {
        return Err(malformed(step, "it is empty"));
    }
    std::str::from_utf8(message).map_err(|_| malformed(step, "it is not UTF-8"))
}

/// `saslname` (RFC 5802 §5.1): UTF-8 without NUL, `,` written `=2C` and `=` written `=3D`;
/// not empty. `reason` names the field for the error.
fn decode_saslname(encoded: &str, reason: &'static str) -> Result<String, ScramError> {
    if encoded.is_empty() {
        return Err(malformed(CLIENT_FIRST, reason));
    }
    let mut decoded = String::with_capacity(encoded.len());
    let mut rest = encoded;
    while let Some(position) = rest.find(['=', '\0']) {
        decoded.push_str(&rest[..position]);
        let escape = &rest[position..];
        if escape.starts_with("=2C") {
            decoded.push(',');
        } else if escape.starts_with("=3D") {
            decoded.push('=');
        } else {
            return Err(malformed(CLIENT_FIRST, reason));
        }
        rest = &escape[3..];
    }
    decoded.push_str(rest);
    Ok(decoded)
}

/// `name=value`: Kafka's extension syntax, an ASCII-letter name and a non-empty value
/// without NUL (commas cannot occur: the caller split on them).
fn parse_extension<'a>(
    attribute: &'a str,
    step: &'static str,
) -> Result<(&'a str, &'a str), ScramError> {
    let (name, value) = attribute
        .split_once('=')
        .filter(|(name, value)| {
            !name.is_empty()
                && name.bytes().all(|byte| byte.is_ascii_alphabetic())
                && !value.is_empty()
                && !value.contains('\0')
        })
        .ok_or_else(|| malformed(step, "an extension is not of the form name=value"))?;
    Ok((name, value))
}

/// RFC 5802 `printable`: ASCII 0x21..=0x7E except `,`; at least one.
fn is_valid_nonce(nonce: &str) -> bool {
    !nonce.is_empty()
        && nonce
            .bytes()
            .all(|byte| (0x21..=0x7e).contains(&byte) && byte != b',')
}

/// ClientKey = proof XOR HMAC(StoredKey, AuthMessage); the proof holds if H(ClientKey) is
/// StoredKey. Constant time in everything but the (public) proof length.
fn proof_matches(credential: &ScramCredential, auth_message: &[u8], proof: &[u8]) -> Choice {
    let mechanism = credential.mechanism;
    let client_signature = mechanism.hmac_sign(&credential.stored_key, auth_message);
    if proof.len() != client_signature.len() {
        return Choice::from(0);
    }
    let client_key: Vec<u8> = proof
        .iter()
        .zip(&client_signature)
        .map(|(proof_byte, signature_byte)| proof_byte ^ signature_byte)
        .collect();
    mechanism.hash(&client_key).ct_eq(&credential.stored_key)
}

fn salted_password(
    mechanism: ScramMechanism,
    password: &[u8],
    salt: &[u8],
    iterations: u32,
) -> Vec<u8> {
    let mut salted = vec![0u8; mechanism.key_len()];
    pbkdf2::derive(
        mechanism.pbkdf2(),
        NonZeroU32::new(iterations).unwrap_or(NonZeroU32::MIN),
        salt,
        password,
        &mut salted,
    );
    salted
}

/// The stand-in credential for a user that does not exist: a salt that is the same on
/// every attempt for the same name (a changing salt would betray the unknown user) yet
/// unpredictable without the process's key, the default iteration count, and keys no
/// proof matches (the exchange also checks `user_known`, so it fails regardless).
fn unknown_user_credential(mechanism: ScramMechanism, username: &str) -> ScramCredential {
    static UNKNOWN_USER_SALT_KEY: OnceLock<hmac::Key> = OnceLock::new();
    let key = UNKNOWN_USER_SALT_KEY.get_or_init(|| {
        let mut key = [0u8; 32];
        fill_random(&mut key);
        hmac::Key::new(hmac::HMAC_SHA256, &key)
    });
    let mut context = hmac::Context::with_key(key);
    context.update(mechanism.name().as_bytes());
    context.update(b"\0");
    context.update(username.as_bytes());
    let salt = context.sign();
    ScramCredential {
        mechanism,
        salt: salt.as_ref()[..SALT_BYTES].to_vec(),
        iterations: ScramMechanism::MIN_ITERATIONS,
        stored_key: vec![0; mechanism.key_len()],
        server_key: vec![0; mechanism.key_len()],
    }
}

/// Fills `bytes` from the operating system's generator.
///
/// # Panics
/// If the generator fails, which aws-lc-rs reports only when the OS cannot supply entropy:
/// no nonce or salt can then be made safely, and carrying on with a predictable one would
/// be worse than stopping.
fn fill_random(bytes: &mut [u8]) {
    SystemRandom::new()
        .fill(bytes)
        .expect("the operating system's random generator failed");
}

fn malformed(message: &'static str, reason: &'static str) -> ScramError {
    ScramError::Malformed { message, reason }
}

fn out_of_order(step: &'static str, state: &State) -> ScramError {
    ScramError::OutOfOrder {
        step,
        state: state.describe(),
    }
}

mod record;
#[cfg(test)]
mod tests;
