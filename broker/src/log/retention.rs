//! Removing data from the local log: retention (time, size, and what the remote tier
//! already holds), DeleteRecords, and what the uploader may take.

use super::segment::Segment;
use super::txn::{self, AbortedIndex};
use super::{Log, LogError, RemoteBounds, RetentionOutcome, SealedInfo};

fn sealed_info(s: &Segment, aborted: &AbortedIndex) -> SealedInfo {
    let (offset_index, time_index) = s.index_paths();
    SealedInfo {
        base_offset: s.base_offset,
        end_offset: s.next_offset,
        size: s.size,
        max_timestamp: s.max_timestamp,
        sealed_ms: s.sealed_ms,
        log_path: s.log_path().to_path_buf(),
        offset_index: offset_index.to_path_buf(),
        time_index: time_index.to_path_buf(),
        producers: Some(s.producers_path()).filter(|p| p.exists()),
        txn_index: {
            let overlapping = aborted.overlapping(s.base_offset, s.next_offset);
            if overlapping.is_empty() {
                Vec::new()
            } else {
                txn::encode_file(&overlapping)
            }
        },
    }
}

impl Log {
    /// DeleteRecords: moves the log start offset forward and drops whole segments below it.
    pub fn delete_records_before(&mut self, offset: i64) -> Result<i64, LogError> {
        let end = self.log_end_offset();
        if offset > end || offset < 0 {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset,
                log_end_offset: end,
            });
        }
        if offset > self.log_start_offset {
            self.log_start_offset = offset;
            self.delete_segments_below_start()?;
            self.write_checkpoint(self.checkpoint())
                .map_err(|e| self.io_err(e))?;
        }
        Ok(self.log_start_offset)
    }

    fn delete_segments_below_start(&mut self) -> Result<RetentionOutcome, LogError> {
        let mut outcome = RetentionOutcome::default();
        while self.segments.len() > 1 {
            let Some((&base, first)) = self.segments.iter().next() else {
                break;
            };
            if first.next_offset > self.log_start_offset {
                break;
            }
            outcome.bytes += first.size;
            outcome.segments += 1;
            first.delete_files().map_err(|e| self.io_err(e))?;
            self.segments.remove(&base);
        }
        self.forget_aborted_before_first_segment();
        Ok(outcome)
    }

    /// Deletes whole sealed segments past retention, oldest first.
    ///
    /// Without tiered storage that is retention.ms / retention.bytes. With it, `remote`
    /// says what the remote tier holds: a segment may go only once it is uploaded (wholly
    /// below the remote end), and then after local.retention.ms / local.retention.bytes;
    /// segments the remote tier has already deleted (below its start) go regardless.
    pub fn apply_retention(
        &mut self,
        now_ms: i64,
        remote: Option<RemoteBounds>,
    ) -> Result<RetentionOutcome, LogError> {
        let mut outcome = RetentionOutcome::default();
        let mut total = self.size_bytes();
        let (retention_ms, retention_bytes) = if self.config.remote_storage {
            self.config.effective_local_retention()
        } else {
            (self.config.retention_ms, self.config.retention_bytes)
        };
        while self.segments.len() > 1 {
            let Some((&base, first)) = self.segments.iter().next() else {
                break;
            };
            // An empty segment (a compacted range with nothing left) has no timestamp: as
            // in Kafka, its age is its file's last write.
            let newest = if first.size == 0 {
                std::fs::metadata(first.log_path())
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(-1, |d| d.as_millis() as i64)
            } else {
                first.max_timestamp
            };
            let expired = retention_ms >= 0 && newest >= 0 && now_ms - newest > retention_ms;
            let oversize = retention_bytes >= 0 && total - first.size >= retention_bytes as u64;
            let allowed = match (self.config.remote_storage, remote) {
                (false, _) => expired || oversize,
                (true, None) => false,
                (true, Some(bounds)) => {
                    first.next_offset <= bounds.start
                        || ((expired || oversize) && first.next_offset <= bounds.end)
                }
            };
            if !allowed {
                break;
            }
            total -= first.size;
            outcome.bytes += first.size;
            outcome.segments += 1;
            let next_offset = first.next_offset;
            first.delete_files().map_err(|e| self.io_err(e))?;
            self.segments.remove(&base);
            self.log_start_offset = self.log_start_offset.max(next_offset);
        }
        self.forget_aborted_before_first_segment();
        if outcome.segments > 0 {
            self.write_checkpoint(self.checkpoint())
                .map_err(|e| self.io_err(e))?;
        }
        Ok(outcome)
    }

    /// Sealed segments wholly below `high_watermark` that end after `uploaded_end` (all
    /// sealed segments if nothing was uploaded), oldest first, at most `limit`.
    pub fn upload_candidates(
        &self,
        uploaded_end: Option<i64>,
        high_watermark: i64,
        limit: usize,
    ) -> Vec<SealedInfo> {
        let active_base = self.active().base_offset;
        self.segments
            .values()
            // Empty sealed segments exist only in compacted logs (a cleaned range with
            // nothing left); they are uploaded too so the remote tier stays contiguous.
            .filter(|s| s.base_offset != active_base && (s.size > 0 || self.config.compact))
            .filter(|s| s.next_offset <= high_watermark)
            // As in Kafka, nothing at or past the last stable offset is uploaded: a
            // tiered segment never holds a transaction that may still abort.
            .filter(|s| {
                self.producers
                    .first_unstable_offset()
                    .is_none_or(|first| s.next_offset <= first)
            })
            // A compacted topic uploads a segment once it was cleaned: the bucket gets
            // the compacted bytes, not every superseded version.
            .filter(|s| !self.config.compact || s.next_offset <= self.first_dirty_offset)
            .filter(|s| uploaded_end.is_none_or(|end| s.next_offset > end))
            .take(limit)
            .map(|s| sealed_info(s, &self.aborted))
            .collect()
    }

    /// The sealed segment based at `base_offset`, as an upload reads it: a repair of the
    /// remote tier uploads it again. `None` for the active segment or an unknown base.
    pub fn sealed_segment(&self, base_offset: i64) -> Option<SealedInfo> {
        let active_base = self.active().base_offset;
        self.segments
            .get(&base_offset)
            .filter(|s| s.base_offset != active_base)
            .map(|s| sealed_info(s, &self.aborted))
    }

    /// Bytes of the segments that end after `offset`: what the local log holds beyond the
    /// remote tier.
    pub fn bytes_after(&self, offset: i64) -> u64 {
        self.segments
            .values()
            .filter(|s| s.next_offset > offset)
            .map(|s| s.size)
            .sum()
    }
}
