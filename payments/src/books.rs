//! The ledger's money: accounts and one row per executed payment, in the
//! same database as the idempotency store.
//!
//! Every execution writes its own row under a fresh `transfer_id`, and
//! nothing in the schema stops two rows for one `payment_id`: a payment run
//! twice shows up as two rows, not only as a wrong sum. What stops it is
//! idempotency, with the money in the store's database: a transfer runs in
//! the engine's transaction (`Idempotency::run_in_transaction`), so that the
//! money and the stored receipt commit together; a deposit runs its own
//! transaction and fences its claim in it ([`SqlStore::fence`]), so that
//! the money and the claim's mark commit together.

use std::{
    collections::BTreeMap,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
};

use sqlx::{
    AssertSqlSafe, ColumnIndex, Database as SqlxDatabase, Decode, Encode, Executor, IntoArguments,
    MySql, Postgres, SqlSafeStr, SqlStr, Sqlite, Type,
};
use steadfast::idempotency::{
    Idempotency, IdempotencyStore, MemoryStore, ProstCodec, SqlBackend, SqlStore, StoreError,
};
use tonic::Status;

use crate::{Backend, FaultPlan, Payment, StallPoint, proto::Receipt};

/// One executed payment, as its row holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferRow {
    /// Unique per execution.
    pub transfer_id: String,
    /// The payment's idempotency key.
    pub payment_id: String,
    /// `deposit` or `transfer`.
    pub kind: String,
    /// The debited account (transfers).
    pub from_account: Option<String>,
    /// The credited account.
    pub to_account: String,
    /// The amount.
    pub cents: i64,
}

/// The ledger as the database holds it at the end of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerSnapshot {
    /// Every account's balance.
    pub balances: BTreeMap<String, i64>,
    /// The sum of the balances, computed by the database (`SUM`).
    pub total: i64,
    /// Rows minus distinct payment ids, computed by the database: payments
    /// that ran more than once.
    pub duplicate_rows: i64,
    /// Every row.
    pub rows: Vec<TransferRow>,
}

/// The tables of one ledger: `{prefix}_accounts`, `{prefix}_transfers` and
/// the store's `{prefix}_idempotency`.
#[derive(Debug, Clone)]
struct Tables {
    accounts: String,
    transfers: String,
    idempotency: String,
}

impl Tables {
    fn new(prefix: &str) -> Result<Tables, StoreError> {
        let valid = !prefix.is_empty()
            && prefix.len() <= 40
            && prefix.starts_with(|c: char| c.is_ascii_lowercase())
            && prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            return Err(StoreError::msg(format!(
                "invalid table prefix {prefix:?}: expected 1 to 40 lowercase letters, digits or underscores, starting with a letter"
            )));
        }
        Ok(Tables {
            accounts: format!("{prefix}_accounts"),
            transfers: format!("{prefix}_transfers"),
            idempotency: format!("{prefix}_idempotency"),
        })
    }
}

/// The SQL of one ledger on one database.
#[derive(Debug)]
pub(crate) struct Statements {
    create_accounts: SqlStr,
    create_transfers: SqlStr,
    clear_accounts: SqlStr,
    clear_transfers: SqlStr,
    clear_idempotency: SqlStr,
    open_account: SqlStr,
    credit: SqlStr,
    insert_row: SqlStr,
    balance: SqlStr,
    balances: SqlStr,
    total: SqlStr,
    duplicate_rows: SqlStr,
    rows: SqlStr,
}

/// A database the ledger runs on: its flavour of SQL, where the three differ.
pub(crate) trait LedgerDatabase: SqlBackend {
    /// The integer type a sum is cast to.
    const SUM_TYPE: &'static str;
    /// Whether placeholders are numbered (`$1, $2, …`) rather than `?`.
    const NUMBERED: bool = false;
}

impl LedgerDatabase for Sqlite {
    const SUM_TYPE: &'static str = "INTEGER";
}

impl LedgerDatabase for Postgres {
    const SUM_TYPE: &'static str = "BIGINT";
    const NUMBERED: bool = true;
}

