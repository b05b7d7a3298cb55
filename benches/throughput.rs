//! Throughput of idempotent calls, `N` concurrent callers at a time, over
//! every store (`--store postgres|mysql|sqlite|redis`, default
//! `postgres`), beside its floor: the minimal statements a hand-written
//! idempotency would run, through the raw client (issue 14).
//!
//! Each caller loops for `--seconds` (default 5) in one mode; a row of the
//! table is one mode at one number of callers. The modes run interleaved:
//! for each round (`--rounds`, default 1), for each number of callers
//! (`--callers`, default `1,16,64`), every mode in turn, so that a mode and
//! its floor are measured minutes apart at most and their ratio holds on a
//! shared machine; with several rounds a row is their median. Each row is
//! measured on a pool (SQL) of its own with as many connections as
//! callers (`--spare K`: `K` more), opened before and closed after it,
//! like `pgbench -c N`. The
//! table, printed at the end in Markdown, gives each row's ratio to its
//! floor: the fresh floor for `fresh` and the `write` modes, the replay
//! floor for the others.
//!
//! The store, `Idempotency::new(&store).key(k).run(…)` with a trivial body:
//!
//! - `replay`: `k` drawn at random from 10 000 completed keys (`k-0` …
//!   `k-9999`, scope `""`): one claim per call, answered `Completed`.
//! - `hot`: every caller replays the same completed key `k-0`.
//! - `fresh`: a new key per call: claim, body, complete.
//! - `claim`: the store's `claim` alone on a random completed key (no
//!   engine: no decoding, no in-process waiters).
//!
//! The raw client (sqlx, redis-rs), on the same keys, through the pool
//! (one connection acquired per statement and given back, where sqlx pings
//! it, as the store does) or, with `-conn`, over one connection of the pool
//! per caller held for the run (no acquire, no ping):
//!
//! - `select`, `select-conn`: the primary-key `SELECT` of a random
//!   completed record (the statement a replay runs on MariaDB and SQLite;
//!   Redis: a `GET`). The replay floor: `select-conn`; on PostgreSQL
//!   `pgbench-select`; on Redis `select`.
//! - `write`, `write-conn`: a fresh request's two statements for a new key:
//!   the store's claim (PostgreSQL: its one statement; MariaDB and SQLite:
//!   its upsert) and its complete `UPDATE` (Redis: `SET key NX PX` then
//!   `SET key value XX PX`). The fresh floor: `write-conn`; on PostgreSQL
//!   `pgbench-write`; on Redis `write`.
//! - `read-write-conn`: the primary-key `SELECT` first, then the two: the
//!   statements of a fresh request on MariaDB and SQLite, whose claim
//!   reads before it writes.
//! - `claim-conn` (PostgreSQL): the store's claim statement on a random
//!   completed key.
//!
//! On Redis there is no pool: the store and `select`/`write` share one
//! multiplexed connection (a `ConnectionManager`, as `RedisStore::connect`
//! makes); `-conn` gives each caller a multiplexed connection of its own.
//! The raw commands run on keys of their own (`steadfast_throughput_floor:…`,
//! strings), the store's on hashes under the prefix `steadfast_throughput`.
//!
//! PostgreSQL also runs `pgbench` itself, if it is on the `PATH`
//! (`pgbench -n -M prepared -j 2 -T <seconds> -c N -f <script> <URL>`, with
//! `-j 1` for one client), on the scripts it prints at start:
//!
//! - `pgbench-select`: the primary-key `SELECT` of a random completed record
//!   (`pgbench` computes the key's hash, SHA-256 of the scope's length, the
//!   scope and the key, with `sha256`).
//! - `pgbench-write`: the store's own claim and complete statements, its
//!   parameters filled in by `pgbench` for a new key (a hash of the client
//!   and a random number).
//!
//! The SQL stores' table is `steadfast_throughput`, emptied and refilled at
//! start (SQLite: a file in the temporary directory, with the options of
//! `SqliteStore::connect`); Redis keys under both prefixes are deleted at
//! start and at the end.
//!
//! Modes given on the command line replace the store's default set: all of
//! the above that apply to it. Run with
//!
//! ```sh
//! export STEADFAST_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
//!   STEADFAST_TEST_MYSQL_URL=mysql://root@127.0.0.1:3306/test \
//!   STEADFAST_TEST_REDIS_URL=redis://127.0.0.1:6379
//! cargo bench --features postgres,mysql,sqlite,redis --bench throughput -- --store postgres
//! cargo bench --features postgres,mysql,sqlite,redis --bench throughput -- --store mysql fresh write-conn --callers 16
//! ```

