use std::num::NonZeroU32;

use aws_lc_rs::{digest, hmac, pbkdf2};
use proptest::prelude::*;

use super::*;

fn b64(bytes: &[u8]) -> String {
    BASE64.encode(bytes)
}

fn unb64(text: &str) -> Vec<u8> {
    BASE64.decode(text).expect("test base64")
}

/// A SCRAM client written against the RFC with aws-lc-rs directly, not through
/// `ScramCredential`, so that the two sides check each other.
struct TestClient {
    mechanism: ScramMechanism,
    password: Vec<u8>,
    gs2_header: String,
    client_first_bare: String,
    client_nonce: String,
}

struct ClientFinal {
    message: String,
    expected_server_final: String,
}

impl TestClient {
    fn new(mechanism: ScramMechanism, username: &str, password: &[u8]) -> TestClient {
        let client_nonce = "fyko+d2lbbFgONRv9qkxdawL".to_string();
        TestClient {
            mechanism,
            password: password.to_vec(),
            gs2_header: "n,,".to_string(),
            client_first_bare: format!("n={username},r={client_nonce}"),
            client_nonce,
        }
    }

    fn client_first(&self) -> Vec<u8> {
        format!("{}{}", self.gs2_header, self.client_first_bare).into_bytes()
    }

    /// The client-final-message answering `server_first`, with `extensions` (each
    /// `,name=value`) before the proof.
    fn client_final(&self, server_first: &[u8], extensions: &str) -> ClientFinal {
        let server_first = std::str::from_utf8(server_first).expect("server-first is UTF-8");
        let fields: Vec<&str> = server_first.split(',').collect();
        assert_eq!(fields.len(), 3, "server-first {server_first}");
        let nonce = fields[0].strip_prefix("r=").expect("r=");
        assert!(nonce.starts_with(&self.client_nonce));
        let salt = unb64(fields[1].strip_prefix("s=").expect("s="));
        let iterations: u32 = fields[2]
            .strip_prefix("i=")
            .expect("i=")
            .parse()
            .expect("iterations");

        let (pbkdf2_algorithm, hmac_algorithm, digest_algorithm, len) = match self.mechanism {
            ScramMechanism::Sha256 => (
                pbkdf2::PBKDF2_HMAC_SHA256,
                hmac::HMAC_SHA256,
                &digest::SHA256,
                32,
            ),
            ScramMechanism::Sha512 => (
                pbkdf2::PBKDF2_HMAC_SHA512,
                hmac::HMAC_SHA512,
                &digest::SHA512,
                64,
            ),
        };
        let mut salted = vec![0u8; len];
        pbkdf2::derive(
            pbkdf2_algorithm,
            NonZeroU32::new(iterations).expect("iterations > 0"),
            &salt,
            &self.password,
            &mut salted,
        );
        let salted = hmac::Key::new(hmac_algorithm, &salted);
        let client_key = hmac::sign(&salted, b"Client Key");
        let stored_key = digest::digest(digest_algorithm, client_key.as_ref());
        let server_key = hmac::sign(&salted, b"Server Key");

        let without_proof = format!(
            "c={},r={nonce}{extensions}",
            b64(self.gs2_header.as_bytes())
        );
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let client_signature = hmac::sign(
            &hmac::Key::new(hmac_algorithm, stored_key.as_ref()),
            auth_message.as_bytes(),
        );
        let proof: Vec<u8> = client_key
            .as_ref()
            .iter()
            .zip(client_signature.as_ref())
            .map(|(key, signature)| key ^ signature)
            .collect();
        let server_signature = hmac::sign(
            &hmac::Key::new(hmac_algorithm, server_key.as_ref()),
            auth_message.as_bytes(),
        );
        ClientFinal {
            message: format!("{without_proof},p={}", b64(&proof)),
            expected_server_final: format!("v={}", b64(server_signature.as_ref())),
        }
    }
}

const RFC_SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
const RFC_SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";

fn rfc7677_credential() -> ScramCredential {
    ScramCredential::from_password(ScramMechanism::Sha256, b"pencil", &unb64(RFC_SALT), 4096)
}

