//! Record batches through both decoders: kafka-protocol's (patched in vendor/, see
//! STRATA-PATCHES.md; one regression test per patched site) and the broker's own
//! streaming decoder (broker/src/log/records.rs), which produce, ListOffsets by timestamp,
//! the cleaner and the offsets topic use. A fuzz target feeds damaged batches of every
//! codec to both. No decode may allocate out of proportion to its input.
//!
//! `STRATA_FUZZ_CASES=N` sets the cases per property (default keeps `cargo test` quick).

mod fuzz_support;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::compression::{Compressor, Decompressor, Snappy};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use proptest::prelude::*;

#[global_allocator]
static ALLOCATOR: fuzz_support::Measuring = fuzz_support::Measuring;

fn allocation_bound(len: usize) -> usize {
    64 * 1024 + len * 1024
}

fn uvarint(mut n: u64, out: &mut BytesMut) {
    while n >= 0x80 {
        out.put_u8((n as u8) | 0x80);
        n >>= 7;
    }
    out.put_u8(n as u8);
}

fn varint(n: i64, out: &mut BytesMut) {
    uvarint(((n << 1) ^ (n >> 63)) as u64, out);
}

/// A RecordBatch v2 around `records` (already encoded), claiming `count` records, with a
/// correct CRC so that the decoder gets past it.
fn batch(attributes: i16, count: i32, records: &[u8]) -> Bytes {
    let mut after_crc = BytesMut::new();
    after_crc.put_i16(attributes);
    after_crc.put_i32(0); // last offset delta
    after_crc.put_i64(1_700_000_000_000);
    after_crc.put_i64(1_700_000_000_000);
    after_crc.put_i64(-1);
    after_crc.put_i16(-1);
    after_crc.put_i32(-1);
    after_crc.put_i32(count);
    after_crc.put_slice(records);
    let mut out = BytesMut::new();
    out.put_i64(0);
    out.put_i32(i32::try_from(4 + 1 + 4 + after_crc.len()).expect("small batch"));
    out.put_i32(0); // partition leader epoch
    out.put_i8(2);
    out.put_u32(crc32c::crc32c(&after_crc));
    out.put_slice(&after_crc);
    out.freeze()
}

/// One record with a key and value, claiming `headers` headers and holding none.
fn record_claiming_headers(headers: i64) -> BytesMut {
    let mut body = BytesMut::new();
    body.put_i8(0);
    varint(0, &mut body); // timestamp delta
    varint(0, &mut body); // offset delta
    varint(1, &mut body);
    body.put_u8(b'k');
    varint(1, &mut body);
    body.put_u8(b'v');
    varint(headers, &mut body);
    let mut record = BytesMut::new();
    varint(i64::try_from(body.len()).expect("small"), &mut record);
    record.put_slice(&body);
    record
}

/// The broker's decoder, every way it is called: the produce check, a walk for
/// timestamps, and whole records for the cleaner. Returns the largest allocation.
fn decode_ours(batch: &[u8]) -> usize {
    use strata_broker::log::format::parse_validated_header;
    use strata_broker::log::records::{self, Budget};
    let (_, largest) = fuzz_support::largest_allocation(|| {
        let header = parse_validated_header(batch);
        let _ = records::check_produced(batch, &header, true, &mut Budget::new(1 << 20));
        let _ = records::for_each_timestamp(batch, &mut Budget::new(1 << 20), |_, _| true);
        let _ = records::decode_records(batch, &mut Budget::new(1 << 20));
    });
    largest
}

/// What the broker's decoder may allocate at once: as kafka-protocol's, plus a zstd
/// window (reserved by the decoder, touched only as far as the budget lets it inflate).
fn our_allocation_bound(len: usize) -> usize {
    allocation_bound(len) + (1 << 27) + (1 << 20)
}

fn decode(batch: Bytes) -> (anyhow::Result<usize>, usize) {
    fuzz_support::largest_allocation(|| {
        RecordBatchDecoder::decode(&mut batch.clone()).map(|set| set.records.len())
    })
}

#[test]
fn a_batch_claiming_2e31_records_reserves_in_proportion_to_its_bytes() {
    let batch = batch(0, i32::MAX, &record_claiming_headers(0));
    let len = batch.len();
    let ours = decode_ours(&batch);
    assert!(
        ours <= allocation_bound(len),
        "ours: {ours} bytes at once for {len}"
    );
    let (result, largest) = decode(batch);
    assert!(result.is_err(), "one record present, 2^31-1 claimed");
    assert!(
        largest <= allocation_bound(len),
        "{largest} bytes at once for {len}"
    );
}

#[test]
fn a_record_claiming_2e31_headers_reserves_in_proportion_to_its_bytes() {
    let batch = batch(0, 1, &record_claiming_headers(i64::from(i32::MAX)));
    let len = batch.len();
    assert!(len < 100, "the bomb is {len} bytes");
    let ours = decode_ours(&batch);
    assert!(
        ours <= allocation_bound(len),
        "ours: {ours} bytes at once for {len}"
    );
    let (result, largest) = decode(batch);
    assert!(result.is_err(), "no header present, 2^31-1 claimed");
    assert!(
        largest <= allocation_bound(len),
        "{largest} bytes at once for {len}"
    );
}

