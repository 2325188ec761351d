"""TLS on the Kafka listeners (issue 16): SSL and PLAINTEXT listeners of one broker with
every client library, advertised listeners, a plaintext hello to the TLS port, an unknown
CA, mTLS (required and requested) and certificate rotation under load.

The broker's certificate is issued by an intermediate CA and its file holds the leaf and
the intermediate; clients trust only the root and verify the broker's address
(127.0.0.1) against the certificate's SAN. Certificates are minted per test
(security.Pki). Settings: STRATA_LISTENERS, STRATA_ADVERTISED_LISTENERS,
STRATA_LISTENER_SECURITY_PROTOCOL_MAP, STRATA_SSL_CERT_FILE / _KEY_FILE / _CA_FILE,
STRATA_SSL_CLIENT_AUTH.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from security import (
    CLIENTS,
    HOSTNAME_MISMATCH,
    TLS_VERIFY_FAILURE,
    Pki,
    collect_failures,
    confluent_brokers,
    confluent_roundtrip,
    connect_error,
    kafkajs_roundtrip,
    kcat_brokers,
    open_socket,
    openssl_verify,
    peer_certificate,
    read_until_closed,
    roundtrip,
    secure_broker,
    topic_name,
    wait_for,
)
from servers import FaultProxy, free_port
from wire import api_versions_request, connect


def test_the_test_certificates_verify(tmp_path):
    """The material every TLS test relies on: the broker's chain verifies against the root
    with openssl (intermediate offered as untrusted, as a server sends it) and not against
    the other CA; SANs, key formats and subjects are what the tests assume."""
    from cryptography import x509

    pki = Pki(tmp_path / "pki")
    ok = openssl_verify(pki.root.cert_path, pki.server.cert_path)
    assert ok.returncode == 0 and ": OK" in ok.stdout, ok.stdout + ok.stderr
    assert pki.server.cert_path.read_text().count("BEGIN CERTIFICATE") == 2, "leaf + intermediate"
    bad = openssl_verify(pki.other.cert_path, pki.server.cert_path)
    assert bad.returncode != 0, "the server certificate must not verify against the unrelated CA"

    san = pki.server.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert "BEGIN PRIVATE KEY" in pki.server.key_pem  # PKCS#8

    alice = pki.client_cert("CN=alice,O=Acme")
    assert alice.cert.subject.rfc4514_string() == "CN=alice,O=Acme"
    assert openssl_verify(pki.root.cert_path, alice.cert_path).returncode == 0
    stranger = pki.client_cert("CN=mallory,O=Acme", ca=pki.other)
    assert openssl_verify(pki.root.cert_path, stranger.cert_path).returncode != 0

    ec = pki.server_cert("server-ec", key_type="ec", key_format="traditional")
    assert "BEGIN EC PRIVATE KEY" in ec.key_pem  # SEC1
    rsa1 = pki.server_cert("server-pkcs1", key_format="traditional")
    assert "BEGIN RSA PRIVATE KEY" in rsa1.key_pem  # PKCS#1
    assert len({pki.server.serial, ec.serial, rsa1.serial}) == 3


def tls_broker(broker, tmp_path, pki: Pki | None = None, **kwargs):
    pki = pki or Pki(tmp_path / "pki")
    kwargs.setdefault("listeners", {"PLAINTEXT": "PLAINTEXT", "SSL": "SSL"})
    return secure_broker(broker, tmp_path, pki=pki, **kwargs)


def test_every_client_over_ssl_and_over_plaintext_on_a_second_listener(broker, tmp_path):
    """One broker, PLAINTEXT and SSL listeners: confluent-kafka, kafka-python, kcat and
    kafkajs each produce and read back over both, and Metadata on each listener names that
    listener's port (as confluent-kafka, kcat and kafkajs see it)."""
    sb = tls_broker(broker, tmp_path)
    checks = []
    for listener in ("SSL", "PLAINTEXT"):
        conn = sb.conn(listener)
        want = {f"127.0.0.1:{sb.port(listener)}"}
        for client in CLIENTS:
            if client == "kafkajs":
                def check(conn=conn, listener=listener, want=want):
                    out = kafkajs_roundtrip(conn, topic_name("kafkajs", listener))
                    seen = {f"{b['host']}:{b['port']}" for b in out["brokers"]}
                    assert seen == want, f"kafkajs on {listener}: brokers {seen}, want {want}"
            else:
                def check(client=client, conn=conn, listener=listener):
                    roundtrip(client, conn, topic_name(client, listener))
            checks.append((f"{client} over {listener}", check))

        def metadata(conn=conn, listener=listener, want=want):
            seen = set(confluent_brokers(conn).values())
            assert seen == want, f"confluent-kafka Metadata on {listener}: brokers {seen}, want {want}"
            seen = set(kcat_brokers(conn).values())
            assert seen == want, f"kcat -L on {listener}: brokers {seen}, want {want}"
        checks.append((f"Metadata on {listener}", metadata))
    failures = collect_failures(checks)
    assert not failures, "\n\n".join(failures)
    sb.assert_healthy("after every client")
    sb.assert_no_secrets()


