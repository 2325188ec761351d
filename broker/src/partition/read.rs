//! The one read a consumer's Fetch makes of a partition, whichever tier holds the offset.
//!
//! [`Partition::read`] decides: offsets the local log holds are read at once; offsets
//! below the local log start that the remote tier holds come back as a [`RemoteRead`],
//! which the caller finishes with [`Partition::finish_remote`]. The split lets a Fetch
//! over many partitions give every partition its byte budget in one pass and then run
//! the remote reads concurrently, so it waits for the slowest GET rather than their sum.

use bytes::Bytes;

use super::remote::{self, RemoteTier};
use super::{Partition, PartitionError, Watermarks};
use crate::log::LogError;
use crate::log::txn::AbortedTxn;

/// What [`Partition::read`] found.
pub enum Read {
    /// Records from the local log (possibly none: nothing new yet), and for a
    /// read_committed read the aborted transactions among them.
    Local(Bytes, Watermarks, Option<Vec<AbortedTxn>>),
    /// The offset is in the remote tier: finish with [`Partition::finish_remote`].
    Remote(RemoteRead),
}

/// A read of the remote tier that [`Partition::read`] planned.
pub struct RemoteRead {
    tier: RemoteTier,
    offset: i64,
    max_bytes: usize,
    read_committed: bool,
}

impl Partition {
    /// Reads whole batches from `offset` below the high watermark, at most `max_bytes`
    /// unless the first batch alone is larger (KIP-74), from the local log or, below its
    /// start, from the remote tier. One segment per call on either tier; the consumer's
    /// next fetch continues in the next.
    ///
    /// A local read that finds its segment gone (local retention ran after the choice) or
    /// damaged (the damaged copy was dropped because the remote tier holds it) turns into
    /// a remote read.
    ///
    /// `read_committed` reads stop at the last stable offset instead of the high
    /// watermark. The remote tier holds nothing past it (uploads stop there).
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        read_committed: bool,
    ) -> Result<Read, PartitionError> {
        let remote = |tier| RemoteRead {
            tier,
            offset,
            max_bytes,
            read_committed,
        };
        if let Some(tier) = self.remote_for(offset) {
            return Ok(Read::Remote(remote(tier)));
        }
        match self.read_isolated(offset, max_bytes, read_committed) {
            Ok((records, marks, aborted)) => Ok(Read::Local(records, marks, aborted)),
            Err(PartitionError::Log(
                LogError::OffsetOutOfRange { .. } | LogError::Damaged { .. },
            )) if let Some(tier) = self.remote_for(offset) => Ok(Read::Remote(remote(tier))),
            Err(e) => Err(e),
        }
    }

    /// Runs a read [`Partition::read`] planned. When the remote tier has nothing at or
    /// after the offset up to its end (compaction emptied its tail), the records that
    /// follow are local and are read from the local log start.
    ///
    /// A damaged remote segment is [`PartitionError::Remote`] with
    /// [`remote::RemoteReadError::Corrupt`]: the caller may start a repair
    /// (`crate::tier::repair_remote`).
    ///
    /// A read_committed read also returns the aborted transactions among its records:
    /// those the remote segment's object lists, and those the local log knows.
    pub async fn finish_remote(
        &self,
        read: RemoteRead,
    ) -> Result<(Bytes, Watermarks, Vec<AbortedTxn>), PartitionError> {
        let RemoteRead {
            tier,
            offset,
            max_bytes,
            read_committed,
        } = read;
        let (records, entry) =
            remote::read_remote(&tier.reader, &tier.log, offset, max_bytes).await?;
        if records.is_empty() {
            let from = self.local_log_start_offset().max(offset);
            if let Ok((records, marks, aborted)) =
                self.read_isolated(from, max_bytes, read_committed)
            {
                return Ok((records, marks, aborted.unwrap_or_default()));
            }
        }
        let marks = self.watermarks();
        let mut aborted = Vec::new();
        if read_committed
            && let Some(end) = crate::log::txn::records_end(&records)
            && let Some(entry) = &entry
        {
            aborted = remote::aborted_in_remote(&tier.reader, &tier.log, entry).await?;
            aborted.retain(|a| a.last_offset >= offset && a.first_offset < end);
            for local in self.aborted_transactions(offset, end) {
                if !aborted.contains(&local) {
                    aborted.push(local);
                }
            }
        }
        Ok((records, marks, aborted))
    }

    /// A local read below the high watermark, or for `read_committed` below the last
    /// stable offset with the aborted transactions among its records.
    fn read_isolated(
        &self,
        offset: i64,
        max_bytes: usize,
        read_committed: bool,
    ) -> Result<(Bytes, Watermarks, Option<Vec<AbortedTxn>>), PartitionError> {
        if read_committed {
            self.read_upto_with(offset, max_bytes, self.last_stable_offset(), true)
                .map(|(records, marks, aborted)| (records, marks, Some(aborted)))
        } else {
            self.read_local(offset, max_bytes)
                .map(|(records, marks)| (records, marks, None))
        }
    }
}
