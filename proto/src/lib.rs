//! Generated code for Strata's gRPC APIs. The `.proto` files in `proto/` are the
//! reference; their comments say what each field means.

#![allow(clippy::all, missing_docs)]

/// Replication of partition logs from leaders to followers.
pub mod replication {
    tonic::include_proto!("strata.replication.v1");
}
