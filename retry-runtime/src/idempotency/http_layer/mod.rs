//! [`IdempotencyLayer`]: the IETF Idempotency-Key draft as a tower layer for axum.

mod bounded;
mod stored;

use std::{
    borrow::Cow,
    convert::Infallible,
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    body::{Body, Bytes},
    extract::OriginalUri,
    http::{
        Extensions, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri,
        header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, VARY},
        request::Parts,
    },
    response::IntoResponse,
};
use tower_layer::Layer;
use tower_service::Service;

use self::{
    bounded::Bounded,
    stored::{ResponseCodec, StoredResponse},
};
use super::{
    Fingerprint, IdempotencyConfig, IdempotencyError, IdempotencyStore, InProgressPolicy,
    NotStored, RecordKey, execute_with,
};

/// The request header that carries the client's key.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// The response header that marks a replayed response: `Idempotency-Replayed: true`.
pub const IDEMPOTENCY_REPLAYED: HeaderName = HeaderName::from_static("idempotency-replayed");

/// The default bound of request bodies read and response bodies kept: 1 MiB.
pub const DEFAULT_MAX_BODY: usize = 1 << 20;

/// The IETF Idempotency-Key draft (`draft-ietf-httpapi-idempotency-key-header`)
/// as a tower layer: it makes the `POST`/`PATCH` handlers under it idempotent
/// by their `Idempotency-Key` header.
///
/// A `POST` or `PATCH` must carry an `Idempotency-Key` header (bare, or as the
/// draft's quoted string `"…"`); `PUT` and `DELETE` are handled when they
/// carry one; other methods pass through. For a keyed request the layer:
///
/// 1. reads the body, up to [`max_body`](IdempotencyLayer::max_body) bytes
///    (`413` beyond it, before anything runs);
/// 2. fingerprints method, path, query and body, and claims the key in the
///    store (the same engine and stores as `#[idempotent]`);
/// 3. runs the handler once, returns its response and keeps its status, the
///    allow-listed headers and the body for duplicates, which get them with
///    `Idempotency-Replayed: true`.
///
/// | case | answer |
/// |---|---|
/// | `POST`/`PATCH` without a key, empty key, key over 255 bytes | `400` |
/// | the key's first request still runs | `409` with `Retry-After` |
/// | the key was used with another method, path or body | `422` |
/// | request body over `max_body` | `413` (the handler does not run) |
/// | the store is down when claiming | `503` with `Retry-After: 1` (fails closed: the handler does not run); the body is a generic message with a reference, the store's error is logged with it and the record key (scope and hash) |
/// | the handler answers `5xx`, `401`, `403`, `408`, `425` or `429` | returned, not kept: the claim is released and a retry runs again, so such answers must mean "no effect" (a handler that fenced its claim keeps it: duplicates get `409` until the TTL) |
/// | response body over `max_body` (a stream, even one that never ends) | read only up to `max_body + 1` bytes, then streamed on to the first caller; duplicates get `413` with `Idempotency-Original-Status` |
/// | response body fails after a kept status | `500` with `Idempotency-Original-Status`, to the first caller and every duplicate (never run again) |
/// | the request's future is dropped (client gone, a timeout layer outside) | the handler runs on to its end in a task of its own and its response is kept |
///
/// If the store fails while storing the response, the first caller still
/// gets it (the failure is logged and counted); a duplicate after the lease
/// then runs the handler again. Keys are global to the layer's scope unless
/// [`scope_by`](IdempotencyLayer::scope_by) names each request's caller.
///
/// ```
/// use axum::{Router, routing::post};
/// use retry_runtime::idempotency::{IdempotencyLayer, MemoryStore};
/// use std::time::Duration;
///
/// let app: Router = Router::new()
///     .route("/payments", post(|body: String| async move { format!("paid {body}") }))
///     .layer(
///         IdempotencyLayer::new(MemoryStore::new())
///             .scope("payments-api")
///             .ttl(Duration::from_secs(24 * 3600))
///             .max_body(64 * 1024),
///     );
/// ```
///
/// A keyed request's response is buffered, up to `max_body + 1` bytes, before
/// it is returned (the layer keeps what it returns). A body within the bound
/// is returned and kept whole; a longer one is returned as soon as the bound
/// is passed, as a stream of the part read and the rest, and the too-large
/// marker is stored at once, so that the request's task ends (its claim is
/// no longer renewed) and no more of the body is held than the bound. A
/// stream that never ends (server-sent events) therefore works under the
/// layer, but its duplicates get `413`: put such routes outside it or
/// answer them without a key.
///
/// # Default
/// Scope `"http"`, TTL 24 h, lease 30 s, in-progress duplicates rejected
/// (`409`), bodies up to [`DEFAULT_MAX_BODY`], headers kept: `Content-Type`,
/// `Content-Encoding`, `Location` and `Vary`.
///
/// A compression layer is best put outside this one (it then compresses each
/// replay for its own request's `Accept-Encoding`); inside it, the encoded
/// body is kept with its `Content-Encoding` and `Vary`, and every duplicate
/// gets the first request's encoding.
#[derive(Clone)]
pub struct IdempotencyLayer {
    settings: Arc<Settings>,
}

