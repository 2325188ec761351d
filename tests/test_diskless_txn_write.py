"""Diskless topics, transactions, the write side: a real transactional producer commits
one transaction and aborts another on a diskless partition of one broker.

The markers are appended by the coordinator's broker through its own appender (a diskless
partition has no leader), so each takes one offset; a read_uncommitted consumer gets the
data of both transactions and skips the control batches (docs/architecture.md, "Diskless
topics", Transactions). read_committed filtering is the read side's.
"""

from __future__ import annotations

import json

from clients import create_topic, watermarks
from servers import wait_until


def run_transactions(bootstrap: str, topic: str) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": "dl-txn-write",
                         "linger.ms": 5, "transaction.timeout.ms": 60000})
    producer.init_transactions(30)
    producer.begin_transaction()
    for i in range(5):
        producer.produce(topic, value=b"committed-%d" % i, partition=0)
    producer.commit_transaction(30)
    producer.begin_transaction()
    for i in range(3):
        producer.produce(topic, value=b"aborted-%d" % i, partition=0)
    producer.flush(30)
    producer.abort_transaction(30)


def read_uncommitted(bootstrap: str, topic: str, end: int) -> list[tuple[int, bytes]]:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "dl-txn-reader",
                         "enable.auto.commit": False, "isolation.level": "read_uncommitted",
                         "fetch.wait.max.ms": 100})
    got: list[tuple[int, bytes]] = []
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        position = [0]

        def caught_up():
            for msg in consumer.consume(100, 0.5):
                assert not msg.error(), msg.error()
                got.append((msg.offset(), msg.value()))
            position[0] = consumer.position([TopicPartition(topic, 0)])[0].offset
            return position[0] >= end

        wait_until("the consumer to read to the end", caught_up, timeout=60)
    finally:
        consumer.close()
    return got


def test_a_transaction_commits_and_another_aborts_on_a_diskless_partition(broker):
    b = broker(env={"STRATA_DISKLESS_APPEND_INTERVAL_MS": "50"})
    topic = "dl-txn"
    create_topic(b.bootstrap, topic, 1, {"diskless.enable": "true"})
    run_transactions(b.bootstrap, topic)
    # 5 records, the commit marker, 3 records, the abort marker.
    wait_until("both markers to be committed", lambda: watermarks(b.bootstrap, topic, 0) == (0, 10), timeout=30)
    got = read_uncommitted(b.bootstrap, topic, 10)
    assert [offset for offset, _ in got] == [0, 1, 2, 3, 4, 6, 7, 8], got
    assert [value for _, value in got[:5]] == [b"committed-%d" % i for i in range(5)]
    assert [value for _, value in got[5:]] == [b"aborted-%d" % i for i in range(3)]
    # The embedded metadata store: no transaction open any more, and the aborted one
    # recorded with the run that holds its marker (offset 9).
    [head_file] = list((b.data_dir / "diskless").iterdir())
    stored = head_file.read_text()
    assert '"aborted":[[' in stored, stored[:2000]
    runs = [run for run in json.loads(stored)["runs"].values() if run.get("aborted")]
    assert [run["aborted"] for run in runs] == [[[runs[0]["aborted"][0][0], 6, 9, 10]]], runs
    assert '"open"' not in stored, stored[:2000]