def test_advertised_listeners_with_custom_listener_names(broker, tmp_path):
    """listener_security_protocol_map names the listeners CLIENT (SSL) and INTERNAL
    (PLAINTEXT); advertised_listeners sends CLIENT's clients through a TCP forwarder on
    another port. Each listener's Metadata answers with its own advertised address, and a
    client bootstrapping through the forwarder keeps using it, over TLS."""
    client_port, internal_port = free_port(), free_port()
    forwarder = FaultProxy(("127.0.0.1", client_port))
    try:
        sb = tls_broker(broker, tmp_path, listeners={"CLIENT": "SSL", "INTERNAL": "PLAINTEXT"},
                        ports={"CLIENT": client_port, "INTERNAL": internal_port},
                        advertised={"CLIENT": f"127.0.0.1:{forwarder.port}"})
        assert sb.env["STRATA_LISTENER_SECURITY_PROTOCOL_MAP"] == "CLIENT:SSL,INTERNAL:PLAINTEXT"
        assert "STRATA_ADVERTISED_LISTENERS" in sb.env
        direct = confluent_brokers(sb.conn("CLIENT"))
        assert set(direct.values()) == {f"127.0.0.1:{forwarder.port}"}, \
            f"Metadata on CLIENT advertised {direct}, want the forwarder 127.0.0.1:{forwarder.port}"
        internal = confluent_brokers(sb.conn("INTERNAL"))
        assert set(internal.values()) == {f"127.0.0.1:{internal_port}"}, f"Metadata on INTERNAL: {internal}"
        before = forwarder.accepted
        via = sb.conn("CLIENT", bootstrap=f"127.0.0.1:{forwarder.port}")
        confluent_roundtrip(via, "through-the-forwarder")
        assert forwarder.accepted > before, "the client did not go through the advertised address"
    finally:
        forwarder.stop()


def assert_refused_without_answer(sock, what: str) -> None:
    """The broker closes `sock` within 10 s and sends nothing but, at most, a TLS alert."""
    closed, data = read_until_closed(sock, 10)
    assert closed, f"{what}: the connection was left open (read {data[:40]!r})"
    assert data == b"" or (data[:1] == b"\x15" and len(data) < 64), \
        f"{what}: the broker sent {data[:64]!r} (a Kafka answer or garbage, not a TLS alert)"


def test_a_plaintext_request_to_the_tls_port_is_refused_and_the_broker_stays_healthy(broker, tmp_path):
    """An ApiVersions frame in clear, random bytes and a half ClientHello on the SSL port,
    and a TLS ClientHello on the PLAINTEXT port: each connection is closed without a Kafka
    answer; the broker stays ready and both listeners still serve real clients."""
    sb = tls_broker(broker, tmp_path)
    ssl_addr, plain_addr = sb.bootstrap("SSL"), sb.bootstrap("PLAINTEXT")
    for i in range(10):
        with connect(ssl_addr) as s:
            s.sendall(api_versions_request(3, 100 + i))
            assert_refused_without_answer(s, f"ApiVersions v3 in clear on the SSL port (try {i})")
    with connect(ssl_addr) as s:
        s.sendall(os.urandom(4096))
        assert_refused_without_answer(s, "random bytes on the SSL port")
    # The first bytes of a TLS record header promising more than is sent, then silence:
    # a stalled handshake must not hold a connection forever either (it may take the
    # broker's handshake/read timeout, so only the broker's health is checked here).
    stalled = connect(ssl_addr)
    stalled.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
    # A TLS client on the PLAINTEXT port: the broker reads a ClientHello as a Kafka frame
    # (its size, 0x16030x.., is far beyond any limit) and closes.
    import ssl as _ssl

    with connect(plain_addr) as raw:
        context = _ssl.create_default_context(cafile=str(sb.pki.root.cert_path))
        raw.settimeout(10)
        try:
            context.wrap_socket(raw, server_hostname="127.0.0.1")
        except TimeoutError:
            pytest.fail("a TLS ClientHello on the PLAINTEXT port was left hanging for 10 s")
        except (_ssl.SSLError, ConnectionError, OSError):
            pass
        else:
            pytest.fail("a TLS handshake succeeded on the PLAINTEXT listener")
    stalled.close()
    sb.assert_healthy("after plaintext and garbage on the TLS port")
    confluent_roundtrip(sb.conn("SSL"), "after-garbage-ssl")
    confluent_roundtrip(sb.conn("PLAINTEXT"), "after-garbage-plain")
    cert = peer_certificate(ssl_addr, sb.pki.root.cert_path)
    assert cert.serial_number == sb.pki.server.serial


