"""Retention: with small segments, retention.bytes and retention.ms delete whole old
segments; the log start offset moves forward and /metrics strata_log_segments drops."""

import time

from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

from clients import Rec, confluent_admin, confluent_consume, confluent_produce, create_topic, watermarks
from servers import wait_until

SEGMENT = 16384
ENV = {"STRATA_LOG_HOUSEKEEPING_INTERVAL_MS": "200"}


def records(count: int, ts_base: int, size: int = 200, first: int = 0) -> list[Rec]:
    return [Rec(partition=0, key=b"k%d" % i, value=(b"%d:" % i).ljust(size, b"#"), timestamp=ts_base + i)
            for i in range(first, first + count)]


def segments(b, topic):
    return b.metric("strata_log_segments", topic=topic, partition="0")


def check_readable_from_log_start(b, topic, produced: list[Rec]):
    low, high = watermarks(b.bootstrap, topic)
    got = confluent_consume(b.bootstrap, topic, 1, start={0: low})
    assert [g.offset for g in got] == list(range(low, high))
    by_offset = {r.offset: r for r in produced}
    for g in got:
        assert g.value == by_offset[g.offset].value, g.offset


def test_retention_bytes_deletes_old_segments(broker, metadata):
    b = broker(metadata=metadata, env=ENV)
    now = int(time.time() * 1000)

    # Fill a topic with no size limit, see the segments pile up, then set a limit.
    create_topic(b.bootstrap, "grow-then-trim", 1, {"segment.bytes": str(SEGMENT), "retention.ms": "-1"})
    produced = records(3000, now)
    confluent_produce(b.bootstrap, "grow-then-trim", produced, "none", **{"batch.num.messages": 10})
    many = wait_until("strata_log_segments to count the rolled segments",
                      lambda: (segments(b, "grow-then-trim") or 0) >= 20 and segments(b, "grow-then-trim"),
                      timeout=30)
    assert watermarks(b.bootstrap, "grow-then-trim") == (0, 3000)

    admin = confluent_admin(b.bootstrap)
    limit = ConfigResource(ResourceType.TOPIC, "grow-then-trim", incremental_configs=[
        ConfigEntry("retention.bytes", str(4 * SEGMENT), incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([limit])[limit].result(timeout=60)
    wait_until("the log start offset to move forward",
               lambda: watermarks(b.bootstrap, "grow-then-trim")[0] > 0, timeout=30, interval=0.2)
    few = wait_until("strata_log_segments to drop",
                     lambda: (segments(b, "grow-then-trim") or many) <= 6 and segments(b, "grow-then-trim"),
                     timeout=30, interval=0.2)
    assert few < many
    size = b.metric("strata_log_size_bytes", topic="grow-then-trim", partition="0")
    assert size <= 4 * SEGMENT + SEGMENT, size
    low, high = watermarks(b.bootstrap, "grow-then-trim")
    assert 0 < low < high == 3000
    assert b.metric("strata_log_start_offset", topic="grow-then-trim", partition="0") == low
    check_readable_from_log_start(b, "grow-then-trim", produced)

    # A topic created with the limit trims while it is written to.
    create_topic(b.bootstrap, "capped", 1, {"segment.bytes": str(SEGMENT), "retention.bytes": str(3 * SEGMENT),
                                            "retention.ms": "-1"})
    capped = []
    for round_ in range(4):
        batch = records(800, now, first=round_ * 800)
        confluent_produce(b.bootstrap, "capped", batch, "lz4", **{"batch.num.messages": 10})
        capped += batch
    wait_until("retention of the capped topic",
               lambda: watermarks(b.bootstrap, "capped")[0] > 0 and (segments(b, "capped") or 99) <= 5,
               timeout=30, interval=0.2)
    check_readable_from_log_start(b, "capped", capped)

    # The moved log start offset survives a restart; nothing comes back.
    before = {t: watermarks(b.bootstrap, t) for t in ("grow-then-trim", "capped")}
    b.restart()
    assert {t: watermarks(b.bootstrap, t) for t in before} == before
    check_readable_from_log_start(b, "grow-then-trim", produced)


def test_retention_ms_deletes_expired_segments(broker, metadata):
    b = broker(metadata=metadata, env=ENV)
    now = int(time.time() * 1000)
    create_topic(b.bootstrap, "aging", 1, {"segment.bytes": str(SEGMENT), "retention.ms": "600000"})
    # An hour old: every sealed segment is past retention.ms at once.
    old = records(2000, now - 3600 * 1000)
    confluent_produce(b.bootstrap, "aging", old, "none", **{"batch.num.messages": 10})
    wait_until("expired segments to go", lambda: watermarks(b.bootstrap, "aging")[0] > 0, timeout=30, interval=0.2)
    wait_until("strata_log_segments to drop to the active segment",
               lambda: segments(b, "aging") == 1, timeout=30, interval=0.2)
    # Fresh records are kept.
    fresh = records(100, now, first=2000)
    confluent_produce(b.bootstrap, "aging", fresh, "none")
    time.sleep(1)  # several housekeeping passes
    # The old records left in the active segment may go once it rolls; fresh ones stay.
    low, high = watermarks(b.bootstrap, "aging")
    assert high == 2100 and 0 < low <= 2000, (low, high)
    check_readable_from_log_start(b, "aging", old + fresh)


def test_segment_ms_rolls_idle_segments_so_time_retention_applies(broker):
    """An idle topic's active segment is rolled after segment.ms, so retention.ms can
    delete it even though nobody writes any more."""
    b = broker(env=ENV)
    now = int(time.time() * 1000)
    create_topic(b.bootstrap, "idle", 1, {"segment.ms": "300", "retention.ms": "1500"})
    produced = records(50, now)
    confluent_produce(b.bootstrap, "idle", produced, "none")
    wait_until("the idle segment to roll and expire", lambda: watermarks(b.bootstrap, "idle") == (50, 50),
               timeout=30, interval=0.2)
    later = records(5, int(time.time() * 1000), first=50)
    confluent_produce(b.bootstrap, "idle", later, "none")
    assert [r.offset for r in later] == list(range(50, 55))
