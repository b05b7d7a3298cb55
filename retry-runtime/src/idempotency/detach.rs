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
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
};

type Work<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// `work`, polled here; spawned onto the current runtime if dropped before it
/// is ready. Without a runtime (its shutdown), the work is dropped.
pub(crate) struct Detach<T: Send + 'static> {
    work: Option<Work<T>>,
    caller_gone: Option<Arc<AtomicBool>>,
}

impl<T: Send + 'static> Detach<T> {
    pub(crate) fn new(work: impl Future<Output = T> + Send + 'static) -> Detach<T> {
        Detach {
            work: Some(Box::pin(work)),
            caller_gone: None,
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
        let Some(work) = self.work.as_mut() else {
            panic!("Detach polled after it completed");
        };
        let output = std::task::ready!(work.as_mut().poll(context));
        self.work = None;
        Poll::Ready(output)
    }
}

impl<T: Send + 'static> Drop for Detach<T> {
    fn drop(&mut self) {
        let Some(work) = self.work.take() else {
            return;
        };
        if let Some(flag) = &self.caller_gone {
            flag.store(true, Ordering::SeqCst);
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    let _ = work.await;
                });
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

#[cfg(test)]
mod tests {
    use std::{
        sync::atomic::{AtomicU32, Ordering},
        time::Duration,
    };

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn work_goes_on_after_its_caller_drops_it() {
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
