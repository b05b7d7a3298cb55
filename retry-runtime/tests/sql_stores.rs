//! The SQL idempotency stores against real databases.
//!
//! SQLite runs in a file of the temporary directory and always runs.
//! PostgreSQL and MySQL/MariaDB run when `STEADFAST_TEST_POSTGRES_URL` and
//! `STEADFAST_TEST_MYSQL_URL` are set (for example
//! `postgres://postgres@127.0.0.1:5432/test` and
//! `mysql://root@127.0.0.1:3306/test`); without them they print "skipped"
//! and pass, except under `CI=true`, where they fail. Every test works in a
//! table of its own (tests run in parallel) and drops it at the end, also
//! when it fails.
//!
//! Run: `cargo test -p retry-runtime --features sqlite,postgres,mysql,testing --test sql_stores`
//! (`testing` adds the public conformance suite, `conformance::run_all`, for each store).

use std::{future::Future, time::Duration};

use steadfast_runtime::idempotency::{
    Claim, ClaimRequest, Completion, Fingerprint, IdempotencyStore, Millis, RecordKey, SqlBackend,
    SqlStore, StoredResult,
};

/// Now, as the tests' callers see it (any fixed time: stores use the caller's clock).
const NOW: Millis = 1_700_000_000_000;
const LEASE: Millis = 30_000;
const TTL: Millis = 86_400_000;

/// A store under test, in a table of its own.
trait TestStore: IdempotencyStore + Clone + Send + Sync + Sized + 'static {
    /// Opens the store over `table` and migrates it; `None` when the test is skipped.
    fn open(table: &str) -> impl Future<Output = Option<Self>> + Send;
    /// The same database, another table (not migrated).
    fn other_table(&self, table: &str) -> Self;
    /// Runs `migrate`.
    fn migrate(&self) -> impl Future<Output = ()> + Send;
    /// Drops the table (and whatever else the test created).
    fn drop_table(&self) -> impl Future<Output = ()> + Send;
}

/// Runs `check` against a fresh store, then drops its table, whether the check passed or not.
async fn run<S: TestStore, Fut>(check: impl FnOnce(S) -> Fut)
where
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(store) = S::open(&table_name()).await else {
        return;
    };
    let outcome = tokio::spawn(check(store.clone())).await;
    store.drop_table().await;
    if let Err(failure) = outcome {
        std::panic::resume_unwind(failure.into_panic());
    }
}

/// Opens the store on the server that the variable `var` names, over
/// `table`, and migrates it; `None` when the test is skipped.
#[cfg(any(feature = "postgres", feature = "mysql"))]
async fn open_on_server<DB: SqlBackend>(var: &str, table: &str) -> Option<SqlStore<DB>> {
    let url = steadfast_test_support::server_url(var)?;
    let store = SqlStore::<DB>::connect(&url)
        .await
        .unwrap_or_else(|error| panic!("{var} is set, so {} must be reachable: {error}", DB::NAME))
        .with_table(table)
        .unwrap();
    store.migrate().await.unwrap();
    Some(store)
}

/// Drops the store's table, its name quoted with `quote`.
async fn drop_quoted<DB>(store: &SqlStore<DB>, quote: char)
where
    DB: SqlBackend,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
{
    let drop = format!("DROP TABLE IF EXISTS {quote}{}{quote}", store.table());
    sqlx::query(sqlx::AssertSqlSafe(drop))
        .execute(store.pool())
        .await
        .unwrap();
}

/// A table name no other test (or test run) uses; mixed case, since names are quoted.
fn table_name() -> String {
    format!("Steadfast_Test_{:016x}", fastrand::u64(..))
}

fn key(name: &str) -> RecordKey {
    RecordKey::new("sql_stores::tests", name).unwrap()
}

fn request(
    key: &RecordKey,
    token: u64,
    fingerprint: Option<Fingerprint>,
    now: Millis,
) -> ClaimRequest<'_> {
    ClaimRequest {
        key,
        token,
        fingerprint,
        now,
        lease_until: now + LEASE,
        expires_at: now + TTL,
    }
}

async fn claim<S: IdempotencyStore>(
    store: &S,
    key: &RecordKey,
    token: u64,
    fingerprint: Option<Fingerprint>,
    now: Millis,
) -> Claim {
    store
        .claim(&request(key, token, fingerprint, now))
        .await
        .unwrap()
}

/// Stores `payload` under `token`; whether the token held.
async fn complete<S: IdempotencyStore>(
    store: &S,
    key: &RecordKey,
    token: u64,
    payload: &[u8],
    expires_at: Millis,
) -> bool {
    let completion = Completion {
        key,
        token,
        payload,
        expires_at,
    };
    store.complete(completion).await.unwrap()
}

/// The checks every store passes.
mod checks {
    use super::*;

