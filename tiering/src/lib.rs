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
//! - **A partition that has a root always opens with it.** Opening reads the root from the
//!   metadata store; it may skip the read only when the root cannot exist: a topic created
//!   with a fresh id, or a topic no key of which was listed by the broker's start-up pass
//!   over the store ([`ManifestStore::topics_with_roots`](remote_log::ManifestStore)).
//!   A root committed after that read (by another broker, which leads the partition) is
//!   picked up by a reload, and a commit from the stale view fails its compare-and-swap
//!   and reloads, so skipping a read never loses or overwrites a commit. What such a
//!   partition misses is only the open-time adjustment to the remote end (an empty local
//!   log restarted there with its producers restored); a follower's out-of-range reset
//!   from its leader repairs that.
//! - **Commits are fenced.** The root records the leader epoch of the last commit; a
//!   commit from an older epoch fails with [`TierError::Fenced`](remote_log::TierError),
//!   so a deposed leader cannot rewrite history.
//!
//! # Diskless partitions
//!
//! A diskless partition (the broker's `diskless` module) has no leader and no local log.
//! Its records are first appended to *shared objects* (`diskless/<hour>/<node>-<uuid>.batches`,
//! the batches of many partitions from one broker's append interval) and later *merged*
//! into segments of this crate's format, committed to the partition's manifest like any
//! upload. The rules above hold, with these additions:
//!
//! - **The metadata store is the truth for unmerged records.** A partition's `head`
//!   (`log_start`, `next`, `merged`) and its *run* records (offset range → byte range of a
//!   shared object) say what exists below `next` and at or above `merged`; the manifest
//!   says what exists below `merged`. A shared object is *needed* only while a committed
//!   run references it; it also exists before its runs are committed (between the PUT and
//!   the commit, or for ever if the commit fails) and after the trim, until the scrubber
//!   deletes it.
//! - **Append: PUT, commit, acknowledge.** The shared object is written first; one
//!   metadata transaction (comparing every touched head's version) then commits the runs
//!   and new heads; only then is the producer answered. A failed compare writes nothing.
//! - **Merge: read, upload, manifest commit, trim.** The merge owner reads a prefix of the
//!   runs, never reaching the head's last stable offset (an open transaction's records
//!   stay in runs until its marker), builds the segment (deterministic bytes: offsets
//!   patched from the runs, partitionLeaderEpoch 0, a transaction index of the aborted
//!   entries the runs list), uploads it and commits it to the manifest at leader epoch 0
//!   (objects first, manifest second, as any upload); only after the commit does it
//!   *trim*: a compare-and-swap of the head that moves `merged` to the manifest's end and
//!   deletes the runs below it. A merge never deletes a shared object; the scrubber does,
//!   once no run references it.
//! - **Two mergers of the same runs are safe.** Both build the same offsets; the manifest
//!   CAS lets one commit, the other finds the range covered and deletes its own object
//!   (or leaves it to the scrubber). The trim compares the head's version, so a trim that
//!   raced an append is recomputed from the store, never applied to stale state.
//! - **Retention moves the manifest's start first; DeleteRecords moves the head first.**
//!   The owner applies retention to the manifest, then raises `head.log_start` to its
//!   start. DeleteRecords raises `head.log_start` (CAS), answers, then moves the manifest's
//!   start in the background; the owner's next retention pass repairs a manifest start
//!   left behind (a crash, or a failure of the background step). Either way reads check
//!   `head.log_start`, so nothing below it is served.
//! - **A merge that outlives its topic cleans up.** A topic's deletion removes the runs
//!   and heads, then each manifest and the merged objects; a merge that loaded the runs
//!   before and commits after may create the manifest again. Its trim then finds the head
//!   gone, and the merge deletes the manifest and objects it committed.
//! - **The shared-object scrubber reads the store, not a cached view**: it lists
//!   `diskless/`, then loads every run, and deletes objects no run references that are
//!   older than a grace period longer than any append's PUT-to-commit time (at least
//!   5 minutes outside tests; the appender gives a commit up after half of it).
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
//! | diskless append: during or after the PUT, before the metadata commit | a shared object no run references; the produce is not acknowledged | the producer retries (the idempotence check in the store recognises a retry whose first attempt did commit); the diskless scrubber deletes the object after `diskless_scrub_grace_ms` |
//! | diskless append: after the commit, before the answer | committed records the producer was not told about | an idempotent producer's retry is answered as a duplicate from the producer entries in the store; others may write the batch twice, as with Kafka |
//! | diskless merge: while reading runs or building the segment | nothing changed | the next round of the merge owner (possibly another broker) merges again |
//! | diskless merge: after the segment upload, before the manifest commit | an orphan segment object | the next round uploads again under a new key; the partition scrubber deletes the orphan |
//! | diskless merge: after the manifest commit, before the trim | runs below the manifest's end, `merged` behind it | the next round sees the manifest's end past `merged` and only trims, without uploading again; readers meanwhile find the same records in both places |
//! | diskless merge: after the trim | shared objects no run references any more | the diskless scrubber |
//! | diskless DeleteRecords: after the head's CAS, before the manifest's start moved | merged segments below `log_start` still in the manifest (never served: reads check `log_start`) | the owner's next retention pass advances the manifest's start to `head.log_start` |
//! | diskless retention: after the manifest's start moved, before `head.log_start` followed | `head.log_start` below the manifest's start: the low watermark answered is below the first record still stored, until repaired | the owner's next retention pass raises `head.log_start` to the manifest's start |
//! | diskless scrub: while deleting unreferenced shared objects or orphaned merged segments | some of them still there | the next pass lists them again (the decision is made afresh each pass) |
//! | diskless merge: after the manifest commit of a partition whose topic was deleted meanwhile, before the merge's own clean-up | a manifest root and merged objects of a topic that no longer exists | the scrubber of unknown topics deletes the objects; the manifest root (one small record) stays: a known leak |
//! | diskless topic deletion: after the topic record went, before its runs, manifests and objects | metadata and objects of a topic that no longer exists | the diskless scrubber deletes the records of topics the metadata store no longer has, then the shared objects no run references; the scrubber of unknown topics deletes the merged objects |
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