/// A server that has read `client_first` from `client` and answered with `credential`.
fn started(client: &TestClient, credential: Option<&ScramCredential>) -> (ScramServer, Vec<u8>) {
    let mut server = ScramServer::new(client.mechanism);
    server
        .client_first(&client.client_first())
        .expect("client-first accepted");
    let server_first = server.server_first(credential).expect("server-first");
    (server, server_first)
}

fn client_first_error(message: &[u8]) -> ScramError {
    let mut server = ScramServer::new(ScramMechanism::Sha256);
    match server.client_first(message) {
        Ok(username) => panic!("{message:?} accepted as user {username:?}"),
        Err(error) => error,
    }
}

#[test]
fn rfc7677_sha256_example() {
    let credential = rfc7677_credential();
    let mut server = ScramServer::with_nonce(ScramMechanism::Sha256, RFC_SERVER_NONCE.into());
    let username = server
        .client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
        .expect("client-first");
    assert_eq!(username, "user");
    let server_first = server
        .server_first(Some(&credential))
        .expect("server-first");
    assert_eq!(
        String::from_utf8(server_first).expect("UTF-8"),
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    );
    let outcome = server
        .client_final(
            b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
              p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        )
        .expect("client-final");
    assert_eq!(outcome.username, "user");
    assert_eq!(
        String::from_utf8(outcome.server_final).expect("UTF-8"),
        "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    );
}

/// SHA-512 has no RFC example; this one was computed with Python's hashlib and hmac.
#[test]
fn sha512_known_answer() {
    let credential = ScramCredential::from_password(
        ScramMechanism::Sha512,
        b"correct horse battery staple",
        b"strata-sha512-salt-0123456789ab",
        4096,
    );
    assert_eq!(
        b64(&credential.stored_key),
        "6Ykuk2qbvV1tSjKZYMGjWUkBmAX3mv8iHoT0EdL5JaYPrQwna477dsXvW+U5s2mfyCNQ8gjXHFUkhX24YJVQbQ=="
    );
    let mut server = ScramServer::with_nonce(ScramMechanism::Sha512, "servernonce512".into());
    assert_eq!(
        server
            .client_first(b"n,,n=alice,r=clientnonce512")
            .expect("client-first"),
        "alice"
    );
    let server_first = server
        .server_first(Some(&credential))
        .expect("server-first");
    assert_eq!(
        server_first,
        b"r=clientnonce512servernonce512,s=c3RyYXRhLXNoYTUxMi1zYWx0LTAxMjM0NTY3ODlhYg==,i=4096"
    );
    let outcome = server
        .client_final(
            b"c=biws,r=clientnonce512servernonce512,p=fq6eQQxVV4JUsJu3n2PVF90wd4zg58ClzLEVd\
              LfFP6pj9gXL8s2mv4FHXfQUpma9IMJY1mvEMlkZBvSkZmJs7Q==",
        )
        .expect("client-final");
    assert_eq!(
        outcome.server_final,
        b"v=4mHe2TLbyzIAm/EPRZ2JIT8hKPf2OpHhYyCN1XOh7xGJb52bEXesejdt9sFlJs5pZeAmbOX8vXofoYX0Hgd9JQ=="
    );
}

#[test]
fn round_trip_with_a_test_client() {
    for mechanism in [ScramMechanism::Sha256, ScramMechanism::Sha512] {
        let credential = ScramCredential::generate(mechanism, b"s3cret", 4096);
        assert_eq!(credential.salt.len(), 32);
        let client = TestClient::new(mechanism, "alice", b"s3cret");
        let (mut server, server_first) = started(&client, Some(&credential));
        let client_final = client.client_final(&server_first, "");
        let outcome = server
            .client_final(client_final.message.as_bytes())
            .expect("the right password is accepted");
        assert_eq!(outcome.username, "alice");
        assert_eq!(
            outcome.server_final,
            client_final.expected_server_final.into_bytes()
        );
    }
}

#[test]
fn server_nonces_are_fresh_and_printable() {
    let client = TestClient::new(ScramMechanism::Sha256, "alice", b"pw");
    let credential = ScramCredential::generate(ScramMechanism::Sha256, b"pw", 4096);
    let (_, first) = started(&client, Some(&credential));
    let (_, second) = started(&client, Some(&credential));
    assert_ne!(first, second);
    let nonce = std::str::from_utf8(&first)
        .expect("UTF-8")
        .split(',')
        .next()
        .and_then(|attribute| attribute.strip_prefix("r="))
        .and_then(|nonce| nonce.strip_prefix(&client.client_nonce))
        .expect("nonce")
        .to_string();
    assert!(nonce.len() >= 32, "server nonce {nonce}");
    assert!(is_valid_nonce(&nonce));
}

#[test]
fn client_final_extensions_are_covered_by_the_proof_and_ignored() {
    let credential = ScramCredential::generate(ScramMechanism::Sha256, b"pw", 4096);
    let client = TestClient::new(ScramMechanism::Sha256, "alice", b"pw");
    let (mut server, server_first) = started(&client, Some(&credential));
    let client_final = client.client_final(&server_first, ",x=1,future=yes");
    assert!(server.client_final(client_final.message.as_bytes()).is_ok());

    // An extension added after the proof was computed changes AuthMessage.
    let (mut server, server_first) = started(&client, Some(&credential));
    let client_final = client.client_final(&server_first, "");
    let tampered = client_final.message.replacen(",p=", ",x=1,p=", 1);
    assert!(matches!(
        server.client_final(tampered.as_bytes()),
        Err(ScramError::AuthenticationFailed)
    ));
}

#[test]
fn wrong_password_fails() {
    let credential = ScramCredential::generate(ScramMechanism::Sha512, b"right", 4096);
    let client = TestClient::new(ScramMechanism::Sha512, "alice", b"wrong");
    let (mut server, server_first) = started(&client, Some(&credential));
    let client_final = client.client_final(&server_first, "");
    let error = server
        .client_final(client_final.message.as_bytes())
        .expect_err("a wrong password is refused");
    assert!(matches!(error, ScramError::AuthenticationFailed));
    let shown = error.to_string();
    for secret in ["right", "wrong", &client_final.message] {
        assert!(!shown.contains(secret), "{shown}");
    }
    let proof = client_final.message.rsplit_once("p=").expect("proof").1;
    assert!(!shown.contains(proof));
    assert!(!shown.contains(&b64(&credential.stored_key)));
}

#[test]
fn a_wrong_length_proof_fails_like_a_wrong_password() {
    let credential = ScramCredential::generate(ScramMechanism::Sha256, b"pw", 4096);
    let client = TestClient::new(ScramMechanism::Sha256, "alice", b"pw");
    let (mut server, server_first) = started(&client, Some(&credential));
    let client_final = client.client_final(&server_first, "");
    let (without_proof, _) = client_final.message.rsplit_once(",p=").expect("proof");
    let short = format!("{without_proof},p={}", b64(b"short"));
    assert!(matches!(
        server.client_final(short.as_bytes()),
        Err(ScramError::AuthenticationFailed)
    ));
}

#[test]
fn an_unknown_user_looks_like_a_known_one_and_fails_like_a_wrong_password() {
    let known = ScramCredential::generate(ScramMechanism::Sha256, b"pw", 4096);
    let alice = TestClient::new(ScramMechanism::Sha256, "alice", b"pw");
    let mallory = TestClient::new(ScramMechanism::Sha256, "mallory", b"pw");
    let (_, known_first) = started(&alice, Some(&known));
    let (mut server, unknown_first) = started(&mallory, None);

    let shape = |server_first: &[u8]| -> (usize, usize, String) {
        let text = std::str::from_utf8(server_first).expect("UTF-8");
        let fields: Vec<&str> = text.split(',').collect();
        assert_eq!(fields.len(), 3);
        let nonce_len = fields[0].strip_prefix("r=").expect("r=").len();
        let salt_len = unb64(fields[1].strip_prefix("s=").expect("s=")).len();
        (nonce_len, salt_len, fields[2].to_string())
    };
    assert_eq!(shape(&known_first), shape(&unknown_first));

    // The fake salt is the same on every attempt for the same name, and differs by name
    // and by mechanism, as real salts do.
    let salt = |server_first: &[u8]| {
        std::str::from_utf8(server_first)
            .expect("UTF-8")
            .split(',')
            .nth(1)
            .expect("s=")
            .to_string()
    };
    let (_, again) = started(&mallory, None);
    assert_eq!(salt(&unknown_first), salt(&again));
    let (_, other_user) = started(&TestClient::new(ScramMechanism::Sha256, "eve", b"pw"), None);
    assert_ne!(salt(&unknown_first), salt(&other_user));
    let (_, other_mechanism) = started(
        &TestClient::new(ScramMechanism::Sha512, "mallory", b"pw"),
        None,
    );
    assert_ne!(salt(&unknown_first), salt(&other_mechanism));

    let client_final = mallory.client_final(&unknown_first, "");
    let unknown_error = server
        .client_final(client_final.message.as_bytes())
        .expect_err("an unknown user is refused");
    let wrong = TestClient::new(ScramMechanism::Sha256, "alice", b"not pw");
    let (mut server, server_first) = started(&wrong, Some(&known));
    let wrong_error = server
        .client_final(wrong.client_final(&server_first, "").message.as_bytes())
        .expect_err("a wrong password is refused");
    assert!(matches!(unknown_error, ScramError::AuthenticationFailed));
    assert_eq!(unknown_error.to_string(), wrong_error.to_string());
}

#[test]
fn a_credential_of_the_other_mechanism_is_refused() {
    let credential = ScramCredential::generate(ScramMechanism::Sha512, b"pw", 4096);
    let mut server = ScramServer::new(ScramMechanism::Sha256);
    server
        .client_first(b"n,,n=alice,r=abc")
        .expect("client-first");
    assert!(matches!(
        server.server_first(Some(&credential)),
        Err(ScramError::MechanismMismatch { .. })
    ));
}

#[test]
fn delegation_tokens_and_unknown_extensions_are_refused() {
    for message in [
        &b"n,,n=alice,r=abc,tokenauth=true"[..],
        b"n,,n=alice,r=abc,tokenauth=TRUE",
        b"n,,n=alice,r=abc,tokenauth=false,tokenauth=true",
    ] {
        let error = client_first_error(message);
        assert!(matches!(error, ScramError::TokenAuthUnsupported), "{error}");
        assert!(error.to_string().contains("delegation token"));
    }
    assert!(matches!(
        client_first_error(b"n,,n=alice,r=abc,foo=bar"),
        ScramError::UnsupportedExtension { name } if name == "foo"
    ));
    assert!(matches!(
        client_first_error(b"n,,m=ext,n=alice,r=abc"),
        ScramError::MandatoryExtension
    ));
    // As in Kafka, tokenauth with any value but true is an ordinary login.
    let mut server = ScramServer::new(ScramMechanism::Sha256);
    assert_eq!(
        server
            .client_first(b"n,,n=alice,r=abc,tokenauth=false")
            .expect("accepted"),
        "alice"
    );
}

#[test]
fn channel_binding_flags() {
    assert!(matches!(
        client_first_error(b"p=tls-unique,,n=alice,r=abc"),
        ScramError::ChannelBindingUnsupported
    ));
    assert!(matches!(
        client_first_error(b"x,,n=alice,r=abc"),
        ScramError::Malformed { .. }
    ));

    // `y`: the client could bind but thinks the server cannot. It must say `y` again in c=.
    let credential = ScramCredential::generate(ScramMechanism::Sha256, b"pw", 4096);
    let mut client = TestClient::new(ScramMechanism::Sha256, "alice", b"pw");
    client.gs2_header = "y,,".into();
    let (mut server, server_first) = started(&client, Some(&credential));
    let client_final = client.client_final(&server_first, "");
    assert!(client_final.message.starts_with("c=eSws,"));
    assert!(server.client_final(client_final.message.as_bytes()).is_ok());

    // A client-final whose c= is not the header the client sent first.
    let (mut server, server_first) = started(&client, Some(&credential));
    let client_final = client.client_final(&server_first, "");
    let swapped = client_final.message.replacen("c=eSws", "c=biws", 1);
    assert!(matches!(
        server.client_final(swapped.as_bytes()),
        Err(ScramError::ChannelBindingMismatch)
    ));
}

#[test]
fn the_authorization_id_must_be_the_user() {
    let credential = ScramCredential::generate(ScramMechanism::Sha256, b"pw", 4096);
    let mut client = TestClient::new(ScramMechanism::Sha256, "a,b", b"pw");
    client.client_first_bare = format!("n=a=2Cb,r={}", client.client_nonce);
    client.gs2_header = "n,a=a=2Cb,".into();
    let (mut server, server_first) = started(&client, Some(&credential));
    let client_final = client.client_final(&server_first, "");
    let outcome = server
        .client_final(client_final.message.as_bytes())
        .expect("authzid equal to the user");
    assert_eq!(outcome.username, "a,b");

    assert!(matches!(
        client_first_error(b"n,a=admin,n=alice,r=abc"),
        ScramError::AuthzidMismatch
    ));
}

#[test]
fn saslnames_are_decoded() {
    let mut server = ScramServer::new(ScramMechanism::Sha256);
    assert_eq!(
        server
            .client_first("n,,n=a=2Cb=3Dc=3D=2Cé,r=abc".as_bytes())
            .expect("accepted"),
        "a,b=c=,é"
    );
    for name in ["", "=", "=2", "=2c", "=41", "a=3", "a\0b", "a=3d"] {
        let message = format!("n,,n={name},r=abc");
        assert!(
            matches!(
                client_first_error(message.as_bytes()),
                ScramError::Malformed { .. }
            ),
            "user name {name:?}"
        );
    }
}

#[test]
fn malformed_client_first_messages_are_errors() {
    let huge = format!("n,,n=alice,r={}", "a".repeat(MAX_MESSAGE_LEN));
    assert!(matches!(
        client_first_error(huge.as_bytes()),
        ScramError::TooLong { .. }
    ));
    for message in [
        &b""[..],
        b"\xff\xfe\x00garbage",
        b"n,,n=al\xffice,r=abc",
        b"n",
        b"n,",
        b"n,,",
        b"n,,r=abc",
        b"n,,n=alice",
        b"n,,n=alice,",
        b"n,,n=alice,r=",
        b"n,,n=alice,r=a b",
        b"n,,n=alice,r=abc\x7f",
        b"n,,n=alice,x=abc",
        b"n,,n=alice,r=abc,",
        b"n,,n=alice,r=abc,=v",
        b"n,,n=alice,r=abc,tokenauth",
        b"n,,n=alice,r=abc,tokenauth=",
        b"n,,n=alice,r=abc,t0ken=1",
        b"n,x=alice,n=alice,r=abc",
        b"n,a=,n=alice,r=abc",
        b",,n=alice,r=abc",
        b"nn,,n=alice,r=abc",
    ] {
        let error = client_first_error(message);
        assert!(
            matches!(error, ScramError::Malformed { .. }),
            "{:?}: {error}",
            String::from_utf8_lossy(message)
        );
    }
}

/// Which kind of error, for tables of cases.
fn kind(error: &ScramError) -> &'static str {
    match error {
        ScramError::Malformed { .. } => "malformed",
        ScramError::TooLong { .. } => "too long",
        ScramError::NonceMismatch => "nonce mismatch",
        ScramError::ChannelBindingMismatch => "channel binding mismatch",
        ScramError::AuthenticationFailed => "authentication failed",
        _ => "other",
    }
}

