"""Hostile and unusual bytes on the Kafka listener, sent with raw sockets.

Each case must get an error response or a closed connection; the broker must stay up and
keep serving other connections (a real confluent-kafka producer) afterwards.
"""

import random
import socket
import struct

import pytest
from confluent_kafka import Producer

from clients import QUIET, create_topic
from servers import proc_status_kib
from wire import (
    api_versions_request,
    closed_by_peer,
    connect,
    frame,
    parse_api_versions_v0,
    parse_api_versions_v3,
    produce_request_v3,
    raw_produce,
    read_response_or_close,
    record_batch,
    recv_frame,
    request_header,
    uvarint,
)

MAX_REQUEST_BYTES = 1024 * 1024
API_PRODUCE, API_FETCH, API_METADATA, API_API_VERSIONS = 0, 1, 3, 18
UNSUPPORTED_VERSION = 35


@pytest.fixture
def strata(broker):
    return broker(env={"STRATA_MAX_REQUEST_BYTES": str(MAX_REQUEST_BYTES)})


def assert_still_serving(b, label: str) -> None:
    assert b.is_running(), f"strata died after {label}:\n{b.log_tail()}"
    with connect(b.bootstrap) as sock:
        sock.sendall(api_versions_request(3, 4242))
        correlation_id, error, apis = parse_api_versions_v3(recv_frame(sock))
    assert (correlation_id, error) == (4242, 0), f"after {label}"
    assert API_PRODUCE in apis
    delivered = []
    producer = Producer({**QUIET, "bootstrap.servers": b.bootstrap, "acks": "all", "enable.idempotence": False,
                         "message.timeout.ms": 30000})
    producer.produce("alive", value=label.encode(),
                     on_delivery=lambda err, msg: delivered.append(err))
    assert producer.flush(60) == 0, f"producer could not deliver after {label}"
    producer.close()
    assert delivered == [None], f"after {label}: {delivered}"


def send_and_expect_error_or_close(b, payload: bytes, label: str, correlation_id: int | None = None,
                                   shutdown_write: bool = False) -> None:
    with connect(b.bootstrap) as sock:
        sock.sendall(payload)
        if shutdown_write:
            sock.shutdown(socket.SHUT_WR)
        response = read_response_or_close(sock)
        if response is not None:
            # An error response is acceptable only if it answers this request.
            assert correlation_id is not None, f"{label}: unexpected response {response[:32]!r}"
            (got,) = struct.unpack_from(">i", response, 0)
            assert got == correlation_id, f"{label}: response for correlation id {got}"
    assert_still_serving(b, label)


def test_garbage_after_a_valid_size(strata):
    rng = random.Random(7)
    for n in range(5):
        garbage = rng.randbytes(rng.randint(1, 300))
        send_and_expect_error_or_close(strata, frame(garbage), f"garbage frame #{n}")
    # A known API and version whose body is garbage.
    for api, version, flexible in [(API_METADATA, 12, True), (API_PRODUCE, 9, True), (API_FETCH, 4, False),
                                   (API_METADATA, 1, False)]:
        payload = request_header(api, version, 9, flexible=flexible) + b"\xff" * 40
        send_and_expect_error_or_close(strata, frame(payload), f"api {api} v{version} with a garbage body", 9)
    # A client id whose length runs past the frame.
    payload = struct.pack(">hhih", API_METADATA, 1, 5, 32000) + b"abc"
    send_and_expect_error_or_close(strata, frame(payload), "client id longer than the frame", 5)


