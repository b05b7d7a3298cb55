//! Throughput of idempotent calls over a `PostgresStore`, `N` concurrent
//! callers at a time, to set beside `pgbench` on the same table (issue 14).
//!
//! Each caller loops for `--seconds` (default 5) calling
//! `Idempotency::new(&store).key(k).run(…)` with a trivial body:
//!
//! - `replay`: `k` drawn at random from 10 000 completed keys (`k-0` …
//!   `k-9999`, scope `""`): one claim per call, answered `Completed`.
//! - `hot`: every caller replays the same completed key `k-0`.
//! - `fresh`: a new key per call: claim, body, complete.
//!
//! And, to see where a replay's time goes, the same random completed keys:
//!
//! - `claim`: the store's `claim` alone (no engine: no decoding, no
//!   in-process waiters).
//! - `select`: raw sqlx running the primary-key `SELECT` that `pgbench`
//!   runs, over the same pool (so with sqlx's ping of each connection as it
//!   goes back to the pool).
//! - `select-conn`: the same over one connection of the pool per caller,
//!   held for the run (no acquire, no ping).
//! - `claim-conn`: the store's own claim statement (`statements().0`, same
//!   binds) over one held connection per caller, as `select-conn`.
//!
//! The store's pool has as many connections as callers (no ping before
//! use, as [`PostgresStore::connect`] sets it), like `pgbench -c N`. The
//! table is `steadfast_throughput`, emptied and refilled at start; the
//! primary-key `SELECT` that `pgbench` runs for comparison, and its
//! command, are printed at start (`pgbench` computes the record's key hash,
//! SHA-256 of the scope's length, the scope and the key, with `sha256`).
//!
//! `--store mysql` (`STEADFAST_TEST_MYSQL_URL`) or `--store sqlite` (a file
//! in the temporary directory) runs `replay`, `hot` and `fresh` over a
//! `MySqlStore` or a `SqliteStore` instead.
//!
//! Run with
//! `STEADFAST_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test cargo bench --features postgres --bench throughput -- replay hot fresh --callers 1,16,64`.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use sqlx::{mysql::MySqlPoolOptions, postgres::PgPoolOptions};
use steadfast::idempotency::{
    Claim, ClaimRequest, Idempotency, IdempotencyError, IdempotencyStore, MySqlStore,
    PostgresStore, RecordKey, SqliteStore, now_millis,
};

/// The table the bench and `pgbench` share.
const TABLE: &str = "steadfast_throughput";
/// The primary-key read of `select` (`pgbench` runs the same).
const SELECT: &str = r#"SELECT token, fingerprint, lease_until, expires_at, payload FROM "steadfast_throughput" WHERE scope = $1 AND key_hash = $2"#;
/// How many completed keys `replay` draws from.
const KEYS: u64 = 10_000;

/// What each caller does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Replay,
    Hot,
    Fresh,
    Claim,
    Select,
    SelectConn,
    ClaimConn,
}

impl Mode {
    fn parse(name: &str) -> Option<Mode> {
        match name {
            "replay" => Some(Mode::Replay),
            "hot" => Some(Mode::Hot),
            "fresh" => Some(Mode::Fresh),
            "claim" => Some(Mode::Claim),
            "select" => Some(Mode::Select),
            "select-conn" => Some(Mode::SelectConn),
            "claim-conn" => Some(Mode::ClaimConn),
            _ => None,
        }
    }
}

/// Calls per second of `callers` tasks, each made by `caller` and looping
/// until the flag it is given is set, `seconds` later; each returns how
/// many calls it made.
async fn for_a_while<F>(callers: usize, seconds: f64, caller: impl Fn(Arc<AtomicBool>) -> F) -> f64
where
    F: std::future::Future<Output = u64> + Send + 'static,
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

/// One idempotent call with key `key`: the body runs only for a new key.
async fn call(store: &dyn IdempotencyStore, key: &str) -> Result<u64, IdempotencyError> {
    Idempotency::new(store)
        .key(key)
        .run(|| async { Ok::<u64, IdempotencyError>(42) })
        .await
}

