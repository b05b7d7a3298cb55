//! A tower layer that runs every call of a service to its end, even when
//! the caller's future is dropped: the one line of set-up that lets
//! `#[idempotent]` methods of a tonic service (`&self` handlers, which
//! borrow their service and cannot run on their own) finish their body and
//! store its result when a client cancels, a `grpc-timeout` elapses or a
//! connection closes.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use tower_layer::Layer;
use tower_service::Service;
use tracing::Instrument;

/// Runs each call of the wrapped service in a task of its own, so that
/// dropping the call's future (tonic and hyper drop it when the client
/// goes away) does not cancel the handler. Install it on the server:
///
/// ```
/// use steadfast::idempotency::RunToCompletionLayer;
/// // tonic: `Server::builder().layer(RunToCompletionLayer::new()).add_service(…)`
/// let layer = RunToCompletionLayer::new();
/// # let _ = layer;
/// ```
///
/// This is how a Go server behaves: a handler runs to its end whatever its
/// client does. The cost is one `tokio::spawn` per call. A panic in the
/// handler is resumed in the caller's future. The call runs in the span that
/// was current when the layer was called; task-locals are not carried over.
/// Await [`drain`](super::drain) after the server's graceful shutdown, so
/// that the runtime does not drop calls that are still running. The server's
/// own limits (`concurrency_limit`, `timeout`) bound the calls waited for,
/// not the ones whose callers left: bound the handlers' own work.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunToCompletionLayer {
    _private: (),
}

impl RunToCompletionLayer {
    /// The layer.
    pub const fn new() -> RunToCompletionLayer {
        RunToCompletionLayer { _private: () }
    }
}

impl<S> Layer<S> for RunToCompletionLayer {
    type Service = RunToCompletion<S>;

    fn layer(&self, inner: S) -> RunToCompletion<S> {
        RunToCompletion { inner }
    }
}

/// The service of [`RunToCompletionLayer`].
#[derive(Debug, Clone)]
pub struct RunToCompletion<S> {
    inner: S,
}

impl<S, Request> Service<Request> for RunToCompletion<S>
where
    S: Service<Request>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = RunToCompletionFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let call = self
            .inner
            .call(request)
            .instrument(tracing::Span::current());
        RunToCompletionFuture {
            task: super::detach::spawn_tracked(&tokio::runtime::Handle::current(), call),
        }
    }
}

/// The future of a call that runs in its own task: dropping it leaves the
/// task running.
#[derive(Debug)]
pub struct RunToCompletionFuture<T> {
    task: tokio::task::JoinHandle<T>,
}

impl<T> Future for RunToCompletionFuture<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<T> {
        match std::task::ready!(Pin::new(&mut self.task).poll(context)) {
            Ok(output) => Poll::Ready(output),
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(error) => panic!("a call run to completion was cancelled: {error}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        convert::Infallible,
        sync::{
            Arc,
            atomic::{AtomicU32, Ordering},
        },
        time::Duration,
    };

    use super::*;

    #[derive(Clone)]
    struct Slow(Arc<AtomicU32>);

    impl Service<()> for Slow {
        type Response = u32;
        type Error = Infallible;
        type Future = Pin<Box<dyn Future<Output = Result<u32, Infallible>> + Send>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, (): ()) -> Self::Future {
            let ended = self.0.clone();
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Ok(ended.fetch_add(1, Ordering::SeqCst) + 1)
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_call_runs_to_its_end() {
        let _serial = crate::idempotency::detach::tests::DETACHING.lock().await;
        let ended = Arc::new(AtomicU32::new(0));
        let mut service = RunToCompletionLayer::new().layer(Slow(ended.clone()));
        let call = service.call(());
        assert!(
            tokio::time::timeout(Duration::from_millis(10), call)
                .await
                .is_err()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            ended.load(Ordering::SeqCst),
            1,
            "the handler ended after its caller left"
        );
        assert_eq!(
            service.call(()).await,
            Ok(2),
            "a waited call returns its answer"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn without_the_layer_a_dropped_call_stops() {
        let ended = Arc::new(AtomicU32::new(0));
        let call = Slow(ended.clone()).call(());
        assert!(
            tokio::time::timeout(Duration::from_millis(10), call)
                .await
                .is_err()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(ended.load(Ordering::SeqCst), 0);
    }
}