/// Names the caller of a request: its records' scope within the layer's.
type CallerOf = Arc<dyn Fn(&Parts) -> String + Send + Sync>;

#[derive(Clone)]
struct Settings {
    store: Arc<dyn IdempotencyStore>,
    scope: Cow<'static, str>,
    caller: Option<CallerOf>,
    config: IdempotencyConfig,
    max_body: usize,
    keep_headers: Vec<HeaderName>,
}

impl fmt::Debug for IdempotencyLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let settings = &self.settings;
        f.debug_struct("IdempotencyLayer")
            .field("scope", &settings.scope)
            .field("config", &settings.config)
            .field("max_body", &settings.max_body)
            .field("keep_headers", &settings.keep_headers)
            .finish_non_exhaustive()
    }
}

impl IdempotencyLayer {
    /// A layer that keeps its records in `store` (pass an `Arc` of the store
    /// to share it with handlers, e.g. to fence a transaction).
    pub fn new(store: impl IdempotencyStore + 'static) -> IdempotencyLayer {
        IdempotencyLayer {
            settings: Arc::new(Settings {
                store: Arc::new(store),
                scope: Cow::Borrowed("http"),
                caller: None,
                config: IdempotencyConfig::new(),
                max_body: DEFAULT_MAX_BODY,
                keep_headers: default_kept_headers(),
            }),
        }
    }

    fn with(mut self, change: impl FnOnce(&mut Settings)) -> IdempotencyLayer {
        change(Arc::make_mut(&mut self.settings));
        self
    }

    /// The namespace of the keys (e.g. the service's name): records of
    /// different scopes never meet, even in one store.
    pub fn scope(self, scope: impl Into<Cow<'static, str>>) -> IdempotencyLayer {
        let scope = scope.into();
        self.with(|settings| settings.scope = scope)
    }

    /// Keys are per caller: `caller` names the caller of a request (the
    /// authenticated principal, a tenant or API-key id) and becomes part of
    /// the scope, so that one caller's key never replays another caller's
    /// response. Without it keys are global to the layer's scope, which is
    /// right only when keys are unguessable and every caller may see every
    /// response.
    ///
    /// ```
    /// use retry_runtime::idempotency::{IdempotencyLayer, MemoryStore};
    ///
    /// let layer = IdempotencyLayer::new(MemoryStore::new()).scope_by(|parts| {
    ///     let tenant = parts.headers.get("x-tenant-id");
    ///     tenant.and_then(|value| value.to_str().ok()).unwrap_or("anonymous").to_owned()
    /// });
    /// ```
    pub fn scope_by(
        self,
        caller: impl Fn(&Parts) -> String + Send + Sync + 'static,
    ) -> IdempotencyLayer {
        let caller: CallerOf = Arc::new(caller);
        self.with(|settings| settings.caller = Some(caller))
    }

    /// How long a response is kept and replayed.
    pub fn ttl(self, ttl: Duration) -> IdempotencyLayer {
        self.with(|settings| settings.config = settings.config.with_ttl(ttl))
    }

    /// How long a claim holds without renewal; renewed every third of it
    /// while the handler runs, so it bounds only a crashed replica's claim.
    pub fn lease(self, lease: Duration) -> IdempotencyLayer {
        self.with(|settings| settings.config = settings.config.with_lease(lease))
    }

