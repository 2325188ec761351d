"""A long object store outage under load: one broker with tiered storage on moto, reached
through a TCP fault proxy, a small data disk, and a steady acks=all idempotent producer
for the whole run. The proxy refuses every connection for OUTAGE_S seconds, then lets
them through again.

    python3 bench/outage_s3.py [STRATA_BINARY]    # default target/release/strata

What it reports (one JSON document on stdout, and in OUT if set), every SAMPLE_S seconds
and per phase (before / during / after the outage): produce throughput, delivery latency
(p50/p99) and client errors; the data file system's usage (statvfs and
`strata_disk_used_percent`); when the broker alarmed the disk high-water mark (the log
line and `strata_produce_refused_disk_full_total`); upload lag (bytes and seconds) and
how long uploads took to catch up once the store was back (until no sealed segment had
waited CAUGHT_UP_LAG_S); then a consume of every partition from offset 0 compared record
by record with what the producer was told.

The data directory is a tmpfs of DISK_MIB MiB (mounting needs root; DISK_MIB=0 uses the
host file system and then `disk_high_watermark_percent` is compared with that, which on a
large disk is never reached). The segment cache lives outside it.

Environment (defaults): OUTAGE_S (600), BEFORE_S (60), AFTER_S (120: load continues at
least this long after the outage, and until the upload backlog is gone), CATCHUP_MAX_S
(900), RATE_MIB (2: produce rate in MiB/s), MSG_TIMEOUT_MS (60000: the producer's
message.timeout.ms; 0 waits forever), RECORD_KIB (8), PARTITIONS (4),
SEGMENT_MIB (4), LOCAL_RETENTION_MIB (8, per partition), DISK_MIB (256),
HWM_PERCENT (95: `disk_high_watermark_percent`), SAMPLE_S (5), OUT (a file for the JSON),
KEEP (1: keep the work directory and its logs).

Exit code 0 when nothing acknowledged was lost or duplicated, the disk never filled and
the broker served to the end; 1 otherwise (the JSON says what). Asserts nothing about
speed. Processes are stopped by PID; servers bind 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zlib
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from clients import QUIET  # noqa: E402
from servers import (Bucket, FaultProxy, MotoServer, StrataBroker, http_get, metric_samples,  # noqa: E402
                     metric_value, s3_env, wait_until)

MiB = 1 << 20

HWM_ALARM = "data disk past its high-water mark"
HWM_CLEAR = "data disk below its high-water mark"
STALL_WARN = "uploads are stalled"
CAUGHT_UP_LAG_S = 5


def work_dir(prefix: str):
    """A temporary directory, removed afterwards unless KEEP=1 (then its path is printed)."""
    if os.environ.get("KEEP") == "1":
        path = tempfile.mkdtemp(prefix=prefix)
        print(f"work directory kept: {path}", file=sys.stderr)
        return contextlib.nullcontext(path)
    return tempfile.TemporaryDirectory(prefix=prefix)


def env_num(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def value_of(seq: int, size: int) -> bytes:
    """`seq=<n>|` then random bytes: the sequence number is read back from the prefix."""
    head = b"seq=%010d|" % seq
    return head + os.urandom(max(0, size - len(head)))


class LoadProducer(threading.Thread):
    """An idempotent acks=all producer at a fixed byte rate over every partition. It
    records, per sequence number, where the record was acknowledged (partition, offset,
    CRC of the value) or that its delivery failed; a full client queue counts as
    backpressure and the record is not sent."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, rate_bytes: float, record_bytes: int):
        super().__init__(daemon=True)
        self.config = {
            **QUIET,
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 10,
            "compression.type": "none",
            "message.timeout.ms": int(env_num("MSG_TIMEOUT_MS", 60000)),
            # A bounded client queue: while the broker refuses, the producer is held back
            # instead of buffering the whole outage in memory.
            "queue.buffering.max.kbytes": 32768,
        }
        self.producer = Producer(self.config)
        self.restarts: list[str] = []
        self.topic, self.partitions = topic, partitions
        self.rate, self.size = rate_bytes, record_bytes
        self.halt = threading.Event()
        self.lock = threading.Lock()
        self.sent = 0
        self.acked: dict[int, tuple[int, int, int]] = {}  # seq -> (partition, offset, crc)
        self.failed: dict[int, str] = {}  # seq -> error name
        self.backpressure = 0
        # Since the last `window()` call.
        self._latencies: list[float] = []
        self._errors: Counter = Counter()
        self._acked_bytes = 0
        self._acked_records = 0
        self.last_ack_at = 0.0

    def _delivered(self, err, msg) -> None:
        seq = int(msg.value()[4:14])
        with self.lock:
            if err is None:
                self.acked[seq] = (msg.partition(), msg.offset(), zlib.crc32(msg.value()))
                self._acked_bytes += len(msg.value())
                self._acked_records += 1
                latency = msg.latency()
                if latency is not None:
                    self._latencies.append(latency)
                self.last_ack_at = time.monotonic()
            else:
                self.failed[seq] = err.name()
                self._errors[err.name()] += 1

    def window(self) -> dict:
        """Throughput, latency and errors since the previous call."""
        with self.lock:
            out = {"acked_records": self._acked_records, "acked_bytes": self._acked_bytes,
                   "p50_ms": percentile(self._latencies, 0.5), "p99_ms": percentile(self._latencies, 0.99),
                   "errors": dict(self._errors), "latencies": self._latencies}
            self._latencies, self._errors = [], Counter()
            self._acked_bytes = self._acked_records = 0
        for key in ("p50_ms", "p99_ms"):
            if out[key] is not None:
                out[key] = round(out[key] * 1000, 1)
        return out

    def run(self) -> None:
        started = time.monotonic()
        while not self.halt.is_set():
            try:
                due = self.rate * (time.monotonic() - started)
                while self.sent * self.size < due and not self.halt.is_set():
                    seq = self.sent
                    try:
                        self.producer.produce(self.topic, value=value_of(seq, self.size),
                                              partition=seq % self.partitions, on_delivery=self._delivered)
                    except BufferError:
                        self.backpressure += 1
                        # Skip this slot: the rate stays the offered load, not a catch-up burst.
                        started += self.size / self.rate
                        break
                    self.sent += 1
                self.producer.poll(0.02)
            except KafkaException as e:
                self._replace(e)
        self.producer.flush(120)

    def _replace(self, error: KafkaException) -> None:
        """A fatal client error (librdkafka 2.16's idempotent producer can hit one after
        message timeouts): what it had in flight is indeterminate, and a new producer
        (a new producer id) carries on, as an application would."""
        with self.lock:
            self.restarts.append(str(error)[:300])
            for seq in range(self.sent):
                if seq not in self.acked and seq not in self.failed:
                    self.failed[seq] = "ABANDONED_AFTER_FATAL"
        self.producer = Producer(self.config)

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=180)


