//! [`SqlStore`]: the one SQL algorithm (see the module docs), run by every
//! [`SqlBackend`].

use std::{fmt, sync::Arc};

use sqlx::{Database, Pool, SqlStr};

use super::{
    Attempt, Bind, CLAIM_ATTEMPTS, DEFAULT_TABLE, PURGE_BATCH, SqlBackend, Statements, Upsert,
    check_table_name, failed, unsettled,
};
use crate::idempotency::{
    Claim, ClaimRequest, Completion, FENCED_LEASE, IdempotencyError, IdempotencyStore, Millis,
    RecordKey, StoreError, StoreFuture, current_claim, fenced_lease, store::spawn_release,
};

/// An idempotency store in the SQL database `DB`: [`SqliteStore`](super::SqliteStore),
/// [`PostgresStore`](super::PostgresStore) or [`MySqlStore`](super::MySqlStore).
/// Clones share the pool and the statements.
pub struct SqlStore<DB: SqlBackend> {
    pool: Pool<DB>,
    table: Arc<str>,
    pub(super) sql: Arc<Statements<DB>>,
}

impl<DB: SqlBackend> SqlStore<DB> {
    /// Connects a pool to the database at `url`. PostgreSQL and MySQL:
    /// sqlx's defaults, except that a connection is not pinged before each
    /// use (`test_before_acquire(false)`), which would double the round
    /// trips of every operation; sqlx still pings each connection when it
    /// goes back to the pool, off the request's path, and drops it if
    /// broken; a connection that breaks while idle fails the next
    /// operation, which fails closed (the client retries). An operation
    /// waits at most [`ACQUIRE_TIMEOUT`](super::ACQUIRE_TIMEOUT) (5 s, not
    /// sqlx's 30 s) for a connection, so that a database that is down or
    /// refuses connections fails a claim within that time; a pool of your
    /// own ([`from_pool`](SqlStore::from_pool)) keeps its settings. SQLite: see
    /// [`SqliteStore`](super::SqliteStore). Does not create the table: call
    /// [`migrate`](SqlStore::migrate).
    pub async fn connect(url: &str) -> Result<SqlStore<DB>, StoreError> {
        Ok(SqlStore::from_pool(DB::connect(url).await?))
    }

    /// A store over an existing pool, using the table
    /// [`steadfast_idempotency`](super::DEFAULT_TABLE). The pool's own
    /// settings are kept (SQLite: give it WAL mode and a busy timeout).
    pub fn from_pool(pool: Pool<DB>) -> SqlStore<DB> {
        SqlStore {
            pool,
            table: Arc::from(DEFAULT_TABLE),
            sql: Arc::new(DB::statements(DEFAULT_TABLE)),
        }
    }

    /// The same store over the table `name` (`[A-Za-z_][A-Za-z0-9_]{0,62}`,
    /// quoted, so case-sensitive on PostgreSQL); an error for any other name.
    pub fn with_table(self, name: &str) -> Result<SqlStore<DB>, StoreError> {
        check_table_name(name)?;
        Ok(SqlStore {
            pool: self.pool,
            table: Arc::from(name),
            sql: Arc::new(DB::statements(name)),
        })
    }

