"""Record batches that lie, sent by hand: counts that would push offsets past a segment's
index, header counts and snappy lengths that ask for gigabytes, and decompression bombs.

Each must be refused with a clear error code, cost the broker little memory, leave every
record that was accepted readable at its offset, and leave the broker serving.
"""

import gzip
import struct

import lz4.frame
import pytest
import zstandard
from confluent_kafka import Consumer, TopicPartition

from clients import QUIET, create_topic
from servers import proc_status_kib
from test_protocol import assert_still_serving
from wire import crc32c, raw_produce, record_batch, uvarint, varint

INVALID_RECORD, CORRUPT_MESSAGE = 87, 2
# The bound: no request of under 1 KiB may raise RSS by more than 64 MiB.
RSS_BOUND_KIB = 64 * 1024


def raw_record(offset_delta: int, key: bytes | None, value: bytes | None, header_count: int = 0,
               length: int | None = None) -> bytes:
    """One record as the wire has it; `header_count` and `length` may lie."""
    def field(b: bytes | None) -> bytes:
        return varint(-1) if b is None else varint(len(b)) + b
    body = b"\x00" + varint(0) + varint(offset_delta) + field(key) + field(value) + varint(header_count)
    return varint(len(body) if length is None else length) + body


def batch_around(area: bytes, *, codec: int, count: int, last_offset_delta: int | None = None) -> bytes:
    """A RecordBatch v2 header (with a correct CRC) around a records area, compressed or not."""
    lod = count - 1 if last_offset_delta is None else last_offset_delta
    ts = 1_700_000_000_000
    after_crc = struct.pack(">hiqqqhii", codec, lod, ts, ts, -1, -1, -1, count) + area
    after_length = struct.pack(">ibI", 0, 2, crc32c(after_crc)) + after_crc
    return struct.pack(">qi", 0, len(after_length)) + after_length


def xerial_snappy(raw_blocks: list[bytes]) -> bytes:
    """snappy-java's framing, as Kafka's snappy batches use it."""
    out = b"\x82SNAPPY\x00" + struct.pack(">ii", 1, 1)
    for block in raw_blocks:
        out += struct.pack(">i", len(block)) + block
    return out


def compressors():
    import snappy

    return {
        "gzip": (1, gzip.compress),
        "snappy": (2, lambda a: xerial_snappy([snappy.compress(a)])),
        "lz4": (3, lz4.frame.compress),
        "zstd": (4, lambda a: zstandard.ZstdCompressor().compress(a)),
    }


def consume_all(bootstrap: str, topic: str, start: int, limit: int) -> list[tuple[int, bytes]]:
    consumer = Consumer({**QUIET, "bootstrap.servers": bootstrap, "group.id": f"read-{topic}-{start}",
                         "enable.auto.commit": False, "enable.partition.eof": True})
    consumer.assign([TopicPartition(topic, 0, start)])
    out = []
    try:
        while len(out) < limit:
            msg = consumer.poll(10)
            assert msg is not None, f"no record after {out}"
            if msg.error():
                if msg.error().code() == -191:  # _PARTITION_EOF
                    break
                raise AssertionError(msg.error())
            out.append((msg.offset(), msg.value()))
    finally:
        consumer.close()
    return out


@pytest.fixture
def strata(broker):
    return broker()


def test_a_count_of_billions_is_refused_and_no_record_is_skipped(strata):
    """The probe's finding: compressed batches whose header claims 2^31 - 1 records over one
    were accepted, offsets advanced by the claim, the segment's 32-bit relative offsets
    wrapped, and a consumer at the next batch's offset got a batch billions later."""
    b = strata
    create_topic(b.bootstrap, "wrap", 1)
    expected = []
    for name, (codec, compress) in compressors().items():
        area = raw_record(0, b"k", f"one {name}".encode())
        lying = batch_around(compress(area), codec=codec, count=2**31 - 1)
        error, base = raw_produce(b.bootstrap, "wrap", 0, lying)
        assert error == INVALID_RECORD, f"{name}: a batch claiming 2^31-1 records got {error} at {base}"
        # Twice in one request, and after a valid batch: still nothing appended.
        error, base = raw_produce(b.bootstrap, "wrap", 0, record_batch([b"x"]) + lying + lying)
        assert error == INVALID_RECORD, f"{name}: {error} at {base}"

        honest = batch_around(compress(raw_record(0, b"k", f"real {name}".encode())), codec=codec, count=1)
        error, base = raw_produce(b.bootstrap, "wrap", 0, honest)
        assert (error, base) == (0, len(expected)), name
        expected.append((base, f"real {name}".encode()))

    # Every accepted record is where its produce response said, read from each offset.
    assert consume_all(b.bootstrap, "wrap", 0, 100) == expected
    for offset, value in expected:
        assert consume_all(b.bootstrap, "wrap", offset, 1) == [(offset, value)]
    assert_still_serving(b, "lying record counts")


