//! `#[idempotent(…, transaction = tx)]` and `Idempotency::run_in_transaction`:
//! the body's writes and its stored result commit together or not at all.
//! Each test runs on SQLite (a file), and on PostgreSQL and MariaDB when
//! their URLs are set (`STEADFAST_TEST_POSTGRES_URL`, `STEADFAST_TEST_MYSQL_URL`).

use std::{
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use sqlx::AssertSqlSafe;
use steadfast::idempotency::{
    BodyTransaction, Idempotency, IdempotencyError, MySqlStore, PostgresStore, SqlStore,
    SqliteStore, StoreError,
};
use steadfast_test_support::{MYSQL_URL, POSTGRES_URL, server_url};

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize, steadfast::Classify)]
enum PayError {
    #[code(Unavailable)]
    Idempotency(String),
    #[code(FailedPrecondition)]
    Declined,
}

impl From<IdempotencyError> for PayError {
    fn from(error: IdempotencyError) -> PayError {
        PayError::Idempotency(format!("{error:?}"))
    }
}

fn ledger_error(error: sqlx::Error) -> PayError {
    PayError::Idempotency(format!("ledger: {error}"))
}

/// A test for each check, on the module's database, with tables named
/// after the check.
macro_rules! tests_of_checks {
    ($($check:ident),*) => {$(
        #[tokio::test]
        async fn $check() {
            if let Some(store) = open().await {
                let name = &stringify!($check)[..12];
                checks::$check(checks::Bench::new(store, name).await).await;
            }
        }
    )*};
}

