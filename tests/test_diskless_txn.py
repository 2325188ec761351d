"""Transactions on diskless topics, black-box: two brokers sharing etcd and one moto
bucket (tests/diskless_cluster.py), real confluent-kafka transactional producers and
read_committed consumers. The producer writes through broker A (zone r1), the consumers
read through broker B (zone r2): B learns of A's data, the markers and the open
transactions only through the shared stores.

- One transaction spanning a diskless topic (4 partitions) and a replicated one is
  committed, the next aborted, a third committed: read_committed through B sees exactly
  the committed records at their acknowledged offsets, in order, read_uncommitted sees
  all; every partition's end is its records plus one marker per transaction, and
  ListOffsets LATEST agrees for both isolation levels through both brokers.
- An open transaction holds a read_committed consumer at its first offset (the LSO), also
  for later non-transactional records written through the other broker; after the commit
  everything appears.
- Consume-transform-produce between two diskless topics with send_offsets_to_transaction:
  an aborted transaction's offsets are not committed, a committed one's are exactly what
  was sent, and the output holds only the committed transaction's records.
- A transaction left open past transaction.timeout.ms is aborted by the coordinator (an
  abort marker in the diskless partition), read_committed never sees its records, the
  producer is fenced.
- After merging (every run in merged segments), read_committed from the beginning and from
  inside an aborted transaction still skips the aborted records, including a transaction
  that stayed open across several merge rounds before it was aborted (merging stops at
  the open transaction's first offset meanwhile).
- A transactional batch outside any transaction (by hand) is refused through both
  brokers and leaves no open transaction behind; a real transaction then works.
"""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, IsolationLevel, KafkaError, KafkaException, Producer, TopicPartition

from clients import QUIET
from diskless_cluster import DISKLESS, World, attach_logs, start_world, zone
from servers import wait_until
from test_transactions import READ_COMMITTED, READ_UNCOMMITTED, Deliveries, Reader, must, read_log

FENCED_CODES = {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH}
A, B = 1, 2


@pytest.fixture(scope="module")
def world(tmp_path_factory, etcd, moto, strata_bin):
    yield from start_world(tmp_path_factory, etcd, moto, {
        "STRATA_TRANSACTION_ABORT_TIMED_OUT_TRANSACTION_CLEANUP_INTERVAL_MS": "300",
    }, name="dltxn")


@pytest.fixture
def w(world, request, etcd, moto) -> World:
    return attach_logs(world, request, etcd, moto)


# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------


def tx_producer(w: World, transactional_id: str, **extra) -> Producer:
    """A transactional producer bootstrapped to broker A and sent there for diskless
    partitions; init_transactions done."""
    p = Producer({**QUIET, "bootstrap.servers": w.a.bootstrap, **zone(A, "dl-txn"),
                  "transactional.id": transactional_id, "acks": "all", "linger.ms": 5,
                  "transaction.timeout.ms": 30000, **extra})
    must(f"init_transactions() for {transactional_id!r}", p.init_transactions, 30)
    return p


def plain_producer(w: World, node: int) -> Producer:
    b = w.broker(node)
    return Producer({**QUIET, "bootstrap.servers": b.bootstrap, **zone(node, "dl-plain"), "acks": "all",
                     "enable.idempotence": True, "linger.ms": 5, "message.timeout.ms": 60000})


def reader(w: World, node: int, topic: str, partitions: int, isolation: str, start=None, **extra) -> Reader:
    """A consumer bootstrapped to broker `node` and reading diskless partitions there."""
    return Reader(w.broker(node).bootstrap, topic, partitions, isolation, start, **zone(node, "dl-read"), **extra)


def read_through(w: World, node: int, topic: str, partitions: int, isolation: str, start=None,
                 **extra) -> dict[int, list[tuple[int, bytes]]]:
    return read_log(w.broker(node).bootstrap, topic, partitions, isolation, start, **zone(node, "dl-read"), **extra)


def latest(w: World, node: int, topic: str, partition: int, isolation: IsolationLevel) -> int:
    """ListOffsets LATEST through the admin client, sent to broker `node`."""
    from confluent_kafka.admin import AdminClient, OffsetSpec

    admin = AdminClient({**QUIET, "bootstrap.servers": w.broker(node).bootstrap, **zone(node, "dl-admin")})
    tp = TopicPartition(topic, partition)
    return admin.list_offsets({tp: OffsetSpec.latest()}, isolation_level=isolation,
                              request_timeout=30)[tp].result(timeout=60).offset