use std::{
    collections::HashMap,
    future::Future,
    ops::{Deref, DerefMut},
    pin::Pin,
    str::FromStr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use redis::{AsyncCommands, aio::ConnectionManager};
use sqlx::{
    Database, MySql, Pool, Postgres, Row, SqlStr, Sqlite,
    mysql::MySqlPoolOptions,
    pool::PoolConnection,
    postgres::PgPoolOptions,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};
use steadfast::idempotency::{
    Claim, ClaimRequest, Idempotency, IdempotencyError, IdempotencyStore, MySqlStore,
    PostgresStore, RecordKey, RedisStore, SqliteStore, now_millis,
};

/// The table the SQL stores, their floors and `pgbench` share.
const TABLE: &str = "steadfast_throughput";
/// The Redis store's key prefix.
const PREFIX: &str = "steadfast_throughput";
/// The prefix of the raw Redis commands' keys.
const FLOOR_PREFIX: &str = "steadfast_throughput_floor";
/// The primary-key read of PostgreSQL's `select` (`pgbench` runs the same).
const PG_SELECT: &str = r#"SELECT token, fingerprint, lease_until, expires_at, payload FROM "steadfast_throughput" WHERE scope = $1 AND key_hash = $2"#;
/// How many completed keys `replay` draws from.
const KEYS: u64 = 10_000;
/// What the raw writes store: the body's answer, as the store encodes it.
const PAYLOAD: &[u8] = b"42";
/// A claim's lease and a record's lifetime, in milliseconds.
const LEASE: i64 = 30_000;
const TTL: i64 = 86_400_000;

/// What each caller does (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Mode {
    Replay,
    Hot,
    Fresh,
    Claim,
    ClaimConn,
    Select,
    SelectConn,
    Write,
    WriteConn,
    ReadWriteConn,
    PgbenchSelect,
    PgbenchWrite,
}

impl Mode {
    const NAMES: [(&'static str, Mode); 12] = [
        ("replay", Mode::Replay),
        ("hot", Mode::Hot),
        ("fresh", Mode::Fresh),
        ("claim", Mode::Claim),
        ("claim-conn", Mode::ClaimConn),
        ("select", Mode::Select),
        ("select-conn", Mode::SelectConn),
        ("write", Mode::Write),
        ("write-conn", Mode::WriteConn),
        ("read-write-conn", Mode::ReadWriteConn),
        ("pgbench-select", Mode::PgbenchSelect),
        ("pgbench-write", Mode::PgbenchWrite),
    ];

    fn parse(name: &str) -> Option<Mode> {
        Mode::NAMES
            .iter()
            .find(|(known, _)| *known == name)
            .map(|&(_, mode)| mode)
    }

    fn name(self) -> &'static str {
        Mode::NAMES
            .iter()
            .find(|(_, mode)| *mode == self)
            .map_or("?", |(name, _)| name)
    }

    /// Whether the mode writes new keys (against the fresh floor) rather
    /// than reading completed ones (against the replay floor).
    fn writes(self) -> bool {
        matches!(
            self,
            Mode::Fresh | Mode::Write | Mode::WriteConn | Mode::ReadWriteConn | Mode::PgbenchWrite
        )
    }

    /// Whether a caller holds a connection for the run.
    fn holds(self) -> bool {
        matches!(
            self,
            Mode::ClaimConn | Mode::SelectConn | Mode::WriteConn | Mode::ReadWriteConn
        )
    }

