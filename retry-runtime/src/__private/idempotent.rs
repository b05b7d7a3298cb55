//! What `#[idempotent]` expands to.

pub use super::codec_probe::{
    Probe, ProbeCloneSerde, ProbeNone, ProbeSerde, ProbeTonic, Unstorable,
};
pub use super::fingerprint_probe::{
    FingerprintPart, FingerprintProbe, FingerprintValue, ProbeMessage, ProbeNothing,
    ProbeOwnedMessage, ProbeParts, ProbeSerialize, Unfingerprintable, fingerprint_value,
};
use crate::idempotency::{Call, OwnedReplies, Replies, execute_to_completion, execute_with};
pub use crate::idempotency::{
    Fingerprint, IdempotencyConfig, IdempotencyError, IdempotencyStore, InProgressPolicy,
    NotStored, RecordKey, ResultCodec, default_store,
};
use crate::{Classify, CodeSet};

/// `Result<T, E>`, the only output an idempotent handler may have.
#[diagnostic::on_unimplemented(
    message = "#[idempotent] needs an async fn that returns `Result<T, E>`, but this one returns `{Self}`",
    label = "not a `Result`",
    note = "return `Result<T, E>` with `E: From<IdempotencyError>` (`tonic::Status` has it), so that duplicates can be answered"
)]
pub trait HandlerOutput: Sized {
    /// `T`.
    type Ok;
    /// `E`.
    type Err;
    /// The `Result` itself.
    fn into_result(self) -> Result<Self::Ok, Self::Err>;
    /// Back from a `Result`.
    fn from_result(result: Result<Self::Ok, Self::Err>) -> Self;
}

impl<T, E> HandlerOutput for Result<T, E> {
    type Ok = T;
    type Err = E;

    #[inline(always)]
    fn into_result(self) -> Result<T, E> {
        self
    }

    #[inline(always)]
    fn from_result(result: Result<T, E>) -> Self {
        result
    }
}

/// What `key = …` may evaluate to: a string, an `Option` of one, or a
/// header or metadata value.
pub trait KeySource {
    /// The key, or `None` if it is missing (or not text).
    fn key_str(&self) -> Option<&str>;
}

impl KeySource for str {
    fn key_str(&self) -> Option<&str> {
        Some(self)
    }
}

impl KeySource for String {
    fn key_str(&self) -> Option<&str> {
        Some(self)
    }
}

impl KeySource for std::borrow::Cow<'_, str> {
    fn key_str(&self) -> Option<&str> {
        Some(self)
    }
}

impl KeySource for std::sync::Arc<str> {
    fn key_str(&self) -> Option<&str> {
        Some(self)
    }
}

impl<K: KeySource + ?Sized> KeySource for &K {
    fn key_str(&self) -> Option<&str> {
        (**self).key_str()
    }
}

impl<K: KeySource> KeySource for Option<K> {
    fn key_str(&self) -> Option<&str> {
        self.as_ref().and_then(KeySource::key_str)
    }
}

#[cfg(feature = "tonic")]
impl KeySource for tonic::metadata::MetadataValue<tonic::metadata::Ascii> {
    fn key_str(&self) -> Option<&str> {
        self.to_str().ok()
    }
}

#[cfg(feature = "http")]
impl KeySource for http::HeaderValue {
    fn key_str(&self) -> Option<&str> {
        self.to_str().ok()
    }
}

/// [`KeySource`], as `key = …` asks for it.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be an idempotency key",
    label = "not a key",
    note = "give `key = …` a string (`&str`, `String`), an `Option` of one, or a header or gRPC metadata value (`request.metadata().get(\"idempotency-key\")`)"
)]
pub trait KeyArg: KeySource {}

// `do_not_recommend`: the error lists no impls of `KeySource`, which vary
// with the enabled features.
#[diagnostic::do_not_recommend]
impl<K: KeySource + ?Sized> KeyArg for K {}