#[test]
fn malformed_client_final_messages_are_errors() {
    let credential = ScramCredential::generate(ScramMechanism::Sha256, b"pw", 4096);
    let client = TestClient::new(ScramMechanism::Sha256, "alice", b"pw");
    let huge = "A".repeat(MAX_MESSAGE_LEN);
    // `{r}` and `{p}` stand for the nonce and proof attributes of a valid answer.
    let cases = [
        ("{valid}", "none"),
        ("", "malformed"),
        ("garbage", "malformed"),
        ("c=biws,{r}", "malformed"),
        ("{p},c=biws,{r}", "malformed"),
        ("c=biws,{p}", "malformed"),
        ("{r},c=biws,{p}", "malformed"),
        ("c=b!ws,{r},{p}", "malformed"),
        ("c=biws,{r},p=not base64", "malformed"),
        ("c=biws,{r},x,{p}", "malformed"),
        ("c=biws,{r},{p}\u{ff}", "malformed"),
        ("c=biws,{r}X,{p}", "nonce mismatch"),
        ("c=biws,r=fyko+d2lbbFgONRv9qkxdawL,{p}", "nonce mismatch"),
        ("c=eSws,{r},{p}", "channel binding mismatch"),
        ("c=biws,{r},p={huge}", "too long"),
    ];
    for (template, expected) in cases {
        let (mut server, server_first) = started(&client, Some(&credential));
        let valid = client.client_final(&server_first, "").message;
        let (without_proof, proof) = valid.rsplit_once(',').expect("p=");
        let nonce = without_proof.split(',').nth(1).expect("r=");
        let message = template
            .replace("{valid}", &valid)
            .replace("{r}", nonce)
            .replace("{p}", proof)
            .replace("{huge}", &huge);
        let outcome = server.client_final(message.as_bytes());
        let got = outcome.as_ref().err().map_or("none", kind);
        assert_eq!(got, expected, "{message:?}: {outcome:?}");
    }
    let (mut server, server_first) = started(&client, Some(&credential));
    let mut not_utf8 = client.client_final(&server_first, "").message.into_bytes();
    not_utf8[3] = 0xff;
    assert!(matches!(
        server.client_final(&not_utf8),
        Err(ScramError::Malformed { .. })
    ));
}

