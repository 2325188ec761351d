"""The Kafka wire protocol by hand, for malformed and edge-case requests: framing, request
headers, ApiVersions, and uncompressed RecordBatch v2 inside Produce v3.
"""

from __future__ import annotations

import socket
import struct

from clients import BASE_TS

# ---------------------------------------------------------------------------------------
# Raw Kafka protocol (for malformed and edge-case requests)
# ---------------------------------------------------------------------------------------


def kstring(s: str | None) -> bytes:
    if s is None:
        return struct.pack(">h", -1)
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def compact_string(s: str | None) -> bytes:
    if s is None:
        return uvarint(0)
    b = s.encode()
    return uvarint(len(b) + 1) + b


def request_header(api_key: int, version: int, correlation_id: int, client_id: str | None = "strata-tests",
                   flexible: bool = False) -> bytes:
    header = struct.pack(">hhi", api_key, version, correlation_id) + kstring(client_id)
    if flexible:
        header += b"\x00"  # no tagged fields
    return header


def frame(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


def connect(bootstrap: str, timeout: float = 10.0) -> socket.socket:
    host, port = bootstrap.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=timeout)
    sock.settimeout(timeout)
    return sock


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"connection closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def recv_frame(sock: socket.socket) -> bytes:
    (size,) = struct.unpack(">i", recv_exact(sock, 4))
    assert 0 <= size < 64 * 1024 * 1024, f"response frame size {size}"
    return recv_exact(sock, size)


def closed_by_peer(sock: socket.socket, timeout: float = 20.0) -> bool:
    """True if the peer closes (EOF or reset) within `timeout` without sending anything
    more than a possible error response; False if the connection stays open."""
    sock.settimeout(timeout)
    try:
        data = sock.recv(65536)
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False
    return data == b""


def read_response_or_close(sock: socket.socket, timeout: float = 20.0) -> bytes | None:
    """A response frame, or None if the broker closed the connection instead. Neither
    within `timeout` is an assertion failure."""
    sock.settimeout(timeout)
    try:
        head = sock.recv(4)
    except ConnectionResetError:
        return None
    except socket.timeout:
        raise AssertionError(f"the broker neither answered nor closed the connection within {timeout}s") from None
    if head == b"":
        return None
    head += recv_exact(sock, 4 - len(head)) if len(head) < 4 else b""
    (size,) = struct.unpack(">i", head)
    return recv_exact(sock, size)


def parse_api_versions_v0(body: bytes) -> tuple[int, int, dict[int, tuple[int, int]]]:
    """(correlation_id, error_code, {api_key: (min, max)}) of a v0-encoded response body
    (the frame without its size prefix)."""
    correlation_id, error_code, count = struct.unpack_from(">ihi", body, 0)
    pos = 10
    apis = {}
    for _ in range(count):
        key, lo, hi = struct.unpack_from(">hhh", body, pos)
        pos += 6
        apis[key] = (lo, hi)
    assert pos == len(body), f"ApiVersions v0 body has {len(body) - pos} trailing bytes"
    return correlation_id, error_code, apis