def test_array_lengths_that_lie(strata):
    """Tiny requests claiming 2^31 elements must not make the broker reserve memory for them."""
    rss_before = proc_status_kib(strata.pid, "VmRSS")
    cases = [
        ("Metadata v1 with 2^31-1 topics", request_header(API_METADATA, 1, 11) + struct.pack(">i", 0x7FFFFFFF)),
        ("Metadata v12 with 2^32-2 topics (compact)",
         request_header(API_METADATA, 12, 11, flexible=True) + uvarint(0xFFFFFFFF) + b"\x00"),
        ("Produce v3 with 2^31-1 topics",
         request_header(API_PRODUCE, 3, 11) + struct.pack(">hhi", -1, -1, 1000) + struct.pack(">i", 0x7FFFFFFF)),
        ("Produce v3 records of 2^31-1 bytes",
         request_header(API_PRODUCE, 3, 11) + struct.pack(">hhi", -1, -1, 1000) + struct.pack(">i", 1)
         + struct.pack(">h", 1) + b"t" + struct.pack(">ii", 1, 0) + struct.pack(">i", 0x7FFFFFFF)),
        ("Fetch v4 with 2^31-1 topics",
         request_header(API_FETCH, 4, 11) + struct.pack(">iiiib", -1, 100, 1, 1000, 0) + struct.pack(">i", 0x7FFFFFFF)),
    ]
    for label, payload in cases:
        send_and_expect_error_or_close(strata, frame(payload), label, 11)
    rss_after = proc_status_kib(strata.pid, "VmRSS")
    assert rss_after - rss_before < 256 * 1024, f"RSS grew from {rss_before} KiB to {rss_after} KiB"


def test_truncated_header_and_frames(strata):
    # Frames shorter than a request header (api key, version, correlation id).
    send_and_expect_error_or_close(strata, frame(b""), "empty frame")
    send_and_expect_error_or_close(strata, frame(struct.pack(">hh", API_METADATA, 1)), "4-byte header")
    send_and_expect_error_or_close(strata, frame(struct.pack(">hhh", API_METADATA, 1, 0)), "6-byte header")
    # A header cut inside the client id.
    send_and_expect_error_or_close(strata, frame(struct.pack(">hhih", API_METADATA, 1, 3, 10)), "cut client id", 3)
    # The connection ends in the middle of a frame, and in the middle of the size prefix.
    send_and_expect_error_or_close(strata, struct.pack(">i", 100) + b"\x00\x03\x00\x01", "frame cut short",
                                   shutdown_write=True)
    send_and_expect_error_or_close(strata, b"\x00\x00", "size prefix cut short", shutdown_write=True)


def test_negative_sizes(strata):
    for size in (-1, -2, -2**31):
        with connect(strata.bootstrap) as sock:
            sock.sendall(struct.pack(">i", size) + b"\x00" * 16)
            assert closed_by_peer(sock), f"size {size}: connection left open"
        assert_still_serving(strata, f"size {size}")


def test_oversized_frames_are_refused_before_reading_them(strata):
    """A size prefix above max_request_bytes closes the connection at once: the broker
    neither waits for the body nor sets memory aside for it."""
    peak_before = proc_status_kib(strata.pid, "VmPeak")
    socks = []
    try:
        # Eight at once: had the broker reserved each claimed 2 GiB, VmPeak would grow by 16 GiB.
        for _ in range(8):
            sock = connect(strata.bootstrap)
            sock.sendall(struct.pack(">i", 2**31 - 1))
            socks.append(sock)
        for sock in socks:
            assert closed_by_peer(sock, timeout=20), "a 2 GiB size prefix left the connection open"
    finally:
        for sock in socks:
            sock.close()
    peak_after = proc_status_kib(strata.pid, "VmPeak")
    assert peak_after - peak_before < 4 * 1024 * 1024, f"VmPeak grew from {peak_before} KiB to {peak_after} KiB"

    with connect(strata.bootstrap) as sock:
        sock.sendall(struct.pack(">i", MAX_REQUEST_BYTES + 1))
        assert closed_by_peer(sock), "a size just over max_request_bytes left the connection open"
    assert_still_serving(strata, "oversized frames")

    # Up to the limit is fine: an ApiVersions v0 request padded with ignored trailing bytes.
    request = request_header(API_API_VERSIONS, 0, 99)
    padded = request + b"\x00" * (MAX_REQUEST_BYTES - len(request))
    with connect(strata.bootstrap) as sock:
        sock.sendall(frame(padded))
        correlation_id, error, apis = parse_api_versions_v0(recv_frame(sock))
    assert (correlation_id, error) == (99, 0)