def test_a_client_trusting_another_ca_refuses_the_broker(broker, tmp_path):
    """Every client that trusts only an unrelated CA fails certificate verification (the
    broker really presents its chain, and the clients really verify it); the broker stays
    healthy and a correctly configured client still works."""
    sb = tls_broker(broker, tmp_path)
    wrong = sb.conn("SSL", ca_path=sb.pki.other.cert_path)
    problems = []
    for client in CLIENTS:
        try:
            text = connect_error(client, wrong)
        except Exception as e:  # noqa: BLE001
            problems.append(f"{client}: {type(e).__name__}: {e}")
            continue
        if not TLS_VERIFY_FAILURE.search(text):
            problems.append(f"{client} failed, but not with a certificate verification error:\n{text[-1500:]}")
    import ssl as _ssl

    with pytest.raises(_ssl.SSLCertVerificationError):
        peer_certificate(sb.bootstrap("SSL"), sb.pki.other.cert_path)
    assert not problems, "\n\n".join(problems)
    sb.assert_healthy("after clients refused the broker's certificate")
    confluent_roundtrip(sb.conn("SSL"), "trusted-after-untrusted")


def test_clients_verify_the_broker_address_against_its_certificate(broker, tmp_path):
    """Hostname verification is on in every client configuration the tests use: with a
    certificate from the trusted CA whose SAN names only broker.invalid, every client
    refuses the broker at 127.0.0.1."""
    pki = Pki(tmp_path / "pki")
    pki.server = pki.intermediate.issue("CN=strata-broker,O=Strata Tests", file_stem="wrong-name", server=True,
                                        dns=("broker.invalid",))
    sb = tls_broker(broker, tmp_path, pki=pki, listeners={"SSL": "SSL"})
    conn = sb.conn("SSL")
    problems = []
    for client in CLIENTS:
        try:
            text = connect_error(client, conn)
        except Exception as e:  # noqa: BLE001
            problems.append(f"{client}: {type(e).__name__}: {e}")
            continue
        if not (TLS_VERIFY_FAILURE.search(text) or HOSTNAME_MISMATCH.search(text)):
            problems.append(f"{client} failed, but not with a certificate or name mismatch error:\n{text[-1500:]}")
    assert not problems, "\n\n".join(problems)
    sb.assert_healthy("after clients refused the broker's name")


def raw_request_refused(conn) -> str:
    """Connects over TLS (possibly without a client certificate) and sends ApiVersions:
    the broker must refuse — a failed handshake, or a closed connection with no Kafka
    answer (with TLS 1.3 the client finishes its side of the handshake before the server
    has checked the client's certificate). Returns how it was refused."""
    import ssl as _ssl

    try:
        s = open_socket(conn, timeout=10)
    except (_ssl.SSLError, ConnectionError, OSError) as e:
        return f"handshake refused: {e}"
    with s:
        try:
            s.sendall(api_versions_request(3, 9))
        except (_ssl.SSLError, OSError) as e:
            return f"send refused: {e}"
        closed, data = read_until_closed(s, 10)
    assert closed, f"{conn.describe()}: TLS connection without a valid client certificate left open"
    assert data == b"", f"{conn.describe()}: the broker answered ({len(data)} bytes) without a valid client certificate"
    return "closed without an answer"


