//! Diskless topics (`diskless.enable`): partitions with no local log and no replicas.
//! Every broker takes produce for any diskless partition and serves reads of it; the
//! data lives in the object store, the order in the metadata store.
//!
//! ## Truth rules
//!
//! - The metadata store is the truth of a partition's offsets: its `head`
//!   ([`state::Head`]: log start, next offset, merged offset) and its `runs`
//!   ([`state::Run`]), each a range of offsets stored as a byte range of one shared
//!   object. An offset exists once the commit that assigned it succeeded, and not before.
//! - Objects before metadata: a broker collects the batches of one append interval (all
//!   partitions) into one shared object, PUTs it, and only then commits runs that point
//!   into it. A crash between the two leaves an object no run names, which the scrubber
//!   removes; no offset was assigned, and the producer, never answered, retries.
//! - Commits are compare-and-swap on each partition's head, so two brokers appending to
//!   one partition are serialised: the loser re-reads and recomputes its offsets. The
//!   stored batches carry base offset 0; readers patch each batch's base offset from its
//!   run's `base`.
//! - Idempotence lives with the partition, in its producer entries
//!   ([`state::ProducerEntry`]), which every commit reads and writes under the same
//!   compare: a retry that reaches another broker is still recognised as a duplicate.
//! - Merged data (below `merged`) is in the partition's tiered manifest, in the tiered
//!   format; runs below `merged` may linger until trimmed and are ignored.
//!
//! ## Modules
//!
//! `state` (records and the pure commit logic), `store` (etcd and embedded stores).

pub mod merge;
pub mod retention;
pub mod scrub;
pub mod state;
pub mod store;

pub use state::{Head, PartitionKey, PartitionState, ProducerEntry, Run};
pub use store::{AppendWrite, DisklessStore, DisklessWatch};