    /// What a duplicate does while the first request runs: `Reject` (`409`
    /// with `Retry-After`, the default) or `Wait` for its response.
    pub fn in_progress(self, policy: InProgressPolicy) -> IdempotencyLayer {
        self.with(|settings| settings.config = settings.config.with_in_progress(policy))
    }

    /// The largest request body read (larger: `413`, nothing runs) and the
    /// largest response body kept for replays (larger: at most `bytes + 1`
    /// of it are buffered, the rest streams to the first caller, and
    /// duplicates get `413`).
    pub fn max_body(self, bytes: usize) -> IdempotencyLayer {
        self.with(|settings| settings.max_body = bytes)
    }

    /// The response headers kept for replays, replacing the default
    /// (`Content-Type`, `Content-Encoding`, `Location`, `Vary`). Others
    /// (cookies, dates, trace ids) belong to the first response only. Keep
    /// `Content-Encoding` whenever a compression layer runs inside this one:
    /// the kept body is the encoded one.
    pub fn keep_headers(self, names: impl IntoIterator<Item = HeaderName>) -> IdempotencyLayer {
        let names = names.into_iter().collect();
        self.with(|settings| settings.keep_headers = names)
    }
}

/// The headers kept by default: what the stored body means (`Content-Type`,
/// `Content-Encoding`: a compressed body replayed without it would be read as
/// plain), where the result is (`Location`), and which request headers chose
/// the representation (`Vary`: a cache behind the replay must not serve its
/// encoded body to a client that did not ask for it).
fn default_kept_headers() -> Vec<HeaderName> {
    vec![CONTENT_TYPE, CONTENT_ENCODING, LOCATION, VARY]
}

impl<S> Layer<S> for IdempotencyLayer {
    type Service = Idempotent<S>;

    /// # Panics
    /// If the lease is under 1 ms or the TTL does not exceed it
    /// ([`IdempotencyConfig::validate`]): at start-up, not on a request.
    fn layer(&self, inner: S) -> Idempotent<S> {
        if let Err(error) = self.settings.config.validate() {
            panic!("IdempotencyLayer: {error}");
        }
        Idempotent {
            inner,
            settings: Arc::clone(&self.settings),
        }
    }
}

/// The service of [`IdempotencyLayer`] around `S`.
#[derive(Clone)]
pub struct Idempotent<S> {
    inner: S,
    settings: Arc<Settings>,
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

/// Whether a method needs, takes or ignores a key.
fn key_rule(method: &Method) -> KeyRule {
    match *method {
        Method::POST | Method::PATCH => KeyRule::Required,
        Method::PUT | Method::DELETE => KeyRule::Optional,
        _ => KeyRule::Ignored,
    }
}

enum KeyRule {
    Required,
    Optional,
    Ignored,
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

    // Once claimed, the request runs to its end in a task of its own: a
    // client that disconnects (or a timeout layer outside this one) drops
    // this future, and must not cancel a handler that may have taken
    // effect, nor release its claim for a retry to run it again.
    let run = tokio::spawn(run_once(inner, settings, record_key, fingerprint, request));
    match run.await {
        Ok(response) => response,
        Err(failure) => refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            if failure.is_panic() {
                "the handler panicked; its claim was released".to_owned()
            } else {
                "the handler's task was cancelled".to_owned()
            },
        ),
    }
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
    let outcome = execute_with(
        &*settings.store,
        &settings.config,
        record_key,
        Some(fingerprint),
        &ResponseCodec,
        &NotStored,
        Unstored::Refused,
        |_| false,
        || async move {
            let response = call(&mut inner, request).await;
            let (parts, body) = response.into_parts();
            let kept = keeps(parts.status);
            // Read at most `max_body + 1` bytes: enough to know the body
            // cannot be kept. The rest is not read here, so that a body that
            // never ends (a stream) neither grows memory nor keeps this
            // task, and its claim's renewal, alive.
            let body = match bounded::read_bounded(body, settings.max_body).await {
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
        },
    )
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

/// The key of a header value: visible ASCII, bare or the draft's quoted
/// string (`"…"`, whose quotes are not part of the key).
fn parse_key(value: &HeaderValue) -> Result<&str, String> {
    let text = value
        .to_str()
        .map_err(|_| "the Idempotency-Key header must be visible ASCII (e.g. a UUID)".to_owned())?;
    let key = text
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
        .unwrap_or(text);
    if key.is_empty() {
        return Err("the Idempotency-Key header is empty; send a unique value, e.g. a UUID".into());
    }
    Ok(key)
}

async fn read_request_body(
    parts: &Parts,
    body: Body,
    limit: usize,
) -> Result<Bytes, Response<Body>> {
    let too_large = |length: Option<u64>| {
        let length = length.map_or_else(|| "more than".to_owned(), |n| format!("{n} bytes,"));
        refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request body is {length} over the {limit} bytes an idempotent request may \
                 carry; nothing was run"
            ),
        )
    };
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large(declared));
    }
    axum::body::to_bytes(body, limit).await.map_err(|error| {
        let over_limit = error
            .into_inner()
            .downcast_ref::<http_body_util::LengthLimitError>()
            .is_some();
        if over_limit {
            too_large(None)
        } else {
            refuse(
                StatusCode::BAD_REQUEST,
                "the request body could not be read".to_owned(),
            )
        }
    })
}

