"""Supervised background loops: a loop that panics is logged, counted in
`strata_task_restarts_total{task}`, named on /readyz (503) while it waits for its restart,
and started again, so its work goes on: compaction and uploads happen afterwards.

The panics come from `fault_injection = "panic_task=TASK:N"`: the first N starts of the
loop panic, as a bug in it would. The broker is spawned by hand (not through the `broker`
fixture, which waits for /readyz) so the test can watch /readyz while the loops are down.
"""

from __future__ import annotations

import re

import pytest

from clients import Rec, confluent_produce, create_topic, kcat_consume_raw
from servers import StrataBroker, http_get, metric_value, wait_until

KiB = 1 << 10
PANICS = 3


@pytest.fixture
def spawned(request, tmp_path, strata_bin):
    """Factory: a StrataBroker spawned without waiting for readiness; stopped by PID."""
    started: list[StrataBroker] = []

    def spawn(env: dict[str, str]) -> StrataBroker:
        b = StrataBroker(tmp_path / f"strata{len(started)}", env=env)
        started.append(b)
        if not hasattr(request.node, "_strata_servers"):
            request.node._strata_servers = []
        request.node._strata_servers.append(b)
        b.spawn()
        return b

    yield spawn
    for b in started:
        if b.is_running():
            b.stop()
        b.kill9()


def restarts(b: StrataBroker, task: str) -> float:
    return metric_value(b.metrics(), "strata_task_restarts_total", task=task) or 0


def test_panicking_loops_are_restarted_reported_and_keep_working(spawned):
    b = spawned({
        "STRATA_FAULT_INJECTION": f"panic_task=cleaner:{PANICS},panic_task=uploader:{PANICS}",
        "STRATA_LOG_CLEANER_INTERVAL_MS": "200",
        "STRATA_LOG_HOUSEKEEPING_INTERVAL_MS": "200",
        "STRATA_REMOTE_UPLOAD_INTERVAL_MS": "200",
    })

    # While the cleaner waits for a restart (backoffs of 1, 2 and 4 s), /readyz names it.
    def cleaner_reported():
        try:
            status, body = http_get(b.http_url + "/readyz", timeout=2)
        except OSError:
            return None
        return (status, body) if status == 503 and "task cleaner is restarting" in body else None

    status, body = wait_until("/readyz to report the cleaner", cleaner_reported, timeout=30, interval=0.05)
    assert "panicked: fault injection" in body, body

    wait_until("three restarts of the cleaner and of the uploader",
               lambda: restarts(b, "cleaner") == PANICS and restarts(b, "uploader") == PANICS, timeout=60)
    b.wait_ready()
    status, body = http_get(b.http_url + "/readyz")
    assert (status, body) == (200, "ready\n")
    assert restarts(b, "cleaner") == PANICS, "no restart beyond the injected panics"
    assert restarts(b, "housekeeping") == 0

    # One log line per failure, naming the task.
    failures = [line for line in b.log_text().splitlines()
                if "background task failed; restarting it after a backoff" in line]
    assert len([line for line in failures if re.search(r"task=cleaner\b", line)]) == PANICS, failures
    assert len([line for line in failures if re.search(r"task=uploader\b", line)]) == PANICS, failures

    # The restarted cleaner compacts: only the last version of each key is left.
    create_topic(b.bootstrap, "compacted", 1, {
        "cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.01", "segment.bytes": str(64 * KiB),
        "retention.ms": "-1", "retention.bytes": "-1"})
    keys = [b"key-%03d" % k for k in range(50)]
    produced = [Rec(partition=0, key=k, value=b"v%d-" % version + k + b"~" * 900)
                for version in range(3) for k in keys]
    filler = [Rec(partition=0, key=b"filler-%03d" % i, value=bytes(KiB)) for i in range(150)]
    confluent_produce(b.bootstrap, "compacted", produced + filler, "none", **{"batch.size": 16 * KiB})

    def cleaned():
        got = kcat_consume_raw(b.bootstrap, "compacted", 0)
        versions = [g for g in got if not g.key.startswith(b"filler-")]
        return got if len(versions) == len(keys) else None

    got = wait_until("the cleaner to drop the superseded versions", cleaned, timeout=60, interval=0.5)
    assert sorted(g.value[:3] for g in got if g.key.startswith(b"key-")) == [b"v2-"] * len(keys)
    assert (metric_value(b.metrics(), "strata_log_cleaner_runs_total", topic="compacted") or 0) > 0

    # The restarted uploader uploads: the remote tier's end moves past 0.
    create_topic(b.bootstrap, "tiered", 1, {
        "remote.storage.enable": "true", "segment.bytes": str(64 * KiB), "retention.ms": "-1",
        "retention.bytes": "-1"})
    confluent_produce(b.bootstrap, "tiered", [Rec(partition=0, key=None, value=bytes(KiB)) for _ in range(300)],
                      "none", **{"batch.size": 16 * KiB})
    wait_until("an upload after the uploader's restarts",
               lambda: (metric_value(b.metrics(), "strata_remote_log_end_offset", topic="tiered",
                                     partition="0") or 0) > 0, timeout=60)

    assert b.is_running()
    assert restarts(b, "cleaner") == PANICS and restarts(b, "uploader") == PANICS
    assert b.stop() == 0, b.log_tail()


def test_a_fault_naming_no_task_is_refused_at_start(spawned):
    b = spawned({"STRATA_FAULT_INJECTION": "panic_task=nosuch:1"})
    code = b.proc.wait(timeout=30)
    assert code == 2, b.log_tail()
    assert "fault_injection" in b.log_text() and "`nosuch` is not a background task" in b.log_text(), b.log_tail()