class Sampler(threading.Thread):
    """Every `interval` seconds: the producer's window, the disk, the broker's metrics
    and whether its log has raised the alarms yet."""

    def __init__(self, broker: StrataBroker, producer: LoadProducer, proxy: FaultProxy, data_dir: Path,
                 interval: float, t0: float):
        super().__init__(daemon=True)
        self.broker, self.producer, self.proxy, self.data_dir = broker, producer, proxy, data_dir
        self.interval, self.t0 = interval, t0
        self.phase = "before"
        self.samples: list[dict] = []
        self.latencies: dict[str, list[float]] = {}
        self.events: dict[str, float] = {}
        self.halt = threading.Event()

    def now(self) -> float:
        return round(time.monotonic() - self.t0, 1)

    def event(self, name: str) -> None:
        self.events.setdefault(name, self.now())

    def sample(self) -> dict:
        w = self.producer.window()
        self.latencies.setdefault(self.phase, []).extend(w.pop("latencies"))
        st = os.statvfs(self.data_dir)
        used_pct = 100.0 * (1 - st.f_bavail / st.f_blocks) if st.f_blocks else None
        s = {"t": self.now(), "phase": self.phase,
             "acked_mib_s": round(w["acked_bytes"] / MiB / self.interval, 2),
             "p50_ms": w["p50_ms"], "p99_ms": w["p99_ms"], "errors": w["errors"],
             "backpressure_total": self.producer.backpressure,
             "disk_used_pct": round(used_pct, 1) if used_pct is not None else None,
             "disk_used_mib": round((st.f_blocks - st.f_bavail) * st.f_frsize / MiB, 1),
             "proxy_refused": self.proxy.refused}
        try:
            text = self.broker.metrics()
            s["metric_disk_used_pct"] = metric_value(text, "strata_disk_used_percent")
            s["refused_disk_full"] = metric_value(text, "strata_produce_refused_disk_full_total") or 0
            s["upload_lag_mib"] = round((metric_value(text, "strata_remote_upload_lag_bytes") or 0) / MiB, 1)
            s["upload_lag_s"] = max((v for _, v in metric_samples(text, "strata_remote_upload_lag_seconds")),
                                    default=0)
            s["store_errors"] = metric_value(text, "strata_object_store_errors_total") or 0
            s["rss_mib"] = round(self.broker.rss_kib() / 1024, 1)
        except Exception as e:  # a broker that stopped answering is itself the finding
            s["metrics_error"] = str(e)
        log = self.broker.log_text()
        for name, needle in (("hwm_alarm_log", HWM_ALARM), ("hwm_clear_log", HWM_CLEAR),
                             ("stall_warning_log", STALL_WARN)):
            if needle in log:
                self.event(name)
        if s.get("refused_disk_full"):
            self.event("first_produce_refused")
        return s

    def run(self) -> None:
        while not self.halt.wait(self.interval):
            s = self.sample()
            self.samples.append(s)
            print(json.dumps(s), file=sys.stderr, flush=True)

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=30)