    /// Whether the raw client runs the mode (not the store, not `pgbench`).
    fn raw(self) -> bool {
        matches!(
            self,
            Mode::ClaimConn
                | Mode::Select
                | Mode::SelectConn
                | Mode::Write
                | Mode::WriteConn
                | Mode::ReadWriteConn
        )
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A store under test and its raw client, for the callers of one row.
trait Bench: Sized + Send + Sync + 'static {
    /// How a caller of a raw mode reaches the database.
    type Caller: Send + 'static;
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

/// A caller's way to an SQL database: a connection held for the run, or
/// the pool, from which each statement acquires a connection.
enum Source<DB: Database> {
    Held(PoolConnection<DB>),
    Pool(Pool<DB>),
}

impl<DB: Database> Source<DB> {
    async fn new(pool: &Pool<DB>, held: bool) -> Source<DB> {
        if held {
            Source::Held(pool.acquire().await.expect("a connection"))
        } else {
            Source::Pool(pool.clone())
        }
    }

    /// A connection for one statement.
    async fn connection(&mut self) -> Lease<'_, DB> {
        match self {
            Source::Held(connection) => Lease::Held(&mut **connection),
            Source::Pool(pool) => Lease::Pooled(pool.acquire().await.expect("a connection")),
        }
    }
}

/// A connection for one statement: given back to the pool when dropped,
/// if it came from there.
enum Lease<'a, DB: Database> {
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

/// The claim's binds around a new key: the request's times.
struct Times {
    now: i64,
    lease_until: i64,
    expires_at: i64,
}

fn times() -> Times {
    let now = now_millis();
    Times {
        now,
        lease_until: now + LEASE,
        expires_at: now + TTL,
    }
}

/// One idempotent call with key `key`: the body runs only for a new key.
async fn call(store: &dyn IdempotencyStore, key: &str) -> Result<u64, IdempotencyError> {
    Idempotency::new(store)
        .key(key)
        .run(|| async { Ok::<u64, IdempotencyError>(42) })
        .await
}

/// Stores the completed keys `k-0` … `k-9999`.
async fn fill(store: &dyn IdempotencyStore) {
    for k in 0..KEYS {
        call(store, &format!("k-{k}")).await.expect("fill");
    }
}

struct PostgresBench {
    store: PostgresStore,
}

impl Bench for PostgresBench {
    type Caller = Source<Postgres>;
    const NAME: &'static str = "PostgreSQL";
    const MODES: &'static [Mode] = &[
        Mode::PgbenchWrite,
        Mode::WriteConn,
        Mode::Write,
        Mode::Fresh,
        Mode::PgbenchSelect,
        Mode::SelectConn,
        Mode::Select,
        Mode::ClaimConn,
        Mode::Claim,
        Mode::Replay,
        Mode::Hot,
    ];
    const FLOORS: (Mode, Mode) = (Mode::PgbenchWrite, Mode::PgbenchSelect);

    async fn open(callers: usize) -> PostgresBench {
        let pool = PgPoolOptions::new()
            .max_connections(callers as u32)
            .min_connections(callers as u32)
            .test_before_acquire(false)
            .connect(&url("POSTGRES", "postgres://postgres@127.0.0.1:5432/test"))
            .await
            .expect("PostgreSQL");
        let store = PostgresStore::from_pool(pool)
            .with_table(TABLE)
            .expect("a table name");
        PostgresBench { store }
    }

    async fn prepare(&self) {
        self.store.migrate().await.expect("migrate");
        let sql = format!(r#"TRUNCATE "{TABLE}""#);
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(self.store.pool())
            .await
            .expect("truncate");
        fill(&self.store).await;
        let sql = format!(r#"VACUUM ANALYZE "{TABLE}""#);
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(self.store.pool())
            .await
            .expect("vacuum");
    }

    async fn close(self) {
        self.store.pool().close().await;
    }

    fn store(&self) -> Arc<dyn IdempotencyStore> {
        Arc::new(self.store.clone())
    }

    fn caller(&self, held: bool) -> BoxFuture<'_, Source<Postgres>> {
        Box::pin(Source::new(self.store.pool(), held))
    }

    fn select<'a>(
        &'a self,
        caller: &'a mut Source<Postgres>,
        key: &'a RecordKey,
    ) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let mut connection = caller.connection().await;
            let row = sqlx::query(PG_SELECT)
                .bind(key.scope())
                .bind(&key.hash()[..])
                .fetch_optional(&mut *connection)
                .await
                .expect("a select");
            row.is_some()
        })
    }

    fn write<'a>(
        &'a self,
        caller: &'a mut Source<Postgres>,
        key: &'a RecordKey,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let (claim, complete) = self.store.statements();
            let token = fastrand::i64(..);
            let claimed = {
                let mut connection = caller.connection().await;
                pg_claim(&mut connection, claim, key, token).await
            };
            assert!(claimed, "a new key is claimed");
            let mut connection = caller.connection().await;
            let done = sqlx::query(complete)
                .bind(PAYLOAD)
                .bind(times().expires_at)
                .bind(key.scope())
                .bind(&key.hash()[..])
                .bind(token)
                .execute(&mut *connection)
                .await
                .expect("a complete");
            assert_eq!(done.rows_affected(), 1);
        })
    }

    fn claim_statement<'a>(
        &'a self,
        caller: &'a mut Source<Postgres>,
        key: &'a RecordKey,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let (claim, _) = self.store.statements();
            let mut connection = caller.connection().await;
            let claimed = pg_claim(&mut connection, claim, key, fastrand::i64(..)).await;
            assert!(!claimed, "a completed key is not claimed");
        })
    }
}

/// Runs PostgreSQL's claim statement `claim` for `key` under `token`:
/// whether it claimed.
async fn pg_claim(
    connection: &mut sqlx::PgConnection,
    claim: SqlStr,
    key: &RecordKey,
    token: i64,
) -> bool {
    let times = times();
    let row = sqlx::query(claim)
        .bind(key.scope())
        .bind(&key.hash()[..])
        .bind(token)
        .bind(None::<&[u8]>)
        .bind(times.lease_until)
        .bind(times.expires_at)
        .bind(times.now)
        .fetch_optional(connection)
        .await
        .expect("a claim")
        .expect("a row");
    row.try_get(0).expect("claimed")
}

