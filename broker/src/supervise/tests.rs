//! The supervisor under tokio's paused clock: restarts, backoff and readiness without
//! waiting in real time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use prometheus::{IntCounterVec, Opts};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Backoff, Supervisor};

fn supervisor(cancel: &CancellationToken) -> (Arc<Supervisor>, IntCounterVec) {
    let restarts =
        IntCounterVec::new(Opts::new("task_restarts_total", "test"), &["task"]).expect("metric");
    let backoff = Backoff {
        first: Duration::from_secs(1),
        max: Duration::from_secs(8),
    };
    (
        Supervisor::new(backoff, restarts.clone(), cancel.clone()),
        restarts,
    )
}

#[test]
fn backoff_doubles_up_to_its_cap() {
    let backoff = Backoff {
        first: Duration::from_millis(500),
        max: Duration::from_secs(3),
    };
    let delays: Vec<u128> = (1..=6).map(|n| backoff.delay(n).as_millis()).collect();
    assert_eq!(delays, [500, 1000, 2000, 3000, 3000, 3000]);
    assert_eq!(backoff.delay(u32::MAX), Duration::from_secs(3));
}

#[tokio::test(start_paused = true)]
async fn a_panicking_task_is_restarted_until_it_finishes() {
    let cancel = CancellationToken::new();
    let (supervisor, restarts) = supervisor(&cancel);
    let starts = Arc::new(AtomicU32::new(0));
    let handle = supervisor.spawn("cleaner", {
        let starts = starts.clone();
        move || {
            let n = starts.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                if n <= 3 {
                    panic!("pass {n} fails");
                }
            }
        }
    });
    handle.await.expect("the supervisor itself never panics");
    assert_eq!(starts.load(Ordering::SeqCst), 4);
    assert_eq!(restarts.with_label_values(&["cleaner"]).get(), 3);
    assert!(supervisor.unhealthy().is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_error_return_is_restarted_and_backoff_grows() {
    let cancel = CancellationToken::new();
    let (supervisor, restarts) = supervisor(&cancel);
    let begun = Instant::now();
    let times = Arc::new(std::sync::Mutex::new(Vec::new()));
    let handle = supervisor.spawn("uploader", {
        let times = times.clone();
        move || {
            let mut times = times.lock().expect("test lock");
            times.push(begun.elapsed());
            let n = times.len();
            async move {
                if n <= 6 {
                    Err(format!("attempt {n} failed"))
                } else {
                    Ok(())
                }
            }
        }
    });
    handle.await.expect("supervisor");
    let starts: Vec<u64> = times
        .lock()
        .expect("test lock")
        .iter()
        .map(|d| d.as_secs())
        .collect();
    // Delays 1, 2, 4, 8, then the 8 s cap.
    assert_eq!(starts, [0, 1, 3, 7, 15, 23, 31]);
    assert_eq!(restarts.with_label_values(&["uploader"]).get(), 6);
}

#[tokio::test(start_paused = true)]
async fn readiness_reports_a_task_in_backoff_and_clears_once_it_runs() {
    let cancel = CancellationToken::new();
    let (supervisor, _) = supervisor(&cancel);
    let starts = Arc::new(AtomicU32::new(0));
    let handle = supervisor.spawn("scrubber", {
        let (starts, cancel) = (starts.clone(), cancel.clone());
        move || {
            let n = starts.fetch_add(1, Ordering::SeqCst) + 1;
            let cancel = cancel.clone();
            async move {
                if n == 1 {
                    panic!("boom");
                }
                cancel.cancelled().await;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let unhealthy = supervisor.unhealthy();
    assert_eq!(unhealthy.len(), 1, "{unhealthy:?}");
    assert_eq!(unhealthy[0].task, "scrubber");
    assert_eq!(unhealthy[0].failures, 1);
    assert!(unhealthy[0].error.contains("boom"), "{}", unhealthy[0]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(supervisor.unhealthy().is_empty());
    assert_eq!(starts.load(Ordering::SeqCst), 2);
    cancel.cancel();
    handle.await.expect("supervisor");
}

#[tokio::test(start_paused = true)]
async fn a_long_run_resets_the_backoff() {
    let cancel = CancellationToken::new();
    let (supervisor, _) = supervisor(&cancel);
    let begun = Instant::now();
    let times = Arc::new(std::sync::Mutex::new(Vec::new()));
    let handle = supervisor.spawn("housekeeping", {
        let times = times.clone();
        move || {
            let mut times = times.lock().expect("test lock");
            times.push(begun.elapsed().as_secs());
            let n = times.len();
            async move {
                match n {
                    1 | 2 => Err("quick failure"),
                    // Runs past the cap before failing: the next delay is the first again.
                    3 => {
                        tokio::time::sleep(Duration::from_secs(20)).await;
                        Err("failure after a long run")
                    }
                    _ => Ok(()),
                }
            }
        }
    });
    handle.await.expect("supervisor");
    assert_eq!(*times.lock().expect("test lock"), [0, 1, 3, 24]);
}

#[tokio::test(start_paused = true)]
async fn nothing_restarts_after_shutdown_and_no_task_is_left_reported() {
    let cancel = CancellationToken::new();
    let (supervisor, restarts) = supervisor(&cancel);
    let starts = Arc::new(AtomicU32::new(0));
    let handle = supervisor.spawn("metadata", {
        let starts = starts.clone();
        move || {
            starts.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), _>("always fails") }
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(supervisor.unhealthy().len(), 1);
    cancel.cancel();
    handle.await.expect("supervisor");
    assert_eq!(starts.load(Ordering::SeqCst), 1);
    assert_eq!(restarts.with_label_values(&["metadata"]).get(), 1);
    assert!(supervisor.unhealthy().is_empty());

    // An aborted supervisor (its owner stopped) leaves no entry behind either.
    let cancel = CancellationToken::new();
    let (supervisor, _) = super::tests::supervisor(&cancel);
    let handle =
        supervisor.spawn_instance("replication_fetch", Some("leader 2".into()), || async {
            Err::<(), _>("leader unreachable")
        });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        supervisor.unhealthy()[0].task,
        "replication_fetch (leader 2)"
    );
    handle.abort();
    let _ = handle.await;
    assert!(supervisor.unhealthy().is_empty());
}

#[tokio::test(start_paused = true)]
async fn injected_panics_hit_only_the_named_task_and_only_so_often() {
    let cancel = CancellationToken::new();
    let (supervisor, restarts) = supervisor(&cancel);
    supervisor.inject_panics("cleaner", 2);
    let other = supervisor.spawn("uploader", || async {});
    other.await.expect("supervisor");
    assert_eq!(restarts.with_label_values(&["uploader"]).get(), 0);
    let starts = Arc::new(AtomicU32::new(0));
    let cleaner = supervisor.spawn("cleaner", {
        let starts = starts.clone();
        move || {
            starts.fetch_add(1, Ordering::SeqCst);
            async {}
        }
    });
    cleaner.await.expect("supervisor");
    // The injected panic fires after the factory ran, before the loop's first poll.
    assert_eq!(starts.load(Ordering::SeqCst), 3);
    assert_eq!(restarts.with_label_values(&["cleaner"]).get(), 2);
}