#[test]
fn calls_out_of_order_are_errors_and_end_the_exchange() {
    let out_of_order = |result: Result<(), ScramError>| {
        assert!(
            matches!(result, Err(ScramError::OutOfOrder { .. })),
            "{result:?}"
        );
    };
    let mut server = ScramServer::new(ScramMechanism::Sha256);
    out_of_order(server.server_first(None).map(drop));
    let mut server = ScramServer::new(ScramMechanism::Sha256);
    out_of_order(server.client_final(b"c=biws,r=a,p=AAAA").map(drop));

    let mut server = ScramServer::new(ScramMechanism::Sha256);
    server
        .client_first(b"n,,n=alice,r=abc")
        .expect("client-first");
    out_of_order(server.client_first(b"n,,n=alice,r=abc").map(drop));
    // The error ended the exchange.
    out_of_order(server.server_first(None).map(drop));

    let mut server = ScramServer::new(ScramMechanism::Sha256);
    server
        .client_first(b"n,,n=alice,r=abc")
        .expect("client-first");
    out_of_order(server.client_final(b"c=biws,r=a,p=AAAA").map(drop));

    // A failed step ends the exchange too.
    let mut server = ScramServer::new(ScramMechanism::Sha256);
    assert!(server.client_first(b"garbage").is_err());
    out_of_order(server.client_first(b"n,,n=alice,r=abc").map(drop));

    // A completed exchange takes nothing more.
    let credential = ScramCredential::generate(ScramMechanism::Sha256, b"pw", 4096);
    let client = TestClient::new(ScramMechanism::Sha256, "alice", b"pw");
    let (mut server, server_first) = started(&client, Some(&credential));
    let client_final = client.client_final(&server_first, "");
    server
        .client_final(client_final.message.as_bytes())
        .expect("accepted");
    assert!(format!("{server:?}").contains("completed"));
    out_of_order(
        server
            .client_final(client_final.message.as_bytes())
            .map(drop),
    );
}