/// The record key of `key` in `scope`; a missing key is `MissingKey`.
#[inline]
pub fn record_key<K: KeyArg + ?Sized>(
    scope: std::borrow::Cow<'static, str>,
    key: &K,
) -> Result<RecordKey, IdempotencyError> {
    RecordKey::new(scope, key.key_str().ok_or(IdempotencyError::MissingKey)?)
}

/// The default scope of a handler: its path as rustc names it, from the
/// marker fn that `#[idempotent]` puts inside it, without the marker's own
/// name and without the `{{closure}}` segments of async blocks. It holds the
/// module path, the implementing type (and trait) of a method, and the fn
/// name: `shop::Accounts::create`, `<shop::Ledger as shop::Payments>::pay`,
/// `shop::refund`. Worked out once per handler and kept in `cell`.
pub fn handler_scope(
    cell: &'static std::sync::OnceLock<Box<str>>,
    marker: &'static str,
) -> std::borrow::Cow<'static, str> {
    std::borrow::Cow::Borrowed(cell.get_or_init(|| scope_of_marker(marker)))
}

fn scope_of_marker(marker: &str) -> Box<str> {
    /// A default scope fits every store's scope column (MySQL's is 255
    /// characters): a longer path keeps its start and ends in a hash of the
    /// whole, so it stays unique.
    const LONGEST: usize = 200;
    let path = marker.rsplit_once("::").map_or(marker, |(path, _)| path);
    let path = path.replace("::{{closure}}", "");
    if path.len() <= LONGEST {
        return path.into_boxed_str();
    }
    let digest = <sha2::Sha256 as sha2::Digest>::digest(path.as_bytes());
    let hash: String = digest[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let mut cut = LONGEST - hash.len() - 1;
    while !path.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}#{hash}", &path[..cut]).into_boxed_str()
}

/// A scope given by `scope = …`.
#[inline]
pub fn scope_of<S: AsRef<str> + ?Sized>(scope: &S) -> std::borrow::Cow<'static, str> {
    std::borrow::Cow::Owned(scope.as_ref().to_owned())
}

/// What `store = …` may name: a store, an `Arc` of one, a reference to one,
/// or a `static` `LazyLock` of one.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an idempotency store",
    label = "not a store",
    note = "give `store = …` a `MemoryStore`, `SqliteStore`, `PostgresStore`, `MySqlStore`, an `Arc`, a reference or a `static` `LazyLock` of one, or any type that implements `steadfast::idempotency::IdempotencyStore`"
)]
pub trait StoreArg {
    /// The store as a trait object.
    fn as_dyn(&self) -> &dyn IdempotencyStore;
}

#[diagnostic::do_not_recommend]
impl<S: IdempotencyStore> StoreArg for S {
    fn as_dyn(&self) -> &dyn IdempotencyStore {
        self
    }
}

/// The store named by `store = …`.
#[inline]
pub fn store_ref<S: StoreArg + ?Sized>(store: &S) -> &dyn IdempotencyStore {
    store.as_dyn()
}

/// `From<IdempotencyError>`, as `#[idempotent]` asks for it of the handler's error type.
#[diagnostic::on_unimplemented(
    message = "#[idempotent] answers duplicates and failures with an `IdempotencyError`, but `{Self}` does not implement `From<IdempotencyError>`",
    label = "this error type cannot carry an `IdempotencyError`",
    note = "add a variant, as in `Idempotency(#[from] steadfast::idempotency::IdempotencyError)`, or implement `From<IdempotencyError> for {Self}`",
    note = "`tonic::Status` (feature `tonic`) already implements it"
)]
pub trait HandlerError: From<IdempotencyError> {}

#[diagnostic::do_not_recommend]
impl<E: From<IdempotencyError>> HandlerError for E {}