def test_unknown_api_key_and_unsupported_versions(strata):
    send_and_expect_error_or_close(strata, frame(request_header(9999, 0, 21)), "API key 9999", 21)
    send_and_expect_error_or_close(strata, frame(request_header(-5, 0, 22)), "API key -5", 22)
    body = struct.pack(">hhi", -1, -1, 1000) + struct.pack(">i", 0)
    send_and_expect_error_or_close(strata, frame(request_header(API_PRODUCE, 99, 23) + body), "Produce v99", 23)
    send_and_expect_error_or_close(strata, frame(request_header(API_PRODUCE, -1, 24) + body), "Produce v-1", 24)
    # Below the advertised range: Produce v0-v2 are not supported (magic 0/1 formats).
    with connect(strata.bootstrap) as sock:
        sock.sendall(api_versions_request(0, 1))
        _, _, apis = parse_api_versions_v0(recv_frame(sock))
    low, high = apis[API_PRODUCE]
    if low > 0:
        send_and_expect_error_or_close(strata, frame(request_header(API_PRODUCE, low - 1, 25) + body),
                                       f"Produce v{low - 1}", 25)
    send_and_expect_error_or_close(strata, frame(request_header(API_PRODUCE, high + 1, 26) + body),
                                   f"Produce v{high + 1}", 26)


def test_api_versions_too_new_gets_the_kip511_answer(strata):
    """ApiVersions v9: a v0-encoded response with UNSUPPORTED_VERSION and the supported list;
    the connection stays usable for the retry at a version the broker knows."""
    with connect(strata.bootstrap) as sock:
        request = request_header(API_API_VERSIONS, 9, 31, flexible=True) + b"\x05hello\x041.0\x00"
        sock.sendall(frame(request))
        correlation_id, error, apis = parse_api_versions_v0(recv_frame(sock))
        assert correlation_id == 31
        assert error == UNSUPPORTED_VERSION
        for key in (API_PRODUCE, API_FETCH, API_METADATA, API_API_VERSIONS):
            assert key in apis, apis
        lowest, highest = apis[API_API_VERSIONS]
        assert lowest == 0 and 3 <= highest < 9, apis[API_API_VERSIONS]
        for key, (lo, hi) in apis.items():
            assert 0 <= lo <= hi, (key, lo, hi)

        # The retry on the same connection, at the highest version advertised.
        sock.sendall(api_versions_request(highest, 32))
        correlation_id, error, apis_again = parse_api_versions_v3(recv_frame(sock))
        assert (correlation_id, error) == (32, 0)
        assert apis_again == apis
    assert_still_serving(strata, "ApiVersions v9")


def test_every_advertised_version_range_is_honoured(strata):
    """Requests just outside an advertised range are refused; ApiVersions itself at every
    advertised version answers."""
    with connect(strata.bootstrap) as sock:
        sock.sendall(api_versions_request(0, 1))
        _, error, apis = parse_api_versions_v0(recv_frame(sock))
        assert error == 0
        lo, hi = apis[API_API_VERSIONS]
        for version in range(lo, hi + 1):
            sock.sendall(api_versions_request(version, 100 + version))
            body = recv_frame(sock)
            parse = parse_api_versions_v3 if version >= 3 else parse_api_versions_v0
            if version in (1, 2):
                # v1+ appends throttle_time_ms after the list.
                correlation_id, error = struct.unpack_from(">ih", body, 0)
            else:
                correlation_id, error, _ = parse(body)
            assert (correlation_id, error) == (100 + version, 0), version