impl LedgerDatabase for MySql {
    const SUM_TYPE: &'static str = "SIGNED";
}

impl Statements {
    fn new<DB: LedgerDatabase>(tables: &Tables) -> Statements {
        let Tables {
            accounts,
            transfers,
            idempotency,
        } = tables;
        let sum_type = DB::SUM_TYPE;
        let sql = |text: String| {
            let text = if DB::NUMBERED { numbered(&text) } else { text };
            AssertSqlSafe(text).into_sql_str()
        };
        Statements {
            create_accounts: sql(format!(
                "CREATE TABLE IF NOT EXISTS {accounts} (account VARCHAR(64) NOT NULL PRIMARY KEY, cents BIGINT NOT NULL)"
            )),
            // No unique constraint on payment_id, on purpose: a payment
            // executed twice must show up as two rows.
            create_transfers: sql(format!(
                "CREATE TABLE IF NOT EXISTS {transfers} (transfer_id VARCHAR(64) NOT NULL PRIMARY KEY, payment_id VARCHAR(255) NOT NULL, kind VARCHAR(16) NOT NULL, from_account VARCHAR(64), to_account VARCHAR(64) NOT NULL, cents BIGINT NOT NULL)"
            )),
            clear_accounts: sql(format!("DELETE FROM {accounts}")),
            clear_transfers: sql(format!("DELETE FROM {transfers}")),
            clear_idempotency: sql(format!("DELETE FROM {idempotency}")),
            open_account: sql(format!(
                "INSERT INTO {accounts} (account, cents) VALUES (?, ?)"
            )),
            credit: sql(format!(
                "UPDATE {accounts} SET cents = cents + ? WHERE account = ?"
            )),
            insert_row: sql(format!(
                "INSERT INTO {transfers} (transfer_id, payment_id, kind, from_account, to_account, cents) VALUES (?, ?, ?, ?, ?, ?)"
            )),
            balance: sql(format!("SELECT cents FROM {accounts} WHERE account = ?")),
            balances: sql(format!(
                "SELECT account, cents FROM {accounts} ORDER BY account"
            )),
            total: sql(format!(
                "SELECT CAST(COALESCE(SUM(cents), 0) AS {sum_type}) FROM {accounts}"
            )),
            duplicate_rows: sql(format!(
                "SELECT CAST(COUNT(*) - COUNT(DISTINCT payment_id) AS {sum_type}) FROM {transfers}"
            )),
            rows: sql(format!(
                "SELECT transfer_id, payment_id, kind, from_account, to_account, cents FROM {transfers} ORDER BY payment_id, transfer_id"
            )),
        }
    }
}

/// `?` placeholders as PostgreSQL's `$1, $2, …`.
fn numbered(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    let mut next = 1;
    for c in text.chars() {
        if c == '?' {
            out.push('$');
            out.push_str(&next.to_string());
            next += 1;
        } else {
            out.push(c);
        }
    }
    out
}

/// A fresh, unique row id: 128 random bits.
fn new_transfer_id() -> String {
    format!("t{:032x}", fastrand::u128(..))
}

/// A database error as the status a client sees: transient, so the client
/// retries, and the claim is released (errors are not cached) so that the
/// retry runs again; the money's transaction rolled back with it.
fn db_error(error: sqlx::Error) -> Status {
    Status::unavailable(format!("ledger database: {error}"))
}

/// How long a payment's claim holds without renewal: short, so that a
/// payment held by a replica that died is taken over within seconds.
pub(crate) const LEASE: std::time::Duration = std::time::Duration::from_secs(2);
/// The scope of transfers' records.
pub(crate) const TRANSFER_SCOPE: &str = "steadfast_payments.transfer";
/// How long a receipt is kept.
pub(crate) const TTL: std::time::Duration = std::time::Duration::from_secs(3600);

/// The in-process ledger of [`Backend::Memory`].
#[derive(Debug, Default)]
pub(crate) struct MemoryLedger {
    balances: BTreeMap<String, i64>,
    rows: Vec<TransferRow>,
}

