"""Outages longer than a session or a disk's headroom, CI-sized: the scenarios of
bench/outage_s3.py and bench/outage_etcd.py (which run them for 10 and 5 minutes and
report the figures in docs/benchmarks.md), shortened and asserted on.

- The object store is unreachable until the data disk (a 64 MiB tmpfs: needs root) passes
  its high-water mark: produce is refused with an alarm before the disk is full, uploads
  resume when the store is back, produce resumes, and every acknowledged record is read
  back once, at its offset, from offset 0.
- A burst of produce after such an outage (clients sending what they held back) cannot
  outrun the high-water mark to a full disk between two housekeeping passes.
- etcd is frozen (SIGSTOP) for longer than the brokers' session timeout: leaders keep
  acknowledging acks=all writes, every broker registers again once etcd answers (their
  leases expired meanwhile), no two brokers lead one partition in one epoch, and every
  acknowledged record is on every in-sync replica.
"""

from __future__ import annotations

import subprocess
import sys

from confluent_kafka import Producer

from clients import QUIET, create_topic
from servers import REPO_ROOT, strata_binary

sys.path.insert(0, str(REPO_ROOT / "bench"))

import outage_etcd  # noqa: E402
import outage_s3  # noqa: E402


def test_object_store_outage_until_the_disk_high_water_mark(monkeypatch):
    for name, value in {"OUTAGE_S": 40, "BEFORE_S": 8, "AFTER_S": 8, "CATCHUP_MAX_S": 120, "DISK_MIB": 64,
                        "SEGMENT_MIB": 1, "LOCAL_RETENTION_MIB": 2, "RATE_MIB": 2, "SAMPLE_S": 1}.items():
        monkeypatch.setenv(name, str(value))
    result = outage_s3.run(str(strata_binary()))
    summary = {k: v for k, v in result.items() if k != "samples"}

    events = result["events_s"]
    assert "hwm_alarm_log" in events, f"the disk high-water mark was never alarmed: {summary}"
    assert events["outage_start"] < events["hwm_alarm_log"] < events["outage_end"], summary
    assert result["samples"][-1]["refused_disk_full"] > 0, "no produce was refused at the high-water mark"
    assert result["peak_disk_used_pct"] < 100, "the disk filled up"
    assert "hwm_clear_log" in events and events["hwm_clear_log"] > events["outage_end"], summary
    assert result["upload_catch_up_s"] is not None, "uploads did not catch up once the store was back"
    assert result["first_ack_after_outage_s"] is not None, "produce did not resume after the outage"
    assert result["phases"]["before"]["acked_mib_s"] > 1, summary

    v = result["verify"]
    assert v["acknowledged"] > 1000, v
    assert (v["lost"], v["mismatched"], v["duplicates"], v["unexplained"]) == (0, 0, 0, 0), v
    assert not v["offset_gaps"], v
    assert set(v["log_start_offsets"].values()) == {0}, "history from offset 0 is still there"
    b = result["broker"]
    assert b["alive"] and b["healthz"] == 200 and b["panics"] == 0 and b["enospc"] == 0, b
    assert result["ok"], summary


def test_a_burst_cannot_outrun_the_high_water_mark(broker, tmp_path):
    """Seen in the 10-minute bench run: once the store was back, producers sent what they
    had queued at 30 MiB/s, and the disk went from under the mark to full between two
    housekeeping passes (a manifest write failed with ENOSPC). Housekeeping here runs once
    a minute, so only produce itself can notice the mark in time."""
    data = tmp_path / "burst" / "data"
    data.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(data)],
                             capture_output=True, text=True)
    assert mounted.returncode == 0, f"cannot mount a tmpfs at {data} (needs root): {mounted.stderr}"
    try:
        b = broker(name="burst", env={"STRATA_DISK_HIGH_WATERMARK_PERCENT": "50",
                                      "STRATA_LOG_HOUSEKEEPING_INTERVAL_MS": "60000"})
        create_topic(b.bootstrap, "burst", 1)
        producer = Producer({**QUIET, "bootstrap.servers": b.bootstrap, "acks": "all", "linger.ms": 5,
                             "retries": 0, "message.timeout.ms": 30000})
        outcomes: dict[str, int] = {}

        def delivered(err, _msg):
            name = err.name() if err else "ok"
            outcomes[name] = outcomes.get(name, 0) + 1

        value = b"x" * (64 << 10)
        for _ in range(640):  # 40 MiB at full speed onto a 48 MiB disk with a mark at 50 %
            producer.produce("burst", value=value, on_delivery=delivered)
            producer.poll(0)
        assert producer.flush(60) == 0
        used = b.metric("strata_disk_used_percent")
        log = b.log_text()
        assert "No space left" not in log, f"the disk filled up: {outcomes}"
        assert outcomes.get("KAFKA_STORAGE_ERROR", 0) > 0, f"nothing was refused at the mark: {outcomes}"
        assert outcomes.get("ok", 0) > 100, outcomes
        assert used is not None and 50 <= used < 60, f"disk at {used} % for a mark at 50 %"
        assert "data disk past its high-water mark" in log
    finally:
        subprocess.run(["umount", "-l", str(data)], capture_output=True)


def test_etcd_frozen_past_the_session_timeout(monkeypatch):
    for name, value in {"MODE": "pause", "OUTAGE_S": 20, "BEFORE_S": 5, "AFTER_S": 15, "PARTITIONS": 3,
                        "RATE": 1000, "SAMPLE_S": 2}.items():
        monkeypatch.setenv(name, str(value))
    result = outage_etcd.run(str(strata_binary()))
    summary = {k: v for k, v in result.items() if k != "samples"}

    assert result["registered_after"] == [1, 2, 3], f"brokers did not join again after etcd came back: {summary}"
    assert result["controller_after"] is not None, summary
    during = result["phases"]["during"]
    assert during["min_acks_per_s"] and during["min_acks_per_s"] > 0, f"leaders stopped acknowledging: {during}"
    assert not result["split_brain_epochs"], result["split_brain_epochs"]
    assert not result["anomalies"], "\n".join(result["anomalies"])
    assert result["views_agree"], summary
    assert all(v["panics"] == 0 for v in result["broker_logs"].values()), result["broker_logs"]
    assert result["ok"], summary