def delivered(p: Producer, d: Deliveries, what: str) -> None:
    """Flushes; fails unless every record was acknowledged. A transaction in error
    (e.g. AddPartitionsToTxn refused) purges its records: the failure then names the
    transaction's own error, which commit_transaction reports."""
    left = p.flush(30)
    if left == 0 and not d.errors:
        return
    try:
        p.commit_transaction(10)
        reason = "commit_transaction succeeded"
    except KafkaException as e:
        reason = f"the transaction's error: {e.args[0]!r}"
    pytest.fail(f"{what}: {reason}; {left} records unacknowledged, delivery errors {d.errors[:3]}", pytrace=False)


def wait_value(what: str, get, want, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        value = get()
        if value == want:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}: {value!r}, want {want!r}", pytrace=False)
        time.sleep(0.1)


def wait_ends(w: World, topic: str, ends: dict[int, int], lso: dict[int, int] | None = None,
              nodes=(A, B)) -> None:
    """Waits until ListOffsets LATEST through each broker answers `ends[p]` for
    read_uncommitted and `lso[p]` (default: the end) for read_committed. A broker learns
    of another's commits (and markers) through its etcd watch, a moment later; one that
    never does fails here."""
    for node in nodes:
        for p, end in ends.items():
            wait_value(f"{topic}/{p}: read_uncommitted LATEST through broker {node}",
                       lambda: latest(w, node, topic, p, IsolationLevel.READ_UNCOMMITTED), end)
            wait_value(f"{topic}/{p}: read_committed LATEST (the LSO) through broker {node}",
                       lambda: latest(w, node, topic, p, IsolationLevel.READ_COMMITTED), (lso or ends)[p])


def run_transaction(p: Producer, slots: list[tuple[str, int]], tag: str, per_slot: int, commit: bool,
                    deliveries: Deliveries) -> dict[tuple[str, int], list[bytes]]:
    """One transaction writing `per_slot` records to each (topic, partition), flushed
    (all acknowledged) before it ends; returns what it wrote where."""
    must(f"begin_transaction ({tag})", p.begin_transaction)
    wrote: dict[tuple[str, int], list[bytes]] = {}
    for i in range(per_slot):
        for topic, part in slots:
            value = f"{tag}-{topic}-{part}-{i}".encode()
            p.produce(topic, value=value, partition=part, on_delivery=deliveries)
            wrote.setdefault((topic, part), []).append(value)
        p.poll(0)
    delivered(p, deliveries, f"transaction {tag}")
    must(f"{'commit' if commit else 'abort'}_transaction ({tag})",
         p.commit_transaction if commit else p.abort_transaction, 30)
    return wrote


# ---------------------------------------------------------------------------------------
# 1. Committed and aborted transactions over a diskless and a replicated topic
# ---------------------------------------------------------------------------------------


def test_committed_and_aborted_transactions_across_diskless_and_replicated(w):
    diskless, replicated = "txn-dl", "txn-rep"
    parts = {diskless: 4, replicated: 2}
    w.create(diskless, 4, DISKLESS)
    w.create(replicated, 2)
    slots = [(t, p) for t, n in parts.items() for p in range(n)]
    producer = tx_producer(w, "dl-txn-mixed")
    d = Deliveries()
    plan = [("c1", True), ("a2", False), ("c3", True)]
    outcome: dict[bytes, bool] = {}
    for tag, commit in plan:
        for values in run_transaction(producer, slots, tag, 5, commit, d).values():
            outcome.update({v: commit for v in values})
    assert len(d.placed) == len(outcome) == 3 * 5 * len(slots)

    for topic, n in parts.items():
        acked = {p: sorted((o, v) for v, (t, pp, o) in d.placed.items() if t == topic and pp == p) for p in range(n)}
        want = {p: [(o, v) for o, v in acked[p] if outcome[v]] for p in range(n)}
        # Each partition: 15 records and 3 markers, no transaction open: LSO = end.
        wait_ends(w, topic, {p: 3 * 5 + 3 for p in range(n)})
        for p in range(n):
            # The markers sit between the transactions: dense offsets except one per marker.
            offsets = [o for o, _ in acked[p]]
            assert offsets == [*range(0, 5), *range(6, 11), *range(12, 17)], f"{topic}/{p}: acknowledged at {offsets}"

        got = read_through(w, B, topic, n, READ_COMMITTED)
        for p in range(n):
            aborted = [v for _, v in got[p] if not outcome[v]]
            assert not aborted, f"read_committed {topic}/{p} through broker B returned aborted records: {aborted[:5]}"
            assert got[p] == want[p], f"read_committed {topic}/{p} through broker B: got {got[p]}, want {want[p]}"
        got = read_through(w, B, topic, n, READ_UNCOMMITTED)
        for p in range(n):
            assert got[p] == acked[p], f"read_uncommitted {topic}/{p} through broker B: got {got[p]}, want {acked[p]}"
        # One fetch per batch: the aborted list must match each small range too.
        got = read_through(w, B, topic, n, READ_COMMITTED, **{
            "max.partition.fetch.bytes": 64, "fetch.max.bytes": 1000, "message.max.bytes": 1000,
            "receive.message.max.bytes": 2000})
        for p in range(n):
            assert got[p] == want[p], f"read_committed {topic}/{p} in small fetches: got {got[p]}, want {want[p]}"
        # From inside the aborted transaction.
        got = read_through(w, B, topic, n, READ_COMMITTED, start={p: 7 for p in range(n)})
        for p in range(n):
            assert got[p] == [(o, v) for o, v in want[p] if o >= 7], \
                f"read_committed {topic}/{p} from offset 7: {got[p]}"