/// The shared part of a ledger: its backend, its tables and (in memory)
/// the one ledger and store that every replica of the process shares.
#[derive(Debug, Clone)]
pub(crate) struct Database {
    backend: Backend,
    tables: Tables,
    memory: Option<(Arc<Mutex<MemoryLedger>>, Arc<MemoryStore>)>,
}

/// One replica's handle on the ledger: its own pool (one per replica, as
/// separate processes would have) and the store over the same database.
#[derive(Clone)]
pub(crate) enum Books {
    Memory {
        ledger: Arc<Mutex<MemoryLedger>>,
        store: Arc<MemoryStore>,
    },
    Sql(Arc<dyn SqlLedger>),
}

impl std::fmt::Debug for Books {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Books::Memory { .. } => "memory",
            Books::Sql(books) => books.database(),
        };
        f.debug_tuple("Books").field(&kind).finish()
    }
}

/// A future of the ledger's, boxed so that [`SqlLedger`] is a trait object.
type LedgerFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The ledger on one SQL database, as [`Books::Sql`] uses it.
pub(crate) trait SqlLedger: Send + Sync {
    /// The database's name, for `Debug`.
    fn database(&self) -> &'static str;
    /// The idempotency store over the same database.
    fn store(&self) -> Arc<dyn IdempotencyStore>;
    /// Creates the tables if missing, empties them and opens `accounts`.
    fn reset<'a>(
        &'a self,
        accounts: &'a BTreeMap<String, i64>,
    ) -> LedgerFuture<'a, Result<(), sqlx::Error>>;
    /// Applies `payment` in one transaction, with the fence.
    fn apply<'a>(
        &'a self,
        payment: &'a Payment,
        faults: &'a FaultPlan,
    ) -> LedgerFuture<'a, Result<Receipt, Status>>;
    /// Applies `payment` once per `payment.id` (duplicates get the stored
    /// receipt) in the engine's transaction: the money and the receipt
    /// commit together.
    fn apply_once<'a>(
        &'a self,
        payment: &'a Payment,
        fingerprint: &'a [u8],
        faults: &'a FaultPlan,
    ) -> LedgerFuture<'a, Result<Receipt, Status>>;
    /// The balance of `account`, if it exists.
    fn balance<'a>(&'a self, account: &'a str) -> LedgerFuture<'a, Result<Option<i64>, Status>>;
    /// The ledger as the database holds it now.
    fn snapshot(&self) -> LedgerFuture<'_, Result<LedgerSnapshot, sqlx::Error>>;
    /// Closes the pool, waiting for its connections to end.
    fn close(&self) -> LedgerFuture<'_, ()>;
}

/// One replica's ledger on the database `DB`: the store (and its pool) and
/// the ledger's statements.
struct SqlBooks<DB: SqlBackend> {
    store: SqlStore<DB>,
    sql: Statements,
}

impl<DB> SqlBooks<DB>
where
    DB: SqlBackend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    for<'a> &'a String: Encode<'a, DB> + Type<DB>,
    for<'a> Option<&'a str>: Encode<'a, DB> + Type<DB>,
    for<'a> i64: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    /// Moves the money of `payment` and writes its row in the transaction
    /// `tx` (not committed here); its receipt.
    async fn move_money<C>(
        &self,
        tx: &mut C,
        payment: &Payment,
        faults: &FaultPlan,
    ) -> Result<Receipt, Status>
    where
        C: std::ops::DerefMut<Target = DB::Connection>,
    {
        // In account order, so that two transfers between the same
        // accounts lock their rows in one order (no deadlock).
        for (account, delta) in payment.legs() {
            let updated = sqlx::query(self.sql.credit.clone())
                .bind(delta)
                .bind(account)
                .execute(&mut **tx)
                .await
                .map_err(db_error)?;
            if DB::rows_affected(&updated) != 1 {
                return Err(Status::not_found(format!("no account {account:?}")));
            }
        }
        let transfer_id = new_transfer_id();
        sqlx::query(self.sql.insert_row.clone())
            .bind(&transfer_id)
            .bind(&payment.id)
            .bind(payment.kind())
            .bind(payment.from_account())
            .bind(payment.to_account())
            .bind(payment.cents)
            .execute(&mut **tx)
            .await
            .map_err(db_error)?;
        let balance: i64 = sqlx::query_scalar(self.sql.balance.clone())
            .bind(payment.reported_account())
            .fetch_one(&mut **tx)
            .await
            .map_err(db_error)?;
        faults
            .maybe_stall(&payment.id, StallPoint::BeforeCommit)
            .await;
        Ok(Receipt {
            transfer_id,
            balance,
        })
    }
}

