"""Client quotas (issue 16): AlterClientQuotas / DescribeClientQuotas (raw requests with
kafka-python's message classes: neither Python client's admin API has them), and the
producer and consumer byte-rate quotas holding real clients to the configured rate within
10%, with throttle_time_ms reported as KIP-219 says.

How the rate is measured. Kafka's quota algorithm (which Strata follows: 11 one-second
samples, the rate taken over at least 10 s, throttle = (rate - quota) / quota x window)
lets a new client burst about 10 s worth of quota at once, then holds it back until that
burst leaves the window, then lets it burst again: the long-run rate is the quota, but the
flow comes in bursts roughly every 11 s. So the rate is measured after a 2 s warm-up (the
first burst is over by then) over 22 s, two whole periods; records are small (1 KiB,
64 KiB batches), so no single request is a large share of the window. With these, any
rate limiter that holds the client to the quota on average measures within a few percent.
"""

from __future__ import annotations

import json
import time

from clients import QUIET
from security import (
    Wire,
    confluent_create_topic,
    make_users,
    metric_sum,
    secure_broker,
)
from wire import record_batch

MIB = 1024 * 1024
QUOTA = 1 * MIB
WARMUP_S = 2.0
MEASURE_S = 22.0
BACKLOG = 48 * MIB  # for the consumer: a burst of ~10 s of quota, then 24 s at the quota
EXACT, DEFAULT, ANY = 0, 1, 2  # DescribeClientQuotas match types


def alter_quotas(w: Wire, changes: list[tuple[dict[str, str | None], dict[str, float | None]]],
                 validate_only: bool = False) -> list[tuple[dict, int, str | None]]:
    """AlterClientQuotas v0: each change is ({entity type: name}, {quota key: value, or
    None to remove}); returns [(entity, error code, error message)]."""
    from kafka.protocol.admin.client_quotas import AlterClientQuotasRequest

    entry = AlterClientQuotasRequest.EntryData
    entries = [entry(entity=[entry.EntityData(entity_type=t, entity_name=n) for t, n in entity.items()],
                     ops=[entry.OpData(key=k, value=float(v or 0.0), remove=v is None) for k, v in ops.items()])
               for entity, ops in changes]
    r = w.call_ok(AlterClientQuotasRequest, 0, entries=entries, validate_only=validate_only)
    return [({e.entity_type: e.entity_name for e in x.entity}, x.error_code, x.error_message) for x in r.entries]


def describe_quotas(w: Wire, components: list[tuple[str, int, str | None]], strict: bool = False):
    """DescribeClientQuotas v0: (error code, {frozenset(entity items): {key: value}})."""
    from kafka.protocol.admin.client_quotas import DescribeClientQuotasRequest

    component = DescribeClientQuotasRequest.ComponentData
    r = w.call_ok(DescribeClientQuotasRequest, 0, strict=strict,
                  components=[component(entity_type=t, match_type=m, match=n) for t, m, n in components])
    found = {}
    for e in r.entries or []:
        found[frozenset((x.entity_type, x.entity_name) for x in e.entity)] = {v.key: v.value for v in e.values}
    return r.error_code, found


def entity(**kw) -> frozenset:
    return frozenset((k.replace("_", "-"), v) for k, v in kw.items())


def test_client_quotas_are_set_described_and_removed(broker):
    """On a broker without security settings: quotas for a user, a client-id and a
    (user, client-id) pair are stored and described exactly (by exact match, strictly, and
    all at once); validate_only stores nothing; an unknown quota key is refused; removing
    a quota removes it."""
    b = broker()
    from security import Conn

    with Wire.open(Conn(bootstrap=b.bootstrap, protocol="PLAINTEXT")) as w:
        results = alter_quotas(w, [
            ({"user": "alice"}, {"producer_byte_rate": 1048576}),
            ({"client-id": "reporting"}, {"consumer_byte_rate": 2097152}),
            ({"user": "bob", "client-id": "batch"}, {"request_percentage": 50, "producer_byte_rate": 65536}),
        ])
        assert [code for _, code, _ in results] == [0, 0, 0], results
        results = alter_quotas(w, [({"user": "carol"}, {"producer_byte_rate": 1})], validate_only=True)
        assert results[0][1] == 0, results
        results = alter_quotas(w, [({"user": "dave"}, {"no_such_quota": 5})])
        assert results[0][1] != 0, f"an unknown quota key was accepted: {results}"

        code, found = describe_quotas(w, [])
        assert code == 0
        assert found == {
            entity(user="alice"): {"producer_byte_rate": 1048576.0},
            entity(client_id="reporting"): {"consumer_byte_rate": 2097152.0},
            entity(user="bob", client_id="batch"): {"request_percentage": 50.0, "producer_byte_rate": 65536.0},
        }, found
        code, found = describe_quotas(w, [("user", EXACT, "alice")], strict=True)
        assert (code, found) == (0, {entity(user="alice"): {"producer_byte_rate": 1048576.0}}), found
        code, found = describe_quotas(w, [("client-id", EXACT, "reporting")], strict=True)
        assert found == {entity(client_id="reporting"): {"consumer_byte_rate": 2097152.0}}, found
        code, found = describe_quotas(w, [("user", EXACT, "bob")], strict=False)
        assert set(found) == {entity(user="bob", client_id="batch")}, found
        code, found = describe_quotas(w, [("user", ANY, None)], strict=True)
        assert set(found) == {entity(user="alice")}, found

        results = alter_quotas(w, [({"user": "alice"}, {"producer_byte_rate": None}),
                                   ({"user": "bob", "client-id": "batch"}, {"request_percentage": None})])
        assert [code for _, code, _ in results] == [0, 0], results
        code, found = describe_quotas(w, [])
        assert found == {
            entity(client_id="reporting"): {"consumer_byte_rate": 2097152.0},
            entity(user="bob", client_id="batch"): {"producer_byte_rate": 65536.0},
        }, found