# ---------------------------------------------------------------------------------------
# 2. An open transaction holds read_committed back
# ---------------------------------------------------------------------------------------


def test_open_transaction_holds_read_committed_at_its_first_offset(w):
    topic = "txn-open"
    w.create(topic, 1, DISKLESS)
    pre = [b"pre-%d" % i for i in range(5)]
    opened = [b"open-%d" % i for i in range(10)]
    post = [b"post-%d" % i for i in range(5)]

    plain = plain_producer(w, A)
    for v in pre:
        plain.produce(topic, value=v, partition=0)
    assert plain.flush(30) == 0

    p = tx_producer(w, "dl-txn-open")
    must("begin_transaction", p.begin_transaction)
    d = Deliveries()
    for v in opened:
        p.produce(topic, value=v, partition=0, on_delivery=d)
    delivered(p, d, "the open transaction")
    first_open = min(o for _, _, o in d.placed.values())
    assert first_open == len(pre), d.placed
    # A non-transactional producer writes after the open transaction, through broker B.
    later = plain_producer(w, B)
    dl = Deliveries()
    for v in post:
        later.produce(topic, value=v, partition=0, on_delivery=dl)
    assert later.flush(30) == 0 and not dl.errors, dl.errors[:5]
    assert sorted(o for _, _, o in dl.placed.values()) == list(range(15, 20)), dl.placed
    hw = len(pre) + len(opened) + len(post)

    wait_ends(w, topic, {0: hw}, {0: first_open})

    rc = reader(w, B, topic, 1, READ_COMMITTED)
    ru = reader(w, B, topic, 1, READ_UNCOMMITTED)
    try:
        assert rc.high() == first_open, f"read_committed consumer's end {rc.high()} with a transaction open"
        rc.read_to({0: first_open})
        rc.poll_for(1.5)
        assert rc.values() == pre, f"read_committed read past the LSO {first_open}: {rc.values()}"
        assert rc.eof[0] == first_open, f"read_committed end of partition at {rc.eof[0]}, want {first_open}"
        ru.read_to({0: hw})
        assert ru.values() == pre + opened + post, f"read_uncommitted read {ru.values()}"

        must("commit_transaction", p.commit_transaction, 30)
        # One commit marker at hw; nothing open.
        wait_ends(w, topic, {0: hw + 1})
        rc.read_to({0: hw + 1}, timeout=30)
        assert rc.values() == pre + opened + post, f"after the commit the read_committed consumer read {rc.values()}"
        assert [o for o, _ in rc.got[0]] == list(range(hw))
    finally:
        rc.close()
        ru.close()


# ---------------------------------------------------------------------------------------
# 3. Consume-transform-produce
# ---------------------------------------------------------------------------------------


def committed(w: World, node: int, group: str, topic: str, partitions: int) -> dict[int, int]:
    c = Consumer({**QUIET, "bootstrap.servers": w.broker(node).bootstrap, "group.id": group,
                  "enable.auto.commit": False})
    try:
        tps = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=30)
        assert all(tp.error is None for tp in tps), [tp.error for tp in tps]
        return {tp.partition: tp.offset for tp in tps}
    finally:
        c.close()