#[test]
fn verify_password() {
    for mechanism in [ScramMechanism::Sha256, ScramMechanism::Sha512] {
        let credential = ScramCredential::generate(mechanism, b"hunter2", 4096);
        assert!(credential.verify_password(b"hunter2"));
        assert!(!credential.verify_password(b"hunter3"));
        assert!(!credential.verify_password(b""));
    }
    assert!(rfc7677_credential().verify_password(b"pencil"));
}

#[test]
fn degenerate_inputs_to_the_key_derivation_do_not_panic() {
    let empty = ScramCredential::from_password(ScramMechanism::Sha256, b"", b"", 0);
    assert_eq!(empty.stored_key.len(), 32);
    assert!(empty.verify_password(b""));
    assert!(!empty.verify_password(b"x"));
}

#[test]
fn salted_password_and_password_give_the_same_credential() {
    let salt = unb64(RFC_SALT);
    // SaltedPassword of the RFC 7677 example, computed with Python's hashlib.
    let salted = unb64("xKSVEDI6tPlSysH6mUQZOeeOp01r6B3fcJbodRPcYV0=");
    assert_eq!(
        ScramCredential::from_salted_password(ScramMechanism::Sha256, &salted, &salt, 4096),
        rfc7677_credential()
    );
}

#[test]
fn debug_output_shows_no_key_material() {
    let credential = rfc7677_credential();
    assert_eq!(
        format!("{credential:?}"),
        "ScramCredential { mechanism: Sha256, iterations: 4096, .. }"
    );

    let mut server = ScramServer::with_nonce(ScramMechanism::Sha256, RFC_SERVER_NONCE.into());
    server
        .client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
        .expect("client-first");
    server
        .server_first(Some(&credential))
        .expect("server-first");
    let shown = format!("{server:?}");
    assert!(!shown.contains(RFC_SERVER_NONCE) && !shown.contains(&b64(&credential.stored_key)));
}

