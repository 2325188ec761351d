"""Idempotent producers: InitProducerId and per-partition sequence checks.

- kafka-python 3's default producer (idempotent) and confluent-kafka with
  enable.idempotence=true work against the broker;
- an idempotent producer with retries, writing while the broker is restarted (SIGTERM)
  and crashed (kill -9, flush.messages=1), ends with every acknowledged record present
  exactly once, in the order it was sent, per partition: the broker answers the client's
  retries of batches it already has with their original offsets instead of appending them
  again.
"""

import threading
import time

from confluent_kafka import Producer

from clients import QUIET, Got, confluent_consume, create_topic, kafka_python_consume, watermarks

PARTITIONS = 2


def seq_of(g: Got) -> int:
    assert g.value is not None and g.value.startswith(b"seq="), f"unexpected record {g}"
    return int(g.value[4:14])


def test_default_kafka_python_and_idempotent_confluent_producers_work(broker):
    from kafka import KafkaProducer

    b = broker()
    create_topic(b.bootstrap, "idem", 1)
    # kafka-python 3 enables idempotence by default; it needs InitProducerId.
    producer = KafkaProducer(bootstrap_servers=b.bootstrap, acks="all")
    futures = [producer.send("idem", value=b"kp-%d" % i, partition=0) for i in range(500)]
    producer.flush()
    offsets = [f.get(timeout=30).offset for f in futures]
    producer.close()
    assert offsets == list(range(500))
    errors = []
    p = Producer({**QUIET, "bootstrap.servers": b.bootstrap, "enable.idempotence": True})
    for i in range(500):
        p.produce("idem", value=b"ck-%d" % i, partition=0,
                  on_delivery=lambda err, msg: errors.append(err) if err else None)
    assert p.flush(30) == 0 and not errors, errors
    got = kafka_python_consume(b.bootstrap, "idem", 1)
    assert [g.value for g in got] == [b"kp-%d" % i for i in range(500)] + [b"ck-%d" % i for i in range(500)]


class Stream:
    """An idempotent producer thread sending numbered records until stopped."""

    def __init__(self, bootstrap: str, topic: str):
        self.topic = topic
        self.next_seq = 0
        self.acked: dict[int, tuple[int, int]] = {}
        self.failed: dict[int, str] = {}
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.producer = Producer({
            **QUIET,
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 2,
            "batch.num.messages": 100,
            "message.timeout.ms": 60000,
            "reconnect.backoff.ms": 50,
            "reconnect.backoff.max.ms": 500,
        })
        self.thread = threading.Thread(target=self.run, daemon=True)

    def on_delivery(self, seq: int):
        def callback(err, msg):
            with self.lock:
                if err is None:
                    self.acked[seq] = (msg.partition(), msg.offset())
                else:
                    self.failed[seq] = str(err)
        return callback

    def run(self):
        while not self.stop.is_set():
            seq = self.next_seq
            try:
                self.producer.produce(self.topic, value=b"seq=%010d" % seq, partition=seq % PARTITIONS,
                                      on_delivery=self.on_delivery(seq))
                self.next_seq += 1
            except BufferError:
                pass
            self.producer.poll(0.001 if seq % 50 == 0 else 0)
        self.producer.flush(90)


def test_idempotent_producer_through_restarts_and_crashes_has_no_duplicates(broker):
    b = broker(env={"STRATA_LOG_FLUSH_MESSAGES": "1"})
    topic = "exactly-once"
    create_topic(b.bootstrap, topic, PARTITIONS)
    stream = Stream(b.bootstrap, topic)
    stream.thread.start()
    try:
        # Crashes cut responses to appended batches, so the client retries them: without
        # the broker's duplicate check they land twice (seen: 100 duplicates in 300k).
        for cycle in ["kill", "restart", "kill", "kill", "kill"]:
            time.sleep(1.5)
            if cycle == "restart":
                b.restart()
            else:
                b.kill9()
                b.start()
        time.sleep(1.5)
    finally:
        stream.stop.set()
        stream.thread.join(120)
    assert not stream.thread.is_alive(), "the producer did not finish"
    assert not stream.failed, f"idempotent sends failed: {list(stream.failed.items())[:5]}"
    assert len(stream.acked) > 1000, f"only {len(stream.acked)} records acknowledged"

    got = confluent_consume(b.bootstrap, topic, PARTITIONS)
    seqs = [seq_of(g) for g in got]
    assert len(seqs) == len(set(seqs)), "a record is in the log twice"
    for partition in range(PARTITIONS):
        in_log = [seq_of(g) for g in got if g.partition == partition]
        assert in_log == sorted(in_log), f"partition {partition}: records out of order"
        assert [g.offset for g in got if g.partition == partition] == list(range(len(in_log)))
    by_seq = {seq_of(g): (g.partition, g.offset) for g in got}
    for seq, (partition, offset) in stream.acked.items():
        assert by_seq.get(seq) == (partition, offset), (
            f"record {seq} acknowledged at {partition}/{offset}, in the log at {by_seq.get(seq)}")
    assert sum(watermarks(b.bootstrap, topic, p)[1] for p in range(PARTITIONS)) == len(got)