def test_consume_transform_produce_commits_the_offsets_sent(w):
    source, sink, group, n = "ctp-in", "ctp-out", "dl-ctp", 2
    w.create(source, n, DISKLESS)
    w.create(sink, n, DISKLESS)
    plain = plain_producer(w, B)
    inputs = {p: [b"in-%d-%d" % (p, i) for i in range(20)] for p in range(n)}
    for p, values in inputs.items():
        for v in values:
            plain.produce(source, value=v, partition=p)
    assert plain.flush(30) == 0

    consumer = Consumer({**QUIET, "bootstrap.servers": w.b.bootstrap, **zone(B, "dl-ctp"), "group.id": group,
                         "isolation.level": READ_COMMITTED, "enable.auto.commit": False,
                         "auto.offset.reset": "earliest", "fetch.wait.max.ms": 100})
    producer = tx_producer(w, "dl-txn-ctp")
    try:
        consumer.subscribe([source])
        got: dict[int, list] = {p: [] for p in range(n)}
        deadline = time.monotonic() + 60
        while sum(map(len, got.values())) < 40:
            assert time.monotonic() < deadline, f"the group read only {got}"
            for m in consumer.consume(100, 0.5):
                if m.error():
                    raise KafkaException(m.error())
                got[m.partition()].append(m)
        assert {p: [m.value() for m in ms] for p, ms in got.items()} == inputs
        half = {p: got[p][9].offset() + 1 for p in range(n)}   # after 10 records each
        ends = {p: got[p][-1].offset() + 1 for p in range(n)}
        assert half == {p: 10 for p in range(n)} and ends == {p: 20 for p in range(n)}

        # An aborted transaction: its output and its offsets go nowhere.
        must("begin_transaction (aborted)", producer.begin_transaction)
        d = Deliveries()
        for p in range(n):
            for m in got[p][:10]:
                producer.produce(sink, value=b"aborted-" + m.value(), partition=p, on_delivery=d)
        delivered(producer, d, "the transaction to abort")
        must("send_offsets_to_transaction (aborted)", producer.send_offsets_to_transaction,
             [TopicPartition(source, p, o) for p, o in half.items()], consumer.consumer_group_metadata(), 30)
        must("abort_transaction", producer.abort_transaction, 30)
        assert committed(w, A, group, source, n) == {p: -1001 for p in range(n)}, \
            "an aborted transaction's offsets were committed"

        # The committed one: all of the input, offsets at the end.
        must("begin_transaction", producer.begin_transaction)
        for p in range(n):
            for m in got[p]:
                producer.produce(sink, value=b"out-" + m.value(), partition=p)
        must("send_offsets_to_transaction", producer.send_offsets_to_transaction,
             [TopicPartition(source, p, o) for p, o in ends.items()], consumer.consumer_group_metadata(), 30)
        must("commit_transaction", producer.commit_transaction, 30)
    finally:
        consumer.close()
    for node in (A, B):
        assert committed(w, node, group, source, n) == ends, f"the group's offsets through broker {node}"
    # The sink: 10 aborted records, a marker, 20 committed ones, a marker.
    wait_ends(w, sink, {p: 32 for p in range(n)})
    out = read_through(w, B, sink, n, READ_COMMITTED)
    for p in range(n):
        assert [v for _, v in out[p]] == [b"out-" + v for v in inputs[p]], f"read_committed {sink}/{p}: {out[p]}"
    everything = read_through(w, B, sink, n, READ_UNCOMMITTED)
    for p in range(n):
        assert [v for _, v in everything[p]] == [b"aborted-" + v for v in inputs[p][:10]] + \
            [b"out-" + v for v in inputs[p]], f"read_uncommitted {sink}/{p}: {everything[p]}"


# ---------------------------------------------------------------------------------------
# 4. A transaction left open past its timeout
# ---------------------------------------------------------------------------------------


