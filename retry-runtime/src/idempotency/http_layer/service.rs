//! [`Idempotent`], the service of [`IdempotencyLayer`](super::IdempotencyLayer): claim, run once, keep the response, replay it.

use std::{
    borrow::Cow,
    convert::Infallible,
    fmt,
    future::Future,
    panic::AssertUnwindSafe,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use axum::{
    body::Body,
    http::{Request, Response, StatusCode},
};
use tower_service::Service;

use super::{
    bounded::Bounded,
    stored::{ResponseCodec, StoredResponse},
};
use crate::idempotency::{
    Call, Fingerprint, IdempotencyError, NotStored, RecordKey, Replies, detach::Detach,
    execute_with,
};

use super::{
    IDEMPOTENCY_KEY,
    layer::Settings,
    rules::{KeyRule, fingerprint, key_rule, parse_key, read_request_body, refuse, target},
};

/// The service of [`IdempotencyLayer`](super::IdempotencyLayer) around `S`.
#[derive(Clone)]
pub struct Idempotent<S> {
    pub(super) inner: S,
    pub(super) settings: Arc<Settings>,
}

impl<S> fmt::Debug for Idempotent<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Idempotent")
            .field("scope", &self.settings.scope)
            .finish_non_exhaustive()
    }
}

impl<S> Service<Request<Body>> for Idempotent<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        // The clone is the one made ready by `poll_ready`'s caller's next
        // call; this one was polled ready and serves this request.
        let fresh = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, fresh);
        let settings = Arc::clone(&self.settings);
        Box::pin(async move { Ok(handle(inner, settings, request).await) })
    }
}

async fn handle<S>(mut inner: S, settings: Arc<Settings>, request: Request<Body>) -> Response<Body>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    let rule = key_rule(request.method());
    let header = request.headers().get(IDEMPOTENCY_KEY);
    let key = match (rule, header) {
        (KeyRule::Ignored, _) | (KeyRule::Optional, None) => {
            return call(&mut inner, request).await;
        }
        (KeyRule::Required, None) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!(
                    "{} {} needs an Idempotency-Key header: a unique value per logical request \
                     (e.g. a UUID), sent again unchanged on every retry",
                    request.method(),
                    target(request.extensions(), request.uri())
                ),
            );
        }
        (_, Some(value)) => match parse_key(value) {
            Ok(key) => key.to_owned(),
            Err(message) => return refuse(StatusCode::BAD_REQUEST, message),
        },
    };
    let (parts, body) = request.into_parts();
    let scope = match &settings.caller {
        Some(caller) => Cow::Owned(format!("{}/{}", settings.scope, caller(&parts))),
        None => settings.scope.clone(),
    };
    let record_key = match RecordKey::new(scope, &key) {
        Ok(record_key) => record_key,
        Err(error) => return refuse(StatusCode::BAD_REQUEST, error.to_string()),
    };
    let body = match read_request_body(&parts, body, settings.max_body).await {
        Ok(body) => body,
        Err(refusal) => return refusal,
    };
    let fingerprint = fingerprint(&parts, &body);
    let request = Request::from_parts(parts, Body::from(body));

    // Once claimed, the request runs to its end: it is polled here, and
    // goes on in a task of its own only if this future is dropped (a client
    // that disconnects, a timeout layer outside this one), so that a handler
    // that may have taken effect is neither cancelled nor its claim released
    // for a retry to run it again. Polling it here rather than spawning it
    // saves a task, its scheduling and a wake-up per request.
    //
    // The work is boxed once, where it stays: a future of some kilobytes
    // that a wrapper or a spawn would otherwise copy each time it moves.
    let work = Box::pin(run_once(inner, settings, record_key, fingerprint, request));
    let run = Detach::new(catch_panic(work));
    match run.await {
        Ok(response) => response,
        Err(_panic) => refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the handler panicked; its claim was released".to_owned(),
        ),
    }
}

/// `work`, with a panic in its poll caught and returned as an `Err`, as a
/// task's `JoinHandle` returns one: the request is answered `500` and the
/// connection lives on. The engine gives the claim back as the panic
/// unwinds through it.
fn catch_panic<F>(mut work: F) -> impl Future<Output = std::thread::Result<F::Output>>
where
    F: Future + Unpin,
{
    std::future::poll_fn(move |context| {
        match std::panic::catch_unwind(AssertUnwindSafe(|| Pin::new(&mut work).poll(context))) {
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(panic) => Poll::Ready(Err(panic)),
        }
    })
}

