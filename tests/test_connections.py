"""What a client can hold on the Kafka listener: connection slots, idle and slow
connections, memory in flight, and lines in the broker's log.

Each test sends the hostile input through real sockets to a real `strata` process and
then checks the bound (descriptors, RSS, log lines, metrics) and that the broker still
serves a real client.
"""

from __future__ import annotations

import os
import selectors
import socket
import struct
import threading
import time

from confluent_kafka import Producer

from clients import QUIET, create_topic
from servers import proc_status_kib, wait_until
from wire import (
    api_versions_request,
    closed_by_peer,
    connect,
    frame,
    parse_api_versions_v3,
    parse_produce_response_v3,
    produce_request_v3,
    record_batch,
    recv_frame,
    request_header,
)

MIB = 1024 * 1024


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def assert_serves(b, label: str) -> None:
    """ApiVersions on a fresh connection and one record through a real producer."""
    assert b.is_running(), f"strata died after {label}:\n{b.log_tail()}"
    with connect(b.bootstrap) as sock:
        sock.sendall(api_versions_request(3, 4242))
        correlation_id, error, _ = parse_api_versions_v3(recv_frame(sock))
    assert (correlation_id, error) == (4242, 0), f"after {label}"
    delivered = []
    producer = Producer({**QUIET, "bootstrap.servers": b.bootstrap, "acks": "all",
                         "enable.idempotence": False, "message.timeout.ms": 30000})
    producer.produce("alive", value=label.encode(), on_delivery=lambda err, msg: delivered.append(err))
    assert producer.flush(60) == 0, f"producer could not deliver after {label}"
    assert delivered == [None], f"after {label}: {delivered}"


def open_idle(bootstrap: str, n: int) -> list[socket.socket]:
    return [connect(bootstrap) for _ in range(n)]


def split_closed(socks: list[socket.socket], expect_closed: int, timeout: float = 30.0):
    """Waits until `expect_closed` of `socks` are closed by the broker (EOF or reset),
    then waits a little longer to see that no more close. Returns (open, closed)."""
    selector = selectors.DefaultSelector()
    for s in socks:
        selector.register(s, selectors.EVENT_READ)
    closed: set[socket.socket] = set()

    def collect(wait: float) -> None:
        for key, _ in selector.select(wait):
            s = key.fileobj
            try:
                data = s.recv(1)
            except (ConnectionResetError, BrokenPipeError):
                data = b""
            assert data == b"", f"the broker sent {data!r} on a connection that sent nothing"
            closed.add(s)
            selector.unregister(s)

    deadline = time.monotonic() + timeout
    while len(closed) < expect_closed and time.monotonic() < deadline:
        collect(0.2)
    settle = time.monotonic() + 2.0
    while time.monotonic() < settle:
        collect(0.2)
    selector.close()
    return [s for s in socks if s not in closed], list(closed)


def close_all(socks) -> None:
    for s in socks:
        s.close()


def test_connections_past_max_connections_are_closed_and_fds_stay_bounded(broker):
    limit = 50
    b = broker(env={"STRATA_MAX_CONNECTIONS": str(limit)})
    fds_before = open_fds(b.pid)
    socks = open_idle(b.bootstrap, 300)
    try:
        still_open, closed = split_closed(socks, expect_closed=250)
        assert len(still_open) == limit, f"{len(still_open)} connections open, limit {limit}"
        assert len(closed) == 250
        # The first ones got the slots: the broker admits in arrival order.
        assert still_open == socks[:limit]
        fds = open_fds(b.pid)
        assert fds - fds_before <= limit + 10, f"broker fds went from {fds_before} to {fds}"
        assert b.metric("strata_connections_rejected_total", reason="max_connections") == 250
        assert b.metric("strata_connections") == limit
        # While full, a new client is turned away too.
        with connect(b.bootstrap) as extra:
            assert closed_by_peer(extra, 10), "a connection past the limit was left open"
    finally:
        close_all(socks)
    wait_until("idle connections to go", lambda: b.metric("strata_connections") == 0)
    assert_serves(b, "max_connections reached and freed")
    text = b.log_text()
    refusals = text.count("over the connection limit")
    assert 1 <= refusals <= 10, f"{refusals} refusal lines for 251 refusals from one address"
    assert b.metric("strata_log_lines_suppressed_total", event="connection_rejected") == 251 - refusals


