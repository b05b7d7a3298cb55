//! Run to completion: a future polled in its caller's task that, if the
//! caller drops it before it ends, goes on in a task of its own.
//!
//! A Go handler runs to its end when its client goes away; a Rust future
//! stops at its next `.await` when it is dropped. For an idempotent body
//! that is the worst moment: its effects may have happened and its result
//! is not stored, so the client's retry runs it again. [`Detach`] keeps the
//! cost of the common case (an answer the caller waits for) at one
//! allocation and no task switch, and moves the rest of the work to
//! `tokio::spawn` only when the caller leaves.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use tokio::sync::Notify;
use tracing::Instrument;

type Work<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// `work`, polled here; spawned onto the current runtime if dropped before it
/// is ready, in the span it was made in. Without a runtime, the work is
/// dropped. A panic while it is polled here is not spawned again.
pub(crate) struct Detach<T: Send + 'static> {
    work: Option<Work<T>>,
    span: tracing::Span,
    caller_gone: Option<Arc<AtomicBool>>,
    polling: bool,
}

impl<T: Send + 'static> Detach<T> {
    pub(crate) fn new(work: impl Future<Output = T> + Send + 'static) -> Detach<T> {
        Detach {
            work: Some(Box::pin(work)),
            span: tracing::Span::current(),
            caller_gone: None,
            polling: false,
        }
    }

    /// Also sets `flag` when the caller goes away, so that work which has
    /// not started its body yet can give up instead.
    pub(crate) fn signalling(mut self, flag: Arc<AtomicBool>) -> Detach<T> {
        self.caller_gone = Some(flag);
        self
    }
}

impl<T: Send + 'static> Future for Detach<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<T> {
        let this = &mut *self;
        let Some(work) = this.work.as_mut() else {
            panic!("Detach polled after it completed");
        };
        // Still set if the poll unwinds: the work is then poisoned.
        this.polling = true;
        let output = work.as_mut().poll(context);
        this.polling = false;
        let output = std::task::ready!(output);
        this.work = None;
        Poll::Ready(output)
    }
}

impl<T: Send + 'static> Detach<T> {
    /// The work to go on with once the caller has left: none if it ended,
    /// or if it panicked in its poll (an `async` block that panicked cannot
    /// be resumed).
    fn leftover(&mut self) -> Option<Work<T>> {
        let work = self.work.take()?;
        (!self.polling).then_some(work)
    }
}

impl<T: Send + 'static> Drop for Detach<T> {
    fn drop(&mut self) {
        let Some(work) = self.leftover() else {
            return;
        };
        if let Some(flag) = &self.caller_gone {
            flag.store(true, Ordering::SeqCst);
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                spawn_tracked(&runtime, work.instrument(self.span.clone()));
            }
            Err(_) => tracing::warn!(
                "an idempotent call was dropped outside a tokio runtime; its remaining work is dropped with it"
            ),
        }
    }
}

impl<T: Send + 'static> std::fmt::Debug for Detach<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detach")
            .field("done", &self.work.is_none())
            .finish_non_exhaustive()
    }
}

/// How many pieces of work run in tasks of their own because their caller
/// left, and a wake-up for each that ends.
struct Detached {
    running: AtomicUsize,
    ended: Notify,
}

static DETACHED: Detached = Detached {
    running: AtomicUsize::new(0),
    ended: Notify::const_new(),
};

/// Counts one running piece of detached work until dropped.
struct Running;

impl Running {
    fn start() -> Running {
        DETACHED.running.fetch_add(1, Ordering::SeqCst);
        Running
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        DETACHED.running.fetch_sub(1, Ordering::SeqCst);
        DETACHED.ended.notify_waiters();
    }
}

/// Spawns `work` on `runtime`, counted by [`drain`] until it ends.
pub(crate) fn spawn_tracked<T: Send + 'static>(
    runtime: &tokio::runtime::Handle,
    work: impl Future<Output = T> + Send + 'static,
) -> tokio::task::JoinHandle<T> {
    let running = Running::start();
    runtime.spawn(async move {
        let output = work.await;
        drop(running);
        output
    })
}