def mount_tmpfs(path: Path, mib: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mib}m", "tmpfs", str(path)], check=True,
                   capture_output=True, text=True)


def consume_all(bootstrap: str, topic: str, partitions: int) -> dict:
    """(offset, value) of every record of every partition, from offset 0 to the high
    watermark (most of it read back from the bucket)."""
    consumer = Consumer({**QUIET, "bootstrap.servers": bootstrap, "group.id": f"verify-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False, "fetch.max.bytes": 16 * MiB})
    highs = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30) for p in range(partitions)}
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out: dict[int, list[tuple[int, bytes]]] = {p: [] for p in range(partitions)}
    deadline = time.monotonic() + 900
    idle_since = time.monotonic()
    while any((out[p][-1][0] if out[p] else -1) < highs[p][1] - 1 for p in range(partitions)):
        if time.monotonic() > deadline or time.monotonic() - idle_since > 120:
            break
        for m in consumer.consume(2000, timeout=1):
            if m.error():
                continue
            out[m.partition()].append((m.offset(), m.value()))
            idle_since = time.monotonic()
    consumer.close()
    return {"records": out, "watermarks": highs}


def verify(producer: LoadProducer, read: dict, partitions: int) -> dict:
    """Every acknowledged record at its offset with its bytes; no sequence number twice;
    records not acknowledged only where the producer was told of a failure."""
    logs, highs = read["records"], read["watermarks"]
    lost, mismatched, duplicates, unexplained = [], [], [], []
    at: dict[tuple[int, int], bytes] = {}
    seen: Counter = Counter()
    gaps = []
    for p, records in logs.items():
        offsets = [o for o, _ in records]
        if offsets != list(range(highs[p][0], highs[p][1])):
            gaps.append(f"partition {p}: read {len(offsets)} records, watermarks {highs[p]}")
        for offset, value in records:
            at[(p, offset)] = value
            seen[int(value[4:14])] += 1
    for seq, (p, offset, crc) in producer.acked.items():
        value = at.get((p, offset))
        if value is None:
            lost.append((seq, p, offset))
        elif int(value[4:14]) != seq or zlib.crc32(value) != crc:
            mismatched.append((seq, p, offset))
    duplicates = [seq for seq, n in seen.items() if n > 1]
    unexplained = [seq for seq in seen if seq not in producer.acked and seq not in producer.failed]
    present_after_failure = [seq for seq in seen if seq in producer.failed]
    return {"acknowledged": len(producer.acked), "failed_deliveries": len(producer.failed),
            "failed_by_error": dict(Counter(producer.failed.values())),
            "read": sum(len(r) for r in logs.values()), "log_start_offsets": {p: highs[p][0] for p in highs},
            "lost": len(lost), "lost_examples": lost[:5], "mismatched": len(mismatched),
            "mismatched_examples": mismatched[:5], "duplicates": len(duplicates), "duplicate_examples": duplicates[:5],
            "unexplained": len(unexplained), "present_after_failed_delivery": len(present_after_failure),
            "offset_gaps": gaps}