def test_per_ip_limit_and_its_override(broker):
    per_ip = 5
    plain = broker(env={"STRATA_MAX_CONNECTIONS_PER_IP": str(per_ip)}, name="plain")
    socks = open_idle(plain.bootstrap, 20)
    try:
        still_open, closed = split_closed(socks, expect_closed=15)
        assert (len(still_open), len(closed)) == (per_ip, 15)
        assert plain.metric("strata_connections_rejected_total", reason="max_connections_per_ip") == 15
    finally:
        close_all(socks)

    raised = broker(env={"STRATA_MAX_CONNECTIONS_PER_IP": str(per_ip),
                         "STRATA_MAX_CONNECTIONS_PER_IP_OVERRIDES": "10.1.2.3:1,127.0.0.1:12"}, name="raised")
    socks = open_idle(raised.bootstrap, 20)
    try:
        still_open, closed = split_closed(socks, expect_closed=8)
        assert (len(still_open), len(closed)) == (12, 8), "the override for 127.0.0.1 is 12"
    finally:
        close_all(socks)
    wait_until("connections to go", lambda: raised.metric("strata_connections") == 0)
    assert_serves(raised, "per-ip override")


def test_a_bad_override_stops_start_up_naming_the_setting(broker, tmp_path):
    from servers import StrataBroker

    b = StrataBroker(tmp_path / "bad", env={"STRATA_MAX_CONNECTIONS_PER_IP_OVERRIDES": "localhost:5"})
    proc = b.spawn()
    assert proc.wait(timeout=60) == 2
    assert "max_connections_per_ip_overrides" in b.log_text()


def test_idle_connections_are_closed(broker):
    b = broker(env={"STRATA_CONNECTIONS_MAX_IDLE_MS": "1500"})
    idle = connect(b.bootstrap)
    idle.sendall(api_versions_request(3, 1))
    assert parse_api_versions_v3(recv_frame(idle))[0] == 1
    busy = connect(b.bootstrap)
    started = time.monotonic()
    try:
        # A connection that sends a request every 0.5 s is never idle for 1.5 s.
        for i in range(8):
            busy.sendall(api_versions_request(3, 100 + i))
            assert parse_api_versions_v3(recv_frame(busy))[0] == 100 + i
            time.sleep(0.5)
        idle.settimeout(1.0)
        try:
            data = idle.recv(1)
        except ConnectionResetError:
            data = b""
        assert data == b"", "the idle connection was not closed"
        assert time.monotonic() - started < 30
    finally:
        idle.close()
        busy.close()
    assert b.metric("strata_connections_closed_total", reason="idle") >= 1
    assert_serves(b, "idle timeout")


def test_slow_loris_connections_are_closed_after_the_read_timeout(broker):
    b = broker(env={"STRATA_REQUEST_READ_TIMEOUT_MS": "2000"})
    # A valid ApiVersions request, sent one byte per second.
    request = api_versions_request(3, 7)
    rss_before = b.rss_kib()
    socks = open_idle(b.bootstrap, 200)
    alive = list(socks)
    started = time.monotonic()
    try:
        for second in range(len(request)):
            for s in list(alive):
                try:
                    s.sendall(request[second:second + 1])
                except (BrokenPipeError, ConnectionResetError):
                    alive.remove(s)
            if not alive:
                break
            time.sleep(1.0)
        elapsed = time.monotonic() - started
        assert not alive, f"{len(alive)} trickling connections still open after {elapsed:.0f} s"
        # The timeout is 2 s from the first byte; allow for a loaded machine.
        assert elapsed < 15, f"trickling connections lasted {elapsed:.0f} s"
    finally:
        close_all(socks)
    wait_until("trickling connections to be gone", lambda: b.metric("strata_connections") == 0)
    assert b.metric("strata_connections_closed_total", reason="request_read_timeout") == 200
    rss_after = b.rss_kib()
    assert rss_after - rss_before < 32 * 1024, f"RSS grew from {rss_before} KiB to {rss_after} KiB"
    lines = b.log_text().count("request not received within request_read_timeout_ms")
    assert 1 <= lines <= 10, f"{lines} read-timeout lines for 200 timeouts from one address"
    assert_serves(b, "slow loris")


