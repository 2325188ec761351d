"""Kafka transactions: the transaction coordinator, control markers, the last stable
offset and read_committed consumers, through real clients.

- two confluent-kafka transactional producers interleave committed and aborted
  transactions over 5 partitions of 2 topics: a read_committed consumer (from the start,
  from the middle of an aborted transaction, and in tiny fetches) reads exactly the
  committed records at their acknowledged offsets, a read_uncommitted consumer all of
  them; each transaction leaves exactly one marker in each partition it touched; all of
  it again after kill -9 and a restart (both metadata stores);
- an open transaction holds read_committed consumers at the LSO (also for later
  non-transactional records), and ListOffsets LATEST answers the LSO for read_committed
  (consumer watermarks and the admin client) until the commit; an open transaction and
  its LSO survive kill -9, and the producer commits it after the restart;
- zombie fencing: a second producer with the same transactional.id aborts the first's
  open transaction, the first's later writes and its commit fail with a fatal error;
- a transaction whose producer is killed is aborted after transaction.timeout.ms (not
  before), and the same transactional.id can be used again afterwards;
- consume-transform-produce with send_offsets_to_transaction, written like a real EOS
  application, while the broker is killed with SIGKILL twice (the second outage longer
  than the transaction timeout, so the restarted coordinator aborts the open transaction
  and the application starts a new producer and rewinds): every input record is in the
  committed output exactly once, in order, and the group's offsets reach the input's end;
- kafka-python and kafkajs transactional producers (with offsets in the transaction);
- ListTransactions / DescribeTransactions (kafka-python's admin client: confluent-kafka's
  Python admin client has neither).

Records are identified by their values (`txn-<n>-<i>` and the like). Every wait has a
deadline; a missing feature fails with the client's error, nothing is skipped.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

import pytest
from confluent_kafka import Consumer, IsolationLevel, KafkaError, KafkaException, Producer, TopicPartition

from clients import QUIET, confluent_admin, create_topic
from servers import wait_until

JS = Path(__file__).parent / "js"

# The timed-out transaction check every 500 ms, few `__transaction_state` and
# `__consumer_offsets` partitions (quick to create), a short first rebalance delay.
ENV = {
    "STRATA_TRANSACTION_ABORT_TIMED_OUT_TRANSACTION_CLEANUP_INTERVAL_MS": "500",
    "STRATA_TRANSACTION_STATE_PARTITIONS": "5",
    "STRATA_OFFSETS_TOPIC_PARTITIONS": "5",
    "STRATA_GROUP_INITIAL_REBALANCE_DELAY_MS": "200",
}

READ_COMMITTED = "read_committed"
READ_UNCOMMITTED = "read_uncommitted"
# With its only broker down, librdkafka 2.16 re-bootstraps (KIP-1102) and forgets the broker
# it knew; a transactional producer caught by that in send_offsets_to_transaction() was seen
# to wait forever (its TxnOffsetCommit never sent, the API timeout never applied). A client
# problem, not the broker's: clients that live through a broker crash keep their broker.
NO_REBOOTSTRAP = {"metadata.recovery.strategy": "none"}
FENCED_CODES = {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH}


# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------


def tx_producer(bootstrap: str, transactional_id: str, **extra) -> Producer:
    config = {
        **QUIET,
        "bootstrap.servers": bootstrap,
        "transactional.id": transactional_id,
        "acks": "all",
        "linger.ms": 5,
        "transaction.timeout.ms": 30000,
    }
    config.update(extra)
    return Producer(config)


def must(what: str, fn, *args):
    """Calls a client method; a KafkaException fails the test with `what` and the error."""
    try:
        return fn(*args)
    except KafkaException as e:
        err = e.args[0]
    pytest.fail(f"{what} failed: {err!r}")


def init_transactions(producer: Producer, transactional_id: str, timeout: float = 30) -> None:
    must(f"init_transactions() for transactional.id {transactional_id!r} (InitProducerId with a transactional "
         "id, FindCoordinator type TRANSACTION)", producer.init_transactions, timeout)


def plain_producer(bootstrap: str) -> Producer:
    return Producer({**QUIET, "bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                     "linger.ms": 5, "message.timeout.ms": 60000})


class Deliveries:
    """A delivery-report callback: value -> (partition, offset), and the errors."""

    def __init__(self):
        self.placed: dict[bytes, tuple[str, int, int]] = {}
        self.errors: list[tuple[bytes, KafkaError]] = []

    def __call__(self, err, msg):
        if err is not None:
            self.errors.append((msg.value(), err))
        else:
            self.placed[msg.value()] = (msg.topic(), msg.partition(), msg.offset())


def produce_plain(bootstrap: str, topic: str, values: list[bytes], partition: int) -> dict[bytes, int]:
    """Non-transactional (idempotent, acks=all) produce; value -> offset."""
    p = plain_producer(bootstrap)
    d = Deliveries()
    for v in values:
        p.produce(topic, value=v, partition=partition, on_delivery=d)
    assert p.flush(60) == 0, "non-transactional records not delivered within 60s"
    assert not d.errors, f"non-transactional delivery errors: {d.errors[:5]}"
    return {v: d.placed[v][2] for v in values}


class Reader:
    """A confluent-kafka consumer on explicit partitions (assign(), no group membership)
    with a given isolation level; partition EOF events tell how far it has read."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, isolation: str,
                 start: dict[int, int] | None = None, **extra):
        self.topic = topic
        self.partitions = partitions
        self.isolation = isolation
        config = {
            **QUIET,
            "bootstrap.servers": bootstrap,
            "group.id": "strata-tests-unused",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "error",
            "isolation.level": isolation,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 100,
            "check.crcs": True,
        }
        config.update(extra)
        self.consumer = Consumer(config)
        self.start = dict(start or {})
        self.got: dict[int, list[tuple[int, bytes]]] = {p: [] for p in range(partitions)}
        self.eof: dict[int, int | None] = {p: None for p in range(partitions)}
        self.consumer.assign([TopicPartition(topic, p, self.start.get(p, 0)) for p in range(partitions)])

    def high(self, p: int = 0) -> int:
        """The high watermark ListOffsets gives this consumer: the LSO for read_committed."""
        return self.consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=30, cached=False)[1]

    def _take(self, msgs) -> None:
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    self.eof[m.partition()] = m.offset()
                    continue
                raise KafkaException(err)
            self.got[m.partition()].append((m.offset(), m.value()))

    def poll_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._take(self.consumer.consume(1000, 0.2))

    def read_to(self, ends: dict[int, int], timeout: float = 60) -> None:
        """Consumes until every partition has reported EOF at or past `ends[p]`."""
        deadline = time.monotonic() + timeout
        while not all(self.eof[p] is not None and self.eof[p] >= ends[p] for p in ends):
            if time.monotonic() > deadline:
                pytest.fail(f"{self.isolation} consumer of {self.topic}: no end of partition at {ends} within "
                            f"{timeout}s (EOF seen at {self.eof}; records read per partition: "
                            f"{ {p: len(v) for p, v in self.got.items()} })")
            self._take(self.consumer.consume(1000, 0.2))

    def read_all(self, timeout: float = 60) -> dict[int, list[tuple[int, bytes]]]:
        """Reads every partition up to its end as ListOffsets tells this consumer."""
        self.read_to({p: self.high(p) for p in range(self.partitions)}, timeout)
        for p, recs in self.got.items():
            offsets = [o for o, _ in recs]
            assert offsets == sorted(set(offsets)), (
                f"{self.isolation} {self.topic}/{p}: offsets not increasing: {offsets[:50]}")
        return self.got

    def values(self, p: int = 0) -> list[bytes]:
        return [v for _, v in self.got[p]]

    def close(self) -> None:
        self.consumer.close()


