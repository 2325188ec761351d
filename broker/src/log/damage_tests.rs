//! Damage in stored segments: found by reads, never skipped, indexes rebuilt, and local
//! copies dropped only where the remote tier holds them.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use kafka_protocol::records::Compression;

use super::tests::{batch, config};
use super::*;
use crate::log::records::MAX_INFLATED_BYTES;

fn append_batches(log: &mut Log, n: i64) {
    for i in 0..n {
        let prepared = prepare(
            &batch(20, i * 100, Compression::None),
            log.config().max_message_bytes,
            false,
            MAX_INFLATED_BYTES,
        )
        .expect("prepare");
        log.append(prepared, 0, 0).expect("append");
    }
}

/// A log of three segments, 10 batches of 20 records each (offsets 0..200, 200..400, 400..600).
fn three_segments(dir: &Path) -> Log {
    let mut cfg = config();
    cfg.index_interval_bytes = 1;
    let mut log = Log::open(dir, cfg, 0).expect("open");
    for _ in 0..3 {
        append_batches(&mut log, 10);
        log.roll(0).expect("roll");
    }
    log
}

fn flip(path: &Path, position: u64) {
    flip_bits(path, position, 0x40);
}

fn flip_bits(path: &Path, position: u64, mask: u8) {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open");
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, position).expect("read");
    byte[0] ^= mask;
    file.write_all_at(&byte, position).expect("write");
}

fn batch_positions(log: &Log, base: i64) -> Vec<u64> {
    let location = log.locate(base).expect("locate").expect("data");
    let mut positions = Vec::new();
    let mut position = 0;
    while let Some((_, size, _)) =
        segment::read_prefix_at(&location.file, position, location.end).expect("prefix")
    {
        positions.push(position);
        position += size as u64;
    }
    positions
}

#[test]
fn a_flipped_byte_fails_the_read_of_its_batch_and_the_rest_still_serves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = three_segments(dir.path());
    let positions = batch_positions(&log, 200);
    // A byte inside the records of the fourth batch of the middle segment (offsets 260..280).
    flip(
        &dir.path().join(format::segment_file_name(200, "log")),
        positions[3] + 70,
    );
    // A read from before the damage returns the good batches and stops there.
    let location = log.locate(200).expect("locate").expect("data");
    let bytes = read_batches(&location, 200, 1 << 20, i64::MAX).expect("read");
    assert_eq!(
        bytes.len() as u64,
        positions[3],
        "the three good batches, no more"
    );
    // A read of the damaged batch fails with the damage; it is not skipped.
    for offset in [260, 270, 279] {
        let location = log.locate(offset).expect("locate").expect("data");
        let error = read_batches(&location, offset, 1 << 20, i64::MAX).expect_err("damaged");
        let damage = damage_of(&error).expect("a Damaged error");
        assert_eq!((damage.segment_base, damage.position), (200, positions[3]));
    }
    // Past it, and in the other segments, reads go on.
    for offset in [0, 280, 400] {
        let location = log.locate(offset).expect("locate").expect("data");
        let bytes = read_batches(&location, offset, 1 << 20, i64::MAX).expect("read");
        assert!(!bytes.is_empty());
    }
    // An upload's check finds it too.
    let location = log.locate(200).expect("locate").expect("data");
    let error = verify(&Location {
        start: 0,
        ..location
    })
    .expect_err("damaged");
    assert!(damage_of(&error).is_some());
}

#[test]
fn a_damaged_length_or_base_offset_is_found_not_skipped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = three_segments(dir.path());
    let positions = batch_positions(&log, 200);
    let path = dir.path().join(format::segment_file_name(200, "log"));
    // The length of the last batch (bytes 8..12) now reaches past the segment's end: the
    // walk used to stop there as if the segment ended, and the read went on to 400.
    flip(&path, positions[9] + 9);
    let location = log.locate(390).expect("locate").expect("data");
    let error = read_batches(&location, 390, 1 << 20, i64::MAX).expect_err("damaged");
    assert!(damage_of(&error).is_some(), "{error}");
    // A base offset (outside the CRC) that goes backwards.
    flip(&path, positions[5] + 7);
    let location = log.locate(300).expect("locate").expect("data");
    let error = read_batches(&location, 300, 1 << 20, i64::MAX).expect_err("damaged");
    assert!(damage_of(&error).is_some(), "{error}");
}

#[test]
fn a_damaged_index_entry_is_not_followed_and_the_index_is_rebuilt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = three_segments(dir.path());
    let positions = batch_positions(&log, 200);
    // Every batch has an entry (interval 1); point the sixth one into the middle of a batch.
    let index = dir.path().join(format::segment_file_name(200, "index"));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&index)
        .expect("open");
    let entry = format::INDEX_HEADER_LEN + 5 * format::OFFSET_ENTRY_LEN;
    file.write_all_at(&((positions[5] + 13) as u32).to_be_bytes(), entry + 4)
        .expect("write");
    drop(file);
    let location = log.locate(305).expect("locate").expect("data");
    assert_eq!(location.start, positions[5] + 13);
    let bytes = read_batches(&location, 305, 1, i64::MAX).expect("read despite the index");
    assert_eq!(format::parse_validated_header(&bytes).base_offset, 300);
    assert!(
        location
            .index_damaged
            .load(std::sync::atomic::Ordering::Relaxed)
    );
    log.rebuild_indexes(200).expect("rebuild");
    let location = log.locate(305).expect("locate").expect("data");
    assert_eq!(location.start, positions[5], "the rebuilt entry");
    read_batches(&location, 305, 1, i64::MAX).expect("read");
    assert!(
        !location
            .index_damaged
            .load(std::sync::atomic::Ordering::Relaxed)
    );
    // An entry past the segment's end.
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&index)
        .expect("open");
    file.write_all_at(&u32::MAX.to_be_bytes(), entry + 4)
        .expect("write");
    drop(file);
    let location = log.locate(305).expect("locate").expect("data");
    let bytes = read_batches(&location, 305, 1, i64::MAX).expect("read despite the index");
    assert_eq!(format::parse_validated_header(&bytes).base_offset, 300);
    assert!(
        location
            .index_damaged
            .load(std::sync::atomic::Ordering::Relaxed)
    );
}