def test_a_garbage_flood_logs_a_bounded_number_of_lines_and_counts_them_all(broker):
    b = broker()
    bad_frames = undecodable = 300
    for i in range(bad_frames):
        with connect(b.bootstrap) as sock:
            sock.sendall(struct.pack(">i", -1 - i))  # negative size: a bad frame
            assert closed_by_peer(sock, 10)
    for i in range(undecodable):
        with connect(b.bootstrap) as sock:
            # API key 999 does not exist.
            sock.sendall(frame(request_header(999, 0, i) + b"\x00" * 16))
            assert closed_by_peer(sock, 10)
    text = b.log_text()
    lines = text.count("closing connection: bad frame") + text.count("closing connection: undecodable request")
    assert 1 <= lines <= 10, f"{lines} log lines for {bad_frames + undecodable} bad requests from one address"
    assert b.metric("strata_request_errors_total", api="(frame)") == bad_frames
    assert b.metric("strata_request_errors_total", api="(decode)") == undecodable
    suppressed = (b.metric("strata_log_lines_suppressed_total", event="bad_frame") or 0) + \
        (b.metric("strata_log_lines_suppressed_total", event="undecodable_request") or 0)
    assert suppressed + lines == bad_frames + undecodable
    assert "suppressed=" in text
    assert_serves(b, "garbage flood")


def test_large_produces_at_once_wait_for_budget_and_all_succeed(broker):
    value_bytes = 8 * MIB
    connections = 24
    b = broker(env={
        "STRATA_MAX_REQUEST_BYTES": str(10 * MIB),
        "STRATA_MESSAGE_MAX_BYTES": str(9 * MIB),
        "STRATA_QUEUED_MAX_REQUEST_BYTES": str(16 * MIB),
    })
    create_topic(b.bootstrap, "big", 1)
    batch = record_batch([b"v" * value_bytes])
    request = produce_request_v3(5, "big", 0, batch)
    assert len(request) > 8 * MIB
    rss_before = b.rss_kib()
    # Resets the peak RSS (VmHWM) to the current RSS, so the peak below is the flood's.
    with open(f"/proc/{b.pid}/clear_refs", "w") as f:
        f.write("5")
    socks = [connect(b.bootstrap, timeout=120) for _ in range(connections)]
    results: list[object] = [None] * connections
    go = threading.Barrier(connections)

    def send(i: int) -> None:
        try:
            go.wait()
            socks[i].sendall(request)
            results[i] = parse_produce_response_v3(recv_frame(socks[i]))
        except Exception as e:  # reported below with the others
            results[i] = e

    threads = [threading.Thread(target=send, args=(i,)) for i in range(connections)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
    finally:
        close_all(socks)
    failures = [r for r in results if not (isinstance(r, tuple) and r[1][0][2] == 0)]
    assert not failures, f"{len(failures)} of {connections} produces failed: {failures[:3]}"
    offsets = sorted(r[1][0][3] for r in results)
    assert offsets == list(range(connections)), offsets
    # Without the budget all 24 requests are read at once (192 MiB); with 16 MiB at most
    # two are held, plus what the log append and the allocator keep.
    peak = proc_status_kib(b.pid, "VmHWM")
    grown = peak - rss_before
    assert grown < 64 * 1024, f"peak RSS {peak} KiB, {grown} KiB over the RSS before the flood ({rss_before} KiB)"

    wait_until("in-flight bytes to drain", lambda: b.metric("strata_queued_request_bytes") == 0)
    assert_serves(b, "large produces at once")