/// [`Classify`], as `cache_errors` asks for it of the handler's error type.
#[diagnostic::on_unimplemented(
    message = "`cache_errors` picks the errors to store by their code, but `{Self}` cannot be classified",
    label = "this error type does not implement `steadfast::Classify`",
    note = "derive it on your error enum: `#[derive(steadfast::Classify)]`, with `#[code(InvalidArgument)]` (or another code) on each variant",
    note = "or implement it: `impl steadfast::Classify for {Self} {{ fn code(&self) -> Option<steadfast::Code> {{ … }} }}`",
    note = "or remove `cache_errors`: errors then release the claim, and a retry runs the handler again"
)]
pub trait CachedError: Classify {}

#[diagnostic::do_not_recommend]
impl<E: Classify + ?Sized> CachedError for E {}

/// Whether `error`'s code is one of `codes` (`cache_errors`).
#[inline]
pub fn cached<E: CachedError>(error: &E, codes: CodeSet) -> bool {
    error.code().is_some_and(|code| codes.contains(code))
}

/// The handler's output type `R`, taken apart as `Result<T, E>`: made by
/// [`handler_output`], where `R: HandlerOutput` is checked, once.
pub struct HandlerShape<R, T, E> {
    into_result: fn(R) -> Result<T, E>,
    from_result: fn(Result<T, E>) -> R,
}

impl<R, T, E> Clone for HandlerShape<R, T, E> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<R, T, E> Copy for HandlerShape<R, T, E> {}

impl<R, T, E> std::fmt::Debug for HandlerShape<R, T, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HandlerShape")
    }
}

/// The shape of `R`, the handler's output type.
#[inline]
pub fn handler_output<R: HandlerOutput>() -> HandlerShape<R, R::Ok, R::Err> {
    HandlerShape {
        into_result: R::into_result,
        from_result: R::from_result,
    }
}

/// The probe that picks the codec of the handler's success type.
#[inline]
pub const fn ok_probe<R, T, E>(_: &HandlerShape<R, T, E>) -> Probe<T> {
    Probe::new()
}

/// The probe that picks the codec of the handler's error type (`cache_errors`).
#[inline]
pub const fn err_probe<R, T, E>(_: &HandlerShape<R, T, E>) -> Probe<E> {
    Probe::new()
}

/// [`ResultCodec`], as `#[idempotent]` asks for it of the handler's result
/// type (and of its error type, with `cache_errors`).
#[diagnostic::on_unimplemented(
    message = "`{T}` cannot be stored as an idempotent result, so its duplicates could not be answered",
    label = "no codec for this type",
    note = "derive `serde::Serialize` and `serde::Deserialize` for `{T}`, or return `tonic::Response<M>` of a prost message",
    note = "errors are stored only for codes named in `cache_errors`; `tonic::Status` and serde types can be"
)]
pub trait Storable<T>: ResultCodec<T> {}

// `do_not_recommend`: the error lists no codecs, which vary with the enabled features.
#[diagnostic::do_not_recommend]
impl<T, C: ResultCodec<T>> Storable<T> for C {}

/// The codec of the handler's success type.
#[inline]
pub fn ok_codec<'c, R, T, E, C: Storable<T>>(
    _: &HandlerShape<R, T, E>,
    codec: &'c C,
) -> &'c dyn ResultCodec<T> {
    codec
}

/// The codec of the handler's error type.
#[inline]
pub fn err_codec<'c, R, T, E, C: Storable<E>>(
    _: &HandlerShape<R, T, E>,
    codec: &'c C,
) -> &'c dyn ResultCodec<E> {
    codec
}

/// `E::from`, where `E: From<IdempotencyError>` is checked, once.
#[inline]
pub fn error_conversion<R, T, E: HandlerError>(
    _: &HandlerShape<R, T, E>,
) -> fn(IdempotencyError) -> E {
    E::from
}