def read_log(bootstrap: str, topic: str, partitions: int, isolation: str, start: dict[int, int] | None = None,
             **extra) -> dict[int, list[tuple[int, bytes]]]:
    r = Reader(bootstrap, topic, partitions, isolation, start, **extra)
    try:
        return r.read_all()
    finally:
        r.close()


def admin_latest(bootstrap: str, topic: str, partition: int, isolation: IsolationLevel) -> int:
    """ListOffsets LATEST through confluent-kafka's admin client with an isolation level."""
    from confluent_kafka.admin import OffsetSpec

    admin = confluent_admin(bootstrap)
    tp = TopicPartition(topic, partition)
    futures = admin.list_offsets({tp: OffsetSpec.latest()}, isolation_level=isolation, request_timeout=30)
    return futures[tp].result(timeout=60).offset


def bounded(what: str, fn, timeout: float):
    """Runs `fn` in a thread (kafka-python's transactional calls wait without a deadline);
    fails if it has not returned within `timeout`; re-raises its exception."""
    box: dict = {}

    def run():
        try:
            box["result"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            box["error"] = e

    t = threading.Thread(target=run, daemon=True, name=what)
    t.start()
    t.join(timeout)
    if t.is_alive():
        pytest.fail(f"{what} did not finish within {timeout}s")
    if "error" in box:
        raise box["error"]
    return box.get("result")


def wait_for(what: str, get, ok, timeout: float = 15.0):
    """Polls `get()` until `ok(value)`; fails with the last value at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = get()
        if ok(value):
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what} (last value: {value!r})")
        time.sleep(0.1)


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    c = Consumer({**QUIET, "bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                  "isolation.level": READ_COMMITTED})
    try:
        tps = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=30)
        for tp in tps:
            if tp.error is not None:
                raise KafkaException(tp.error)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        c.close()


# ---------------------------------------------------------------------------------------
# 1. Interleaved committed and aborted transactions, two topics
# ---------------------------------------------------------------------------------------

TOPICS = {"tx-a": 3, "tx-b": 2}
SLOTS = [(t, p) for t, n in TOPICS.items() for p in range(n)]
# Round r: (does producer 1 commit, does producer 2 commit); both are open at once.
PLAN = [(True, False), (False, True), (True, True), (False, False), (True, False)]
PER_TXN = 30


def test_interleaved_transactions_read_committed_sees_only_committed(broker, metadata):
    b = broker(env=ENV, metadata=metadata)
    for topic, n in TOPICS.items():
        create_topic(b.bootstrap, topic, n)
    producers = []
    for k in (1, 2):
        p = tx_producer(b.bootstrap, f"interleave-{k}")
        init_transactions(p, f"interleave-{k}")
        producers.append(p)
    deliveries = Deliveries()
    committed: dict[int, bool] = {}       # transaction number -> committed?
    touched: dict[int, set] = {}          # transaction number -> partitions it wrote to
    for r, outcome in enumerate(PLAN):
        for p in producers:
            p.begin_transaction()
        for i in range(PER_TXN):
            for k, p in enumerate(producers):
                n = 2 * r + k
                # Producer 2's third transaction touches topic tx-a only.
                slots = SLOTS[:3] if (k == 1 and r == 2) else SLOTS
                topic, part = slots[(i + n) % len(slots)]
                touched.setdefault(n, set()).add((topic, part))
                p.produce(topic, value=b"txn-%d-%d" % (n, i), partition=part, on_delivery=deliveries)
                p.poll(0)
        # Everything of both transactions is in the log before either ends.
        for p in producers:
            assert p.flush(30) == 0, "transactional records not delivered within 30s"
        assert not deliveries.errors, f"delivery errors in round {r}: {deliveries.errors[:5]}"
        for k, (p, commit) in enumerate(zip(producers, outcome)):
            committed[2 * r + k] = commit
            must(f"round {r}: {'commit' if commit else 'abort'}_transaction of producer {k + 1}",
                 p.commit_transaction if commit else p.abort_transaction, 30)
    for p in producers:
        p.flush(10)

    def txn_of(value: bytes) -> int:
        return int(value.split(b"-")[1])

    assert len(deliveries.placed) == len(PLAN) * 2 * PER_TXN

    def check(when: str) -> None:
        for topic, n in TOPICS.items():
            all_in_log = {p: sorted((off, v) for v, (t, pp, off) in deliveries.placed.items() if t == topic and pp == p)
                          for p in range(n)}
            want_committed = {p: [(o, v) for o, v in recs if committed[txn_of(v)]] for p, recs in all_in_log.items()}
            markers = {p: sum(1 for t in touched.values() if (topic, p) in t) for p in range(n)}

            # Each partition: its data records plus exactly one marker per transaction that
            # touched it; with no transaction open, the LSO is the high watermark.
            rc, ru = Reader(b.bootstrap, topic, n, READ_COMMITTED), Reader(b.bootstrap, topic, n, READ_UNCOMMITTED)
            try:
                for p in range(n):
                    hw = ru.high(p)
                    assert hw == len(all_in_log[p]) + markers[p], (
                        f"{when}{topic}/{p}: high watermark {hw}, want {len(all_in_log[p])} records + {markers[p]} markers")
                    assert rc.high(p) == hw, f"{when}{topic}/{p}: read_committed LATEST (LSO) {rc.high(p)} != high watermark {hw}"
            finally:
                rc.close()
                ru.close()

            got = read_log(b.bootstrap, topic, n, READ_UNCOMMITTED)
            for p in range(n):
                assert got[p] == all_in_log[p], (
                    f"{when}read_uncommitted {topic}/{p} differs from what was acknowledged: got {got[p][:12]}..., "
                    f"want {all_in_log[p][:12]}...")

            got = read_log(b.bootstrap, topic, n, READ_COMMITTED)
            for p in range(n):
                extra = [v for _, v in got[p] if not committed[txn_of(v)]]
                assert not extra, f"{when}read_committed {topic}/{p} returned records of aborted transactions: {extra[:10]}"
                assert got[p] == want_committed[p], (
                    f"{when}read_committed {topic}/{p} differs from the committed records: got {got[p][:12]}..., "
                    f"want {want_committed[p][:12]}...")

            # Fetches of one batch at a time: the aborted transactions of each fetch range.
            got = read_log(b.bootstrap, topic, n, READ_COMMITTED, **{
                "max.partition.fetch.bytes": 64, "fetch.max.bytes": 1000, "message.max.bytes": 1000,
                "receive.message.max.bytes": 2000})
            for p in range(n):
                assert got[p] == want_committed[p], f"{when}read_committed {topic}/{p} in small fetches: got {got[p][:12]}..."

            # Starting inside an aborted transaction (at one of its records in each partition).
            start = {}
            for p in range(n):
                aborted = [o for o, v in all_in_log[p] if not committed[txn_of(v)]]
                start[p] = aborted[len(aborted) // 2] if aborted else 0
            got = read_log(b.bootstrap, topic, n, READ_COMMITTED, start=start)
            for p in range(n):
                want = [(o, v) for o, v in want_committed[p] if o >= start[p]]
                assert got[p] == want, (
                    f"{when}read_committed {topic}/{p} from offset {start[p]}: got {got[p][:12]}..., want {want[:12]}...")

    check("")
    # The markers, producer states and aborted-transaction index come back from disk.
    b.kill9()
    b.start()
    check("after kill -9 and restart: ")


# ---------------------------------------------------------------------------------------
# 2. An open transaction and the last stable offset
# ---------------------------------------------------------------------------------------


def test_open_transaction_holds_read_committed_at_the_lso(broker):
    b = broker(env=ENV)
    topic = "tx-open"
    create_topic(b.bootstrap, topic, 1)
    pre = [b"pre-%d" % i for i in range(5)]
    opened = [b"open-%d" % i for i in range(10)]
    post = [b"post-%d" % i for i in range(5)]
    produce_plain(b.bootstrap, topic, pre, 0)

    p = tx_producer(b.bootstrap, "open-tx")
    init_transactions(p, "open-tx")
    p.begin_transaction()
    d = Deliveries()
    # Later than any other record's timestamp, for the search by timestamp below.
    opened_at = int(time.time() * 1000) + 60_000
    for v in opened:
        p.produce(topic, value=v, partition=0, on_delivery=d, timestamp=opened_at)
    assert p.flush(30) == 0 and not d.errors, f"transactional records not delivered: {d.errors[:5]}"
    first_open = min(off for _, _, off in d.placed.values())
    assert first_open == len(pre)
    # A non-transactional producer writes after the open transaction.
    produce_plain(b.bootstrap, topic, post, 0)
    hw = len(pre) + len(opened) + len(post)

    rc = Reader(b.bootstrap, topic, 1, READ_COMMITTED)
    ru = Reader(b.bootstrap, topic, 1, READ_UNCOMMITTED)
    try:
        assert ru.high() == hw, f"read_uncommitted high watermark {ru.high()}, want {hw}"
        assert rc.high() == first_open, (
            f"read_committed ListOffsets LATEST answered {rc.high()} with a transaction open from offset "
            f"{first_open}: want the LSO {first_open} (high watermark {hw})")
        assert admin_latest(b.bootstrap, topic, 0, IsolationLevel.READ_COMMITTED) == first_open
        assert admin_latest(b.bootstrap, topic, 0, IsolationLevel.READ_UNCOMMITTED) == hw
        # ListOffsets by timestamp: the first record at or after `opened_at` is the open
        # transaction's first. A read_uncommitted caller finds it; a read_committed one
        # finds only records below the LSO, so it gets -1, as from Kafka.
        for name, reader, want in (("read_uncommitted", ru, first_open), ("read_committed", rc, -1)):
            found = reader.consumer.offsets_for_times([TopicPartition(topic, 0, opened_at)], timeout=30)
            assert found[0].offset == want, (
                f"{name}: offsets_for_times({opened_at}) answered {found[0].offset}, want {want}")
        found = rc.consumer.offsets_for_times([TopicPartition(topic, 0, 0)], timeout=30)
        assert found[0].offset == 0, f"read_committed offsets_for_times(0) answered {found[0].offset}"

        rc.read_to({0: first_open})
        rc.poll_for(2.0)
        assert rc.values() == pre, (
            f"read_committed consumer read past the LSO {first_open} of an open transaction: {rc.values()}")
        assert rc.eof[0] == first_open, f"read_committed end of partition at {rc.eof[0]}, want the LSO {first_open}"

        ru.read_to({0: hw})
        assert ru.values() == pre + opened + post, f"read_uncommitted read {ru.values()}"

        must("commit_transaction", p.commit_transaction, 30)
        # The commit marker is at offset hw.
        wait_for(f"read_committed LATEST to reach the high watermark {hw + 1} after the commit",
                 rc.high, lambda v: v == hw + 1)
        assert ru.high() == hw + 1, f"high watermark {ru.high()} after the commit, want {hw + 1} (one marker)"
        assert admin_latest(b.bootstrap, topic, 0, IsolationLevel.READ_COMMITTED) == hw + 1
        rc.read_to({0: hw + 1}, timeout=30)
        assert rc.values() == pre + opened + post, (
            f"after the commit the read_committed consumer read {rc.values()}")
        assert [o for o, _ in rc.got[0]] == list(range(hw))
    finally:
        rc.close()
        ru.close()
    # A new read_committed consumer agrees.
    got = read_log(b.bootstrap, topic, 1, READ_COMMITTED)
    assert [v for _, v in got[0]] == pre + opened + post


def test_open_transaction_survives_a_broker_crash(broker):
    """The open transaction, its LSO and the coordinator's state come back after kill -9;
    the producer then commits it."""
    b = broker(env={**ENV, "STRATA_LOG_FLUSH_MESSAGES": "1"})
    topic = "tx-open-crash"
    create_topic(b.bootstrap, topic, 2)
    p = tx_producer(b.bootstrap, "open-crash", **NO_REBOOTSTRAP)
    init_transactions(p, "open-crash")
    p.begin_transaction()
    d = Deliveries()
    opened = [b"open-%d" % i for i in range(10)]
    for i, v in enumerate(opened):
        p.produce(topic, value=v, partition=i % 2, on_delivery=d)
    assert p.flush(30) == 0 and not d.errors, f"transactional records not delivered: {d.errors[:5]}"
    post = [b"post-%d" % i for i in range(3)]
    produce_plain(b.bootstrap, topic, post, 0)

    b.kill9()
    b.start()
    rc = Reader(b.bootstrap, topic, 2, READ_COMMITTED)
    try:
        lso = {q: rc.high(q) for q in range(2)}
        assert lso == {0: 0, 1: 0}, f"after kill -9 the LSO of the open transaction is {lso}, want 0 in both partitions"
        rc.read_to({0: 0, 1: 0})
        rc.poll_for(1.0)
        assert rc.got == {0: [], 1: []}, f"read_committed read {rc.got} after the restart, the transaction still open"
        must("commit_transaction after the broker's restart", p.commit_transaction, 30)
        # 5 + 3 records and one marker in partition 0; 5 records and one marker in 1.
        wait_for("the LSO to pass the committed transaction", lambda: (rc.high(0), rc.high(1)),
                 lambda v: v == (9, 6))
        rc.read_to({0: 9, 1: 6}, timeout=30)
        assert rc.values(0) == opened[0::2] + post and rc.values(1) == opened[1::2], rc.got
    finally:
        rc.close()


# ---------------------------------------------------------------------------------------
# 3. Zombie fencing
# ---------------------------------------------------------------------------------------


def test_second_producer_with_same_transactional_id_fences_the_first(broker):
    b = broker(env=ENV)
    topic = "tx-zombie"
    create_topic(b.bootstrap, topic, 1)
    p1 = tx_producer(b.bootstrap, "zombie")
    init_transactions(p1, "zombie (first producer)")
    p1.begin_transaction()
    d1 = Deliveries()
    first = [b"p1-a-%d" % i for i in range(5)]
    for v in first:
        p1.produce(topic, value=v, partition=0, on_delivery=d1)
    assert p1.flush(30) == 0 and not d1.errors, f"first producer's records not delivered: {d1.errors[:5]}"

    p2 = tx_producer(b.bootstrap, "zombie")
    init_transactions(p2, "zombie (second producer, fencing the first)")

    # The first producer's open transaction was aborted: its marker moves the LSO up to
    # the high watermark.
    rc = Reader(b.bootstrap, topic, 1, READ_COMMITTED)
    ru = Reader(b.bootstrap, topic, 1, READ_UNCOMMITTED)
    try:
        wait_for("the fenced producer's transaction to be aborted: (LSO, high watermark) == "
                 f"({len(first) + 1}, {len(first) + 1}) (one abort marker)",
                 lambda: (rc.high(), ru.high()), lambda v: v == (len(first) + 1, len(first) + 1))
    finally:
        rc.close()
        ru.close()

    p2.begin_transaction()
    d2 = Deliveries()
    second = [b"p2-%d" % i for i in range(5)]
    for v in second:
        p2.produce(topic, value=v, partition=0, on_delivery=d2)
    assert p2.flush(30) == 0 and not d2.errors, f"second producer's records not delivered: {d2.errors[:5]}"

    # The zombie writes again and tries to commit.
    zombie = [b"p1-b-%d" % i for i in range(5)]
    # (No delivery callback: confluent-kafka raises the fatal error from flush(), with which
    # a Python callback cannot run.) Whether they were refused is checked in the log below.
    produce_error = None
    try:
        for v in zombie:
            p1.produce(topic, value=v, partition=0)
        p1.flush(15)
    except KafkaException as e:
        produce_error = e.args[0]
    with pytest.raises(KafkaException) as raised:
        p1.commit_transaction(15)
    err = raised.value.args[0]
    assert err.fatal() or err.code() in FENCED_CODES, (
        f"the fenced producer's commit failed with {err!r}, want a fatal fenced error "
        f"(produce error: {produce_error!r})")

    must("the second producer's commit_transaction", p2.commit_transaction, 30)

    got = read_log(b.bootstrap, topic, 1, READ_COMMITTED)
    assert [v for _, v in got[0]] == second, f"read_committed read {[v for _, v in got[0]]}, want only {second}"
    got = read_log(b.bootstrap, topic, 1, READ_UNCOMMITTED)
    values = [v for _, v in got[0]]
    assert values == first + second, (
        f"read_uncommitted read {values}: want the aborted {first} then {second}, and none of the "
        f"fenced producer's later writes")


# ---------------------------------------------------------------------------------------
# 4. Transaction timeout
# ---------------------------------------------------------------------------------------

ABANDON_SCRIPT = r"""
import sys, time
from confluent_kafka import Producer
bootstrap, topic, txn_id, timeout_ms = sys.argv[1:5]
p = Producer({"bootstrap.servers": bootstrap, "transactional.id": txn_id,
              "transaction.timeout.ms": int(timeout_ms), "linger.ms": 0, "acks": "all"})
p.init_transactions(30)
p.begin_transaction()
t0 = time.time()
for i in range(10):
    p.produce(topic, value=b"abandoned-%d" % i, partition=0)
assert p.flush(30) == 0
print("ready %f %f" % (t0, time.time()), flush=True)
time.sleep(600)
"""


def test_transaction_of_a_killed_producer_is_aborted_after_its_timeout(broker, tmp_path):
    b = broker(env=ENV)
    topic = "tx-timeout"
    create_topic(b.bootstrap, topic, 1)
    timeout_s = 6.0
    with open(tmp_path / "producer.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-c", ABANDON_SCRIPT, b.bootstrap, topic, "abandon",
                                 str(int(timeout_s * 1000))], stdout=subprocess.PIPE, stderr=log)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        line = proc.stdout.readline().decode() if ready else ""
        if not line.startswith("ready "):
            proc.kill()
            proc.wait(10)
            pytest.fail(f"the transactional producer did not get ready (exit {proc.poll()}): {line!r}\n"
                        f"{(tmp_path / 'producer.log').read_text(errors='replace')[-3000:]}")
        _, t_begin, t_ready = line.split()
        t_begin, t_ready = float(t_begin), float(t_ready)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()

    after = [b"after-%d" % i for i in range(10)]
    produce_plain(b.bootstrap, topic, after, 0)
    hw = 20

    rc = Reader(b.bootstrap, topic, 1, READ_COMMITTED)
    ru = Reader(b.bootstrap, topic, 1, READ_UNCOMMITTED)
    try:
        assert ru.high() == hw
        lso = rc.high()
        checked_at = time.time()
        assert checked_at < t_begin + timeout_s - 0.5, (
            f"too slow: {checked_at - t_begin:.1f}s after the transaction began, past its {timeout_s}s timeout "
            "before the test could look at the LSO")
        assert lso == 0, (f"read_committed LATEST is {lso} {checked_at - t_begin:.1f}s into a {timeout_s}s "
                          "transaction open from offset 0: want 0 (it must not end before its timeout)")
        rc.poll_for(0.5)
        assert rc.values() == [], f"read_committed read {rc.values()} while the transaction was open"

        # Aborted within the timeout plus the abort check interval (0.5s) and slack.
        limit = t_ready + timeout_s + 10
        while rc.high() != hw + 1:
            if time.time() > limit:
                pytest.fail(f"the transaction of the killed producer was not aborted {limit - t_begin:.1f}s after it "
                            f"began (timeout {timeout_s}s): read_committed LATEST {rc.high()}, high watermark "
                            f"{ru.high()}")
            time.sleep(0.1)
        aborted_at = time.time()
        assert aborted_at > t_begin + timeout_s - 0.5, (
            f"aborted {aborted_at - t_begin:.1f}s after it began, before its {timeout_s}s timeout")
        assert ru.high() == hw + 1, f"high watermark {ru.high()}, want {hw + 1} (one abort marker)"
        rc.read_to({0: hw + 1}, timeout=30)
        assert rc.values() == after, f"read_committed read {rc.values()}, want only {after}"
    finally:
        rc.close()
        ru.close()
    got = read_log(b.bootstrap, topic, 1, READ_UNCOMMITTED)
    assert [v for _, v in got[0]] == [b"abandoned-%d" % i for i in range(10)] + after

    # The transactional id is usable again.
    p = tx_producer(b.bootstrap, "abandon")
    init_transactions(p, "abandon (after the timeout)")
    p.begin_transaction()
    p.produce(topic, value=b"again", partition=0)
    must("commit_transaction after the timed-out transaction", p.commit_transaction, 30)
    got = read_log(b.bootstrap, topic, 1, READ_COMMITTED)
    assert [v for _, v in got[0]] == after + [b"again"]


# ---------------------------------------------------------------------------------------
# 5. Consume-transform-produce through broker crashes
# ---------------------------------------------------------------------------------------

EOS_IN, EOS_OUT, EOS_GROUP = "eos-in", "eos-out", "eos-app"
EOS_PARTITIONS = 2
EOS_RECORDS = 3000
EOS_BATCH = 50
EOS_TXN_TIMEOUT_MS = 5000


class EosApp:
    """A consume-transform-produce loop as a real exactly-once application writes it:
    read_committed input, output and input offsets in one transaction; on an abortable
    error abort and rewind to the committed offsets; on a fatal error a new producer
    (init_transactions fences the old one) and rewind; retriable commit errors retried."""

    def __init__(self, bootstrap: str, ends: dict[int, int], deadline: float):
        self.bootstrap = bootstrap
        self.ends = ends
        self.deadline = deadline
        self.commits = 0
        self.aborts = 0
        self.new_producers = 0
        self.errors: list[str] = []
        self.failure: str | None = None
        self.done_at: float | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True, name="eos-app")

    def log(self, what: str, err) -> None:
        self.errors.append(f"{time.strftime('%H:%M:%S')} {what}: {err!r}")

    def check_deadline(self, what: str) -> None:
        if self.stop.is_set():
            raise AssertionError(f"stopped by the test while {what}")
        if time.monotonic() > self.deadline:
            raise AssertionError(f"the EOS application ran out of time while {what} "
                                 f"({self.commits} commits; last errors: {self.errors[-8:]})")

    def run(self) -> None:
        try:
            self._run()
            self.done_at = time.monotonic()
        except BaseException:  # noqa: BLE001 - reported by the test
            self.failure = traceback.format_exc()

    def new_producer(self) -> Producer:
        self.new_producers += 1
        while True:
            self.check_deadline("initializing a transactional producer")
            p = tx_producer(self.bootstrap, "eos-app-tx", **{
                "transaction.timeout.ms": EOS_TXN_TIMEOUT_MS, "linger.ms": 2, **NO_REBOOTSTRAP})
            try:
                p.init_transactions(15)
                return p
            except KafkaException as e:
                err = e.args[0]
                self.log("init_transactions", err)
                if err.fatal() or self.new_producers == 1:
                    raise AssertionError(f"init_transactions of producer {self.new_producers} failed: {err!r}")
                if not err.retriable():
                    time.sleep(0.2)

    def rewind(self, consumer: Consumer) -> dict[int, int]:
        tps = [TopicPartition(EOS_IN, p) for p in range(EOS_PARTITIONS)]
        while True:
            self.check_deadline("reading the committed offsets")
            try:
                got = consumer.committed(tps, timeout=10)
                if all(tp.error is None for tp in got):
                    break
                self.log("committed", [tp.error for tp in got])
            except KafkaException as e:
                self.log("committed", e.args[0])
            time.sleep(0.2)
        base = {tp.partition: (tp.offset if tp.offset >= 0 else 0) for tp in got}
        consumer.assign([TopicPartition(EOS_IN, p, base[p]) for p in range(EOS_PARTITIONS)])
        return base

    def end_with_retry(self, producer: Producer, commit: bool) -> None:
        while True:
            self.check_deadline("committing" if commit else "aborting")
            try:
                if commit:
                    producer.commit_transaction(15)
                else:
                    producer.abort_transaction(15)
                return
            except KafkaException as e:
                if not e.args[0].retriable():
                    raise
                self.log("commit (retrying)" if commit else "abort (retrying)", e.args[0])

    def _run(self) -> None:
        consumer = Consumer({
            **QUIET,
            "bootstrap.servers": self.bootstrap,
            "group.id": EOS_GROUP,
            "isolation.level": READ_COMMITTED,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 100,
            "reconnect.backoff.ms": 50,
            "reconnect.backoff.max.ms": 500,
            **NO_REBOOTSTRAP,
        })
        producer = self.new_producer()
        base = self.rewind(consumer)
        committed_pos = dict(base)
        try:
            while committed_pos != self.ends:
                self.check_deadline("processing")
                batch = []
                until = time.monotonic() + 1.0
                while len(batch) < EOS_BATCH and time.monotonic() < until:
                    for m in consumer.consume(EOS_BATCH - len(batch), 0.2):
                        if m.error() is not None:
                            if m.error().fatal():
                                raise KafkaException(m.error())
                            self.log("consume", m.error())
                            continue
                        batch.append(m)
                if not batch:
                    continue
                pos = dict(base)
                fresh = []
                for m in batch:
                    if m.offset() < pos[m.partition()]:
                        self.log("stale record after a rewind", (m.partition(), m.offset()))
                        continue
                    assert m.offset() == pos[m.partition()], (
                        f"input gap: partition {m.partition()} offset {m.offset()} after {pos[m.partition()]}")
                    pos[m.partition()] = m.offset() + 1
                    fresh.append(m)
                batch = fresh
                if not batch:
                    continue
                try:
                    producer.begin_transaction()
                    for m in batch:
                        producer.produce(EOS_OUT, value=b"out-" + m.value(), partition=m.partition())
                    producer.poll(0)
                    # Transactions stay open a while, so that the crashes land inside them
                    # (and the run lasts about 30 s: 60 transactions and two outages).
                    time.sleep(0.2)
                    producer.send_offsets_to_transaction(
                        [TopicPartition(EOS_IN, p, o) for p, o in pos.items()],
                        consumer.consumer_group_metadata(), 15)
                    self.end_with_retry(producer, commit=True)
                    self.commits += 1
                    base = committed_pos = pos
                except KafkaException as e:
                    err = e.args[0]
                    self.log("transaction", err)
                    if err.txn_requires_abort() and not err.fatal():
                        try:
                            self.end_with_retry(producer, commit=False)
                            self.aborts += 1
                        except KafkaException as e2:
                            self.log("abort", e2.args[0])
                            producer = self.new_producer()
                    else:
                        # Fatal (or not abortable): a new producer fences this one and
                        # aborts its transaction.
                        producer = self.new_producer()
                    base = self.rewind(consumer)
                    committed_pos = dict(base)
        finally:
            consumer.close()


def test_consume_transform_produce_exactly_once_through_crashes(broker):
    b = broker(env={**ENV, "STRATA_LOG_FLUSH_MESSAGES": "1"})
    create_topic(b.bootstrap, EOS_IN, EOS_PARTITIONS)
    create_topic(b.bootstrap, EOS_OUT, EOS_PARTITIONS)
    inputs = {p: [b"in-%06d" % i for i in range(EOS_RECORDS) if i % EOS_PARTITIONS == p]
              for p in range(EOS_PARTITIONS)}
    for p, values in inputs.items():
        produce_plain(b.bootstrap, EOS_IN, values, p)
    ends = {p: len(v) for p, v in inputs.items()}

    started = time.monotonic()
    app = EosApp(b.bootstrap, ends, started + 120)
    app.thread.start()
    crashes = []
    try:
        for n in range(2):
            target = app.commits + (4 if n == 0 else 20)
            wait_for(f"the EOS application to commit {target} transactions (crash {n + 1})",
                     lambda: (app.commits, app.failure is not None, app.done_at is not None, app.errors[-10:]),
                     lambda v: v[0] >= target or v[1] or v[2], timeout=40)
            if app.failure or app.done_at:
                break
            # At a varying point of the transaction that follows the commit.
            time.sleep(0.07 * (n + 1))
            b.kill9()
            crashes.append((time.monotonic(), app.commits))
            # The second outage outlasts the transaction timeout: the restarted coordinator
            # aborts the open transaction, the producer's records time out.
            time.sleep(0.3 if n == 0 else EOS_TXN_TIMEOUT_MS / 1000 + 1.5)
            b.start()
    except BaseException:
        app.stop.set()
        raise
    finally:
        app.thread.join(130)
    assert not app.thread.is_alive(), f"the EOS application did not finish; last errors: {app.errors[-10:]}"
    assert app.failure is None, f"the EOS application failed:\n{app.failure}\nerrors seen: {app.errors[-15:]}"
    summary = (f"{app.commits} commits, {app.aborts} aborts, {app.new_producers} producers, crashes at "
               f"{[c for _, c in crashes]} commits, ran {(app.done_at or time.monotonic()) - started:.1f} s; "
               f"errors: {app.errors[-15:]}")
    assert len(crashes) == 2 and all(at < app.done_at for at, _ in crashes), (
        f"the application finished before two crashes hit it: {summary}")

    got = read_log(b.bootstrap, EOS_OUT, EOS_PARTITIONS, READ_COMMITTED)
    for p in range(EOS_PARTITIONS):
        values = [v for _, v in got[p]]
        want = [b"out-" + v for v in inputs[p]]
        if values != want:
            dup = len(values) - len(set(values))
            missing = sorted(set(want) - set(values))
            pytest.fail(f"committed output {EOS_OUT}/{p}: {len(values)} records ({dup} duplicates, "
                        f"{len(missing)} missing e.g. {missing[:5]}), want {len(want)} in input order; {summary}")
    assert committed_offsets(b.bootstrap, EOS_GROUP, EOS_IN, EOS_PARTITIONS) == ends, summary
    print(summary)


# ---------------------------------------------------------------------------------------
# 6. kafka-python
# ---------------------------------------------------------------------------------------


def test_kafka_python_transactional_producer(broker):
    from kafka import KafkaProducer
    from kafka import TopicPartition as KTopicPartition
    from kafka.structs import OffsetAndMetadata

    b = broker(env=ENV)
    topic = "tx-kafka-python"
    create_topic(b.bootstrap, topic, 2)
    plan = [("commit", 5), ("abort", 9), ("commit", None)]

    def work():
        producer = KafkaProducer(bootstrap_servers=b.bootstrap, transactional_id="kp-tx", acks="all",
                                 max_block_ms=30000, request_timeout_ms=30000)
        try:
            producer.init_transactions()
            for n, (end, offset) in enumerate(plan):
                producer.begin_transaction()
                futures = [producer.send(topic, value=b"kp-%d-%d" % (n, i), partition=i % 2) for i in range(20)]
                if offset is not None:
                    producer.send_offsets_to_transaction(
                        {KTopicPartition(topic, 0): OffsetAndMetadata(offset, "", -1)}, "kp-group")
                producer.flush()
                for f in futures:
                    f.get(timeout=30)
                if end == "commit":
                    producer.commit_transaction()
                else:
                    producer.abort_transaction()
        finally:
            producer.close(timeout=10)

    bounded("kafka-python transactions", work, 90)

    want = {p: [b"kp-%d-%d" % (n, i) for n in (0, 2) for i in range(20) if i % 2 == p] for p in range(2)}
    every = {p: [b"kp-%d-%d" % (n, i) for n in range(3) for i in range(20) if i % 2 == p] for p in range(2)}
    got = read_log(b.bootstrap, topic, 2, READ_COMMITTED)
    for p in range(2):
        assert [v for _, v in got[p]] == want[p], f"read_committed {topic}/{p}: {[v for _, v in got[p]]}"
    got = read_log(b.bootstrap, topic, 2, READ_UNCOMMITTED)
    for p in range(2):
        assert [v for _, v in got[p]] == every[p], f"read_uncommitted {topic}/{p}: {[v for _, v in got[p]]}"
    # The aborted transaction's offset (9) is not committed; the committed one's (5) is.
    assert committed_offsets(b.bootstrap, "kp-group", topic, 1) == {0: 5}


# ---------------------------------------------------------------------------------------
# 7. kafkajs
# ---------------------------------------------------------------------------------------


def test_kafkajs_transactional_producer(broker):
    node = shutil.which("node")
    if node is None or not (JS / "node_modules" / "kafkajs").is_dir():
        pytest.fail("node or tests/js/node_modules/kafkajs missing: scripts/install-deps.sh installs them",
                    pytrace=False)
    b = broker(env=ENV)
    topic = "tx-kafkajs"
    result = subprocess.run([node, str(JS / "transactions.js"), b.bootstrap, topic, "kjs-group"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"kafkajs transactions failed:\n{result.stderr[-3000:]}"
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert [r["end"] for r in out["results"]] == ["commit", "abort", "commit"]
    for r in out["results"]:
        assert all(s["errorCode"] == 0 for s in r["sent"]), r

    want = {p: [b"kjs-%d-%d" % (n, i) for n in (0, 2) for i in range(20) if i % 2 == p] for p in range(2)}
    every = {p: [b"kjs-%d-%d" % (n, i) for n in range(3) for i in range(20) if i % 2 == p] for p in range(2)}
    got = read_log(b.bootstrap, topic, 2, READ_COMMITTED)
    for p in range(2):
        assert [v for _, v in got[p]] == want[p], f"read_committed {topic}/{p}: {[v for _, v in got[p]]}"
    got = read_log(b.bootstrap, topic, 2, READ_UNCOMMITTED)
    for p in range(2):
        assert [v for _, v in got[p]] == every[p], f"read_uncommitted {topic}/{p}: {[v for _, v in got[p]]}"
    assert committed_offsets(b.bootstrap, "kjs-group", topic, 1) == {0: 12}


# ---------------------------------------------------------------------------------------
# 8. ListTransactions / DescribeTransactions
# ---------------------------------------------------------------------------------------


def test_list_and_describe_transactions(broker):
    from kafka import KafkaAdminClient
    from kafka import TopicPartition as KTopicPartition
    from kafka.admin import TransactionState
    from kafka.errors import TransactionalIdNotFoundError

    b = broker(env=ENV)
    topic = "tx-describe"
    create_topic(b.bootstrap, topic, 3)
    before_ms = int(time.time() * 1000)
    busy = tx_producer(b.bootstrap, "desc-busy", **{"transaction.timeout.ms": 45000})
    init_transactions(busy, "desc-busy")
    idle = tx_producer(b.bootstrap, "desc-idle", **{"transaction.timeout.ms": 20000})
    init_transactions(idle, "desc-idle")
    busy.begin_transaction()
    for i in range(6):
        busy.produce(topic, value=b"busy-%d" % i, partition=i % 2)
    assert busy.flush(30) == 0

    admin = bounded("KafkaAdminClient", lambda: KafkaAdminClient(bootstrap_servers=b.bootstrap,
                                                                 request_timeout_ms=30000), 60)
    try:
        described = bounded("DescribeTransactions", lambda: admin.describe_transactions(["desc-busy", "desc-idle"]), 60)
        d = described["desc-busy"]
        assert d.state == TransactionState.ONGOING, d
        assert d.topic_partitions == {KTopicPartition(topic, 0), KTopicPartition(topic, 1)}, d
        assert d.transaction_timeout_ms == 45000, d
        assert d.producer_id >= 0 and d.producer_epoch >= 0, d
        assert before_ms - 5000 <= d.transaction_start_time_ms <= int(time.time() * 1000) + 5000, d
        i = described["desc-idle"]
        assert i.state == TransactionState.EMPTY, i
        assert i.topic_partitions == set() and i.transaction_timeout_ms == 20000, i
        assert i.producer_id != d.producer_id

        def listing(**filters) -> dict[str, tuple[int, TransactionState]]:
            by_broker = bounded("ListTransactions", lambda: admin.list_transactions(**filters), 60)
            return {t.transactional_id: (t.producer_id, t.state) for ts in by_broker.values() for t in ts}

        assert listing() == {"desc-busy": (d.producer_id, TransactionState.ONGOING),
                             "desc-idle": (i.producer_id, TransactionState.EMPTY)}
        assert set(listing(state_filters=["Ongoing"])) == {"desc-busy"}
        assert set(listing(producer_id_filters=[i.producer_id])) == {"desc-idle"}

        must("commit_transaction", busy.commit_transaction, 30)
        idle.begin_transaction()
        idle.produce(topic, value=b"idle-0", partition=2)
        assert idle.flush(30) == 0
        must("abort_transaction", idle.abort_transaction, 30)

        def states():
            got = bounded("DescribeTransactions", lambda: admin.describe_transactions(["desc-busy", "desc-idle"]), 60)
            return got if (got["desc-busy"].state, got["desc-idle"].state) == (
                TransactionState.COMPLETE_COMMIT, TransactionState.COMPLETE_ABORT) else None

        described = wait_until("DescribeTransactions to show CompleteCommit and CompleteAbort", states, timeout=15,
                               interval=0.3)
        assert described["desc-busy"].topic_partitions == set(), described["desc-busy"]
        assert described["desc-idle"].producer_id == i.producer_id
        assert set(listing(state_filters=["Ongoing"])) == set()
        assert listing()["desc-busy"] == (d.producer_id, TransactionState.COMPLETE_COMMIT)

        with pytest.raises(TransactionalIdNotFoundError):
            bounded("DescribeTransactions", lambda: admin.describe_transactions(["no-such-transaction"]), 60)
    finally:
        admin.close()


# ---------------------------------------------------------------------------------------
# 7. Operators: a hanging transaction (open in partitions, lost by its coordinator)
# ---------------------------------------------------------------------------------------


def strata_cli(b, *args: str) -> subprocess.CompletedProcess:
    from servers import strata_binary

    result = subprocess.run([str(strata_binary()), *args, "--admin", b.admin], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, f"strata {' '.join(args)} exited {result.returncode}:\n{result.stderr}"
    return result


def write_txn_markers(bootstrap: str, producer_id: int, epoch: int, commit: bool, topic: str,
                      partitions: list[int], coordinator_epoch: int = 0) -> dict[int, int]:
    """Kafka's WriteTxnMarkers v1 (flexible), by hand, as `kafka-transactions.sh abort`
    sends it to a partition's leader: partition -> error code."""
    import struct

    from wire import compact_string, connect, frame, read_uvarint, recv_frame, request_header, uvarint

    body = uvarint(2)  # one marker
    body += struct.pack(">qh?", producer_id, epoch, commit)
    body += uvarint(2) + compact_string(topic)
    body += uvarint(len(partitions) + 1) + b"".join(struct.pack(">i", p) for p in partitions)
    body += b"\x00"  # topic's tagged fields
    body += struct.pack(">i", coordinator_epoch) + b"\x00"  # marker's tagged fields
    body += b"\x00"
    sock = connect(bootstrap)
    try:
        sock.sendall(frame(request_header(27, 1, 7, flexible=True) + body))
        answer = recv_frame(sock)
    finally:
        sock.close()
    (correlation,) = struct.unpack_from(">i", answer, 0)
    assert correlation == 7 and answer[4] == 0, answer
    markers, pos = read_uvarint(answer, 5)
    assert markers == 2, answer
    (answered_pid,) = struct.unpack_from(">q", answer, pos)
    assert answered_pid == producer_id, answer
    topics, pos = read_uvarint(answer, pos + 8)
    assert topics == 2, answer
    name_len, pos = read_uvarint(answer, pos)
    pos += name_len - 1
    count, pos = read_uvarint(answer, pos)
    errors = {}
    for _ in range(count - 1):
        partition, error = struct.unpack_from(">ih", answer, pos)
        pos += 7  # and its tagged fields
        errors[partition] = error
    return errors


def test_hanging_transaction_found_and_aborted_in_its_partitions(broker):
    """A transaction its coordinator lost (here: the `__transaction_state` logs are gone
    after a crash) hangs: no timeout aborts it, and read_committed readers of its
    partitions stay at the LSO. `strata transactions find-hanging` finds it (open in a
    partition, no coordinator has it open); `strata transactions abort-partition` and
    Kafka's WriteTxnMarkers (what `kafka-transactions.sh abort` sends) write abort markers,
    and the partitions' readers move on without its records."""
    b = broker(env=ENV)
    topic = "hang"
    create_topic(b.bootstrap, topic, 2)
    for part in (0, 1):
        produce_plain(b.bootstrap, topic, [b"pre-%d" % part], part)
    p = tx_producer(b.bootstrap, "hanger", **{"transaction.timeout.ms": 2000})
    init_transactions(p, "hanger")
    p.begin_transaction()
    d = Deliveries()
    for part in (0, 1):
        p.produce(topic, value=b"lost-%d" % part, partition=part, on_delivery=d)
    assert p.flush(30) == 0 and not d.errors, d.errors
    b.kill9()
    del p  # its process is gone as far as the broker knows
    logs = b.data_dir / "logs"
    lost = [d for d in logs.iterdir() if d.name.startswith("__transaction_state.")]
    assert lost, f"no __transaction_state logs under {logs}"
    for gone in lost:
        shutil.rmtree(gone)
    b.start()

    # Well past its 2 s timeout, nothing has aborted it.
    time.sleep(4)
    for part in (0, 1):
        assert admin_latest(b.bootstrap, topic, part, IsolationLevel.READ_COMMITTED) == 1, \
            f"partition {part}: the transaction should hang (LSO 1)"
    listed = json.loads(strata_cli(b, "transactions", "list", "--json").stdout)
    assert [t for t in listed if t["transactional_id"] == "hanger"] == [], listed
    hanging = json.loads(strata_cli(b, "transactions", "find-hanging", "--json").stdout)
    assert sorted((h["topic"], h["partition"], h["first_offset"], h["high_watermark"]) for h in hanging) == \
        [(topic, 0, 1, 2), (topic, 1, 1, 2)], hanging
    assert all(h["transactional_id"] is None for h in hanging), hanging
    producer_id, epoch = hanging[0]["producer_id"], hanging[0]["producer_epoch"]
    assert {(h["producer_id"], h["producer_epoch"]) for h in hanging} == {(producer_id, epoch)}

    # Partition 0 through the CLI, partition 1 through Kafka's API.
    aborted = json.loads(strata_cli(b, "transactions", "abort-partition", "--topic", topic, "--partition", "0",
                                    "--producer-id", str(producer_id), "--json").stdout)
    assert aborted["marker_offset"] == 2, aborted
    assert write_txn_markers(b.bootstrap, producer_id, epoch, False, topic, [1]) == {1: 0}
    # A marker for a partition this broker does not have is refused, not invented.
    assert write_txn_markers(b.bootstrap, producer_id, epoch, False, topic, [7]) == {7: 3}

    for part in (0, 1):
        assert admin_latest(b.bootstrap, topic, part, IsolationLevel.READ_COMMITTED) == 3
    got = read_log(b.bootstrap, topic, 2, READ_COMMITTED)
    assert {part: [v for _, v in got[part]] for part in (0, 1)} == {0: [b"pre-0"], 1: [b"pre-1"]}, got
    assert json.loads(strata_cli(b, "transactions", "find-hanging", "--json").stdout) == []
    # A new producer with the same transactional id starts afresh.
    fresh = tx_producer(b.bootstrap, "hanger")
    init_transactions(fresh, "hanger")
    fresh.begin_transaction()
    fresh.produce(topic, value=b"after", partition=0)
    must("commit_transaction", fresh.commit_transaction, 30)
    produce_plain(b.bootstrap, topic, [b"tail"], 0)
    got = read_log(b.bootstrap, topic, 1, READ_COMMITTED)
    assert [v for _, v in got[0]] == [b"pre-0", b"after", b"tail"], got