impl PostgresBench {
    /// The `pgbench` scripts of `pgbench-select` and `pgbench-write`: the
    /// store's statements, their parameters written as `pgbench` variables
    /// and SQL.
    fn pgbench_scripts(&self) -> (String, String) {
        let select = format!(
            "\\set k random(0, {})\n{};\n",
            KEYS - 1,
            PG_SELECT.replace("$1", "''").replace(
                "$2",
                "sha256('\\x0000000000000000'::bytea || convert_to('k-' || :k, 'UTF8'))"
            )
        );
        let (claim, complete) = self.store.statements();
        let times = times();
        let key = "sha256(convert_to('p-' || :client_id || '-' || :k, 'UTF8'))";
        // `$4::BYTEA` in the statement: a NULL fingerprint.
        let claim = claim
            .as_str()
            .replace("$1", "''")
            .replace("$2", key)
            .replace("$3", ":k")
            .replace("$4", "NULL")
            .replace("$5", &times.lease_until.to_string())
            .replace("$6", &times.expires_at.to_string())
            .replace("$7", &times.now.to_string());
        let complete = complete
            .as_str()
            .replace("$1", "'\\x3432'::bytea")
            .replace("$2", &times.expires_at.to_string())
            .replace("$3", "''")
            .replace("$4", key)
            .replace("$5", ":k");
        let write = format!(
            "\\set k random(1, 9000000000000000000)\n{};\n{};\n",
            one_line(&claim),
            one_line(&complete)
        );
        (select, write)
    }
}

/// `sql` on one line (`pgbench` ends a statement at the end of its line).
fn one_line(sql: &str) -> String {
    sql.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Runs `pgbench` with `script` for `callers` clients and `seconds`: its
/// transactions per second, `None` if it is not installed or fails.
fn pgbench(script: &std::path::Path, callers: usize, seconds: f64) -> Option<f64> {
    let output = std::process::Command::new("pgbench")
        .args(["-n", "-M", "prepared"])
        .args(["-j", &callers.min(2).to_string()])
        .args(["-T", &(seconds.round() as u64).max(1).to_string()])
        .args(["-c", &callers.to_string()])
        .arg("-f")
        .arg(script)
        .arg(url("POSTGRES", "postgres://postgres@127.0.0.1:5432/test"))
        .output()
        .ok()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let tps = stdout
        .lines()
        .find_map(|line| line.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|tps| tps.parse().ok());
    if tps.is_none() {
        eprintln!(
            "pgbench failed: {}{}",
            stdout,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    tps
}

struct MySqlBench {
    store: MySqlStore,
}

impl Bench for MySqlBench {
    type Caller = Source<MySql>;
    const NAME: &'static str = "MariaDB";
    const MODES: &'static [Mode] = &[
        Mode::WriteConn,
        Mode::ReadWriteConn,
        Mode::Write,
        Mode::Fresh,
        Mode::SelectConn,
        Mode::Select,
        Mode::Claim,
        Mode::Replay,
        Mode::Hot,
    ];
    const FLOORS: (Mode, Mode) = (Mode::WriteConn, Mode::SelectConn);

    async fn open(callers: usize) -> MySqlBench {
        let pool = MySqlPoolOptions::new()
            .max_connections(callers as u32)
            .min_connections(callers as u32)
            .test_before_acquire(false)
            .connect(&url("MYSQL", "mysql://root@127.0.0.1:3306/test"))
            .await
            .expect("MySQL");
        let store = MySqlStore::from_pool(pool)
            .with_table(TABLE)
            .expect("a table name");
        MySqlBench { store }
    }

    async fn prepare(&self) {
        self.store.migrate().await.expect("migrate");
        sqlx::query(sqlx::AssertSqlSafe(format!("TRUNCATE `{TABLE}`")))
            .execute(self.store.pool())
            .await
            .expect("truncate");
        fill(&self.store).await;
    }

    async fn close(self) {
        self.store.pool().close().await;
    }

    fn store(&self) -> Arc<dyn IdempotencyStore> {
        Arc::new(self.store.clone())
    }

    fn caller(&self, held: bool) -> BoxFuture<'_, Source<MySql>> {
        Box::pin(Source::new(self.store.pool(), held))
    }

    fn select<'a>(
        &'a self,
        caller: &'a mut Source<MySql>,
        key: &'a RecordKey,
    ) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let (find, _, _) = self.store.statements();
            let mut connection = caller.connection().await;
            let row = sqlx::query(find)
                .bind(key.scope())
                .bind(&key.hash()[..])
                .fetch_optional(&mut *connection)
                .await
                .expect("a select");
            row.is_some()
        })
    }

    fn write<'a>(&'a self, caller: &'a mut Source<MySql>, key: &'a RecordKey) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let (_, upsert, complete) = self.store.statements();
            let token = fastrand::i64(..);
            let times = times();
            let fingerprint = None::<&[u8]>;
            let done = {
                let mut connection = caller.connection().await;
                sqlx::query(upsert)
                    .bind(key.scope())
                    .bind(&key.hash()[..])
                    .bind(token)
                    .bind(fingerprint)
                    .bind(times.lease_until)
                    .bind(times.expires_at)
                    .bind(times.now)
                    .bind(times.now)
                    .bind(fingerprint)
                    .bind(fingerprint)
                    .bind(token)
                    .bind(fingerprint)
                    .bind(times.lease_until)
                    .bind(times.expires_at)
                    .execute(&mut *connection)
                    .await
                    .expect("a claim")
            };
            // Inserted (see `MySqlStore`'s claim).
            assert_eq!((done.last_insert_id(), done.rows_affected()), (3, 1));
            let mut connection = caller.connection().await;
            let done = sqlx::query(complete)
                .bind(PAYLOAD)
                .bind(times.expires_at)
                .bind(key.scope())
                .bind(&key.hash()[..])
                .bind(token)
                .execute(&mut *connection)
                .await
                .expect("a complete");
            assert_eq!(done.rows_affected(), 1);
        })
    }
}