    /// Creates the table and its index on `expires_at` if they are missing.
    /// Idempotent, and safe to run from several replicas at once (how, each
    /// store's docs say).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        DB::migrate(&self.pool, &self.sql, &self.table).await
    }

    /// The connection pool.
    pub fn pool(&self) -> &Pool<DB> {
        &self.pool
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Fences the current idempotent body's claim inside the transaction
    /// (or on the connection) `connection`, which must reach the same
    /// database as this store: call it in the transaction that makes the
    /// body's effects, just before `COMMIT`. The effects and the fence then
    /// commit together or not at all, and once committed, no retry runs the
    /// body again, even if this process dies before the result is stored
    /// (duplicates get `InProgress` until the record's TTL).
    ///
    /// Fails with `LeaseLost` if the claim was taken over (roll the
    /// transaction back), and with a `Store` error outside an idempotent
    /// body or if the statement fails. Calling it twice in one body is fine.
    ///
    /// ```no_run
    /// use steadfast::idempotency::{Idempotency, IdempotencyError, SqliteStore};
    /// # async fn example() -> Result<(), IdempotencyError> {
    /// let store = SqliteStore::connect("sqlite:ledger.db?mode=rwc").await.map_err(IdempotencyError::Store)?;
    /// let receipt: Result<u64, IdempotencyError> = Idempotency::new(&store)
    ///     .key("payment-42")
    ///     .run(|| async {
    ///         let failed = |error| IdempotencyError::Store(steadfast::idempotency::StoreError::new("ledger", error));
    ///         let mut tx = store.pool().begin().await.map_err(failed)?;
    ///         sqlx::query("UPDATE accounts SET cents = cents - 500 WHERE id = 1")
    ///             .execute(&mut *tx)
    ///             .await
    ///             .map_err(failed)?;
    ///         store.fence(&mut *tx).await?;
    ///         tx.commit().await.map_err(failed)?;
    ///         Ok(500)
    ///     })
    ///     .await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn fence(&self, connection: &mut DB::Connection) -> Result<(), IdempotencyError> {
        let claim = current_claim().ok_or_else(|| {
            IdempotencyError::Store(StoreError::msg(
                "fence called outside an idempotent body: there is no claim to fence",
            ))
        })?;
        let key = claim.record_key();
        let fenced_lease = [Bind::Int(fenced_lease(
            claim.clock().now_millis(),
            claim.lease(),
        ))];
        let binds = under_token(&fenced_lease, key, claim.token());
        let owner = &binds[1..];
        let failed = |error| IdempotencyError::Store(failed(label::<DB>("fence"))(error));
        let done = DB::execute(connection, self.sql.fence.clone(), &binds)
            .await
            .map_err(failed)?;
        let fenced = DB::rows_affected(&done) == 1 || {
            // Nothing changed: fenced already (by this body), or not ours.
            let lease = DB::fetch_i64(connection, self.sql.fenced.clone(), owner)
                .await
                .map_err(failed)?;
            lease.is_some_and(|lease| lease >= FENCED_LEASE)
        };
        if fenced {
            claim.mark_fenced();
            Ok(())
        } else {
            Err(IdempotencyError::LeaseLost)
        }
    }

    /// `complete` on `connection` (a transaction of the body's): whether
    /// the token held.
    pub(super) async fn complete_in(
        &self,
        connection: &mut DB::Connection,
        completion: Completion<'_>,
    ) -> Result<bool, StoreError> {
        let binds = completion_binds(&completion);
        let done = DB::execute(connection, self.sql.complete.clone(), &binds)
            .await
            .map_err(|error| self.failure("complete", error))?;
        Ok(DB::rows_affected(&done) == 1)
    }

    /// A failure of `what` on this store's database.
    pub(super) fn failure(&self, what: &str, error: sqlx::Error) -> StoreError {
        failed(label::<DB>(what))(error)
    }

    async fn claim_record(&self, request: &ClaimRequest<'_>) -> Result<Claim, StoreError> {
        let mut connection = self
            .pool
            .acquire()
            .await
            .map_err(failed(label::<DB>("claim")))?;
        for _ in 0..CLAIM_ATTEMPTS {
            match DB::claim(&mut connection, &self.sql.claim, request).await? {
                Attempt::Claimed => return Ok(Claim::Claimed),
                Attempt::Found(found) => {
                    let fingerprint = request.fingerprint.as_ref();
                    if let Some(claim) =
                        found.into_claim(request.token, fingerprint, request.now)?
                    {
                        return Ok(claim);
                    }
                }
                Attempt::Gone => {}
            }
        }
        Err(unsettled())
    }
}

/// Runs `sql` with `binds` on a connection of `pool`: the rows it changed.
async fn execute<DB: SqlBackend>(
    pool: &Pool<DB>,
    what: &str,
    sql: SqlStr,
    binds: &[Bind<'_>],
) -> Result<u64, StoreError> {
    let failed = || failed(label::<DB>(what));
    let mut connection = pool.acquire().await.map_err(failed())?;
    let done = DB::execute(&mut connection, sql, binds)
        .await
        .map_err(failed())?;
    Ok(DB::rows_affected(&done))
}

/// Releases the claim under `token`: whether it held.
async fn release<DB: SqlBackend>(
    pool: &Pool<DB>,
    sql: &Statements<DB>,
    key: &RecordKey,
    token: u64,
) -> Result<bool, StoreError> {
    let binds = under_token(&[], key, token);
    Ok(execute(pool, "release", sql.release.clone(), &binds).await? == 1)
}

/// The binds of the `complete` statement.
fn completion_binds<'a>(completion: &Completion<'a>) -> Vec<Bind<'a>> {
    let leading = [
        Bind::Bytes(Some(completion.payload)),
        Bind::Int(completion.expires_at),
    ];
    under_token(&leading, completion.key, completion.token)
}