/// The call `#[idempotent]` expands to: the engine, with the handler's own
/// output type. Its bounds hold for any handler: those a handler must meet
/// are checked before, once each, by the sync fns above (a bound of an
/// async fn would be reported again at each use of its future).
#[allow(clippy::too_many_arguments)]
pub async fn idempotent<R, T, E, F, Fut>(
    shape: HandlerShape<R, T, E>,
    store: &dyn IdempotencyStore,
    config: &IdempotencyConfig,
    key: Result<RecordKey, IdempotencyError>,
    fingerprint: Option<Fingerprint>,
    codec: &dyn ResultCodec<T>,
    error_codec: &dyn ResultCodec<E>,
    into_error: fn(IdempotencyError) -> E,
    cache_error: impl FnOnce(&E) -> bool,
    body: F,
) -> R
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = R>,
{
    let key = match key {
        Ok(key) => key,
        Err(error) => return (shape.from_result)(Err(into_error(error))),
    };
    let into_result = shape.into_result;
    let call = Call::new(*config, key, fingerprint);
    let replies = Replies::new(codec, error_codec, into_error);
    let body = || async move { into_result(body().await) };
    (shape.from_result)(execute_with(store, call, replies, cache_error, body).await)
}

/// `Send + 'static`, as a handler that runs to completion asks it of its
/// output: the body may go on in a task of its own.
#[diagnostic::on_unimplemented(
    message = "#[idempotent] runs this handler to its end in a task of its own when its caller goes away, so its result `{Self}` must be `Send`",
    label = "not `Send`",
    note = "a `Box<dyn std::error::Error>` is not `Send`: write `Box<dyn std::error::Error + Send + Sync>`",
    note = "or write `run_to_completion = false`: the body then stops at its next `.await` when its caller's future is dropped, and a retry may run it again"
)]
pub trait RunsAlone {}

#[diagnostic::do_not_recommend]
impl<R: Send + 'static> RunsAlone for R {}

/// Checks, once, that the handler's output can go on in a task of its own.
#[inline]
pub const fn runs_alone<R: RunsAlone, T, E>(_: &HandlerShape<R, T, E>) {}

/// The codec of the handler's success type, owned, for a body that runs to
/// its end on its own ([`idempotent_to_completion`]). Codecs are zero-sized:
/// the box allocates nothing.
#[inline]
pub fn ok_codec_owned<R, T, E, C: Storable<T> + 'static>(
    _: &HandlerShape<R, T, E>,
    codec: C,
) -> Box<dyn ResultCodec<T>> {
    Box::new(codec)
}

/// The codec of the handler's error type, owned.
#[inline]
pub fn err_codec_owned<R, T, E, C: Storable<E> + 'static>(
    _: &HandlerShape<R, T, E>,
    codec: C,
) -> Box<dyn ResultCodec<E>> {
    Box::new(codec)
}

/// What `#[idempotent]` expands to for a handler whose arguments are all
/// owned (a free fn, an axum handler): once its claim is won, the body runs
/// to its end and its result is stored even if the caller's future is
/// dropped. A store that cannot be [`shared`](IdempotencyStore::shared)
/// runs it as [`idempotent`] does, with a one-time warning.
#[allow(clippy::too_many_arguments)]
pub async fn idempotent_to_completion<R, T, E, F, Fut, K>(
    shape: HandlerShape<R, T, E>,
    store: &dyn IdempotencyStore,
    config: &IdempotencyConfig,
    key: Result<RecordKey, IdempotencyError>,
    fingerprint: Option<Fingerprint>,
    codec: Box<dyn ResultCodec<T>>,
    error_codec: Box<dyn ResultCodec<E>>,
    into_error: fn(IdempotencyError) -> E,
    cache_error: K,
    body: F,
) -> R
where
    R: Send + 'static,
    T: Send + 'static,
    E: Send + 'static,
    K: FnOnce(&E) -> bool + Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = R> + Send + 'static,
{
    let key = match key {
        Ok(key) => key,
        Err(error) => return (shape.from_result)(Err(into_error(error))),
    };
    let into_result = shape.into_result;
    let body = move || async move { into_result(body().await) };
    let call = Call::new(*config, key, fingerprint);
    let replies = OwnedReplies::new(codec, error_codec, into_error);
    (shape.from_result)(execute_to_completion(store, call, replies, cache_error, body).await)
}

