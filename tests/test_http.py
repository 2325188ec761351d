"""The HTTP port: /healthz, /readyz, /metrics."""

from clients import confluent_produce, Rec
from servers import http_get, metric_value, wait_until


def test_health_ready_and_metrics_after_produce(broker):
    b = broker()
    status, body = http_get(b.http_url + "/healthz")
    assert status == 200, body
    status, body = http_get(b.http_url + "/readyz")
    assert status == 200, body
    assert http_get(b.http_url + "/no-such-page")[0] == 404

    before = b.metrics()
    assert "strata_connections" in before

    records = [Rec(partition=0, key=b"k%d" % i, value=b"v" * 100, timestamp=1_700_000_000_000 + i) for i in range(500)]
    confluent_produce(b.bootstrap, "http-metrics", records, "none")

    # A request is counted once its response is written, which the client may see first:
    # the counters settle a moment after the acknowledgement.
    def counted():
        t = b.metrics()
        return t if (metric_value(t, "strata_request_duration_seconds_count", api="Produce") or 0) >= 1 else None

    text = wait_until("the produce requests counted", counted, 10)
    produce_requests = metric_value(text, "strata_requests_total", api="Produce")
    assert produce_requests is not None and produce_requests >= 1, text
    assert (metric_value(text, "strata_requests_total", api="Metadata") or 0) >= 1, text
    bytes_in = metric_value(text, "strata_bytes_in_total", topic="http-metrics")
    # Record batches carry at least the values.
    assert bytes_in is not None and bytes_in >= 500 * 100, text
    assert metric_value(text, "strata_records_in_total", topic="http-metrics") == 500, text
    assert metric_value(text, "strata_request_duration_seconds_count", api="Produce") >= 1, text

    # Log gauges are refreshed by housekeeping (default every second).
    wait_until(
        "strata_log_end_offset to reach 500",
        lambda: metric_value(b.metrics(), "strata_log_end_offset", topic="http-metrics", partition="0") == 500,
        timeout=30,
    )


def test_readyz_only_while_serving_and_clean_exit(broker):
    b = broker()
    assert http_get(b.http_url + "/readyz")[0] == 200
    code = b.stop()
    assert code == 0, b.log_tail()
    assert "SIGTERM received" in b.log_text()
    b.start()
    assert http_get(b.http_url + "/readyz")[0] == 200


def test_every_exposed_metric_is_documented(broker, tmp_path):
    """Every metric family on /metrics has a row in docs/operations.md ("Metrics"), after
    produce, a tiered upload and a remote read, so most families have samples."""
    import re
    from pathlib import Path

    from clients import create_topic, kcat_consume_raw

    b = broker(env={"STRATA_REMOTE_UPLOAD_INTERVAL_MS": "200", "STRATA_LOG_HOUSEKEEPING_INTERVAL_MS": "200"})
    create_topic(b.bootstrap, "documented", 1, {"remote.storage.enable": "true", "segment.bytes": str(1 << 20),
                                                "local.retention.bytes": str(1 << 20)})
    confluent_produce(b.bootstrap, "documented", [Rec(partition=0, key=None, value=bytes(8 << 10)) for _ in range(400)],
                      "none")
    wait_until("an upload and local deletion",
               lambda: (metric_value(b.metrics(), "strata_local_log_start_offset", topic="documented",
                                     partition="0") or 0) > 0, 60)
    assert len(kcat_consume_raw(b.bootstrap, "documented", 0)) == 400
    exposed = set(re.findall(r"(?m)^# TYPE (strata_[a-z0-9_]+) ", b.metrics()))
    doc = (Path(__file__).resolve().parent.parent / "docs" / "operations.md").read_text()
    section = doc.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"`(strata_[a-z0-9_]+)`", section))
    assert len(exposed) > 20, exposed
    assert exposed <= documented, f"on /metrics but not in docs/operations.md: {sorted(exposed - documented)}"
