"""kill -9 while a producer with acks=all is writing, with flush.messages=1.

What was acknowledged must survive every crash: present at the acknowledged offset, in
order per partition, exactly once, and readable (a torn or corrupt batch left behind would
make a CRC-checking consumer fail). Records whose sends failed may or may not be there, but
never twice. The producer does not retry (and idempotence is off), so a duplicate can only
come from the broker.
"""

import random
import threading
import time

from confluent_kafka import Consumer, Producer, TopicPartition

from clients import QUIET, confluent_consume, create_topic, Got, kafka_python_consume
from servers import wait_until

PARTITIONS = 3
CYCLES = [("none", 3000), ("zstd", 3000), ("lz4", 3000)]


def record_for(seq: int) -> tuple[int, bytes, bytes, list]:
    """The partition, key, value and headers of sequence number `seq`, recomputable."""
    pad = bytes((seq * 7 + i) % 251 for i in range(seq % 400))
    return (
        seq % PARTITIONS,
        b"key-%d" % seq,
        b"seq=%010d|" % seq + pad,
        [("seq", str(seq).encode())],
    )


def seq_of(g: Got) -> int:
    assert g.value is not None and g.value.startswith(b"seq="), f"unexpected record {g}"
    return int(g.value[4:14])


class Stream:
    """A producer thread sending sequence numbers until stopped; records outcomes."""

    def __init__(self, bootstrap: str, topic: str, codec: str, first_seq: int):
        self.topic = topic
        self.next_seq = first_seq
        self.acked: dict[int, tuple[int, int]] = {}
        self.failed: dict[int, str] = {}
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.producer = Producer({
            **QUIET,
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": False,
            # No retries: a record is written at most once by the client.
            "retries": 0,
            "compression.type": codec,
            "linger.ms": 1,
            "batch.num.messages": 50,
            "message.timeout.ms": 20000,
            "reconnect.backoff.ms": 50,
            "reconnect.backoff.max.ms": 200,
        })
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.error: BaseException | None = None

    def on_delivery(self, err, msg):
        seq = int(msg.value()[4:14])
        with self.lock:
            if err is None:
                self.acked[seq] = (msg.partition(), msg.offset())
            else:
                self.failed[seq] = str(err)

    def run(self):
        try:
            while not self.stop.is_set():
                seq = self.next_seq
                partition, key, value, headers = record_for(seq)
                try:
                    self.producer.produce(self.topic, key=key, value=value, partition=partition, headers=headers,
                                          on_delivery=self.on_delivery)
                except BufferError:
                    self.producer.poll(0.05)
                    continue
                self.next_seq += 1
                # Keep a bounded number in flight so the crash hits a live stream.
                while len(self.producer) > 2000 and not self.stop.is_set():
                    self.producer.poll(0.01)
                self.producer.poll(0)
        except BaseException as e:  # surfaced by the test thread
            self.error = e

    def acked_count(self) -> int:
        with self.lock:
            return len(self.acked)

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(timeout=60)
        assert not self.thread.is_alive(), "producer thread did not stop"
        # Records not yet sent can no longer reach the dead broker; in-flight ones fail
        # when the connection dies (or succeed if they made it first).
        self.producer.purge(in_queue=True, in_flight=False, blocking=True)
        deadline = time.monotonic() + 60
        while len(self.producer) > 0 and time.monotonic() < deadline:
            self.producer.poll(0.1)
        assert len(self.producer) == 0, f"{len(self.producer)} records without an outcome after 60s"
        self.producer.close()
        if self.error:
            raise self.error


def test_kill9_loses_no_acknowledged_record(broker, metadata):
    b = broker(metadata=metadata, env={"STRATA_LOG_FLUSH_MESSAGES": "1", "STRATA_LOG_SEGMENT_BYTES": "262144"})
    kill_cycles(b)


def test_kill9_with_the_default_flush_policy(broker):
    """Without flush.messages the tail is fsynced only every flush.ms, so recovery scans
    more of it; a process crash (unlike a power loss) still loses nothing acknowledged."""
    b = broker(env={"STRATA_LOG_SEGMENT_BYTES": "262144"})
    kill_cycles(b)


