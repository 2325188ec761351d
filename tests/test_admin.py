"""Offsets and topic administration through real clients, against both metadata stores:
ListOffsets by timestamp, watermarks, DeleteRecords, Describe/Alter/IncrementalAlterConfigs,
CreateTopics (configs, validate_only), CreatePartitions, DeleteTopics, their errors, and a
restart showing that topics, configs and log start offsets survive.
"""

import base64
import json
import subprocess
import threading
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicCollection, TopicPartition
from confluent_kafka.admin import (
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
    OffsetSpec,
    ResourceType,
)
from kafka import KafkaConsumer
from kafka import TopicPartition as KTopicPartition

from clients import (
    QUIET,
    Rec,
    confluent_admin,
    confluent_consume,
    confluent_produce,
    create_topic,
    kcat_binary,
    watermarks,
)
from servers import http_post

T0 = 1_600_000_000_000
DEFAULT_PARTITIONS = 3


def start(broker, metadata, **env):
    # Records here carry timestamps from 2020: keep them whatever their age.
    return broker(metadata=metadata, env={"STRATA_NUM_PARTITIONS": str(DEFAULT_PARTITIONS),
                                          "STRATA_LOG_RETENTION_MS": "-1", **env})


def error_code(future, timeout=60):
    """The Kafka error code a client future failed with; 0 if it succeeded."""
    try:
        future.result(timeout=timeout)
        return 0
    except KafkaException as e:
        return e.args[0].code()


def offsets_for_times_confluent(bootstrap, topic, partition, timestamps):
    consumer = Consumer({**QUIET, "bootstrap.servers": bootstrap, "group.id": "strata-tests-unused"})
    try:
        out = []
        for ts in timestamps:
            (tp,) = consumer.offsets_for_times([TopicPartition(topic, partition, ts)], timeout=30)
            assert tp.error is None, tp.error
            out.append(tp.offset)
        return out
    finally:
        consumer.close()


def kafka_python_consumer(bootstrap, **extra):
    return KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                         request_timeout_ms=60000, **extra)


def timed_records(partition, count, step=10, size=100):
    return [
        Rec(partition=partition, key=b"k%d" % i, value=(b"%d:" % i).ljust(size, b"."), timestamp=T0 + i * step)
        for i in range(count)
    ]


def describe(admin, topic):
    resource = ConfigResource(ResourceType.TOPIC, topic)
    return admin.describe_configs([resource])[resource].result(timeout=60)