def test_valid_request_then_garbage_on_the_same_connection(strata):
    with connect(strata.bootstrap) as sock:
        sock.sendall(api_versions_request(0, 1) + frame(b"\xde\xad\xbe\xef" * 4))
        correlation_id, error, _ = parse_api_versions_v0(recv_frame(sock))
        assert (correlation_id, error) == (1, 0)
        assert closed_by_peer(sock), "garbage after a valid request left the connection open"
    assert_still_serving(strata, "valid request then garbage")


def test_produce_validates_record_batches(strata):
    """Hand-built Produce v3 requests: the broker checks each batch before appending it."""
    b = strata
    create_topic(b.bootstrap, "raw", 2)
    error, base = raw_produce(b.bootstrap, "raw", 0, record_batch([b"a", b"b", b"c"]))
    assert (error, base) == (0, 0)

    refusals = {
        "bad CRC": record_batch([b"x"], bad_crc=True),
        "magic 1": record_batch([b"x"], magic=1),
        "truncated batch": record_batch([b"x", b"y"])[:-3],
        "control batch from a client": record_batch([b"x"], attributes=0x20),
        "unknown codec 7": record_batch([b"x"], attributes=0x07),
    }
    for label, records in refusals.items():
        error, base = raw_produce(b.bootstrap, "raw", 0, records)
        assert error != 0, f"{label} was accepted at offset {base}"

    assert raw_produce(b.bootstrap, "raw", 5, record_batch([b"x"]))[0] == 3, "unknown partition"
    assert raw_produce(b.bootstrap, "no-such-topic-raw", 0, record_batch([b"x"]))[0] == 3, "unknown topic"
    assert raw_produce(b.bootstrap, "raw", 0, record_batch([b"x"]), acks=2)[0] == 21, "acks=2"

    # All or nothing: a valid batch followed by a damaged one in the same request.
    error, _ = raw_produce(b.bootstrap, "raw", 0, record_batch([b"ok"]) + record_batch([b"bad"], bad_crc=True))
    assert error != 0, "a request with a damaged second batch was accepted"
    assert raw_produce(b.bootstrap, "raw", 0, b"")[0] == 87, "empty records: INVALID_RECORD"

    # Nothing refused was appended: the next batch lands at offset 3; two batches in one
    # request get consecutive offsets.
    assert raw_produce(b.bootstrap, "raw", 0, record_batch([b"d"])) == (0, 3)
    assert raw_produce(b.bootstrap, "raw", 0, record_batch([b"e", b"f"]) + record_batch([b"g"])) == (0, 4)
    assert raw_produce(b.bootstrap, "raw", 0, record_batch([b"h"])) == (0, 7)

    # acks=0 gets no response; the next request on the connection is answered in order.
    with connect(b.bootstrap) as sock:
        sock.sendall(produce_request_v3(500, "raw", 1, record_batch([b"quiet"]), acks=0) + api_versions_request(0, 501))
        correlation_id, error, _ = parse_api_versions_v0(recv_frame(sock))
        assert (correlation_id, error) == (501, 0)
    assert raw_produce(b.bootstrap, "raw", 1, record_batch([b"loud"])) == (0, 1)
    assert_still_serving(b, "refused batches")


def test_batch_whose_count_lies_about_its_records(strata):
    """A batch whose header claims more records (and a larger last offset delta) than it
    holds must be refused as Kafka does (INVALID_RECORD), or offsets stop being dense."""
    b = strata
    create_topic(b.bootstrap, "lying", 1)
    lying = record_batch([b"only one"], count=1000, last_offset_delta=999)
    error, base = raw_produce(b.bootstrap, "lying", 0, lying)
    next_error, next_base = raw_produce(b.bootstrap, "lying", 0, record_batch([b"next"]))
    assert next_error == 0
    assert error != 0, (
        f"a batch holding 1 record but claiming 1000 was accepted at offset {base}; "
        f"the next append landed at offset {next_base}"
    )
    assert next_base == 0
