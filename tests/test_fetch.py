"""Fetch behaviour clients depend on: long polling wakes up on new data, out-of-range
offsets are reported, and a record larger than the consumer's fetch limits still arrives."""

import threading
import time

from confluent_kafka import Consumer, KafkaError, TopicPartition
from kafka import KafkaConsumer
from kafka import TopicPartition as KTopicPartition

from clients import QUIET, confluent_produce, create_topic, Rec

NOW = int(time.time() * 1000)


def test_long_poll_wakes_up_on_new_records(broker):
    b = broker()
    create_topic(b.bootstrap, "poll", 1)
    consumer = Consumer({**QUIET, "bootstrap.servers": b.bootstrap, "group.id": "strata-tests-unused",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 5000, "auto.offset.reset": "error"})
    try:
        consumer.assign([TopicPartition("poll", 0, 0)])
        assert consumer.poll(1.0) is None  # parked in a long poll on an empty partition
        rec = Rec(partition=0, key=b"k", value=b"wake up", timestamp=NOW)
        threading.Timer(0.5, lambda: confluent_produce(b.bootstrap, "poll", [rec], "none")).start()
        msg = None
        deadline = time.monotonic() + 60
        while msg is None and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
        assert msg is not None and msg.error() is None, msg and msg.error()
        assert (msg.offset(), msg.value()) == (0, b"wake up")
    finally:
        consumer.close()


def test_offset_past_the_end_is_out_of_range(broker):
    b = broker()
    create_topic(b.bootstrap, "range", 1)
    confluent_produce(b.bootstrap, "range", [Rec(partition=0, key=b"k", value=b"v%d" % i, timestamp=NOW)
                                             for i in range(10)], "none")
    consumer = Consumer({**QUIET, "bootstrap.servers": b.bootstrap, "group.id": "strata-tests-unused",
                         "enable.auto.commit": False, "auto.offset.reset": "error"})
    try:
        consumer.assign([TopicPartition("range", 0, 50)])
        error = None
        deadline = time.monotonic() + 60
        while error is None and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None:
                assert msg.error() is not None, f"read offset {msg.offset()} past the end"
                error = msg.error()
        assert error is not None and error.code() == KafkaError._AUTO_OFFSET_RESET, error
    finally:
        consumer.close()
    # With auto.offset.reset=latest the consumer lands on the end and gets the next record.
    consumer = Consumer({**QUIET, "bootstrap.servers": b.bootstrap, "group.id": "strata-tests-unused",
                         "enable.auto.commit": False, "auto.offset.reset": "latest"})
    try:
        consumer.assign([TopicPartition("range", 0, 50)])
        # Keep producing until the reset consumer sees something: it must be a new record.
        msg = None
        deadline = time.monotonic() + 60
        n = 0
        while msg is None and time.monotonic() < deadline:
            confluent_produce(b.bootstrap, "range", [Rec(partition=0, key=b"k", value=b"after%d" % n, timestamp=NOW)],
                              "none")
            n += 1
            end = time.monotonic() + 1
            while msg is None and time.monotonic() < end:
                msg = consumer.poll(0.2)
        assert msg is not None and msg.error() is None, msg and msg.error()
        assert msg.offset() >= 10 and msg.value().startswith(b"after"), (msg.offset(), msg.value())
    finally:
        consumer.close()


def test_record_larger_than_fetch_limits_still_arrives(broker):
    b = broker()
    create_topic(b.bootstrap, "big", 1)
    big = Rec(partition=0, key=b"big", value=bytes(range(256)) * 3500, timestamp=NOW)  # ~900 KB
    small = [Rec(partition=0, key=b"s%d" % i, value=b"x" * 10, timestamp=NOW) for i in range(3)]
    confluent_produce(b.bootstrap, "big", small[:1] + [big] + small[1:], "none", **{"linger.ms": 0})
    consumer = Consumer({**QUIET, "bootstrap.servers": b.bootstrap, "group.id": "strata-tests-unused",
                         "enable.auto.commit": False, "auto.offset.reset": "error",
                         "max.partition.fetch.bytes": 1024, "fetch.max.bytes": 1024, "message.max.bytes": 1000,
                         "check.crcs": True})
    try:
        consumer.assign([TopicPartition("big", 0, 0)])
        values = []
        deadline = time.monotonic() + 60
        while len(values) < 4 and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None:
                assert msg.error() is None, msg.error()
                values.append(msg.value())
        assert values == [r.value for r in small[:1] + [big] + small[1:]]
    finally:
        consumer.close()

    consumer = KafkaConsumer(bootstrap_servers=b.bootstrap, group_id=None, enable_auto_commit=False,
                             max_partition_fetch_bytes=1024, fetch_max_bytes=1024, auto_offset_reset="none")
    try:
        tp = KTopicPartition("big", 0)
        consumer.assign([tp])
        consumer.seek(tp, 0)
        values = []
        deadline = time.monotonic() + 60
        while len(values) < 4 and time.monotonic() < deadline:
            for msgs in consumer.poll(timeout_ms=500).values():
                values += [m.value for m in msgs]
        assert values == [r.value for r in small[:1] + [big] + small[1:]]
    finally:
        consumer.close()


def test_sigterm_does_not_wait_out_a_long_poll(broker):
    """A consumer parked in a long poll (fetch.wait.max.ms up to 300 s, client-chosen) must
    not hold up a SIGTERM shutdown until its wait expires: an orchestrator's grace period
    (Kubernetes: 30 s) would end in SIGKILL. The consumer here has even gone away."""
    b = broker(env={"STRATA_SHUTDOWN_TIMEOUT_MS": "600000"})
    create_topic(b.bootstrap, "parked", 1)
    consumer = Consumer({**QUIET, "bootstrap.servers": b.bootstrap, "group.id": "strata-tests-unused",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 300000})
    consumer.assign([TopicPartition("parked", 0, 0)])
    assert consumer.poll(2.0) is None
    consumer.close()
    started = time.monotonic()
    code = b.stop(timeout=30)  # fails the test if strata is still running 30 s after SIGTERM
    assert code == 0, b.log_tail()
    assert time.monotonic() - started < 30
