"""Diskless topics, smoke: one broker, a real client, the whole write and read path.

A diskless topic (`diskless.enable=true`, fixed at creation) keeps no local log: produce
goes into shared objects in the object store and its offsets into the metadata store
(docs/architecture.md, "Diskless topics"). Once with the embedded defaults (metadata in
the data dir, objects in the default `file://` store), once through etcd and an S3
server (moto). Multi-broker behaviour is tests/test_diskless.py's.
"""

from __future__ import annotations

import uuid

import pytest

from clients import check_against_offsets, confluent_admin, confluent_consume, confluent_produce, create_topic, \
    make_records, watermarks
from servers import s3_env, wait_until

PARTITIONS = 3


def produce_and_read_back(bootstrap: str, topic: str) -> None:
    """Creates `topic` diskless, produces with an idempotent acks=all producer, and checks
    that the offsets are dense from 0 and that a consumer reads every record back."""
    create_topic(bootstrap, topic, PARTITIONS, {"diskless.enable": "true"})
    produced = make_records(19, 600, PARTITIONS)
    confluent_produce(bootstrap, topic, produced, "lz4", **{"enable.idempotence": True, "linger.ms": 20})
    for p in range(PARTITIONS):
        offsets = sorted(r.offset for r in produced if r.partition == p)
        assert offsets == list(range(len(offsets))), f"partition {p}: offsets not dense: {offsets[:20]}"
        assert watermarks(bootstrap, topic, p) == (0, len(offsets))
    got = confluent_consume(bootstrap, topic, PARTITIONS)
    check_against_offsets(produced, got, "confluent-kafka from offset 0")


