"""Authorization with ACLs (issue 16): `authorizer=acl`, super user `User:admin`,
`allow_everyone_if_no_acl_found=false`, ACLs managed with confluent-kafka's AdminClient
(CreateAcls / DescribeAcls / DeleteAcls).

The broker has one SASL_PLAINTEXT listener named CLIENT (listener_security_protocol_map)
with SCRAM-SHA-512 and PLAIN; confluent-kafka logs in with SCRAM-SHA-512, raw requests
(tests/security.Wire) with PLAIN. Denials must carry Kafka's error codes:
TOPIC_AUTHORIZATION_FAILED (29), GROUP_AUTHORIZATION_FAILED (30),
CLUSTER_AUTHORIZATION_FAILED (31). The mTLS test checks certificate principals
(`User:<subject DN>`) and ssl_principal_mapping_rules.
"""

from __future__ import annotations

import time

import pytest

from security import (
    CLUSTER_AUTHORIZATION_FAILED,
    GROUP_AUTHORIZATION_FAILED,
    TOPIC_AUTHORIZATION_FAILED,
    Pki,
    Wire,
    collect_failures,
    confluent_admin,
    confluent_create_topic,
    make_users,
    metric_sum,
    secure_broker,
    wait_for,
)
from wire import record_batch

LISTENER = "CLIENT"


def acl_broker(broker, tmp_path, *extra_users: str):
    users = make_users(*[(u, "SCRAM-SHA-512") for u in ("admin", "alice", "bob", "carol", *extra_users)])
    return secure_broker(broker, tmp_path, listeners={LISTENER: "SASL_PLAINTEXT"}, users=users,
                         mechanisms=("SCRAM-SHA-512", "PLAIN"),
                         settings={"authorizer": "acl", "super_users": "User:admin",
                                   "allow_everyone_if_no_acl_found": "false"})


def resource_type(name: str):
    """confluent-kafka's ResourceType; librdkafka calls Kafka's CLUSTER resource (type 4)
    BROKER."""
    from confluent_kafka.admin import ResourceType

    return ResourceType["BROKER" if name == "CLUSTER" else name]


def binding(resource: str, name: str, principal: str, operation: str, *, pattern: str = "LITERAL",
            permission: str = "ALLOW", host: str = "*"):
    from confluent_kafka.admin import AclBinding, AclOperation, AclPermissionType, ResourcePatternType

    return AclBinding(resource_type(resource), name, ResourcePatternType[pattern], principal, host,
                      AclOperation[operation], AclPermissionType[permission])


def acl_filter(resource: str = "ANY", name: str | None = None, principal: str | None = None,
               operation: str = "ANY", *, pattern: str = "ANY", permission: str = "ANY", host: str | None = None):
    from confluent_kafka.admin import AclBindingFilter, AclOperation, AclPermissionType, ResourcePatternType

    return AclBindingFilter(resource_type(resource), name, ResourcePatternType[pattern], principal, host,
                            AclOperation[operation], AclPermissionType[permission])


def as_tuple(b) -> tuple:
    return (b.restype.name, b.name, b.resource_pattern_type.name, b.principal, b.host, b.operation.name,
            b.permission_type.name)


class Acls:
    """confluent-kafka's ACL calls through one (kept referenced) AdminClient."""

    def __init__(self, conn):
        self.admin = confluent_admin(conn)

    def create(self, *bindings) -> None:
        for b, f in self.admin.create_acls(list(bindings), request_timeout=30).items():
            f.result(timeout=60)

    def describe(self, flt=None) -> set[tuple]:
        return {as_tuple(b) for b in self.admin.describe_acls(flt or acl_filter(), request_timeout=30).result(timeout=60)}

    def delete(self, *filters) -> set[tuple]:
        out = set()
        for flt, f in self.admin.delete_acls(list(filters), request_timeout=30).items():
            out |= {as_tuple(b) for b in f.result(timeout=60)}
        return out


def create_topics(sb, *topics: str) -> None:
    for t in topics:
        confluent_create_topic(sb.conn(LISTENER, "admin"), t)


def raw(sb, user: str) -> Wire:
    """A raw connection logged in as `user` with PLAIN."""
    return Wire.open(sb.conn(LISTENER, user, mechanism="PLAIN"))