struct SqliteBench {
    store: SqliteStore,
}

impl SqliteBench {
    fn path() -> std::path::PathBuf {
        std::env::temp_dir().join("steadfast_throughput.db")
    }
}

impl Bench for SqliteBench {
    type Caller = Source<Sqlite>;
    const NAME: &'static str = "SQLite";
    const MODES: &'static [Mode] = MySqlBench::MODES;
    const FLOORS: (Mode, Mode) = (Mode::WriteConn, Mode::SelectConn);

    /// The options of `SqliteStore::connect` (WAL, `synchronous = NORMAL`,
    /// a 5 s busy timeout), with as many connections as callers.
    async fn open(callers: usize) -> SqliteBench {
        let url = format!("sqlite:{}?mode=rwc", SqliteBench::path().display());
        let options = SqliteConnectOptions::from_str(&url)
            .expect("a SQLite URL")
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(callers as u32)
            .min_connections(callers as u32)
            .connect_with(options)
            .await
            .expect("SQLite");
        let store = SqliteStore::from_pool(pool)
            .with_table(TABLE)
            .expect("a table name");
        SqliteBench { store }
    }

    async fn prepare(&self) {
        self.store.migrate().await.expect("migrate");
        let sql = format!(r#"DELETE FROM "{TABLE}""#);
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(self.store.pool())
            .await
            .expect("empty the table");
        fill(&self.store).await;
    }

    async fn close(self) {
        self.store.pool().close().await;
    }

    fn store(&self) -> Arc<dyn IdempotencyStore> {
        Arc::new(self.store.clone())
    }

    fn caller(&self, held: bool) -> BoxFuture<'_, Source<Sqlite>> {
        Box::pin(Source::new(self.store.pool(), held))
    }

    fn select<'a>(
        &'a self,
        caller: &'a mut Source<Sqlite>,
        key: &'a RecordKey,
    ) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let (find, _, _) = self.store.statements();
            let mut connection = caller.connection().await;
            let row = sqlx::query(find)
                .bind(key.scope())
                .bind(&key.hash()[..])
                .fetch_optional(&mut *connection)
                .await
                .expect("a select");
            row.is_some()
        })
    }

    fn write<'a>(
        &'a self,
        caller: &'a mut Source<Sqlite>,
        key: &'a RecordKey,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let (_, upsert, complete) = self.store.statements();
            let token = fastrand::i64(..);
            let times = times();
            let claimed = {
                let mut connection = caller.connection().await;
                sqlx::query(upsert)
                    .bind(key.scope())
                    .bind(&key.hash()[..])
                    .bind(token)
                    .bind(None::<&[u8]>)
                    .bind(times.lease_until)
                    .bind(times.expires_at)
                    .bind(times.now)
                    .fetch_optional(&mut *connection)
                    .await
                    .expect("a claim")
            };
            assert!(claimed.is_some(), "a new key is claimed");
            let mut connection = caller.connection().await;
            let done = sqlx::query(complete)
                .bind(PAYLOAD)
                .bind(times.expires_at)
                .bind(key.scope())
                .bind(&key.hash()[..])
                .bind(token)
                .execute(&mut *connection)
                .await
                .expect("a complete");
            assert_eq!(done.rows_affected(), 1);
        })
    }
}

