use std::io::Write;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::*;
use crate::log::format::validate_batch;
use crate::log::prepare;

const CODECS: [(Codec, Compression); 5] = [
    (Codec::None, Compression::None),
    (Codec::Gzip, Compression::Gzip),
    (Codec::Snappy, Compression::Snappy),
    (Codec::Lz4, Compression::Lz4),
    (Codec::Zstd, Compression::Zstd),
];

/// Records of a transactional idempotent producer (id 42, epoch 3, sequences from 10),
/// with keys, headers, a null value and distinct timestamps.
fn records(count: i64) -> Vec<Record> {
    (0..count)
        .map(|i| Record {
            transactional: true,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: 42,
            producer_epoch: 3,
            timestamp_type: TimestampType::Creation,
            offset: i,
            sequence: 10 + i as i32,
            timestamp: 1_700_000_000_000 + 7 * i,
            key: Some(Bytes::from(format!("key-{i}"))),
            value: (i % 5 != 4).then(|| Bytes::from(format!("value {i} ").repeat(20))),
            headers: [(
                kafka_protocol::protocol::StrBytes::from_static_str("h"),
                Some(Bytes::from(format!("{i}"))),
            )]
            .into_iter()
            .collect(),
        })
        .collect()
}

fn encode(records: &[Record], compression: Compression) -> Vec<u8> {
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .expect("encode a test batch");
    buf.to_vec()
}

fn recompressed(
    batch: &[u8],
    codec: Codec,
    max_message_bytes: usize,
) -> Result<Prepared, BatchError> {
    let prepared = prepare(batch, 1 << 24, false, 1 << 30).expect("a valid batch");
    let target = Recompression { codec, level: -1 };
    let target = if codec == Codec::Gzip {
        target
    } else {
        Recompression { codec, level: 3 }
    };
    recompress(
        prepared,
        target,
        max_message_bytes,
        &mut Budget::new(1 << 30),
    )
}

#[test]
fn every_codec_recompresses_to_every_other_keeping_the_records_and_the_header() {
    let original = records(300);
    for (from, from_compression) in CODECS {
        let batch = encode(&original, from_compression);
        for (to, _) in CODECS {
            let prepared = recompressed(&batch, to, 1 << 24).expect("recompresses");
            let stored = prepared.batches().next().expect("one batch").to_vec();
            assert_eq!(prepared.headers.len(), 1);
            assert_eq!(prepared.headers[0].size, stored.len());
            // A valid batch (length, CRC) in the target codec.
            let header = validate_batch(&stored, 1 << 24).expect("valid after recompression");
            assert_eq!(format::codec(&stored), Ok(to), "{from:?} -> {to:?}");
            assert_eq!(
                header.attributes & !0x07,
                prepared.headers[0].attributes & !0x07
            );
            // Every header field but length, CRC and codec bits is the producer's.
            assert_eq!(stored[..8], batch[..8]);
            assert_eq!(stored[12..17], batch[12..17]);
            assert_eq!(stored[21], batch[21]);
            assert_eq!(stored[22] & !0x07, batch[22] & !0x07);
            assert_eq!(stored[23..BATCH_HEADER_LEN], batch[23..BATCH_HEADER_LEN]);
            let mut bytes = Bytes::from(stored);
            let decoded = RecordBatchDecoder::decode_all(&mut bytes).expect("decodes");
            assert_eq!(decoded.len(), 1);
            assert_eq!(decoded[0].records, original, "{from:?} -> {to:?}");
        }
    }
}

#[test]
fn batches_already_in_the_codec_are_kept_byte_for_byte() {
    let zstd = encode(&records(3), Compression::Zstd);
    let gzip = encode(&records(2), Compression::Gzip);
    let both = [zstd.clone(), gzip].concat();
    let target = Recompression {
        codec: Codec::Zstd,
        level: 3,
    };
    let prepared = prepare(&both, 1 << 20, false, 1 << 30).expect("valid");
    assert!(target.needed_for(&prepared));
    let prepared = recompress(prepared, target, 1 << 20, &mut Budget::new(1 << 30)).expect("ok");
    let batches: Vec<&[u8]> = prepared.batches().collect();
    assert_eq!(batches.len(), 2);
    assert_eq!(batches[0], &zstd[..]);
    assert_eq!(format::codec(batches[1]), Ok(Codec::Zstd));
    assert!(!target.needed_for(&prepared));
}

