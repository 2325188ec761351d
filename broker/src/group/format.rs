//! Records of the internal `__consumer_offsets` topic: committed offsets and group
//! metadata. Each is one Kafka record (key, value) in an ordinary RecordBatch, so the
//! topic is compacted by key like any other: the last record of a key wins and a null
//! value (tombstone) deletes it.
//!
//! All integers big-endian. A string is `i16 length` then UTF-8 bytes; a nullable string
//! uses length -1 for null. Bytes are `i32 length` then the bytes.
//!
//! ## Keys
//!
//! | field | type | notes |
//! |---|---|---|
//! | key version | i16 | 0: committed offset, 1: group metadata |
//! | group | string | |
//! | topic | string | version 0 only |
//! | partition | i32 | version 0 only |
//!
//! ## Committed offset value (version 0)
//!
//! | field | type |
//! |---|---|
//! | value version | i16, 0 |
//! | offset | i64 |
//! | leader epoch | i32 (-1: unknown) |
//! | commit timestamp | i64 (ms) |
//! | metadata | nullable string |
//!
//! ## Group metadata value (version 0)
//!
//! | field | type |
//! |---|---|
//! | value version | i16, 0 |
//! | protocol type | string |
//! | generation | i32 |
//! | protocol | nullable string |
//! | leader | nullable string |
//! | state timestamp | i64 (ms): when the group became what it is (Empty since, or Stable since) |
//! | member count | i32 |
//! | members | see below |
//!
//! Member: `member_id: string`, `instance_id: nullable string`, `client_id: string`,
//! `client_host: string`, `rebalance_timeout_ms: i32`, `session_timeout_ms: i32`,
//! `subscription: bytes` (the metadata of the chosen protocol), `assignment: bytes`.
//!
//! Readers refuse versions they do not know with an error rather than guess; a newer
//! broker adds versions, never changes these.

use bytes::{Buf, BufMut, Bytes, BytesMut};

const OFFSET_KEY: i16 = 0;
const GROUP_KEY: i16 = 1;
const OFFSET_VALUE_V0: i16 = 0;
const GROUP_VALUE_V0: i16 = 0;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RecordKey {
    Offset {
        group: String,
        topic: String,
        partition: i32,
    },
    Group {
        group: String,
    },
}