struct RedisBench {
    store: RedisStore,
    client: redis::Client,
    /// The store's connection, shared by the raw modes without `-conn`.
    shared: ConnectionManager,
}

impl RedisBench {
    /// The raw commands' key for `key`.
    fn floor_key(key: &RecordKey) -> String {
        let hex: String = key
            .hash()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        format!("{FLOOR_PREFIX}:{hex}")
    }

    /// Deletes the keys of both prefixes.
    async fn clean(&self) {
        let mut connection = self.shared.clone();
        // `SCAN`, not `KEYS`: a run leaves millions of keys, which `KEYS`
        // would block the server on.
        let mut keys = Vec::new();
        let mut scan = connection
            .scan_match::<_, String>(format!("{PREFIX}*"))
            .await
            .expect("SCAN");
        while let Some(key) = scan.next_item().await {
            keys.push(key.expect("a key"));
        }
        drop(scan);
        for chunk in keys.chunks(1000) {
            let _: i64 = redis::cmd("UNLINK")
                .arg(chunk)
                .query_async(&mut connection)
                .await
                .expect("UNLINK");
        }
    }
}

impl Bench for RedisBench {
    type Caller = ConnectionManager;
    const NAME: &'static str = "Redis";
    const MODES: &'static [Mode] = &[
        Mode::Write,
        Mode::WriteConn,
        Mode::Fresh,
        Mode::Select,
        Mode::SelectConn,
        Mode::Claim,
        Mode::Replay,
        Mode::Hot,
    ];
    const FLOORS: (Mode, Mode) = (Mode::Write, Mode::Select);

    /// The store of `RedisStore::connect`; its connection is shared.
    async fn open(_callers: usize) -> RedisBench {
        let url = url("REDIS", "redis://127.0.0.1:6379");
        let client = redis::Client::open(url.as_str()).expect("a Redis URL");
        let store = RedisStore::connect(&url)
            .await
            .expect("Redis")
            .with_prefix(PREFIX)
            .expect("a prefix");
        let shared = ConnectionManager::new(client.clone()).await.expect("Redis");
        RedisBench {
            store,
            client,
            shared,
        }
    }

    async fn prepare(&self) {
        self.store.migrate().await.expect("migrate");
        self.clean().await;
        fill(&self.store).await;
        let mut connection = self.shared.clone();
        for k in 0..KEYS {
            let key = RecordKey::new("", &format!("k-{k}")).expect("a key");
            let () = redis::cmd("SET")
                .arg(RedisBench::floor_key(&key))
                .arg(PAYLOAD)
                .arg("PX")
                .arg(TTL)
                .query_async(&mut connection)
                .await
                .expect("SET");
        }
    }

    /// Nothing: the next row's callers reuse the keys.
    async fn close(self) {}

    async fn finish(self) {
        self.clean().await;
    }

    fn store(&self) -> Arc<dyn IdempotencyStore> {
        Arc::new(self.store.clone())
    }

    fn caller(&self, held: bool) -> BoxFuture<'_, ConnectionManager> {
        Box::pin(async move {
            if held {
                ConnectionManager::new(self.client.clone())
                    .await
                    .expect("Redis")
            } else {
                self.shared.clone()
            }
        })
    }

    fn select<'a>(
        &'a self,
        caller: &'a mut ConnectionManager,
        key: &'a RecordKey,
    ) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let value: Option<Vec<u8>> = redis::cmd("GET")
                .arg(RedisBench::floor_key(key))
                .query_async(caller)
                .await
                .expect("GET");
            value.is_some()
        })
    }

    fn write<'a>(
        &'a self,
        caller: &'a mut ConnectionManager,
        key: &'a RecordKey,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let key = RedisBench::floor_key(key);
            let claimed: Option<String> = redis::cmd("SET")
                .arg(&key)
                .arg("in-progress")
                .arg("NX")
                .arg("PX")
                .arg(LEASE)
                .query_async(&mut *caller)
                .await
                .expect("SET NX");
            assert!(claimed.is_some(), "a new key is claimed");
            let stored: Option<String> = redis::cmd("SET")
                .arg(&key)
                .arg(PAYLOAD)
                .arg("XX")
                .arg("PX")
                .arg(TTL)
                .query_async(caller)
                .await
                .expect("SET XX");
            assert!(stored.is_some(), "the claim is completed");
        })
    }
}

/// `STEADFAST_TEST_<NAME>_URL`, or `default`.
fn url(name: &str, default: &str) -> String {
    std::env::var(format!("STEADFAST_TEST_{name}_URL")).unwrap_or_else(|_| default.to_owned())
}

