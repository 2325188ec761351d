use super::*;
use crate::log::tests::batch;
use kafka_protocol::records::Compression;

#[test]
fn a_client_batch_validates_and_its_header_reads_back() {
    let bytes = batch(5, 1000, Compression::None);
    let header = validate_batch(&bytes, 1 << 20).expect("valid");
    assert_eq!(header.record_count, 5);
    assert_eq!(header.last_offset_delta, 4);
    assert_eq!(header.max_timestamp, 1004);
    assert_eq!(header.size, bytes.len());
}

#[test]
fn every_codec_validates() {
    for codec in [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let bytes = batch(50, 1, codec);
        validate_batch(&bytes, 1 << 20).unwrap_or_else(|e| panic!("{codec:?}: {e}"));
    }
}

#[test]
fn damage_is_refused_with_the_right_error() {
    let good = batch(3, 1, Compression::None);
    let mut flipped = good.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0xff;
    assert!(matches!(
        validate_batch(&flipped, 1 << 20),
        Err(BatchError::Crc { .. })
    ));

    let mut magic = good.clone();
    magic[16] = 1;
    assert_eq!(validate_batch(&magic, 1 << 20), Err(BatchError::Magic(1)));

    assert!(matches!(
        validate_batch(&good[..good.len() - 1], 1 << 20),
        Err(BatchError::LengthMismatch { .. })
    ));
    assert!(matches!(
        validate_batch(&good[..30], 1 << 20),
        Err(BatchError::Truncated(30))
    ));
    assert!(matches!(
        validate_batch(&good, 10),
        Err(BatchError::TooLarge { .. })
    ));

    let mut negative = good.clone();
    negative[8..12].copy_from_slice(&(-5i32).to_be_bytes());
    assert!(matches!(
        validate_batch(&negative, 1 << 20),
        Err(BatchError::LengthMismatch { .. })
    ));
}

#[test]
fn patching_keeps_the_crc_valid() {
    let mut bytes = batch(3, 1, Compression::Lz4);
    patch_batch(&mut bytes, 123_456, 7);
    let header = validate_batch(&bytes, 1 << 20).expect("still valid");
    assert_eq!(header.base_offset, 123_456);
    assert_eq!(
        i32::from_be_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]),
        7
    );
    set_log_append_time(&mut bytes, 99_000);
    let header = validate_batch(&bytes, 1 << 20).expect("CRC recomputed");
    assert_eq!(header.max_timestamp, 99_000);
}

#[test]
fn checkpoint_v1_round_trips_and_damage_is_detected() {
    let checkpoint = Checkpoint {
        log_start_offset: 10,
        segment_base: 100,
        position: 4096,
        next_offset: 150,
        max_timestamp: 1_700_000_000_000,
        offset_of_max_timestamp: 149,
    };
    let bytes = checkpoint.encode();
    assert_eq!(bytes.len(), CHECKPOINT_LEN);
    assert_eq!(Checkpoint::decode(&bytes), Some(checkpoint));
    let mut damaged = bytes.clone();
    damaged[20] ^= 1;
    assert_eq!(Checkpoint::decode(&damaged), None);
    assert_eq!(Checkpoint::decode(&bytes[..40]), None);
}

/// A version-1 checkpoint written by hand from the table in the module doc: if this stops
/// parsing, the layout changed and needs a new version.
#[test]
fn checkpoint_v1_layout_is_stable() {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(b"SPCK");
    bytes.push(1);
    for v in [10i64, 100, 4096, 150, 1_700_000_000_000, 149] {
        bytes.extend_from_slice(&v.to_be_bytes());
    }
    let crc = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&crc.to_be_bytes());
    let parsed = Checkpoint::decode(&bytes).expect("v1 parses");
    assert_eq!(parsed.position, 4096);
    assert_eq!(parsed.offset_of_max_timestamp, 149);
}

#[test]
fn index_headers_carry_magic_and_version() {
    let header = index_header(OFFSET_INDEX_MAGIC);
    assert_eq!(&header, b"SIDX\x01\0\0\0");
    assert!(index_header_ok(&header, OFFSET_INDEX_MAGIC));
    assert!(!index_header_ok(&header, TIME_INDEX_MAGIC));
    assert!(!index_header_ok(b"SIDX\x02\0\0\0", OFFSET_INDEX_MAGIC));
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Arbitrary bytes never panic the validator, and whatever it accepts has a CRC
        /// that matches.
        #[test]
        fn validator_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(header) = validate_batch(&bytes, 1 << 20) {
                prop_assert!(crc_matches(&bytes[..header.size]));
            }
            let _ = read_batch_prefix(&bytes);
            let _ = Checkpoint::decode(&bytes);
        }

        /// Any single-byte corruption of the CRC-covered part is caught.
        #[test]
        fn corruption_is_caught(count in 1usize..20, at in 21usize..400, flip in 1u8..=255) {
            let mut bytes = batch(count, 5, kafka_protocol::records::Compression::None);
            let at = at % bytes.len();
            prop_assume!(at >= 21);
            bytes[at] ^= flip;
            prop_assert!(validate_batch(&bytes, 1 << 20).is_err());
        }
    }
}

#[test]
fn an_uncompressed_batch_whose_count_lies_is_refused() {
    // One real record, header claiming 1000 (count and last offset delta both patched,
    // CRC recomputed): framing must catch it.
    let mut bytes = batch(1, 1, Compression::None);
    bytes[23..27].copy_from_slice(&999i32.to_be_bytes());
    bytes[57..61].copy_from_slice(&1000i32.to_be_bytes());
    let crc = crc32c::crc32c(&bytes[21..]);
    bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    assert!(matches!(
        crate::log::prepare(&bytes, 1 << 20, false, 1 << 20),
        Err(BatchError::Record { .. })
    ));

    // And one claiming fewer records than it holds.
    let mut bytes = batch(3, 1, Compression::None);
    bytes[23..27].copy_from_slice(&0i32.to_be_bytes());
    bytes[57..61].copy_from_slice(&1i32.to_be_bytes());
    let crc = crc32c::crc32c(&bytes[21..]);
    bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    assert!(matches!(
        crate::log::prepare(&bytes, 1 << 20, false, 1 << 20),
        Err(BatchError::Record { .. })
    ));
}