def rate_in_window(events: list[tuple[float, int]], start: float, end: float) -> float:
    """Bytes per second of the (time, bytes) events in [start, end)."""
    return sum(n for t, n in events if start <= t < end) / (end - start)


def assert_near_quota(events: list[tuple[float, int]], started: float, what: str) -> None:
    rate = rate_in_window(events, started + WARMUP_S, started + WARMUP_S + MEASURE_S)
    per_second = [round(rate_in_window(events, started + i, started + i + 1) / MIB, 2)
                  for i in range(int(WARMUP_S + MEASURE_S))]
    assert 0.9 * QUOTA <= rate <= 1.1 * QUOTA, \
        (f"{what}: {rate / MIB:.3f} MiB/s from {WARMUP_S:.0f} s to {WARMUP_S + MEASURE_S:.0f} s, quota "
         f"{QUOTA / MIB:.3f} MiB/s (±10%); MiB in each second from the start: {per_second}")


def stats_throttle_max(stats: list[dict]) -> float:
    """The largest broker throttle time (ms) in librdkafka's statistics."""
    best = 0.0
    for s in stats:
        for b in s.get("brokers", {}).values():
            best = max(best, float(b.get("throttle", {}).get("max", 0) or 0))
    return best


def test_a_producer_byte_rate_quota_holds_a_user_to_the_rate(broker, tmp_path):
    """producer_byte_rate = 1 MiB/s for User:alice (SASL_PLAINTEXT, SCRAM-SHA-512): a
    confluent-kafka producer producing as fast as it can delivers 1 MiB/s ±10%; librdkafka
    reports broker throttling (throttle_cb and its statistics); a raw Produce as alice
    carries throttle_time_ms > 0; bob, without a quota, is not held back; throttling shows
    in /metrics."""
    from confluent_kafka import Producer

    users = make_users(("alice", "SCRAM-SHA-512"), ("bob", "SCRAM-SHA-512"))
    sb = secure_broker(broker, tmp_path, listeners={"SASL": "SASL_PLAINTEXT"}, users=users)
    alice = sb.conn("SASL", "alice")
    confluent_create_topic(alice, "quota-produce")
    with Wire.open(sb.conn("SASL", "alice", mechanism="PLAIN")) as w:
        assert alter_quotas(w, [({"user": "alice"}, {"producer_byte_rate": QUOTA})])[0][1] == 0
        assert describe_quotas(w, [("user", EXACT, "alice")], strict=True)[1] == \
            {entity(user="alice"): {"producer_byte_rate": float(QUOTA)}}

    def run(conn, seconds: float):
        delivered: list[tuple[float, int]] = []
        throttles: list[float] = []
        stats: list[dict] = []
        errors: list[str] = []

        def on_delivery(err, msg):
            if err is None:
                delivered.append((time.monotonic(), len(msg.value())))
            elif "purge" not in str(err).lower():
                errors.append(str(err))

        producer = Producer(conn.confluent(**{
            "acks": "1", "enable.idempotence": False, "linger.ms": 5, "batch.size": 65536,
            "queue.buffering.max.kbytes": 2048, "message.timeout.ms": 120000,
            "statistics.interval.ms": 500, "stats_cb": lambda s: stats.append(json.loads(s)),
            "throttle_cb": lambda e: throttles.append(e.throttle_time),
            "error_cb": lambda e: errors.append(f"{e.name()}: {e.str()}"),
        }))
        value = b"q" * 1024
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            try:
                producer.produce("quota-produce", value=value, partition=0, on_delivery=on_delivery)
            except BufferError:
                producer.poll(0.005)
                continue
            producer.poll(0)
        producer.purge(in_queue=True, in_flight=False)
        producer.flush(60)
        producer.poll(0.6)
        assert not errors, errors[:5]
        return started, delivered, throttles, stats

    started, delivered, throttles, stats = run(alice, WARMUP_S + MEASURE_S)
    assert_near_quota(delivered, started, "alice's producer")
    assert any(t > 0 for t in throttles) or stats_throttle_max(stats) > 0, \
        f"librdkafka saw no throttling (throttle_cb {throttles[:5]}, stats max {stats_throttle_max(stats)})"

    # Raw Produce v7 requests of 256 KiB as alice until a response carries throttle_time_ms
    # (at most 16 MiB: more than the window can hold at the quota). KIP-219: that response
    # comes at once, and the broker reads nothing more from the connection until the
    # throttle time has passed.
    with Wire.open(sb.conn("SASL", "alice", mechanism="PLAIN")) as w:
        batch = record_batch([b"r" * 1024] * 256)
        throttled = []
        for _ in range(64):
            result = w.produce("quota-produce", batch)
            assert result is not None and result[0] == 0, result
            if result[2] > 0:
                throttled.append(result[2])
                break
        assert throttled, "64 Produce requests of 256 KiB over a 1 MiB/s quota, and no throttle_time_ms"
        sent = time.monotonic()
        result = w.produce("quota-produce", record_batch([b"small"]))
        waited_ms = (time.monotonic() - sent) * 1000
        assert result is not None and result[0] == 0, result
        assert waited_ms >= 0.8 * throttled[0] - 50, \
            f"throttled for {throttled[0]} ms, but the next request was answered after {waited_ms:.0f} ms"

    started, delivered, _, _ = run(sb.conn("SASL", "bob"), 3.0)
    bob_rate = rate_in_window(delivered, started + 0.5, started + 3.0)
    assert bob_rate > 3 * QUOTA, f"bob, who has no quota, produced only {bob_rate / MIB:.2f} MiB/s"
    total, names = metric_sum(sb.broker.metrics(), r"throttl")
    assert total > 0, f"no throttling in /metrics (metrics matching 'throttl': {names})"
    sb.assert_no_secrets()