#[test]
fn mechanism_names_and_kafka_types() {
    for mechanism in [ScramMechanism::Sha256, ScramMechanism::Sha512] {
        assert_eq!(ScramMechanism::from_name(mechanism.name()), Some(mechanism));
        assert_eq!(
            ScramMechanism::from_kafka_type(mechanism.kafka_type()),
            Some(mechanism)
        );
    }
    assert_eq!(ScramMechanism::Sha256.kafka_type(), 1);
    assert_eq!(ScramMechanism::Sha512.kafka_type(), 2);
    assert_eq!(ScramMechanism::from_kafka_type(0), None);
    assert_eq!(ScramMechanism::from_kafka_type(3), None);
    assert_eq!(ScramMechanism::from_name("scram-sha-256"), None);
    assert_eq!(ScramMechanism::from_name("PLAIN"), None);
}

/// Bytes drawn mostly from SCRAM's own alphabet, so that parsing gets past the first check.
fn scramish() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300),
        "[nyrcpmas=,2CD3A-Za-z0-9+/\\x00\u{e9}]{0,80}".prop_map(String::into_bytes),
        "(n|y|p=x),(a=[a-z=]{0,4})?,(m=x,)?n=[a-z=2C3D]{0,6},r=[ -~]{0,6}(,[a-z]{1,9}=[a-z]{0,4}){0,2}"
            .prop_map(String::into_bytes),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn client_first_never_panics(message in scramish()) {
        let mut server = ScramServer::new(ScramMechanism::Sha256);
        if let Ok(username) = server.client_first(&message) {
            prop_assert!(!username.is_empty());
            prop_assert!(server.server_first(None).is_ok());
        }
    }

    #[test]
    fn client_final_never_panics(
        message in prop_oneof![
            scramish(),
            "c=[a-zA-Z0-9+/=]{0,8},r=[ -~]{0,40}(,[a-z]=[a-z]{0,3}){0,2},p=[a-zA-Z0-9+/=]{0,90}"
                .prop_map(String::into_bytes),
        ],
        user_known in any::<bool>(),
    ) {
        let credential = ScramCredential::from_password(ScramMechanism::Sha256, b"pw", b"salt", 1);
        let mut server = ScramServer::new(ScramMechanism::Sha256);
        server.client_first(b"n,,n=alice,r=abc").expect("client-first");
        server.server_first(user_known.then_some(&credential)).expect("server-first");
        prop_assert!(server.client_final(&message).is_err());
    }
}
