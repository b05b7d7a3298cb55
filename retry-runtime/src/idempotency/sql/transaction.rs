//! `transaction = tx`: the body runs in a transaction of the store's own
//! database, begun after the claim; its result is stored as the record's
//! completion inside that transaction, which then commits once. The body's
//! writes and the stored result commit together or not at all, so a crash
//! at any instant leaves either nothing (a retry runs the body again) or
//! the effects with their result (a retry replays it): never effects
//! without a result.
//!
//! ```text
//! claim ──► BEGIN ──► body(tx) ──► Ok:  UPDATE record SET payload (token-guarded) ──► COMMIT ──► Ok(value)
//!                            └──► Err: ROLLBACK ──► release (or store the error, cache_errors)
//! ```
//!
//! A failed `COMMIT` is an error, never a result that did not commit; the
//! claim is then kept (not released: the commit may have happened) and
//! lapses with its lease if it did not.

use std::{
    future::Future,
    ops::{Deref, DerefMut},
    sync::{Arc, Mutex, PoisonError},
};

use sqlx::Transaction;

use super::{SqlBackend, SqlStore};
use crate::idempotency::{
    Completion, IdempotencyConfig, IdempotencyError, ResultCodec, StoreError,
    codec::{Outcome, frame},
    current_claim,
};

/// The transaction an idempotent body runs in (`#[idempotent(…,
/// transaction = tx)]`, or [`Idempotency::run_in_transaction`]): a
/// connection of the store's database inside a transaction that the engine
/// began after the claim and commits with the stored result. `&mut *tx` is
/// an sqlx executor:
///
/// ```no_run
/// # #[cfg(feature = "postgres")] mod example {
/// use steadfast::idempotency::{BodyTransaction, IdempotencyError};
/// use sqlx::Postgres;
///
/// async fn debit(mut tx: BodyTransaction<Postgres>, cents: i64) -> Result<i64, IdempotencyError> {
///     sqlx::query("UPDATE accounts SET cents = cents - $1 WHERE id = 1")
///         .bind(cents)
///         .execute(&mut *tx)
///         .await
///         .map_err(|error| IdempotencyError::Store(steadfast::idempotency::StoreError::new("debit", error)))?;
///     Ok(cents)
/// }
/// # }
/// ```
///
/// The body cannot commit or roll it back: the engine does, after the body.
/// Dropping it hands it back to the engine.
///
/// [`Idempotency::run_in_transaction`]: crate::idempotency::Idempotency::run_in_transaction
pub struct BodyTransaction<DB: SqlBackend> {
    transaction: Option<Transaction<'static, DB>>,
    slot: Arc<Mutex<Handback<DB>>>,
}

/// Where a body hands its transaction back: `Some` while the engine waits
/// for it, `None` once the engine has gone (a dropped call, or a body that
/// kept it past its end). Both sides decide under the one lock, so a
/// transaction handed back late, from another task, is rolled back rather
/// than left in a slot nobody reads.
type Handback<DB> = Option<Option<Transaction<'static, DB>>>;

impl<DB: SqlBackend> Deref for BodyTransaction<DB> {
    type Target = DB::Connection;

    fn deref(&self) -> &DB::Connection {
        self.transaction
            .as_deref()
            .expect("a body transaction is handed back only when dropped")
    }
}

impl<DB: SqlBackend> DerefMut for BodyTransaction<DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        self.transaction
            .as_deref_mut()
            .expect("a body transaction is handed back only when dropped")
    }
}

impl<DB: SqlBackend> Drop for BodyTransaction<DB> {
    fn drop(&mut self) {
        let Some(transaction) = self.transaction.take() else {
            return;
        };
        match &mut *self.slot.lock().unwrap_or_else(PoisonError::into_inner) {
            Some(waiting) => *waiting = Some(transaction),
            // The engine's side went away first.
            None => roll_back_detached(transaction),
        }
    }
}

/// The engine's side of the slot: a transaction handed back but not
/// finished when the call's future is dropped (a client's cancel) is
/// rolled back at once.
struct Slot<DB: SqlBackend>(Arc<Mutex<Handback<DB>>>);

impl<DB: SqlBackend> Slot<DB> {
    fn new() -> Slot<DB> {
        Slot(Arc::new(Mutex::new(Some(None))))
    }

    /// The transaction handed back, if it was; the slot closes either way.
    fn close(&self) -> Option<Transaction<'static, DB>> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .flatten()
    }
}

impl<DB: SqlBackend> Drop for Slot<DB> {
    fn drop(&mut self) {
        if let Some(transaction) = self.close() {
            roll_back_detached(transaction);
        }
    }
}

/// Runs `work` in a task of its own (counted by `drain`) and waits for it,
/// so that dropping the waiter does not cut it; in place without a runtime.
async fn to_its_end<T: Send + 'static>(work: impl Future<Output = T> + Send + 'static) -> T {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return work.await;
    };
    match crate::idempotency::detach::spawn_tracked(&runtime, work).await {
        Ok(output) => output,
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        // Cancelled: the runtime is shutting down, and this future with it.
        Err(_) => std::future::pending().await,
    }
}

