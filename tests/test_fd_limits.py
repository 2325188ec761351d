"""A client cannot exhaust the broker's file descriptors (issue 14).

The hostile inputs: a topic with `segment.bytes=14` (one segment, three files, per
produce), one CreateTopics asking for 6,000 partitions, one Metadata request naming 2,000
unknown topics. Each used to take the broker to its open-files limit, and a restart
reopened every segment. Every test counts the broker's descriptors in /proc/PID/fd.
"""

from __future__ import annotations

import os
import struct
import uuid

from clients import confluent_admin, confluent_consume, create_topic
from wire import connect, frame, kstring, produce_request_v3, parse_produce_response_v3, record_batch, \
    recv_frame, request_header

# The production floors; the test brokers of other files lower them (tests/servers.py).
PRODUCTION_FLOORS = {"STRATA_LOG_SEGMENT_BYTES_MIN": "1048576", "STRATA_LOG_SEGMENT_MS_MIN": "60000"}

INVALID_CONFIG = 40
POLICY_VIOLATION = 44
UNKNOWN_TOPIC_OR_PARTITION = 3

# Descriptors a test's own clients (producer socket, consumer, admin) and the broker's
# background work may add on top of the bounds asserted below.
SLACK = 60


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def kafka_error(future) -> tuple[int, str]:
    """(code, message) of a failed confluent-kafka admin future; fails if it succeeded."""
    from confluent_kafka import KafkaException

    try:
        future.result(timeout=60)
    except KafkaException as e:
        error = e.args[0]
        return error.code(), error.str()
    raise AssertionError("the request succeeded; it should have been refused")


def produce_one_record_requests(bootstrap: str, topic: str, count: int) -> None:
    """`count` Produce requests of one record each, over one connection, acks=1."""
    with connect(bootstrap, timeout=30) as sock:
        for i in range(count):
            batch = record_batch([b"record-%06d" % i])
            sock.sendall(produce_request_v3(i, topic, 0, batch, acks=1))
            correlation_id, results = parse_produce_response_v3(recv_frame(sock))
            assert correlation_id == i
            assert results == [(topic, 0, 0, i)], results


def metadata_v4(topics: list[str], correlation_id: int = 7) -> bytes:
    body = struct.pack(">i", len(topics)) + b"".join(kstring(t) for t in topics) + b"\x01"
    return frame(request_header(3, 4, correlation_id) + body)


def parse_metadata_v4_topics(buf: bytes) -> dict[str, int]:
    """{topic: error code} from a Metadata v4 response (after the frame length)."""
    pos = 4 + 4  # correlation id, throttle time

    def string() -> str:
        nonlocal pos
        (n,) = struct.unpack_from(">h", buf, pos)
        pos += 2
        if n < 0:
            return ""
        s = buf[pos:pos + n].decode()
        pos += n
        return s

    def int32() -> int:
        nonlocal pos
        (v,) = struct.unpack_from(">i", buf, pos)
        pos += 4
        return v

    for _ in range(int32()):  # brokers: node id, host, port, rack
        int32()
        string()
        int32()
        string()
    string()  # cluster id
    int32()  # controller id
    topics = {}
    for _ in range(int32()):
        (error,) = struct.unpack_from(">h", buf, pos)
        pos += 2
        name = string()
        pos += 1  # is_internal
        for _ in range(int32()):  # partitions: error, index, leader, replicas, isr
            pos += 2 + 4 + 4
            for _ in range(2):
                nodes = int32()
                pos += 4 * nodes
        topics[name] = error
    return topics


def test_tiny_segments_are_refused_by_the_floors(broker):
    """segment.bytes=14 and segment.ms=1 are refused with INVALID_CONFIG naming the broker
    setting, at creation and by IncrementalAlterConfigs; the topic keeps its config."""
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic

    b = broker(env=PRODUCTION_FLOORS)
    admin = confluent_admin(b.bootstrap)
    for config, setting in [({"segment.bytes": "14"}, "log_segment_bytes_min"),
                            ({"segment.bytes": "1048575"}, "log_segment_bytes_min"),
                            ({"segment.ms": "1"}, "log_segment_ms_min")]:
        futures = admin.create_topics([NewTopic("tiny", 1, 1, config=config)], operation_timeout=30)
        code, message = kafka_error(futures["tiny"])
        assert code == INVALID_CONFIG, (config, code, message)
        assert setting in message, message
    assert "tiny" not in admin.list_topics(timeout=30).topics

    create_topic(b.bootstrap, "normal", 1, {"segment.bytes": "1048576", "segment.ms": "60000"})
    resource = ConfigResource(ConfigResource.Type.TOPIC, "normal", incremental_configs=[
        ConfigEntry("segment.bytes", "14", incremental_operation=AlterConfigOpType.SET)])
    code, message = kafka_error(admin.incremental_alter_configs([resource])[resource])
    assert code == INVALID_CONFIG and "log_segment_bytes_min" in message, (code, message)
    described = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, "normal")])
    entries = list(described.values())[0].result(timeout=60)
    assert entries["segment.bytes"].value == "1048576"


