"""Support for the security tests (test_tls.py, test_sasl.py, test_acls.py, test_quotas.py):
certificates and JWTs minted in the test, a broker with several listeners, how each client
library connects to one of them, and raw protocol exchanges over TLS and SASL.

- `Pki`: a root CA, an intermediate CA that issues the broker's certificate (the broker's
  file holds the leaf and the intermediate), client certificates from the root, and a
  second, unrelated CA. Everything is made with `cryptography` and written as PEM files.
- `Jwks`: an RS256 key whose public JWK (with a `kid`) is written to a JWKS file the broker
  reads through a `file://` URL, and tokens signed with it (PyJWT).
- `secure_broker(broker, tmp_path, listeners=...)`: starts a broker (through the `broker`
  fixture) with `STRATA_LISTENERS` on free ports, TLS files, SASL users and any other
  setting; returns a `SecureBroker` with `.bootstrap(listener)` and `.conn(listener, ...)`.
- `Conn`: one client's way in (address, protocol, trusted CA, certificate, SASL mechanism
  and credential) rendered as confluent-kafka / kafka-python options, kcat `-X` arguments
  and a kafkajs spec for tests/js/secure.js.
- `*_roundtrip(conn, topic)`: each client library produces and reads back its own records.
- `Wire`: one raw Kafka connection (TLS if the listener has it) speaking requests encoded
  with kafka-python's message classes, with SASL PLAIN / OAUTHBEARER done by hand.

The broker settings used here are the contract of issue 16 (`STRATA_<NAME>`, Kafka syntax).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import http.server
import json
import logging
import os
import re
import secrets
import shutil
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from clients import QUIET, Rec, check_against_offsets, confluent_consume, confluent_produce, kcat_binary
from servers import StrataBroker, free_port, http_get

JS = Path(__file__).parent / "js"

# Kafka error codes the tests look for.
TOPIC_AUTHORIZATION_FAILED = 29
GROUP_AUTHORIZATION_FAILED = 30
CLUSTER_AUTHORIZATION_FAILED = 31
UNSUPPORTED_SASL_MECHANISM = 33
ILLEGAL_SASL_STATE = 34
SASL_AUTHENTICATION_FAILED = 58

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
TLS_PROTOCOLS = ("SSL", "SASL_SSL")
SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")
SCRAM = ("SCRAM-SHA-256", "SCRAM-SHA-512")
ALL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN", "OAUTHBEARER")

ISSUER = "https://issuer.strata.test"
AUDIENCE = "strata-brokers"

# ---------------------------------------------------------------------------------------
# Certificates
# ---------------------------------------------------------------------------------------

_NAME_OIDS = None


def x509_name(dn: str):
    """An x509.Name whose RFC 4514 / RFC 2253 string (as Kafka prints a principal) is `dn`,
    e.g. "CN=alice,O=Acme". RFC 2253 lists the RDNs last-first, so they are reversed here."""
    global _NAME_OIDS
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    if _NAME_OIDS is None:
        _NAME_OIDS = {"CN": NameOID.COMMON_NAME, "O": NameOID.ORGANIZATION_NAME,
                      "OU": NameOID.ORGANIZATIONAL_UNIT_NAME, "C": NameOID.COUNTRY_NAME,
                      "L": NameOID.LOCALITY_NAME, "ST": NameOID.STATE_OR_PROVINCE_NAME}
    parts = [p.split("=", 1) for p in dn.split(",")]
    name = x509.Name([x509.RelativeDistinguishedName([x509.NameAttribute(_NAME_OIDS[k], v)])
                      for k, v in reversed(parts)])
    assert name.rfc4514_string() == dn, (name.rfc4514_string(), dn)
    return name


def _new_key(kind: str):
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError(kind)


def _key_pem(key, key_format: str) -> bytes:
    """PEM of a private key: "pkcs8" (BEGIN PRIVATE KEY) or "traditional" (PKCS#1
    BEGIN RSA PRIVATE KEY, or SEC1 BEGIN EC PRIVATE KEY)."""
    from cryptography.hazmat.primitives import serialization

    fmt = {"pkcs8": serialization.PrivateFormat.PKCS8,
           "traditional": serialization.PrivateFormat.TraditionalOpenSSL}[key_format]
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


def _cert_pem(cert) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class Leaf:
    """A certificate with its key: `cert_path` holds the leaf followed by the issuing
    intermediates (a chain), `key_path` the private key."""

    subject: str
    cert: object
    key: object
    cert_path: Path
    key_path: Path

    @property
    def serial(self) -> int:
        return self.cert.serial_number

    @property
    def key_pem(self) -> str:
        return self.key_path.read_text()


class Ca:
    """A certificate authority in `directory`: `cert_path` is its certificate (PEM).
    `issue()` makes leaf certificates, `intermediate()` a CA under this one."""

    def __init__(self, directory: Path, name: str, parent: "Ca | None" = None):
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes

        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.parent = parent
        self.key = _new_key("rsa")
        subject = x509_name(f"CN={name},O=Strata Tests")
        issuer_key = parent.key if parent else self.key
        issuer_name = parent.cert.subject if parent else subject
        now = datetime.datetime.now(datetime.timezone.utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer_name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=60))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                           critical=False)
        )
        self.cert = builder.sign(issuer_key, hashes.SHA256())
        self.cert_path = directory / f"{name}.pem"
        self.cert_path.write_bytes(_cert_pem(self.cert))
        self._issued = 0

    def chain_pems(self) -> bytes:
        """This CA's certificate and its parents', excluding the root (what a server sends
        after its leaf)."""
        if self.parent is None:
            return b""
        return _cert_pem(self.cert) + self.parent.chain_pems()

    def intermediate(self, name: str) -> "Ca":
        return Ca(self.directory, name, parent=self)

    def issue(self, subject: str, *, file_stem: str | None = None, server: bool = False, client: bool = True,
              ips: tuple[str, ...] = (), dns: tuple[str, ...] = (), key_type: str = "rsa",
              key_format: str = "pkcs8", serial: int | None = None, directory: Path | None = None) -> Leaf:
        """A leaf certificate for `subject` (an RFC 2253 DN such as "CN=alice,O=Acme"),
        for TLS servers (`server`, with the SANs given) and/or clients. The files go to
        `directory` (default this CA's) as `<stem>.pem` (leaf + intermediates) and
        `<stem>.key`."""
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.x509.oid import ExtendedKeyUsageOID

        self._issued += 1
        stem = file_stem or re.sub(r"[^A-Za-z0-9]+", "-", subject).strip("-").lower()
        key = _new_key(key_type)
        now = datetime.datetime.now(datetime.timezone.utc)
        usages = []
        if server:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        if client:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509_name(subject))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(serial or x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=key_type == "rsa", data_encipherment=False,
                                         key_agreement=False, key_cert_sign=False, crl_sign=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                           critical=False)
        )
        sans = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips] + [x509.DNSName(d) for d in dns]
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        out = directory or self.directory
        out.mkdir(parents=True, exist_ok=True)
        cert_path = out / f"{stem}.pem"
        key_path = out / f"{stem}.key"
        cert_path.write_bytes(_cert_pem(cert) + self.chain_pems())
        key_path.write_bytes(_key_pem(key, key_format))
        os.chmod(key_path, 0o600)
        return Leaf(subject=subject, cert=cert, key=key, cert_path=cert_path, key_path=key_path)


class Pki:
    """Everything a TLS test needs, under `directory`:

    - `root`: the CA clients trust (`root.cert_path`) and that issues client certificates
      (the broker's `ssl_ca_file` for mTLS);
    - `intermediate`: issues the broker's certificate; `server.cert_path` holds the leaf
      and the intermediate, so a client that trusts only the root verifies the chain;
    - `server`: SAN IP:127.0.0.1 and DNS:localhost, RSA key in PKCS#8;
    - `other`: an unrelated CA (a client trusting only it must refuse the broker; a client
      certificate from it must be refused by the broker).
    """

    def __init__(self, directory: Path):
        self.directory = directory
        self.root = Ca(directory, "root-ca")
        self.intermediate = self.root.intermediate("intermediate-ca")
        self.other = Ca(directory / "other", "other-ca")
        self.server = self.server_cert("server")

    def server_cert(self, stem: str, *, key_type: str = "rsa", key_format: str = "pkcs8",
                    directory: Path | None = None) -> Leaf:
        return self.intermediate.issue("CN=strata-broker,O=Strata Tests", file_stem=stem, server=True, client=True,
                                       ips=("127.0.0.1",), dns=("localhost",), key_type=key_type,
                                       key_format=key_format, directory=directory)

    def client_cert(self, subject: str, *, ca: Ca | None = None, stem: str | None = None) -> Leaf:
        return (ca or self.root).issue(subject, file_stem=stem, server=False, client=True,
                                       directory=self.directory / "clients")


def openssl_verify(ca_file: Path, cert_file: Path) -> subprocess.CompletedProcess:
    """`openssl verify -CAfile ca -untrusted cert_file cert_file`: the intermediates in the
    certificate file are offered as untrusted, as a TLS server sends them."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl is not installed (Debian package openssl)", pytrace=False)
    return subprocess.run([openssl, "verify", "-CAfile", str(ca_file), "-untrusted", str(cert_file), str(cert_file)],
                          capture_output=True, text=True, timeout=30)


def peer_certificate(address: str, ca_file: Path | None, *, cert: Leaf | None = None, timeout: float = 10.0):
    """The certificate a TLS handshake with `address` (host:port) presents, verified
    against `ca_file` with hostname (IP) verification on; a cryptography x509 object."""
    from cryptography import x509

    host, port = address.rsplit(":", 1)
    context = tls_context(ca_file, cert)
    with socket.create_connection((host, int(port)), timeout=timeout) as raw:
        with context.wrap_socket(raw, server_hostname=host) as s:
            der = s.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der)