def check_fixed_at_creation(bootstrap: str, topic: str) -> None:
    """DescribeConfigs shows the flag; changing it is refused with INVALID_CONFIG."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

    admin = confluent_admin(bootstrap)
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    configs = admin.describe_configs([resource])[resource].result(timeout=30)
    assert configs["diskless.enable"].value == "true"
    change = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry("diskless.enable", "false", incremental_operation=AlterConfigOpType.SET)])
    with pytest.raises(KafkaException) as refused:
        admin.incremental_alter_configs([change])[change].result(timeout=30)
    assert refused.value.args[0].name() == "INVALID_CONFIG", refused.value
    assert "fixed at creation" in str(refused.value)
    # Another config of the topic still changes.
    other = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", "86400000", incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([other])[other].result(timeout=30)


def consume_as_group(bootstrap: str, topic: str) -> None:
    """A group member reads every partition to its end and commits; OffsetFetch then
    returns the ends (OffsetCommit validates partitions a diskless topic opens no log for)."""
    from confluent_kafka import Consumer, TopicPartition

    ends = {p: watermarks(bootstrap, topic, p)[1] for p in range(PARTITIONS)}
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "dl-group", "enable.auto.commit": False,
                         "auto.offset.reset": "earliest", "fetch.wait.max.ms": 100})
    try:
        consumer.subscribe([topic])
        position = {p: 0 for p in ends}

        def caught_up():
            for msg in consumer.consume(1000, 0.5):
                assert not msg.error(), msg.error()
                position[msg.partition()] = msg.offset() + 1
            return position == ends

        wait_until("the group member to read every partition to its end", caught_up, timeout=60)
        consumer.commit(asynchronous=False)
        committed = consumer.committed([TopicPartition(topic, p) for p in ends], timeout=30)
        assert {tp.partition: tp.offset for tp in committed} == ends
        assert all(tp.error is None for tp in committed)
    finally:
        consumer.close()


def test_diskless_topic_on_embedded_defaults(broker):
    b = broker(env={"STRATA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0"})
    topic = "dl-embedded"
    produce_and_read_back(b.bootstrap, topic)
    check_fixed_at_creation(b.bootstrap, topic)
    consume_as_group(b.bootstrap, topic)
    logs = b.data_dir / "logs"
    assert not any(d.name.startswith(topic + ".") for d in logs.iterdir()) if logs.exists() else True, \
        "a diskless topic opened a local log"
    shared = list((b.data_dir / "diskless").iterdir())
    assert len(shared) == PARTITIONS, f"expected one metadata file per partition, got {shared}"
    assert b.metric("strata_diskless_objects_total", topic=topic), "no shared object counted"
    assert b.metric("strata_records_in_total", topic=topic) == 600
    # acks=0: no answer, and the records are committed all the same.
    from confluent_kafka import Producer
    before = watermarks(b.bootstrap, topic, 1)[1]
    producer = Producer({"bootstrap.servers": b.bootstrap, "acks": 0, "linger.ms": 5})
    for i in range(50):
        producer.produce(topic, value=b"fire-and-forget-%d" % i, partition=1)
    assert producer.flush(30) == 0
    wait_until("the acks=0 records to be committed",
               lambda: watermarks(b.bootstrap, topic, 1)[1] == before + 50, timeout=30)
    # Restarted, the broker serves the same records from the stores alone.
    b.restart()
    assert watermarks(b.bootstrap, topic, 0)[0] == 0
    got = confluent_consume(b.bootstrap, topic, PARTITIONS)
    assert sorted(g.offset for g in got if g.partition == 0) == list(range(watermarks(b.bootstrap, topic, 0)[1]))


def test_pipelined_idempotent_produce_to_one_diskless_partition(broker):
    """An idempotent producer with several requests in flight to one diskless partition:
    requests of one producer that wait in the same flush follow each other (the
    appender plans them cumulatively); no OUT_OF_ORDER_SEQUENCE_NUMBER, no duplicate,
    dense offsets."""
    b = broker(env={"STRATA_DISKLESS_APPEND_INTERVAL_MS": "100"})
    topic = "dl-pipelined"
    create_topic(b.bootstrap, topic, 1, {"diskless.enable": "true"})
    produced = make_records(23, 4000, 1)
    confluent_produce(b.bootstrap, topic, produced, "none",
                      **{"enable.idempotence": True, "linger.ms": 0, "batch.num.messages": 20,
                         "max.in.flight.requests.per.connection": 5})
    offsets = sorted(r.offset for r in produced)
    assert offsets == list(range(len(produced))), f"offsets not dense or duplicated: {offsets[:20]}"
    assert watermarks(b.bootstrap, topic, 0) == (0, len(produced))
    got = confluent_consume(b.bootstrap, topic, 1)
    check_against_offsets(produced, got, "pipelined idempotent produce")


def test_diskless_topic_through_etcd_and_s3(broker, etcd, bucket):
    prefix = f"t-{uuid.uuid4().hex[:12]}"
    b = broker(metadata=etcd.url(prefix), env=s3_env(bucket.endpoint, bucket.name))
    topic = "dl-etcd"
    produce_and_read_back(b.bootstrap, topic)
    objects = [k for k in bucket.objects() if "/diskless/" in k and k.endswith(".batches")]
    assert objects, f"no shared object in the bucket: {list(bucket.objects())[:10]}"
    keys = etcd.get_prefix(f"{prefix}/diskless/")
    heads = [k for k in keys if k.endswith("/head")]
    assert len(heads) == PARTITIONS, heads
    assert any("/runs/" in k for k in keys) and any("/producers/" in k for k in keys), list(keys)[:10]


def test_a_connections_pipelined_produce_requests_join_one_flush(broker):
    """A client that does not cap its requests in flight (plain librdkafka, kafkajs) sends
    a request every linger.ms however long the answers take. The broker starts up to 1024
    of one connection's produce requests while earlier ones wait for their diskless flush,
    so 40 requests sent back to back share one or two shared objects (with 5 started at a
    time they took 8 flushes, and such a producer's backlog grew without bound). The
    answers come in request order, with dense offsets."""
    from wire import connect, parse_produce_response_v3, produce_request_v3, record_batch, recv_frame

    b = broker(env={"STRATA_DISKLESS_APPEND_INTERVAL_MS": "500"})
    topic = "dl-many-in-flight"
    create_topic(b.bootstrap, topic, 1, {"diskless.enable": "true"})
    objects = lambda: b.metric("strata_diskless_objects_total", topic=topic) or 0  # noqa: E731
    requests = 40
    with connect(b.bootstrap) as sock:
        sock.sendall(b"".join(produce_request_v3(1000 + i, topic, 0, record_batch([b"r%d" % i] * 3))
                              for i in range(requests)))
        answers = [parse_produce_response_v3(recv_frame(sock)) for _ in range(requests)]
    assert [correlation for correlation, _ in answers] == [1000 + i for i in range(requests)]
    assert [results[0][2:] for _, results in answers] == [(0, 3 * i) for i in range(requests)], answers[:3]
    assert watermarks(b.bootstrap, topic, 0) == (0, 3 * requests)
    assert 1 <= objects() <= 2, f"{objects()} shared objects for {requests} pipelined requests"