def test_thousands_of_segments_hold_no_descriptors_even_after_a_restart(broker):
    """With the floor lowered by the operator, 2,000 one-record produces make 2,000
    segments. Open files stay within the segment-file cache (64 here), every record reads
    back from offset 0 through that cache, and a restart does not open them all."""
    segments = 2000
    # One partition for __consumer_offsets: the consumer below may make the broker create
    # it, and its descriptors are not what this test measures.
    b = broker(env={"STRATA_LOG_SEGMENT_BYTES_MIN": "14", "STRATA_LOG_MAX_OPEN_SEGMENT_FILES": "64",
                    "STRATA_OFFSETS_TOPIC_PARTITIONS": "1"})
    topic = "tiny-segments"
    create_topic(b.bootstrap, topic, 1, {"segment.bytes": "14", "retention.ms": "-1"})
    baseline = open_fds(b.pid)

    produce_one_record_requests(b.bootstrap, topic, segments)
    log_dir = next(p for p in (b.data_dir / "logs").iterdir() if p.name.startswith(topic + "."))
    assert len(list(log_dir.glob("0/*.log"))) >= segments, "each produce should have rolled a segment"
    after_produce = open_fds(b.pid)
    # Before the fix: three per segment, 6,000 more.
    assert after_produce <= baseline + SLACK, (baseline, after_produce)

    got = confluent_consume(b.bootstrap, topic, 1)
    assert [(g.offset, g.value) for g in got] == [(i, b"record-%06d" % i) for i in range(segments)]
    after_read = open_fds(b.pid)
    assert after_read <= baseline + 64 + SLACK, (baseline, after_read)

    b.restart()
    after_restart = open_fds(b.pid)
    assert after_restart <= baseline + SLACK, (baseline, after_restart)
    # Still serving, old segments included.
    got = confluent_consume(b.bootstrap, topic, 1, start={0: segments - 10})
    assert [g.offset for g in got] == list(range(segments - 10, segments))
    assert open_fds(b.pid) <= baseline + 64 + SLACK


def test_create_topics_past_the_partition_limits_is_refused(broker):
    """One CreateTopics with 6,000 partitions is refused (max_partitions_per_request), as
    is anything past max_partitions for the whole cluster, CreatePartitions included.
    CreateTopics and DeleteTopics still work afterwards."""
    from confluent_kafka.admin import NewPartitions, NewTopic

    b = broker(env={"STRATA_MAX_PARTITIONS": "100"})
    admin = confluent_admin(b.bootstrap)
    baseline = open_fds(b.pid)

    futures = admin.create_topics([NewTopic("huge", 6000, 1)], operation_timeout=30)
    code, message = kafka_error(futures["huge"])
    assert code == POLICY_VIOLATION and "max_partitions_per_request" in message, (code, message)
    # Split over many topics in one request: the same total is refused past the limit.
    many = [NewTopic(f"part-{i}", 600, 1) for i in range(10)]
    futures = admin.create_topics(many, operation_timeout=30)
    refused = [kafka_error(futures[t.topic]) for t in many[1:]]
    assert all(code == POLICY_VIOLATION for code, _ in refused), refused
    # The first topic alone passes the per-request limit but not the cluster's.
    code, message = kafka_error(futures["part-0"])
    assert code == POLICY_VIOLATION and "(broker setting max_partitions)" in message, (code, message)

    create_topic(b.bootstrap, "fits", 60)
    futures = admin.create_topics([NewTopic("too-many", 50, 1)], operation_timeout=30)
    code, message = kafka_error(futures["too-many"])
    assert code == POLICY_VIOLATION and "(broker setting max_partitions)" in message, (code, message)
    # validate_only makes the same check.
    futures = admin.create_topics([NewTopic("too-many", 50, 1)], validate_only=True)
    code, message = kafka_error(futures["too-many"])
    assert code == POLICY_VIOLATION and "(broker setting max_partitions)" in message, (code, message)
    futures = admin.create_partitions([NewPartitions("fits", 200)], operation_timeout=30)
    code, message = kafka_error(futures["fits"])
    assert code == POLICY_VIOLATION and "(broker setting max_partitions)" in message, (code, message)
    assert open_fds(b.pid) <= baseline + 3 * 60 + SLACK

    topics = admin.list_topics(timeout=30).topics
    assert "huge" not in topics and "too-many" not in topics
    assert not any(name.startswith("part-") for name in topics)
    assert len(topics["fits"].partitions) == 60

    admin.delete_topics(["fits"], operation_timeout=30)["fits"].result(timeout=60)
    # The 60 partitions deleted make room again.
    futures = admin.create_topics([NewTopic("after", 90, 1)], operation_timeout=30)
    futures["after"].result(timeout=60)
    assert len(confluent_admin(b.bootstrap).list_topics("after", timeout=30).topics["after"].partitions) == 90


