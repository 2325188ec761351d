use super::*;
use crate::log::format;

/// A stored batch (base offset 0) of `records` records.
fn batch(records: usize, timestamp: i64) -> Vec<u8> {
    let mut bytes = crate::log::tests::batch(
        records,
        timestamp,
        kafka_protocol::records::Compression::None,
    );
    format::patch_batch(&mut bytes, 0, 0);
    bytes
}

fn run(base: i64, end: i64, len: u64) -> Run {
    Run {
        key: "diskless/1970010100/1-x.batches".into(),
        size: len,
        pos: 0,
        len,
        base,
        end,
        max_ts: 0,
        at: 0,
        broker: 1,
        batches: 2,
    }
}

#[test]
fn batches_are_patched_with_offsets_from_the_run_base() {
    let mut bytes = batch(3, 100);
    bytes.extend(batch(2, 200));
    let run = run(40, 45, bytes.len() as u64);
    let mut out = BytesMut::new();
    assert!(patched_batches(&run, &bytes, 40, usize::MAX, &mut out).expect("reads"));
    let (first, size, _) = format::read_batch_prefix(&out).expect("batch");
    let (second, ..) = format::read_batch_prefix(&out[size..]).expect("batch");
    assert_eq!((first, second), (40, 43));
    assert!(
        format::crc_matches(&out[..size]),
        "the CRC does not cover the base offset"
    );
    // From an offset inside the second batch: only the second; a small max_bytes still
    // returns one batch (KIP-74) and says the run was not read to its end.
    let mut out = BytesMut::new();
    patched_batches(&run, &bytes, 44, usize::MAX, &mut out).expect("reads");
    assert_eq!(format::read_batch_prefix(&out).expect("batch").0, 43);
    let mut out = BytesMut::new();
    assert!(!patched_batches(&run, &bytes, 40, 1, &mut out).expect("reads"));
    assert_eq!(out.len(), size);
    // A run whose offsets do not match its batches is damaged, not misread.
    let wrong = Run { end: 46, ..run };
    assert!(patched_batches(&wrong, &bytes, 40, usize::MAX, &mut BytesMut::new()).is_err());
}

#[test]
fn the_write_cache_keeps_the_newest_objects_within_its_budget() {
    let cache = WriteCache::new(10);
    cache.insert("a", Bytes::from_static(b"123456"));
    cache.insert("b", Bytes::from_static(b"1234"));
    assert!(cache.get("a").is_some());
    cache.insert("c", Bytes::from_static(b"12"));
    assert!(cache.get("a").is_none());
    assert!(cache.get("b").is_some() && cache.get("c").is_some());
    cache.insert("huge", Bytes::from(vec![0u8; 11]));
    assert!(cache.get("huge").is_none());
}