def test_decode_bombs_are_refused_within_bounded_memory(strata):
    """An 80-byte batch whose record claims 2^31 - 1 headers, and an 88-byte snappy batch
    declaring 4 GiB, each took RSS from 39 MB to 4.1 GB on a compacted topic (where produce
    decodes every record to require keys). A zstd batch of a few KiB that inflates past
    the produce budget is refused too, without holding what it inflates."""
    import snappy

    b = strata
    create_topic(b.bootstrap, "plain", 1)
    create_topic(b.bootstrap, "compacted", 1, {"cleanup.policy": "compact"})

    four_gib = uvarint(4 << 30)
    huge_value = 512 * 1024 * 1024
    # One honest-looking record whose value is 512 MiB of zeros: a few KiB of zstd.
    prefix = b"\x00" + varint(0) + varint(0) + varint(1) + b"k" + varint(huge_value)
    zeros = zstandard.ZstdCompressor().compressobj()
    inflating = zeros.compress(varint(len(prefix) + huge_value + 1) + prefix)
    chunk = bytes(1 << 20)
    for _ in range(huge_value >> 20):
        inflating += zeros.compress(chunk)
    inflating += zeros.compress(varint(0)) + zeros.flush()

    bombs = {
        "header count 2^31-1": (batch_around(raw_record(0, b"k", b"v", header_count=2**31 - 1), codec=0, count=1),
                                INVALID_RECORD),
        "header count in gzip": (batch_around(gzip.compress(raw_record(0, b"k", b"v", header_count=2**31 - 1)),
                                              codec=1, count=1), INVALID_RECORD),
        "raw snappy declaring 4 GiB": (batch_around(four_gib + bytes(8), codec=2, count=1), CORRUPT_MESSAGE),
        "framed snappy declaring 4 GiB": (batch_around(xerial_snappy([four_gib + bytes(8)]), codec=2, count=1),
                                          CORRUPT_MESSAGE),
        "zstd inflating to 512 MiB": (batch_around(inflating, codec=4, count=1), INVALID_RECORD),
        "record length 2^31-1": (batch_around(snappy.compress(raw_record(0, b"k", b"v", length=2**31 - 1)),
                                              codec=2, count=1), None),
    }
    for label, (bomb, _) in bombs.items():
        if label.startswith("zstd"):
            assert len(bomb) < 64 * 1024, f"{label}: {len(bomb)} bytes"
        else:
            assert len(bomb) < 1024, f"{label}: {len(bomb)} bytes"

    for topic in ("compacted", "plain"):
        for label, (bomb, code) in bombs.items():
            # The peak (VmHWM) is reset to the current RSS, so a short-lived spike counts.
            with open(f"/proc/{b.pid}/clear_refs", "w") as f:
                f.write("5")
            rss_before = b.rss_kib()
            error, base = raw_produce(b.bootstrap, topic, 0, bomb)
            if code is None:
                assert error != 0, f"{topic}: {label} was accepted at {base}"
            else:
                assert error == code, f"{topic}: {label} got {error} (base {base})"
            grown = proc_status_kib(b.pid, "VmHWM") - rss_before
            assert grown < RSS_BOUND_KIB, f"{topic}: peak RSS grew by {grown} KiB with {label}"
    assert b.is_running()

    # Nothing refused was appended, and honest records still go in at offset 0.
    for topic in ("compacted", "plain"):
        error, base = raw_produce(b.bootstrap, topic, 0,
                                  batch_around(raw_record(0, b"key", b"honest"), codec=0, count=1))
        assert (error, base) == (0, 0), topic
        assert consume_all(b.bootstrap, topic, 0, 10) == [(0, b"honest")]
    assert_still_serving(b, "decode bombs")