    pub(crate) async fn claim_then_duplicate<S: TestStore>(store: S) {
        let (first, second) = (Fingerprint::of("amount=5"), Fingerprint::of("amount=6"));
        let pay = key("pay");
        assert_eq!(
            claim(&store, &pay, 1, Some(first), NOW).await,
            Claim::Claimed
        );
        // Same fingerprint or another: the duplicate sees the first claim's.
        for fingerprint in [Some(first), Some(second), None] {
            assert_eq!(
                claim(&store, &pay, 2, fingerprint, NOW + 1).await,
                Claim::InProgress {
                    lease_until: NOW + LEASE,
                    fingerprint: Some(first),
                }
            );
        }
        // The owner claiming again with another token is a duplicate too.
        assert!(matches!(
            claim(&store, &pay, 3, None, NOW + LEASE - 1).await,
            Claim::InProgress { .. }
        ));

        let refund = key("refund");
        assert_eq!(claim(&store, &refund, 4, None, NOW).await, Claim::Claimed);
        assert_eq!(
            claim(&store, &refund, 5, Some(first), NOW).await,
            Claim::InProgress {
                lease_until: NOW + LEASE,
                fingerprint: None,
            }
        );
    }

    pub(crate) async fn complete_then_replay<S: TestStore>(store: S) {
        let fingerprint = Fingerprint::of("amount=5");
        let pay = key("pay");
        assert_eq!(
            claim(&store, &pay, 1, Some(fingerprint), NOW).await,
            Claim::Claimed
        );
        assert!(complete(&store, &pay, 1, b"receipt 17", NOW + TTL).await);
        let stored = Claim::Completed(StoredResult {
            fingerprint: Some(fingerprint),
            payload: b"receipt 17".to_vec(),
        });
        assert_eq!(
            claim(&store, &pay, 2, Some(fingerprint), NOW + 1).await,
            stored
        );
        // Past the lease (irrelevant once completed), before the TTL.
        assert_eq!(claim(&store, &pay, 3, None, NOW + TTL - 1).await, stored);
        // Completed: the owner's token no longer acts on it.
        assert!(!complete(&store, &pay, 1, b"another", NOW + TTL).await);
        assert!(!store.renew(&pay, 1, NOW + 2 * LEASE).await.unwrap());
        assert!(!store.release(&pay, 1).await.unwrap());
        assert_eq!(claim(&store, &pay, 4, None, NOW + 2).await, stored);

        // An empty result is a result, not "in progress".
        let empty = key("empty");
        assert_eq!(claim(&store, &empty, 5, None, NOW).await, Claim::Claimed);
        assert!(complete(&store, &empty, 5, b"", NOW + TTL).await);
        assert_eq!(
            claim(&store, &empty, 6, None, NOW).await,
            Claim::Completed(StoredResult {
                fingerprint: None,
                payload: Vec::new(),
            })
        );
    }

    pub(crate) async fn a_late_owner_still_completes_until_taken_over<S: TestStore>(store: S) {
        let pay = key("pay");
        assert_eq!(claim(&store, &pay, 1, None, NOW).await, Claim::Claimed);
        // The lease lapsed but nobody took the claim: the token still holds.
        assert!(store.renew(&pay, 1, NOW + 2 * LEASE).await.unwrap());
        assert!(complete(&store, &pay, 1, b"late", NOW + TTL).await);
        assert!(matches!(
            claim(&store, &pay, 2, None, NOW + 3 * LEASE).await,
            Claim::Completed(_)
        ));
    }

    pub(crate) async fn takeover_after_lease_expiry_fences_the_old_owner<S: TestStore>(store: S) {
        // The old claim has no fingerprint: one with another payload would
        // refuse the takeover (`conformance::takeover_checks_the_fingerprint`).
        let new = Fingerprint::of("new");
        let pay = key("pay");
        assert_eq!(claim(&store, &pay, 1, None, NOW).await, Claim::Claimed);
        assert!(matches!(
            claim(&store, &pay, 2, Some(new), NOW + LEASE - 1).await,
            Claim::InProgress { .. }
        ));
        // lease_until <= now: the claim has lapsed.
        let later = NOW + LEASE;
        assert_eq!(
            claim(&store, &pay, 2, Some(new), later).await,
            Claim::Claimed
        );
        let new_owner = Claim::InProgress {
            lease_until: later + LEASE,
            fingerprint: Some(new),
        };
        assert_eq!(claim(&store, &pay, 3, None, later + 1).await, new_owner);

        // The stale owner can do nothing, and changes nothing.
        assert!(!store.renew(&pay, 1, later + 10 * LEASE).await.unwrap());
        assert!(!complete(&store, &pay, 1, b"stale", later + TTL).await);
        assert!(!store.release(&pay, 1).await.unwrap());
        assert_eq!(claim(&store, &pay, 3, None, later + 2).await, new_owner);

        // The new owner acts as the only owner.
        assert!(store.renew(&pay, 2, later + 2 * LEASE).await.unwrap());
        assert!(complete(&store, &pay, 2, b"fresh", later + TTL).await);
        assert!(!complete(&store, &pay, 1, b"stale", later + TTL).await);
        assert_eq!(
            claim(&store, &pay, 4, None, later + 3).await,
            Claim::Completed(StoredResult {
                fingerprint: Some(new),
                payload: b"fresh".to_vec(),
            })
        );
    }

    pub(crate) async fn renew_extends_the_lease<S: TestStore>(store: S) {
        let pay = key("pay");
        assert_eq!(claim(&store, &pay, 1, None, NOW).await, Claim::Claimed);
        assert!(store.renew(&pay, 1, NOW + 2 * LEASE).await.unwrap());
        // The same lease again still matches (MySQL counts found rows, not changed ones).
        assert!(store.renew(&pay, 1, NOW + 2 * LEASE).await.unwrap());
        assert_eq!(
            claim(&store, &pay, 2, None, NOW + LEASE).await,
            Claim::InProgress {
                lease_until: NOW + 2 * LEASE,
                fingerprint: None,
            }
        );
        assert!(
            !store
                .renew(&key("absent"), 1, NOW + 2 * LEASE)
                .await
                .unwrap()
        );
        assert_eq!(
            claim(&store, &pay, 3, None, NOW + 2 * LEASE).await,
            Claim::Claimed
        );
    }

