//! Records of the internal `__transaction_state` topic: one record per transactional id,
//! its last state. The topic is compacted by key like any other: the last record of a key
//! wins and a null value (tombstone) forgets an expired transactional id.
//!
//! All integers big-endian; strings as in [`crate::group::format`] (`i16 length`, UTF-8).
//!
//! ## Key (version 0)
//!
//! | field | type |
//! |---|---|
//! | key version | i16, 0 |
//! | transactional id | string |
//!
//! ## Value (version 0)
//!
//! | field | type | notes |
//! |---|---|---|
//! | value version | i16, 0 | |
//! | producer id | i64 | |
//! | producer epoch | i16 | |
//! | transaction timeout | i32 (ms) | as the producer asked (transaction.timeout.ms) |
//! | state | i8 | 0 Empty, 1 Ongoing, 2 PrepareCommit, 3 PrepareAbort, 4 CompleteCommit, 5 CompleteAbort |
//! | transaction start | i64 (ms) | -1 when no transaction is open |
//! | last update | i64 (ms) | |
//! | partition count | i32 | |
//! | partitions | (topic: string, partition: i32) × count | the partitions of the open or ending transaction |
//!
//! ## Value (version 1)
//!
//! Version 0's fields, then:
//!
//! | field | type | notes |
//! |---|---|---|
//! | last producer epoch | i16 | the epoch before the last bump a client asked for (a KIP-360 InitProducerId, a KIP-890 part 2 EndTxn), so a retry of it is answered, not fenced; -1 if none |
//! | transaction version | i8 | 2 if the producer speaks KIP-890 part 2, else 0 |
//! | next producer id | i64 | KIP-890 part 2: the id an EndTxn that exhausted the epoch moves to on completion; -1 if none |
//! | previous producer id | i64 | the id before that move, to recognise a retry; -1 if none |
//!
//! Version 1 is written only when one of these is set, so a broker of an older release
//! reads every other record.
//!
//! Readers refuse versions they do not know with an error rather than guess.

use std::collections::BTreeSet;

use bytes::{BufMut, Bytes, BytesMut};

use super::state::{TxnMetadata, TxnState};
use crate::group::format::{FormatError, Reader, put_string};

const KEY_V0: i16 = 0;
const VALUE_V0: i16 = 0;
const VALUE_V1: i16 = 1;

pub fn encode_key(transactional_id: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(4 + transactional_id.len());
    buf.put_i16(KEY_V0);
    put_string(&mut buf, transactional_id);
    buf.freeze()
}

pub fn decode_key(bytes: Bytes) -> Result<String, FormatError> {
    let mut r = Reader(bytes);
    match r.i16()? {
        KEY_V0 => r.string(),
        version => Err(FormatError::UnknownVersion {
            what: "transaction key",
            version,
        }),
    }
}

fn state_code(state: TxnState) -> i8 {
    match state {
        TxnState::Empty => 0,
        TxnState::Ongoing => 1,
        TxnState::PrepareCommit => 2,
        TxnState::PrepareAbort => 3,
        TxnState::CompleteCommit => 4,
        TxnState::CompleteAbort => 5,
    }
}

fn state_of(code: i8) -> Result<TxnState, FormatError> {
    Ok(match code {
        0 => TxnState::Empty,
        1 => TxnState::Ongoing,
        2 => TxnState::PrepareCommit,
        3 => TxnState::PrepareAbort,
        4 => TxnState::CompleteCommit,
        5 => TxnState::CompleteAbort,
        other => return Err(FormatError::UnknownState(other)),
    })
}

pub fn encode_value(meta: &TxnMetadata) -> Bytes {
    let mut buf = BytesMut::new();
    let version = if meta.last_producer_epoch >= 0
        || meta.client_tv2
        || meta.next_producer_id >= 0
        || meta.previous_producer_id >= 0
    {
        VALUE_V1
    } else {
        VALUE_V0
    };
    buf.put_i16(version);
    buf.put_i64(meta.producer_id);
    buf.put_i16(meta.producer_epoch);
    buf.put_i32(meta.timeout_ms);
    buf.put_i8(state_code(meta.state));
    buf.put_i64(meta.start_ms);
    buf.put_i64(meta.last_update_ms);
    buf.put_i32(meta.partitions.len() as i32);
    for (topic, partition) in &meta.partitions {
        put_string(&mut buf, topic);
        buf.put_i32(*partition);
    }
    if version >= VALUE_V1 {
        buf.put_i16(meta.last_producer_epoch);
        buf.put_i8(if meta.client_tv2 { 2 } else { 0 });
        buf.put_i64(meta.next_producer_id);
        buf.put_i64(meta.previous_producer_id);
    }
    buf.freeze()
}