/// Calls per second of `callers` callers in `mode` (`replay`, `hot`,
/// `fresh`) over any store, for `seconds`.
async fn measure_calls(
    store: &Arc<dyn IdempotencyStore>,
    mode: Mode,
    callers: usize,
    seconds: f64,
) -> f64 {
    static FRESH: AtomicU64 = AtomicU64::new(0);
    for_a_while(callers, seconds, |stop| {
        let store = Arc::clone(store);
        async move {
            let mut calls = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = match mode {
                    Mode::Hot => "k-0".to_owned(),
                    Mode::Fresh => format!("f-{}", FRESH.fetch_add(1, Ordering::Relaxed)),
                    _ => format!("k-{}", fastrand::u64(..KEYS)),
                };
                let answer = call(&*store, &key).await.expect("an idempotent call");
                assert_eq!(answer, 42);
                calls += 1;
            }
            calls
        }
    })
    .await
}

/// Fills `store` with the completed keys `k-0` … `k-9999`, then measures
/// `modes` (`replay`, `hot`, `fresh`) at each number of `callers`.
async fn run_store(
    store: Arc<dyn IdempotencyStore>,
    name: &str,
    modes: &[Mode],
    callers: &[usize],
    seconds: f64,
) {
    for k in 0..KEYS {
        call(&*store, &format!("k-{k}")).await.expect("fill");
    }
    for &mode in modes {
        for &n in callers {
            let rate = measure_calls(&store, mode, n, seconds).await;
            println!("{name} {mode:?}\tc={n}\t{rate:.0}/s");
        }
    }
}

/// Calls per second of `callers` callers in `mode` for `seconds`.
async fn measure(store: &PostgresStore, mode: Mode, callers: usize, seconds: f64) -> f64 {
    static FRESH: AtomicU64 = AtomicU64::new(0);
    for_a_while(callers, seconds, |stop| {
        let store = store.clone();
        let (claim_sql, _) = store.statements();
        async move {
            let mut connection = match mode {
                Mode::SelectConn | Mode::ClaimConn => {
                    Some(store.pool().acquire().await.expect("a connection"))
                }
                _ => None,
            };
            let mut calls = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = match mode {
                    Mode::Hot => "k-0".to_owned(),
                    Mode::Fresh => format!("f-{}", FRESH.fetch_add(1, Ordering::Relaxed)),
                    _ => format!("k-{}", fastrand::u64(..KEYS)),
                };
                match mode {
                    Mode::Replay | Mode::Hot | Mode::Fresh => {
                        let answer = call(&store, &key).await.expect("an idempotent call");
                        assert_eq!(answer, 42);
                    }
                    Mode::Claim => {
                        let key = RecordKey::new("", &key).expect("a key");
                        let now = now_millis();
                        let request = ClaimRequest {
                            key: &key,
                            token: fastrand::u64(..),
                            fingerprint: None,
                            now,
                            lease_until: now + 30_000,
                            expires_at: now + 86_400_000,
                        };
                        let claim = store.claim(&request).await.expect("a claim");
                        assert!(matches!(claim, Claim::Completed(_)));
                    }
                    Mode::ClaimConn => {}
                    Mode::Select | Mode::SelectConn => {
                        let key = RecordKey::new("", &key).expect("a key");
                        let query = sqlx::query(sqlx::AssertSqlSafe(SELECT))
                            .bind(key.scope())
                            .bind(&key.hash()[..]);
                        let row = match &mut connection {
                            Some(connection) => query.fetch_optional(&mut **connection).await,
                            None => query.fetch_optional(store.pool()).await,
                        };
                        assert!(row.expect("a select").is_some());
                    }
                }
                if mode == Mode::ClaimConn {
                    let connection = connection.as_mut().expect("a held connection");
                    let key = RecordKey::new("", &key).expect("a key");
                    let now = now_millis();
                    let claimed: bool = sqlx::query_scalar(claim_sql.clone())
                        .bind(key.scope())
                        .bind(&key.hash()[..])
                        .bind(fastrand::i64(..))
                        .bind(None::<&[u8]>)
                        .bind(now + 30_000)
                        .bind(now + 86_400_000)
                        .bind(now)
                        .fetch_one(&mut **connection)
                        .await
                        .expect("a claim");
                    assert!(!claimed);
                }
                calls += 1;
            }
            calls
        }
    })
    .await
}

