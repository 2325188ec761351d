"""An OTLP/gRPC trace sink for bench/tracing.sh: accepts every export, counts spans and
bytes, and writes the counts as one JSON line to the file given when it gets SIGTERM.

    python3 bench/otlp_sink.py PORT COUNTS_FILE

Binds 127.0.0.1 only. Needs grpcio and opentelemetry-proto (tests/requirements.txt)."""

from __future__ import annotations

import json
import signal
import sys
import threading
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


class Sink(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {"exports": 0, "spans": 0, "bytes": 0}

    def Export(self, request, context):  # noqa: N802 (the gRPC method name)
        spans = sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
        with self.lock:
            self.counts["exports"] += 1
            self.counts["spans"] += spans
            self.counts["bytes"] += request.ByteSize()
        return trace_service_pb2.ExportTraceServiceResponse()


def main() -> None:
    port, counts_file = int(sys.argv[1]), sys.argv[2]
    sink = Sink()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(sink, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    server.stop(grace=1).wait()
    with sink.lock, open(counts_file, "w") as f:
        f.write(json.dumps(sink.counts) + "\n")


if __name__ == "__main__":
    main()