def test_a_transaction_past_its_timeout_is_aborted_and_its_producer_fenced(w):
    topic = "txn-timeout"
    w.create(topic, 1, DISKLESS)
    # Short, but far above what the steps before the first look at the LSO take (tens of
    # ms; once 3 s were seen on a loaded machine).
    timeout_ms = 6000
    p = tx_producer(w, "dl-txn-timeout", **{"transaction.timeout.ms": timeout_ms, "socket.timeout.ms": timeout_ms,
                                            "message.timeout.ms": timeout_ms})
    must("begin_transaction", p.begin_transaction)
    began = time.monotonic()
    d = Deliveries()
    for i in range(10):
        p.produce(topic, value=b"abandoned-%d" % i, partition=0, on_delivery=d)
    delivered(p, d, "the transaction left open")
    flushed = time.monotonic() - began
    assert sorted(o for _, _, o in d.placed.values()) == list(range(10))
    wait_ends(w, topic, {0: 10}, {0: 0}, nodes=(B,))
    elapsed = time.monotonic() - began
    assert elapsed < timeout_ms / 1000 - 0.5, (
        f"too slow: {elapsed:.1f}s to look at the LSO of a {timeout_ms} ms transaction (its records acknowledged "
        f"after {flushed:.2f}s, broker B showing them {elapsed - flushed:.2f}s later)")

    # The coordinator aborts it: an abort marker at offset 10 moves the LSO to 11.
    wait_value("read_committed LATEST after the coordinator's abort",
               lambda: latest(w, B, topic, 0, IsolationLevel.READ_COMMITTED), 11, timeout=30)
    assert time.monotonic() - began >= timeout_ms / 1000 - 0.5, "aborted before transaction.timeout.ms"
    wait_ends(w, topic, {0: 11})  # exactly one marker
    assert read_through(w, B, topic, 1, READ_COMMITTED)[0] == [], "read_committed sees the timed-out transaction"
    assert [v for _, v in read_through(w, B, topic, 1, READ_UNCOMMITTED)[0]] == [b"abandoned-%d" % i for i in range(10)]

    # The producer is fenced: its commit fails, and it cannot go on.
    with pytest.raises(KafkaException) as failed:
        p.commit_transaction(30)
    err = failed.value.args[0]
    assert err.fatal() or err.code() in FENCED_CODES, \
        f"commit after the coordinator's abort failed with {err!r}, not as a fenced producer"
    # A fenced producer can do nothing more: nothing it tries now is committed.
    with pytest.raises(KafkaException):
        p.abort_transaction(10)
        p.begin_transaction()
        p.produce(topic, value=b"zombie", partition=0)
        p.commit_transaction(10)
    assert read_through(w, B, topic, 1, READ_COMMITTED)[0] == []
    # A new producer with the same transactional.id works.
    again = tx_producer(w, "dl-txn-timeout")
    run_transaction(again, [(topic, 0)], "again", 2, True, Deliveries())
    got = [v for _, v in read_through(w, B, topic, 1, READ_COMMITTED)[0]]
    assert b"again-txn-timeout-0-0" in got and not [v for v in got if v.startswith(b"abandoned")], got


# ---------------------------------------------------------------------------------------
# 5. Aborted transactions in merged segments
# ---------------------------------------------------------------------------------------