impl<DB> SqlLedger for SqlBooks<DB>
where
    DB: SqlBackend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    for<'a> &'a String: Encode<'a, DB> + Type<DB>,
    for<'a> Option<&'a str>: Encode<'a, DB> + Type<DB>,
    for<'a> i64: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> String: Decode<'a, DB> + Type<DB>,
    for<'a> Option<String>: Decode<'a, DB>,
    usize: ColumnIndex<DB::Row>,
{
    fn database(&self) -> &'static str {
        <DB as SqlxDatabase>::NAME
    }

    fn store(&self) -> Arc<dyn IdempotencyStore> {
        Arc::new(self.store.clone())
    }

    fn reset<'a>(
        &'a self,
        accounts: &'a BTreeMap<String, i64>,
    ) -> LedgerFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(async move {
            let pool = self.store.pool();
            sqlx::query(self.sql.create_accounts.clone())
                .execute(pool)
                .await?;
            sqlx::query(self.sql.create_transfers.clone())
                .execute(pool)
                .await?;
            let mut tx = pool.begin().await?;
            sqlx::query(self.sql.clear_transfers.clone())
                .execute(&mut *tx)
                .await?;
            sqlx::query(self.sql.clear_accounts.clone())
                .execute(&mut *tx)
                .await?;
            sqlx::query(self.sql.clear_idempotency.clone())
                .execute(&mut *tx)
                .await?;
            for (account, cents) in accounts {
                sqlx::query(self.sql.open_account.clone())
                    .bind(account)
                    .bind(cents)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await
        })
    }

    fn apply<'a>(
        &'a self,
        payment: &'a Payment,
        faults: &'a FaultPlan,
    ) -> LedgerFuture<'a, Result<Receipt, Status>> {
        Box::pin(async move {
            let mut tx = self.store.pool().begin().await.map_err(db_error)?;
            let receipt = self.move_money(&mut tx, payment, faults).await?;
            // The claim commits with the money: if this replica dies
            // after the commit, no retry runs the payment again.
            self.store.fence(&mut *tx).await?;
            tx.commit().await.map_err(db_error)?;
            faults
                .maybe_stall(&payment.id, StallPoint::AfterCommit)
                .await;
            Ok(receipt)
        })
    }

    fn apply_once<'a>(
        &'a self,
        payment: &'a Payment,
        fingerprint: &'a [u8],
        faults: &'a FaultPlan,
    ) -> LedgerFuture<'a, Result<Receipt, Status>> {
        Box::pin(async move {
            let store = &self.store;
            let receipt = Idempotency::new(store)
                .key(&payment.id)
                .scope(TRANSFER_SCOPE)
                .fingerprint(fingerprint)
                .lease(LEASE)
                .ttl(TTL)
                .run_in_transaction_with(store, &ProstCodec, |mut tx| async move {
                    let receipt = self.move_money(&mut tx, payment, faults).await?;
                    Ok::<_, Status>(tonic::Response::new(receipt))
                })
                .await?;
            // Between the commit (of the money and the receipt together)
            // and the answer: a replica killed here leaves a receipt that
            // the retry gets.
            faults
                .maybe_stall(&payment.id, StallPoint::AfterCommit)
                .await;
            Ok(receipt.into_inner())
        })
    }

    fn balance<'a>(&'a self, account: &'a str) -> LedgerFuture<'a, Result<Option<i64>, Status>> {
        Box::pin(async move {
            sqlx::query_scalar(self.sql.balance.clone())
                .bind(account)
                .fetch_optional(self.store.pool())
                .await
                .map_err(db_error)
        })
    }

    fn snapshot(&self) -> LedgerFuture<'_, Result<LedgerSnapshot, sqlx::Error>> {
        Box::pin(async move {
            let pool = self.store.pool();
            let balances = sqlx::query_as::<_, (String, i64)>(self.sql.balances.clone())
                .fetch_all(pool)
                .await?
                .into_iter()
                .collect();
            let total: i64 = sqlx::query_scalar(self.sql.total.clone())
                .fetch_one(pool)
                .await?;
            let duplicate_rows: i64 = sqlx::query_scalar(self.sql.duplicate_rows.clone())
                .fetch_one(pool)
                .await?;
            let rows = sqlx::query_as::<_, (String, String, String, Option<String>, String, i64)>(
                self.sql.rows.clone(),
            )
            .fetch_all(pool)
            .await?
            .into_iter()
            .map(
                |(transfer_id, payment_id, kind, from_account, to_account, cents)| TransferRow {
                    transfer_id,
                    payment_id,
                    kind,
                    from_account,
                    to_account,
                    cents,
                },
            )
            .collect();
            Ok(LedgerSnapshot {
                balances,
                total,
                duplicate_rows,
                rows,
            })
        })
    }

    fn close(&self) -> LedgerFuture<'_, ()> {
        Box::pin(self.store.pool().close())
    }
}