def produce_error(w: Wire, topic: str) -> int:
    result = w.produce(topic, record_batch([b"acl-test"]))
    assert result is not None, f"the broker closed the connection on a Produce to {topic}"
    return result[0]


def confluent_produce_one(conn, topic: str, timeout_ms: int = 15000):
    """Produces one record with confluent-kafka; returns the delivery error (None if
    delivered)."""
    from confluent_kafka import Producer

    producer = Producer(conn.confluent(**{"acks": "all", "enable.idempotence": False,
                                          "message.timeout.ms": timeout_ms}))
    outcome = []
    producer.produce(topic, value=b"v", on_delivery=lambda err, msg: outcome.append(err))
    producer.flush(timeout_ms / 1000 + 20)
    assert outcome, "no delivery report"
    return outcome[0]


def test_a_prefixed_write_acl_allows_orders_topics_and_nothing_else(broker, tmp_path):
    """alice has WRITE on the prefix `orders-` (and nothing else; Kafka's WRITE implies
    DESCRIBE): she produces to orders-eu and orders-us, and is refused on payments with
    TOPIC_AUTHORIZATION_FAILED (raw Produce and confluent-kafka's delivery report). The
    denials are counted in /metrics."""
    from confluent_kafka import KafkaError

    sb = acl_broker(broker, tmp_path)
    create_topics(sb, "orders-eu", "orders-us", "payments")
    acls = Acls(sb.conn(LISTENER, "admin"))
    acls.create(binding("TOPIC", "orders-", "User:alice", "WRITE", pattern="PREFIXED"))
    with raw(sb, "alice") as w:
        assert produce_error(w, "orders-eu") == 0
        assert produce_error(w, "orders-us") == 0
        assert produce_error(w, "payments") == TOPIC_AUTHORIZATION_FAILED
        assert produce_error(w, "orders") == TOPIC_AUTHORIZATION_FAILED, "`orders` does not start with `orders-`"
    alice = sb.conn(LISTENER, "alice")
    assert confluent_produce_one(alice, "orders-eu") is None
    err = confluent_produce_one(alice, "payments")
    assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, \
        f"confluent-kafka producing to payments as alice: {err}"
    total, names = metric_sum(sb.broker.metrics(), r"authoriz\w*(deni|fail)|denial|denied")
    assert total >= 2, f"authorization denials not counted in /metrics (matching metrics: {names})"
    sb.assert_no_secrets()


def test_a_consumer_without_read_on_its_group_is_refused(broker, tmp_path):
    """bob may READ orders-eu but has no ACL on the group orders-app: FindCoordinator
    answers GROUP_AUTHORIZATION_FAILED and confluent-kafka's group consumer reports it.
    Once READ on the group is granted, a new consumer in that group reads the records."""
    from confluent_kafka import Consumer, KafkaError, Producer

    sb = acl_broker(broker, tmp_path)
    create_topics(sb, "orders-eu")
    producer = Producer(sb.conn(LISTENER, "admin").confluent(**{"acks": "all"}))
    for i in range(5):
        producer.produce("orders-eu", value=b"order-%d" % i, partition=0)
    assert producer.flush(30) == 0
    acls = Acls(sb.conn(LISTENER, "admin"))
    acls.create(binding("TOPIC", "orders-eu", "User:bob", "READ"))

    with raw(sb, "bob") as w:
        assert w.find_coordinator("orders-app") == GROUP_AUTHORIZATION_FAILED

    def consumer():
        c = Consumer(sb.conn(LISTENER, "bob").confluent(**{
            "group.id": "orders-app", "auto.offset.reset": "earliest", "enable.auto.commit": False,
            "session.timeout.ms": 10000}))
        c.subscribe(["orders-eu"])
        return c

    c = consumer()
    try:
        deadline = time.monotonic() + 30
        seen = []
        while time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                seen.append(msg.error())
                if msg.error().code() == KafkaError.GROUP_AUTHORIZATION_FAILED:
                    break
            else:
                pytest.fail(f"bob consumed {msg.value()!r} in orders-app without READ on the group")
        assert any(e.code() == KafkaError.GROUP_AUTHORIZATION_FAILED for e in seen), \
            f"confluent-kafka did not report GROUP_AUTHORIZATION_FAILED within 30 s: {seen}"
    finally:
        c.close()

    acls.create(binding("GROUP", "orders-app", "User:bob", "READ"))
    c = consumer()
    try:
        got = []
        deadline = time.monotonic() + 45
        while len(got) < 5 and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError.GROUP_AUTHORIZATION_FAILED:
                    continue  # the refusal from before the grant may still be queued
                pytest.fail(f"consumer error after READ on the group was granted: {msg.error()}")
            got.append(msg.value())
        assert got == [b"order-%d" % i for i in range(5)], got
        c.commit(asynchronous=False)
    finally:
        c.close()


