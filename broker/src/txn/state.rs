//! One transactional id's state machine, pure: every transition takes the time and
//! returns the metadata to write, or the error the client gets. The coordinator
//! ([`super::TxnCoordinator`]) writes the result to `__transaction_state` and only then
//! makes it current.
//!
//! ```text
//!            AddPartitionsToTxn                  EndTxn(commit)
//!   Empty ─────────────────────▶ Ongoing ─────────────────────▶ PrepareCommit ──markers──▶ CompleteCommit
//!     ▲  ▲                        │  │  EndTxn(abort), timeout,                                  │
//!     │  └── InitProducerId ──────┘  └──── InitProducerId ─────▶ PrepareAbort ───markers──▶ CompleteAbort
//!     └──────────────────────────── InitProducerId (epoch + 1) ◀──────────────────────────────────┘
//! ```
//!
//! Fencing: every InitProducerId bumps the producer epoch, so the previous producer with
//! the same transactional id (a zombie) is refused by the coordinator (PRODUCER_FENCED)
//! and by every partition it wrote to (the markers carry the new epoch). A transaction
//! that outlives its timeout is aborted with the epoch bumped as well, so its producer
//! cannot add to it afterwards.

use std::collections::BTreeSet;

/// Kafka's transaction states (those a transactional id can be stored in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
}

impl TxnState {
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
        }
    }

    /// Markers are being written: the transaction has an outcome but is not done.
    pub fn is_preparing(self) -> bool {
        matches!(self, TxnState::PrepareCommit | TxnState::PrepareAbort)
    }
}

/// What the coordinator keeps per transactional id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMetadata {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    /// When the open transaction began; -1 with none.
    pub start_ms: i64,
    pub last_update_ms: i64,
    /// The partitions of the open (or ending) transaction.
    pub partitions: BTreeSet<(String, i32)>,
    /// The epoch before the last bump a client asked for: an InitProducerId naming the
    /// current epoch (KIP-360) or, with KIP-890 part 2, an EndTxn. A retry of it whose
    /// answer was lost names this epoch and gets the current one back; -1 otherwise.
    pub last_producer_epoch: i16,
    /// The producer speaks KIP-890 part 2 (`transaction.version` 2): EndTxn bumps the
    /// epoch, and partitions join the transaction through their leaders.
    pub client_tv2: bool,
    /// With KIP-890 part 2, the producer id an EndTxn that exhausted the epoch moves to
    /// when the transaction completes (its markers carry the old id); -1 otherwise.
    pub next_producer_id: i64,
    /// The producer id before that move, so a retry of that EndTxn is recognised.
    pub previous_producer_id: i64,
}

/// Why a transactional request was refused; each maps to one Kafka error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TxnError {
    #[error("this broker is not the transaction's coordinator; find it again")]
    NotCoordinator,
    #[error("the coordinator is not available")]
    CoordinatorNotAvailable,
    #[error("the coordinator is loading the transaction's partition")]
    CoordinatorLoadInProgress,
    #[error("another operation on this transaction is in progress; retry")]
    ConcurrentTransactions,
    #[error("a newer producer with this transactional id fenced this one")]
    ProducerFenced,
    #[error("the producer id is not the one assigned to this transactional id")]
    InvalidProducerIdMapping,
    #[error("the request is not valid in the transaction's state")]
    InvalidTxnState,
    #[error("the transaction timeout is outside 1..=transaction_max_timeout_ms")]
    InvalidTransactionTimeout,
    #[error("the transactional id is unknown")]
    TransactionalIdNotFound,
    #[error("the transactional id is empty or longer than 32767 bytes")]
    InvalidTransactionalId,
}