/// `leading`, then the binds of a record's key and the token it is under.
fn under_token<'a>(leading: &[Bind<'a>], key: &'a RecordKey, token: u64) -> Vec<Bind<'a>> {
    let mut binds = leading.to_vec();
    binds.extend([
        Bind::Text(key.scope()),
        Bind::Bytes(Some(&key.hash()[..])),
        Bind::Int(token as i64),
    ]);
    binds
}

/// What the store was doing on `DB`, for its errors: `PostgreSQL release`.
fn label<DB: Database>(what: &str) -> String {
    format!("{} {what}", DB::NAME)
}

impl<DB: SqlBackend> IdempotencyStore for SqlStore<DB> {
    fn claim<'a>(&'a self, request: &'a ClaimRequest<'a>) -> StoreFuture<'a, Claim> {
        Box::pin(self.claim_record(request))
    }

    fn complete<'a>(&'a self, completion: Completion<'a>) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let binds = completion_binds(&completion);
            Ok(execute(&self.pool, "complete", self.sql.complete.clone(), &binds).await? == 1)
        })
    }

    fn release<'a>(&'a self, key: &'a RecordKey, token: u64) -> StoreFuture<'a, bool> {
        Box::pin(release(&self.pool, &self.sql, key, token))
    }

    fn renew<'a>(&'a self, key: &'a RecordKey, token: u64, until: Millis) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let leading = [Bind::Int(until); 2];
            let binds = under_token(&leading[..DB::RENEW_LEASE_BINDS], key, token);
            Ok(execute(&self.pool, "renew", self.sql.renew.clone(), &binds).await? == 1)
        })
    }

    /// Deletes up to 1000 expired rows at a time, each batch its own
    /// statement (and transaction), until a batch finds fewer: no lock is
    /// held longer than one batch takes.
    fn purge_expired(&self, now: Millis) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let mut purged = 0;
            loop {
                let batch = execute(
                    &self.pool,
                    "purge",
                    self.sql.purge.clone(),
                    &[Bind::Int(now)],
                )
                .await?;
                purged += batch;
                if batch < PURGE_BATCH {
                    return Ok(purged);
                }
            }
        })
    }

    /// Spawns the release on the current tokio runtime (nothing without
    /// one: the claim then lapses with its lease).
    fn release_detached(&self, key: RecordKey, token: u64) {
        let (pool, sql) = (self.pool.clone(), Arc::clone(&self.sql));
        spawn_release(async move { release(&pool, &sql, &key, token).await });
    }

    /// A clone: the pool is shared.
    fn shared(&self) -> Option<Arc<dyn IdempotencyStore>> {
        Some(Arc::new(self.clone()))
    }

    /// Its statements, shared by its clones.
    fn identity(&self) -> usize {
        Arc::as_ptr(&self.sql).cast::<()>() as usize
    }
}

/// MySQL/MariaDB and SQLite: the stores that read before they claim.
impl<DB: SqlBackend<Claim = Upsert>> SqlStore<DB> {
    /// The read, claim upsert and complete statements as this store runs
    /// them (table name filled in), for the raw-sqlx floor of
    /// `benches/throughput.rs`.
    #[doc(hidden)]
    pub fn statements(&self) -> (SqlStr, SqlStr, SqlStr) {
        let claim = &self.sql.claim;
        (
            claim.find.clone(),
            claim.upsert.clone(),
            self.sql.complete.clone(),
        )
    }
}

impl<DB: SqlBackend> Clone for SqlStore<DB> {
    fn clone(&self) -> Self {
        SqlStore {
            pool: self.pool.clone(),
            table: Arc::clone(&self.table),
            sql: Arc::clone(&self.sql),
        }
    }
}

impl<DB: SqlBackend> fmt::Debug for SqlStore<DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlStore")
            .field("database", &DB::NAME)
            .field("table", &self.table)
            .field("pool", &self.pool)
            .finish()
    }
}
