//! [`IdempotencyLayer`]: the IETF Idempotency-Key draft as a tower layer for
//! axum, split as tower splits its services: the layer and its settings
//! (`layer.rs`), the service that claims, runs and replays (`service.rs`),
//! the key rules of the draft (`rules.rs`), stored responses and their codec
//! (`stored.rs`), and bounded reading of response bodies (`bounded.rs`).

mod bounded;
mod layer;
mod rules;
mod service;
mod stored;

use axum::http::HeaderName;

pub use layer::IdempotencyLayer;
pub use service::Idempotent;

/// The request header that carries the client's key.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// The response header that marks a replayed response: `Idempotency-Replayed: true`.
pub const IDEMPOTENCY_REPLAYED: HeaderName = HeaderName::from_static("idempotency-replayed");

/// The default bound of request bodies read and response bodies kept: 1 MiB.
pub const DEFAULT_MAX_BODY: usize = 1 << 20;