/// Raw snappy: the uncompressed length as a varint, then elements. This one claims
/// 2^32-1 bytes and holds one literal.
fn raw_snappy_bomb() -> Vec<u8> {
    vec![0xff, 0xff, 0xff, 0xff, 0x0f, 0x00, b'x']
}

#[test]
fn a_snappy_block_claiming_more_than_its_bytes_can_hold_is_refused_before_allocating() {
    let raw = raw_snappy_bomb();
    let mut xerial = BytesMut::new();
    xerial.put_slice(b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01");
    xerial.put_u32(u32::try_from(raw.len()).expect("small"));
    xerial.put_slice(&raw);
    for input in [Bytes::from(raw), xerial.freeze()] {
        let len = input.len();
        let (result, largest) = fuzz_support::largest_allocation(|| {
            Snappy::decompress(&mut input.clone(), |out: &mut Bytes| Ok(out.len()))
        });
        let err = result.expect_err("the claim is refused");
        assert!(err.to_string().contains("claims"), "{err}");
        assert!(
            largest <= allocation_bound(len),
            "{largest} bytes at once for {len}"
        );
    }
    // The same inside a batch, as a producer would send it: under 100 bytes.
    let batch = batch(2, 1, &raw_snappy_bomb());
    assert!(batch.len() < 100);
    let len = batch.len();
    let (result, largest) = decode(batch);
    assert!(result.is_err());
    assert!(
        largest <= allocation_bound(len),
        "{largest} bytes at once for {len}"
    );
}

#[test]
fn snappy_at_the_formats_densest_still_decodes() {
    // Zeros compress with the densest element snappy has (64 bytes per 3-byte copy), so
    // they sit just under the bound: both framings must still decode.
    let zeros = vec![0u8; 1 << 20];
    let mut xerial = BytesMut::new();
    Snappy::compress(&mut xerial, |buf: &mut BytesMut| {
        buf.put_slice(&zeros);
        Ok(())
    })
    .expect("compress");
    let xerial = xerial.freeze();
    let out = Snappy::decompress(&mut xerial.clone(), |b: &mut Bytes| Ok(b.clone()))
        .expect("xerial framing decodes");
    assert_eq!(out.len(), zeros.len());
    // The first xerial block, alone, is raw snappy of 32 KiB of zeros.
    let block_len = u32::from_be_bytes(xerial[16..20].try_into().expect("4 bytes")) as usize;
    let raw = xerial.slice(20..20 + block_len);
    assert!(
        raw.len() * 20 < 32 * 1024,
        "{} bytes: not near 21:1",
        raw.len()
    );
    let out = Snappy::decompress(&mut raw.clone(), |b: &mut Bytes| Ok(b.clone()))
        .expect("raw snappy decodes");
    assert_eq!(out.len(), 32 * 1024);
}

fn valid_batches() -> Vec<Bytes> {
    [
        Compression::None,
        Compression::Snappy,
        Compression::Gzip,
        Compression::Lz4,
        Compression::Zstd,
    ]
    .into_iter()
    .map(|compression| {
        let records: Vec<Record> = (0..4)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                sequence: i,
                timestamp_type: TimestampType::Creation,
                offset: i64::from(i),
                timestamp: 1_700_000_000_000,
                key: Some(Bytes::from(format!("key-{i}"))),
                value: Some(Bytes::from(vec![b'v'; 40])),
                headers: [(
                    StrBytes::from_static_str("h"),
                    Some(Bytes::from_static(b"1")),
                )]
                .into_iter()
                .collect(),
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            records.iter(),
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .expect("encode");
        buf.freeze()
    })
    .collect()
}

/// Rewrites a batch's CRC (over bytes 21..) so that damage reaches the record decoder.
fn reseal(batch: &mut [u8]) {
    if batch.len() > 21 {
        let crc = crc32c::crc32c(&batch[21..]);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: fuzz_support::cases(1500),
        max_shrink_iters: 1000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn damaged_batches_of_every_codec_fail_cleanly(
        seed in any::<prop::sample::Index>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
    ) {
        let seeds = valid_batches();
        let mut batch = seeds[seed.index(seeds.len())].to_vec();
        for (at, byte, kind) in &edits {
            let i = at.index(batch.len());
            match kind {
                0 => batch[i] = *byte,
                1 => batch.insert(i, *byte),
                _ => { batch.remove(i); }
            }
        }
        reseal(&mut batch);
        let len = batch.len();
        if len >= 61 {
            let ours = decode_ours(&batch);
            prop_assert!(ours <= our_allocation_bound(len), "ours: {} bytes at once for {}", ours, len);
        }
        let (_, largest) = decode(Bytes::from(batch));
        prop_assert!(largest <= allocation_bound(len), "{} bytes at once for {}", largest, len);
    }
}