def test_metadata_hides_topics_the_user_may_not_describe(broker, tmp_path):
    """alice (WRITE on `orders-`) sees orders-eu in a Metadata request for all topics but
    not payments or secrets; carol (no ACLs) sees none of them; admin sees all. Asking for
    payments by name gives alice TOPIC_AUTHORIZATION_FAILED and no partitions."""
    from confluent_kafka import KafkaError

    sb = acl_broker(broker, tmp_path)
    create_topics(sb, "orders-eu", "payments", "secrets")
    Acls(sb.conn(LISTENER, "admin")).create(binding("TOPIC", "orders-", "User:alice", "WRITE", pattern="PREFIXED"))
    mine = {"orders-eu", "payments", "secrets"}

    def listed(user: str) -> set[str]:
        return set(confluent_admin(sb.conn(LISTENER, user)).list_topics(timeout=20).topics) & mine

    assert listed("admin") == mine
    assert listed("alice") == {"orders-eu"}, "alice may describe only orders-eu"
    assert listed("carol") == set(), "carol may describe nothing"
    with raw(sb, "alice") as w:
        topics, _ = w.metadata(None)
        assert set(topics) & mine == {"orders-eu"}, topics
        topics, _ = w.metadata(["payments"])
        assert topics.get("payments", TOPIC_AUTHORIZATION_FAILED) == TOPIC_AUTHORIZATION_FAILED, topics
    md = confluent_admin(sb.conn(LISTENER, "alice")).list_topics(topic="payments", timeout=20)
    t = md.topics.get("payments")
    assert t is None or (t.error is not None and t.error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
                         and not t.partitions), f"alice asking for payments: {t} {t.error if t else ''}"


def test_acl_changes_take_effect_within_a_second(broker, tmp_path):
    """On one open connection: alice produces to orders-eu under a literal WRITE ACL; the
    ACL is deleted and within 1 s the same connection (and a new one) is refused; it is
    created again and within 1 s she produces again."""
    sb = acl_broker(broker, tmp_path)
    create_topics(sb, "orders-eu")
    acls = Acls(sb.conn(LISTENER, "admin"))
    grant = binding("TOPIC", "orders-eu", "User:alice", "WRITE")
    acls.create(grant)
    with raw(sb, "alice") as w:
        assert produce_error(w, "orders-eu") == 0
        deleted = acls.delete(acl_filter("TOPIC", "orders-eu", "User:alice", "WRITE", pattern="LITERAL"))
        assert deleted == {as_tuple(grant)}, deleted
        _, took = wait_for("the deleted ACL to stop alice",
                           lambda: produce_error(w, "orders-eu") == TOPIC_AUTHORIZATION_FAILED, 1.0, interval=0.05)
        with raw(sb, "alice") as fresh:
            assert produce_error(fresh, "orders-eu") == TOPIC_AUTHORIZATION_FAILED
        acls.create(grant)
        wait_for("the re-created ACL to let alice in", lambda: produce_error(w, "orders-eu") == 0, 1.0, interval=0.05)