def test_a_consumer_byte_rate_quota_holds_a_client_id_to_the_rate(broker):
    """consumer_byte_rate = 1 MiB/s for client-id slow-reader (no security settings): a
    confluent-kafka consumer reading a 48 MiB backlog (written in small batches: a fetch
    always returns at least one whole batch) gets 1 MiB/s ±10% and is told it is throttled;
    a consumer with another client-id is not held back."""
    from confluent_kafka import Consumer, Producer, TopicPartition

    from security import Conn

    b = broker()
    plain = Conn(bootstrap=b.bootstrap, protocol="PLAINTEXT")
    confluent_create_topic(plain, "quota-fetch")
    loader = Producer({**QUIET, "bootstrap.servers": b.bootstrap, "client.id": "loader", "acks": "1",
                       "linger.ms": 5, "batch.size": 32768, "queue.buffering.max.kbytes": 65536})
    value = b"f" * 1024
    for _ in range(BACKLOG // 1024):
        while True:
            try:
                loader.produce("quota-fetch", value=value, partition=0)
                break
            except BufferError:
                loader.poll(0.01)
        loader.poll(0)
    assert loader.flush(120) == 0
    with Wire.open(plain) as w:
        assert alter_quotas(w, [({"client-id": "slow-reader"}, {"consumer_byte_rate": QUOTA})])[0][1] == 0

    def read(client_id: str, seconds: float):
        received: list[tuple[float, int]] = []
        throttles: list[float] = []
        consumer = Consumer({**QUIET, "bootstrap.servers": b.bootstrap, "client.id": client_id,
                             "group.id": "strata-tests-unused", "enable.auto.commit": False,
                             "fetch.max.bytes": 131072, "max.partition.fetch.bytes": 65536,
                             "message.max.bytes": 131072, "fetch.wait.max.ms": 100,
                             "throttle_cb": lambda e: throttles.append(e.throttle_time)})
        try:
            consumer.assign([TopicPartition("quota-fetch", 0, 0)])
            started = time.monotonic()
            while time.monotonic() - started < seconds:
                for msg in consumer.consume(1000, 0.1):
                    assert not msg.error(), msg.error()
                    received.append((time.monotonic(), len(msg.value())))
            consumer.poll(0.6)
        finally:
            consumer.close()
        return started, received, throttles

    started, received, throttles = read("slow-reader", WARMUP_S + MEASURE_S)
    total = sum(n for _, n in received)
    assert total < BACKLOG, "the slow reader read the whole backlog: the backlog is too small to measure"
    assert_near_quota(received, started, "slow-reader's consumer")
    assert any(t > 0 for t in throttles), f"the consumer was never told it was throttled: {throttles[:5]}"
    started, received, _ = read("fast-reader", 3.0)
    fast = rate_in_window(received, started + 0.5, started + 3.0)
    assert fast > 3 * QUOTA or sum(n for _, n in received) >= BACKLOG, \
        f"fast-reader, without a quota, read only {fast / MIB:.2f} MiB/s"


