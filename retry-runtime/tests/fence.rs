//! The fence: a body marks its claim inside its own transaction, so that its
//! effects and the claim commit together; then nothing runs it again.
//!
//! SQLite always runs (a file in the temporary directory); PostgreSQL and
//! MySQL/MariaDB run when `STEADFAST_TEST_POSTGRES_URL` and
//! `STEADFAST_TEST_MYSQL_URL` are set, print "skipped" otherwise, and fail
//! under `CI=true` without them. Each test uses tables of its own.
//!
//! Run: `cargo test -p retry-runtime --features sqlite,postgres,mysql --test fence`

use std::{future::Future, pin::pin, time::Duration};

use steadfast_runtime::idempotency::{
    FENCED_LEASE, Idempotency, IdempotencyError, IdempotencyStore, SqlBackend, SqlStore,
    StoreError, current_claim,
};

/// A unique suffix for this test's tables.
fn suffix() -> String {
    format!("{:012x}", fastrand::u64(..) >> 16)
}

fn ledger_error(error: sqlx::Error) -> IdempotencyError {
    IdempotencyError::Store(StoreError::new("test ledger", error))
}

/// The same tests for each store: `$open` is an async expression giving
/// `Option<(store, money table name)>`, with the store migrated and the money
/// table (`id TEXT`) created.
macro_rules! fence_tests {
    ($module:ident: $store:ty, $open:expr, $drop:expr) => {
        mod $module {
            use super::*;

            /// A body that writes one money row for `payment` and, if `fence`,
            /// fences in the same transaction, then commits; `after_commit`
            /// runs after the commit (to stall or fail there).
            async fn pay<F: Future<Output = ()>>(
                store: &$store,
                money: &str,
                payment: &str,
                fence: bool,
                after_commit: F,
            ) -> Result<String, IdempotencyError> {
                let mut tx = store.pool().begin().await.map_err(ledger_error)?;
                sqlx::query(sqlx::AssertSqlSafe(format!("INSERT INTO {money} (id) VALUES ('{payment}')")))
                    .execute(&mut *tx)
                    .await
                    .map_err(ledger_error)?;
                if fence {
                    store.fence(&mut *tx).await?;
                }
                tx.commit().await.map_err(ledger_error)?;
                after_commit.await;
                Ok(format!("receipt of {payment}"))
            }

            async fn rows(store: &$store, money: &str, payment: &str) -> i64 {
                sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "SELECT COUNT(*) FROM {money} WHERE id = '{payment}'"
                )))
                .fetch_one(store.pool())
                .await
                .unwrap()
            }

            /// Runs `pay` under the engine with key `payment`, and drops it
            /// just after its commit, as a process that dies there.
            async fn run_and_die_after_commit(store: &$store, money: &str, payment: &str, fence: bool) {
                let (committed_tx, committed_rx) = tokio::sync::oneshot::channel::<()>();
                let run = Idempotency::new(store).key(payment).lease(Duration::from_millis(300)).run(|| {
                    pay(store, money, payment, fence, async move {
                        let _ = committed_tx.send(());
                        std::future::pending::<()>().await;
                    })
                });
                let mut run = pin!(run);
                tokio::select! {
                    _ = &mut run => panic!("the body never returns"),
                    _ = committed_rx => {}
                }
                // Dropping the run here is the crash: the result is never stored.
            }

            #[tokio::test]
            async fn a_fenced_payment_never_runs_twice_even_after_its_lease() {
                let Some((store, money)): Option<($store, String)> = $open.await else { return };
                run_and_die_after_commit(&store, &money, "p-fenced", true).await;
                let ran = std::sync::atomic::AtomicU32::new(0);
                let again = || {
                    Idempotency::new(&store).key("p-fenced").run(|| async {
                        ran.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        Ok::<_, IdempotencyError>("again".to_owned())
                    })
                };
                // Within the lease its owner might still store the result: wait.
                let within = again().await;
                tokio::time::sleep(Duration::from_millis(400)).await; // past the 300 ms lease
                // Then the owner is taken for dead: the result is lost, for good.
                let after = again().await;
                let outcome = (ran.into_inner(), rows(&store, &money, "p-fenced").await);
                $drop(&store, &money).await;
                assert!(
                    matches!(within, Err(IdempotencyError::InProgress { retry_after }) if retry_after <= Duration::from_millis(300)),
                    "{within:?}"
                );
                assert!(matches!(after, Err(IdempotencyError::ResultLost)), "{after:?}");
                assert_eq!(outcome, (0, 1), "(body runs again, money rows)");
            }

            #[tokio::test]
            async fn without_the_fence_the_same_crash_runs_the_payment_twice() {
                // The control case: what the fence prevents.
                let Some((store, money)): Option<($store, String)> = $open.await else { return };
                run_and_die_after_commit(&store, &money, "p-bare", false).await;
                tokio::time::sleep(Duration::from_millis(400)).await;
                let second = Idempotency::new(&store)
                    .key("p-bare")
                    .run(|| pay(&store, &money, "p-bare", false, async {}))
                    .await;
                let count = rows(&store, &money, "p-bare").await;
                $drop(&store, &money).await;
                assert_eq!(second.unwrap(), "receipt of p-bare");
                assert_eq!(count, 2, "the dropped claim was released: the payment ran again");
            }

            #[tokio::test]
            async fn a_fenced_payment_completes_and_replays() {
                let Some((store, money)): Option<($store, String)> = $open.await else { return };
                let mut runs = 0;
                let mut receipts = Vec::new();
                for _ in 0..2 {
                    let receipt: Result<String, IdempotencyError> = Idempotency::new(&store)
                        .key("p-ok")
                        .run(|| {
                            runs += 1;
                            pay(&store, &money, "p-ok", true, async {})
                        })
                        .await;
                    receipts.push(receipt.unwrap());
                }
                let count = rows(&store, &money, "p-ok").await;
                $drop(&store, &money).await;
                assert_eq!((runs, count), (1, 1));
                assert_eq!(receipts[0], receipts[1]);
            }

            #[tokio::test]
            async fn a_rolled_back_fence_leaves_an_ordinary_claim_and_a_second_fence_is_fine() {
                let Some((store, money)): Option<($store, String)> = $open.await else { return };
                let result: Result<(), IdempotencyError> = Idempotency::new(&store)
                    .key("p-rollback")
                    .run(|| async {
                        let mut tx = store.pool().begin().await.map_err(ledger_error)?;
                        store.fence(&mut *tx).await?;
                        tx.rollback().await.map_err(ledger_error)?;
                        let mut tx = store.pool().begin().await.map_err(ledger_error)?;
                        store.fence(&mut *tx).await?;
                        store.fence(&mut *tx).await?; // twice in one transaction
                        tx.commit().await.map_err(ledger_error)?;
                        Ok(())
                    })
                    .await;
                $drop(&store, &money).await;
                result.unwrap();
            }

            #[tokio::test]
            async fn a_fence_after_a_takeover_is_refused() {
                let Some((store, money)): Option<($store, String)> = $open.await else { return };
                let result: Result<(), IdempotencyError> = Idempotency::new(&store)
                    .key("p-taken")
                    .run(|| async {
                        // Another caller takes the claim over (its clock is
                        // past our lease and TTL) while we run.
                        let claim = current_claim().expect("inside the body");
                        let later = steadfast_runtime::idempotency::now_millis() + 90_000_000;
                        let takeover = steadfast_runtime::idempotency::ClaimRequest {
                            key: claim.record_key(),
                            token: claim.token() ^ 1,
                            fingerprint: None,
                            now: later,
                            lease_until: later + 30_000,
                            expires_at: later + 60_000,
                        };
                        let taken = store.claim(&takeover).await.map_err(IdempotencyError::Store)?;
                        assert_eq!(taken, steadfast_runtime::idempotency::Claim::Claimed);
                        let mut tx = store.pool().begin().await.map_err(ledger_error)?;
                        let fenced = store.fence(&mut *tx).await;
                        tx.rollback().await.map_err(ledger_error)?;
                        fenced
                    })
                    .await;
                $drop(&store, &money).await;
                assert!(matches!(result, Err(IdempotencyError::LeaseLost)), "{result:?}");
            }

            #[tokio::test]
            async fn a_fence_outside_an_idempotent_body_is_an_error() {
                let Some((store, money)): Option<($store, String)> = $open.await else { return };
                let mut connection = store.pool().acquire().await.unwrap();
                let outside = store.fence(&mut connection).await;
                drop(connection);
                $drop(&store, &money).await;
                let Err(IdempotencyError::Store(error)) = outside else {
                    panic!("{outside:?}");
                };
                assert!(error.to_string().contains("outside an idempotent body"), "{error}");
            }

            #[tokio::test]
            async fn a_fenced_record_survives_release_and_renew() {
                let Some((store, money)): Option<($store, String)> = $open.await else { return };
                let result: Result<(), IdempotencyError> = Idempotency::new(&store)
                    .key("p-survives")
                    .run(|| async {
                        let claim = current_claim().unwrap();
                        let mut tx = store.pool().begin().await.map_err(ledger_error)?;
                        store.fence(&mut *tx).await?;
                        tx.commit().await.map_err(ledger_error)?;
                        let (key, token) = (claim.record_key(), claim.token());
                        let released = store.release(key, token).await.map_err(IdempotencyError::Store)?;
                        assert!(!released, "a fenced claim was released");
                        let renewed = store.renew(key, token, 1).await.map_err(IdempotencyError::Store)?;
                        assert!(!renewed, "a fenced lease was shortened");
                        Ok(())
                    })
                    .await;
                let replay: Result<(), IdempotencyError> = Idempotency::new(&store)
                    .key("p-survives")
                    .run(|| async { panic!("ran twice") })
                    .await;
                $drop(&store, &money).await;
                result.unwrap();
                replay.unwrap();
                // Past any clock: a fenced lease never lapses.
                assert!(FENCED_LEASE > steadfast_runtime::idempotency::now_millis() * 1000);
            }
        }
    };
}