def test_super_users_bypass_everything(broker, tmp_path):
    """admin is a super user: with no ACL for it, and even with DENY ACLs naming it, it
    produces, consumes in any group, creates topics, manages ACLs and SCRAM credentials.
    carol, with no ACLs, is refused each of these with Kafka's codes."""
    from confluent_kafka import Consumer, KafkaError, KafkaException
    from confluent_kafka.admin import ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion

    sb = acl_broker(broker, tmp_path)
    admin_conn = sb.conn(LISTENER, "admin")
    acls = Acls(admin_conn)
    acls.create(binding("TOPIC", "*", "User:admin", "ALL", permission="DENY"),
                binding("GROUP", "*", "User:admin", "ALL", permission="DENY"),
                binding("CLUSTER", "kafka-cluster", "User:admin", "ALL", permission="DENY"))
    create_topics(sb, "payments")
    with raw(sb, "admin") as w:
        assert produce_error(w, "payments") == 0
        assert w.find_coordinator("any-group") == 0
    assert confluent_produce_one(admin_conn, "payments") is None
    c = Consumer(admin_conn.confluent(**{"group.id": "admin-group", "auto.offset.reset": "earliest"}))
    try:
        c.subscribe(["payments"])
        got = []
        deadline = time.monotonic() + 45
        while len(got) < 2 and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is not None:
                assert not msg.error(), msg.error()
                got.append(msg)
        assert len(got) == 2, f"admin read {len(got)} of 2 records in a group"
        c.commit(asynchronous=False)
    finally:
        c.close()
    futures = acls.admin.alter_user_scram_credentials([UserScramCredentialUpsertion(
        "erin", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096), b"erin-password-123")])
    futures["erin"].result(timeout=60)
    assert len(acls.describe()) == 3

    carol = sb.conn(LISTENER, "carol")
    with raw(sb, "carol") as w:
        assert produce_error(w, "payments") == TOPIC_AUTHORIZATION_FAILED
        assert w.find_coordinator("any-group") == GROUP_AUTHORIZATION_FAILED
        # DescribeAcls without DESCRIBE on the cluster: CLUSTER_AUTHORIZATION_FAILED on the
        # wire. (librdkafka drops DescribeAcls' top-level error code and reports an empty
        # listing, so confluent-kafka cannot show this refusal.)
        from kafka.protocol.admin import DescribeAclsRequest
        described = w.call_ok(DescribeAclsRequest, 1, resource_type_filter=1, resource_name_filter=None,
                              pattern_type_filter=1, principal_filter=None, host_filter=None,
                              operation=1, permission_type=1)
        assert described.error_code == CLUSTER_AUTHORIZATION_FAILED, described
        assert not described.resources, described
    carol_admin = confluent_admin(carol)

    def refused(future, want: int):
        try:
            result = future.result(timeout=60)
        except KafkaException as e:
            assert e.args[0].code() == want, f"refused with {e.args[0]}, want {KafkaError(want).name()}"
        else:
            raise AssertionError(f"carol was answered {result!r}, want {KafkaError(want).name()}")

    from confluent_kafka.admin import NewTopic

    failures = collect_failures([
        ("carol CreateAcls", lambda: refused(next(iter(carol_admin.create_acls(
            [binding("TOPIC", "payments", "User:carol", "READ")], request_timeout=30).values())),
            KafkaError.CLUSTER_AUTHORIZATION_FAILED)),
        ("carol AlterUserScramCredentials", lambda: refused(carol_admin.alter_user_scram_credentials(
            [UserScramCredentialUpsertion("carol", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096),
                                          b"carol-new-password")])["carol"], KafkaError.CLUSTER_AUTHORIZATION_FAILED)),
        ("carol CreateTopics", lambda: refused(carol_admin.create_topics([NewTopic("carols-topic", 1, 1)],
                                                                         request_timeout=30)["carols-topic"],
                                               KafkaError.TOPIC_AUTHORIZATION_FAILED)),
    ])
    assert not failures, "\n".join(failures)


