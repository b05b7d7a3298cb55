//! `grpc-previous-rpc-attempts` on the requests of a retried call: the
//! attempt number crosses the process boundary, so that a server can tell
//! a retry from a first try (gRPC retry design A6), and count the load its
//! clients' retries add.

use std::task::{Context, Poll};

use http::HeaderValue;

/// The gRPC metadata key that says how many attempts of this call came
/// before this request (absent on a first attempt, as in gRPC A6).
pub const PREVIOUS_ATTEMPTS_HEADER: &str = "grpc-previous-rpc-attempts";

/// A tower layer for a client's channel: each request sent from an attempt
/// of a `#[retry]` call after the first carries
/// `grpc-previous-rpc-attempts: N` ([`previous_attempts`](crate::previous_attempts)).
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use steadfast::PreviousAttemptsLayer;
/// use tower_layer::Layer;
///
/// let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:50051")
///     .connect()
///     .await?;
/// let channel = PreviousAttemptsLayer.layer(channel);
/// // LedgerClient::new(channel): each retry says which attempt it is.
/// # let _ = channel;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct PreviousAttemptsLayer;

impl<S> tower_layer::Layer<S> for PreviousAttemptsLayer {
    type Service = PreviousAttempts<S>;

    fn layer(&self, inner: S) -> PreviousAttempts<S> {
        PreviousAttempts { inner }
    }
}

/// The service of [`PreviousAttemptsLayer`].
#[derive(Debug, Clone)]
pub struct PreviousAttempts<S> {
    inner: S,
}

impl<S> PreviousAttempts<S> {
    /// `inner`, whose requests from retries get the header.
    pub fn new(inner: S) -> PreviousAttempts<S> {
        PreviousAttempts { inner }
    }
}

impl<S, B> tower_service::Service<http::Request<B>> for PreviousAttempts<S>
where
    S: tower_service::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> S::Future {
        if let Some(previous) = crate::previous_attempts().filter(|previous| *previous > 0) {
            request
                .headers_mut()
                .insert(PREVIOUS_ATTEMPTS_HEADER, HeaderValue::from(previous));
        }
        self.inner.call(request)
    }
}
