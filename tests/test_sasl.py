"""SASL on the Kafka listeners (issue 16): SCRAM-SHA-512, SCRAM-SHA-256, PLAIN and
OAUTHBEARER with every client library over SASL_SSL; wrong passwords, expired and forged
tokens, an unsecured (alg none) token, SASL exchanges cut half-way; users made through
AlterUserScramCredentials; re-authentication (KIP-368).

Users come from a sasl_bootstrap_users_file (`NAME:MECHANISM:PASSWORD`): alice
(SCRAM-SHA-512), bob (SCRAM-SHA-256), admin (SCRAM-SHA-512); PLAIN logins are checked
against the stored SCRAM credential. OAUTHBEARER tokens are RS256 JWTs signed by a key
whose public JWK is in a JWKS file the broker reads through a file:// URL. Passwords are
random per test, so finding one in the broker's log or /metrics is a leak.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time

import pytest

from security import (
    AUTH_FAILURE,
    CLIENTS,
    SASL_AUTHENTICATION_FAILED,
    Conn,
    Jwks,
    Pki,
    TokenEndpoint,
    Wire,
    collect_failures,
    confluent_admin,
    confluent_brokers,
    confluent_create_topic,
    confluent_roundtrip,
    connect_error,
    kcat,
    kcat_has_oidc,
    make_users,
    metric_sum,
    new_password,
    roundtrip,
    secure_broker,
    topic_name,
    wait_for,
)
from wire import record_batch


def sasl_broker(broker, tmp_path, settings: dict | None = None, **kwargs):
    """SASL_SSL and SASL_PLAINTEXT listeners, all four mechanisms, the bootstrap users
    alice / bob / admin, and the JWKS."""
    kwargs.setdefault("listeners", {"SASL_SSL": "SASL_SSL", "SASL_PLAINTEXT": "SASL_PLAINTEXT"})
    users = make_users(("alice", "SCRAM-SHA-512"), ("bob", "SCRAM-SHA-256"), ("admin", "SCRAM-SHA-512"))
    return secure_broker(broker, tmp_path, pki=Pki(tmp_path / "pki"), users=users, jwks=Jwks(tmp_path / "jwks"),
                         settings=settings, **kwargs)


def test_the_test_tokens_verify(tmp_path):
    """The tokens the OAUTHBEARER tests use are what they claim: a good one verifies with
    PyJWT against the JWKS file (key found by kid, RS256, issuer and audience checked); the
    bad ones fail for the intended reason."""
    import jwt

    jwks = Jwks(tmp_path / "jwks")
    document = json.loads(jwks.path.read_text())
    assert document["keys"][0]["kid"] == jwks.kid and document["keys"][0]["kty"] == "RSA"
    assert jwks.url.startswith("file:///") and jwks.url.endswith("/jwks.json")
    claims = jwks.verify(jwks.token("carol"))
    assert claims["sub"] == "carol" and claims["iss"] == jwks.issuer and claims["aud"] == jwks.audience
    with pytest.raises(jwt.ExpiredSignatureError):
        jwks.verify(jwks.token("carol", lifetime=-120))
    with pytest.raises(jwt.InvalidIssuerError):
        jwks.verify(jwks.token("carol", issuer="https://someone-else.test"))
    with pytest.raises(jwt.InvalidAudienceError):
        jwks.verify(jwks.token("carol", audience="another-service"))
    forger = Jwks(tmp_path / "forger", kid=jwks.kid)
    with pytest.raises(jwt.InvalidSignatureError):
        jwks.verify(forger.token("carol"))
    with pytest.raises(jwt.InvalidAlgorithmError):
        jwks.verify(jwks.unsecured_token("admin"))
    with pytest.raises(jwt.InvalidTokenError, match="no key with kid"):
        jwks.verify(Jwks(tmp_path / "stranger", kid="unknown-kid").token("carol"))


MECHANISMS = ["SCRAM-SHA-512", "PLAIN", "SCRAM-SHA-256", "OAUTHBEARER"]


def conn_for(sb, listener: str, mechanism: str) -> Conn:
    """alice for SCRAM-SHA-512 and PLAIN (her SCRAM-SHA-512 credential checks the PLAIN
    password), bob for SCRAM-SHA-256, a JWT for carol for OAUTHBEARER."""
    if mechanism == "OAUTHBEARER":
        return sb.conn(listener, token=sb.jwks.token("carol"))
    user = "bob" if mechanism == "SCRAM-SHA-256" else "alice"
    return sb.conn(listener, user, mechanism=mechanism)


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_every_client_over_sasl_ssl(broker, tmp_path, mechanism):
    """confluent-kafka, kafka-python, kcat and kafkajs authenticate with `mechanism` over
    SASL_SSL and produce and read back; confluent-kafka also over SASL_PLAINTEXT. For
    OAUTHBEARER kcat needs librdkafka's OIDC method (it then gets its JWT from a loopback
    token endpoint); a kcat built without it (Debian's) is covered by the alg-none refusal
    in test_expired_forged_and_unsecured_tokens_are_refused instead. No password or token
    appears in the broker's log or /metrics."""
    sb = sasl_broker(broker, tmp_path)
    conn = conn_for(sb, "SASL_SSL", mechanism)
    endpoint = TokenEndpoint(conn.token) if mechanism == "OAUTHBEARER" else None
    clients = list(CLIENTS)
    if mechanism == "OAUTHBEARER" and not kcat_has_oidc():
        # kcat can present a signed JWT only through librdkafka's OIDC method, which
        # Debian's kcat lacks; its OAUTHBEARER check is the refused alg-none token below.
        clients.remove("kcat")
    with endpoint or contextlib.nullcontext():
        checks = []
        for client in clients:
            c = conn.but(oidc_url=endpoint.url) if endpoint and client == "kcat" else conn
            checks.append((f"{client} over SASL_SSL with {mechanism}",
                           lambda client=client, c=c: roundtrip(client, c, topic_name(client, mechanism))))
        plain = conn_for(sb, "SASL_PLAINTEXT", mechanism)
        checks.append((f"confluent-kafka over SASL_PLAINTEXT with {mechanism}",
                       lambda: confluent_roundtrip(plain, topic_name("sasl-plaintext", mechanism))))
        failures = collect_failures(checks)
    if endpoint is not None and "kcat" in clients and not any("kcat" in f for f in failures):
        assert endpoint.requests >= 1, "kcat never asked the token endpoint for its JWT"
    assert not failures, "\n\n".join(failures)
    sb.assert_healthy(f"after {mechanism} clients")
    sb.assert_no_secrets(*([conn.token, conn.token.split(".")[2]] if conn.token else []))


def test_a_wrong_password_is_refused_by_every_client_and_never_logged(broker, tmp_path):
    """alice with a wrong password (SCRAM-SHA-512 and PLAIN) and an unknown user: every
    client reports an authentication error; the broker stays healthy, alice still gets in,
    the failures are counted in /metrics, and neither the wrong password nor any real one
    appears in the log or /metrics."""
    sb = sasl_broker(broker, tmp_path)
    wrong = new_password("wrong")
    checks = []
    for mechanism in ("SCRAM-SHA-512", "PLAIN"):
        bad = sb.conn("SASL_SSL", "alice", mechanism=mechanism, password=wrong)
        for client in CLIENTS:
            def check(client=client, bad=bad):
                text = connect_error(client, bad)
                assert AUTH_FAILURE.search(text), f"no authentication error reported{KAFKA_PYTHON_NOTE * (client == 'kafka-python')}:\n{text[-1500:]}"
            checks.append((f"{client} {mechanism} wrong password", check))
    nobody = sb.conn("SASL_SSL", "nobody", mechanism="SCRAM-SHA-512", password=wrong)

    def unknown_user():
        text = connect_error("confluent-kafka", nobody)
        assert AUTH_FAILURE.search(text), f"no authentication error reported:\n{text[-1500:]}"
    checks.append(("confluent-kafka unknown user", unknown_user))

    def raw_plain():
        with Wire.open(sb.conn("SASL_PLAINTEXT"), authenticate=False) as w:
            r = w.authenticate_plain("alice", wrong)
            assert r is None or r.error_code == SASL_AUTHENTICATION_FAILED, \
                f"PLAIN with a wrong password: {r} (want SASL_AUTHENTICATION_FAILED or a closed connection)"
            if r is not None:
                assert w.metadata() is None, "the connection served Metadata after a failed login"
    checks.append(("raw PLAIN wrong password", raw_plain))
    failures = collect_failures(checks)
    assert not failures, "\n\n".join(failures)

    sb.assert_healthy("after wrong passwords")
    confluent_roundtrip(sb.conn("SASL_SSL", "alice"), "alice-after-wrong-passwords")
    total, names = metric_sum(sb.broker.metrics(), r"authenticat.*fail|fail.*authenticat")
    assert total >= 1, f"no authentication failure counted in /metrics (metrics matching: {names})"
    sb.assert_no_secrets(wrong)


# kafka-python reads the SaslAuthenticate error only if the connection is still open when
# it arrives; a broker that closes at once after the error loses it ("socket
# disconnected"). Kafka waits connection.failed.authentication.delay.ms (100 ms) first.
KAFKA_PYTHON_NOTE = (" (kafka-python drops an error response that arrives together with the close; Kafka "
                     "delays closing after a failed authentication by connection.failed.authentication.delay.ms)")


def oauth_refused(sb, listener: str, token: str) -> str:
    """A raw OAUTHBEARER login with `token` is refused, and the connection serves nothing
    afterwards; returns what the broker said."""
    with Wire.open(sb.conn(listener), authenticate=False) as w:
        ok, detail = w.login_oauth(token)
        assert not ok, f"token accepted: {detail}"
        assert w.metadata() is None, f"the connection served Metadata after a refused token ({detail})"
    return detail


def test_expired_forged_and_unsecured_tokens_are_refused(broker, tmp_path):
    """A good JWT gets in (raw and confluent-kafka). Refused: an expired token (raw,
    confluent-kafka, kafka-python, kafkajs), a wrong issuer, a wrong audience, a signature
    by another key under the same kid, an unknown kid, an `alg: none` token (raw, and
    kcat's built-in unsecured token) and a non-JWT. No token is logged."""
    sb = sasl_broker(broker, tmp_path)
    jwks = sb.jwks
    good = jwks.token("carol")
    with Wire.open(sb.conn("SASL_SSL", token=good)) as w:
        assert w.metadata() is not None, "the good token's connection was not served"
    confluent_brokers(sb.conn("SASL_SSL", token=good))

    forger = Jwks(tmp_path / "forger", kid=jwks.kid)
    stranger = Jwks(tmp_path / "stranger", kid="unknown-kid")
    bad_tokens = {
        "expired": jwks.token("carol", lifetime=-300),
        "wrong issuer": jwks.token("carol", issuer="https://evil.test"),
        "wrong audience": jwks.token("carol", audience="some-other-service"),
        "forged signature": forger.token("carol"),
        "unknown kid": stranger.token("carol"),
        "alg none": jwks.unsecured_token("admin"),
        "not a JWT": "definitely-not-a-jwt",
    }
    checks = [(f"raw {label} token", lambda t=t: oauth_refused(sb, "SASL_SSL", t)) for label, t in bad_tokens.items()]
    checks.append(("raw expired token over SASL_PLAINTEXT",
                   lambda: oauth_refused(sb, "SASL_PLAINTEXT", bad_tokens["expired"])))
    expired = sb.conn("SASL_SSL", token=bad_tokens["expired"])
    for client in ("confluent-kafka", "kafka-python", "kafkajs"):
        def check(client=client):
            text = connect_error(client, expired)
            assert AUTH_FAILURE.search(text), f"no authentication error reported{KAFKA_PYTHON_NOTE * (client == 'kafka-python')}:\n{text[-1500:]}"
        checks.append((f"{client} expired token", check))

    def kcat_unsecured():
        # librdkafka's built-in unsecured JWT (alg none), as kcat makes it by default.
        base = Conn(bootstrap=sb.bootstrap("SASL_SSL"), protocol="SASL_SSL", ca_path=sb.pki.root.cert_path)
        result = kcat(base, ["-L", "-J", "-m", "8", "-X", "sasl.mechanism=OAUTHBEARER",
                             "-X", "enable.sasl.oauthbearer.unsecure.jwt=true",
                             "-X", "sasl.oauthbearer.config=principal=admin"], timeout=40)
        err = result.stderr.decode(errors="replace")
        assert result.returncode != 0, f"kcat with an unsecured token got metadata: {result.stdout[:300]!r}"
        assert AUTH_FAILURE.search(err), f"kcat: no authentication error reported:\n{err[-1500:]}"
    checks.append(("kcat unsecured (alg none) token", kcat_unsecured))
    failures = collect_failures(checks)
    assert not failures, "\n\n".join(failures)
    sb.assert_healthy("after bad tokens")
    confluent_roundtrip(sb.conn("SASL_SSL", token=jwks.token("carol")), "carol-after-bad-tokens")
    sb.assert_no_secrets(good, *bad_tokens.values())


def test_a_sasl_exchange_cut_half_way_leaves_the_broker_healthy(broker, tmp_path):
    """On both SASL listeners, repeatedly: SaslHandshake then close; a SCRAM client-first
    message then close; half a SaslAuthenticate frame then close; a SCRAM client-final
    with a bogus proof; and requests sent without authenticating (Produce first, or after
    the handshake). None of them is served, nothing is written, and the broker then serves
    alice on both listeners."""
    from kafka.protocol.sasl import SaslAuthenticateRequest

    sb = sasl_broker(broker, tmp_path)
    alice = sb.conn("SASL_SSL", "alice")
    confluent_create_topic(alice, "cut-target")
    batch = record_batch([b"must-not-be-written"])
    for listener in ("SASL_SSL", "SASL_PLAINTEXT"):
        anon = sb.conn(listener)
        for i in range(5):
            with Wire.open(anon, authenticate=False) as w:
                h = w.handshake("SCRAM-SHA-512")
                assert h is not None and h.error_code == 0, h
                assert "SCRAM-SHA-512" in h.mechanisms, h.mechanisms
            with Wire.open(anon, authenticate=False) as w:
                assert w.handshake("SCRAM-SHA-512").error_code == 0
                nonce = secrets.token_urlsafe(18)
                r = w.authenticate_bytes(f"n,,n=alice,r={nonce}".encode())
                assert r is not None and r.error_code == 0, f"SCRAM client-first: {r}"
                assert bytes(r.auth_bytes).startswith(f"r={nonce}".encode()), r.auth_bytes
            with Wire.open(anon, authenticate=False) as w:
                assert w.handshake("SCRAM-SHA-512").error_code == 0
                request = SaslAuthenticateRequest(version=1, auth_bytes=b"n,,n=alice,r=" + b"x" * 200)
                request.with_header(correlation_id=99, client_id="strata-tests")
                frame = request.encode(header=True, framed=True)
                w.sock.sendall(frame[: len(frame) // 2])
            with Wire.open(anon, authenticate=False) as w:
                assert w.handshake("SCRAM-SHA-512").error_code == 0
                nonce = secrets.token_urlsafe(18)
                first = w.authenticate_bytes(f"n,,n=alice,r={nonce}".encode())
                server_nonce = dict(kv.split("=", 1) for kv in bytes(first.auth_bytes).decode().split(","))["r"]
                bogus = f"c=biws,r={server_nonce},p=" + "A" * 88
                r = w.authenticate_bytes(bogus.encode())
                assert r is None or r.error_code == SASL_AUTHENTICATION_FAILED, f"bogus SCRAM proof: {r}"
                if r is not None:
                    assert w.produce("cut-target", batch) is None, "served Produce after a failed SCRAM login"
            with Wire.open(anon, authenticate=False) as w:
                result = w.produce("cut-target", batch)
                assert result is None or result[0] != 0, f"Produce without authenticating was served: {result}"
            with Wire.open(anon, authenticate=False) as w:
                assert w.handshake("PLAIN").error_code == 0
                result = w.produce("cut-target", batch)
                assert result is None or result[0] != 0, f"Produce after a bare handshake was served: {result}"
    sb.assert_healthy("after cut SASL exchanges")
    low, high = watermarks_as(alice, "cut-target")
    assert high == 0, f"{high} records were written to cut-target by unauthenticated connections"
    confluent_roundtrip(alice, "after-cut-ssl")
    confluent_roundtrip(sb.conn("SASL_PLAINTEXT", "alice"), "after-cut-plaintext")
    sb.assert_no_secrets()


def watermarks_as(conn: Conn, topic: str, partition: int = 0) -> tuple[int, int]:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(conn.confluent(**{"group.id": "strata-tests-unused"}))
    try:
        return consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=30, cached=False)
    finally:
        consumer.close()


def plain_login(sb, user: str, password: str) -> tuple[bool, str]:
    with Wire.open(sb.conn("SASL_PLAINTEXT"), authenticate=False) as w:
        return w.login_plain(user, password)


def test_alter_user_scram_credentials_creates_users_who_can_log_in(broker, tmp_path):
    """admin creates dave through AlterUserScramCredentials (SCRAM-SHA-256, 8192
    iterations): dave logs in with SCRAM-SHA-256 and PLAIN, not with SCRAM-SHA-512 (no such
    credential yet); DescribeUserScramCredentials lists every user with mechanism and
    iterations and nothing secret. A SCRAM-SHA-512 credential is added, a password changed
    (the old one stops working), then both deleted (dave can no longer log in)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import (
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialDeletion,
        UserScramCredentialUpsertion,
    )

    sb = sasl_broker(broker, tmp_path)
    admin = confluent_admin(sb.conn("SASL_SSL", "admin"))

    def alter(alterations):
        futures = admin.alter_user_scram_credentials(alterations, request_timeout=30)
        for user, f in futures.items():
            f.result(timeout=60)

    def describe(users=None):
        if users is None:
            return admin.describe_user_scram_credentials(request_timeout=30).result(timeout=60)
        return {u: f.result(timeout=60) for u, f in admin.describe_user_scram_credentials(users, request_timeout=30).items()}

    def mechanisms(description) -> dict[str, int]:
        return {i.mechanism.name: i.iterations for i in description.scram_credential_infos}

    pw1, pw2, pw3 = new_password("dave1"), new_password("dave2"), new_password("dave3")
    alter([UserScramCredentialUpsertion("dave", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 8192), pw1.encode())])
    dave256 = sb.conn("SASL_SSL", "dave", mechanism="SCRAM-SHA-256", password=pw1)
    wait_for("dave's new credential to be usable", lambda: plain_login(sb, "dave", pw1)[0], 5)
    confluent_roundtrip(dave256, "dave-topic")
    text = connect_error("confluent-kafka", dave256.but(mechanism="SCRAM-SHA-512"))
    assert AUTH_FAILURE.search(text), f"dave has no SCRAM-SHA-512 credential yet:\n{text[-1000:]}"

    d = describe(["dave"])["dave"]
    assert d.user == "dave" and mechanisms(d) == {"SCRAM_SHA_256": 8192}, mechanisms(d)
    everyone = describe()
    assert {u: set(mechanisms(desc)) for u, desc in everyone.items()} == {
        "alice": {"SCRAM_SHA_512"}, "bob": {"SCRAM_SHA_256"}, "admin": {"SCRAM_SHA_512"}, "dave": {"SCRAM_SHA_256"},
    }, {u: mechanisms(desc) for u, desc in everyone.items()}
    for u, desc in everyone.items():
        assert all(i.iterations >= 4096 for i in desc.scram_credential_infos), (u, mechanisms(desc))
    shown = repr([vars(desc) | {"infos": [vars(i) for i in desc.scram_credential_infos]} for desc in everyone.values()])
    for pw in [pw1, *[u.password for u in sb.users.values()]]:
        assert pw not in shown

    alter([UserScramCredentialUpsertion("dave", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096), pw2.encode())])
    wait_for("dave's SCRAM-SHA-512 credential", lambda: plain_login(sb, "dave", pw2)[0], 5)
    assert mechanisms(describe(["dave"])["dave"]) == {"SCRAM_SHA_256": 8192, "SCRAM_SHA_512": 4096}
    confluent_brokers(sb.conn("SASL_SSL", "dave", mechanism="SCRAM-SHA-512", password=pw2))
    confluent_brokers(dave256)

    alter([UserScramCredentialUpsertion("dave", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 8192), pw3.encode())])
    wait_for("dave's changed password", lambda: plain_login(sb, "dave", pw3)[0], 5)
    assert not plain_login(sb, "dave", pw1)[0], "dave's old password still works"
    confluent_brokers(dave256.but(password=pw3))

    alter([UserScramCredentialDeletion("dave", ScramMechanism.SCRAM_SHA_256),
           UserScramCredentialDeletion("dave", ScramMechanism.SCRAM_SHA_512)])
    wait_for("dave's deleted credentials to stop working",
             lambda: not plain_login(sb, "dave", pw2)[0] and not plain_login(sb, "dave", pw3)[0], 5)
    with pytest.raises(KafkaException):
        describe(["dave"])
    assert "dave" not in describe()
    sb.assert_healthy("after credential changes")
    sb.assert_no_secrets(pw1, pw2, pw3)


def test_reauthentication(broker, tmp_path):
    """connections_max_reauth_ms=2000 (KIP-368): SaslAuthenticate reports a session
    lifetime of at most 2 s; a raw connection that re-authenticates in time keeps being
    served, one that does not is closed at its next request after expiry; a confluent-kafka
    producer keeps producing for 6.5 s (librdkafka re-authenticates on its connection)
    with no error, no delivery failure and no reconnection."""
    sb = sasl_broker(broker, tmp_path, settings={"connections_max_reauth_ms": 2000})
    alice = sb.conn("SASL_SSL", "alice")
    confluent_create_topic(alice, "reauth")

    with Wire.open(alice, authenticate=False) as w:
        started = time.monotonic()
        r = w.authenticate_plain("alice", sb.users["alice"].password)
        assert r is not None and r.error_code == 0, r
        lifetime = r.session_lifetime_ms
        assert 0 < lifetime <= 2000, f"session_lifetime_ms {lifetime}, want 0 < it <= 2000"
        assert w.metadata() is not None
        # Re-authenticate half-way through the session, on the same connection.
        time.sleep(lifetime / 2000)
        r2 = w.authenticate_plain("alice", sb.users["alice"].password)
        assert r2 is not None and r2.error_code == 0, f"re-authentication refused: {r2}"
        assert 0 < r2.session_lifetime_ms <= 2000
        reauth_at = time.monotonic()
        time.sleep(max(0.0, started + lifetime / 1000 + 0.3 - time.monotonic()))
        assert w.metadata() is not None, "the re-authenticated connection was closed at the first session's expiry"
        time.sleep(max(0.0, reauth_at + r2.session_lifetime_ms / 1000 + 0.5 - time.monotonic()))
        assert w.metadata() is None, "an expired session was still served (KIP-368: the broker closes it)"

    stats: list[dict] = []
    errors: list[str] = []
    delivered = [0]

    def on_delivery(err, msg):
        if err is not None:
            errors.append(f"delivery: {err}")
        else:
            delivered[0] += 1

    from confluent_kafka import Producer

    producer = Producer(alice.confluent(**{
        "acks": "all", "enable.idempotence": False, "linger.ms": 5, "message.timeout.ms": 30000,
        "statistics.interval.ms": 500, "stats_cb": lambda s: stats.append(json.loads(s)),
        "error_cb": lambda e: errors.append(f"error_cb {e.name()}: {e.str()}"),
    }))
    produced = 0
    deadline = time.monotonic() + 6.5
    while time.monotonic() < deadline:
        producer.produce("reauth", value=b"r%06d" % produced, partition=0, on_delivery=on_delivery)
        produced += 1
        producer.poll(0.02)
    assert producer.flush(60) == 0
    producer.poll(0.6)
    assert not errors, f"errors while sessions expired every 2 s: {errors[:5]}"
    assert delivered[0] == produced
    assert stats, "no statistics from librdkafka"
    brokers = stats[-1]["brokers"]
    connects = sum(b["connects"] for b in brokers.values())
    disconnects = sum(b["disconnects"] for b in brokers.values())
    assert disconnects == 0 and connects <= 2, \
        (f"librdkafka reconnected ({connects} connects, {disconnects} disconnects over 6.5 s with 2 s sessions): "
         f"the broker closed connections instead of accepting re-authentication: "
         f"{ {n: (b['connects'], b['disconnects']) for n, b in brokers.items()} }")
    sb.assert_healthy("after re-authentication")
    sb.assert_no_secrets()
