"""OpenTelemetry traces over OTLP/gRPC: a real broker exports to a collector started here
(the OTLP TraceService, served with grpcio on loopback), and the spans must connect a
Kafka request to the log work it caused, and a Fetch of uploaded data to its remote read
and object GETs; uploads are traces of their own."""

from __future__ import annotations

import threading
from concurrent import futures

import grpc
from confluent_kafka import Producer
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from clients import QUIET, create_topic, kcat_consume_raw
from servers import free_port, wait_until

MiB = 1024 * 1024


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """Keeps every exported span with its resource attributes."""

    def __init__(self):
        self.lock = threading.Lock()
        self.spans = []  # (resource attributes, span)

    def Export(self, request, context):  # noqa: N802 (the gRPC method name)
        with self.lock:
            for resource_spans in request.resource_spans:
                resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    self.spans.extend((resource, s) for s in scope_spans.spans)
        return trace_service_pb2.ExportTraceServiceResponse()

    def named(self, name: str) -> list:
        with self.lock:
            return [s for _, s in self.spans if s.name == name]


def attributes(span) -> dict:
    out = {}
    for a in span.attributes:
        v = a.value
        out[a.key] = v.string_value if v.HasField("string_value") else v.int_value
    return out


def children(collector: Collector, parent, name: str) -> list:
    return [s for s in collector.named(name) if s.trace_id == parent.trace_id and s.parent_span_id == parent.span_id]


def test_spans_link_requests_to_log_uploads_and_remote_reads(broker):
    collector = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    try:
        b = broker(env={"STRATA_OTLP_ENDPOINT": f"http://127.0.0.1:{port}", "STRATA_OTLP_SAMPLE_RATIO": "1.0",
                        "STRATA_REMOTE_UPLOAD_INTERVAL_MS": "200", "STRATA_LOG_HOUSEKEEPING_INTERVAL_MS": "200"})
        create_topic(b.bootstrap, "traced", 1, {"remote.storage.enable": "true", "segment.bytes": str(MiB),
                                                "local.retention.bytes": str(MiB), "retention.ms": "-1"})
        producer = Producer({"bootstrap.servers": b.bootstrap, "acks": "all", "linger.ms": 20, **QUIET})
        for i in range(4 * 64):
            producer.produce("traced", value=b"%06d" % i + bytes(16 * 1024 - 6), partition=0)
        assert producer.flush(60) == 0
        wait_until("a segment uploaded", lambda: collector.named("tier.upload"), 60)
        # Local retention drops uploaded segments; offset 0 is then read from the bucket.
        wait_until("offset 0 only in the bucket",
                   lambda: (b.metric("strata_local_log_start_offset", topic="traced", partition="0") or 0) > 0, 60)
        assert len(kcat_consume_raw(b.bootstrap, "traced", 0)) == 256
        assert b.stop() == 0  # a clean shutdown flushes the spans still buffered
    finally:
        server.stop(grace=None)

    resources = {tuple(sorted(r.items())) for r, _ in collector.spans}
    assert all(dict(r)["service.name"] == "strata" and dict(r)["service.instance.id"] == "0" for r in resources)

    produces = collector.named("Produce")
    assert produces, f"no Produce request spans among {sorted({s.name for _, s in collector.spans})}"
    linked = [(p, a) for p in produces for a in children(collector, p, "log.append")]
    assert linked, "no log.append span is a child of a Produce span"
    produce, append = linked[0]
    assert attributes(produce)["kafka.api"] == "Produce"
    assert attributes(append)["topic"] == "traced" and attributes(append)["acks"] == -1
    # An acks=all Produce appends, then waits for the ISR (pipelined requests append in
    # between): the wait is the request's child, beside its appends.
    assert any(children(collector, p, "replication.wait") for p, _ in linked), "acks=all waits show as children"

    upload = collector.named("tier.upload")[0]
    assert upload.parent_span_id == b"", "an upload is the root of its own trace"
    assert attributes(upload)["topic"] == "traced" and int(attributes(upload)["bytes"]) > 0

    reads = [r for f in collector.named("Fetch") for r in children(collector, f, "tier.remote_read")]
    assert reads, "no remote read under a Fetch request"
    gets = [g for r in reads for g in children(collector, r, "object_store.get")]
    assert gets, "no object GET under a remote read"
    assert int(attributes(gets[0])["range_bytes"]) > 0 and ".segment" in attributes(gets[0])["object"]
