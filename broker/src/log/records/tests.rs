use std::io::Write;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::*;

fn varint(out: &mut Vec<u8>, value: i64) {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    loop {
        let byte = (zigzag & 0x7f) as u8;
        zigzag >>= 7;
        if zigzag == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn field(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => varint(out, -1),
        Some(bytes) => {
            varint(out, bytes.len() as i64);
            out.extend_from_slice(bytes);
        }
    }
}

/// One record, as the wire has it; `header_count` may lie about `headers`.
fn record(
    offset_delta: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[(&[u8], Option<&[u8]>)],
    header_count: i64,
) -> Vec<u8> {
    let mut body = vec![0u8];
    varint(&mut body, 0);
    varint(&mut body, offset_delta);
    field(&mut body, key);
    field(&mut body, value);
    varint(&mut body, header_count);
    for (k, v) in headers {
        field(&mut body, Some(k));
        field(&mut body, *v);
    }
    let mut out = Vec::new();
    varint(&mut out, body.len() as i64);
    out.extend_from_slice(&body);
    out
}

/// A whole batch around a records area (already compressed if `codec` says so).
fn raw_batch(codec: i16, area: &[u8], count: i32) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&((49 + area.len()) as i32).to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes());
    b.push(2);
    b.extend_from_slice(&[0; 4]);
    b.extend_from_slice(&codec.to_be_bytes());
    b.extend_from_slice(&(count - 1).to_be_bytes());
    b.extend_from_slice(&1000i64.to_be_bytes());
    b.extend_from_slice(&1000i64.to_be_bytes());
    b.extend_from_slice(&(-1i64).to_be_bytes());
    b.extend_from_slice(&(-1i16).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.extend_from_slice(&count.to_be_bytes());
    b.extend_from_slice(area);
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

fn zstd(area: &[u8]) -> Vec<u8> {
    zstd::encode_all(area, 3).expect("zstd")
}

fn gzip(area: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(area).expect("gzip");
    encoder.finish().expect("gzip")
}

fn lz4(area: &[u8]) -> Vec<u8> {
    let mut encoder = lz4::EncoderBuilder::new().build(Vec::new()).expect("lz4");
    encoder.write_all(area).expect("lz4");
    let (out, result) = encoder.finish();
    result.expect("lz4");
    out
}

/// snappy-java's framing around raw blocks of at most 32 KiB.
fn snappy(area: &[u8]) -> Vec<u8> {
    let mut out = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01".to_vec();
    for chunk in area.chunks(32 * 1024) {
        let block = snap::raw::Encoder::new()
            .compress_vec(chunk)
            .expect("snappy");
        out.extend_from_slice(&(block.len() as u32).to_be_bytes());
        out.extend_from_slice(&block);
    }
    out
}

/// A codec number and its compressor.
type Compressor = (i16, fn(&[u8]) -> Vec<u8>);

fn compressors() -> [Compressor; 5] {
    [
        (0, |a| a.to_vec()),
        (1, gzip),
        (2, snappy),
        (3, lz4),
        (4, zstd),
    ]
}

fn kafka_record(offset: i64, key: &str, value: Option<&str>) -> Record {
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: 0,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset,
        // As kafka-protocol reads it back, so that the encoder keeps one batch.
        sequence: offset as i32 - 1,
        timestamp: 1000 + offset,
        key: Some(Bytes::from(key.to_string())),
        value: value.map(|v| Bytes::from(v.to_string())),
        headers: [(
            StrBytes::from_static_str("h"),
            Some(Bytes::from_static(b"v")),
        )]
        .into_iter()
        .collect(),
    }
}

#[test]
fn records_read_as_kafka_protocol_reads_them_for_every_codec() {
    for compression in [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let records: Vec<_> = (0..50)
            .map(|i| kafka_record(i, &format!("k{i}"), (i % 7 != 0).then_some("value")))
            .collect();
        let mut buf = BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression,
        };
        RecordBatchEncoder::encode(&mut buf, &records, &options).expect("encode");
        let batch = buf.freeze();
        assert_eq!(
            format::parse_validated_header(&batch).size,
            batch.len(),
            "one batch"
        );
        let theirs = RecordBatchDecoder::decode(&mut batch.clone())
            .expect("decode")
            .records;
        let (ours, codec) =
            decode_records(&batch, &mut Budget::new(MAX_INFLATED_BYTES)).expect("ours");
        assert_eq!(codec, compression);
        assert_eq!(ours, theirs, "{compression:?}");

        let header = format::parse_validated_header(&batch);
        let mut budget = Budget::new(MAX_INFLATED_BYTES);
        check_produced(&batch, &header, true, &mut budget).expect("a valid batch passes");
        let mut seen = Vec::new();
        for_each_timestamp(&batch, &mut budget, |offset, ts| {
            seen.push((offset, ts));
            true
        })
        .expect("timestamps");
        let want: Vec<_> = theirs.iter().map(|r| (r.offset, r.timestamp)).collect();
        assert_eq!(seen, want);
    }
}