/// What InitProducerId does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitStep {
    /// Write this (state Empty, epoch bumped) and answer with its id and epoch. With
    /// `new_producer_id` the caller gives it a fresh producer id first (the epoch ran out,
    /// or the id is new).
    Ready {
        meta: TxnMetadata,
        new_producer_id: bool,
    },
    /// An open transaction must be aborted first: write this (PrepareAbort, epoch
    /// bumped), write its markers, and answer CONCURRENT_TRANSACTIONS (the client retries).
    AbortFirst(TxnMetadata),
}

/// What EndTxn does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndStep {
    /// Write this (PrepareCommit or PrepareAbort), then the markers. With KIP-890 part 2
    /// and an exhausted epoch, the caller first sets `next_producer_id` to a fresh id.
    Prepare(TxnMetadata),
    /// A retry of an EndTxn that already completed: answer success.
    AlreadyDone,
}

impl TxnMetadata {
    /// The producer id and epoch a KIP-890 part 2 client continues with after this
    /// EndTxn's outcome: the bumped epoch, or a fresh id at epoch 0 once the epoch ran
    /// out.
    pub fn epoch_after_end(&self) -> (i64, i16) {
        if self.next_producer_id >= 0 {
            (self.next_producer_id, 0)
        } else {
            (self.producer_id, self.producer_epoch)
        }
    }

    /// Whether an EndTxn with the bumped epoch would exhaust it (a new id is needed).
    pub fn end_exhausts_epoch(&self) -> bool {
        self.producer_epoch >= MAX_EPOCH
    }

    /// Whether `producer_id` is the id this transaction's producer moves to once its
    /// markers are written: it already has it, and must wait (retriable).
    pub fn moving_to(&self, producer_id: i64) -> bool {
        self.next_producer_id >= 0 && producer_id == self.next_producer_id
    }
}

/// The last epoch before the producer id must change (Kafka keeps one spare).
const MAX_EPOCH: i16 = i16::MAX - 1;

impl TxnMetadata {
    /// A transactional id seen for the first time.
    pub fn new(transactional_id: &str, timeout_ms: i32, now_ms: i64) -> TxnMetadata {
        TxnMetadata {
            transactional_id: transactional_id.to_string(),
            producer_id: -1,
            producer_epoch: -1,
            timeout_ms,
            state: TxnState::Empty,
            start_ms: -1,
            last_update_ms: now_ms,
            partitions: BTreeSet::new(),
            last_producer_epoch: -1,
            client_tv2: false,
            next_producer_id: -1,
            previous_producer_id: -1,
        }
    }

    fn check_producer(&self, producer_id: i64, epoch: i16) -> Result<(), TxnError> {
        if self.moving_to(producer_id) {
            return Err(TxnError::ConcurrentTransactions);
        }
        if producer_id != self.producer_id {
            return Err(TxnError::InvalidProducerIdMapping);
        }
        if epoch != self.producer_epoch {
            return Err(TxnError::ProducerFenced);
        }
        Ok(())
    }