/// A store on `url` with tables of its own: its records (`fence_<suffix>`),
/// migrated, and the money table `money_<suffix>` (`id <id_type> NOT NULL`).
async fn open_store<DB>(url: &str, suffix: &str, id_type: &str) -> (SqlStore<DB>, String)
where
    DB: SqlBackend,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
{
    let store = SqlStore::<DB>::connect(url)
        .await
        .unwrap()
        .with_table(&format!("fence_{suffix}"))
        .unwrap();
    store.migrate().await.unwrap();
    let money = format!("money_{suffix}");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {money} (id {id_type} NOT NULL)"
    )))
    .execute(store.pool())
    .await
    .unwrap();
    (store, money)
}

async fn open_sqlite() -> Option<(steadfast_runtime::idempotency::SqliteStore, String)> {
    let suffix = suffix();
    let path = std::env::temp_dir().join(format!("steadfast-fence-{suffix}.db"));
    let url = format!("sqlite:{}?mode=rwc", path.display());
    Some(open_store(&url, &suffix, "TEXT").await)
}

async fn drop_sqlite(store: &steadfast_runtime::idempotency::SqliteStore, money: &str) {
    store.pool().close().await;
    let suffix = money.trim_start_matches("money_");
    let path = std::env::temp_dir().join(format!("steadfast-fence-{suffix}.db"));
    for file in [
        path.clone(),
        path.with_extension("db-wal"),
        path.with_extension("db-shm"),
    ] {
        let _ = std::fs::remove_file(file);
    }
}