def read_uvarint(buf: bytes, pos: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def parse_api_versions_v3(body: bytes) -> tuple[int, int, dict[int, tuple[int, int]]]:
    """ApiVersions v3 response: header v0 (correlation id only, by KIP-511), flexible body."""
    correlation_id, error_code = struct.unpack_from(">ih", body, 0)
    pos = 6
    n, pos = read_uvarint(body, pos)
    apis = {}
    for _ in range(n - 1):
        key, lo, hi = struct.unpack_from(">hhh", body, pos)
        pos += 6
        tags, pos = read_uvarint(body, pos)
        assert tags == 0
        apis[key] = (lo, hi)
    return correlation_id, error_code, apis


def api_versions_request(version: int, correlation_id: int) -> bytes:
    if version >= 3:
        body = compact_string("strata-tests") + compact_string("1.0") + b"\x00"
        return frame(request_header(18, version, correlation_id, flexible=True) + body)
    return frame(request_header(18, version, correlation_id))


# ---------------------------------------------------------------------------------------
# Record batches and Produce v3, built by hand
# ---------------------------------------------------------------------------------------


def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC32C = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC32C[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def varint(n: int) -> bytes:
    """Zig-zag varint, as record fields use."""
    return uvarint((n << 1) ^ (n >> 63))


def record_batch(values: list[bytes], base_ts: int = BASE_TS, *, count: int | None = None,
                 last_offset_delta: int | None = None, magic: int = 2, bad_crc: bool = False,
                 attributes: int = 0, producer: tuple[int, int, int] = (-1, -1, -1),
                 keys: list[bytes | None] | None = None) -> bytes:
    """An uncompressed RecordBatch v2 holding `values` (no headers; null keys unless `keys`
    gives one per value, None for null). `count` and `last_offset_delta` override the header
    fields to build lying batches; `producer` is (producer id, epoch, base sequence) for an
    idempotent producer's batch."""
    keys = [None] * len(values) if keys is None else keys
    assert len(keys) == len(values)
    body = b""
    for i, (key, value) in enumerate(zip(keys, values)):
        key_field = varint(-1) if key is None else varint(len(key)) + key
        rec = b"\x00" + varint(i) + varint(i) + key_field + varint(len(value)) + value + varint(0)
        body += varint(len(rec)) + rec
    n = len(values)
    lod = n - 1 if last_offset_delta is None else last_offset_delta
    cnt = n if count is None else count
    after_crc = (
        struct.pack(">hiqqqhii", attributes, lod, base_ts, base_ts + max(n - 1, 0), *producer, cnt) + body
    )
    crc = crc32c(after_crc)
    if bad_crc:
        crc ^= 0xDEADBEEF
    after_length = struct.pack(">ibI", 0, magic, crc) + after_crc
    return struct.pack(">qi", 0, len(after_length)) + after_length


def produce_request_v3(correlation_id: int, topic: str, partition: int, records: bytes, acks: int = -1) -> bytes:
    body = (
        kstring(None)
        + struct.pack(">hi", acks, 30000)
        + struct.pack(">i", 1) + kstring(topic)
        + struct.pack(">i", 1) + struct.pack(">i", partition)
        + struct.pack(">i", len(records)) + records
    )
    return frame(request_header(0, 3, correlation_id) + body)


def parse_produce_response_v3(body: bytes) -> tuple[int, list[tuple[str, int, int, int]]]:
    """(correlation_id, [(topic, partition, error_code, base_offset)])."""
    (correlation_id,) = struct.unpack_from(">i", body, 0)
    pos = 4
    (topics,) = struct.unpack_from(">i", body, pos)
    pos += 4
    out = []
    for _ in range(topics):
        (name_len,) = struct.unpack_from(">h", body, pos)
        pos += 2
        name = body[pos:pos + name_len].decode()
        pos += name_len
        (parts,) = struct.unpack_from(">i", body, pos)
        pos += 4
        for _ in range(parts):
            index, error, base_offset, _append_time = struct.unpack_from(">ihqq", body, pos)
            pos += 22
            out.append((name, index, error, base_offset))
    return correlation_id, out


def list_offsets_latest_v1(correlation_id: int, topic: str, partition: int) -> bytes:
    """A ListOffsets v1 asking for the latest offset (the high watermark) of one partition."""
    body = (
        struct.pack(">i", -1)  # replica_id: a client
        + struct.pack(">i", 1) + kstring(topic)
        + struct.pack(">i", 1) + struct.pack(">iq", partition, -1)
    )
    return frame(request_header(2, 1, correlation_id) + body)


def parse_list_offsets_v1(body: bytes) -> tuple[int, list[tuple[str, int, int, int]]]:
    """(correlation_id, [(topic, partition, error_code, offset)])."""
    (correlation_id, topics) = struct.unpack_from(">ii", body, 0)
    pos = 8
    out = []
    for _ in range(topics):
        (name_len,) = struct.unpack_from(">h", body, pos)
        pos += 2
        name = body[pos:pos + name_len].decode()
        pos += name_len
        (parts,) = struct.unpack_from(">i", body, pos)
        pos += 4
        for _ in range(parts):
            index, error, _timestamp, offset = struct.unpack_from(">ihqq", body, pos)
            pos += 22
            out.append((name, index, error, offset))
    return correlation_id, out


def raw_produce(bootstrap: str, topic: str, partition: int, records: bytes, acks: int = -1) -> tuple[int, int]:
    """(error_code, base_offset) of a hand-built Produce v3."""
    with connect(bootstrap) as sock:
        sock.sendall(produce_request_v3(77, topic, partition, records, acks))
        correlation_id, results = parse_produce_response_v3(recv_frame(sock))
    assert correlation_id == 77
    assert len(results) == 1 and results[0][:2] == (topic, partition), results
    return results[0][2], results[0][3]


def raw_offset_fetch_v1(bootstrap: str, group: str, topic: str, partitions: list[int]) -> dict[int, tuple[int, int]]:
    """{partition: (committed offset, error code)} from a hand-built OffsetFetch v1 to one
    broker, whichever it is (a client would only ask the coordinator)."""
    body = (request_header(9, 1, 91) + kstring(group) + struct.pack(">i", 1) + kstring(topic)
            + struct.pack(">i", len(partitions)) + b"".join(struct.pack(">i", p) for p in partitions))
    with connect(bootstrap) as sock:
        sock.sendall(frame(body))
        buf = recv_frame(sock)
    correlation_id, topics = struct.unpack_from(">ii", buf, 0)
    assert correlation_id == 91 and topics == 1, (correlation_id, topics)
    pos = 8
    (name_len,) = struct.unpack_from(">h", buf, pos)
    pos += 2 + name_len
    (count,) = struct.unpack_from(">i", buf, pos)
    pos += 4
    out = {}
    for _ in range(count):
        partition, offset, metadata_len = struct.unpack_from(">iqh", buf, pos)
        pos += 14 + max(metadata_len, 0)
        (error,) = struct.unpack_from(">h", buf, pos)
        pos += 2
        out[partition] = (offset, error)
    return out
