"""Outages longer than a session or a disk's headroom, CI-sized: the scenarios of
bench/outage_s3.py and bench/outage_etcd.py (which run them for 10 and 5 minutes and
report the figures in docs/benchmarks.md), shortened and asserted on.

- The object store is unreachable until the data disk (a 64 MiB tmpfs: needs root) passes
  its high-water mark: produce is refused with an alarm before the disk is full, uploads
  resume when the store is back, produce resumes, and every acknowledged record is read
  back once, at its offset, from offset 0.
- etcd is frozen (SIGSTOP) for longer than the brokers' session timeout: leaders keep
  acknowledging acks=all writes, every broker registers again once etcd answers (their
  leases expired meanwhile), no two brokers lead one partition in one epoch, and every
  acknowledged record is on every in-sync replica.
"""

from __future__ import annotations

import sys

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