/// Calls per second of `callers` tasks, each made by `caller` and looping
/// until the flag it is given is set, `seconds` later; each returns how
/// many calls it made.
async fn for_a_while<F>(callers: usize, seconds: f64, caller: impl Fn(Arc<AtomicBool>) -> F) -> f64
where
    F: Future<Output = u64> + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|_| tokio::spawn(caller(Arc::clone(&stop))))
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut calls = 0;
    for task in tasks {
        calls += task.await.expect("a caller");
    }
    calls as f64 / start.elapsed().as_secs_f64()
}

/// Calls per second of `callers` callers in `mode` (the store or the raw
/// client) for `seconds`.
async fn measure<B: Bench>(bench: &Arc<B>, mode: Mode, callers: usize, seconds: f64) -> f64 {
    static FRESH: AtomicU64 = AtomicU64::new(0);
    for_a_while(callers, seconds, |stop| {
        let bench = Arc::clone(bench);
        let store = bench.store();
        async move {
            let mut caller = if mode.raw() {
                Some(bench.caller(mode.holds()).await)
            } else {
                None
            };
            let mut calls = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = match mode {
                    Mode::Hot => "k-0".to_owned(),
                    _ if mode.writes() => format!("f-{}", FRESH.fetch_add(1, Ordering::Relaxed)),
                    _ => format!("k-{}", fastrand::u64(..KEYS)),
                };
                let record = RecordKey::new("", &key).expect("a key");
                match (mode, caller.as_mut()) {
                    (Mode::Replay | Mode::Hot | Mode::Fresh, _) => {
                        let answer = call(&*store, &key).await.expect("an idempotent call");
                        assert_eq!(answer, 42);
                    }
                    (Mode::Claim, _) => {
                        let times = times();
                        let request = ClaimRequest {
                            key: &record,
                            token: fastrand::u64(..),
                            fingerprint: None,
                            now: times.now,
                            lease_until: times.lease_until,
                            expires_at: times.expires_at,
                        };
                        let claim = store.claim(&request).await.expect("a claim");
                        assert!(matches!(claim, Claim::Completed(_)));
                    }
                    (Mode::ClaimConn, Some(caller)) => bench.claim_statement(caller, &record).await,
                    (Mode::Select | Mode::SelectConn, Some(caller)) => {
                        assert!(bench.select(caller, &record).await, "a completed record");
                    }
                    (Mode::Write | Mode::WriteConn, Some(caller)) => {
                        bench.write(caller, &record).await;
                    }
                    (Mode::ReadWriteConn, Some(caller)) => {
                        assert!(!bench.select(caller, &record).await, "a new key");
                        bench.write(caller, &record).await;
                    }
                    _ => unreachable!("{mode:?} runs elsewhere"),
                }
                calls += 1;
            }
            calls
        }
    })
    .await
}

/// The settings of a run.
struct Run {
    modes: Vec<Mode>,
    callers: Vec<usize>,
    seconds: f64,
    rounds: usize,
    /// Connections in a row's pool beyond one per caller.
    spare: usize,
}

/// Prepares `B`, measures every mode of `run` at every number of callers,
/// interleaved, and prints the table.
async fn bench_store<B: Bench>(
    run: &Run,
    pgbench_scripts: impl Fn(&B) -> Option<(String, String)>,
) {
    let modes: Vec<Mode> = match run.modes.is_empty() {
        true => B::MODES.to_vec(),
        false => run.modes.clone(),
    };
    let scripts = {
        let bench = B::open(1).await;
        bench.prepare().await;
        let scripts = pgbench_scripts(&bench);
        bench.close().await;
        scripts
    };
    let scripts = scripts.map(|(select, write)| {
        let dir = std::env::temp_dir();
        let (select_path, write_path) = (dir.join("select.sql"), dir.join("write.sql"));
        std::fs::write(&select_path, &select).expect("select.sql");
        std::fs::write(&write_path, &write).expect("write.sql");
        println!("{}:\n{select}", select_path.display());
        println!("{}:\n{write}", write_path.display());
        println!(
            "pgbench -n -M prepared -j 2 -T {} -c N -f <script> <STEADFAST_TEST_POSTGRES_URL>\n",
            run.seconds.round()
        );
        (select_path, write_path)
    });
    println!("load average at start: {}", load());
    let mut rates: HashMap<(Mode, usize), Vec<f64>> = HashMap::new();
    for round in 0..run.rounds {
        for &n in &run.callers {
            for &mode in &modes {
                let rate = match (mode, &scripts) {
                    (Mode::PgbenchSelect, Some((select, _))) => pgbench(select, n, run.seconds),
                    (Mode::PgbenchWrite, Some((_, write))) => pgbench(write, n, run.seconds),
                    (Mode::PgbenchSelect | Mode::PgbenchWrite, None) => None,
                    _ => {
                        let bench = Arc::new(B::open(n + run.spare).await);
                        let rate = measure(&bench, mode, n, run.seconds).await;
                        if let Ok(bench) = Arc::try_unwrap(bench) {
                            bench.close().await;
                        }
                        Some(rate)
                    }
                };
                let Some(rate) = rate else { continue };
                println!(
                    "round {round}: {} {}\tc={n}\t{rate:.0}/s",
                    B::NAME,
                    mode.name()
                );
                rates.entry((mode, n)).or_default().push(rate);
            }
        }
    }
    println!("load average at end: {}\n", load());
    print_table::<B>(run, &modes, &mut rates);
    B::open(1).await.finish().await;
}