def phase_summary(sampler: Sampler, phase: str) -> dict:
    rows = [s for s in sampler.samples if s["phase"] == phase]
    lat = sampler.latencies.get(phase, [])
    errors: Counter = Counter()
    for s in rows:
        errors.update(s["errors"])
    return {"seconds": round(len(rows) * sampler.interval), "acked_mib_s": round(sum(s["acked_mib_s"] for s in rows)
                                                                                  / max(1, len(rows)), 2),
            "p50_ms": round(percentile(lat, 0.5) * 1000, 1) if lat else None,
            "p99_ms": round(percentile(lat, 0.99) * 1000, 1) if lat else None,
            "max_ms": round(max(lat) * 1000, 1) if lat else None,
            "client_errors": dict(errors),
            "peak_disk_used_pct": max((s["disk_used_pct"] or 0 for s in rows), default=None),
            "peak_upload_lag_mib": max((s.get("upload_lag_mib", 0) for s in rows), default=None),
            "peak_rss_mib": max((s.get("rss_mib", 0) for s in rows), default=None)}


def run(binary: str) -> dict:
    """One run with the settings from the environment; the report, with "ok"."""
    os.environ["STRATA_BIN"] = binary
    outage_s, before_s, after_s = env_num("OUTAGE_S", 600), env_num("BEFORE_S", 60), env_num("AFTER_S", 120)
    catchup_max_s = env_num("CATCHUP_MAX_S", 900)
    rate = env_num("RATE_MIB", 2) * MiB
    record = int(env_num("RECORD_KIB", 8) * 1024)
    partitions = int(env_num("PARTITIONS", 4))
    segment = int(env_num("SEGMENT_MIB", 4) * MiB)
    local_retention = int(env_num("LOCAL_RETENTION_MIB", 8) * MiB)
    disk_mib = int(env_num("DISK_MIB", 256))
    hwm = int(env_num("HWM_PERCENT", 95))
    interval = env_num("SAMPLE_S", 5)
    topic = "outage"
    settings = {"outage_s": outage_s, "before_s": before_s, "after_s": after_s, "rate_mib_s": rate / MiB,
                "record_bytes": record, "partitions": partitions, "segment_bytes": segment,
                "local_retention_bytes": local_retention, "disk_mib": disk_mib, "hwm_percent": hwm}
    result: dict = {"binary": binary, "settings": settings}
    ok = False
    with work_dir("strata-outage-s3.") as tmp:
        work = Path(tmp)
        data_dir = work / "strata" / "data"
        mounted = False
        moto = proxy = b = producer = sampler = None
        try:
            if disk_mib > 0:
                mount_tmpfs(data_dir, disk_mib)
                mounted = True
            moto = MotoServer(work / "moto").start()
            bucket = Bucket(moto, f"outage-{uuid.uuid4().hex[:8]}").create()
            proxy = FaultProxy(("127.0.0.1", moto.port))
            env = s3_env(proxy.endpoint, bucket.name, remote_upload_interval_ms=1000,
                         log_housekeeping_interval_ms=1000, disk_high_watermark_percent=hwm,
                         remote_cache_dir=str(work / "cache"), remote_cache_disk_bytes=64 * MiB)
            b = StrataBroker(work / "strata", env=env).start()
            admin = AdminClient({**QUIET, "bootstrap.servers": b.bootstrap})
            config = {"remote.storage.enable": "true", "retention.ms": "-1", "retention.bytes": "-1",
                      "segment.bytes": str(segment), "local.retention.bytes": str(local_retention)}
            for future in admin.create_topics([NewTopic(topic, partitions, 1, config=config)]).values():
                future.result(timeout=30)

            t0 = time.monotonic()
            producer = LoadProducer(b.bootstrap, topic, partitions, rate, record)
            sampler = Sampler(b, producer, proxy, data_dir, interval, t0)
            producer.start()
            sampler.start()
            time.sleep(before_s)

            sampler.phase = "during"
            proxy.block()
            sampler.event("outage_start")
            time.sleep(outage_s)
            proxy.unblock()
            sampler.event("outage_end")
            end = time.monotonic()

            sampler.phase = "after"
            caught_up = None
            acked_again = None
            while time.monotonic() - end < catchup_max_s:
                s = sampler.samples[-1] if sampler.samples else {}
                if acked_again is None and producer.last_ack_at > end:
                    acked_again = round(producer.last_ack_at - end, 1)
                # Caught up: nothing sealed has waited 5 s (with small segments, one just
                # sealed is almost always waiting).
                if (caught_up is None and s.get("t", 0) > sampler.events["outage_end"]
                        and s.get("upload_lag_s", CAUGHT_UP_LAG_S) < CAUGHT_UP_LAG_S):
                    caught_up = round(s["t"] - sampler.events["outage_end"], 1)
                if caught_up is not None and time.monotonic() - end >= after_s:
                    break
                time.sleep(1)
            result["first_ack_after_outage_s"] = acked_again
            result["upload_catch_up_s"] = caught_up
            producer.stop()
            sampler.stop()
            result["producer"] = {"sent": producer.sent, "backpressure": producer.backpressure,
                                  "fatal_errors": producer.restarts}
            # Everything sealed is uploaded before reading back (the read comes mostly
            # from the bucket: local retention trimmed the rest).
            wait_until("the upload backlog to drain",
                       lambda: (b.metric("strata_remote_upload_lag_bytes") or 0) == 0, timeout=600, interval=1)
            result["phases"] = {ph: phase_summary(sampler, ph) for ph in ("before", "during", "after")}
            result["events_s"] = sampler.events
            result["samples"] = sampler.samples
            result["local_disk_at_end_mib"] = sampler.samples[-1]["disk_used_mib"] if sampler.samples else None
            read = consume_all(b.bootstrap, topic, partitions)
            result["verify"] = verify(producer, read, partitions)
            log = b.log_text()
            result["broker"] = {"alive": b.is_running(), "healthz": http_get(b.http_url + "/healthz")[0],
                                "panics": log.count("panicked"), "enospc": log.count("No space left"),
                                "hwm_alarms": log.count(HWM_ALARM), "stall_warnings": log.count(STALL_WARN),
                                "remote_segments": len(bucket.segment_objects(topic))}
            v = result["verify"]
            peak = max((s["disk_used_pct"] or 0) for s in sampler.samples)
            result["peak_disk_used_pct"] = peak
            ok = (v["lost"] == 0 and v["mismatched"] == 0 and v["duplicates"] == 0 and v["unexplained"] == 0
                  and not v["offset_gaps"] and peak < 100 and result["broker"]["alive"]
                  and result["broker"]["healthz"] == 200 and result["broker"]["panics"] == 0
                  and result["broker"]["enospc"] == 0 and caught_up is not None and acked_again is not None)
        finally:
            for thread in (producer, sampler):
                if thread is not None and thread.is_alive():
                    thread.halt.set()
            if b is not None:
                result.setdefault("broker_log_tail", b.log_tail(30))
                b.stop()
            if proxy is not None:
                proxy.stop()
            if moto is not None:
                moto.stop()
            if mounted:
                subprocess.run(["umount", "-l", str(data_dir)], capture_output=True)
    result["ok"] = ok
    return result


def main() -> int:
    binary = str(Path(sys.argv[1]).resolve()) if len(sys.argv) > 1 else str(ROOT / "target/release/strata")
    result = run(binary)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"]).write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k not in ("samples", "broker_log_tail")}, indent=1,
                     default=str))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