fn main() {
    let mut modes = Vec::new();
    let mut callers = vec![1, 16, 64];
    let mut seconds = 5.0;
    let mut other_store = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--callers" => {
                let list = args.next().expect("--callers 1,16,64");
                callers = list
                    .split(',')
                    .map(|n| n.parse().expect("a number of callers"))
                    .collect();
            }
            "--seconds" => {
                seconds = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .expect("--seconds 5");
            }
            "--store" => other_store = args.next(),
            "--bench" => {}
            other => modes.extend(Mode::parse(other)),
        }
    }
    if modes.is_empty() {
        modes = vec![Mode::Replay, Mode::Hot, Mode::Fresh];
    }
    let url = std::env::var("STEADFAST_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let most = callers.iter().copied().max().unwrap_or(1);
    match other_store.as_deref() {
        Some("mysql") => {
            let url = std::env::var("STEADFAST_TEST_MYSQL_URL")
                .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned());
            return runtime.block_on(async {
                let pool = MySqlPoolOptions::new()
                    .max_connections(most as u32)
                    .min_connections(most as u32)
                    .test_before_acquire(false)
                    .connect(&url)
                    .await
                    .expect("MySQL");
                let store = MySqlStore::from_pool(pool)
                    .with_table(TABLE)
                    .expect("a table name");
                store.migrate().await.expect("migrate");
                sqlx::query(sqlx::AssertSqlSafe(format!("TRUNCATE `{TABLE}`")))
                    .execute(store.pool())
                    .await
                    .expect("truncate");
                run_store(Arc::new(store), "MariaDB", &modes, &callers, seconds).await;
            });
        }
        Some("sqlite") => {
            let path = std::env::temp_dir().join("steadfast_throughput.db");
            for suffix in ["", "-wal", "-shm"] {
                let mut file = path.as_os_str().to_owned();
                file.push(suffix);
                let _ = std::fs::remove_file(file);
            }
            return runtime.block_on(async {
                let url = format!("sqlite:{}?mode=rwc", path.display());
                let store = SqliteStore::connect(&url).await.expect("SQLite");
                store.migrate().await.expect("migrate");
                run_store(Arc::new(store), "SQLite", &modes, &callers, seconds).await;
            });
        }
        _ => {}
    }
    runtime.block_on(async {
        let pool = PgPoolOptions::new()
            .max_connections(most as u32)
            .min_connections(most as u32)
            .test_before_acquire(false)
            .connect(&url)
            .await
            .expect("PostgreSQL");
        let store = PostgresStore::from_pool(pool)
            .with_table(TABLE)
            .expect("a table name");
        store.migrate().await.expect("migrate");
        sqlx::query(sqlx::AssertSqlSafe(format!(r#"TRUNCATE "{TABLE}""#)))
            .execute(store.pool())
            .await
            .expect("truncate");
        for k in 0..KEYS {
            call(&store, &format!("k-{k}")).await.expect("fill");
        }
        sqlx::query(sqlx::AssertSqlSafe(format!(r#"VACUUM ANALYZE "{TABLE}""#)))
            .execute(store.pool())
            .await
            .expect("vacuum");
        println!(
            "pgbench -n -M prepared -j 2 -T {seconds} -c N -f select.sql, select.sql:\n\
             \\set k random(0, {})\n\
             SELECT token, fingerprint, lease_until, expires_at, payload FROM \"{TABLE}\" \
             WHERE scope = '' AND key_hash = sha256('\\x0000000000000000'::bytea || convert_to('k-' || :k, 'UTF8'));\n",
            KEYS - 1
        );
        for &mode in &modes {
            for &n in &callers {
                let rate = measure(&store, mode, n, seconds).await;
                println!("{mode:?}\tc={n}\t{rate:.0}/s");
            }
        }
    });
}