/// The table of `rates` (the median of each row's rounds), each beside its
/// floor.
fn print_table<B: Bench>(run: &Run, modes: &[Mode], rates: &mut HashMap<(Mode, usize), Vec<f64>>) {
    let median = |rates: &mut HashMap<(Mode, usize), Vec<f64>>, mode, n| {
        let rounds = rates.get_mut(&(mode, n))?;
        rounds.sort_by(f64::total_cmp);
        Some(rounds[rounds.len() / 2])
    };
    let columns: Vec<String> = run.callers.iter().map(|n| format!("c = {n}")).collect();
    println!(
        "{}, calls per second ({} s a row, median of {} round(s), {} spare connection(s)), × its floor\n",
        B::NAME,
        run.seconds,
        run.rounds,
        run.spare
    );
    println!("| mode | {} |", columns.join(" | "));
    println!("|---|{}", "---:|".repeat(columns.len()));
    for &mode in modes {
        let floor = match mode.writes() {
            true => B::FLOORS.0,
            false => B::FLOORS.1,
        };
        let cells: Vec<String> = run
            .callers
            .iter()
            .map(
                |&n| match (median(rates, mode, n), median(rates, floor, n)) {
                    (Some(rate), _) if mode == floor => thousands(rate),
                    (Some(rate), Some(floor)) => {
                        format!("{} ({:.2}×)", thousands(rate), rate / floor)
                    }
                    (Some(rate), None) => thousands(rate),
                    (None, _) => "–".to_owned(),
                },
            )
            .collect();
        let name = match mode == floor {
            true => format!("`{}` (floor)", mode.name()),
            false => format!("`{}`", mode.name()),
        };
        println!("| {name} | {} |", cells.join(" | "));
    }
}

/// `rate` rounded, its thousands apart: `16 374`.
fn thousands(rate: f64) -> String {
    let digits = format!("{rate:.0}");
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(' ');
        }
        out.push(digit);
    }
    out
}

/// The machine's load averages (`/proc/loadavg`).
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|load| {
            load.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".to_owned())
}

fn main() {
    let mut settings = Run {
        modes: Vec::new(),
        callers: vec![1, 16, 64],
        seconds: 5.0,
        rounds: 1,
        spare: 0,
    };
    let mut store = "postgres".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--callers" => {
                let list = args.next().expect("--callers 1,16,64");
                settings.callers = list
                    .split(',')
                    .map(|n| n.parse().expect("a number of callers"))
                    .collect();
            }
            "--seconds" => {
                settings.seconds = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .expect("--seconds 5");
            }
            "--rounds" => {
                settings.rounds = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .expect("--rounds 1");
            }
            "--spare" => {
                settings.spare = args.next().and_then(|s| s.parse().ok()).expect("--spare 0");
            }
            "--store" => store = args.next().expect("--store postgres|mysql|sqlite|redis"),
            "--bench" => {}
            other => settings
                .modes
                .push(Mode::parse(other).unwrap_or_else(|| panic!("unknown mode {other}"))),
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let postgres_only = [Mode::ClaimConn, Mode::PgbenchSelect, Mode::PgbenchWrite];
    if store != "postgres"
        && settings
            .modes
            .iter()
            .any(|mode| postgres_only.contains(mode))
    {
        panic!("claim-conn, pgbench-select and pgbench-write are PostgreSQL's");
    }
    match store.as_str() {
        "postgres" => runtime.block_on(bench_store::<PostgresBench>(&settings, |bench| {
            Some(bench.pgbench_scripts())
        })),
        "mysql" => runtime.block_on(bench_store::<MySqlBench>(&settings, |_| None)),
        "sqlite" => {
            let path = SqliteBench::path();
            for suffix in ["", "-wal", "-shm"] {
                let mut file = path.as_os_str().to_owned();
                file.push(suffix);
                let _ = std::fs::remove_file(file);
            }
            runtime.block_on(bench_store::<SqliteBench>(&settings, |_| None));
        }
        "redis" => runtime.block_on(bench_store::<RedisBench>(&settings, |_| None)),
        other => panic!("unknown store {other}: postgres, mysql, sqlite or redis"),
    }
}