def tls_context(ca_file: Path | None, cert: Leaf | None = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    if ca_file is not None:
        context.load_verify_locations(cafile=str(ca_file))
    if cert is not None:
        context.load_cert_chain(str(cert.cert_path), str(cert.key_path))
    return context


def replace_files(pairs: list[tuple[Path, bytes]]) -> None:
    """Replaces each file atomically (write beside it, then rename over it), in order."""
    for path, data in pairs:
        tmp = path.with_name(path.name + ".new")
        tmp.write_bytes(data)
        os.replace(tmp, path)


# ---------------------------------------------------------------------------------------
# JWTs
# ---------------------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Jwks:
    """An RS256 signing key and the JWKS file holding its public half (`url` is its
    file:// URL). `token()` mints a JWT; `env()` the broker settings that trust it."""

    def __init__(self, directory: Path, *, issuer: str = ISSUER, audience: str = AUDIENCE,
                 kid: str = "strata-test-key-1"):
        import jwt  # PyJWT

        directory.mkdir(parents=True, exist_ok=True)
        self.issuer = issuer
        self.audience = audience
        self.kid = kid
        self.key = _new_key("rsa")
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        jwk.update(kid=kid, alg="RS256", use="sig")
        self.jwk = jwk
        self.path = directory / "jwks.json"
        self.path.write_text(json.dumps({"keys": [jwk]}, indent=2))

    @property
    def url(self) -> str:
        return self.path.resolve().as_uri()

    def env(self, sub_claim: str | None = None) -> dict[str, str]:
        env = {
            "STRATA_SASL_OAUTHBEARER_JWKS_URL": self.url,
            "STRATA_SASL_OAUTHBEARER_EXPECTED_ISSUER": self.issuer,
            "STRATA_SASL_OAUTHBEARER_EXPECTED_AUDIENCE": self.audience,
        }
        if sub_claim is not None:
            env["STRATA_SASL_OAUTHBEARER_SUB_CLAIM_NAME"] = sub_claim
        return env

    def token(self, sub: str, *, lifetime: float = 600, issuer: str | None = None, audience: str | None = None,
              kid: str | None = None, key=None, sub_claim: str = "sub", extra: dict | None = None,
              issued_at: float | None = None) -> str:
        """A signed RS256 JWT for `sub`, valid for `lifetime` seconds from now (negative:
        expired that long ago). `key` signs instead of this JWKS's key (a forgery)."""
        import jwt

        now = time.time() if issued_at is None else issued_at
        claims = {
            sub_claim: sub,
            "iss": self.issuer if issuer is None else issuer,
            "aud": self.audience if audience is None else audience,
            "iat": int(min(now, now + lifetime) - 60),
            "exp": int(now + lifetime),
            "scope": "kafka",
        }
        if sub_claim != "sub":
            claims.setdefault("sub", "not-the-principal")
        claims.update(extra or {})
        return jwt.encode(claims, key or self.key, algorithm="RS256", headers={"kid": kid or self.kid})

    def unsecured_token(self, sub: str, lifetime: float = 600) -> str:
        """An `alg: none` JWT (RFC 7515 A.5), as librdkafka's built-in unsecured token
        handler makes: no signature at all."""
        now = int(time.time())
        header = _b64url(json.dumps({"alg": "none"}).encode())
        payload = _b64url(json.dumps({"sub": sub, "iss": self.issuer, "aud": self.audience, "iat": now,
                                      "exp": now + int(lifetime)}).encode())
        return f"{header}.{payload}."

    def verify(self, token: str) -> dict:
        """Decodes `token` the way a broker should: the key by `kid` from the JWKS file,
        RS256 only, issuer and audience checked, expiry checked. Raises PyJWT's errors."""
        import jwt

        jwks = jwt.PyJWKSet.from_json(self.path.read_text())
        header = jwt.get_unverified_header(token)
        if header.get("alg") != "RS256":
            raise jwt.InvalidAlgorithmError(f"alg {header.get('alg')!r} is not RS256")
        try:
            key = jwks[header.get("kid")].key
        except KeyError:
            raise jwt.InvalidTokenError(f"no key with kid {header.get('kid')!r} in the JWKS") from None
        return jwt.decode(token, key=key, algorithms=["RS256"], audience=self.audience, issuer=self.issuer)


class TokenEndpoint:
    """An OAuth token endpoint on loopback that answers every POST with
    {"access_token": token}: librdkafka's `sasl.oauthbearer.method=oidc` (the only way kcat
    can present a signed JWT) fetches its token here. Use as a context manager."""

    def __init__(self, token: str):
        self.token = token
        self.requests = 0
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("content-length") or 0)
                self.rfile.read(length)
                endpoint.requests += 1
                body = json.dumps({"access_token": endpoint.token, "token_type": "bearer",
                                   "expires_in": 3600}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        self.thread = threading.Thread(target=self.server.serve_forever, name="token-endpoint", daemon=True)

    def __enter__(self) -> "TokenEndpoint":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------------------------------
# Users
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class User:
    name: str
    mechanism: str  # the SCRAM mechanism its bootstrap credential is stored for
    password: str


def new_password(name: str) -> str:
    """A password no log line could contain by accident (so a leak is unambiguous)."""
    return f"pw-{name}-{secrets.token_hex(12)}"


def make_users(*specs: tuple[str, str]) -> dict[str, User]:
    """{name: User} for (name, mechanism) pairs, each with a fresh random password."""
    return {name: User(name, mechanism, new_password(name)) for name, mechanism in specs}


def write_users_file(path: Path, users) -> Path:
    """The `sasl_bootstrap_users_file`: one `NAME:MECHANISM:PASSWORD` line per user."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{u.name}:{u.mechanism}:{u.password}\n" for u in users))
    os.chmod(path, 0o600)
    return path


# ---------------------------------------------------------------------------------------
# How a client connects
# ---------------------------------------------------------------------------------------


@dataclass
class Conn:
    """One client's way into one listener. `protocol` is the listener's security protocol;
    `ca_path` the CA the client trusts (TLS); `cert` its own certificate (mTLS); then the
    SASL mechanism with a username/password or an OAUTHBEARER `token`. `oidc_url` is a
    `TokenEndpoint` for kcat's OAUTHBEARER."""

    bootstrap: str
    protocol: str
    ca_path: Path | None = None
    cert: Leaf | None = None
    mechanism: str | None = None
    username: str | None = None
    password: str | None = None
    token: str | None = None
    oidc_url: str | None = None
    client_id: str = "strata-tests"

    def but(self, **changes) -> "Conn":
        return dataclasses.replace(self, **changes)

    @property
    def tls(self) -> bool:
        return self.protocol in TLS_PROTOCOLS

    @property
    def sasl(self) -> bool:
        return self.protocol in SASL_PROTOCOLS

    def describe(self) -> str:
        who = self.username or ("token" if self.token else None) or (self.cert.subject if self.cert else "anonymous")
        return f"{self.protocol}{'/' + self.mechanism if self.mechanism else ''} as {who} at {self.bootstrap}"

    # confluent-kafka (librdkafka) ------------------------------------------------------

    def confluent(self, **extra) -> dict:
        config = {**QUIET, "bootstrap.servers": self.bootstrap, "security.protocol": self.protocol,
                  "client.id": self.client_id}
        if self.tls:
            if self.ca_path is not None:
                config["ssl.ca.location"] = str(self.ca_path)
            # librdkafka's default since 2.0, spelled out: the broker's SAN must match.
            config["ssl.endpoint.identification.algorithm"] = "https"
            if self.cert is not None:
                config["ssl.certificate.location"] = str(self.cert.cert_path)
                config["ssl.key.location"] = str(self.cert.key_path)
        if self.sasl:
            config["sasl.mechanism"] = self.mechanism
            if self.mechanism == "OAUTHBEARER":
                token = self.token

                # librdkafka refuses (locally) a token whose lifetime has passed, so the
                # lifetime given to it is always in the future: whether the JWT itself is
                # expired is for the broker to find out.
                def oauth_cb(_config_str, token=token):
                    return token, time.time() + 3600

                config["oauth_cb"] = oauth_cb
            else:
                config["sasl.username"] = self.username
                config["sasl.password"] = self.password
        config.update(extra)
        return config

    # kafka-python ------------------------------------------------------------------------

    def kafka_python(self, **extra) -> dict:
        config = {"bootstrap_servers": self.bootstrap, "security_protocol": self.protocol,
                  "client_id": self.client_id}
        if self.tls:
            config["ssl_check_hostname"] = True
            if self.ca_path is not None:
                config["ssl_cafile"] = str(self.ca_path)
            if self.cert is not None:
                config["ssl_certfile"] = str(self.cert.cert_path)
                config["ssl_keyfile"] = str(self.cert.key_path)
        if self.sasl:
            config["sasl_mechanism"] = self.mechanism
            if self.mechanism == "OAUTHBEARER":
                config["sasl_oauth_token_provider"] = kafka_python_token_provider(self.token)
            else:
                config["sasl_plain_username"] = self.username
                config["sasl_plain_password"] = self.password
        config.update(extra)
        return config

    # kcat --------------------------------------------------------------------------------

    def kcat_args(self) -> list[str]:
        """`-b` and `-X` arguments for kcat (librdkafka property names)."""
        args = ["-b", self.bootstrap, "-X", f"security.protocol={self.protocol}", "-X", f"client.id={self.client_id}"]
        if self.tls:
            if self.ca_path is not None:
                args += ["-X", f"ssl.ca.location={self.ca_path}"]
            args += ["-X", "ssl.endpoint.identification.algorithm=https"]
            if self.cert is not None:
                args += ["-X", f"ssl.certificate.location={self.cert.cert_path}",
                         "-X", f"ssl.key.location={self.cert.key_path}"]
        if self.sasl and self.mechanism:
            args += ["-X", f"sasl.mechanism={self.mechanism}"]
            if self.mechanism == "OAUTHBEARER":
                if self.oidc_url is None:
                    raise AssertionError("kcat presents a signed JWT only through an OIDC token endpoint: "
                                         "give the Conn an oidc_url (security.TokenEndpoint)")
                args += ["-X", "sasl.oauthbearer.method=oidc",
                         "-X", "sasl.oauthbearer.client.id=strata-tests",
                         "-X", "sasl.oauthbearer.client.secret=not-a-broker-secret",
                         "-X", f"sasl.oauthbearer.token.endpoint.url={self.oidc_url}"]
            else:
                args += ["-X", f"sasl.username={self.username}", "-X", f"sasl.password={self.password}"]
        return args

    # kafkajs (tests/js/secure.js) ----------------------------------------------------------

    def kafkajs(self) -> dict:
        spec: dict = {"brokers": [self.bootstrap], "clientId": self.client_id, "ssl": None, "sasl": None}
        if self.tls:
            spec["ssl"] = {"ca": str(self.ca_path) if self.ca_path else None,
                           "cert": str(self.cert.cert_path) if self.cert else None,
                           "key": str(self.cert.key_path) if self.cert else None}
        if self.sasl:
            if self.mechanism == "OAUTHBEARER":
                spec["sasl"] = {"mechanism": "oauthbearer", "token": self.token}
            else:
                spec["sasl"] = {"mechanism": self.mechanism.lower(), "username": self.username,
                                "password": self.password}
        return spec


def kafka_python_token_provider(token: str):
    from kafka.net.sasl.oauth import AbstractTokenProvider

    class StaticToken(AbstractTokenProvider):
        def token(self):
            return token

    return StaticToken()


# ---------------------------------------------------------------------------------------
# A broker with listeners
# ---------------------------------------------------------------------------------------


@dataclass
class Listener:
    name: str
    protocol: str
    port: int
    advertised: str  # host:port the broker should advertise for it


@dataclass
class SecureBroker:
    broker: StrataBroker
    listeners: dict[str, Listener]
    pki: Pki | None = None
    users: dict[str, User] = field(default_factory=dict)
    jwks: Jwks | None = None
    env: dict[str, str] = field(default_factory=dict)

    def bootstrap(self, listener: str) -> str:
        return f"127.0.0.1:{self.listeners[listener].port}"

    def port(self, listener: str) -> int:
        return self.listeners[listener].port

    def protocol(self, listener: str) -> str:
        return self.listeners[listener].protocol

    def conn(self, listener: str, user: str | None = None, *, mechanism: str | None = None,
             password: str | None = None, token: str | None = None, cert: Leaf | None = None,
             ca_path: Path | None | str = "default", client_id: str = "strata-tests",
             bootstrap: str | None = None) -> Conn:
        """How a client reaches `listener`: trusting this broker's root CA unless `ca_path`
        says otherwise; as `user` with its bootstrap mechanism and password (override
        either), or with an OAUTHBEARER `token`; with a client certificate `cert`."""
        protocol = self.protocol(listener)
        if ca_path == "default":
            ca_path = self.pki.root.cert_path if self.pki else None
        c = Conn(bootstrap=bootstrap or self.bootstrap(listener), protocol=protocol, ca_path=ca_path, cert=cert,
                 client_id=client_id)
        if protocol in SASL_PROTOCOLS:
            if token is not None:
                c.mechanism, c.token = "OAUTHBEARER", token
            elif user is not None:
                known = self.users.get(user)
                c.mechanism = mechanism or (known.mechanism if known else "SCRAM-SHA-512")
                c.username = user
                c.password = password if password is not None else (known.password if known else None)
            if mechanism is not None:
                c.mechanism = mechanism
        return c

    # health and secrets ------------------------------------------------------------------

    def assert_healthy(self, what: str) -> None:
        b = self.broker
        assert b.is_running(), f"strata died ({what}):\n{b.log_tail()}"
        status, body = http_get(b.http_url + "/readyz", timeout=5)
        assert status == 200, f"/readyz answered {status} {body[:200]!r} ({what})"

    def secrets(self) -> list[str]:
        out = [u.password for u in self.users.values()]
        if self.pki is not None:
            # The body of the broker's private key (any line of it) must not be printed.
            key_lines = [line for line in self.pki.server.key_pem.splitlines() if line and "-----" not in line]
            out += key_lines[1:3]
        return out

    def assert_no_secrets(self, *extra: str) -> None:
        """None of the users' passwords, the broker key's body, nor `extra` (wrong
        passwords, tokens) appears in the broker's log or /metrics."""
        log = self.broker.log_text()
        metrics = self.broker.metrics()
        leaks = []
        for secret in [*self.secrets(), *extra]:
            if not secret:
                continue
            if secret in log:
                line = next(line for line in log.splitlines() if secret in line)
                leaks.append(f"in the log {self.broker.log_path}: {line[:300]!r}")
            if secret in metrics:
                leaks.append(f"in /metrics: a secret of {len(secret)} characters")
        if "PRIVATE KEY" in log:
            leaks.append("the log contains a PEM 'PRIVATE KEY'")
        assert not leaks, "secrets leaked:\n" + "\n".join(leaks)


def listeners_env(listeners: dict[str, Listener]) -> dict[str, str]:
    env = {"STRATA_LISTENERS": ",".join(f"{l.name}://127.0.0.1:{l.port}" for l in listeners.values())}
    if any(l.name != l.protocol for l in listeners.values()):
        env["STRATA_LISTENER_SECURITY_PROTOCOL_MAP"] = ",".join(f"{l.name}:{l.protocol}" for l in listeners.values())
    if any(l.advertised != f"127.0.0.1:{l.port}" for l in listeners.values()):
        env["STRATA_ADVERTISED_LISTENERS"] = ",".join(f"{l.name}://{l.advertised}" for l in listeners.values())
    return env


def secure_broker(broker: Callable[..., StrataBroker], tmp_path: Path, *, listeners: dict[str, str],
                  pki: Pki | None = None, client_auth: str | None = None, users: dict[str, User] | None = None,
                  mechanisms: tuple[str, ...] | None = None, jwks: Jwks | None = None,
                  advertised: dict[str, str] | None = None, ports: dict[str, int] | None = None,
                  settings: dict[str, object] | None = None, name: str | None = None,
                  expect_start: bool = True) -> SecureBroker:
    """Starts a broker (through the `broker` fixture factory) whose Kafka listeners are
    `listeners` ({name: security protocol}), each on a free loopback port (or `ports`).

    - `pki`: its `server` certificate and key become ssl_cert_file / ssl_key_file; with
      `client_auth` ("none" | "requested" | "required") its root CA is ssl_ca_file.
    - `users`: written to a sasl_bootstrap_users_file; `mechanisms`: sasl_enabled_mechanisms
      (default: all four when a listener is SASL, OAUTHBEARER only with `jwks`); `jwks`:
      the OAUTHBEARER settings.
    - `advertised`: {name: host:port} for advertised_listeners (default: not set, so the
      broker advertises its listeners).
    - `settings`: any other setting, {lower_case_name: value} -> STRATA_<NAME>.
    """
    unknown = [p for p in listeners.values() if p not in PROTOCOLS]
    assert not unknown, f"unknown security protocols {unknown}"
    ports = ports or {}
    chosen = {}
    for lname, protocol in listeners.items():
        port = ports.get(lname) or free_port()
        chosen[lname] = Listener(lname, protocol, port, (advertised or {}).get(lname, f"127.0.0.1:{port}"))
    env = listeners_env(chosen)
    if pki is not None:
        env["STRATA_SSL_CERT_FILE"] = str(pki.server.cert_path)
        env["STRATA_SSL_KEY_FILE"] = str(pki.server.key_path)
    if client_auth is not None:
        env["STRATA_SSL_CLIENT_AUTH"] = client_auth
        if pki is not None:
            env["STRATA_SSL_CA_FILE"] = str(pki.root.cert_path)
    if any(p in SASL_PROTOCOLS for p in listeners.values()):
        default = ALL_MECHANISMS if jwks is not None else tuple(m for m in ALL_MECHANISMS if m != "OAUTHBEARER")
        env["STRATA_SASL_ENABLED_MECHANISMS"] = ",".join(mechanisms or default)
    if users:
        path = write_users_file(tmp_path / f"{name or 'broker'}-users.txt", users.values())
        env["STRATA_SASL_BOOTSTRAP_USERS_FILE"] = str(path)
    if jwks is not None:
        env.update(jwks.env())
    # Group consumers (kafkajs always joins a group) need not wait 3 s for the first join.
    env["STRATA_GROUP_INITIAL_REBALANCE_DELAY_MS"] = "0"
    for key, value in (settings or {}).items():
        if value is not None:
            env["STRATA_" + key.upper()] = str(value)
    b = broker(env=env, name=name)
    sb = SecureBroker(broker=b, listeners=chosen, pki=pki, users=dict(users or {}), jwks=jwks, env=env)
    if expect_start:
        wait_for_listeners(sb)
    return sb


def wait_for_listeners(sb: SecureBroker, timeout: float = 15.0) -> None:
    """/readyz may answer before every listener is bound; waits until each accepts TCP."""
    deadline = time.monotonic() + timeout
    for lname, listener in sb.listeners.items():
        while True:
            try:
                with socket.create_connection(("127.0.0.1", listener.port), timeout=2):
                    break
            except OSError as e:
                if not sb.broker.is_running():
                    pytest.fail(f"strata exited before listener {lname} was up:\n{sb.broker.log_tail()}",
                                pytrace=False)
                if time.monotonic() > deadline:
                    pytest.fail(f"listener {lname} ({listener.protocol}) on 127.0.0.1:{listener.port} does not "
                                f"accept connections ({e}); STRATA_LISTENERS={sb.env.get('STRATA_LISTENERS')}\n"
                                f"{sb.broker.log_tail(60)}", pytrace=False)
                time.sleep(0.1)


# ---------------------------------------------------------------------------------------
# Each client library: produce, read back, and metadata
# ---------------------------------------------------------------------------------------

CLIENTS = ("confluent-kafka", "kafka-python", "kcat", "kafkajs")


def sample_records(tag: str, n: int = 30) -> list[Rec]:
    """`n` printable records on partition 0 (kcat and kafkajs carry them as text)."""
    return [Rec(partition=0, key=f"{tag}-k{i}".encode(), value=f"{tag}-v{i}-{'x' * (i % 7) * 10}".encode(),
                headers=[]) for i in range(n)]




def confluent_admin(conn: Conn, **extra):
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(conn.confluent(**extra))
    admin.poll(0)  # serves oauth_cb before the first request
    return admin


def confluent_create_topic(conn: Conn, topic: str, partitions: int = 1, timeout: float = 30) -> None:
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import NewTopic

    admin = confluent_admin(conn)
    futures = admin.create_topics([NewTopic(topic, partitions, 1)], operation_timeout=timeout,
                                  request_timeout=timeout)
    try:
        futures[topic].result(timeout=timeout + 10)
    except KafkaException as e:
        if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise


def confluent_roundtrip(conn: Conn, topic: str, n: int = 30) -> None:
    """confluent-kafka creates `topic`, produces `n` records (acks=all) and reads them back
    by offset, byte for byte."""
    confluent_create_topic(conn, topic)
    records = sample_records(topic, n)
    extra = conn.confluent()
    extra.pop("bootstrap.servers")
    confluent_produce(conn.bootstrap, topic, records, "none", **{**extra, "message.timeout.ms": 30000})
    got = confluent_consume(conn.bootstrap, topic, 1, timeout=60, **extra)
    check_against_offsets(records, got, f"confluent-kafka {conn.describe()}", timestamps=False)


def confluent_brokers(conn: Conn, timeout: float = 20) -> dict[int, str]:
    """{node id: host:port} from a Metadata request through `conn` (list_topics)."""
    admin = confluent_admin(conn)
    md = admin.list_topics(timeout=timeout)
    return {b.id: f"{b.host}:{b.port}" for b in md.brokers.values()}


def kafka_python_roundtrip(conn: Conn, topic: str, n: int = 30, timeout: float = 60) -> None:
    """kafka-python creates `topic` (KafkaAdminClient), produces `n` records and reads them
    back with assign() from the beginning."""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(**conn.kafka_python(request_timeout_ms=30000))
    try:
        try:
            admin.create_topics([NewTopic(topic, 1, 1)], timeout_ms=30000)
        except TopicAlreadyExistsError:
            pass
    finally:
        admin.close()
    records = sample_records(topic, n)
    producer = KafkaProducer(**conn.kafka_python(acks="all", enable_idempotence=False, linger_ms=5,
                                                 request_timeout_ms=30000, max_block_ms=30000))
    try:
        futures = [producer.send(topic, key=r.key, value=r.value, partition=0) for r in records]
        producer.flush(timeout=60)
        for r, f in zip(records, futures):
            r.offset = f.get(timeout=30).offset
    finally:
        producer.close(timeout=10)
    consumer = KafkaConsumer(**conn.kafka_python(group_id=None, enable_auto_commit=False,
                                                 auto_offset_reset="earliest", fetch_max_wait_ms=100,
                                                 request_timeout_ms=30000))
    got = {}
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        deadline = time.monotonic() + timeout
        while len(got) < n and time.monotonic() < deadline:
            for msgs in consumer.poll(timeout_ms=500).values():
                for m in msgs:
                    got[m.offset] = (m.key, m.value)
    finally:
        consumer.close()
    want = {r.offset: (r.key, r.value) for r in records}
    assert got == want, (f"kafka-python {conn.describe()}: read {len(got)} records, produced {n}; "
                         f"first difference at offset {next((o for o in sorted(want) if got.get(o) != want[o]), None)}")


def kcat(conn: Conn, args: list[str], *, stdin: bytes | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([kcat_binary(), *args, *conn.kcat_args()], input=stdin, capture_output=True,
                          timeout=timeout)


def kcat_roundtrip(conn: Conn, topic: str, n: int = 30) -> None:
    """kcat produces `n` records to `topic` (auto-created by the producer's Metadata
    request) and reads them back with -C -e."""
    records = sample_records(topic, n)
    data = b"".join(r.key + b"|" + r.value + b"\n" for r in records)
    produced = kcat(conn, ["-P", "-t", topic, "-p", "0", "-K", "|", "-X", "acks=all", "-X", "linger.ms=5",
                           "-X", "enable.idempotence=false", "-m", "20"], stdin=data)
    err = produced.stderr.decode(errors="replace")
    assert produced.returncode == 0 and "fail" not in err.lower() and "error" not in err.lower(), \
        f"kcat -P {conn.describe()} exited {produced.returncode}:\n{err[-2000:]}"
    consumed = kcat(conn, ["-C", "-t", topic, "-p", "0", "-o", "beginning", "-e", "-q", "-m", "20",
                           "-f", "%o|%k|%s\n"])
    err = consumed.stderr.decode(errors="replace")
    assert consumed.returncode == 0, f"kcat -C {conn.describe()} exited {consumed.returncode}:\n{err[-2000:]}"
    lines = consumed.stdout.decode().splitlines()
    want = [f"{i}|{r.key.decode()}|{r.value.decode()}" for i, r in enumerate(records)]
    assert lines == want, f"kcat {conn.describe()}: read {lines[:3]}... ({len(lines)} lines), wanted {want[:3]}..."


def kcat_has_oidc() -> bool:
    """Whether kcat's librdkafka was built with OIDC (libcurl): only then can kcat present
    a signed JWT (sasl.oauthbearer.method=oidc). Debian 12's kcat (librdkafka 2.0.2) was
    not; its only OAUTHBEARER token is librdkafka's unsecured (alg none) one."""
    result = subprocess.run([kcat_binary(), "-V"], capture_output=True, text=True, timeout=30)
    m = re.search(r"builtin\.features=(\S+)", result.stdout + result.stderr)
    return bool(m) and "oidc" in m.group(1).rstrip(")").split(",")


def kcat_metadata(conn: Conn, timeout_s: int = 15) -> subprocess.CompletedProcess:
    """`kcat -L -J`: the broker list and topics as JSON on stdout (or an error on stderr)."""
    return kcat(conn, ["-L", "-J", "-m", str(timeout_s)], timeout=timeout_s + 30)


def kcat_brokers(conn: Conn) -> dict[int, str]:
    result = kcat_metadata(conn)
    assert result.returncode == 0, f"kcat -L {conn.describe()}: {result.stderr.decode(errors='replace')[-2000:]}"
    md = json.loads(result.stdout)
    return {b["id"]: b["name"] for b in md["brokers"]}


def node_binary() -> str:
    node = shutil.which("node")
    if node is None or not (JS / "node_modules" / "kafkajs").is_dir():
        pytest.fail("node or tests/js/node_modules/kafkajs missing: scripts/install-deps.sh installs them",
                    pytrace=False)
    return node


def kafkajs(conn: Conn, action: str, timeout: float = 90, **params) -> dict:
    """Runs tests/js/secure.js with a spec for `action` ("cluster" or "roundtrip"); its JSON
    answer: {"ok": true, ...} or {"ok": false, "error": {"name", "message", ...}}."""
    spec = {"action": action, **conn.kafkajs(), **params}
    result = subprocess.run([node_binary(), str(JS / "secure.js")], input=json.dumps(spec), capture_output=True,
                            text=True, timeout=timeout)
    lines = result.stdout.strip().splitlines()
    try:
        out = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        raise AssertionError(f"kafkajs {action} {conn.describe()} printed no answer (exit {result.returncode}):\n"
                             f"{result.stdout[-1000:]}\n{result.stderr[-3000:]}") from None
    out["stderr"] = result.stderr[-3000:]
    return out


def kafkajs_roundtrip(conn: Conn, topic: str, n: int = 30) -> dict:
    """kafkajs creates `topic`, produces `n` records, reads them back in a consumer group
    and describes the cluster; returns its answer."""
    records = sample_records(topic, n)
    out = kafkajs(conn, "roundtrip", topic=topic, groupId=f"{topic}-group",
                  messages=[{"key": r.key.decode(), "value": r.value.decode()} for r in records])
    assert out["ok"], f"kafkajs {conn.describe()}: {out.get('error')}\n{out['stderr']}"
    want = [r.value.decode() for r in records]
    assert out["consumed"] == want, f"kafkajs {conn.describe()}: read {out['consumed'][:3]}..., wanted {want[:3]}..."
    return out


def roundtrip(client: str, conn: Conn, topic: str) -> None:
    {"confluent-kafka": confluent_roundtrip, "kafka-python": kafka_python_roundtrip, "kcat": kcat_roundtrip,
     "kafkajs": kafkajs_roundtrip}[client](conn, topic)


def collect_failures(checks: list[tuple[str, Callable[[], object]]]) -> list[str]:
    """Runs every check and returns the failures ("label: error"), so one test reports all
    the clients that failed rather than the first."""
    failures = []
    for label, check in checks:
        try:
            check()
        except pytest.fail.Exception as e:
            failures.append(f"{label}: {e}")
        except Exception as e:  # noqa: BLE001 (any client error is a failure to report)
            failures.append(f"{label}: {type(e).__name__}: {e}")
    return failures


def topic_name(*parts: str) -> str:
    return "-".join(re.sub(r"[^a-z0-9]+", "-", p.lower()).strip("-") for p in parts)


# ---------------------------------------------------------------------------------------
# Errors a client reports
# ---------------------------------------------------------------------------------------


class CapturedLog(logging.Handler):
    """Collects the records of a logger (kafka-python's, librdkafka's) for a `with` block."""

    def __init__(self, *names: str):
        super().__init__(level=logging.DEBUG)
        self.names = names
        self.records: list[logging.LogRecord] = []
        self._saved = {}

    def emit(self, record):
        self.records.append(record)

    def text(self) -> str:
        out = []
        for r in self.records:
            if r.levelno < logging.WARNING:
                continue
            line = r.getMessage()
            if r.exc_info and r.exc_info[1] is not None:
                line += f" {type(r.exc_info[1]).__name__}: {r.exc_info[1]}"
            out.append(line)
        return "\n".join(out)

    def __enter__(self):
        for name in self.names:
            logger = logging.getLogger(name)
            self._saved[name] = logger.level
            logger.setLevel(logging.DEBUG)
            logger.addHandler(self)
        return self

    def __exit__(self, *exc):
        for name in self.names:
            logger = logging.getLogger(name)
            logger.removeHandler(self)
            logger.setLevel(self._saved[name])


def confluent_connect_error(conn: Conn, timeout: float = 10) -> str:
    """Tries a Metadata request through `conn` that is expected to fail; returns what
    librdkafka reported (error_cb errors and log lines), failing if the request worked."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    errors: list[str] = []
    lines: list[str] = []
    logger = logging.getLogger(f"rdkafka.expect-failure.{secrets.token_hex(4)}")

    class Keep(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    logger.addHandler(Keep())
    logger.propagate = False
    config = conn.confluent(logger=logger, error_cb=lambda e: errors.append(f"{e.name()}: {e.str()}"),
                            **{"socket.timeout.ms": 5000, "reconnect.backoff.max.ms": 1000})
    admin = AdminClient(config)
    admin.poll(0)
    deadline = time.monotonic() + timeout
    failed = False
    while time.monotonic() < deadline:
        try:
            md = admin.list_topics(timeout=1)
        except KafkaException as e:
            failed = True
            errors.append(f"list_topics: {e}")
        else:
            raise AssertionError(f"confluent-kafka {conn.describe()} got metadata (brokers "
                                 f"{[(b.host, b.port) for b in md.brokers.values()]}); it should have been refused")
        admin.poll(0.2)
        if any(not e.startswith("list_topics") for e in errors):
            break  # librdkafka reported why (error_cb)
    assert failed
    admin.poll(0.3)
    return "\n".join(errors + lines)


def kafka_python_connect_error(conn: Conn) -> str:
    """Tries kafka-python's admin client through `conn` (expected to fail); returns the
    exception and kafka-python's log lines, failing if the client got metadata."""
    from kafka.admin import KafkaAdminClient

    with CapturedLog("kafka") as captured:
        try:
            admin = KafkaAdminClient(**conn.kafka_python(request_timeout_ms=6000, bootstrap_timeout_ms=6000,
                                                         reconnect_backoff_max_ms=1000))
        except Exception as e:  # noqa: BLE001
            return f"{type(e).__name__}: {e}\n{captured.text()}"
        try:
            topics = admin.list_topics()
        except Exception as e:  # noqa: BLE001
            return f"{type(e).__name__}: {e}\n{captured.text()}"
        finally:
            admin.close()
    raise AssertionError(f"kafka-python {conn.describe()} listed topics {topics}; it should have been refused")


def kcat_connect_error(conn: Conn) -> str:
    result = kcat_metadata(conn, timeout_s=4)
    err = result.stderr.decode(errors="replace")
    assert result.returncode != 0, f"kcat -L {conn.describe()} succeeded; it should have been refused:\n" \
                                   f"{result.stdout[:500]!r}"
    return err


def kafkajs_connect_error(conn: Conn) -> str:
    out = kafkajs(conn, "cluster", retries=1, timeout=60)
    assert not out["ok"], f"kafkajs {conn.describe()} described the cluster {out.get('brokers')}; " \
                          f"it should have been refused"
    e = out["error"]
    return f"{e.get('name')}: {e.get('message')} {e.get('cause') or ''}\n{out['stderr']}"


def connect_error(client: str, conn: Conn) -> str:
    return {"confluent-kafka": confluent_connect_error, "kafka-python": kafka_python_connect_error,
            "kcat": kcat_connect_error, "kafkajs": kafkajs_connect_error}[client](conn)


# What a client prints when the broker refuses its credentials: librdkafka's error_cb
# (_AUTHENTICATION) and log ("SASL authentication error: ..."), kafka-python's
# SaslAuthenticationFailedError, kafkajs's KafkaJSSASLAuthenticationError.
AUTH_FAILURE = re.compile(r"authentication (error|fail)|SaslAuthenticationFailed|SASL_AUTHENTICATION_FAILED|"
                          r"_AUTHENTICATION\b|KafkaJSSASLAuthenticationError", re.IGNORECASE)
# What a client prints when the broker's certificate does not name the address it dialled.
HOSTNAME_MISMATCH = re.compile(r"mismatch|does not match|altnames|doesn't match", re.IGNORECASE)
# What a client prints when it cannot verify the broker's certificate (OpenSSL, Python, Node).
TLS_VERIFY_FAILURE = re.compile(r"certificate verify failed|CERTIFICATE_VERIFY_FAILED|unable to get local issuer|"
                                r"self[- ]signed certificate", re.IGNORECASE)


# ---------------------------------------------------------------------------------------
# Raw protocol over TLS and SASL
# ---------------------------------------------------------------------------------------


def open_socket(conn: Conn, timeout: float = 15.0) -> socket.socket:
    """A TCP connection to `conn`'s listener, TLS-wrapped (verified, with the client
    certificate if any) when the listener is SSL or SASL_SSL."""
    host, port = conn.bootstrap.rsplit(":", 1)
    raw = socket.create_connection((host, int(port)), timeout=timeout)
    raw.settimeout(timeout)
    if not conn.tls:
        return raw
    try:
        return tls_context(conn.ca_path, conn.cert).wrap_socket(raw, server_hostname=host)
    except BaseException:
        raw.close()
        raise


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"connection closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def read_until_closed(sock: socket.socket, timeout: float = 10.0) -> tuple[bool, bytes]:
    """Reads until the peer closes (EOF, reset or a TLS error); (closed, bytes read)."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    data = b""
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
            return True, data
        except (socket.timeout, TimeoutError):
            return False, data
        if not chunk:
            return True, data
        data += chunk
    return False, data


class Wire:
    """One raw connection speaking the Kafka protocol with kafka-python's message classes
    (built from Kafka's JSON message definitions); TLS as the listener requires."""

    def __init__(self, sock: socket.socket, client_id: str = "strata-tests"):
        self.sock = sock
        self.client_id = client_id
        self.correlation_id = 0

    @classmethod
    def open(cls, conn: Conn, *, authenticate: bool = True, timeout: float = 15.0) -> "Wire":
        """Connects to `conn`'s listener; on a SASL listener, authenticates with PLAIN
        (username/password) or OAUTHBEARER (token) when `authenticate`, asserting success."""
        w = cls(open_socket(conn, timeout), conn.client_id)
        if authenticate and conn.sasl:
            if conn.token is not None:
                ok, detail = w.login_oauth(conn.token)
            else:
                ok, detail = w.login_plain(conn.username, conn.password)
            assert ok, f"raw SASL authentication as {conn.describe()} failed: {detail}"
        return w

    def __enter__(self) -> "Wire":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, request_class, version: int, **fields):
        request = request_class(version=version, **fields)
        self.correlation_id += 1
        request.with_header(correlation_id=self.correlation_id, client_id=self.client_id)
        self.sock.sendall(request.encode(header=True, framed=True))
        return request

    def receive(self, request, timeout: float = 30.0):
        """The response to `request`, or None if the broker closed the connection."""
        self.sock.settimeout(timeout)
        try:
            head = self.sock.recv(4)
            if not head:
                return None
            if len(head) < 4:
                head += recv_exact(self.sock, 4 - len(head))
            size = int.from_bytes(head, "big", signed=True)
            assert 0 <= size < 64 * 1024 * 1024, f"response frame size {size}"
            body = recv_exact(self.sock, size)
        except (ConnectionResetError, BrokenPipeError, ConnectionError, ssl.SSLError):
            return None
        except (socket.timeout, TimeoutError):
            raise AssertionError(f"no response to {type(request).__name__} within {timeout}s "
                                 f"and the connection is still open") from None
        response = request.header.get_response_class().decode(body, header=True)
        assert response.header.correlation_id == request.header.correlation_id, \
            (response.header.correlation_id, request.header.correlation_id)
        return response

    def call(self, request_class, version: int, *, timeout: float = 30.0, **fields):
        """Sends a request and returns its response, or None if the broker closed the
        connection instead of answering."""
        try:
            request = self.send(request_class, version, **fields)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            return None
        return self.receive(request, timeout)

    def call_ok(self, request_class, version: int, **fields):
        response = self.call(request_class, version, **fields)
        assert response is not None, f"the broker closed the connection instead of answering {request_class.__name__}"
        return response

    # SASL -------------------------------------------------------------------------------

    def handshake(self, mechanism: str):
        from kafka.protocol.sasl import SaslHandshakeRequest

        return self.call(SaslHandshakeRequest, 1, mechanism=mechanism)

    def authenticate_bytes(self, auth_bytes: bytes, version: int = 1):
        from kafka.protocol.sasl import SaslAuthenticateRequest

        return self.call(SaslAuthenticateRequest, version, auth_bytes=auth_bytes)

    def authenticate_plain(self, user: str, password: str, authzid: str = ""):
        """SaslHandshake(PLAIN) + SaslAuthenticate v1 with `authzid\\0user\\0password`; the
        SaslAuthenticate response (None if the broker closed the connection)."""
        h = self.handshake("PLAIN")
        assert h is not None and h.error_code == 0, f"SaslHandshake PLAIN: {h}"
        return self.authenticate_bytes(f"{authzid}\0{user}\0{password}".encode())

    def authenticate_oauth(self, token: str):
        h = self.handshake("OAUTHBEARER")
        assert h is not None and h.error_code == 0, f"SaslHandshake OAUTHBEARER: {h}"
        return self.authenticate_bytes(oauth_initial_response(token))

    def login_plain(self, user: str, password: str) -> tuple[bool, str]:
        """(authenticated?, what the broker said) for a PLAIN login."""
        r = self.authenticate_plain(user, password)
        if r is None:
            return False, "connection closed"
        if r.error_code != 0:
            return False, f"error {r.error_code}: {r.error_message}"
        return True, f"authenticated (session lifetime {getattr(r, 'session_lifetime_ms', None)} ms)"

    def login_oauth(self, token: str) -> tuple[bool, str]:
        """(authenticated?, what the broker said) for an OAUTHBEARER login. A broker may
        refuse a token as RFC 7628 says (and Kafka does): an error challenge (a JSON
        status) with error code 0, which the client answers with %x01 and the broker then
        fails; that counts as refused."""
        r = self.authenticate_oauth(token)
        if r is None:
            return False, "connection closed"
        if r.error_code != 0:
            return False, f"error {r.error_code}: {r.error_message}"
        if r.auth_bytes:
            challenge = bytes(r.auth_bytes)
            r2 = self.authenticate_bytes(b"\x01")
            if r2 is None:
                return False, f"challenge {challenge[:200]!r}, then closed"
            if r2.error_code != 0:
                return False, f"challenge {challenge[:200]!r}, then error {r2.error_code}: {r2.error_message}"
            return True, f"authenticated after a challenge {challenge[:200]!r}"
        return True, f"authenticated (session lifetime {getattr(r, 'session_lifetime_ms', None)} ms)"

    # requests the tests use ---------------------------------------------------------------

    def produce(self, topic: str, records: bytes, partition: int = 0, version: int = 7, acks: int = -1):
        """Produce (one partition); returns (error_code, base_offset, throttle_time_ms), or
        None if the connection was closed."""
        from kafka.protocol.producer import ProduceRequest

        data = ProduceRequest.TopicProduceData
        r = self.call(ProduceRequest, version, transactional_id=None, acks=acks, timeout_ms=30000,
                      topic_data=[data(name=topic, partition_data=[data.PartitionProduceData(index=partition,
                                                                                           records=records)])])
        if r is None:
            return None
        p = r.responses[0].partition_responses[0]
        return p.error_code, p.base_offset, r.throttle_time_ms

    def metadata(self, topics: list[str] | None = None, version: int = 4, allow_auto_create: bool = False):
        """Metadata: {topic: error_code} and the brokers [(node, host, port)], or None."""
        from kafka.protocol.metadata import MetadataRequest

        fields = {"topics": None if topics is None else [MetadataRequest.MetadataRequestTopic(name=t) for t in topics]}
        if version >= 4:
            fields["allow_auto_topic_creation"] = allow_auto_create
        r = self.call(MetadataRequest, version, **fields)
        if r is None:
            return None
        return ({t.name: t.error_code for t in r.topics},
                [(b.node_id, b.host, b.port) for b in r.brokers])

    def find_coordinator(self, group: str, version: int = 1):
        from kafka.protocol.metadata import FindCoordinatorRequest

        r = self.call(FindCoordinatorRequest, version, key=group, key_type=0)
        return None if r is None else r.error_code


def oauth_initial_response(token: str) -> bytes:
    """The OAUTHBEARER client's initial response (RFC 7628): gs2 header, auth=Bearer."""
    return f"n,,\x01auth=Bearer {token}\x01\x01".encode()


# ---------------------------------------------------------------------------------------
# Metrics, loosely
# ---------------------------------------------------------------------------------------

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", re.M)


def metric_sum(text: str, series_pattern: str) -> tuple[float, list[str]]:
    """The sum of every sample whose series, name and labels as printed (e.g.
    `strata_authentications_total{mechanism="PLAIN",result="failed"}`), matches
    `series_pattern` (re.search), and the series that matched; `_bucket`/`_sum`/
    `_created` series are left out. Loose on purpose: the tests do not depend on exact
    metric names."""
    total = 0.0
    names = set()
    pattern = re.compile(series_pattern)
    for m in _SAMPLE.finditer(text):
        name = m.group(1) + (m.group(2) or "")
        if m.group(1).endswith(("_bucket", "_sum", "_created")) or not pattern.search(name):
            continue
        try:
            total += float(m.group(3))
        except ValueError:
            continue
        names.add(name)
    return total, sorted(names)


def wait_for(what: str, check: Callable[[], object], timeout: float, interval: float = 0.1):
    """Like servers.wait_until, returning (value, seconds waited)."""
    started = time.monotonic()
    while True:
        value = check()
        if value:
            return value, time.monotonic() - started
        if time.monotonic() - started > timeout:
            pytest.fail(f"timed out after {timeout}s waiting for {what} (last value: {value!r})")
        time.sleep(interval)