    pub(crate) async fn release_lets_a_retry_run<S: TestStore>(store: S) {
        let pay = key("pay");
        assert_eq!(claim(&store, &pay, 1, None, NOW).await, Claim::Claimed);
        assert!(!store.release(&pay, 2).await.unwrap());
        assert!(store.release(&pay, 1).await.unwrap());
        assert!(!store.release(&pay, 1).await.unwrap());
        assert!(!complete(&store, &pay, 1, b"after release", NOW + TTL).await);
        assert_eq!(claim(&store, &pay, 2, None, NOW + 1).await, Claim::Claimed);
    }

    pub(crate) async fn release_detached_releases<S: TestStore>(store: S) {
        let pay = key("pay");
        assert_eq!(claim(&store, &pay, 1, None, NOW).await, Claim::Claimed);
        store.release_detached(pay.clone(), 2); // not the owner: nothing happens
        store.release_detached(pay.clone(), 1);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut token = 10;
        loop {
            token += 1;
            match claim(&store, &pay, token, None, NOW + 1).await {
                Claim::Claimed => break,
                found => {
                    assert!(tokio::time::Instant::now() < deadline, "still {found:?}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }

    pub(crate) async fn ttl_expiry_makes_records_reclaimable<S: TestStore>(store: S) {
        let pay = key("pay");
        assert_eq!(claim(&store, &pay, 1, None, NOW).await, Claim::Claimed);
        assert!(complete(&store, &pay, 1, b"receipt", NOW + TTL).await);
        assert!(matches!(
            claim(&store, &pay, 2, None, NOW + TTL - 1).await,
            Claim::Completed(_)
        ));
        // expires_at <= now: gone, whatever the store still holds.
        assert_eq!(
            claim(&store, &pay, 3, None, NOW + TTL).await,
            Claim::Claimed
        );
        assert!(matches!(
            claim(&store, &pay, 4, None, NOW + TTL + 1).await,
            Claim::InProgress { .. }
        ));
        assert!(!complete(&store, &pay, 1, b"old owner", NOW + 2 * TTL).await);

        // A claim whose TTL ends before its lease lapses expires with the TTL.
        let short = key("short");
        let request = ClaimRequest {
            key: &short,
            token: 5,
            fingerprint: None,
            now: NOW,
            lease_until: NOW + LEASE,
            expires_at: NOW + 10,
        };
        assert_eq!(store.claim(&request).await.unwrap(), Claim::Claimed);
        assert_eq!(
            claim(&store, &short, 6, None, NOW + 10).await,
            Claim::Claimed
        );
    }

    /// 64 concurrent claims of one key, in a few rounds (a race that loses
    /// only sometimes must show): exactly one wins.
    pub(crate) async fn concurrent_claims_have_one_winner<S: TestStore>(store: S) {
        let fingerprint = Fingerprint::of("amount=5");
        for round in 0..4u64 {
            let name = format!("pay {round}");
            let claims: Vec<_> = (1..=64u64)
                .map(|token| {
                    let (store, name) = (store.clone(), name.clone());
                    tokio::spawn(async move {
                        (
                            token,
                            claim(&store, &key(&name), token, Some(fingerprint), NOW).await,
                        )
                    })
                })
                .collect();
            let mut winners = Vec::new();
            for handle in claims {
                match handle.await.unwrap() {
                    (token, Claim::Claimed) => winners.push(token),
                    (_, found) => assert_eq!(
                        found,
                        Claim::InProgress {
                            lease_until: NOW + LEASE,
                            fingerprint: Some(fingerprint),
                        }
                    ),
                }
            }
            assert_eq!(winners.len(), 1, "round {round}, winners: {winners:?}");
            // The winner's token holds.
            assert!(complete(&store, &key(&name), winners[0], b"once", NOW + TTL).await);
        }
    }

    /// 64 concurrent take-overs of a lapsed claim, in a few rounds: exactly one wins.
    pub(crate) async fn concurrent_takeovers_have_one_winner<S: TestStore>(store: S) {
        for round in 0..4u64 {
            let name = format!("lapsed {round}");
            assert_eq!(
                claim(&store, &key(&name), 1000, None, NOW).await,
                Claim::Claimed
            );
            let takeovers: Vec<_> = (1..=64u64)
                .map(|token| {
                    let (store, name) = (store.clone(), name.clone());
                    tokio::spawn(async move {
                        (
                            token,
                            claim(&store, &key(&name), token, None, NOW + LEASE).await,
                        )
                    })
                })
                .collect();
            let mut winners = Vec::new();
            for handle in takeovers {
                match handle.await.unwrap() {
                    (token, Claim::Claimed) => winners.push(token),
                    (_, found) => assert!(
                        matches!(found, Claim::InProgress { lease_until, .. } if lease_until == NOW + 2 * LEASE),
                        "{found:?}"
                    ),
                }
            }
            assert_eq!(winners.len(), 1, "round {round}, winners: {winners:?}");
            assert!(!store.release(&key(&name), 1000).await.unwrap());
            assert!(store.release(&key(&name), winners[0]).await.unwrap());
        }
    }

    pub(crate) async fn purge_deletes_expired_records<S: TestStore>(store: S) {
        let now = NOW + 100_000;
        let records = [
            // (name, claimed at, expires at, completed)
            ("completed, live", now - 1, now + TTL, true),
            ("completed, expired", NOW, now - 1, true),
            ("completed, expires now", NOW, now, true),
            ("claim, lapsed", NOW, NOW + TTL, false),
            ("claim, live", now - 1, now + TTL, false),
        ];
        for (token, (name, claimed_at, expires_at, completed)) in (1u64..).zip(records) {
            let key = key(name);
            let request = ClaimRequest {
                key: &key,
                token,
                fingerprint: None,
                now: claimed_at,
                lease_until: claimed_at + LEASE,
                expires_at,
            };
            assert_eq!(
                store.claim(&request).await.unwrap(),
                Claim::Claimed,
                "{name}"
            );
            if completed {
                assert!(complete(&store, &key, token, name.as_bytes(), expires_at).await);
            }
        }
        // The lapsed claim is not expired: it is kept until its TTL ends.
        assert_eq!(store.purge_expired(now).await.unwrap(), 2);
        assert_eq!(store.purge_expired(now).await.unwrap(), 0);
        assert!(matches!(
            claim(&store, &key("completed, live"), 10, None, now).await,
            Claim::Completed(_)
        ));
        assert!(matches!(
            claim(&store, &key("claim, live"), 10, None, now).await,
            Claim::InProgress { .. }
        ));
        // The purged ones are gone: their owners' tokens no longer hold.
        assert!(!complete(&store, &key("completed, expired"), 2, b"again", now + TTL).await);
        // The lapsed claim is still its owner's.
        assert!(
            store
                .renew(&key("claim, lapsed"), 4, now + LEASE)
                .await
                .unwrap()
        );
        assert_eq!(store.purge_expired(now + 2 * TTL).await.unwrap(), 3);
    }

    /// More expired rows than two purge batches (1000 each): one
    /// `purge_expired` deletes them all and counts them all.
    pub(crate) async fn purge_deletes_every_batch<S: TestStore>(store: S) {
        const ROWS: u64 = 2_345;
        let now = NOW + 100_000;
        let keys: Vec<RecordKey> = (0..ROWS).map(|row| key(&format!("row {row}"))).collect();
        let claims: Vec<_> = keys
            .chunks(ROWS.div_ceil(8) as usize)
            .map(|chunk| {
                let (store, chunk) = (store.clone(), chunk.to_vec());
                tokio::spawn(async move {
                    for (token, key) in (1u64..).zip(&chunk) {
                        let request = ClaimRequest {
                            key,
                            token,
                            fingerprint: None,
                            now: NOW,
                            lease_until: NOW + LEASE,
                            expires_at: now - 1,
                        };
                        assert_eq!(store.claim(&request).await.unwrap(), Claim::Claimed);
                    }
                })
            })
            .collect();
        for claims in claims {
            claims.await.unwrap();
        }
        let live = key("live");
        assert_eq!(claim(&store, &live, 1, None, now).await, Claim::Claimed);
        assert_eq!(store.purge_expired(now).await.unwrap(), ROWS);
        assert_eq!(store.purge_expired(now).await.unwrap(), 0);
        assert!(matches!(
            claim(&store, &live, 2, None, now).await,
            Claim::InProgress { .. }
        ));
    }

    pub(crate) async fn a_large_result_round_trips<S: TestStore>(store: S) {
        let payload: Vec<u8> = std::iter::repeat_with(|| fastrand::u8(..))
            .take(1 << 20)
            .collect();
        let big = key("big");
        assert_eq!(claim(&store, &big, 1, None, NOW).await, Claim::Claimed);
        assert!(complete(&store, &big, 1, &payload, NOW + TTL).await);
        match claim(&store, &big, 2, None, NOW + 1).await {
            Claim::Completed(stored) => assert!(
                stored.payload == payload,
                "the 1 MiB payload came back changed"
            ),
            found => panic!("{found:?}"),
        }
    }

    pub(crate) async fn scopes_are_separate<S: TestStore>(store: S) {
        // Two scopes, the same hash (forged): two records.
        let hash = *key("pay").hash();
        let (left, right) = (
            RecordKey::from_parts("tenant-a".to_owned(), hash),
            RecordKey::from_parts("tenant-b".to_owned(), hash),
        );
        assert_eq!(claim(&store, &left, 1, None, NOW).await, Claim::Claimed);
        assert_eq!(claim(&store, &right, 2, None, NOW).await, Claim::Claimed);
        assert!(complete(&store, &left, 1, b"a", NOW + TTL).await);
        assert!(!complete(&store, &right, 1, b"a", NOW + TTL).await);
        assert!(matches!(
            claim(&store, &right, 3, None, NOW).await,
            Claim::InProgress { .. }
        ));
        // Scopes compare case-sensitively. (MySQL ignores trailing spaces
        // in comparisons, harmless since the hash covers the scope.)
        let upper = RecordKey::from_parts("TENANT-A".to_owned(), hash);
        assert_eq!(claim(&store, &upper, 4, None, NOW).await, Claim::Claimed);
    }

    pub(crate) async fn tokens_use_all_64_bits<S: TestStore>(store: S) {
        // The engine's tokens fit in i64; a caller of the trait may use any u64.
        for (name, token) in [
            ("max", u64::MAX),
            ("high bit", 1 << 63),
            ("i64 max", i64::MAX as u64),
        ] {
            let key = key(name);
            assert_eq!(
                claim(&store, &key, token, None, NOW).await,
                Claim::Claimed,
                "{name}"
            );
            assert!(
                store.renew(&key, token, NOW + LEASE).await.unwrap(),
                "{name}"
            );
            assert!(
                complete(&store, &key, token, b"ok", NOW + TTL).await,
                "{name}"
            );
        }
    }

    /// `conformance::run_all`, then its 64 claims from 64 tasks.
    #[cfg(feature = "testing")]
    pub(crate) async fn conformance_suite<S: TestStore>(store: S) {
        use steadfast_runtime::idempotency::conformance;
        conformance::run_all(&store).await;
        conformance::concurrent_claims_in_tasks(std::sync::Arc::new(store)).await;
    }

    pub(crate) async fn migrate_is_idempotent_and_concurrent<S: TestStore>(store: S) {
        store.migrate().await;
        store.migrate().await;
        assert_eq!(
            claim(&store, &key("pay"), 1, None, NOW).await,
            Claim::Claimed
        );
        store.migrate().await;
        assert!(matches!(
            claim(&store, &key("pay"), 2, None, NOW).await,
            Claim::InProgress { .. }
        ));

        // Several replicas migrating a fresh table at once.
        let fresh = store.other_table(&table_name());
        let replicas: Vec<_> = (0..8)
            .map(|_| {
                let fresh = fresh.clone();
                tokio::spawn(async move { fresh.migrate().await })
            })
            .collect();
        let mut failure = None;
        for replica in replicas {
            if let Err(error) = replica.await {
                failure.get_or_insert(error);
            }
        }
        let claimed = match failure {
            None => Some(claim(&fresh, &key("pay"), 1, None, NOW).await),
            Some(_) => None,
        };
        fresh.drop_table().await;
        if let Some(failure) = failure {
            std::panic::resume_unwind(failure.into_panic());
        }
        assert_eq!(claimed, Some(Claim::Claimed));
    }
}

/// One `#[tokio::test]` per check, for the store type `$store`.
macro_rules! checks {
    ($store:ty) => {
        checks!(@each $store;
            claim_then_duplicate,
            complete_then_replay,
            a_late_owner_still_completes_until_taken_over,
            takeover_after_lease_expiry_fences_the_old_owner,
            renew_extends_the_lease,
            release_lets_a_retry_run,
            release_detached_releases,
            ttl_expiry_makes_records_reclaimable,
            concurrent_claims_have_one_winner,
            concurrent_takeovers_have_one_winner,
            purge_deletes_expired_records,
            purge_deletes_every_batch,
            a_large_result_round_trips,
            scopes_are_separate,
            tokens_use_all_64_bits,
            migrate_is_idempotent_and_concurrent,
        );
    };
    (@each $store:ty; $($check:ident,)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $check() {
            crate::run::<$store, _>(crate::checks::$check).await;
        }
    )*
        /// The public conformance kit, as a user would run it on their store.
        #[cfg(feature = "testing")]
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn conformance_suite() {
            crate::run::<$store, _>(crate::checks::conformance_suite).await;
        }
    };
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use std::path::{Path, PathBuf};

    use sqlx::Row;
    use steadfast_runtime::idempotency::{Claim, DEFAULT_TABLE, SqliteStore};

    use super::*;

    fn temp_file() -> PathBuf {
        std::env::temp_dir().join(format!(
            "steadfast-sql-stores-{:016x}.db",
            fastrand::u64(..)
        ))
    }

    async fn connect(path: &Path) -> SqliteStore {
        SqliteStore::connect(&format!("sqlite:{}?mode=rwc", path.display()))
            .await
            .unwrap()
    }

    fn remove_database(path: &Path) {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = path.as_os_str().to_owned();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }

    /// Each test has a file of its own, removed with its last table.
    impl TestStore for SqliteStore {
        async fn open(table: &str) -> Option<SqliteStore> {
            let store = connect(&temp_file()).await.with_table(table).unwrap();
            store.migrate().await.unwrap();
            Some(store)
        }

        fn other_table(&self, table: &str) -> SqliteStore {
            self.clone().with_table(table).unwrap()
        }

        async fn migrate(&self) {
            SqliteStore::migrate(self).await.unwrap();
        }

        async fn drop_table(&self) {
            drop_quoted(self, '"').await;
            let tables: i64 =
                sqlx::query_scalar("SELECT count(*) FROM sqlite_master WHERE type = 'table'")
                    .fetch_one(self.pool())
                    .await
                    .unwrap();
            if tables == 0 {
                self.pool().close().await;
                remove_database(self.pool().connect_options().get_filename());
            }
        }
    }

    checks!(SqliteStore);

    /// A replay, and a duplicate of a claim in progress, only read: they
    /// are answered while another connection holds the database's write
    /// lock (an upsert would wait for it, up to the 5 s busy timeout).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replay_takes_no_write_lock() {
        crate::run::<SqliteStore, _>(replays_take_no_write_lock).await;
    }

    async fn replays_take_no_write_lock(store: SqliteStore) {
        use sqlx::Connection;

        let (pay, live) = (key("pay"), key("live"));
        assert_eq!(claim(&store, &pay, 1, None, NOW).await, Claim::Claimed);
        assert!(complete(&store, &pay, 1, b"receipt", NOW + TTL).await);
        assert_eq!(claim(&store, &live, 2, None, NOW).await, Claim::Claimed);
        let path = store.pool().connect_options().get_filename().to_owned();
        let mut writer = sqlx::SqliteConnection::connect(&format!("sqlite:{}", path.display()))
            .await
            .unwrap();
        sqlx::raw_sql("BEGIN IMMEDIATE")
            .execute(&mut writer)
            .await
            .unwrap();
        let replays = async {
            for token in 3..6 {
                assert!(matches!(
                    claim(&store, &pay, token, None, NOW + 1).await,
                    Claim::Completed(_)
                ));
                assert!(matches!(
                    claim(&store, &live, token, None, NOW + 1).await,
                    Claim::InProgress { .. }
                ));
            }
        };
        let answered = tokio::time::timeout(Duration::from_secs(1), replays).await;
        sqlx::raw_sql("ROLLBACK")
            .execute(&mut writer)
            .await
            .unwrap();
        writer.close().await.unwrap();
        assert!(answered.is_ok(), "a replay waited for the write lock");
    }

    #[tokio::test]
    async fn connect_sets_wal_normal_and_a_busy_timeout() {
        let path = temp_file();
        let store = connect(&path).await;
        let pool = store.pool();
        let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(pool)
            .await
            .unwrap();
        let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(pool)
            .await
            .unwrap();
        let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!((journal.as_str(), synchronous, busy), ("wal", 1, 5000));
        assert_eq!(store.table(), DEFAULT_TABLE);
        store.migrate().await.unwrap();
        let index: String =
            sqlx::query("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'steadfast_idempotency' AND sql IS NOT NULL")
                .fetch_one(pool)
                .await
                .unwrap()
                .get(0);
        assert_eq!(index, "steadfast_idempotency_expires_at");
        pool.close().await;
        remove_database(&path);
    }

    #[tokio::test]
    async fn a_missing_file_is_an_error_without_mode_rwc() {
        let path = temp_file();
        let error = SqliteStore::connect(&format!("sqlite:{}", path.display()))
            .await
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("cannot open the SQLite database"),
            "{error}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn in_memory_database_lives_as_long_as_the_store() {
        let store = SqliteStore::connect("sqlite::memory:").await.unwrap();
        store.migrate().await.unwrap();
        let pay = key("pay");
        assert_eq!(claim(&store, &pay, 1, None, NOW).await, Claim::Claimed);
        // Concurrent callers share the one connection, and the one database.
        let claims: Vec<_> = (2..=17)
            .map(|token| {
                let store = store.clone();
                tokio::spawn(async move { claim(&store, &key("pay"), token, None, NOW).await })
            })
            .collect();
        for handle in claims {
            assert!(matches!(handle.await.unwrap(), Claim::InProgress { .. }));
        }
        assert!(complete(&store, &pay, 1, b"receipt", NOW + TTL).await);
        assert!(matches!(
            claim(&store, &pay, 20, None, NOW).await,
            Claim::Completed(_)
        ));
        // Another store, another database.
        let other = SqliteStore::connect("sqlite::memory:").await.unwrap();
        other.migrate().await.unwrap();
        assert_eq!(claim(&other, &pay, 21, None, NOW).await, Claim::Claimed);
    }

    #[tokio::test]
    async fn table_names_are_validated() {
        let store = SqliteStore::connect("sqlite::memory:").await.unwrap();
        for name in [
            "",
            "1st",
            "a-b",
            "a b",
            "t; DROP TABLE x",
            "\"t\"",
            "tëst",
            &"t".repeat(64),
        ] {
            let error = store.clone().with_table(name).unwrap_err();
            assert!(
                error.to_string().contains("invalid table name"),
                "{name}: {error}"
            );
        }
        for name in ["t", "_t", "Idempotency_2", "select", &"t".repeat(63)] {
            let store = store.clone().with_table(name).unwrap();
            assert_eq!(store.table(), name);
            store.migrate().await.unwrap();
            assert_eq!(
                claim(&store, &key("pay"), 1, None, NOW).await,
                Claim::Claimed,
                "{name}"
            );
        }
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use sqlx::postgres::PgPoolOptions;
    use steadfast_runtime::idempotency::PostgresStore;

    use super::*;

    const URL: &str = steadfast_test_support::POSTGRES_URL;

    impl TestStore for PostgresStore {
        async fn open(table: &str) -> Option<PostgresStore> {
            open_on_server(URL, table).await
        }

        fn other_table(&self, table: &str) -> PostgresStore {
            self.clone().with_table(table).unwrap()
        }

        async fn migrate(&self) {
            PostgresStore::migrate(self).await.unwrap();
        }

        async fn drop_table(&self) {
            drop_quoted(self, '"').await;
        }
    }

    checks!(PostgresStore);

    #[tokio::test]
    async fn table_names_are_validated() {
        let pool = PgPoolOptions::new()
            .connect_lazy("postgres://nobody@127.0.0.1:1/none")
            .unwrap();
        let store = PostgresStore::from_pool(pool);
        for name in [
            "",
            "1st",
            "a-b",
            "t; DROP TABLE x",
            "\"t\"",
            &"t".repeat(64),
        ] {
            assert!(store.clone().with_table(name).is_err(), "{name}");
        }
        assert_eq!(
            store.with_table(&"t".repeat(63)).unwrap().table(),
            "t".repeat(63)
        );
    }

    #[tokio::test]
    async fn a_long_table_name_gets_an_index_of_its_own() {
        let table = table_name();
        let table = format!("{table}{}", "x".repeat(63 - table.len()));
        let Some(store) = PostgresStore::open(&table).await else {
            return;
        };
        store.migrate().await.unwrap();
        let indexes: Vec<String> =
            sqlx::query_scalar("SELECT indexname::TEXT FROM pg_indexes WHERE tablename = $1")
                .bind(store.table())
                .fetch_all(store.pool())
                .await
                .unwrap();
        store.drop_table().await;
        assert_eq!(indexes.len(), 2, "{indexes:?}"); // the primary key's and ours
        assert!(
            indexes
                .iter()
                .any(|index| index.ends_with("_expires_at") && index.len() == 63),
            "{indexes:?}"
        );
    }

    /// A replay, and a duplicate of a claim in progress, only read: the
    /// record's row keeps its version and gets no locker (`xmax` stays 0,
    /// where `INSERT … ON CONFLICT DO UPDATE … WHERE false` locks it), and
    /// the claim statement, run in a transaction, assigns no transaction id
    /// (so an autocommit claim writes no commit record and waits for no
    /// flush).
    #[tokio::test]
    async fn a_replay_takes_no_lock_and_no_transaction_id() {
        crate::run::<PostgresStore, _>(replays_only_read).await;
    }

    async fn replays_only_read(store: PostgresStore) {
        let (pay, live) = (key("pay"), key("live"));
        assert_eq!(claim(&store, &pay, 1, None, NOW).await, Claim::Claimed);
        assert!(complete(&store, &pay, 1, b"receipt", NOW + TTL).await);
        assert_eq!(claim(&store, &live, 2, None, NOW).await, Claim::Claimed);
        let versions = || async {
            let select = format!(
                r#"SELECT string_agg(ctid::TEXT || ':' || xmin::TEXT || ':' || xmax::TEXT, ' ' ORDER BY key_hash) FROM "{}""#,
                store.table()
            );
            sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(select))
                .fetch_one(store.pool())
                .await
                .unwrap()
        };
        let before = versions().await;
        assert!(before.split(' ').all(|row| row.ends_with(":0")), "{before}");
        for token in 3..6 {
            assert!(matches!(
                claim(&store, &pay, token, None, NOW + 1).await,
                Claim::Completed(_)
            ));
            assert!(matches!(
                claim(&store, &live, token, None, NOW + 1).await,
                Claim::InProgress { .. }
            ));
        }
        assert_eq!(versions().await, before, "a replay locked or wrote a row");

        let (claim_sql, _) = store.statements();
        let mut transaction = store.pool().begin().await.unwrap();
        for record in [&pay, &live] {
            let claimed: bool = sqlx::query_scalar(claim_sql.clone())
                .bind(record.scope())
                .bind(&record.hash()[..])
                .bind(9_i64)
                .bind(None::<&[u8]>)
                .bind(NOW + 1 + LEASE)
                .bind(NOW + 1 + TTL)
                .bind(NOW + 1)
                .fetch_one(&mut *transaction)
                .await
                .unwrap();
            assert!(!claimed);
        }
        let xid: Option<String> =
            sqlx::query_scalar("SELECT pg_current_xact_id_if_assigned()::TEXT")
                .fetch_one(&mut *transaction)
                .await
                .unwrap();
        transaction.rollback().await.unwrap();
        assert_eq!(xid, None, "a replay took a transaction id");
    }
}

#[cfg(feature = "mysql")]
mod mysql {
    use sqlx::mysql::MySqlPoolOptions;
    use steadfast_runtime::idempotency::MySqlStore;

    use super::*;

    const URL: &str = steadfast_test_support::MYSQL_URL;

    impl TestStore for MySqlStore {
        async fn open(table: &str) -> Option<MySqlStore> {
            open_on_server(URL, table).await
        }

        fn other_table(&self, table: &str) -> MySqlStore {
            self.clone().with_table(table).unwrap()
        }

        async fn migrate(&self) {
            MySqlStore::migrate(self).await.unwrap();
        }

        async fn drop_table(&self) {
            drop_quoted(self, '`').await;
        }
    }

    checks!(MySqlStore);

    #[tokio::test]
    async fn table_names_are_validated() {
        let pool = MySqlPoolOptions::new()
            .connect_lazy("mysql://nobody@127.0.0.1:1/none")
            .unwrap();
        let store = MySqlStore::from_pool(pool);
        for name in ["", "1st", "a-b", "t; DROP TABLE x", "`t`", &"t".repeat(64)] {
            assert!(store.clone().with_table(name).is_err(), "{name}");
        }
        assert_eq!(
            store.with_table(&"t".repeat(63)).unwrap().table(),
            "t".repeat(63)
        );
    }

    /// A table made without the index on `expires_at` (by an older
    /// version) gets it from `migrate`, once, however often it runs.
    #[tokio::test]
    async fn migrate_adds_the_index_to_an_older_table() {
        let Some(store) = MySqlStore::open(&table_name()).await else {
            return;
        };
        let outcome = tokio::spawn(older_table_gets_the_index(store.clone())).await;
        store.drop_table().await;
        if let Err(failure) = outcome {
            std::panic::resume_unwind(failure.into_panic());
        }
    }

    async fn older_table_gets_the_index(store: MySqlStore) {
        let table = store.table().to_owned();
        let indexes = || async {
            sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM information_schema.STATISTICS
                 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND COLUMN_NAME = 'expires_at'",
            )
            .bind(&table)
            .fetch_one(store.pool())
            .await
            .unwrap()
        };
        assert_eq!(indexes().await, 1, "a new table has the index");
        let drop = format!("ALTER TABLE `{table}` DROP INDEX expires_at_index");
        sqlx::query(sqlx::AssertSqlSafe(drop))
            .execute(store.pool())
            .await
            .unwrap();
        assert_eq!(indexes().await, 0);
        let replicas: Vec<_> = (0..4)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move { store.migrate().await })
            })
            .collect();
        for replica in replicas {
            replica.await.unwrap().unwrap();
        }
        assert_eq!(indexes().await, 1, "migrate added the index, once");
        store.migrate().await.unwrap();
        assert_eq!(indexes().await, 1);
    }

    /// The claim reads the server's report of what its upsert did; a claim
    /// that inserts or takes over is one round trip. Checked through the
    /// session's `LAST_INSERT_ID`, on a pool of one connection.
    #[tokio::test]
    async fn the_claim_reports_its_outcome_in_last_insert_id() {
        on_one_connection(last_insert_ids).await;
    }

    /// Runs `check` over a store whose pool has one connection (so that the
    /// session's variables are the store's), then drops its table, also
    /// when `check` panics.
    async fn on_one_connection<F>(check: impl FnOnce(MySqlStore) -> F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let Some(url) = steadfast_test_support::server_url(URL) else {
            return;
        };
        let pool = MySqlPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .unwrap();
        let store = MySqlStore::from_pool(pool)
            .with_table(&table_name())
            .unwrap();
        store.migrate().await.unwrap();
        let outcome = tokio::spawn(check(store.clone())).await;
        store.drop_table().await;
        if let Err(failure) = outcome {
            std::panic::resume_unwind(failure.into_panic());
        }
    }

    async fn last_insert_ids(store: MySqlStore) {
        let last = || async {
            sqlx::query_scalar::<_, u64>("SELECT LAST_INSERT_ID()")
                .fetch_one(store.pool())
                .await
                .unwrap()
        };
        let pay = key("pay");
        assert_eq!(claim(&store, &pay, 1, None, NOW).await, Claim::Claimed);
        assert_eq!(last().await, 3, "inserted");
        assert!(matches!(
            claim(&store, &pay, 2, None, NOW).await,
            Claim::InProgress { .. }
        ));
        assert_eq!(last().await, 3, "a live record is only read: no upsert ran");
        assert_eq!(
            claim(&store, &pay, 3, None, NOW + LEASE).await,
            Claim::Claimed
        );
        assert_eq!(last().await, 2, "taken over");
    }

    /// A replay, and a duplicate of a claim in progress, only read: the
    /// session's handler counters show no row written or updated (the
    /// upsert of a duplicate key counts a write, and locks the row, even
    /// when it changes nothing). On a pool of one connection, so that the
    /// counters are the store's session's.
    #[tokio::test]
    async fn a_replay_writes_nothing() {
        on_one_connection(replays_write_nothing).await;
    }

    async fn replays_write_nothing(store: MySqlStore) {
        let writes = || async {
            sqlx::query_scalar::<_, String>(
                "SELECT GROUP_CONCAT(VARIABLE_VALUE ORDER BY VARIABLE_NAME) FROM information_schema.SESSION_STATUS \
                 WHERE VARIABLE_NAME IN ('HANDLER_WRITE', 'HANDLER_UPDATE', 'HANDLER_DELETE')",
            )
            .fetch_one(store.pool())
            .await
            .unwrap()
        };
        let (pay, live) = (key("pay"), key("live"));
        assert_eq!(claim(&store, &pay, 1, None, NOW).await, Claim::Claimed);
        assert!(complete(&store, &pay, 1, b"receipt", NOW + TTL).await);
        assert_eq!(claim(&store, &live, 2, None, NOW).await, Claim::Claimed);
        let before = writes().await;
        assert_eq!(
            writes().await,
            before,
            "reading the counters writes nothing"
        );
        for token in 3..6 {
            assert!(matches!(
                claim(&store, &pay, token, None, NOW + 1).await,
                Claim::Completed(_)
            ));
            assert!(matches!(
                claim(&store, &live, token, None, NOW + 1).await,
                Claim::InProgress { .. }
            ));
        }
        assert_eq!(writes().await, before, "a replay wrote or locked a row");
        // A fresh key still writes.
        assert_eq!(
            claim(&store, &key("new"), 6, None, NOW).await,
            Claim::Claimed
        );
        assert_ne!(writes().await, before);
    }
}
