"""Diskless topics, transactions, the read side: read_committed consumers of a diskless
partition stop at the last stable offset and skip aborted transactions, both from the
unmerged runs and from merged history (the merged segments' transaction indexes), and
merging never passes an open transaction (docs/architecture.md, "Diskless topics").
"""

from __future__ import annotations

import json

from clients import create_topic
from servers import wait_until


def transactional(bootstrap: str, txn_id: str):
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": txn_id,
                         "linger.ms": 5, "transaction.timeout.ms": 60000})
    producer.init_transactions(30)
    return producer


def transaction(producer, topic: str, values: list[bytes], commit: bool) -> None:
    producer.begin_transaction()
    for value in values:
        producer.produce(topic, value=value, partition=0)
    producer.flush(30)
    if commit:
        producer.commit_transaction(30)
    else:
        producer.abort_transaction(30)


def read_committed(bootstrap: str, topic: str, end: int) -> list[tuple[int, bytes]]:
    """Every record a read_committed consumer gets from offset 0 until its position
    reaches `end`."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "dl-txn-read",
                         "enable.auto.commit": False, "isolation.level": "read_committed",
                         "fetch.wait.max.ms": 100})
    got: list[tuple[int, bytes]] = []
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])

        def caught_up():
            for msg in consumer.consume(100, 0.5):
                assert not msg.error(), msg.error()
                got.append((msg.offset(), msg.value()))
            return consumer.position([TopicPartition(topic, 0)])[0].offset >= end

        wait_until(f"the consumer to read to {end}", caught_up, timeout=60)
        # Nothing more comes (records past `end` are past the last stable offset).
        for msg in consumer.consume(100, 1.0):
            assert not msg.error(), msg.error()
            got.append((msg.offset(), msg.value()))
    finally:
        consumer.close()
    return got


def committed_end(bootstrap: str, topic: str) -> int:
    """ListOffsets LATEST as a read_committed consumer asks it: the last stable offset."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "dl-txn-lso",
                         "isolation.level": "read_committed"})
    try:
        return consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=30, cached=False)[1]
    finally:
        consumer.close()


def stored_head(b) -> dict:
    [head_file] = list((b.data_dir / "diskless").iterdir())
    return json.loads(head_file.read_text())["head"]


def test_read_committed_skips_aborted_and_stops_at_an_open_transaction(broker):
    b = broker(env={"STRATA_DISKLESS_APPEND_INTERVAL_MS": "50",
                    "STRATA_DISKLESS_MERGE_INTERVAL_MS": "200",
                    "STRATA_DISKLESS_MERGE_MAX_AGE_MS": "300"})
    topic = "dl-txn-read"
    create_topic(b.bootstrap, topic, 1, {"diskless.enable": "true"})
    first = transactional(b.bootstrap, "dl-first")
    # 0..4 committed, marker 5; 6..8 aborted, marker 9.
    transaction(first, topic, [b"c1-%d" % i for i in range(5)], commit=True)
    transaction(first, topic, [b"a1-%d" % i for i in range(3)], commit=False)
    # Another producer's transaction stays open from 10; the first commits 12, 13
    # (marker 14) past it.
    second = transactional(b.bootstrap, "dl-second")
    second.begin_transaction()
    for i in range(2):
        second.produce(topic, value=b"open-%d" % i, partition=0)
    second.flush(30)
    transaction(first, topic, [b"c2-%d" % i for i in range(2)], commit=True)
    wait_until("the last stable offset at the open transaction",
               lambda: committed_end(b.bootstrap, topic) == 10, timeout=30)
    # Merging reaches the open transaction and stops there.
    wait_until("merging up to the open transaction", lambda: stored_head(b).get("merged") == 10, timeout=30)
    got = read_committed(b.bootstrap, topic, 10)
    assert got == [(i, b"c1-%d" % i) for i in range(5)], got
    # The open transaction aborts (marker 15): the LSO moves to the end, 16.
    second.abort_transaction(30)
    wait_until("the last stable offset at the end", lambda: committed_end(b.bootstrap, topic) == 16, timeout=30)
    got = read_committed(b.bootstrap, topic, 16)
    expected = [(i, b"c1-%d" % i) for i in range(5)] + [(12, b"c2-0"), (13, b"c2-1")]
    assert got == expected, got
    # Everything merged: the same from merged history only.
    wait_until("merging everything", lambda: stored_head(b).get("merged") == 16, timeout=30)
    got = read_committed(b.bootstrap, topic, 16)
    assert got == expected, got
