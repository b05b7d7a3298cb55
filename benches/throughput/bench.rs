//! What each store gives the driver: [`Bench`], the store under test, and
//! [`Floor`], the raw client beside it that runs the floor's statements.

use std::{future::Future, pin::Pin, sync::Arc};

use steadfast::idempotency::{IdempotencyStore, RecordKey};

use crate::mode::Mode;

pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A store under test, for the callers of one row.
pub(crate) trait Bench: Floor + Sized + Send + Sync + 'static {
    /// The store's name in the table.
    const NAME: &'static str;
    /// The modes run when none is given, floors first.
    const MODES: &'static [Mode];
    /// The floors of fresh and of replayed requests.
    const FLOORS: (Mode, Mode);

    /// The store and its client, for `callers` callers.
    fn open(callers: usize) -> impl Future<Output = Self>;
    /// Creates the table (or empties it) and stores the completed keys.
    fn prepare(&self) -> impl Future<Output = ()>;
    /// Closes the pool, if any.
    fn close(self) -> impl Future<Output = ()>;
    /// Cleans up after the run (Redis: deletes its keys).
    fn finish(self) -> impl Future<Output = ()> {
        self.close()
    }
    fn store(&self) -> Arc<dyn IdempotencyStore>;
}

/// The raw client (sqlx, redis-rs) beside a store: the statements of its
/// floor, on the store's keys.
pub(crate) trait Floor {
    /// How a caller of a raw mode reaches the database.
    type Caller: Send + 'static;

    /// A caller's way to the database: a connection of its own (`held`),
    /// or the shared pool (or connection).
    fn caller(&self, held: bool) -> BoxFuture<'_, Self::Caller>;
    /// Whether the completed record of `key` was found.
    fn select<'a>(
        &'a self,
        caller: &'a mut Self::Caller,
        key: &'a RecordKey,
    ) -> BoxFuture<'a, bool>;
    /// Claims and completes the new key `key`.
    fn write<'a>(&'a self, caller: &'a mut Self::Caller, key: &'a RecordKey) -> BoxFuture<'a, ()>;
    /// The store's claim statement on the completed `key` (PostgreSQL).
    fn claim_statement<'a>(
        &'a self,
        _caller: &'a mut Self::Caller,
        _key: &'a RecordKey,
    ) -> BoxFuture<'a, ()> {
        unreachable!("claim-conn is PostgreSQL's")
    }
}