/// The checks, written once, on one database: `$db` and how to open a
/// store on it (`None`: skipped).
macro_rules! on_database {
    ($module:ident, $db:ty, $open:expr) => {
        mod $module {
            use super::*;

            type DB = $db;

            async fn open() -> Option<SqlStore<DB>> {
                $open
            }

            tests_of_checks!(
                runs_once_and_duplicates_replay,
                an_error_rolls_back_and_a_retry_runs_again,
                a_lost_lease_rolls_back,
                the_builder_commits_with_its_result,
                a_drop_at_any_instant_leaves_nothing_or_everything,
                a_transaction_kept_past_the_body_never_commits
            );

            pub(super) mod checks {
                use super::*;

                /// One test's store, on its own tables: the records and a ledger.
                pub(crate) struct Bench {
                    pub(crate) store: SqlStore<DB>,
                    pub(crate) ledger: String,
                }

                impl Bench {
                    pub(crate) async fn new(store: SqlStore<DB>, name: &str) -> Bench {
                        let suffix = fastrand::u32(..);
                        let store = store.with_table(&format!("tx_{name}_{suffix}")).unwrap();
                        store.migrate().await.unwrap();
                        let ledger = format!("ledger_{name}_{suffix}");
                        sqlx::query(AssertSqlSafe(format!(
                            "CREATE TABLE {ledger} (cents BIGINT NOT NULL)"
                        )))
                        .execute(store.pool())
                        .await
                        .unwrap();
                        Bench { store, ledger }
                    }

                    /// Rows in the ledger, read outside any transaction.
                    pub(crate) async fn rows(&self) -> i64 {
                        sqlx::query_scalar(AssertSqlSafe(format!(
                            "SELECT COUNT(*) FROM {}",
                            self.ledger
                        )))
                        .fetch_one(self.store.pool())
                        .await
                        .unwrap()
                    }

                    pub(crate) async fn drop_tables(self) {
                        for table in [self.ledger.as_str(), self.store.table()] {
                            sqlx::query(AssertSqlSafe(format!("DROP TABLE {table}")))
                                .execute(self.store.pool())
                                .await
                                .unwrap();
                        }
                    }
                }

                /// Writes `cents` into the ledger in the body's transaction.
                pub(crate) async fn write(
                    tx: &mut BodyTransaction<DB>,
                    ledger: &str,
                    cents: i64,
                ) -> Result<(), PayError>
                {
                    sqlx::query(AssertSqlSafe(format!(
                        "INSERT INTO {ledger} (cents) VALUES ({cents})"
                    )))
                    .execute(&mut **tx)
                    .await
                    .map_err(ledger_error)?;
                    Ok(())
                }

                /// A payment through the attribute: the ledger row and the receipt commit
                /// together. `decline` makes the body fail after its write.
                #[steadfast::idempotent(key = key, store = bench.store, transaction = tx, lease = "300ms", ttl = "1h")]
                async fn pay(
                    bench: &Bench,
                    key: &str,
                    cents: i64,
                    decline: bool,
                    runs: &AtomicU32,
                ) -> Result<i64, PayError>
                {
                    runs.fetch_add(1, Ordering::SeqCst);
                    write(&mut tx, &bench.ledger, cents).await?;
                    if decline {
                        return Err(PayError::Declined);
                    }
                    Ok(cents * 2)
                }

                /// Three calls, one execution: one ledger row, the same answer each time.
                pub(crate) async fn runs_once_and_duplicates_replay(bench: Bench)
                {
                    let runs = AtomicU32::new(0);
                    for _ in 0..3 {
                        assert_eq!(pay(&bench, "order-1", 500, false, &runs).await, Ok(1000));
                    }
                    assert_eq!(runs.load(Ordering::SeqCst), 1);
                    assert_eq!(bench.rows().await, 1);
                    bench.drop_tables().await;
                }

                /// A body that fails after writing: its write rolls back, the claim is
                /// released, and the retry runs (and commits) once.
                pub(crate) async fn an_error_rolls_back_and_a_retry_runs_again(bench: Bench)
                {
                    let runs = AtomicU32::new(0);
                    assert_eq!(
                        pay(&bench, "order-2", 500, true, &runs).await,
                        Err(PayError::Declined)
                    );
                    assert_eq!(bench.rows().await, 0, "the failed body's write committed");
                    assert_eq!(pay(&bench, "order-2", 500, false, &runs).await, Ok(1000));
                    assert_eq!(pay(&bench, "order-2", 500, false, &runs).await, Ok(1000));
                    assert_eq!(runs.load(Ordering::SeqCst), 2);
                    assert_eq!(bench.rows().await, 1);
                    bench.drop_tables().await;
                }

                /// Another replica took the claim over while the body ran (its lease
                /// lapsed): the body's write rolls back and the caller gets `LeaseLost`,
                /// never a result the new owner would contradict.
                pub(crate) async fn a_lost_lease_rolls_back(bench: Bench)
                {
                    let (store, ledger) = (&bench.store, bench.ledger.as_str());
                    let result: Result<i64, PayError> = Idempotency::new(store)
                        .key("order-3")
                        .run_in_transaction(store, |mut tx| async move {
                            // The takeover, as another replica's claim writes it (before
                            // the body's write: SQLite has one writer at a time).
                            let table = store.table();
                            sqlx::query(AssertSqlSafe(format!(
                                "UPDATE {table} SET token = token + 1"
                            )))
                            .execute(store.pool())
                            .await
                            .map_err(ledger_error)?;
                            write(&mut tx, ledger, 500).await?;
                            Ok(500)
                        })
                        .await;
                    match result {
                        Err(PayError::Idempotency(error)) => assert!(error.contains("LeaseLost"), "{error}"),
                        other => panic!("expected LeaseLost, got {other:?}"),
                    }
                    assert_eq!(bench.rows().await, 0, "the write of a lost claim committed");
                    bench.drop_tables().await;
                }

                /// A body that moves its transaction into a task which outlives
                /// it: the call is an error (nothing is stored), the task's write
                /// never commits (rolled back when the task lets it go, late), and
                /// the released claim lets a retry run and commit once.
                pub(crate) async fn a_transaction_kept_past_the_body_never_commits(bench: Bench) {
                    let (store, ledger) = (&bench.store, bench.ledger.clone());
                    let (written_tx, written) = tokio::sync::oneshot::channel();
                    let kept: Result<i64, PayError> = Idempotency::new(store)
                        .key("order-8")
                        .run_in_transaction(store, |mut tx| async move {
                            tokio::spawn(async move {
                                let wrote = write(&mut tx, &ledger, 300).await;
                                let _ = written_tx.send(wrote);
                                tokio::time::sleep(Duration::from_millis(100)).await;
                                drop(tx);
                            });
                            Ok(300)
                        })
                        .await;
                    match kept {
                        Err(PayError::Idempotency(error)) => {
                            assert!(error.contains("kept its transaction"), "{error}");
                        }
                        other => panic!("a body that kept its transaction answered {other:?}"),
                    }
                    written.await.unwrap().unwrap();
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    assert_eq!(bench.rows().await, 0, "the kept transaction committed");
                    let runs = AtomicU32::new(0);
                    assert_eq!(pay(&bench, "order-8", 300, false, &runs).await, Ok(600));
                    assert_eq!(bench.rows().await, 1);
                    bench.drop_tables().await;
                }

                /// The non-macro form: the result is stored by the body's commit, so a
                /// duplicate replays it without running the body.
                pub(crate) async fn the_builder_commits_with_its_result(bench: Bench)
                {
                    let (store, ledger) = (&bench.store, bench.ledger.as_str());
                    let runs = AtomicU32::new(0);
                    let runs = &runs;
                    for _ in 0..2 {
                        let receipt: Result<String, IdempotencyError> = Idempotency::new(store)
                            .key("order-4")
                            .run_in_transaction(store, |mut tx| async move {
                                runs.fetch_add(1, Ordering::SeqCst);
                                write(&mut tx, ledger, 700).await.map_err(|error| {
                                    IdempotencyError::Store(StoreError::msg(format!("{error:?}")))
                                })?;
                                Ok("receipt 700".to_owned())
                            })
                            .await;
                        assert_eq!(receipt.unwrap(), "receipt 700");
                    }
                    assert_eq!(runs.load(Ordering::SeqCst), 1);
                    assert_eq!(bench.rows().await, 1);

                    // Another store (another handle's identity) is refused before anything runs.
                    let other = SqlStore::<DB>::from_pool(store.pool().clone());
                    let refused: Result<u32, IdempotencyError> = Idempotency::new(&other)
                        .key("order-5")
                        .run_in_transaction(store, |_tx| async { Ok(1) })
                        .await;
                    assert!(
                        matches!(refused, Err(IdempotencyError::InvalidConfig { .. })),
                        "{refused:?}"
                    );
                    bench.drop_tables().await;
                }

                /// The caller's future dropped at many instants of a call (before the
                /// claim, mid-body, right around the commit): afterwards, the ledger holds
                /// at most one row per key, and a retry (after the lease) either replays
                /// the committed result without running the body, or runs it once.
                pub(crate) async fn a_drop_at_any_instant_leaves_nothing_or_everything(bench: Bench)
                {
                    const CALLS: u32 = 24;
                    let runs = AtomicU32::new(0);
                    let (mut before_commit, mut after_commit) = (0, 0);
                    for call in 0..CALLS {
                        let key = format!("dropped-{call}");
                        // Cut after a growing number of microseconds: early cuts land
                        // before the claim, later ones in the body, the commit or after.
                        let cut = Duration::from_micros(u64::from(call) * 250);
                        let _ = tokio::time::timeout(cut, pay(&bench, &key, 100, false, &runs)).await;
                        let committed = bench.rows().await;
                        let before = runs.load(Ordering::SeqCst);
                        // A dropped claim is released at once; one that may have committed
                        // is kept until its lease (300 ms) lapses.
                        let retried = loop_until_answered(|| pay(&bench, &key, 100, false, &runs)).await;
                        assert_eq!(retried, Ok(200), "call {call}");
                        let ran_again = runs.load(Ordering::SeqCst) - before;
                        let rows = bench.rows().await;
                        assert_eq!(
                            rows,
                            i64::from(call) + 1,
                            "call {call}: a key has {} rows",
                            rows - i64::from(call)
                        );
                        if committed > i64::from(call) {
                            assert_eq!(ran_again, 0, "call {call}: the committed body ran again");
                            after_commit += 1;
                        } else {
                            before_commit += 1;
                        }
                    }
                    println!("{before_commit} calls cut before their commit, {after_commit} after");
                    assert!(before_commit > 0 && after_commit > 0, "the cuts missed one side of the commit");
                    bench.drop_tables().await;
                }

            }
        }
    };
}