def test_read_committed_skips_aborted_records_in_merged_segments(w):
    topic, n = "txn-merge", 2
    w.create(topic, n, DISKLESS)
    slots = [(topic, p) for p in range(n)]
    producer = tx_producer(w, "dl-txn-merge")
    d = Deliveries()
    outcome: dict[bytes, bool] = {}

    def txn(tag: str, commit: bool) -> None:
        for values in run_transaction(producer, slots, tag, 8, commit, d).values():
            outcome.update({v: commit for v in values})

    txn("c1", True)
    txn("a2", False)
    plain = plain_producer(w, B)
    for p in range(n):
        for i in range(4):
            v = b"plain-%d-%d" % (p, i)
            plain.produce(topic, value=v, partition=p, on_delivery=d)
            outcome[v] = True
    assert plain.flush(30) == 0 and not d.errors
    # A transaction open across several merge rounds (max age 300 ms), then aborted.
    must("begin_transaction (long)", producer.begin_transaction)
    for i in range(8):
        for p in range(n):
            v = b"long-%d-%d" % (p, i)
            producer.produce(topic, value=v, partition=p, on_delivery=d)
            outcome[v] = False
    delivered(producer, d, "the long transaction")
    first_long = {p: min(o for v, (_, pp, o) in d.placed.items() if pp == p and v.startswith(b"long"))
                  for p in range(n)}
    # Merging goes on below the open transaction (c1, a2 and the plain records are older
    # than the merge age), and stops at its first offset, the LSO.
    def merging() -> bool:
        heads = w.heads(topic)[0]
        return len(heads) == n and all(h.get("merged", 0) > 0 for h in heads.values())

    wait_until("merging below the open transaction", merging, timeout=30)
    time.sleep(1.5)
    heads, _ = w.heads(topic)
    for p in range(n):
        assert heads[p].get("merged", 0) <= first_long[p], \
            f"partition {p} merged to {heads[p].get('merged')} past the open transaction's first offset {first_long[p]}"
        assert heads[p].get("open"), f"partition {p}: no open transaction in its head: {heads[p]}"
    must("abort_transaction (long)", producer.abort_transaction, 30)
    txn("c4", True)

    heads = w.wait_merged(topic, n)
    assert all(not h.get("open") for h in heads.values()), heads
    assert {o["partition"] for o in w.segments(topic).values()} == set(range(n)), \
        f"merged segments in the bucket: {w.segments(topic)}"

    acked = {p: sorted((o, v) for v, (_, pp, o) in d.placed.items() if pp == p) for p in range(n)}
    want = {p: [(o, v) for o, v in acked[p] if outcome[v]] for p in range(n)}
    for p in range(n):
        assert heads[p]["next"] == len(acked[p]) + 4, \
            f"partition {p}: {heads[p]} for {len(acked[p])} records + 4 markers"
    wait_ends(w, topic, {p: heads[p]["next"] for p in range(n)})
    for node in (B, A):
        got = read_through(w, node, topic, n, READ_COMMITTED)
        for p in range(n):
            aborted = [v for _, v in got[p] if not outcome[v]]
            assert not aborted, f"read_committed {topic}/{p} through broker {node} after merging returned " \
                                f"aborted records: {aborted[:5]}"
            assert got[p] == want[p], f"read_committed {topic}/{p} through broker {node} after merging: {got[p]}"
    got = read_through(w, B, topic, n, READ_UNCOMMITTED)
    for p in range(n):
        assert got[p] == acked[p], f"read_uncommitted {topic}/{p} after merging: {got[p]}"
    # From inside each aborted transaction, and in one-batch fetches.
    for tag in (b"a2", b"long"):
        start = {p: min(o for o, v in acked[p] if v.startswith(tag)) + 1 for p in range(n)}
        got = read_through(w, B, topic, n, READ_COMMITTED, start=start)
        for p in range(n):
            assert got[p] == [(o, v) for o, v in want[p] if o >= start[p]], \
                f"read_committed {topic}/{p} from {start[p]} (inside {tag!r}) after merging: {got[p]}"
    got = read_through(w, B, topic, n, READ_COMMITTED, **{
        "max.partition.fetch.bytes": 64, "fetch.max.bytes": 1000, "message.max.bytes": 1000,
        "receive.message.max.bytes": 2000})
    for p in range(n):
        assert got[p] == want[p], f"read_committed {topic}/{p} in small fetches after merging: {got[p]}"


# ---------------------------------------------------------------------------------------
# 6. A transactional batch outside any transaction
# ---------------------------------------------------------------------------------------


def test_a_transactional_batch_outside_a_transaction_is_refused_and_opens_nothing(w):
    """A transactional batch whose producer never added the partition to a transaction
    (by hand: an idempotent producer id, and a transactional id that was never
    initialized, or none) is refused through either broker after the coordinator's
    verification: not appended, and no open transaction holding the LSO back (a
    hanging transaction no coordinator would ever end)."""
    from test_diskless import init_producer_id, produce
    from wire import record_batch

    topic = "txn-stray"
    w.create(topic, 1, DISKLESS)
    producer_id, epoch = init_producer_id(w.a.bootstrap)
    stray = record_batch([b"stray"], attributes=0x10, producer=(producer_id, epoch, 0))
    answers = {(node, tid): produce(w.broker(node).bootstrap, topic, 0, stray, transactional_id=tid)[0]
               for node in (A, B) for tid in ("dl-never-initialized", None)}
    assert all(code != 0 for code in answers.values()), f"a stray transactional batch was taken: {answers}"
    plain = plain_producer(w, A)
    plain.produce(topic, value=b"plain", partition=0)
    assert plain.flush(30) == 0
    # Only the plain record is in the log, and read_committed is not held back.
    wait_ends(w, topic, {0: 1})
    assert [v for _, v in read_through(w, B, topic, 1, READ_UNCOMMITTED)[0]] == [b"plain"]
    heads, _ = w.heads(topic)
    assert not heads[0].get("open"), f"a refused batch left an open transaction: {heads[0]}"
    # A real transaction on the partition afterwards goes through and is seen whole.
    real = tx_producer(w, "dl-txn-after-stray")
    wrote = run_transaction(real, [(topic, 0)], "real", 3, True, Deliveries())
    wait_ends(w, topic, {0: 5})  # plain, 3 records, the commit marker
    assert [v for _, v in read_through(w, B, topic, 1, READ_COMMITTED)[0]] == [b"plain", *wrote[(topic, 0)]]
