//! Supervision of the broker's background loops (cleaner, uploader, scrubber,
//! housekeeping, group coordinator, metadata rounds, session keep-alive, replication
//! fetchers).
//!
//! Every loop runs under [`Supervisor::spawn`], one pattern for all of them: a loop that
//! panics or returns an error is logged once, counted in `strata_task_restarts_total{task}`
//! and started again after an exponential backoff (doubling from [`Backoff::first`] up to
//! [`Backoff::max`]). While a task waits to be restarted, /readyz answers 503 and names it,
//! so a loop that keeps failing is visible instead of silently missing (a cleaner that
//! stopped would let compacted topics grow without bound). A loop that ran for at least
//! [`Backoff::max`] before failing starts again from the first delay: its failures are
//! unrelated, not a crash loop.
//!
//! Invariants:
//! - a loop that returns `Ok` has finished its work (tiering off, leadership moved, shutdown)
//!   and is not restarted;
//! - nothing is restarted once the cancellation token fired: shutdown waits for the loops
//!   as it did before they were supervised;
//! - a task's health entry exists only while it waits for a restart, and is removed when
//!   its supervising future ends or is dropped (aborted), so /readyz never reports a task
//!   that no longer exists.
//!
//! A panic unwinds through the loop's own state; the state it shares with the rest of
//! the broker is behind locks that tolerate poisoning (see `Partition::lock`) or is
//! rebuilt by the loop at its start, so a restarted loop starts from what the broker holds.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Display;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use prometheus::IntCounterVec;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

/// Names of the supervised loops (the `task` label of `strata_task_restarts_total`, and
/// what the `panic_task` fault may name).
pub const TASKS: &[&str] = &[
    "cleaner",
    "uploader",
    "scrubber",
    "read_pacer",
    "diskless_merger",
    "diskless_scrubber",
    "housekeeping",
    "group_coordinator",
    "metadata",
    "session",
    "replication_fetchers",
    "replication_fetch",
];

/// Restart delays: `first` after the first failure, doubling per consecutive failure, at
/// most `max`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    /// One second, doubling to one minute: a loop that panics on every start costs one
    /// log line and one restart a minute once the backoff is at its cap.
    fn default() -> Backoff {
        Backoff {
            first: Duration::from_secs(1),
            max: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// The delay after the `failures`-th consecutive failure (1-based).
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(30);
        self.first
            .checked_mul(1u32 << doublings)
            .map_or(self.max, |d| d.min(self.max))
    }
}

/// What a supervised loop returns: `()` for loops that cannot fail, or a `Result` whose
/// error is a failure to restart from.
pub trait Outcome {
    fn into_result(self) -> Result<(), String>;
}

impl Outcome for () {
    fn into_result(self) -> Result<(), String> {
        Ok(())
    }
}

impl<E: Display> Outcome for Result<(), E> {
    fn into_result(self) -> Result<(), String> {
        self.map_err(|e| e.to_string())
    }
}

/// A task waiting to be restarted, as /readyz reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unhealthy {
    /// The task's name, with the instance (e.g. the leader fetched from) if it has one.
    pub task: String,
    /// Consecutive failures so far.
    pub failures: u32,
    pub error: String,
}

impl Display for Unhealthy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "task {} is restarting after {} consecutive failure(s); last: {}",
            self.task, self.failures, self.error
        )
    }
}

pub struct Supervisor {
    backoff: Backoff,
    cancel: CancellationToken,
    restarts: IntCounterVec,
    /// Tasks in backoff, by display name. A std mutex: never held across an `.await`.
    waiting: Mutex<BTreeMap<String, Unhealthy>>,
    /// Fault injection (`panic_task`): starts of a task left to panic, by task name.
    panics_left: Mutex<HashMap<String, u32>>,
}

impl Supervisor {
    pub fn new(
        backoff: Backoff,
        restarts: IntCounterVec,
        cancel: CancellationToken,
    ) -> Arc<Supervisor> {
        Arc::new(Supervisor {
            backoff,
            cancel,
            restarts,
            waiting: Mutex::new(BTreeMap::new()),
            panics_left: Mutex::new(HashMap::new()),
        })
    }

    /// Testing only: the next `starts` starts of task `name` panic.
    pub fn inject_panics(&self, name: &str, starts: u32) {
        lock(&self.panics_left).insert(name.to_string(), starts);
    }

    /// Tasks waiting to be restarted (empty when every loop runs).
    pub fn unhealthy(&self) -> Vec<Unhealthy> {
        lock(&self.waiting).values().cloned().collect()
    }

    /// Runs `run()` as task `name` until it returns `Ok` or shutdown, restarting it after
    /// each panic or error.
    pub fn spawn<F, Fut>(self: &Arc<Self>, name: &'static str, run: F) -> JoinHandle<()>
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: Outcome,
    {
        self.spawn_instance(name, None, run)
    }

    /// [`Supervisor::spawn`] for one of several loops of the same kind (`instance` tells
    /// them apart on /readyz; the metric counts them under `name`).
    pub fn spawn_instance<F, Fut>(
        self: &Arc<Self>,
        name: &'static str,
        instance: Option<String>,
        run: F,
    ) -> JoinHandle<()>
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: Outcome,
    {
        let label = match instance {
            Some(instance) => format!("{name} ({instance})"),
            None => name.to_string(),
        };
        tokio::spawn(self.clone().supervise(name, label, run))
    }

    async fn supervise<F, Fut>(self: Arc<Self>, name: &'static str, label: String, mut run: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: Outcome,
    {
        // Removes the health entry however this future ends, even when aborted.
        let _entry = EntryGuard {
            supervisor: &self,
            label: &label,
        };
        let mut failures = 0u32;
        loop {
            let started = Instant::now();
            let inject = self.take_panic(name);
            let attempt = run();
            let attempt = async move {
                if inject {
                    panic!("fault injection: task {name} panics at its start");
                }
                attempt.await
            };
            let error = match AssertUnwindSafe(attempt).catch_unwind().await {
                Ok(outcome) => match outcome.into_result() {
                    Ok(()) => return,
                    Err(error) => error,
                },
                Err(payload) => format!("panicked: {}", panic_message(payload.as_ref())),
            };
            if self.cancel.is_cancelled() {
                error!(task = %label, %error, "background task failed during shutdown");
                return;
            }
            if started.elapsed() >= self.backoff.max {
                failures = 0;
            }
            failures += 1;
            let delay = self.backoff.delay(failures);
            self.restarts.with_label_values(&[name]).inc();
            error!(task = %label, failures, %error, restart_in_ms = delay.as_millis() as u64,
                "background task failed; restarting it after a backoff");
            lock(&self.waiting).insert(
                label.clone(),
                Unhealthy {
                    task: label.clone(),
                    failures,
                    error,
                },
            );
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            lock(&self.waiting).remove(&label);
            info!(task = %label, failures, "restarting background task");
        }
    }

    fn take_panic(&self, name: &str) -> bool {
        let mut faults = lock(&self.panics_left);
        match faults.get_mut(name) {
            Some(left) if *left > 0 => {
                *left -= 1;
                true
            }
            _ => false,
        }
    }
}

struct EntryGuard<'a> {
    supervisor: &'a Supervisor,
    label: &'a str,
}

impl Drop for EntryGuard<'_> {
    fn drop(&mut self) {
        lock(&self.supervisor.waiting).remove(self.label);
    }
}

/// The supervisor's maps stay consistent whatever panicked elsewhere: every update is a
/// single insert or remove.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-string panic payload".to_string()
    }
}

#[cfg(test)]
mod tests;