#[test]
fn a_batch_that_recompresses_past_max_message_bytes_is_too_large() {
    // 4 MiB of zeros compress to a few KiB; uncompressed they exceed a 1 MiB limit.
    let record = Record {
        value: Some(Bytes::from(vec![0u8; 4 << 20])),
        ..records(1).remove(0)
    };
    let batch = encode(&[record], Compression::Zstd);
    assert!(batch.len() < 1 << 20);
    let refused = recompressed(&batch, Codec::None, 1 << 20).err();
    assert!(
        matches!(refused, Some(BatchError::TooLarge { size, max }) if size > max && max == 1 << 20),
        "{refused:?}"
    );
    assert!(recompressed(&batch, Codec::Gzip, 1 << 20).is_ok());
}

#[test]
fn zstd_is_told_each_batch_inflated_size() {
    // Without the size, libzstd sizes window and tables for the level, whatever the batch:
    // at level 22 that is hundreds of MiB and most of a second for a tiny batch. Told it,
    // it writes the size into the frame header, which is what this checks.
    for (from, compression) in CODECS
        .into_iter()
        .filter(|(codec, _)| *codec != Codec::Zstd)
    {
        let small = encode(&records(1), compression);
        let large = encode(&records(400), compression);
        let both = [small.clone(), large.clone()].concat();
        let target = Recompression {
            codec: Codec::Zstd,
            level: 22,
        };
        let prepared = prepare(&both, 1 << 24, false, 1 << 30).expect("valid");
        let prepared =
            recompress(prepared, target, 1 << 24, &mut Budget::new(1 << 30)).expect("recompresses");
        let stored: Vec<Vec<u8>> = prepared.batches().map(<[u8]>::to_vec).collect();
        assert_eq!(stored.len(), 2);
        for (original, stored) in [small, large].iter().zip(stored) {
            let mut bytes = Bytes::from(original.clone());
            let decoded = RecordBatchDecoder::decode_all(&mut bytes).expect("decodes");
            let mut uncompressed = encode(&decoded[0].records, Compression::None);
            let inflated = uncompressed.split_off(BATCH_HEADER_LEN);
            let content_size =
                zstd::zstd_safe::get_frame_content_size(&stored[BATCH_HEADER_LEN..]).ok();
            assert_eq!(
                content_size,
                Some(Some(inflated.len() as u64)),
                "{from:?} -> zstd"
            );
            // One context served both batches; each is a whole frame of its own records.
            let mut bytes = Bytes::from(stored);
            let decoded_again = RecordBatchDecoder::decode_all(&mut bytes).expect("decodes");
            assert_eq!(decoded_again[0].records, decoded[0].records);
        }
    }
}

#[test]
fn each_rewritten_batch_costs_a_compressor_setup() {
    let batch = encode(&records(1), Compression::Lz4);
    let target = Recompression {
        codec: Codec::Zstd,
        level: 22,
    };
    let inflated = prepare(&batch, 1 << 20, false, 1 << 30)
        .expect("valid")
        .inflated_total();
    // Room for 10 batches' setups and records, not 11.
    let budget = 10 * (BATCH_SETUP_COST + inflated);
    let requests = |count: usize| batch.repeat(count);
    let prepared = prepare(&requests(10), 1 << 20, false, 1 << 30).expect("valid");
    let fits = recompress(prepared, target, 1 << 20, &mut Budget::new(budget));
    assert_eq!(fits.map(|p| p.batches().count()).ok(), Some(10));
    let prepared = prepare(&requests(11), 1 << 20, false, 1 << 30).expect("valid");
    let refused = recompress(prepared, target, 1 << 20, &mut Budget::new(budget)).err();
    assert_eq!(refused, Some(BatchError::Inflated { limit: budget }));
    // Batches already in the codec are copied, not set up for.
    let zstd = encode(&records(1), Compression::Zstd).repeat(11);
    let prepared = prepare(&zstd, 1 << 20, false, 1 << 30).expect("valid");
    assert!(recompress(prepared, target, 1 << 20, &mut Budget::new(budget)).is_ok());
}