pub fn decode_value(transactional_id: &str, bytes: Bytes) -> Result<TxnMetadata, FormatError> {
    let mut r = Reader(bytes);
    let version = r.i16()?;
    if version != VALUE_V0 && version != VALUE_V1 {
        return Err(FormatError::UnknownVersion {
            what: "transaction value",
            version,
        });
    }
    let producer_id = r.i64()?;
    let producer_epoch = r.i16()?;
    let timeout_ms = r.i32()?;
    r.need(1)?;
    let state = state_of(bytes::Buf::get_i8(&mut r.0))?;
    let start_ms = r.i64()?;
    let last_update_ms = r.i64()?;
    let count = r.i32()?;
    let mut partitions = BTreeSet::new();
    // The count is checked against the bytes present as the entries are read: each
    // takes at least 6 bytes, so a damaged count cannot allocate.
    for _ in 0..count.max(0) {
        let topic = r.string()?;
        let partition = r.i32()?;
        partitions.insert((topic, partition));
    }
    let (mut last_producer_epoch, mut client_tv2) = (-1, false);
    let (mut next_producer_id, mut previous_producer_id) = (-1, -1);
    if version >= VALUE_V1 {
        last_producer_epoch = r.i16()?;
        // Written by every release that writes version 1 with the fields below; an
        // earlier build of it ended here.
        if !r.0.is_empty() {
            r.need(1)?;
            client_tv2 = bytes::Buf::get_i8(&mut r.0) >= 2;
            next_producer_id = r.i64()?;
            previous_producer_id = r.i64()?;
        }
    }
    Ok(TxnMetadata {
        transactional_id: transactional_id.to_string(),
        producer_id,
        producer_epoch,
        timeout_ms,
        state,
        start_ms,
        last_update_ms,
        partitions,
        last_producer_epoch,
        client_tv2,
        next_producer_id,
        previous_producer_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_have_fixed_bytes() {
        assert_eq!(encode_key("tx").as_ref(), b"\x00\x00\x00\x02tx");
        assert_eq!(decode_key(encode_key("tx")), Ok("tx".to_string()));
        let meta = TxnMetadata {
            transactional_id: "tx".to_string(),
            producer_id: 7,
            producer_epoch: 2,
            timeout_ms: 60_000,
            state: TxnState::Ongoing,
            start_ms: 5,
            last_update_ms: 6,
            partitions: BTreeSet::from([("a".to_string(), 1)]),
            last_producer_epoch: -1,
            client_tv2: false,
            next_producer_id: -1,
            previous_producer_id: -1,
        };
        let bytes = encode_value(&meta);
        let mut expected = vec![0, 0];
        expected.extend_from_slice(&7i64.to_be_bytes());
        expected.extend_from_slice(&2i16.to_be_bytes());
        expected.extend_from_slice(&60_000i32.to_be_bytes());
        expected.push(1);
        expected.extend_from_slice(&5i64.to_be_bytes());
        expected.extend_from_slice(&6i64.to_be_bytes());
        expected.extend_from_slice(&1i32.to_be_bytes());
        expected.extend_from_slice(b"\x00\x01a");
        expected.extend_from_slice(&1i32.to_be_bytes());
        assert_eq!(bytes.as_ref(), expected.as_slice());
        assert_eq!(decode_value("tx", bytes.clone()), Ok(meta.clone()));
        assert_eq!(
            decode_value("tx", bytes.slice(..bytes.len() - 2)),
            Err(FormatError::Truncated)
        );
        let mut huge = bytes.to_vec();
        let at = 2 + 8 + 2 + 4 + 1 + 8 + 8;
        huge[at..at + 4].copy_from_slice(&i32::MAX.to_be_bytes());
        assert_eq!(
            decode_value("tx", Bytes::from(huge)),
            Err(FormatError::Truncated)
        );
        // Version 1: version 0's bytes with the version changed, then the last epoch,
        // the transaction version and the next and previous producer ids.
        let v1 = TxnMetadata {
            last_producer_epoch: 1,
            client_tv2: true,
            next_producer_id: 9,
            previous_producer_id: -1,
            ..meta
        };
        let bytes = encode_value(&v1);
        expected[..2].copy_from_slice(&1i16.to_be_bytes());
        expected.extend_from_slice(&1i16.to_be_bytes());
        expected.push(2);
        expected.extend_from_slice(&9i64.to_be_bytes());
        expected.extend_from_slice(&(-1i64).to_be_bytes());
        assert_eq!(bytes.as_ref(), expected.as_slice());
        assert_eq!(decode_value("tx", bytes), Ok(v1.clone()));
        // An earlier build of version 1 ended after the last epoch: still read.
        let short = Bytes::copy_from_slice(&expected[..expected.len() - 17]);
        let read = decode_value("tx", short).expect("read");
        assert_eq!(
            (
                read.last_producer_epoch,
                read.client_tv2,
                read.next_producer_id
            ),
            (1, false, -1)
        );
    }
}