/// Claims the key, runs the handler once (or replays), keeps what can be
/// replayed.
async fn run_once<S>(
    mut inner: S,
    settings: Arc<Settings>,
    record_key: RecordKey,
    fingerprint: Fingerprint,
    request: Request<Body>,
) -> Response<Body>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
{
    // The handler's own response goes to the first caller whole (all its
    // headers); the engine sees only what is kept. It lives outside the
    // engine's result, which is held across awaits and must be `Sync`.
    let mut handler_response = None;
    let handler_slot = &mut handler_response;
    let settings = &*settings;
    let key_for_logs = record_key.clone();
    let key_for_logs = &key_for_logs;
    let call_once = Call::new(settings.config, record_key, Some(fingerprint));
    let replies = Replies::new(&ResponseCodec, &NotStored, Unstored::Refused);
    let outcome = execute_with(&*settings.store, call_once, replies, |_| false, || {
        async move {
            let response = call(&mut inner, request).await;
            let (parts, body) = response.into_parts();
            let kept = keeps(parts.status);
            // Read at most `max_body + 1` bytes: enough to know the body
            // cannot be kept. The rest is not read here, so that a body that
            // never ends (a stream) neither grows memory nor keeps this
            // task, and its claim's renewal, alive.
            let body = match super::bounded::read_bounded(body, settings.max_body).await {
                Ok(Bounded::Whole(body)) => body,
                Ok(Bounded::Over(body)) => {
                    // The first caller gets it as a stream; duplicates get
                    // the marker, stored as soon as the bound is passed.
                    let stored = StoredResponse::too_large(parts.status, settings.max_body);
                    *handler_slot = Some(Response::from_parts(parts, body));
                    return if kept {
                        Ok(stored)
                    } else {
                        Err(Unstored::NotKept)
                    };
                }
                Err(error) => {
                    // The status said whether it took effect; the body is lost.
                    tracing::warn!(
                        key = ?key_for_logs,
                        status = parts.status.as_u16(),
                        %error,
                        "an idempotent HTTP handler's response body failed; it cannot be replayed"
                    );
                    let failed = StoredResponse::unreplayable(
                        parts.status,
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!(
                            "the request with this Idempotency-Key ran once and answered {}, but \
                             its response body failed; it cannot be replayed",
                            parts.status
                        ),
                    );
                    *handler_slot = Some(failed.clone().into_response());
                    return if kept {
                        Ok(failed)
                    } else {
                        Err(Unstored::NotKept)
                    };
                }
            };
            let stored = kept.then(|| {
                StoredResponse::keep(
                    parts.status,
                    &parts.headers,
                    &settings.keep_headers,
                    body.clone(),
                )
            });
            *handler_slot = Some(Response::from_parts(parts, Body::from(body)));
            stored.ok_or(Unstored::NotKept)
        }
    })
    .await;
    // The slot is filled exactly when the handler ran (every return of the
    // body closure fills it); otherwise the result is a replay or a refusal.
    match (outcome, handler_response) {
        (Err(Unstored::Refused(error)), _) => error.into_client_response(Some(key_for_logs)),
        (_, Some(response)) => response,
        (Ok(stored), None) => stored.into_replay(),
        (Err(Unstored::NotKept), None) => {
            unreachable!("the body closure fills the slot before it returns NotKept")
        }
    }
}

/// Why the engine's result is not a stored response.
enum Unstored {
    /// The handler's answer says it did not take effect: returned, not kept.
    NotKept,
    /// The engine did not run the handler.
    Refused(IdempotencyError),
}

/// Whether a handler's status is kept: not a server error, nor one that says
/// "this did not take effect, try again" (`408`, `425`, `429`), nor an
/// authentication failure (`401`, `403`: the caller retries with fresh
/// credentials and the same key).
fn keeps(status: StatusCode) -> bool {
    !(status.is_server_error()
        || matches!(
            status,
            StatusCode::UNAUTHORIZED
                | StatusCode::FORBIDDEN
                | StatusCode::REQUEST_TIMEOUT
                | StatusCode::TOO_EARLY
                | StatusCode::TOO_MANY_REQUESTS
        ))
}

async fn call<S>(inner: &mut S, request: Request<Body>) -> Response<Body>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
{
    match inner.call(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_and_try_again_statuses_are_not_kept() {
        for status in [200, 201, 204, 400, 404, 409, 422] {
            assert!(keeps(StatusCode::from_u16(status).unwrap()), "{status}");
        }
        for status in [401, 403, 408, 425, 429, 500, 502, 503, 504] {
            assert!(!keeps(StatusCode::from_u16(status).unwrap()), "{status}");
        }
    }
}
