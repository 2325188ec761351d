"""A full disk: produce is refused with a retriable storage error, nothing acknowledged is
lost, the broker keeps serving, and produce works again once space is freed.

The data directory is a small tmpfs mounted for the test (this needs root, as CI and the
development machines have). A mount that fails fails the test: a disk-full path that is
never exercised is not known to work.
"""

import os
import subprocess

import pytest
from confluent_kafka import Producer, TopicPartition

from clients import QUIET, confluent_admin, confluent_consume, create_topic, watermarks
from servers import http_get

TOPIC = "filling"


def mount_tmpfs(path, size: str):
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs at {path} (needs root): {result.stderr.strip()}", pytrace=False)


def produce_until_full(bootstrap: str, first_seq: int, limit: int) -> tuple[list[int], list[str]]:
    """Sends `limit` records one at a time-ish; returns acknowledged sequence numbers (in
    offset order) and the error names of the refused ones."""
    producer = Producer({
        **QUIET,
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "enable.idempotence": False,
        "retries": 0,
        "linger.ms": 2,
        "batch.num.messages": 20,
        "message.timeout.ms": 30000,
    })
    acked: list[tuple[int, int]] = []
    errors: list[str] = []

    def on_delivery(err, msg):
        if err is None:
            acked.append((msg.offset(), int(msg.key())))
        else:
            errors.append(err.name())

    for seq in range(first_seq, first_seq + limit):
        producer.produce(TOPIC, key=str(seq).encode(), value=os.urandom(2000), partition=0, on_delivery=on_delivery)
        producer.poll(0)
        if len(errors) > 50:
            break
    assert producer.flush(60) == 0, "records still in flight after 60 s"
    return [seq for _, seq in sorted(acked)], errors


def test_full_disk_refuses_produce_and_loses_nothing(broker, tmp_path):
    data = tmp_path / "full" / "data"
    mount_tmpfs(data, "3m")
    try:
        b = broker(name="full", env={"STRATA_LOG_SEGMENT_BYTES": "131072", "STRATA_LOG_FLUSH_MESSAGES": "1"})
        create_topic(b.bootstrap, TOPIC, 1)

        acked, errors = produce_until_full(b.bootstrap, 0, 5000)
        assert errors, "3 MiB filled with 2 KB records and no produce was refused"
        assert set(errors) == {"KAFKA_STORAGE_ERROR"}, f"unexpected errors: {sorted(set(errors))}"
        assert len(acked) > 100, f"only {len(acked)} records fitted"
        assert http_get(b.http_url + "/healthz")[0] == 200

        # Every acknowledged record is there, in order, once; nothing else is.
        got = confluent_consume(b.bootstrap, TOPIC, 1)
        assert [int(g.key) for g in got] == acked
        assert [g.offset for g in got] == list(range(len(acked)))
        assert b.metric("strata_request_errors_total", api="Produce", error="KafkaStorageError") > 0

        # Free space: DeleteRecords drops whole segments below the new start.
        _, high = watermarks(b.bootstrap, TOPIC)
        admin = confluent_admin(b.bootstrap)  # kept alive until the futures complete
        futures = admin.delete_records([TopicPartition(TOPIC, 0, high)])
        for future in futures.values():
            assert future.result(timeout=30).low_watermark == high

        more, errors = produce_until_full(b.bootstrap, 100_000, 200)
        assert not errors, f"produce still refused after space was freed: {errors[:3]}"
        assert len(more) == 200
        got = confluent_consume(b.bootstrap, TOPIC, 1, start={0: high})
        assert [int(g.key) for g in got] == more
        assert got[0].offset == high, "offsets continue where they stopped"

        # And a restart recovers a log that hit the wall.
        b.restart()
        got = confluent_consume(b.bootstrap, TOPIC, 1, start={0: high})
        assert [int(g.key) for g in got] == more
    finally:
        subprocess.run(["umount", "-l", str(data)], capture_output=True)


def test_broker_refuses_a_data_dir_of_another_cluster(broker, tmp_path):
    b = broker(name="owner")
    create_topic(b.bootstrap, "precious", 1)
    assert b.stop() == 0
    # The metadata store is lost (or the wrong one is configured): the broker must not
    # treat the logs on disk as belonging to deleted topics.
    (b.data_dir / "metadata.json").unlink()
    b.spawn()
    assert b.proc.wait(timeout=30) != 0
    assert "belongs to cluster" in b.log_text()
    assert any((b.data_dir / "logs").iterdir()), "the logs were removed"