/// The request's target as the client sent it: under `Router::nest` the
/// router strips the prefix from the URI and keeps the original aside.
fn target<'a>(extensions: &'a Extensions, uri: &'a Uri) -> &'a str {
    let uri = extensions
        .get::<OriginalUri>()
        .map_or(uri, |original| &original.0);
    uri.path_and_query().map_or("/", |target| target.as_str())
}

/// Method, path with query, and body: the same key with another of them is
/// another request (`422`).
fn fingerprint(parts: &Parts, body: &[u8]) -> Fingerprint {
    let target = target(&parts.extensions, &parts.uri);
    let method = parts.method.as_str();
    Fingerprint::of_parts(&[method.as_bytes(), b" ", target.as_bytes(), b"\n", body])
}

fn refuse(status: StatusCode, message: String) -> Response<Body> {
    (status, message).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_may_be_bare_or_quoted_and_must_be_visible_ascii() {
        let key =
            |text: &'static str| parse_key(&HeaderValue::from_static(text)).map(str::to_owned);
        assert_eq!(key("abc-123").unwrap(), "abc-123");
        assert_eq!(key("\"abc-123\"").unwrap(), "abc-123");
        assert!(key("").is_err());
        assert!(key("\"\"").is_err());
        let latin1 = HeaderValue::from_bytes(b"caf\xe9").unwrap();
        assert!(parse_key(&latin1).is_err());
    }

    #[test]
    fn only_writes_need_keys() {
        assert!(matches!(key_rule(&Method::POST), KeyRule::Required));
        assert!(matches!(key_rule(&Method::PATCH), KeyRule::Required));
        assert!(matches!(key_rule(&Method::PUT), KeyRule::Optional));
        assert!(matches!(key_rule(&Method::DELETE), KeyRule::Optional));
        assert!(matches!(key_rule(&Method::GET), KeyRule::Ignored));
        assert!(matches!(key_rule(&Method::HEAD), KeyRule::Ignored));
    }

    #[test]
    fn server_errors_and_try_again_statuses_are_not_kept() {
        for status in [200, 201, 204, 400, 404, 409, 422] {
            assert!(keeps(StatusCode::from_u16(status).unwrap()), "{status}");
        }
        for status in [401, 403, 408, 425, 429, 500, 502, 503, 504] {
            assert!(!keeps(StatusCode::from_u16(status).unwrap()), "{status}");
        }
    }

    #[test]
    fn fingerprints_differ_by_method_target_and_body() {
        let parts = |method: Method, uri: &str| {
            Request::builder()
                .method(method)
                .uri(uri)
                .body(())
                .unwrap()
                .into_parts()
                .0
        };
        let base = fingerprint(&parts(Method::POST, "/pay?x=1"), b"{}");
        assert_eq!(base, fingerprint(&parts(Method::POST, "/pay?x=1"), b"{}"));
        assert_ne!(base, fingerprint(&parts(Method::PATCH, "/pay?x=1"), b"{}"));
        assert_ne!(base, fingerprint(&parts(Method::POST, "/pay?x=2"), b"{}"));
        assert_ne!(base, fingerprint(&parts(Method::POST, "/pay?x=1"), b"{ }"));
        assert_eq!(
            base,
            Fingerprint::of("POST /pay?x=1\n{}"),
            "the parts hash as their concatenation"
        );
    }
}
