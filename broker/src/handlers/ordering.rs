//! How a handler tells its connection that the part of a request that must run in
//! request order is done.
//!
//! A connection handles its requests in order: each one sees the effects of those before
//! it. Most requests are done when their response is ready, but a Produce with acks=all
//! is in the log well before the ISR holds it, and the wait for the ISR changes nothing
//! that a later request could see. Once its appends are done ([`appended`]), the
//! connection may read and start the next request while this one waits for its
//! followers (see `server::connection`), and it still writes the responses in request
//! order. Without that, a producer's requests to one leader take turns at the
//! replication round trip, and replication factor 3 costs most of the throughput.

use std::cell::RefCell;
use std::future::Future;

use tokio::sync::oneshot;

tokio::task_local! {
    static ORDERED_PART: RefCell<Option<oneshot::Sender<()>>>;
}

/// Runs `handling` (one request's handler) so that [`appended`] inside it fires `done`.
/// `done` is dropped, unfired, if the handler finishes without calling it: either way the
/// receiver learns that the request's ordered part is over.
pub async fn scope<F: Future>(done: oneshot::Sender<()>, handling: F) -> F::Output {
    ORDERED_PART.scope(RefCell::new(Some(done)), handling).await
}

/// Called by a handler once everything a later request on the same connection could
/// observe has happened. Does nothing outside [`scope`] or when called twice.
pub fn appended() {
    // Outside a scope there is nobody to tell.
    let _ = ORDERED_PART.try_with(|part| {
        if let Some(done) = part.borrow_mut().take() {
            // The connection may have stopped listening (it closed); nothing to do then.
            let _ = done.send(());
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn appended_fires_before_the_handler_finishes() {
        let (done, mut ordered) = oneshot::channel();
        let (finish, finished) = oneshot::channel::<()>();
        let handling = tokio::spawn(scope(done, async move {
            appended();
            appended(); // a second call changes nothing
            finished.await.ok();
        }));
        assert_eq!((&mut ordered).await, Ok(()));
        assert!(!handling.is_finished());
        finish.send(()).ok();
        handling.await.expect("the handler task completes");
    }

    #[tokio::test]
    async fn a_handler_that_never_calls_appended_ends_its_ordered_part_when_it_finishes() {
        let (done, ordered) = oneshot::channel();
        scope(done, async {}).await;
        assert!(ordered.await.is_err());
        appended(); // outside a scope: nothing happens
    }
}