/// Waits up to `limit` for the idempotent work that runs on after its
/// caller left (bodies that run to completion, results being stored, calls
/// under `RunToCompletionLayer`); returns how many are still running.
///
/// A runtime that shuts down drops the tasks it still has, and a body cut
/// there is cut as if its process died (its claim lapses with its lease,
/// and a retry may run it again). Call it after the server's graceful
/// shutdown, before `main` returns:
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// // axum::serve(listener, app).with_graceful_shutdown(signal).await?;
/// let left = steadfast::idempotency::drain(std::time::Duration::from_secs(30)).await;
/// assert_eq!(left, 0);
/// # }
/// ```
pub async fn drain(limit: Duration) -> usize {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let ended = DETACHED.ended.notified();
        tokio::pin!(ended);
        ended.as_mut().enable();
        let running = DETACHED.running.load(Ordering::SeqCst);
        if running == 0 || tokio::time::timeout_at(deadline, ended).await.is_err() {
            return DETACHED.running.load(Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::{
        sync::atomic::{AtomicU32, Ordering},
        time::Duration,
    };

    use super::*;

    /// Held by the unit tests that detach work: the count [`drain`] reads
    /// is one per process, and the tests of a binary run in parallel.
    pub(crate) static DETACHING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    #[tokio::test(start_paused = true)]
    async fn work_goes_on_after_its_caller_drops_it() {
        let _serial = DETACHING.lock().await;
        let done = Arc::new(AtomicU32::new(0));
        let gone = Arc::new(AtomicBool::new(false));
        let work = {
            let done = done.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                done.fetch_add(1, Ordering::SeqCst);
            }
        };
        let detach = Detach::new(work).signalling(gone.clone());
        assert!(
            tokio::time::timeout(Duration::from_millis(10), detach)
                .await
                .is_err()
        );
        assert!(
            gone.load(Ordering::SeqCst),
            "the caller's leaving is signalled"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(done.load(Ordering::SeqCst), 1, "the work ran to its end");
    }

    #[tokio::test(start_paused = true)]
    async fn drain_waits_for_detached_work() {
        let _serial = DETACHING.lock().await;
        let done = Arc::new(AtomicU32::new(0));
        let work = {
            let done = done.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                done.fetch_add(1, Ordering::SeqCst);
            }
        };
        assert!(
            tokio::time::timeout(Duration::from_millis(10), Detach::new(work))
                .await
                .is_err()
        );
        assert_eq!(drain(Duration::from_millis(1)).await, 1, "still running");
        assert_eq!(drain(Duration::from_secs(1)).await, 0);
        assert_eq!(done.load(Ordering::SeqCst), 1, "drained means ended");
    }

    #[test]
    fn a_poll_that_panicked_leaves_nothing_to_go_on_with() {
        let mut detach = Detach::new(async { panic!("the body panics") });
        let mut context = Context::from_waker(std::task::Waker::noop());
        let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Pin::new(&mut detach).poll(&mut context)
        }));
        assert!(polled.is_err());
        assert!(
            detach.leftover().is_none(),
            "a panicked future is not resumed"
        );
        let mut pending = Detach::new(std::future::pending::<()>());
        assert!(Pin::new(&mut pending).poll(&mut context).is_pending());
        assert!(pending.leftover().is_some(), "a pending one goes on");
    }

    #[tokio::test]
    async fn work_that_ends_is_not_spawned_again() {
        let done = Arc::new(AtomicU32::new(0));
        let counted = done.clone();
        let gone = Arc::new(AtomicBool::new(false));
        let output = Detach::new(async move { counted.fetch_add(1, Ordering::SeqCst) + 1 })
            .signalling(gone.clone())
            .await;
        assert_eq!(output, 1);
        tokio::task::yield_now().await;
        assert_eq!(done.load(Ordering::SeqCst), 1);
        assert!(!gone.load(Ordering::SeqCst));
    }
}