def test_mtls_required_refuses_clients_without_a_valid_certificate(broker, tmp_path):
    """ssl_client_auth=required with the root CA as ssl_ca_file (server key in SEC1 EC form):
    no client certificate, or one from another CA, is refused (raw TLS and confluent-kafka);
    a certificate from the CA is accepted; the broker stays healthy."""
    pki = Pki(tmp_path / "pki")
    pki.server = pki.server_cert("server-ec", key_type="ec", key_format="traditional")
    sb = tls_broker(broker, tmp_path, pki=pki, listeners={"SSL": "SSL"}, client_auth="required")
    alice = pki.client_cert("CN=alice,O=Acme")
    mallory = pki.client_cert("CN=mallory,O=Acme", ca=pki.other, stem="mallory-other-ca")
    for label, cert in (("no client certificate", None), ("a certificate from another CA", mallory)):
        conn = sb.conn("SSL", cert=cert)
        raw_request_refused(conn)
        connect_error("confluent-kafka", conn)
        connect_error("kcat", conn)
    assert peer_certificate(sb.bootstrap("SSL"), pki.root.cert_path, cert=alice).serial_number == pki.server.serial
    sb.assert_healthy("after clients without valid certificates")
    confluent_roundtrip(sb.conn("SSL", cert=alice), "mtls-after-refusals")


def test_mtls_every_client_with_a_certificate(broker, tmp_path):
    """ssl_client_auth=required: confluent-kafka, kafka-python, kcat and kafkajs, each with
    a client certificate issued by the CA, produce and read back."""
    pki = Pki(tmp_path / "pki")
    sb = tls_broker(broker, tmp_path, pki=pki, listeners={"SSL": "SSL"}, client_auth="required")
    alice = pki.client_cert("CN=alice,O=Acme")
    conn = sb.conn("SSL", cert=alice)
    failures = collect_failures([(f"{client} with a client certificate",
                                  lambda client=client: roundtrip(client, conn, topic_name(client, "mtls")))
                                 for client in CLIENTS])
    assert not failures, "\n\n".join(failures)
    sb.assert_healthy("after mTLS clients")


def test_mtls_requested_accepts_clients_with_and_without_a_certificate(broker, tmp_path):
    """ssl_client_auth=requested: a client without a certificate and one with a certificate
    from the CA both get through."""
    pki = Pki(tmp_path / "pki")
    sb = tls_broker(broker, tmp_path, pki=pki, listeners={"SSL": "SSL"}, client_auth="requested")
    alice = pki.client_cert("CN=alice,O=Acme")
    confluent_roundtrip(sb.conn("SSL"), "requested-anonymous")
    confluent_roundtrip(sb.conn("SSL", cert=alice), "requested-with-cert")


class LoadProducer(threading.Thread):
    """A confluent-kafka producer producing small records continuously until stopped,
    recording every delivery (with its time) and every error."""

    def __init__(self, conn, topic: str):
        super().__init__(name="load-producer", daemon=True)
        self.conn = conn
        self.topic = topic
        self.stop_event = threading.Event()
        self.delivered: list[float] = []
        self.errors: list[str] = []
        self.produced = 0
        self.unflushed = None

    def run(self) -> None:
        from confluent_kafka import Producer

        try:
            producer = Producer(self.conn.confluent(**{
                "acks": "all", "enable.idempotence": False, "linger.ms": 5, "message.timeout.ms": 30000,
                "error_cb": lambda e: self.errors.append(f"error_cb {e.name()}: {e.str()}"),
            }))

            def on_delivery(err, msg):
                if err is not None:
                    self.errors.append(f"delivery: {err}")
                else:
                    self.delivered.append(time.monotonic())

            while not self.stop_event.is_set():
                try:
                    producer.produce(self.topic, value=b"r%08d" % self.produced + b"." * 200, partition=0,
                                     on_delivery=on_delivery)
                    self.produced += 1
                except BufferError:
                    pass
                producer.poll(0.005)
            self.unflushed = producer.flush(60)
        except Exception as e:  # noqa: BLE001
            self.errors.append(f"producer thread: {type(e).__name__}: {e}")

    def stop(self) -> None:
        self.stop_event.set()
        self.join(90)
        assert not self.is_alive(), "the load producer did not stop"