/// Rolls back a transaction whose call went away, in a task of its own.
/// sqlx would only queue the rollback until its connection is used again,
/// and the transaction's row locks would block the retry meanwhile.
fn roll_back_detached<DB: SqlBackend>(transaction: Transaction<'static, DB>) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        crate::idempotency::detach::spawn_tracked(&runtime, rollback(transaction));
    }
}

impl<DB: SqlBackend> std::fmt::Debug for BodyTransaction<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyTransaction")
            .field("database", &DB::NAME)
            .finish_non_exhaustive()
    }
}

/// Runs `body` in a transaction of `store`'s database, under the claim of
/// the idempotent body being polled (it must be called from one), and on
/// `Ok` stores the encoded result in that transaction and commits. Marks the
/// claim stored once committed (the engine has nothing left to store), and
/// fenced from the moment the result is written in the transaction (the
/// commit may happen even if its answer is lost: the claim must not be
/// released after that).
pub(crate) async fn in_transaction<DB, T, E, F, Fut>(
    store: &SqlStore<DB>,
    codec: &dyn ResultCodec<T>,
    config: &IdempotencyConfig,
    into_error: fn(IdempotencyError) -> E,
    body: F,
) -> Result<T, E>
where
    DB: SqlBackend,
    F: FnOnce(BodyTransaction<DB>) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let store_error = |error: StoreError| into_error(IdempotencyError::Store(error));
    let Some(claim) = current_claim() else {
        return Err(store_error(StoreError::msg(
            "a body transaction outside an idempotent body: there is no claim to store the result under",
        )));
    };
    // To its end: sqlx's `begin` cut after `BEGIN` reached the server
    // would hand the pool a connection still inside a transaction.
    let pool = store.pool().clone();
    let begun = to_its_end(async move { pool.begin().await }).await;
    let transaction = begun.map_err(|error| store_error(store.failure("begin", error)))?;
    let slot = Slot::new();
    let result = body(BodyTransaction {
        transaction: Some(transaction),
        slot: Arc::clone(&slot.0),
    })
    .await;
    let Some(transaction) = slot.close() else {
        // Still held somewhere (moved into a task): it never commits, and
        // rolls back when dropped.
        return Err(store_error(StoreError::msg(
            "an idempotent body kept its transaction past its end; nothing was committed",
        )));
    };
    // From here until it commits, a drop of this future rolls it back.
    let mut open = Open(Some(transaction));
    let value = match result {
        Ok(value) => value,
        Err(error) => {
            open.roll_back().await;
            return Err(error);
        }
    };
    let payload = match frame(Outcome::Ok, codec, &value) {
        Ok(framed) => framed,
        Err(message) => {
            open.roll_back().await;
            return Err(into_error(IdempotencyError::Codec { message }));
        }
    };
    let completion = Completion {
        key: claim.record_key(),
        token: claim.token(),
        payload: &payload,
        expires_at: config
            .clock()
            .now_millis()
            .saturating_add(i64::try_from(config.ttl().as_millis()).unwrap_or(i64::MAX / 4)),
    };
    match store.complete_in(open.connection(), completion).await {
        Ok(true) => {}
        Ok(false) => {
            // Taken over after the lease lapsed: the new owner runs it.
            open.roll_back().await;
            return Err(into_error(IdempotencyError::LeaseLost));
        }
        Err(error) => {
            open.roll_back().await;
            return Err(store_error(error));
        }
    }
    // The commit may take effect even if its answer is lost: from here on
    // the claim must not be released (nor renewed: the record is locked).
    claim.mark_fenced();
    if let Err(error) = open.commit().await {
        claim.mark_uncertain();
        return Err(store_error(store.failure("commit", error)));
    }
    claim.mark_stored();
    Ok(value)
}

/// The transaction once the body handed it back: rolled back in a task of
/// its own if dropped before it commits or rolls back.
struct Open<DB: SqlBackend>(Option<Transaction<'static, DB>>);

impl<DB: SqlBackend> Open<DB> {
    fn connection(&mut self) -> &mut DB::Connection {
        self.0
            .as_deref_mut()
            .expect("open until committed or rolled back")
    }

    /// Rolls back, to its end even if this future is dropped meanwhile.
    async fn roll_back(mut self) {
        if let Some(transaction) = self.0.take() {
            to_its_end(rollback(transaction)).await;
        }
    }

    /// Commits, to its end even if this future is dropped meanwhile: sqlx
    /// would otherwise only queue a rollback, and the transaction's row
    /// locks would stay until its connection is used again.
    async fn commit(mut self) -> Result<(), sqlx::Error> {
        let transaction = self.0.take().expect("open until committed or rolled back");
        to_its_end(transaction.commit()).await
    }
}

impl<DB: SqlBackend> Drop for Open<DB> {
    fn drop(&mut self) {
        if let Some(transaction) = self.0.take() {
            roll_back_detached(transaction);
        }
    }
}

/// Rolls back; a failure is only logged: the database rolls back a
/// transaction whose connection is gone, and sqlx one that is dropped.
async fn rollback<DB: SqlBackend>(transaction: Transaction<'static, DB>) {
    if let Err(error) = transaction.rollback().await {
        tracing::debug!(%error, "rolling back an idempotent body's transaction failed");
    }
}