impl Database {
    /// The ledger `prefix` on `backend` (nothing is touched yet).
    pub(crate) fn new(backend: Backend, prefix: &str) -> Result<Database, StoreError> {
        let tables = Tables::new(prefix)?;
        let memory = matches!(backend, Backend::Memory).then(|| {
            (
                Arc::new(Mutex::new(MemoryLedger::default())),
                Arc::new(MemoryStore::new()),
            )
        });
        Ok(Database {
            backend,
            tables,
            memory,
        })
    }

    /// Creates the tables if missing, empties them (the ledger, its
    /// transfers and its idempotency records: a run starts from a known
    /// state) and opens `accounts`.
    pub(crate) async fn reset(&self, accounts: &BTreeMap<String, i64>) -> Result<(), StoreError> {
        let books = self.open().await?;
        let failed = |error| StoreError::new("cannot reset the ledger", error);
        match &books {
            Books::Memory { ledger, .. } => {
                let mut ledger = ledger.lock().expect("ledger lock");
                ledger.balances = accounts.clone();
                ledger.rows.clear();
            }
            Books::Sql(books) => books.reset(accounts).await.map_err(failed)?,
        }
        Ok(())
    }

    /// A replica's handle: a new pool on SQL backends, with the store's
    /// table created if missing.
    pub(crate) async fn open(&self) -> Result<Books, StoreError> {
        let books = match &self.backend {
            Backend::Memory => {
                let (ledger, store) = self.memory.clone().expect("memory backend");
                return Ok(Books::Memory { ledger, store });
            }
            Backend::Sqlite(path) => self.open_sql::<Sqlite>(&Backend::sqlite_url(path)).await?,
            Backend::Postgres(url) => self.open_sql::<Postgres>(url).await?,
            Backend::MySql(url) => self.open_sql::<MySql>(url).await?,
        };
        Ok(books)
    }

    /// A replica's handle on `DB` at `url`.
    async fn open_sql<DB>(&self, url: &str) -> Result<Books, StoreError>
    where
        DB: LedgerDatabase,
        SqlBooks<DB>: SqlLedger,
    {
        let store = SqlStore::<DB>::connect(url)
            .await?
            .with_table(&self.tables.idempotency)?;
        store.migrate().await?;
        let sql = Statements::new::<DB>(&self.tables);
        Ok(Books::Sql(Arc::new(SqlBooks { store, sql })))
    }

    /// The ledger as the database holds it now.
    pub(crate) async fn snapshot(&self) -> Result<LedgerSnapshot, StoreError> {
        let books = self.open().await?;
        let result = books.snapshot().await;
        books.close().await;
        result
    }
}

