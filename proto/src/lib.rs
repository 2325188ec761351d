//! Generated code for Strata's gRPC APIs. The `.proto` files in `proto/` are the
//! reference; their comments say what each field means.

#![allow(clippy::all, missing_docs)]

/// Replication of partition logs from leaders to followers.
pub mod replication {
    tonic::include_proto!("strata.replication.v1");
}

/// The admin API (`strata status`, `strata topics`, ...), served by every broker.
pub mod admin {
    tonic::include_proto!("strata.admin.v1");
}

/// Serializes a 16-byte id as a UUID string (anything else as hex).
pub fn uuid_bytes<S: serde::Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    let text = match <[u8; 16]>::try_from(bytes) {
        Ok(id) => uuid::Uuid::from_bytes(id).to_string(),
        Err(_) => bytes.iter().map(|b| format!("{b:02x}")).collect(),
    };
    serializer.serialize_str(&text)
}