fence_tests!(sqlite: SqlStore<sqlx::Sqlite>, open_sqlite(), drop_sqlite);

/// A store on the server named by the environment variable `url_var` (see
/// [`open_store`]), or none when it is not set.
#[cfg(any(feature = "postgres", feature = "mysql"))]
async fn open_server<DB>(url_var: &str, id_type: &str) -> Option<(SqlStore<DB>, String)>
where
    DB: SqlBackend,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
{
    let url = steadfast_test_support::server_url(url_var)?;
    Some(open_store(&url, &suffix(), id_type).await)
}

/// Drops the money table and the store's table (plain names, no quotes
/// needed).
#[cfg(any(feature = "postgres", feature = "mysql"))]
async fn drop_server<DB>(store: &SqlStore<DB>, money: &str)
where
    DB: SqlBackend,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
{
    for table in [money, store.table()] {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE IF EXISTS {table}")))
            .execute(store.pool())
            .await;
    }
}

#[cfg(feature = "postgres")]
use steadfast_test_support::POSTGRES_URL;

#[cfg(feature = "postgres")]
fence_tests!(postgres: SqlStore<sqlx::Postgres>, open_server(POSTGRES_URL, "TEXT"), drop_server);

#[cfg(feature = "mysql")]
use steadfast_test_support::MYSQL_URL;

#[cfg(feature = "mysql")]
fence_tests!(mysql: SqlStore<sqlx::MySql>, open_server(MYSQL_URL, "VARCHAR(64)"), drop_server);