#[test]
fn a_damaged_segment_is_dropped_only_when_the_remote_tier_holds_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = three_segments(dir.path());
    // The remote tier ends inside the middle segment: it cannot serve all of it.
    let bounds = RemoteBounds { start: 0, end: 300 };
    assert!(!log.drop_damaged_local(200, bounds).expect("drop"));
    assert_eq!(log.log_start_offset(), 0);
    // The active segment is never dropped.
    let active = log.log_end_offset();
    assert!(
        !log.drop_damaged_local(
            active,
            RemoteBounds {
                start: 0,
                end: active
            }
        )
        .expect("drop")
    );
    let bounds = RemoteBounds { start: 0, end: 400 };
    assert!(log.drop_damaged_local(200, bounds).expect("drop"));
    assert_eq!(log.log_start_offset(), 400);
    assert!(
        !dir.path()
            .join(format::segment_file_name(0, "log"))
            .exists()
    );
    assert!(
        !dir.path()
            .join(format::segment_file_name(200, "log"))
            .exists()
    );
    let location = log.locate(400).expect("locate").expect("data");
    read_batches(&location, 400, 1 << 20, i64::MAX).expect("read");
    // The new start survives a restart.
    drop(log);
    let log = Log::open(dir.path(), config(), 0).expect("reopen");
    assert_eq!(log.log_start_offset(), 400);
}

fn fuzz_cases() -> u32 {
    std::env::var("STRATA_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48)
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(fuzz_cases()))]

    /// Random bit flips in segments and their indexes: a read either fails, or returns
    /// batches byte for byte as they were written (the leader epoch aside: it is outside
    /// the CRC and not checked), starting with the batch that holds the wanted offset and
    /// contiguous after it. Nothing is skipped, mis-numbered or served damaged.
    #[test]
    fn damage_is_never_served(
        flips in proptest::collection::vec((0usize..3, proptest::prelude::any::<bool>(), proptest::prelude::any::<u64>(), 0u8..8), 1..6)
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = three_segments(dir.path());
        let mut original = std::collections::HashMap::new();
        for base in [0i64, 200, 400] {
            let bytes = std::fs::read(dir.path().join(format::segment_file_name(base, "log")))
                .expect("read");
            let mut position = 0;
            while let Some((batch_base, size, _)) = format::read_batch_prefix(&bytes[position..]) {
                let mut batch = bytes[position..position + size].to_vec();
                batch[12..16].fill(0);
                original.insert(batch_base, batch);
                position += size;
            }
        }
        for (segment, index, at, bit) in flips {
            let extension = if index { "index" } else { "log" };
            let path = dir.path().join(format::segment_file_name(200 * segment as i64, extension));
            let len = std::fs::metadata(&path).expect("stat").len();
            flip_bits(&path, at % len, 1 << bit);
        }
        for offset in (0..600).step_by(7) {
            let Ok(Some(location)) = log.locate(offset) else { continue };
            let Ok(bytes) = read_batches(&location, offset, 4096, i64::MAX) else { continue };
            let mut position = 0;
            let mut expected = None;
            while position < bytes.len() {
                let (base, size, last_delta) =
                    format::read_batch_prefix(&bytes[position..]).expect("a whole batch");
                let mut batch = bytes[position..position + size].to_vec();
                batch[12..16].fill(0);
                proptest::prop_assert_eq!(Some(&batch), original.get(&base), "batch at {} served damaged", base);
                match expected {
                    None => proptest::prop_assert!(base <= offset && offset <= base + i64::from(last_delta),
                        "read of {} started with batch {}", offset, base),
                    Some(next) => proptest::prop_assert_eq!(base, next),
                }
                expected = Some(base + i64::from(last_delta) + 1);
                position += size;
            }
        }
    }
}

#[test]
fn damage_further_on_is_not_blamed_on_a_sound_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = three_segments(dir.path());
    let positions = batch_positions(&log, 200);
    // The length of the fourth batch (offsets 260..280) is damaged.
    flip(
        &dir.path().join(format::segment_file_name(200, "log")),
        positions[3] + 10,
    );
    // A read through the (sound) entry of the sixth batch is served, and the index is
    // not flagged: there is nothing to rebuild.
    let location = log.locate(305).expect("locate").expect("data");
    let bytes = read_batches(&location, 305, 1, i64::MAX).expect("read past the damage");
    assert_eq!(format::parse_validated_header(&bytes).base_offset, 300);
    assert!(
        !location
            .index_damaged
            .load(std::sync::atomic::Ordering::Relaxed)
    );
    // The damaged batch itself fails.
    let location = log.locate(265).expect("locate").expect("data");
    let error = read_batches(&location, 265, 1, i64::MAX).expect_err("damaged");
    assert!(damage_of(&error).is_some(), "{error}");
    assert!(
        !location
            .index_damaged
            .load(std::sync::atomic::Ordering::Relaxed)
    );
}
