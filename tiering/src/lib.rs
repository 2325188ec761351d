//! Tiered storage for Strata: sealed log segments go to object storage (S3, MinIO, or a
//! local directory), a manifest per partition records what is there, and historical reads
//! come back through a chunk cache. This crate knows nothing of the Kafka protocol and does
//! not depend on the broker: it sees segments as files plus two index blobs, and manifests
//! as bytes kept in a [`ManifestStore`](remote_log::ManifestStore) the broker provides.
//!
//! # Truth rules
//!
//! - **The manifest is the truth.** An object exists, for every reader and for retention,
//!   only if the partition's manifest references it. Reads never LIST the bucket; they go
//!   from the manifest root (in the metadata store) to spill objects to segment objects.
//! - **Objects first, manifest second.** An upload PUTs the segment object (data and both
//!   indexes in one object, so one PUT per segment below the multipart threshold), then
//!   commits the manifest by compare-and-swap. Deletion goes the other way: the manifest
//!   moves its log start offset (and drops references) first, objects are deleted after.
//! - **Every key is new.** Object keys carry a fresh UUID, so nothing is overwritten: a
//!   retried upload writes a second object and the first becomes an orphan.
//! - **Commits are fenced.** The root records the leader epoch of the last commit; a
//!   commit from an older epoch fails with [`TierError::Fenced`](remote_log::TierError),
//!   so a deposed leader cannot rewrite history.
//!
//! # What a crash leaves behind
//!
//! | crash point | state after restart | repaired by |
//! |---|---|---|
//! | during a PUT or multipart upload | no object, or an incomplete multipart upload | the upload is redone; the bucket's lifecycle rule aborts stale multipart uploads |
//! | after the PUT, before the manifest commit | an orphan object | the segment is still local (local retention waits for the commit), so it is uploaded again under a new key; the scrubber deletes the orphan after its grace period |
//! | after writing a spill object, before the commit | an orphan manifest object | the scrubber |
//! | after a retention commit, before the deletes | objects below the log start | the scrubber (they are no longer referenced) |
//! | during topic deletion | some objects of a topic that no longer exists | the scrubber deletes objects of unknown topics |
//!
//! # Retried and permanent failures
//!
//! Transient object-store errors (network, 5xx, throttling) are retried with backoff by
//! [`RetryingStore`](store::RetryingStore), then by the uploader on its next pass: uploads
//! are never abandoned, they wait. Permanent errors (credentials, permissions) are logged
//! and also retried on the next pass, since an operator may fix them. Meanwhile produce
//! continues; only the local disk filling (a configured high-water mark) stops it.
//! Manifest conflicts (another writer) reload the root and redo the edit; a fenced epoch is
//! final for that leader.

pub mod cache;
pub mod keys;
pub mod manifest;
pub mod remote_log;
pub mod store;

pub use cache::{CacheSettings, CacheStats, ObjectRef, SegmentCache};
pub use keys::PartitionId;
pub use remote_log::{
    ManifestSettings, ManifestShape, ManifestStore, ManifestStoreError, RemoteLog, RemoteMarks,
    SealedSegment, SegmentWalk, SpillCache, TierError,
};
pub use store::{Body, Faults, Location, RemoteStore, S3Settings, StoreError};