#[test]
fn duplicate_header_keys_are_kept_in_views() {
    let area = record(
        0,
        Some(b"k"),
        Some(b"v"),
        &[(b"h", None), (b"h", Some(b"2"))],
        2,
    );
    let batch = raw_batch(0, &area, 1);
    let mut views = Vec::new();
    for_each_record(&batch, Want::All, &mut Budget::new(1 << 20), |v| {
        views.push(v);
        true
    })
    .expect("walk");
    assert_eq!(views[0].headers.len(), 2);
}

#[test]
fn a_header_count_that_lies_is_refused_before_anything_is_sized_by_it() {
    // The probe's 80-byte bomb: one record claiming 2^31 - 1 headers.
    let area = record(0, Some(b"k"), Some(b"v"), &[], i64::from(i32::MAX));
    for (codec, compress) in compressors() {
        let batch = raw_batch(codec, &compress(&area), 1);
        for want in [Want::Framing, Want::Key, Want::All] {
            let walked = for_each_record(&batch, want, &mut Budget::new(1 << 20), |_| true);
            assert!(
                matches!(walked, Err(RecordError::Malformed { index: 0, .. })),
                "codec {codec}: {walked:?}"
            );
        }
        let decoded = decode_records(&batch, &mut Budget::new(1 << 20));
        assert!(decoded.is_err(), "codec {codec}");
    }
}

#[test]
fn lengths_that_run_past_the_record_are_refused() {
    let mut area = record(0, Some(b"key"), Some(b"v"), &[], 0);
    // Key length 3 -> 60 (zigzag 120): past the record.
    let at = area.iter().position(|&b| b == 6).expect("key length");
    area[at] = 120;
    let batch = raw_batch(0, &area, 1);
    let walked = for_each_record(&batch, Want::All, &mut Budget::new(1 << 20), |_| true);
    assert!(
        matches!(walked, Err(RecordError::Malformed { .. })),
        "{walked:?}"
    );

    // A record length of 2^31 - 1 over a 10-byte record: truncated, not allocated.
    let mut area = vec![];
    varint(&mut area, i64::from(i32::MAX));
    area.extend_from_slice(&[0; 10]);
    let batch = raw_batch(4, &zstd(&area), 1);
    let walked = for_each_record(&batch, Want::All, &mut Budget::new(1 << 20), |_| true);
    assert!(walked.is_err(), "{walked:?}");
}

#[test]
fn a_snappy_block_that_declares_more_than_it_can_hold_is_refused() {
    // A raw snappy block whose varint preamble declares 4 GiB and holds nothing.
    let mut raw = Vec::new();
    let mut declared: u64 = 4 << 30;
    while declared >= 0x80 {
        raw.push((declared as u8) | 0x80);
        declared >>= 7;
    }
    raw.push(declared as u8);
    raw.extend_from_slice(&[0; 8]);
    let mut framed = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01".to_vec();
    framed.extend_from_slice(&(raw.len() as u32).to_be_bytes());
    framed.extend_from_slice(&raw);
    for area in [raw, framed] {
        let batch = raw_batch(2, &area, 1);
        let walked = for_each_record(
            &batch,
            Want::Framing,
            &mut Budget::new(MAX_INFLATED_BYTES),
            |_| true,
        );
        assert!(
            matches!(
                walked,
                Err(RecordError::Decompress {
                    codec: "snappy",
                    ..
                })
            ),
            "{walked:?}"
        );
    }
}