/// What `store = …` may name with `transaction = …`: an SQL store, an
/// `Arc`, a `Box` or a reference of one.
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
#[diagnostic::on_unimplemented(
    message = "`transaction = …` needs an SQL store, but `{Self}` is not one",
    label = "not an SQL store",
    note = "give `store = …` a `SqliteStore`, `PostgresStore` or `MySqlStore` (or an `Arc`, a `Box` or a reference of one): the body's transaction is begun on its pool, and the result is stored in that transaction"
)]
pub trait TransactionStore {
    /// The store's database.
    type Database: crate::idempotency::SqlBackend;
    /// The store.
    fn sql_store(&self) -> &crate::idempotency::SqlStore<Self::Database>;
}

// `do_not_recommend` (here and below): the error lists no impls.
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
#[diagnostic::do_not_recommend]
impl<DB: crate::idempotency::SqlBackend> TransactionStore for crate::idempotency::SqlStore<DB> {
    type Database = DB;
    fn sql_store(&self) -> &crate::idempotency::SqlStore<DB> {
        self
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
macro_rules! forward_transaction_store {
    ($($wrapper:ty),*) => {$(
        #[diagnostic::do_not_recommend]
        impl<S: TransactionStore + ?Sized> TransactionStore for $wrapper {
            type Database = S::Database;
            fn sql_store(&self) -> &crate::idempotency::SqlStore<S::Database> {
                (**self).sql_store()
            }
        }
    )*};
}

#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
forward_transaction_store!(&S, std::sync::Arc<S>, Box<S>);

/// The store of `transaction = …`, owned (a clone shares its pool), so that
/// a body that runs to completion can hold it.
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
#[inline]
pub fn transaction_store<S: TransactionStore + ?Sized>(
    store: &S,
) -> crate::idempotency::SqlStore<S::Database> {
    store.sql_store().clone()
}

/// The body of a handler with `transaction = …`: runs it in a transaction
/// of `store`'s database and stores its result there (see
/// `idempotency::sql::transaction`).
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
pub async fn in_transaction<R, T, E, DB, C, F, Fut>(
    shape: HandlerShape<R, T, E>,
    store: &crate::idempotency::SqlStore<DB>,
    codec: &C,
    config: &IdempotencyConfig,
    into_error: fn(IdempotencyError) -> E,
    body: F,
) -> R
where
    DB: crate::idempotency::SqlBackend,
    C: ResultCodec<T>,
    F: FnOnce(crate::idempotency::BodyTransaction<DB>) -> Fut,
    Fut: std::future::Future<Output = R>,
{
    let into_result = shape.into_result;
    let body = move |transaction| async move { into_result(body(transaction).await) };
    (shape.from_result)(
        crate::idempotency::in_transaction(store, codec, config, into_error, body).await,
    )
}

#[cfg(test)]
mod tests {
    use super::scope_of_marker;

    #[test]
    fn a_scope_is_the_handler_path_without_closures_or_the_marker() {
        assert_eq!(
            &*scope_of_marker("shop::Accounts::create::__steadfast_scope"),
            "shop::Accounts::create"
        );
        assert_eq!(
            &*scope_of_marker(
                "<shop::Ledger as shop::Payments>::pay::{{closure}}::{{closure}}::__steadfast_scope"
            ),
            "<shop::Ledger as shop::Payments>::pay"
        );
        assert_eq!(
            &*scope_of_marker("shop::refund::__steadfast_scope"),
            "shop::refund"
        );
    }

    #[test]
    fn a_long_scope_is_cut_and_hashed_to_fit_every_store() {
        let long = |name: &str| {
            let modules = "very_deep_module::".repeat(20);
            format!("shop::{modules}{name}::__steadfast_scope")
        };
        let (first, second) = (
            scope_of_marker(&long("pay")),
            scope_of_marker(&long("refund")),
        );
        assert_eq!(first.len(), 200);
        assert_ne!(first, second, "still unique");
        assert_eq!(scope_of_marker(&long("pay")), first, "and stable");
    }
}