    /// InitProducerId. `expected` is the id and epoch a KIP-360 client names when it
    /// recovers (v3+): the current epoch is bumped; the epoch before the last such bump is
    /// a retry whose answer was lost, answered with the current epoch unchanged (as Kafka's
    /// `lastProducerEpoch`); any other epoch is a zombie's.
    pub fn init(
        &self,
        expected: Option<(i64, i16)>,
        timeout_ms: i32,
        now_ms: i64,
    ) -> Result<InitStep, TxnError> {
        if self.state.is_preparing() {
            return Err(TxnError::ConcurrentTransactions);
        }
        let mut next = self.clone();
        next.last_update_ms = now_ms;
        if let Some((id, epoch)) = expected
            && self.producer_id >= 0
            && (id != self.producer_id || epoch != self.producer_epoch)
        {
            let retry = id == self.producer_id
                && self.state == TxnState::Empty
                && self.last_producer_epoch >= 0
                && epoch == self.last_producer_epoch;
            if !retry {
                return Err(TxnError::ProducerFenced);
            }
            next.timeout_ms = timeout_ms;
            return Ok(InitStep::Ready {
                meta: next,
                new_producer_id: false,
            });
        }
        let exhausted = self.producer_epoch >= MAX_EPOCH;
        if self.state == TxnState::Ongoing {
            if !exhausted {
                next.producer_epoch += 1;
            }
            next.last_producer_epoch = -1;
            next.state = TxnState::PrepareAbort;
            return Ok(InitStep::AbortFirst(next));
        }
        let new_producer_id = self.producer_id < 0 || exhausted;
        next.producer_epoch = if new_producer_id {
            0
        } else {
            self.producer_epoch + 1
        };
        // A recovering producer may retry with the epoch it named; a new one fences it.
        next.last_producer_epoch = if expected.is_some() && !new_producer_id {
            self.producer_epoch
        } else {
            -1
        };
        next.timeout_ms = timeout_ms;
        next.state = TxnState::Empty;
        next.start_ms = -1;
        next.partitions.clear();
        // A new producer says again which protocol it speaks.
        next.client_tv2 = false;
        next.next_producer_id = -1;
        next.previous_producer_id = -1;
        Ok(InitStep::Ready {
            meta: next,
            new_producer_id,
        })
    }