#[test]
fn inflation_past_the_budget_stops_with_inflated() {
    // 8 MiB of records that compress to almost nothing, against a 1 MiB budget.
    let one = record(0, Some(b"k"), Some(&[0u8; 1000]), &[], 0);
    let area: Vec<u8> = one.iter().copied().cycle().take(one.len() * 8000).collect();
    for (codec, compress) in compressors().into_iter().skip(1) {
        let batch = raw_batch(codec, &compress(&area), 8000);
        let walked = for_each_record(&batch, Want::Framing, &mut Budget::new(1 << 20), |_| true);
        assert_eq!(
            walked,
            Err(RecordError::Inflated { limit: 1 << 20 }),
            "codec {codec}"
        );
    }
    // The budget is shared: two batches of 600 KiB each exceed 1 MiB together.
    let area: Vec<u8> = one.iter().copied().cycle().take(one.len() * 600).collect();
    let batch = raw_batch(4, &zstd(&area), 600);
    let mut budget = Budget::new(1 << 20);
    assert!(for_each_record(&batch, Want::Framing, &mut budget, |_| true).is_ok());
    assert!(for_each_record(&batch, Want::Framing, &mut budget, |_| true).is_err());
}

#[test]
fn a_compressed_batch_whose_count_lies_is_refused() {
    // The offset-skip finding: a header claiming 2^31 - 1 records over one real record.
    for (codec, compress) in compressors() {
        let area = record(0, Some(b"k"), Some(b"v"), &[], 0);
        let batch = raw_batch(codec, &compress(&area), i32::MAX);
        let header = format::parse_validated_header(&batch);
        let checked = check_produced(&batch, &header, false, &mut Budget::new(1 << 20));
        assert!(
            matches!(checked, Err(BatchError::Record { index: 1, .. })),
            "codec {codec}: {checked:?}"
        );
        // And more records than counted.
        let two: Vec<u8> = [record(0, None, None, &[], 0), record(1, None, None, &[], 0)].concat();
        let batch = raw_batch(codec, &compress(&two), 1);
        let header = format::parse_validated_header(&batch);
        let checked = check_produced(&batch, &header, false, &mut Budget::new(1 << 20));
        assert!(
            matches!(checked, Err(BatchError::Record { index: 1, .. })),
            "codec {codec}: {checked:?}"
        );
        // Offset deltas that skip.
        let skipping: Vec<u8> =
            [record(0, None, None, &[], 0), record(5, None, None, &[], 0)].concat();
        let batch = raw_batch(codec, &compress(&skipping), 2);
        let header = format::parse_validated_header(&batch);
        assert!(check_produced(&batch, &header, false, &mut Budget::new(1 << 20)).is_err());
    }
}

#[test]
fn trailing_garbage_after_the_records_is_refused() {
    let mut area = record(0, Some(b"k"), Some(b"v"), &[], 0);
    area.extend_from_slice(&[0xff, 0xff]);
    for (codec, compress) in compressors() {
        let batch = raw_batch(codec, &compress(&area), 1);
        let header = format::parse_validated_header(&batch);
        assert!(
            check_produced(&batch, &header, false, &mut Budget::new(1 << 20)).is_err(),
            "codec {codec}"
        );
    }
}

#[test]
fn kept_records_are_charged_their_overhead() {
    // 20,000 empty records are 140 KB of bytes but ~3 MB kept whole.
    let area: Vec<u8> = (0..20_000)
        .flat_map(|i| record(i, None, None, &[], 0))
        .collect();
    let batch = raw_batch(4, &zstd(&area), 20_000);
    assert!(matches!(
        decode_records(&batch, &mut Budget::new(1 << 20)),
        Err(RecordError::Inflated { .. })
    ));
    assert_eq!(
        decode_records(&batch, &mut Budget::new(64 << 20))
            .expect("fits")
            .0
            .len(),
        20_000
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

    /// Any bytes after a valid header, for every codec: an answer, never a panic, and
    /// never more records than the bytes could hold.
    #[test]
    fn arbitrary_records_never_panic(area in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512), codec in 0i16..5) {
        let batch = raw_batch(codec, &area, 1);
        let mut budget = Budget::new(1 << 20);
        if let Ok(n) = for_each_record(&batch, Want::All, &mut budget, |_| true) {
            proptest::prop_assert!(n as usize <= (1 << 20) / 7 + area.len());
        }
        let header = format::parse_validated_header(&batch);
        let _ = check_produced(&batch, &header, true, &mut Budget::new(1 << 20));
        let _ = decode_records(&batch, &mut Budget::new(1 << 20));
    }
}