impl RecordKey {
    pub fn group(&self) -> &str {
        match self {
            RecordKey::Offset { group, .. } | RecordKey::Group { group } => group,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetValue {
    pub offset: i64,
    pub leader_epoch: i32,
    pub commit_timestamp_ms: i64,
    pub metadata: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberValue {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupValue {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub state_timestamp_ms: i64,
    pub members: Vec<MemberValue>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("the record ends early")]
    Truncated,
    #[error("unknown {what} version {version}")]
    UnknownVersion { what: &'static str, version: i16 },
    #[error("a string is not UTF-8")]
    NotUtf8,
    #[error("a record in the offsets topic has no key")]
    NoKey,
    #[error("unknown transaction state {0}")]
    UnknownState(i8),
}

/// The longest string a record can hold (its length is an i16). The coordinator refuses
/// longer group ids, instance ids and protocol names, and builds member ids that fit, so
/// nothing it writes is ever cut.
pub const MAX_STRING_BYTES: usize = i16::MAX as usize;

/// The longest prefix of `s` that fits in `max` bytes without splitting a character.
pub fn prefix_within(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

pub(crate) fn put_string(buf: &mut BytesMut, s: &str) {
    // Callers pass strings within MAX_STRING_BYTES (see there); cutting is only the
    // last defence of the record's framing, and keeps the bytes UTF-8.
    let s = prefix_within(s, MAX_STRING_BYTES);
    buf.put_i16(s.len() as i16);
    buf.put_slice(s.as_bytes());
}

fn put_nullable(buf: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_string(buf, s),
        None => buf.put_i16(-1),
    }
}

fn put_bytes(buf: &mut BytesMut, b: &[u8]) {
    buf.put_i32(b.len() as i32);
    buf.put_slice(b);
}

pub(crate) struct Reader(pub(crate) Bytes);

impl Reader {
    pub(crate) fn need(&self, n: usize) -> Result<(), FormatError> {
        if self.0.remaining() < n {
            Err(FormatError::Truncated)
        } else {
            Ok(())
        }
    }
    pub(crate) fn i16(&mut self) -> Result<i16, FormatError> {
        self.need(2)?;
        Ok(self.0.get_i16())
    }
    pub(crate) fn i32(&mut self) -> Result<i32, FormatError> {
        self.need(4)?;
        Ok(self.0.get_i32())
    }
    pub(crate) fn i64(&mut self) -> Result<i64, FormatError> {
        self.need(8)?;
        Ok(self.0.get_i64())
    }
    pub(crate) fn nullable(&mut self) -> Result<Option<String>, FormatError> {
        let len = self.i16()?;
        if len < 0 {
            return Ok(None);
        }
        self.need(len as usize)?;
        let bytes = self.0.split_to(len as usize);
        String::from_utf8(bytes.to_vec())
            .map(Some)
            .map_err(|_| FormatError::NotUtf8)
    }
    pub(crate) fn string(&mut self) -> Result<String, FormatError> {
        Ok(self.nullable()?.unwrap_or_default())
    }
    pub(crate) fn bytes(&mut self) -> Result<Bytes, FormatError> {
        let len = self.i32()?;
        let len = usize::try_from(len).map_err(|_| FormatError::Truncated)?;
        self.need(len)?;
        Ok(self.0.split_to(len))
    }
}

pub fn encode_key(key: &RecordKey) -> Bytes {
    let mut buf = BytesMut::new();
    match key {
        RecordKey::Offset {
            group,
            topic,
            partition,
        } => {
            buf.put_i16(OFFSET_KEY);
            put_string(&mut buf, group);
            put_string(&mut buf, topic);
            buf.put_i32(*partition);
        }
        RecordKey::Group { group } => {
            buf.put_i16(GROUP_KEY);
            put_string(&mut buf, group);
        }
    }
    buf.freeze()
}

pub fn decode_key(bytes: Bytes) -> Result<RecordKey, FormatError> {
    let mut r = Reader(bytes);
    match r.i16()? {
        OFFSET_KEY => Ok(RecordKey::Offset {
            group: r.string()?,
            topic: r.string()?,
            partition: r.i32()?,
        }),
        GROUP_KEY => Ok(RecordKey::Group { group: r.string()? }),
        version => Err(FormatError::UnknownVersion {
            what: "key",
            version,
        }),
    }
}

pub fn encode_offset(value: &OffsetValue) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i16(OFFSET_VALUE_V0);
    buf.put_i64(value.offset);
    buf.put_i32(value.leader_epoch);
    buf.put_i64(value.commit_timestamp_ms);
    put_nullable(&mut buf, value.metadata.as_deref());
    buf.freeze()
}

pub fn decode_offset(bytes: Bytes) -> Result<OffsetValue, FormatError> {
    let mut r = Reader(bytes);
    match r.i16()? {
        OFFSET_VALUE_V0 => Ok(OffsetValue {
            offset: r.i64()?,
            leader_epoch: r.i32()?,
            commit_timestamp_ms: r.i64()?,
            metadata: r.nullable()?,
        }),
        version => Err(FormatError::UnknownVersion {
            what: "committed offset",
            version,
        }),
    }
}

pub fn encode_group(value: &GroupValue) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i16(GROUP_VALUE_V0);
    put_string(&mut buf, &value.protocol_type);
    buf.put_i32(value.generation);
    put_nullable(&mut buf, value.protocol.as_deref());
    put_nullable(&mut buf, value.leader.as_deref());
    buf.put_i64(value.state_timestamp_ms);
    buf.put_i32(value.members.len() as i32);
    for m in &value.members {
        put_string(&mut buf, &m.member_id);
        put_nullable(&mut buf, m.instance_id.as_deref());
        put_string(&mut buf, &m.client_id);
        put_string(&mut buf, &m.client_host);
        buf.put_i32(m.rebalance_timeout_ms);
        buf.put_i32(m.session_timeout_ms);
        put_bytes(&mut buf, &m.subscription);
        put_bytes(&mut buf, &m.assignment);
    }
    buf.freeze()
}

pub fn decode_group(bytes: Bytes) -> Result<GroupValue, FormatError> {
    let mut r = Reader(bytes);
    let version = r.i16()?;
    if version != GROUP_VALUE_V0 {
        return Err(FormatError::UnknownVersion {
            what: "group metadata",
            version,
        });
    }
    let protocol_type = r.string()?;
    let generation = r.i32()?;
    let protocol = r.nullable()?;
    let leader = r.nullable()?;
    let state_timestamp_ms = r.i64()?;
    let count = r.i32()?;
    // Each member takes at least 24 bytes: a lying count cannot allocate much.
    let mut members = Vec::with_capacity((count.max(0) as usize).min(r.0.remaining() / 24));
    for _ in 0..count.max(0) {
        members.push(MemberValue {
            member_id: r.string()?,
            instance_id: r.nullable()?,
            client_id: r.string()?,
            client_host: r.string()?,
            rebalance_timeout_ms: r.i32()?,
            session_timeout_ms: r.i32()?,
            subscription: r.bytes()?,
            assignment: r.bytes()?,
        });
    }
    Ok(GroupValue {
        protocol_type,
        generation,
        protocol,
        leader,
        state_timestamp_ms,
        members,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_0_bytes_are_stable() {
        let key = encode_key(&RecordKey::Offset {
            group: "g".into(),
            topic: "t".into(),
            partition: 3,
        });
        assert_eq!(&key[..], &[0, 0, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 3]);
        let key = encode_key(&RecordKey::Group { group: "g".into() });
        assert_eq!(&key[..], &[0, 1, 0, 1, b'g']);
        let value = encode_offset(&OffsetValue {
            offset: 7,
            leader_epoch: -1,
            commit_timestamp_ms: 2,
            metadata: None,
        });
        assert_eq!(
            &value[..],
            &[
                0, 0, 0, 0, 0, 0, 0, 0, 0, 7, 255, 255, 255, 255, 0, 0, 0, 0, 0, 0, 0, 2, 255, 255
            ]
        );
    }

    #[test]
    fn round_trips() {
        let group = GroupValue {
            protocol_type: "consumer".into(),
            generation: 4,
            protocol: Some("range".into()),
            leader: Some("m-1".into()),
            state_timestamp_ms: 99,
            members: vec![MemberValue {
                member_id: "m-1".into(),
                instance_id: Some("i".into()),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout_ms: 300_000,
                session_timeout_ms: 45_000,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"assign"),
            }],
        };
        assert_eq!(decode_group(encode_group(&group)), Ok(group));
        let offset = OffsetValue {
            offset: 1 << 40,
            leader_epoch: 3,
            commit_timestamp_ms: 5,
            metadata: Some("meta".into()),
        };
        assert_eq!(decode_offset(encode_offset(&offset)), Ok(offset));
        let key = RecordKey::Offset {
            group: "g".into(),
            topic: "topic".into(),
            partition: 0,
        };
        assert_eq!(decode_key(encode_key(&key)), Ok(key));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert_eq!(
            decode_key(Bytes::from_static(&[0, 9])),
            Err(FormatError::UnknownVersion {
                what: "key",
                version: 9
            })
        );
        assert_eq!(
            decode_group(Bytes::from_static(&[0, 0, 0, 1])),
            Err(FormatError::Truncated)
        );
        let mut lying = BytesMut::new();
        lying.put_i16(0);
        put_string(&mut lying, "c");
        lying.put_i32(1);
        lying.put_i16(-1);
        lying.put_i16(-1);
        lying.put_i64(0);
        lying.put_i32(i32::MAX);
        assert_eq!(decode_group(lying.freeze()), Err(FormatError::Truncated));
    }
}