def rotate_files(style: str, live: dict[str, Path], new_cert: bytes, new_key: bytes) -> None:
    """Puts a new certificate and key where the broker reads them.

    - "replace-files": each file replaced atomically in place (key, then certificate);
    - "kubernetes-secret": the paths are symlinks into `..data`, itself a symlink to a
      timestamped directory, and rotation swaps `..data` atomically, as the kubelet updates
      a mounted Secret that cert-manager renewed.
    """
    if style == "replace-files":
        for path, data in ((live["key"], new_key), (live["cert"], new_cert)):
            tmp = path.with_name(path.name + ".new")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return
    mount = live["cert"].parent
    version = mount / f"..{time.time_ns()}"
    version.mkdir()
    (version / "tls.crt").write_bytes(new_cert)
    (version / "tls.key").write_bytes(new_key)
    tmp_link = mount / "..data_tmp"
    os.symlink(version.name, tmp_link)
    os.replace(tmp_link, mount / "..data")


def install_certificate(style: str, tmp_path: Path, cert: bytes, key: bytes) -> dict[str, Path]:
    """Where the broker's ssl_cert_file / ssl_key_file point, laid out for `style`."""
    if style == "replace-files":
        d = tmp_path / "live-tls"
        d.mkdir()
        (d / "tls.crt").write_bytes(cert)
        (d / "tls.key").write_bytes(key)
        return {"cert": d / "tls.crt", "key": d / "tls.key"}
    mount = tmp_path / "secret-volume"
    mount.mkdir()
    first = mount / "..2026_01_01_00_00_00.000000001"
    first.mkdir()
    (first / "tls.crt").write_bytes(cert)
    (first / "tls.key").write_bytes(key)
    os.symlink(first.name, mount / "..data")
    os.symlink("..data/tls.crt", mount / "tls.crt")
    os.symlink("..data/tls.key", mount / "tls.key")
    return {"cert": mount / "tls.crt", "key": mount / "tls.key"}


@pytest.mark.parametrize("style", ["replace-files", "kubernetes-secret"])
def test_certificate_rotation_under_load(broker, tmp_path, style):
    """A producer produces over SSL without pause; the certificate and key files are
    replaced by a new certificate (new serial, new key in PKCS#1 form, same CA). Within a
    few seconds new TLS connections get the new certificate (its serial, seen in a Python
    ssl handshake), the running producer sees no error at all, and a new client works."""
    pki = Pki(tmp_path / "pki")
    old = pki.server
    live = install_certificate(style, tmp_path, old.cert_path.read_bytes(), old.key_path.read_bytes())
    sb = secure_broker(broker, tmp_path, listeners={"SSL": "SSL"}, pki=pki,
                       settings={"ssl_cert_file": live["cert"], "ssl_key_file": live["key"]})
    assert sb.env["STRATA_SSL_CERT_FILE"] == str(live["cert"])
    addr = sb.bootstrap("SSL")
    assert peer_certificate(addr, pki.root.cert_path).serial_number == old.serial
    confluent_roundtrip(sb.conn("SSL"), "before-rotation")

    load = LoadProducer(sb.conn("SSL"), "rotation-load")
    load.start()
    try:
        wait_for("the load producer's first deliveries", lambda: len(load.delivered) >= 50 or load.errors, 30)
        assert not load.errors, load.errors[:5]
        new = pki.server_cert("server-v2", key_format="traditional", directory=tmp_path / "staging")
        assert new.serial != old.serial
        rotated_at = time.monotonic()
        rotate_files(style, live, new.cert_path.read_bytes(), new.key_path.read_bytes())
        _, waited = wait_for("new TLS connections to get the new certificate",
                             lambda: peer_certificate(addr, pki.root.cert_path).serial_number == new.serial,
                             timeout=6, interval=0.25)
        # Every new connection from now on gets the new certificate.
        for _ in range(5):
            assert peer_certificate(addr, pki.root.cert_path).serial_number == new.serial
        wait_for("deliveries after the rotation", lambda: sum(t > rotated_at + waited for t in load.delivered) >= 50,
                 30)
        time.sleep(1.0)
    finally:
        load.stop()
    assert not load.errors, f"the running producer saw errors across the rotation: {load.errors[:5]}"
    assert load.unflushed == 0, f"{load.unflushed} records not delivered"
    assert len(load.delivered) == load.produced, (len(load.delivered), load.produced)
    sb.assert_healthy("after the rotation")
    confluent_roundtrip(sb.conn("SSL"), "after-rotation")
    kafkajs_roundtrip(sb.conn("SSL"), "after-rotation-kafkajs")
    sb.assert_no_secrets(*[line for line in new.key_pem.splitlines() if "-----" not in line][1:3])