def test_metadata_naming_2000_unknown_topics_creates_at_most_the_limit(broker):
    """A Metadata request naming 2,000 unknown topics auto-creates at most
    auto_create_topics_per_request (10) of them; the others are UNKNOWN_TOPIC_OR_PARTITION
    until a retry. CreateTopics and DeleteTopics still work."""
    b = broker()
    baseline = open_fds(b.pid)
    prefix = f"auto-{uuid.uuid4().hex[:6]}"
    names = [f"{prefix}-{i}" for i in range(2000)]
    with connect(b.bootstrap, timeout=60) as sock:
        sock.sendall(metadata_v4(names))
        answered = parse_metadata_v4_topics(recv_frame(sock))
    assert set(answered) == set(names)
    created = [n for n, e in answered.items() if e == 0]
    assert len(created) == 10, len(created)
    assert all(e == UNKNOWN_TOPIC_OR_PARTITION for n, e in answered.items() if n not in created)

    admin = confluent_admin(b.bootstrap)
    existing = {n for n in admin.list_topics(timeout=30).topics if n.startswith(prefix)}
    assert existing == set(created)
    assert open_fds(b.pid) <= baseline + 3 * 10 + SLACK

    # A client's retry creates the next few.
    with connect(b.bootstrap, timeout=60) as sock:
        sock.sendall(metadata_v4(names, correlation_id=8))
        again = parse_metadata_v4_topics(recv_frame(sock))
    assert sum(1 for e in again.values() if e == 0) == 20

    create_topic(b.bootstrap, "still-works", 2)
    for future in admin.delete_topics([created[0], "still-works"], operation_timeout=30).values():
        future.result(timeout=60)
    remaining = admin.list_topics(timeout=30).topics
    assert "still-works" not in remaining and created[0] not in remaining


def test_idle_partitions_hold_no_descriptors_and_read_back_after_their_files_close(broker):
    """500 partitions created in one CreateTopics hold no descriptors (each used to hold
    three for its active segment, created or restarted). A written partition opens its
    files, closes them once idle and flushed (log_release_idle_files_ms, 0 here), and its
    records read back the same afterwards and after a restart; writing it again reopens
    them."""
    from confluent_kafka.admin import NewTopic
    import time

    b = broker(env={"STRATA_LOG_RELEASE_IDLE_FILES_MS": "0", "STRATA_OFFSETS_TOPIC_PARTITIONS": "1"})
    admin = confluent_admin(b.bootstrap)
    baseline = open_fds(b.pid)
    # The wire helper's records carry ancient timestamps: retention must not take them.
    topics = [NewTopic(f"idle-{i}", 25, 1, config={"retention.ms": "-1"}) for i in range(20)]
    futures = admin.create_topics(topics, operation_timeout=60)
    for future in futures.values():
        future.result(timeout=120)
    assert open_fds(b.pid) <= baseline + SLACK, (baseline, open_fds(b.pid))

    produce_one_record_requests(b.bootstrap, "idle-0", 5)
    expected = [(0, i, b"record-%06d" % i) for i in range(5)]

    def read_back():
        got = confluent_consume(b.bootstrap, "idle-0", 25)
        return [(g.partition, g.offset, g.value) for g in got]

    assert read_back() == expected
    deadline = time.monotonic() + 30
    log_dir = next(p for p in (b.data_dir / "logs").iterdir() if p.name.startswith("idle-0."))

    def writable_held() -> int:
        """Descriptors open for writing that the broker holds on idle-0's files. Reads
        may keep cached read-only handles; the writer's handles are the ones released."""
        fd_dir = f"/proc/{b.pid}/fd"
        held = 0
        for fd in os.listdir(fd_dir):
            try:
                if not os.readlink(os.path.join(fd_dir, fd)).startswith(str(log_dir)):
                    continue
                with open(f"/proc/{b.pid}/fdinfo/{fd}") as info:
                    flags = next(int(line.split()[1], 8) for line in info if line.startswith("flags:"))
            except (FileNotFoundError, ProcessLookupError):
                continue  # closed while we looked
            if flags & (os.O_WRONLY | os.O_RDWR):
                held += 1
        return held

    while writable_held() > 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert writable_held() == 0, "the idle partition's writable files were not closed"
    assert read_back() == expected, "reads after the files were closed"
    produce_one_record_requests_from(b.bootstrap, "idle-0", 5, 5)
    expected += [(0, i, b"record-%06d" % i) for i in range(5, 10)]
    assert read_back() == expected, "appends after the files were closed"

    b.restart()
    assert open_fds(b.pid) <= baseline + SLACK, (baseline, open_fds(b.pid))
    assert read_back() == expected
    assert len(admin.list_topics(timeout=30).topics["idle-19"].partitions) == 25


def produce_one_record_requests_from(bootstrap: str, topic: str, first: int, count: int) -> None:
    """Like produce_one_record_requests, for records `first..first + count` of a
    partition that holds `first` records."""
    with connect(bootstrap, timeout=30) as sock:
        for i in range(first, first + count):
            batch = record_batch([b"record-%06d" % i])
            sock.sendall(produce_request_v3(i, topic, 0, batch, acks=1))
            correlation_id, results = parse_produce_response_v3(recv_frame(sock))
            assert correlation_id == i
            assert results == [(topic, 0, 0, i)], results
