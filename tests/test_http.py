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

    text = b.metrics()
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
