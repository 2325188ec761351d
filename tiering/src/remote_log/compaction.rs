//! Compaction of the remote tier: a live segment replaced by a rewritten copy of the same
//! offset range. The rules (objects first, manifest by CAS, old objects last; what a
//! failure leaves) are on [`RemoteLog::replace_segment`].

use uuid::Uuid;

use super::{ManifestStoreError, RemoteLog, SealedSegment, TierError};
use crate::keys;
use crate::manifest::{self, Root, SegmentEntry, Spill, SpillRef};

impl RemoteLog {
    /// Replaces a live segment with a rewritten copy of the same offset range (compaction:
    /// fewer records, same `[base, end)`). Objects first: the new segment object, then new
    /// copies of the spill objects on the path to it (spill objects are immutable), then
    /// the root by compare-and-swap, then the old objects are deleted. Returns false, and
    /// deletes what it wrote, if the manifest no longer holds `old` exactly as a live
    /// segment (retention, DeleteRecords or a spill-over moved on meanwhile): the caller
    /// tries again later.
    pub async fn replace_segment(
        &self,
        old: &SegmentEntry,
        segment: &SealedSegment,
        leader_epoch: i32,
        part_bytes: u64,
    ) -> Result<bool, TierError> {
        if segment.base_offset != old.base_offset || segment.end_offset != old.end_offset {
            return Err(TierError::NotContiguous {
                base_offset: segment.base_offset,
                end_offset: old.end_offset,
            });
        }
        let root = self.root();
        if leader_epoch < root.leader_epoch {
            return Err(TierError::Fenced {
                epoch: leader_epoch,
                current: root.leader_epoch,
            });
        }
        // Spill objects may still hold entries below the start (retention drops whole
        // references only): those are deleted data, not live segments.
        if old.end_offset <= root.log_start_offset {
            return Ok(false);
        }
        let object_id = Uuid::new_v4();
        let key = keys::segment_key(&self.id, segment.base_offset, object_id);
        // The data's age, not the copy's: tombstones and time retention count from the
        // first upload.
        let new = segment.entry(leader_epoch, object_id, old.uploaded_ms);
        let body = segment.body();
        let mut new_spills: Vec<SpillRef> = Vec::new();
        let mut old_spills: Vec<SpillRef> = Vec::new();
        self.set_in_flight(object_id, true);
        let result: Result<bool, TierError> = async {
            self.store.put_body(&key, &body, part_bytes).await?;
            let live = |next: &Root| old.end_offset > next.log_start_offset;
            // Where the old entry sits: the tail, or under one of the root's references.
            if root.tail.iter().any(|e| e == old) {
                return self
                    .commit(leader_epoch, |next| {
                        if !live(next) {
                            return Ok(false);
                        }
                        let Some(slot) = next.tail.iter_mut().find(|e| *e == old) else {
                            return Ok(false);
                        };
                        *slot = new;
                        next.live_bytes =
                            (next.live_bytes + new.log_bytes).saturating_sub(old.log_bytes);
                        Ok(true)
                    })
                    .await;
            }
            let Some(top) = root
                .refs
                .iter()
                .find(|r| r.first_offset <= old.base_offset && old.base_offset < r.end_offset)
                .copied()
            else {
                return Ok(false);
            };
            let Some(new_top) = self
                .rewrite_path(top, old, &new, &mut new_spills, &mut old_spills)
                .await?
            else {
                return Ok(false);
            };
            self.commit(leader_epoch, |next| {
                if !live(next) {
                    return Ok(false);
                }
                let Some(slot) = next.refs.iter_mut().find(|r| **r == top) else {
                    return Ok(false);
                };
                *slot = new_top;
                next.live_bytes = (next.live_bytes + new.log_bytes).saturating_sub(old.log_bytes);
                Ok(true)
            })
            .await
        }
        .await;
        for id in std::iter::once(object_id).chain(new_spills.iter().map(|r| r.object_id)) {
            self.set_in_flight(id, false);
        }
        let spill_key =
            |r: &SpillRef| keys::manifest_key(&self.id, r.level, r.first_offset, r.object_id);
        match result {
            Ok(true) => {
                self.delete_quietly(&self.segment_key(old)).await;
                for r in &old_spills {
                    self.delete_quietly(&spill_key(r)).await;
                }
                Ok(true)
            }
            // When the metadata store did not answer, the commit may have landed: the
            // scrubber, which reads the stored root, decides about what was written.
            Err(TierError::Manifest(ManifestStoreError::Unavailable(e))) => {
                Err(TierError::Manifest(ManifestStoreError::Unavailable(e)))
            }
            other => {
                // Not committed: nothing references what was written.
                self.delete_quietly(&key).await;
                for r in &new_spills {
                    self.delete_quietly(&spill_key(r)).await;
                }
                other
            }
        }
    }

    /// Writes new copies of the spill objects from `r` down to the one holding `old`, with
    /// `old` replaced by `new`. Returns the new reference for `r` (None if `old` is not
    /// under it); `written` gets the new references, `replaced` the old ones.
    async fn rewrite_path(
        &self,
        r: SpillRef,
        old: &SegmentEntry,
        new: &SegmentEntry,
        written: &mut Vec<SpillRef>,
        replaced: &mut Vec<SpillRef>,
    ) -> Result<Option<SpillRef>, TierError> {
        let spill = self.load_spill(&r).await?;
        let (new_ref, new_spill) = match &*spill {
            Spill::Segments(entries) => {
                let Some(i) = entries.iter().position(|e| e == old) else {
                    return Ok(None);
                };
                let mut entries = entries.clone();
                entries[i] = *new;
                let id = Uuid::new_v4();
                (
                    manifest::ref_for_segments(&entries, id),
                    Spill::Segments(entries),
                )
            }
            Spill::Refs { level, refs } => {
                let Some(i) = refs.iter().position(|c| {
                    c.first_offset <= old.base_offset && old.base_offset < c.end_offset
                }) else {
                    return Ok(None);
                };
                let child = refs[i];
                let Some(new_child) =
                    Box::pin(self.rewrite_path(child, old, new, written, replaced)).await?
                else {
                    return Ok(None);
                };
                let mut refs = refs.clone();
                refs[i] = new_child;
                let id = Uuid::new_v4();
                (
                    manifest::ref_for_refs(&refs, id),
                    Spill::Refs {
                        level: *level,
                        refs,
                    },
                )
            }
        };
        // Recorded before the write: a failed write may still have created the object.
        written.push(new_ref);
        self.write_spill(&new_ref, new_spill).await?;
        replaced.push(r);
        Ok(Some(new_ref))
    }
}