def test_describe_acls_returns_what_was_created(broker, tmp_path):
    """Bindings of every kind (literal, prefixed and wildcard patterns; allow and deny; a
    host; topic, group, cluster and transactional-id resources) come back from
    DescribeAcls exactly, and by filter (principal, MATCH on a topic name); DeleteAcls
    returns what it removed."""
    sb = acl_broker(broker, tmp_path)
    acls = Acls(sb.conn(LISTENER, "admin"))
    created = [
        binding("TOPIC", "orders-", "User:alice", "WRITE", pattern="PREFIXED"),
        binding("TOPIC", "orders-", "User:alice", "DESCRIBE", pattern="PREFIXED"),
        binding("TOPIC", "orders-eu", "User:bob", "READ"),
        binding("GROUP", "orders-app", "User:bob", "READ"),
        binding("TOPIC", "*", "User:carol", "DESCRIBE"),
        binding("TOPIC", "payments", "User:carol", "READ", permission="DENY", host="127.0.0.1"),
        binding("CLUSTER", "kafka-cluster", "User:alice", "IDEMPOTENT_WRITE"),
        binding("TRANSACTIONAL_ID", "orders-tx-", "User:alice", "WRITE", pattern="PREFIXED"),
    ]
    acls.create(*created)
    everything = {as_tuple(b) for b in created}
    assert acls.describe() == everything
    assert acls.describe(acl_filter(principal="User:bob")) == {as_tuple(b) for b in created[2:4]}
    matching = acls.describe(acl_filter("TOPIC", "orders-eu", pattern="MATCH"))
    assert matching == {as_tuple(b) for b in (created[0], created[1], created[2], created[4])}, matching
    assert acls.describe(acl_filter(permission="DENY")) == {as_tuple(created[5])}
    removed = acls.delete(acl_filter(principal="User:carol"))
    assert removed == {as_tuple(created[4]), as_tuple(created[5])}
    assert acls.describe() == everything - removed


def test_least_privilege_producer_and_consumer(broker, tmp_path):
    """The worked example of docs/security.md. ACLs:

        User:orders-producer  WRITE, DESCRIBE  topic  PREFIXED orders-
        User:orders-consumer  READ             topic  PREFIXED orders-
        User:orders-consumer  READ             group  LITERAL  orders-app

    The producer is idempotent (librdkafka's enable.idempotence=true); since Kafka 3.0
    (KIP-679) InitProducerId for an idempotent producer needs only WRITE on some topic, not
    IDEMPOTENT_WRITE on the cluster. The consumer reads in group orders-app and commits.
    Neither can do the other's job, and neither reaches payments."""
    from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

    sb = acl_broker(broker, tmp_path, "orders-producer", "orders-consumer")
    create_topics(sb, "payments")
    confluent_create_topic(sb.conn(LISTENER, "admin"), "orders-eu", partitions=3)
    acls = Acls(sb.conn(LISTENER, "admin"))
    acls.create(binding("TOPIC", "orders-", "User:orders-producer", "WRITE", pattern="PREFIXED"),
                binding("TOPIC", "orders-", "User:orders-producer", "DESCRIBE", pattern="PREFIXED"),
                binding("TOPIC", "orders-", "User:orders-consumer", "READ", pattern="PREFIXED"),
                binding("GROUP", "orders-app", "User:orders-consumer", "READ"))

    producer_conn = sb.conn(LISTENER, "orders-producer")
    consumer_conn = sb.conn(LISTENER, "orders-consumer")
    errors = []
    producer = Producer(producer_conn.confluent(**{
        "enable.idempotence": True, "acks": "all", "message.timeout.ms": 30000,
        "error_cb": lambda e: errors.append(f"{e.name()}: {e.str()}")}))
    delivered = []
    for i in range(100):
        producer.produce("orders-eu", key=b"order-%d" % i, value=b"amount=%d" % i,
                         on_delivery=lambda err, msg: delivered.append(err))
        producer.poll(0)
    assert producer.flush(60) == 0
    assert delivered == [None] * 100, [e for e in delivered if e][:3]
    assert not errors, f"the idempotent producer reported errors: {errors[:3]}"

    consumer = Consumer(consumer_conn.confluent(**{
        "group.id": "orders-app", "auto.offset.reset": "earliest", "enable.auto.commit": False}))
    try:
        consumer.subscribe(["orders-eu"])
        got = []
        deadline = time.monotonic() + 60
        while len(got) < 100 and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert not msg.error(), f"the consumer got {msg.error()}"
            got.append(msg.key())
        assert sorted(got) == sorted(b"order-%d" % i for i in range(100)), f"read {len(got)} of 100"
        committed = consumer.commit(asynchronous=False)
        assert all(tp.error is None for tp in committed), committed
        positions = consumer.committed([TopicPartition("orders-eu", p) for p in range(3)], timeout=30)
        assert sum(max(tp.offset, 0) for tp in positions) == 100, positions
    finally:
        consumer.close()

    with raw(sb, "orders-consumer") as w:
        assert produce_error(w, "orders-eu") == TOPIC_AUTHORIZATION_FAILED, "the consumer must not write"
    with raw(sb, "orders-producer") as w:
        assert w.find_coordinator("orders-app") == GROUP_AUTHORIZATION_FAILED, "the producer must not join the group"
        assert produce_error(w, "payments") == TOPIC_AUTHORIZATION_FAILED
    with raw(sb, "orders-consumer") as w:
        assert w.find_coordinator("other-app") == GROUP_AUTHORIZATION_FAILED
    err = confluent_produce_one(consumer_conn, "orders-eu", timeout_ms=10000)
    assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, err