#[test]
fn a_decompression_bomb_hits_the_budget() {
    let record = Record {
        value: Some(Bytes::from(vec![0u8; 8 << 20])),
        ..records(1).remove(0)
    };
    let batch = encode(&[record], Compression::Gzip);
    let prepared = prepare(&batch, 1 << 20, false, 1 << 30).expect("valid");
    let target = Recompression {
        codec: Codec::Lz4,
        level: 9,
    };
    let refused = recompress(prepared, target, 1 << 20, &mut Budget::new(1 << 20)).err();
    assert_eq!(refused, Some(BatchError::Inflated { limit: 1 << 20 }));
}

#[test]
fn snappy_output_is_kafka_framing_in_32_kib_blocks() {
    let batch = encode(&records(2000), Compression::None);
    let prepared = recompressed(&batch, Codec::Snappy, 1 << 24).expect("ok");
    let stored = prepared.batches().next().expect("one batch");
    let area = &stored[BATCH_HEADER_LEN..];
    assert_eq!(
        &area[..16],
        b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01"
    );
    let mut rest = &area[16..];
    let mut blocks = 0;
    let mut inflated = Vec::new();
    while !rest.is_empty() {
        let length = u32::from_be_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        let block = snap::raw::Decoder::new()
            .decompress_vec(&rest[4..4 + length])
            .expect("a raw snappy block");
        assert!(block.len() <= 32 * 1024);
        inflated.write_all(&block).expect("vec");
        rest = &rest[4 + length..];
        blocks += 1;
    }
    assert!(blocks > 1, "{blocks}");
    assert_eq!(inflated, batch[BATCH_HEADER_LEN..]);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Any records, any codec to any codec, any size limit: the records read back the
    /// same, or the batch is refused as too large, never a panic or a changed record.
    #[test]
    fn any_records_survive_any_recompression(
        values in proptest::collection::vec(
            proptest::option::of(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)),
            1..40,
        ),
        from in 0usize..5,
        to in 0usize..5,
        level in -5i32..12,
        max_message_bytes in 200usize..20_000,
    ) {
        let original: Vec<Record> = values
            .into_iter()
            .enumerate()
            .map(|(i, value)| Record {
                value: value.map(Bytes::from),
                timestamp: 1_700_000_000_000 - i as i64,
                ..records(i as i64 + 1).remove(i)
            })
            .collect();
        let batch = encode(&original, CODECS[from].1);
        let prepared = prepare(&batch, 1 << 24, false, 1 << 30).expect("a valid batch");
        let codec = CODECS[to].0;
        let level = match codec {
            Codec::Gzip => level.clamp(1, 9),
            Codec::Lz4 => level.clamp(1, 17),
            _ => level,
        };
        let target = Recompression { codec, level };
        match recompress(prepared, target, max_message_bytes, &mut Budget::new(1 << 30)) {
            Ok(prepared) => {
                let stored: Vec<u8> = prepared.batches().flatten().copied().collect();
                // A batch already in the codec is kept as it came (prepare checked its size).
                let limit = if codec == CODECS[from].0 { 1 << 24 } else { max_message_bytes };
                let header = validate_batch(&stored, limit).expect("valid and within the limit");
                proptest::prop_assert_eq!(header.record_count, original.len() as i32);
                let mut bytes = Bytes::from(stored);
                let decoded = RecordBatchDecoder::decode_all(&mut bytes).expect("decodes");
                proptest::prop_assert_eq!(&decoded[0].records, &original);
            }
            Err(BatchError::TooLarge { size, max }) => {
                proptest::prop_assert!(size > max && codec != CODECS[from].0);
            }
            Err(other) => proptest::prop_assert!(false, "{other}"),
        }
    }
}