    /// AddPartitionsToTxn and AddOffsetsToTxn. `None`: the transaction already holds
    /// them, nothing to write.
    pub fn add_partitions(
        &self,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, i32)],
        tv2: bool,
        now_ms: i64,
    ) -> Result<Option<TxnMetadata>, TxnError> {
        self.check_producer(producer_id, epoch)?;
        if self.state.is_preparing() {
            return Err(TxnError::ConcurrentTransactions);
        }
        if self.state == TxnState::Ongoing
            && partitions.iter().all(|p| self.partitions.contains(p))
            && (self.client_tv2 || !tv2)
        {
            return Ok(None);
        }
        let mut next = self.clone();
        next.client_tv2 |= tv2;
        if self.state != TxnState::Ongoing {
            next.partitions.clear();
            next.start_ms = now_ms;
        }
        next.state = TxnState::Ongoing;
        next.partitions.extend(partitions.iter().cloned());
        next.last_update_ms = now_ms;
        Ok(Some(next))
    }

    /// EndTxn. `tv2`: the client speaks KIP-890 part 2 (EndTxn v5), see [`Self::end_v2`].
    pub fn end(
        &self,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        tv2: bool,
        now_ms: i64,
    ) -> Result<EndStep, TxnError> {
        if tv2 {
            return self.end_v2(producer_id, epoch, commit, now_ms);
        }
        self.check_producer(producer_id, epoch)?;
        let prepare = match (self.state, commit) {
            (TxnState::Ongoing, true) => TxnState::PrepareCommit,
            (TxnState::Ongoing, false) => TxnState::PrepareAbort,
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => {
                return Ok(EndStep::AlreadyDone);
            }
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
                return Err(TxnError::ConcurrentTransactions);
            }
            _ => return Err(TxnError::InvalidTxnState),
        };
        let mut next = self.clone();
        next.state = prepare;
        next.last_update_ms = now_ms;
        Ok(EndStep::Prepare(next))
    }

    /// EndTxn of a KIP-890 part 2 client: every transaction ends with the epoch bumped
    /// (its markers carry the new epoch, fencing anything late of the old one), and the
    /// client continues with [`Self::epoch_after_end`]. A retry whose answer was lost
    /// names the epoch before the bump (`last_producer_epoch`, or the previous id's last
    /// epoch after a move to a new id). An abort with nothing open also bumps the epoch
    /// (the client may not know whether a partition joined).
    fn end_v2(
        &self,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        now_ms: i64,
    ) -> Result<EndStep, TxnError> {
        let retry = self.client_tv2
            && ((producer_id == self.producer_id
                && self.last_producer_epoch >= 0
                && epoch == self.last_producer_epoch)
                || (self.previous_producer_id >= 0
                    && producer_id == self.previous_producer_id
                    && self.producer_epoch == 0
                    && epoch >= MAX_EPOCH - 1));
        if self.moving_to(producer_id) {
            return Err(TxnError::ConcurrentTransactions);
        }
        if producer_id != self.producer_id && !retry {
            return Err(TxnError::InvalidProducerIdMapping);
        }
        let same_outcome = match self.state {
            TxnState::PrepareCommit | TxnState::CompleteCommit => commit,
            TxnState::PrepareAbort | TxnState::CompleteAbort => !commit,
            _ => false,
        };
        if retry {
            return match self.state {
                TxnState::CompleteCommit | TxnState::CompleteAbort if same_outcome => {
                    Ok(EndStep::AlreadyDone)
                }
                TxnState::PrepareCommit | TxnState::PrepareAbort if same_outcome => {
                    Err(TxnError::ConcurrentTransactions)
                }
                _ => Err(TxnError::InvalidTxnState),
            };
        }
        if epoch != self.producer_epoch {
            return Err(TxnError::ProducerFenced);
        }
        let prepare = match (self.state, commit) {
            (TxnState::Ongoing, true) => TxnState::PrepareCommit,
            (TxnState::Ongoing, false) => TxnState::PrepareAbort,
            (TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort, false) => {
                TxnState::PrepareAbort
            }
            (TxnState::PrepareCommit | TxnState::PrepareAbort, _) => {
                return Err(TxnError::ConcurrentTransactions);
            }
            _ => return Err(TxnError::InvalidTxnState),
        };
        let mut next = self.clone();
        if prepare == TxnState::PrepareAbort && self.state != TxnState::Ongoing {
            next.partitions.clear();
            next.start_ms = now_ms;
        }
        next.client_tv2 = true;
        next.state = prepare;
        next.last_producer_epoch = epoch;
        next.producer_epoch = epoch + 1;
        next.last_update_ms = now_ms;
        Ok(EndStep::Prepare(next))
    }

    /// Whether an open transaction outlived its timeout.
    pub fn timed_out(&self, now_ms: i64) -> bool {
        self.state == TxnState::Ongoing
            && now_ms.saturating_sub(self.start_ms) > i64::from(self.timeout_ms)
    }

    /// The abort of a timed-out transaction: PrepareAbort with the epoch bumped, so the
    /// producer that let it time out is fenced.
    pub fn abort_timed_out(&self, now_ms: i64) -> TxnMetadata {
        let mut next = self.clone();
        if next.producer_epoch < MAX_EPOCH {
            next.producer_epoch += 1;
        }
        next.last_producer_epoch = -1;
        next.state = TxnState::PrepareAbort;
        next.last_update_ms = now_ms;
        next
    }

    /// Every marker is written: the transaction is complete.
    pub fn complete(&self, now_ms: i64) -> TxnMetadata {
        let mut next = self.clone();
        if next.next_producer_id >= 0 {
            next.previous_producer_id = next.producer_id;
            next.producer_id = next.next_producer_id;
            next.next_producer_id = -1;
            next.producer_epoch = 0;
            next.last_producer_epoch = -1;
        }
        next.state = match self.state {
            TxnState::PrepareCommit => TxnState::CompleteCommit,
            _ => TxnState::CompleteAbort,
        };
        next.partitions.clear();
        next.start_ms = -1;
        next.last_update_ms = now_ms;
        next
    }

    /// Whether the transactional id may be forgotten: no transaction and idle for
    /// longer than `expiration_ms`.
    pub fn expired(&self, now_ms: i64, expiration_ms: i64) -> bool {
        matches!(
            self.state,
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
        ) && now_ms.saturating_sub(self.last_update_ms) > expiration_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(step: InitStep) -> TxnMetadata {
        match step {
            InitStep::Ready { meta, .. } => meta,
            other => panic!("expected Ready, got {other:?}"),
        }
    }

    fn with_id(mut meta: TxnMetadata, id: i64) -> TxnMetadata {
        meta.producer_id = id;
        meta
    }

    #[test]
    fn a_transaction_commits_and_the_next_init_fences_the_old_epoch() {
        let fresh = TxnMetadata::new("t", 60_000, 0);
        let step = fresh.init(None, 60_000, 1).expect("accepted");
        assert!(matches!(
            step,
            InitStep::Ready {
                new_producer_id: true,
                ..
            }
        ));
        let meta = with_id(ready(step), 7);
        assert_eq!((meta.producer_epoch, meta.state), (0, TxnState::Empty));
        let parts = [("a".to_string(), 0), ("b".to_string(), 1)];
        let ongoing = meta
            .add_partitions(7, 0, &parts, false, 10)
            .expect("accepted")
            .expect("a change");
        assert_eq!((ongoing.state, ongoing.start_ms), (TxnState::Ongoing, 10));
        assert_eq!(
            ongoing.add_partitions(7, 0, &parts[..1], false, 11),
            Ok(None)
        );
        assert_eq!(
            ongoing.add_partitions(8, 0, &parts, false, 11),
            Err(TxnError::InvalidProducerIdMapping)
        );
        assert_eq!(
            ongoing.add_partitions(7, 1, &parts, false, 11),
            Err(TxnError::ProducerFenced)
        );
        let EndStep::Prepare(prepared) = ongoing.end(7, 0, true, false, 12).expect("accepted")
        else {
            panic!("expected Prepare");
        };
        assert_eq!(prepared.state, TxnState::PrepareCommit);
        assert_eq!(
            prepared.end(7, 0, true, false, 13),
            Err(TxnError::ConcurrentTransactions)
        );
        assert_eq!(
            prepared.end(7, 0, false, false, 13),
            Err(TxnError::InvalidTxnState)
        );
        assert_eq!(
            prepared.init(None, 1, 13),
            Err(TxnError::ConcurrentTransactions)
        );
        let done = prepared.complete(14);
        assert_eq!(done.state, TxnState::CompleteCommit);
        assert!(done.partitions.is_empty());
        assert_eq!(done.end(7, 0, true, false, 15), Ok(EndStep::AlreadyDone));
        assert_eq!(
            done.end(7, 0, false, false, 15),
            Err(TxnError::InvalidTxnState)
        );
        // A new producer with the same id bumps the epoch: the old one is fenced.
        let next = ready(done.init(None, 60_000, 16).expect("accepted"));
        assert_eq!((next.producer_id, next.producer_epoch), (7, 1));
        assert_eq!(
            next.add_partitions(7, 0, &parts, false, 17),
            Err(TxnError::ProducerFenced)
        );
        // A KIP-360 client naming an old epoch is a zombie.
        assert_eq!(
            next.init(Some((7, 0)), 60_000, 17),
            Err(TxnError::ProducerFenced)
        );
        assert!(next.init(Some((7, 1)), 60_000, 17).is_ok());
    }

    #[test]
    fn a_lost_init_answer_is_retried_with_the_previous_epoch() {
        let meta = with_id(
            ready(
                TxnMetadata::new("t", 1, 0)
                    .init(None, 1_000, 0)
                    .expect("accepted"),
            ),
            3,
        );
        // A KIP-360 recovery names (3, 0): epoch 1, and 0 is remembered.
        let bumped = ready(meta.init(Some((3, 0)), 1_000, 1).expect("accepted"));
        assert_eq!((bumped.producer_epoch, bumped.last_producer_epoch), (1, 0));
        // Its answer was lost: the retry names (3, 0) again and gets epoch 1 unchanged.
        let again = ready(bumped.init(Some((3, 0)), 1_000, 2).expect("a retry"));
        assert_eq!((again.producer_epoch, again.last_producer_epoch), (1, 0));
        // Any older epoch is a zombie's; so is the retry once a transaction began.
        assert_eq!(
            bumped.init(Some((3, 5)), 1_000, 2),
            Err(TxnError::ProducerFenced)
        );
        let ongoing = again
            .add_partitions(3, 1, &[("a".to_string(), 0)], false, 3)
            .expect("accepted")
            .expect("a change");
        assert_eq!(
            ongoing.init(Some((3, 0)), 1_000, 4),
            Err(TxnError::ProducerFenced)
        );
        // A new producer (no expected epoch) forgets the previous epoch: the old one's
        // retry is fenced.
        let fresh = ready(again.init(None, 1_000, 5).expect("accepted"));
        assert_eq!((fresh.producer_epoch, fresh.last_producer_epoch), (2, -1));
        assert_eq!(
            fresh.init(Some((3, 1)), 1_000, 6),
            Err(TxnError::ProducerFenced)
        );
    }

    #[test]
    fn kip_890_end_txn_bumps_the_epoch_and_answers_retries() {
        let meta = with_id(
            ready(
                TxnMetadata::new("t", 1, 0)
                    .init(None, 1_000, 0)
                    .expect("accepted"),
            ),
            3,
        );
        let parts = [("a".to_string(), 0)];
        // A partition leader adds the partition (Produce v12): the id speaks TV2.
        let ongoing = meta
            .add_partitions(3, 0, &parts, true, 1)
            .expect("accepted")
            .expect("a change");
        assert!(ongoing.client_tv2);
        let EndStep::Prepare(prepared) = ongoing.end(3, 0, true, true, 2).expect("accepted") else {
            panic!("expected Prepare");
        };
        assert_eq!(
            (
                prepared.state,
                prepared.producer_epoch,
                prepared.last_producer_epoch
            ),
            (TxnState::PrepareCommit, 1, 0)
        );
        assert_eq!(prepared.epoch_after_end(), (3, 1));
        // A retry while the markers are written, then after: the same outcome.
        assert_eq!(
            prepared.end(3, 0, true, true, 3),
            Err(TxnError::ConcurrentTransactions)
        );
        let done = prepared.complete(4);
        assert_eq!(done.end(3, 0, true, true, 5), Ok(EndStep::AlreadyDone));
        assert_eq!(
            done.end(3, 0, false, true, 5),
            Err(TxnError::InvalidTxnState)
        );
        // The old epoch is fenced for anything new; the next transaction uses epoch 1.
        assert_eq!(
            done.add_partitions(3, 0, &parts, true, 5),
            Err(TxnError::ProducerFenced)
        );
        let next = done
            .add_partitions(3, 1, &parts, true, 6)
            .expect("accepted")
            .expect("a change");
        // An abort bumps too; so does one with nothing open (the client may not know
        // whether a partition joined).
        let EndStep::Prepare(aborting) = next.end(3, 1, false, true, 7).expect("accepted") else {
            panic!("expected Prepare");
        };
        assert_eq!(aborting.epoch_after_end(), (3, 2));
        let aborted = aborting.complete(8);
        let EndStep::Prepare(empty) = aborted.end(3, 2, false, true, 9).expect("accepted") else {
            panic!("expected Prepare");
        };
        assert!(empty.partitions.is_empty());
        assert_eq!(empty.epoch_after_end(), (3, 3));
        assert_eq!(
            aborted.end(3, 2, true, true, 9),
            Err(TxnError::InvalidTxnState)
        );
        assert_eq!(
            aborted.end(3, 0, true, true, 9),
            Err(TxnError::ProducerFenced)
        );
        assert_eq!(
            aborted.end(4, 2, true, true, 9),
            Err(TxnError::InvalidProducerIdMapping)
        );
    }

    #[test]
    fn kip_890_an_exhausted_epoch_moves_to_the_next_producer_id() {
        let mut meta = with_id(
            ready(
                TxnMetadata::new("t", 1, 0)
                    .init(None, 1_000, 0)
                    .expect("accepted"),
            ),
            3,
        );
        meta.producer_epoch = MAX_EPOCH - 1;
        let ongoing = meta
            .add_partitions(3, MAX_EPOCH - 1, &[("a".to_string(), 0)], true, 1)
            .expect("accepted")
            .expect("a change");
        let EndStep::Prepare(mut prepared) = ongoing
            .end(3, MAX_EPOCH - 1, true, true, 2)
            .expect("accepted")
        else {
            panic!("expected Prepare");
        };
        assert!(prepared.end_exhausts_epoch());
        prepared.next_producer_id = 9; // the coordinator reserves one
        // The markers carry the old id and the bumped epoch; the client gets the new id.
        assert_eq!(
            (prepared.producer_id, prepared.producer_epoch),
            (3, MAX_EPOCH)
        );
        assert_eq!(prepared.epoch_after_end(), (9, 0));
        let done = prepared.complete(3);
        assert_eq!(
            (
                done.producer_id,
                done.producer_epoch,
                done.previous_producer_id
            ),
            (9, 0, 3)
        );
        // A retry with the old id and epoch is recognised.
        assert_eq!(
            done.end(3, MAX_EPOCH - 1, true, true, 4),
            Ok(EndStep::AlreadyDone)
        );
        assert_eq!(done.epoch_after_end(), (9, 0));
    }

    #[test]
    fn init_during_an_open_transaction_aborts_it_with_a_new_epoch() {
        let meta = with_id(
            ready(
                TxnMetadata::new("t", 1, 0)
                    .init(None, 1_000, 0)
                    .expect("accepted"),
            ),
            3,
        );
        let ongoing = meta
            .add_partitions(3, 0, &[("a".to_string(), 0)], false, 5)
            .expect("accepted")
            .expect("accepted");
        let InitStep::AbortFirst(abort) = ongoing.init(None, 1_000, 6).expect("accepted") else {
            panic!("expected AbortFirst");
        };
        assert_eq!(
            (abort.state, abort.producer_epoch),
            (TxnState::PrepareAbort, 1)
        );
        assert_eq!(abort.partitions.len(), 1);
    }

    #[test]
    fn timeouts_abort_with_a_bumped_epoch_and_idle_ids_expire() {
        let meta = with_id(
            ready(
                TxnMetadata::new("t", 1, 0)
                    .init(None, 1_000, 0)
                    .expect("accepted"),
            ),
            3,
        );
        let ongoing = meta
            .add_partitions(3, 0, &[("a".to_string(), 0)], false, 100)
            .expect("accepted")
            .expect("accepted");
        assert!(!ongoing.timed_out(1_100));
        assert!(ongoing.timed_out(1_101));
        let abort = ongoing.abort_timed_out(1_101);
        assert_eq!(
            (abort.state, abort.producer_epoch),
            (TxnState::PrepareAbort, 1)
        );
        assert_eq!(
            abort.end(3, 0, true, false, 1_102),
            Err(TxnError::ProducerFenced),
            "the producer that timed out is fenced"
        );
        let done = abort.complete(1_200);
        assert!(!done.expired(1_300, 1_000));
        assert!(done.expired(2_201, 1_000));
        assert!(!ongoing.expired(1_000_000, 1));
    }

    #[test]
    fn an_exhausted_epoch_takes_a_new_producer_id() {
        let mut meta = with_id(
            ready(
                TxnMetadata::new("t", 1, 0)
                    .init(None, 1, 0)
                    .expect("accepted"),
            ),
            3,
        );
        meta.producer_epoch = MAX_EPOCH;
        assert!(matches!(
            meta.init(None, 1, 1),
            Ok(InitStep::Ready {
                new_producer_id: true,
                ..
            })
        ));
    }
}
