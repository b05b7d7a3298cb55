//! [`IdempotencyLayer`]: its settings, its builder, and the `Layer` impl.

use std::{borrow::Cow, fmt, sync::Arc, time::Duration};

use axum::http::{
    HeaderName,
    header::{CONTENT_ENCODING, CONTENT_TYPE, LOCATION, VARY},
    request::Parts,
};
use tower_layer::Layer;

use crate::idempotency::{IdempotencyConfig, IdempotencyStore, InProgressPolicy};

use super::{DEFAULT_MAX_BODY, service::Idempotent};

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
/// | the request's future is dropped (client gone, a timeout layer outside) | the handler runs on to its end in a task of its own (which [`drain`](crate::idempotency::drain) waits for) and its response is kept |
///
/// If the store fails while storing the response, the first caller still
/// gets it (the failure is logged and counted); a duplicate after the lease
/// then runs the handler again. Keys are global to the layer's scope unless
/// [`scope_by`](IdempotencyLayer::scope_by) names each request's caller.
///
/// ```
/// use axum::{Router, routing::post};
/// use steadfast::idempotency::{IdempotencyLayer, MemoryStore};
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
pub(super) type CallerOf = Arc<dyn Fn(&Parts) -> String + Send + Sync>;

#[derive(Clone)]
pub(super) struct Settings {
    pub(super) store: Arc<dyn IdempotencyStore>,
    pub(super) scope: Cow<'static, str>,
    pub(super) caller: Option<CallerOf>,
    pub(super) config: IdempotencyConfig,
    pub(super) max_body: usize,
    pub(super) keep_headers: Vec<HeaderName>,
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
    /// use steadfast::idempotency::{IdempotencyLayer, MemoryStore};
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