def test_list_offsets_by_timestamp(broker, metadata):
    b = start(broker, metadata)
    # Small segments so lookups cross segment boundaries; partition 1 compressed so a
    # lookup must find records inside compressed batches.
    create_topic(b.bootstrap, "times", 2, {"segment.bytes": "16384"})
    count = 2000
    confluent_produce(b.bootstrap, "times", timed_records(0, count), "none", **{"batch.num.messages": 20})
    confluent_produce(b.bootstrap, "times", timed_records(1, count), "lz4", **{"batch.num.messages": 20})

    cases = [  # (timestamp, expected offset; -1 when no record is that new)
        (0, 0), (T0 - 1000, 0), (T0, 0), (T0 + 1, 1), (T0 + 5, 1), (T0 + 10, 1), (T0 + 10 * 777, 777),
        (T0 + 10 * 777 + 9, 778), (T0 + 10 * (count - 1), count - 1), (T0 + 10 * (count - 1) + 1, -1),
        (T0 + 10**9, -1),
    ]

    def check_all(when):
        for partition in (0, 1):
            got = offsets_for_times_confluent(b.bootstrap, "times", partition, [ts for ts, _ in cases])
            assert got == [o for _, o in cases], f"{when}: confluent-kafka offsets_for_times on partition {partition}"
            assert watermarks(b.bootstrap, "times", partition) == (0, count), when

            consumer = kafka_python_consumer(b.bootstrap)
            try:
                tp = KTopicPartition("times", partition)
                for ts, expected in cases:
                    found = consumer.offsets_for_times({tp: ts})[tp]
                    if expected == -1:
                        assert found is None, f"{when}: kafka-python partition {partition} ts {ts}: {found}"
                    else:
                        assert found is not None and found.offset == expected, f"{when}: ts {ts}: {found}"
                        assert found.timestamp == T0 + 10 * expected, f"{when}: ts {ts}: {found}"
                assert consumer.beginning_offsets([tp]) == {tp: 0}
                assert consumer.end_offsets([tp]) == {tp: count}
            finally:
                consumer.close()

            # Admin ListOffsets: earliest, latest, max timestamp.
            admin = confluent_admin(b.bootstrap)
            tp = TopicPartition("times", partition)
            for spec, expected in [(OffsetSpec.earliest(), 0), (OffsetSpec.latest(), count),
                                   (OffsetSpec.max_timestamp(), count - 1),
                                   (OffsetSpec.for_timestamp(T0 + 10 * 1234), 1234)]:
                info = admin.list_offsets({tp: spec})[tp].result(timeout=60)
                assert info.offset == expected, f"{when}: partition {partition} {spec}: {info.offset}"

    # kcat's query mode asks the same question.
    for ts, expected in [(T0 + 10 * 777, 777), (T0 + 10 * 777 + 9, 778)]:
        result = subprocess.run([kcat_binary(), "-Q", "-b", b.bootstrap, "-t", f"times:1:{ts}"],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert f"times [1] offset {expected}" in result.stdout, (ts, result.stdout)

    check_all("before restart")
    b.restart()
    check_all("after restart")


def test_max_timestamp_with_unordered_timestamps(broker):
    """ListOffsets MAX_TIMESTAMP: the first record holding the largest timestamp, whether
    inside one compressed batch or across batches."""
    b = start(broker, "embedded")
    create_topic(b.bootstrap, "unordered", 2)
    stamps = [T0 + 5, T0 + 100, T0 + 3, T0 + 100, T0 + 50]
    confluent_produce(b.bootstrap, "unordered",
                      [Rec(partition=0, key=b"k", value=b"%d" % i, timestamp=t) for i, t in enumerate(stamps)], "lz4")
    for i, t in enumerate(stamps):
        confluent_produce(b.bootstrap, "unordered", [Rec(partition=1, key=b"k", value=b"%d" % i, timestamp=t)], "none")
    admin = confluent_admin(b.bootstrap)
    for partition in (0, 1):
        tp = TopicPartition("unordered", partition)
        info = admin.list_offsets({tp: OffsetSpec.max_timestamp()})[tp].result(timeout=60)
        assert (info.offset, info.timestamp) == (1, T0 + 100), partition
        # By timestamp: the first offset whose timestamp is at least the target.
        assert offsets_for_times_confluent(b.bootstrap, "unordered", partition, [T0 + 4, T0 + 51, T0 + 101]) == \
            [0, 1, -1], partition


def test_delete_records(broker, metadata):
    b = start(broker, metadata)
    admin = confluent_admin(b.bootstrap)
    create_topic(b.bootstrap, "trim", 1, {"segment.bytes": "16384"})
    count = 3000
    confluent_produce(b.bootstrap, "trim", timed_records(0, count), "none", **{"batch.num.messages": 20})
    assert watermarks(b.bootstrap, "trim") == (0, count)

    tp = TopicPartition("trim", 0, 1234)
    deleted = admin.delete_records([tp])[tp].result(timeout=60)
    assert deleted.low_watermark == 1234
    assert watermarks(b.bootstrap, "trim") == (1234, count)

    # Deleting below the log start changes nothing; past the end is an error.
    lower = TopicPartition("trim", 0, 100)
    assert admin.delete_records([lower])[lower].result(timeout=60).low_watermark == 1234
    beyond = TopicPartition("trim", 0, count + 10)
    assert error_code(admin.delete_records([beyond])[beyond]) == KafkaError.OFFSET_OUT_OF_RANGE
    assert watermarks(b.bootstrap, "trim") == (1234, count)

    def check_trimmed(when):
        # Reading from 0 is out of range: with auto.offset.reset=error the client says so...
        consumer = Consumer({**QUIET, "bootstrap.servers": b.bootstrap, "group.id": "strata-tests-unused",
                             "enable.auto.commit": False, "auto.offset.reset": "error"})
        try:
            consumer.assign([TopicPartition("trim", 0, 0)])
            deadline = time.monotonic() + 60
            error = None
            while error is None and time.monotonic() < deadline:
                msg = consumer.poll(0.5)
                if msg is not None:
                    assert msg.error() is not None, f"{when}: read offset {msg.offset()} below the log start"
                    error = msg.error()
            assert error is not None and error.code() == KafkaError._AUTO_OFFSET_RESET, f"{when}: {error}"
        finally:
            consumer.close()
        # ...and with earliest it resumes at the log start.
        got = confluent_consume(b.bootstrap, "trim", 1, **{"auto.offset.reset": "earliest"})
        assert [g.offset for g in got] == list(range(1234, count)), when
        assert got[0].value.startswith(b"1234:"), when

        consumer = kafka_python_consumer(b.bootstrap, auto_offset_reset="earliest")
        try:
            ktp = KTopicPartition("trim", 0)
            consumer.assign([ktp])
            consumer.seek(ktp, 0)
            first = None
            deadline = time.monotonic() + 60
            while first is None and time.monotonic() < deadline:
                for msgs in consumer.poll(timeout_ms=500, max_records=1).values():
                    first = msgs[0].offset
            assert first == 1234, f"{when}: kafka-python reset to {first}"
            assert consumer.beginning_offsets([ktp]) == {ktp: 1234}
            # A timestamp inside the deleted range finds the first record still there.
            found = consumer.offsets_for_times({ktp: T0})[ktp]
            assert found is not None and found.offset == 1234, f"{when}: {found}"
        finally:
            consumer.close()

    check_trimmed("after DeleteRecords")
    b.restart()
    assert watermarks(b.bootstrap, "trim") == (1234, count), "log start offset after restart"
    check_trimmed("after restart")

    # Deleting up to the end (-1 = high watermark) empties the partition; appends go on.
    everything = TopicPartition("trim", 0, -1)
    assert admin.delete_records([everything])[everything].result(timeout=60).low_watermark == count
    assert watermarks(b.bootstrap, "trim") == (count, count)
    more = timed_records(0, 5)
    confluent_produce(b.bootstrap, "trim", more, "none")
    assert [r.offset for r in more] == list(range(count, count + 5))


def config_values(entries):
    return {name: entry.value for name, entry in entries.items()}


@pytest.mark.filterwarnings("ignore:alter_configs has been deprecated")
def test_topic_configs_round_trip(broker, metadata):
    b = start(broker, metadata)
    admin = confluent_admin(b.bootstrap)
    created = {"retention.ms": "3600000", "segment.bytes": "1048576", "cleanup.policy": "delete"}
    create_topic(b.bootstrap, "cfg", 2, created)

    entries = describe(admin, "cfg")
    for name, value in created.items():
        assert entries[name].value == value, name
        assert entries[name].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value, (name, entries[name].source)
        assert not entries[name].is_default
    for name in ("retention.bytes", "max.message.bytes", "message.timestamp.type", "min.insync.replicas"):
        assert name in entries, sorted(entries)
        assert entries[name].source == ConfigSource.DEFAULT_CONFIG.value, name
    assert entries["retention.bytes"].value == "-1"
    defaults = config_values(entries)

    # IncrementalAlterConfigs: SET and DELETE, other overrides untouched.
    incremental = ConfigResource(ResourceType.TOPIC, "cfg", incremental_configs=[
        ConfigEntry("max.message.bytes", "2000", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE),
    ])
    admin.incremental_alter_configs([incremental])[incremental].result(timeout=60)
    entries = describe(admin, "cfg")
    assert entries["max.message.bytes"].value == "2000"
    assert entries["retention.ms"].value == "-1"  # the broker default set in start()
    assert entries["retention.ms"].source == ConfigSource.STATIC_BROKER_CONFIG.value  # set in the broker's settings
    assert entries["segment.bytes"].value == "1048576"

    # The new max.message.bytes is enforced on produce.
    delivered = []
    producer = Producer({**QUIET, "bootstrap.servers": b.bootstrap, "enable.idempotence": False, "retries": 0})
    producer.produce("cfg", value=b"x" * 5000, partition=0, on_delivery=lambda err, msg: delivered.append(err))
    producer.produce("cfg", value=b"small", partition=1, on_delivery=lambda err, msg: delivered.append(err))
    assert producer.flush(60) == 0
    producer.close()
    codes = sorted((e.code() if e else 0) for e in delivered)
    assert codes == sorted([0, KafkaError.MSG_SIZE_TOO_LARGE]), delivered

    # validate_only changes nothing.
    trial = ConfigResource(ResourceType.TOPIC, "cfg", incremental_configs=[
        ConfigEntry("retention.bytes", "5", incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([trial], validate_only=True)[trial].result(timeout=60)
    assert describe(admin, "cfg")["retention.bytes"].value == "-1"

    # Invalid values and unknown names are refused; nothing changes.
    for name, value in [("retention.ms", "soon"), ("segment.bytes", "1"), ("no.such.config", "1"),
                        ("cleanup.policy", "nonsense"), ("message.timestamp.type", "Whenever")]:
        bad = ConfigResource(ResourceType.TOPIC, "cfg", incremental_configs=[
            ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)])
        assert error_code(admin.incremental_alter_configs([bad])[bad]) == KafkaError.INVALID_CONFIG, (name, value)
    after_refusals = config_values(describe(admin, "cfg"))
    assert after_refusals["max.message.bytes"] == "2000" and after_refusals["segment.bytes"] == "1048576"

    # AlterConfigs replaces the whole set of overrides.
    full = ConfigResource(ResourceType.TOPIC, "cfg", set_config={"retention.bytes": "1000000",
                                                                  "message.timestamp.type": "LogAppendTime"})
    admin.alter_configs([full])[full].result(timeout=60)
    entries = describe(admin, "cfg")
    assert entries["retention.bytes"].value == "1000000"
    assert entries["message.timestamp.type"].value == "LogAppendTime"
    assert entries["max.message.bytes"].value == defaults["max.message.bytes"]
    assert entries["segment.bytes"].value == str(1 << 30)
    bad_full = ConfigResource(ResourceType.TOPIC, "cfg", set_config={"retention.bytes": "lots"})
    assert error_code(admin.alter_configs([bad_full])[bad_full]) == KafkaError.INVALID_CONFIG
    trial_full = ConfigResource(ResourceType.TOPIC, "cfg", set_config={"retention.bytes": "7"})
    admin.alter_configs([trial_full], validate_only=True)[trial_full].result(timeout=60)
    assert describe(admin, "cfg")["retention.bytes"].value == "1000000"

    # LogAppendTime takes effect: the broker stamps batches with its own clock.
    before = int(time.time() * 1000)
    confluent_produce(b.bootstrap, "cfg", [Rec(partition=0, key=b"k", value=b"stamped", timestamp=T0)], "lz4")
    (got,) = confluent_consume(b.bootstrap, "cfg", 1)
    assert got.value == b"stamped"
    assert got.timestamp_type == 2, got  # TIMESTAMP_LOG_APPEND_TIME
    assert before - 5000 <= got.timestamp <= time.time() * 1000 + 5000, got

    # Unknown topics.
    ghost = ConfigResource(ResourceType.TOPIC, "no-such-topic-cfg")
    assert error_code(admin.describe_configs([ghost])[ghost]) == KafkaError.UNKNOWN_TOPIC_OR_PART
    ghost_alter = ConfigResource(ResourceType.TOPIC, "no-such-topic-cfg", set_config={"retention.ms": "1"})
    assert error_code(admin.alter_configs([ghost_alter])[ghost_alter]) == KafkaError.UNKNOWN_TOPIC_OR_PART
    ghost_inc = ConfigResource(ResourceType.TOPIC, "no-such-topic-cfg", incremental_configs=[
        ConfigEntry("retention.ms", "1", incremental_operation=AlterConfigOpType.SET)])
    assert error_code(admin.incremental_alter_configs([ghost_inc])[ghost_inc]) == KafkaError.UNKNOWN_TOPIC_OR_PART

    # Broker configs: described; num.partitions is a dynamic one (test_broker_configs.py),
    # broker.id is read-only.
    broker_resource = ConfigResource(ResourceType.BROKER, "0")
    broker_entries = admin.describe_configs([broker_resource])[broker_resource].result(timeout=60)
    assert broker_entries["num.partitions"].value == str(DEFAULT_PARTITIONS)
    assert not broker_entries["num.partitions"].is_read_only
    assert broker_entries["broker.id"].is_read_only

    expected = config_values(describe(admin, "cfg"))
    b.restart()
    admin = confluent_admin(b.bootstrap)
    survived = describe(admin, "cfg")
    assert config_values(survived) == expected
    assert survived["retention.bytes"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert survived["segment.bytes"].source == ConfigSource.DEFAULT_CONFIG.value


def topic_partitions(admin, topic=None):
    md = admin.list_topics(topic=topic, timeout=30)
    return {name: len(t.partitions) for name, t in md.topics.items() if t.error is None}


def test_create_partition_and_delete_topics(broker, metadata, request):
    b = start(broker, metadata)
    admin = confluent_admin(b.bootstrap)

    # validate_only: accepted, not created.
    trial = admin.create_topics([NewTopic("vo", 4, 1, config={"retention.ms": "1000"})], validate_only=True)
    trial["vo"].result(timeout=60)
    assert "vo" not in topic_partitions(admin)
    # validate_only still validates.
    trial_bad = admin.create_topics([NewTopic("vo", 4, 1, config={"retention.ms": "never"})], validate_only=True)
    assert error_code(trial_bad["vo"]) == KafkaError.INVALID_CONFIG

    futures = admin.create_topics([
        NewTopic("alpha", 2, 1, config={"retention.bytes": "123456789"}),
        NewTopic("beta", -1, -1),  # broker defaults
        NewTopic("gamma", 1, 1),
    ], operation_timeout=30)
    for name, future in futures.items():
        future.result(timeout=60)
    assert {k: v for k, v in topic_partitions(admin).items() if k in ("alpha", "beta", "gamma")} == \
        {"alpha": 2, "beta": DEFAULT_PARTITIONS, "gamma": 1}

    refusals = [
        (NewTopic("alpha", 1, 1), KafkaError.TOPIC_ALREADY_EXISTS),
        (NewTopic("delta", 1, 1, config={"retention.ms": "soon"}), KafkaError.INVALID_CONFIG),
        (NewTopic("delta", 1, 1, config={"no.such.config": "1"}), KafkaError.INVALID_CONFIG),
        (NewTopic("delta", 1, 3), KafkaError.INVALID_REPLICATION_FACTOR),
        (NewTopic("bad/name", 1, 1), KafkaError.TOPIC_EXCEPTION),
        (NewTopic("x" * 250, 1, 1), KafkaError.TOPIC_EXCEPTION),
    ]
    for topic, code in refusals:
        got = error_code(admin.create_topics([topic], operation_timeout=30)[topic.topic])
        assert got == code, f"create {topic.topic[:20]} {topic.config}: error {got}, expected {code}"
    assert "delta" not in topic_partitions(admin)
    # validate_only answers as the create would: Kafka refuses a topic that exists.
    trial_exists = admin.create_topics([NewTopic("alpha", 1, 1)], validate_only=True)
    assert error_code(trial_exists["alpha"]) == KafkaError.TOPIC_ALREADY_EXISTS

    # Explicit replica assignments may only name this broker.
    assigned = NewTopic("assigned", 3, replica_assignment=[[0], [0], [0]])
    admin.create_topics([assigned], operation_timeout=30)["assigned"].result(timeout=60)
    assert topic_partitions(admin, "assigned")["assigned"] == 3
    elsewhere = NewTopic("elsewhere", 2, replica_assignment=[[0], [1]])
    assert error_code(admin.create_topics([elsewhere], operation_timeout=30)["elsewhere"]) == \
        KafkaError.INVALID_REPLICA_ASSIGNMENT
    admin.delete_topics(["assigned"], operation_timeout=30)["assigned"].result(timeout=60)

    # CreatePartitions: grow, produce to a new partition; shrinking or unknown refused.
    grow = NewPartitions("alpha", 5)
    admin.create_partitions([grow])["alpha"].result(timeout=60)
    assert topic_partitions(admin, "alpha")["alpha"] == 5
    rec = Rec(partition=4, key=b"k", value=b"in a new partition", timestamp=T0)
    confluent_produce(b.bootstrap, "alpha", [rec], "none")
    assert rec.offset == 0
    assert error_code(admin.create_partitions([NewPartitions("alpha", 3)])["alpha"]) == KafkaError.INVALID_PARTITIONS
    assert error_code(admin.create_partitions([NewPartitions("alpha", 5)])["alpha"]) == KafkaError.INVALID_PARTITIONS
    admin.create_partitions([NewPartitions("alpha", 9)], validate_only=True)["alpha"].result(timeout=60)
    assert topic_partitions(admin, "alpha")["alpha"] == 5
    assert error_code(admin.create_partitions([NewPartitions("no-such-topic-cp", 3)])["no-such-topic-cp"]) == \
        KafkaError.UNKNOWN_TOPIC_OR_PART

    # DeleteTopics; deleting again is an error; a new topic of the same name starts empty.
    confluent_produce(b.bootstrap, "gamma", [Rec(partition=0, key=b"k", value=b"old", timestamp=T0)], "none")
    old_id = admin.describe_topics(TopicCollection(["gamma"]))["gamma"].result(timeout=60).topic_id
    admin.delete_topics(["gamma"], operation_timeout=30)["gamma"].result(timeout=60)
    assert "gamma" not in topic_partitions(admin)
    assert error_code(admin.delete_topics(["gamma"], operation_timeout=30)["gamma"]) == KafkaError.UNKNOWN_TOPIC_OR_PART
    create_topic(b.bootstrap, "gamma", 1)
    new_id = admin.describe_topics(TopicCollection(["gamma"]))["gamma"].result(timeout=60).topic_id
    assert str(new_id) != str(old_id)
    assert watermarks(b.bootstrap, "gamma") == (0, 0)
    admin.delete_topics(["beta"], operation_timeout=30)["beta"].result(timeout=60)

    ids = {name: str(admin.describe_topics(TopicCollection([name]))[name].result(timeout=60).topic_id)
           for name in ("alpha", "gamma")}
    b.restart()
    admin = confluent_admin(b.bootstrap)
    survived = topic_partitions(admin)
    assert survived.get("alpha") == 5 and survived.get("gamma") == 1, survived
    assert "beta" not in survived and "vo" not in survived and "delta" not in survived, survived
    for name, topic_id in ids.items():
        assert str(admin.describe_topics(TopicCollection([name]))[name].result(timeout=60).topic_id) == topic_id
    assert describe(admin, "alpha")["retention.bytes"].value == "123456789"
    assert watermarks(b.bootstrap, "alpha", 4) == (0, 1)

    # The metadata lives where --metadata says.
    if metadata == "embedded":
        assert (b.data_dir / "metadata.json").is_file()
    else:
        assert not (b.data_dir / "metadata.json").exists()
        etcd = request.getfixturevalue("etcd")
        prefix = metadata.rsplit("/", 1)[1]
        keys = etcd.get_prefix(prefix + "/topics/")
        # A consumer that committed offsets created the internal __consumer_offsets topic.
        user_topics = sorted(k.rsplit("/", 1)[1] for k in keys if not k.rsplit("/", 1)[1].startswith("__"))
        assert user_topics == ["alpha", "gamma"], sorted(keys)


def test_etcd_is_the_source_of_truth(broker, etcd):
    """With etcd metadata, a second broker on a fresh disk sees the same cluster and topics,
    and a topic removed from etcd while a broker is down is gone when it comes back."""
    url = etcd.url(f"truth-{uuid.uuid4().hex[:8]}")
    first = broker(metadata=url, name="first")
    create_topic(first.bootstrap, "keep", 2, {"retention.ms": "86400000"})
    create_topic(first.bootstrap, "drop", 1)
    confluent_produce(first.bootstrap, "drop", [Rec(partition=0, key=b"k", value=b"v", timestamp=T0)], "none")
    first_admin = confluent_admin(first.bootstrap)
    cluster_id = first_admin.describe_cluster().result(timeout=60).cluster_id

    # Node ids are unique in a cluster: a second process with the first one's id waits for
    # that registration to end.
    second = broker(metadata=url, name="second", args=["--node-id", "1"])
    admin = confluent_admin(second.bootstrap)
    assert admin.describe_cluster().result(timeout=60).cluster_id == cluster_id
    assert {k: v for k, v in topic_partitions(admin).items() if k in ("keep", "drop")} == {"keep": 2, "drop": 1}
    assert describe(admin, "keep")["retention.ms"].value == "86400000"
    assert second.stop() == 0

    # Delete "drop" behind the first broker's back, while it is down.
    assert first.stop() == 0
    drop_dirs = [p for p in (first.data_dir / "logs").iterdir() if p.name.startswith("drop.")]
    assert drop_dirs, list((first.data_dir / "logs").iterdir())
    prefix = url.rsplit("/", 1)[1]
    key = base64.b64encode(f"{prefix}/topics/drop".encode()).decode()
    status, text = http_post(f"http://{etcd.endpoint}/v3/kv/deleterange", json.dumps({"key": key}).encode())
    assert status == 200 and '"deleted":"1"' in text, text
    first.start()
    admin = confluent_admin(first.bootstrap)
    assert "drop" not in topic_partitions(admin)
    assert "keep" in topic_partitions(admin)
    assert not any(p.exists() for p in drop_dirs), "logs of a topic deleted from etcd were kept"


def test_concurrent_auto_creation(broker, metadata):
    """Many producers auto-creating the same topic at once: one topic, every record delivered."""
    b = start(broker, metadata)
    outcomes = []  # appended to from delivery callbacks in several threads (list.append is atomic)

    def produce(i):
        producer = Producer({**QUIET, "bootstrap.servers": b.bootstrap, "message.timeout.ms": 60000})
        for j in range(5):
            producer.produce("raced", value=b"%d-%d" % (i, j), on_delivery=lambda err, msg: outcomes.append(err))
        producer.flush(90)
        producer.close()

    threads = [threading.Thread(target=produce, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert outcomes == [None] * 50, [e for e in outcomes if e][:5]
    assert topic_partitions(confluent_admin(b.bootstrap), "raced") == {"raced": DEFAULT_PARTITIONS}
    total = sum(watermarks(b.bootstrap, "raced", p)[1] for p in range(DEFAULT_PARTITIONS))
    assert total == 50


def test_auto_create_can_be_turned_off(broker):
    b = broker(env={"STRATA_AUTO_CREATE_TOPICS": "false"})
    delivered = []
    producer = Producer({**QUIET, "bootstrap.servers": b.bootstrap, "message.timeout.ms": 30000,
                         "topic.metadata.propagation.max.ms": 1000})
    producer.produce("never-created", value=b"x", on_delivery=lambda err, msg: delivered.append(err))
    producer.flush(60)
    producer.close()
    assert len(delivered) == 1 and delivered[0] is not None, delivered
    assert delivered[0].code() in (KafkaError._UNKNOWN_TOPIC, KafkaError.UNKNOWN_TOPIC_OR_PART,
                                   KafkaError._MSG_TIMED_OUT), delivered
    admin = confluent_admin(b.bootstrap)
    assert "never-created" not in topic_partitions(admin)
    md = admin.list_topics(topic="never-created", timeout=30)
    assert md.topics["never-created"].error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_longest_valid_topic_names(broker, metadata):
    """Kafka accepts topic names of up to 249 characters. Each must work end to end and,
    above all, survive a restart: a name the broker cannot store must be refused up front,
    never half-created."""
    b = start(broker, metadata)
    admin = confluent_admin(b.bootstrap)
    names = {n: (f"len{n}-" + "x" * n)[:n] for n in (200, 222, 223, 249)}
    outcomes = {}
    for n, name in names.items():
        outcomes[n] = error_code(admin.create_topics([NewTopic(name, 1, 1)], operation_timeout=30)[name])
    created = {n for n, code in outcomes.items() if code == 0}
    # Auto-creation by a producer's Metadata request takes the same path.
    auto = ("auto240-" + "y" * 240)[:240]
    delivered = []
    producer = Producer({**QUIET, "bootstrap.servers": b.bootstrap, "message.timeout.ms": 30000,
                         "topic.metadata.propagation.max.ms": 5000})
    producer.produce(auto, value=b"auto", on_delivery=lambda err, msg: delivered.append(err))
    producer.flush(60)
    producer.close()
    for n in sorted(created):
        rec = Rec(partition=0, key=b"k", value=b"name of %d" % n, timestamp=T0)
        confluent_produce(b.bootstrap, names[n], [rec], "none")
        assert rec.offset == 0
    listed = set(topic_partitions(admin))

    b.restart()  # fails the test, with the log, if the broker cannot start again
    admin = confluent_admin(b.bootstrap)
    assert set(topic_partitions(admin)) == listed
    for n in sorted(created):
        (got,) = confluent_consume(b.bootstrap, names[n], 1)
        assert got.value == b"name of %d" % n
    assert outcomes == {n: 0 for n in names}, f"CreateTopics error codes by name length: {outcomes}"
    assert delivered == [None], f"producing to an auto-created 240-character topic: {delivered}"