on_database!(sqlite, sqlx::Sqlite, {
    let dir = std::env::temp_dir().join(format!("steadfast-tx-{}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite:{}?mode=rwc", dir.join("db.sqlite").display());
    Some(SqliteStore::connect(&url).await.unwrap())
});
on_database!(postgres, sqlx::Postgres, {
    let url = server_url(POSTGRES_URL)?;
    Some(PostgresStore::connect(&url).await.unwrap())
});
on_database!(mysql, sqlx::MySql, {
    let url = server_url(MYSQL_URL)?;
    Some(MySqlStore::connect(&url).await.unwrap())
});

/// Calls `pay` until it is not `InProgress`, at most 40 times 50 ms apart.
async fn loop_until_answered<F, Fut>(mut pay: F) -> Result<i64, PayError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<i64, PayError>>,
{
    for _ in 0..40 {
        match pay().await {
            Err(PayError::Idempotency(error)) if error.contains("InProgress") => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            answer => return answer,
        }
    }
    panic!("still in progress after 2 s")
}

/// Deferred constraints are checked at `COMMIT`: a commit that fails is an
/// error to the caller, never the body's result, and the claim is kept
/// (the commit might have happened) until its lease lapses; then a retry
/// runs the body again.
#[tokio::test]
async fn a_failed_commit_is_an_error_not_a_result() {
    let Some((bench, checked)) = with_deferred_check("commit").await else {
        return;
    };
    let (store, ledger) = (&bench.store, bench.ledger.as_str());
    let attempt = |duplicate: bool| {
        let checked = checked.clone();
        async move {
            Idempotency::new(store)
                .key("order-6")
                .lease(Duration::from_millis(300))
                .run_in_transaction(store, |mut tx| async move {
                    postgres::checks::write(&mut tx, ledger, 900).await?;
                    insert_ids(&mut tx, &checked, duplicate).await?;
                    Ok::<_, PayError>(900)
                })
                .await
        }
    };
    match attempt(true).await {
        Err(PayError::Idempotency(error)) => assert!(error.contains("commit"), "{error}"),
        other => panic!("a failed commit answered {other:?}"),
    }
    assert_eq!(bench.rows().await, 0);
    // Kept, not released: a duplicate within the lease is told to wait.
    match attempt(false).await {
        Err(PayError::Idempotency(error)) => assert!(error.contains("InProgress"), "{error}"),
        other => panic!("a duplicate within the lease answered {other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(attempt(false).await, Ok(900));
    assert_eq!(bench.rows().await, 1);
    drop_with_deferred_check(bench, &checked).await;
}

/// Inserts into `checked` (a deferred unique column) in the body's
/// transaction; `twice` makes its commit fail. Errors coded `Unavailable`
/// are cached, as a store error's is.
#[steadfast::idempotent(
    key = key,
    store = store,
    transaction = tx,
    lease = "300ms",
    cache_errors = "Unavailable"
)]
async fn insert_checked(
    store: &PostgresStore,
    key: &str,
    checked: &str,
    twice: bool,
) -> Result<i64, PayError> {
    insert_ids(&mut tx, checked, twice).await?;
    Ok(1)
}

/// A commit that failed may have taken effect: its error is never stored
/// as the request's answer, even when `cache_errors` names its code; the
/// claim is kept until its lease lapses, then a retry runs again.
#[tokio::test]
async fn a_failed_commit_is_never_cached() {
    let Some((bench, checked)) = with_deferred_check("cached").await else {
        return;
    };
    let failed = insert_checked(&bench.store, "order-7", &checked, true).await;
    assert!(
        matches!(&failed, Err(PayError::Idempotency(error)) if error.contains("commit")),
        "{failed:?}"
    );
    let within_lease = insert_checked(&bench.store, "order-7", &checked, false).await;
    assert!(
        matches!(&within_lease, Err(PayError::Idempotency(error)) if error.contains("InProgress")),
        "the failed commit's error was replayed: {within_lease:?}"
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(
        insert_checked(&bench.store, "order-7", &checked, false).await,
        Ok(1)
    );
    drop_with_deferred_check(bench, &checked).await;
}

/// A PostgreSQL bench (skipped when the URL is unset) with a table whose
/// unique column is checked at `COMMIT`: inserting a value twice makes the
/// commit fail.
async fn with_deferred_check(name: &str) -> Option<(postgres::checks::Bench, String)> {
    let url = server_url(POSTGRES_URL)?;
    let store = PostgresStore::connect(&url).await.unwrap();
    let bench = postgres::checks::Bench::new(store, name).await;
    let checked = format!("{}_checked", bench.ledger);
    let create = format!("CREATE TABLE {checked} (id INT UNIQUE DEFERRABLE INITIALLY DEFERRED)");
    sqlx::query(AssertSqlSafe(create))
        .execute(bench.store.pool())
        .await
        .unwrap();
    Some((bench, checked))
}

async fn drop_with_deferred_check(bench: postgres::checks::Bench, checked: &str) {
    sqlx::query(AssertSqlSafe(format!("DROP TABLE {checked}")))
        .execute(bench.store.pool())
        .await
        .unwrap();
    bench.drop_tables().await;
}

/// Inserts the id 1 into `checked`, or twice (its commit then fails).
async fn insert_ids(
    tx: &mut sqlx::PgConnection,
    checked: &str,
    twice: bool,
) -> Result<(), PayError> {
    let rows = if twice { "(1), (1)" } else { "(1)" };
    let insert = format!("INSERT INTO {checked} VALUES {rows}");
    sqlx::query(AssertSqlSafe(insert))
        .execute(tx)
        .await
        .map_err(ledger_error)?;
    Ok(())
}