impl Books {
    /// The idempotency store over the same database.
    pub(crate) fn store(&self) -> Arc<dyn IdempotencyStore> {
        match self {
            Books::Memory { store, .. } => store.clone(),
            Books::Sql(books) => books.store(),
        }
    }

    /// Applies `payment` (in one transaction, fenced, on SQL backends) and
    /// returns its receipt.
    pub(crate) async fn apply(
        &self,
        payment: &Payment,
        faults: &FaultPlan,
    ) -> Result<Receipt, Status> {
        match self {
            Books::Memory { ledger, .. } => {
                faults
                    .maybe_stall(&payment.id, StallPoint::BeforeCommit)
                    .await;
                let receipt = Books::apply_in_memory(ledger, payment)?;
                faults
                    .maybe_stall(&payment.id, StallPoint::AfterCommit)
                    .await;
                Ok(receipt)
            }
            Books::Sql(books) => books.apply(payment, faults).await,
        }
    }

    fn apply_in_memory(ledger: &Mutex<MemoryLedger>, payment: &Payment) -> Result<Receipt, Status> {
        let mut ledger = ledger.lock().expect("ledger lock");
        let legs = payment.legs();
        if let Some((account, _)) = legs
            .iter()
            .find(|(account, _)| !ledger.balances.contains_key(*account))
        {
            return Err(Status::not_found(format!("no account {account:?}")));
        }
        for (account, delta) in legs {
            *ledger.balances.get_mut(account).expect("checked above") += delta;
        }
        let transfer_id = new_transfer_id();
        ledger.rows.push(TransferRow {
            transfer_id: transfer_id.clone(),
            payment_id: payment.id.clone(),
            kind: payment.kind().to_owned(),
            from_account: payment.from_account().map(str::to_owned),
            to_account: payment.to_account().to_owned(),
            cents: payment.cents,
        });
        let balance = ledger.balances[payment.reported_account()];
        Ok(Receipt {
            transfer_id,
            balance,
        })
    }

    /// The balance of `account`.
    pub(crate) async fn balance(&self, account: &str) -> Result<i64, Status> {
        let found = match self {
            Books::Memory { ledger, .. } => ledger
                .lock()
                .expect("ledger lock")
                .balances
                .get(account)
                .copied(),
            Books::Sql(books) => books.balance(account).await?,
        };
        found.ok_or_else(|| Status::not_found(format!("no account {account:?}")))
    }

    async fn snapshot(&self) -> Result<LedgerSnapshot, StoreError> {
        let failed = |error| StoreError::new("cannot read the ledger", error);
        match self {
            Books::Memory { ledger, .. } => {
                let ledger = ledger.lock().expect("ledger lock");
                let distinct: std::collections::HashSet<&str> = ledger
                    .rows
                    .iter()
                    .map(|row| row.payment_id.as_str())
                    .collect();
                Ok(LedgerSnapshot {
                    balances: ledger.balances.clone(),
                    total: ledger.balances.values().sum(),
                    duplicate_rows: (ledger.rows.len() - distinct.len()) as i64,
                    rows: ledger.rows.clone(),
                })
            }
            Books::Sql(books) => books.snapshot().await.map_err(failed),
        }
    }

    /// Closes the pool (SQL backends), waiting for its connections to end.
    pub(crate) async fn close(&self) {
        match self {
            Books::Memory { .. } => {}
            Books::Sql(books) => books.close().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_for_postgres() {
        assert_eq!(
            numbered("INSERT INTO t (a, b) VALUES (?, ?)"),
            "INSERT INTO t (a, b) VALUES ($1, $2)"
        );
    }

    #[test]
    fn prefixes_are_checked() {
        assert!(Tables::new("payments").is_ok());
        assert!(Tables::new("chaos_pg_1").is_ok());
        for bad in ["", "1a", "a-b", "A", "a;drop", &"a".repeat(41)] {
            assert!(Tables::new(bad).is_err(), "{bad}");
        }
    }
}