def kill_cycles(b) -> None:
    topic = "crash"
    create_topic(b.bootstrap, topic, PARTITIONS)
    acked: dict[int, tuple[int, int]] = {}
    next_seq = 0
    for codec, target in CYCLES:
        stream = Stream(b.bootstrap, topic, codec, next_seq)
        stream.thread.start()
        wait_until(f"{target} acknowledged records ({codec})", lambda: stream.acked_count() >= target or stream.error,
                   timeout=120, interval=0.01)
        b.kill9()
        stream.finish()
        next_seq = stream.next_seq
        assert len(stream.acked) >= target
        acked.update(stream.acked)
        b.start()

    # Nothing acknowledged is lost; every record present is whole and appears once.
    got = confluent_consume(b.bootstrap, topic, PARTITIONS)
    check_log(got, acked, "confluent-kafka")
    check_log(kafka_python_consume(b.bootstrap, topic, PARTITIONS), acked, "kafka-python")

    # Reads that start in the middle of the recovered logs (through the offset indexes).
    rng = random.Random(3)
    samples = rng.sample(sorted(acked.items()), 15)
    consumer = Consumer({**QUIET, "bootstrap.servers": b.bootstrap, "group.id": "strata-tests-unused",
                         "enable.auto.commit": False, "auto.offset.reset": "error", "check.crcs": True})
    try:
        for seq, (partition, offset) in samples:
            consumer.assign([TopicPartition(topic, partition, offset)])
            msg = None
            deadline = time.monotonic() + 30
            while msg is None and time.monotonic() < deadline:
                msg = consumer.poll(0.5)
            assert msg is not None and msg.error() is None, f"reading from {partition}/{offset}: {msg and msg.error()}"
            assert (msg.partition(), msg.offset(), msg.value()) == (partition, offset, record_for(seq)[2])
    finally:
        consumer.close()

    # The log still takes writes at the right offsets after the crashes.
    ends = {p: 0 for p in range(PARTITIONS)}
    for g in got:
        ends[g.partition] = max(ends[g.partition], g.offset + 1)
    final = Stream(b.bootstrap, topic, "none", next_seq)
    for seq in range(next_seq, next_seq + 30):
        partition, key, value, headers = record_for(seq)
        final.producer.produce(topic, key=key, value=value, partition=partition, headers=headers,
                               on_delivery=final.on_delivery)
    assert final.producer.flush(60) == 0
    final.producer.close()
    assert not final.failed, final.failed
    for seq, (p, o) in sorted(final.acked.items()):
        assert o == ends[p], f"seq {seq}: offset {o} in partition {p}, expected {ends[p]}"
        ends[p] += 1


def check_log(got: list[Got], acked: dict[int, tuple[int, int]], what: str) -> None:
    by_pos = {}
    seen = {}
    for g in got:
        seq = seq_of(g)
        partition, key, value, headers = record_for(seq)
        assert (g.partition, g.key, g.value, g.headers) == (partition, key, value, headers), \
            f"{what}: record at {g.partition}/{g.offset} is damaged: {g}"
        assert seq not in seen, f"{what}: seq {seq} appears twice, at {seen[seq]} and {(g.partition, g.offset)}"
        seen[seq] = (g.partition, g.offset)
        by_pos[(g.partition, g.offset)] = seq
    missing = [(seq, pos) for seq, pos in acked.items() if by_pos.get(pos) != seq]
    assert not missing, (
        f"{what}: {len(missing)} acknowledged records are not at their acknowledged offsets, e.g. "
        + ", ".join(f"seq {s} acked at {pos} (found {by_pos.get(pos)})" for s, pos in sorted(missing)[:10])
    )
    for p in range(PARTITIONS):
        offsets = sorted(o for (q, o) in by_pos if q == p)
        assert offsets == list(range(len(offsets))), f"{what}: partition {p} offsets are not dense from 0"
        seqs = [by_pos[(p, o)] for o in offsets]
        assert seqs == sorted(seqs), f"{what}: partition {p} is out of order"