def test_mtls_principals_and_mapping_rules(broker, tmp_path):
    """With client certificates, the principal is `User:<subject DN>` (RFC 2253), or
    what ssl_principal_mapping_rules make of it:

    - rules `RULE:^CN=(.*?),O=Acme$/$1/L,DEFAULT`: CN=Admin,O=Acme is User:admin (the
      super user), CN=Alice,O=Acme is User:alice, CN=carol,O=Other stays
      User:CN=carol,O=Other;
    - no rules: CN=alice,O=Acme is User:CN=alice,O=Acme.
    Each may write only where its ACL says."""
    pki = Pki(tmp_path / "pki")
    admin_cert = pki.client_cert("CN=Admin,O=Acme")
    alice_cert = pki.client_cert("CN=Alice,O=Acme")
    carol_cert = pki.client_cert("CN=carol,O=Other")
    sb = secure_broker(broker, tmp_path, listeners={"SSL": "SSL"}, pki=pki, client_auth="required", name="rules",
                       settings={"authorizer": "acl", "super_users": "User:admin",
                                 "ssl_principal_mapping_rules": "RULE:^CN=(.*?),O=Acme$/$1/L,DEFAULT"})
    admin = sb.conn("SSL", cert=admin_cert)
    for t in ("t-alice", "t-carol"):
        confluent_create_topic(admin, t)
    acls = Acls(admin)
    acls.create(binding("TOPIC", "t-alice", "User:alice", "WRITE"),
                binding("TOPIC", "t-carol", "User:CN=carol,O=Other", "WRITE"))
    with Wire.open(sb.conn("SSL", cert=alice_cert)) as w:
        assert produce_error(w, "t-alice") == 0, "CN=Alice,O=Acme should map to User:alice"
        assert produce_error(w, "t-carol") == TOPIC_AUTHORIZATION_FAILED
    with Wire.open(sb.conn("SSL", cert=carol_cert)) as w:
        assert produce_error(w, "t-carol") == 0, "CN=carol,O=Other matches no rule: User:CN=carol,O=Other"
        assert produce_error(w, "t-alice") == TOPIC_AUTHORIZATION_FAILED
    with Wire.open(admin) as w:
        assert produce_error(w, "t-carol") == 0 and produce_error(w, "t-alice") == 0

    plain = secure_broker(broker, tmp_path, listeners={"SSL": "SSL"}, pki=pki, client_auth="required", name="norules",
                          settings={"authorizer": "acl", "super_users": "User:CN=Admin,O=Acme"})
    alice_dn = pki.client_cert("CN=alice,O=Acme", stem="alice-lower")
    mallory = pki.client_cert("CN=mallory,O=Acme")
    admin = plain.conn("SSL", cert=admin_cert)
    confluent_create_topic(admin, "t")
    Acls(admin).create(binding("TOPIC", "t", "User:CN=alice,O=Acme", "WRITE"))
    with Wire.open(plain.conn("SSL", cert=alice_dn)) as w:
        assert produce_error(w, "t") == 0, "the principal of CN=alice,O=Acme is User:CN=alice,O=Acme"
    with Wire.open(plain.conn("SSL", cert=mallory)) as w:
        assert produce_error(w, "t") == TOPIC_AUTHORIZATION_FAILED
