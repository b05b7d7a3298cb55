//! How an SQL floor's caller reaches its database: a connection held for
//! the run, or the pool, from which each statement acquires one.

use std::ops::{Deref, DerefMut};

use sqlx::{Database, Pool, pool::PoolConnection};

/// A caller's way to an SQL database: a connection held for the run, or
/// the pool, from which each statement acquires a connection.
pub(crate) enum Source<DB: Database> {
    Held(PoolConnection<DB>),
    Pool(Pool<DB>),
}

impl<DB: Database> Source<DB> {
    pub(crate) async fn new(pool: &Pool<DB>, held: bool) -> Source<DB> {
        if held {
            Source::Held(pool.acquire().await.expect("a connection"))
        } else {
            Source::Pool(pool.clone())
        }
    }

    /// A connection for one statement.
    pub(crate) async fn connection(&mut self) -> Lease<'_, DB> {
        match self {
            Source::Held(connection) => Lease::Held(&mut **connection),
            Source::Pool(pool) => Lease::Pooled(pool.acquire().await.expect("a connection")),
        }
    }
}

/// A connection for one statement: given back to the pool when dropped,
/// if it came from there.
pub(crate) enum Lease<'a, DB: Database> {
    Held(&'a mut DB::Connection),
    Pooled(PoolConnection<DB>),
}

impl<DB: Database> Deref for Lease<'_, DB> {
    type Target = DB::Connection;
    fn deref(&self) -> &DB::Connection {
        match self {
            Lease::Held(connection) => connection,
            Lease::Pooled(connection) => connection,
        }
    }
}

impl<DB: Database> DerefMut for Lease<'_, DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        match self {
            Lease::Held(connection) => connection,
            Lease::Pooled(connection) => connection,
        }
    }
}
