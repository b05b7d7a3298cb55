//! `sqlx::Error`s from real databases, classified.
//!
//! SQLite runs in memory (or in a temporary file) and always runs. PostgreSQL
//! and MySQL/MariaDB run when `STEADFAST_TEST_POSTGRES_URL` and
//! `STEADFAST_TEST_MYSQL_URL` are set (for example
//! `postgres://postgres@127.0.0.1:5432/test` and `mysql://root@127.0.0.1:3306/test`);
//! without them they print "skipped" and pass, except under `CI=true`, where
//! they fail.

use std::time::Duration;

use sqlx::{
    Connection, Row,
    sqlite::{SqliteConnectOptions, SqliteConnection, SqlitePool, SqlitePoolOptions},
};
use steadfast_runtime::{Classify, Code};

/// A pool of one connection to one in-memory database (each connection to
/// `sqlite::memory:` has its own), with a table of accounts.
async fn accounts() -> SqlitePool {
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_millis(100))
        .connect("sqlite::memory:")
        .await
        .unwrap();
    sqlx::query("CREATE TABLE accounts (name TEXT PRIMARY KEY, cents INTEGER NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO accounts VALUES ('alice', 100)")
        .execute(&pool)
        .await
        .unwrap();
    pool
}

/// A name no other test run uses, for tables that several connections share.
#[cfg(any(feature = "postgres", feature = "mysql"))]
fn unique_table(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}_{}_{nanos}", std::process::id())
}

/// The error of inserting `alice` twice into a fresh `accounts` table
/// (created by `create`), on a connection to a database server.
#[cfg(any(feature = "postgres", feature = "mysql"))]
async fn insert_alice_twice<C>(connection: &mut C, create: &'static str) -> sqlx::Error
where
    for<'c> &'c mut C: sqlx::Executor<'c>,
{
    use sqlx::Executor;

    (&mut *connection).execute(create).await.unwrap();
    (&mut *connection)
        .execute("INSERT INTO accounts VALUES ('alice')")
        .await
        .unwrap();
    connection
        .execute("INSERT INTO accounts VALUES ('alice')")
        .await
        .err()
        .expect("the second alice is refused")
}

#[tokio::test]
async fn sqlite_unique_violation_is_already_exists() {
    let pool = accounts().await;
    let error = sqlx::query("INSERT INTO accounts VALUES ('alice', 5)")
        .execute(&pool)
        .await
        .unwrap_err();
    assert!(
        error.as_database_error().unwrap().is_unique_violation(),
        "{error}"
    );
    assert_eq!(error.code(), Some(Code::AlreadyExists));
}

#[tokio::test]
async fn sqlite_not_null_violation_is_failed_precondition() {
    let pool = accounts().await;
    let error = sqlx::query("INSERT INTO accounts VALUES ('bob', NULL)")
        .execute(&pool)
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(Code::FailedPrecondition), "{error}");
}

#[tokio::test]
async fn sqlite_missing_row_is_not_found() {
    let pool = accounts().await;
    let error = sqlx::query("SELECT cents FROM accounts WHERE name = 'nobody'")
        .fetch_one(&pool)
        .await
        .unwrap_err();
    assert!(matches!(error, sqlx::Error::RowNotFound), "{error}");
    assert_eq!(error.code(), Some(Code::NotFound));
}

#[tokio::test]
async fn sqlite_syntax_error_is_internal() {
    let pool = accounts().await;
    let error = sqlx::query("SELEKT 1").execute(&pool).await.unwrap_err();
    assert_eq!(error.code(), Some(Code::Internal), "{error}");
}

#[tokio::test]
async fn sqlite_busy_database_is_unavailable() {
    let path = std::env::temp_dir().join(format!("steadfast-busy-{}.db", std::process::id()));
    let options = SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true)
        .busy_timeout(Duration::ZERO);
    let mut writer = SqliteConnection::connect_with(&options).await.unwrap();
    let mut other = SqliteConnection::connect_with(&options).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut writer)
        .await
        .unwrap();
    let error = sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap_err();
    assert_eq!(
        error.as_database_error().unwrap().code().as_deref(),
        Some("5"),
        "{error}"
    );
    assert_eq!(error.code(), Some(Code::Unavailable));
    drop((writer, other));
    let _ = std::fs::remove_file(path);
}

#[tokio::test]
async fn pool_timeout_is_unavailable_and_closed_pool_is_cancelled() {
    let pool = accounts().await;
    let held = pool.acquire().await.unwrap();
    let error = pool.acquire().await.unwrap_err();
    assert!(matches!(error, sqlx::Error::PoolTimedOut), "{error}");
    assert_eq!(error.code(), Some(Code::Unavailable));
    drop(held);

    pool.close().await;
    let error = pool.acquire().await.unwrap_err();
    assert!(matches!(error, sqlx::Error::PoolClosed), "{error}");
    assert_eq!(error.code(), Some(Code::Cancelled));
}

#[tokio::test]
async fn sqlite_success_has_nothing_to_classify() {
    let pool = accounts().await;
    let row = sqlx::query("SELECT cents FROM accounts WHERE name = 'alice'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(row.get::<i64, _>("cents"), 100);
}

#[cfg(feature = "postgres")]
mod postgres {
    use sqlx::{AssertSqlSafe, Executor, PgConnection};

    use super::*;

    const URL: &str = steadfast_test_support::POSTGRES_URL;

    #[tokio::test]
    async fn refused_connection_is_unavailable() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let error = PgConnection::connect(&format!("postgres://postgres@127.0.0.1:{port}/test"))
            .await
            .unwrap_err();
        assert!(matches!(error, sqlx::Error::Io(_)), "{error}");
        assert_eq!(error.code(), Some(Code::Unavailable));
    }

    #[tokio::test]
    async fn unique_violation_is_already_exists() {
        let Some(url) = steadfast_test_support::server_url(URL) else {
            return;
        };
        let mut connection = PgConnection::connect(&url).await.unwrap();
        let error = insert_alice_twice(
            &mut connection,
            "CREATE TEMP TABLE accounts (name TEXT PRIMARY KEY)",
        )
        .await;
        let database = error.as_database_error().unwrap();
        assert_eq!(database.code().as_deref(), Some("23505"), "{error}");
        assert_eq!(error.code(), Some(Code::AlreadyExists));
    }

    #[tokio::test]
    async fn statement_timeout_is_cancelled() {
        let Some(url) = steadfast_test_support::server_url(URL) else {
            return;
        };
        let mut connection = PgConnection::connect(&url).await.unwrap();
        connection
            .execute("SET statement_timeout = '20ms'")
            .await
            .unwrap();
        let error = connection.execute("SELECT pg_sleep(5)").await.unwrap_err();
        let database = error.as_database_error().unwrap();
        assert_eq!(database.code().as_deref(), Some("57014"), "{error}");
        assert_eq!(error.code(), Some(Code::Cancelled));
    }

    #[tokio::test]
    async fn deadlock_is_aborted() {
        let Some(url) = steadfast_test_support::server_url(URL) else {
            return;
        };
        let table = unique_table("steadfast_deadlock");
        let mut setup = PgConnection::connect(&url).await.unwrap();
        setup
            .execute(AssertSqlSafe(format!(
                "CREATE TABLE {table} (id INT PRIMARY KEY, cents INT)"
            )))
            .await
            .unwrap();
        setup
            .execute(AssertSqlSafe(format!(
                "INSERT INTO {table} VALUES (1, 0), (2, 0)"
            )))
            .await
            .unwrap();

        let mut first = PgConnection::connect(&url).await.unwrap();
        let mut second = PgConnection::connect(&url).await.unwrap();
        for connection in [&mut first, &mut second] {
            connection
                .execute("SET deadlock_timeout = '20ms'")
                .await
                .unwrap();
            connection.execute("BEGIN").await.unwrap();
        }
        let update = |id: i32| {
            AssertSqlSafe(format!(
                "UPDATE {table} SET cents = cents + 1 WHERE id = {id}"
            ))
        };
        first.execute(update(1)).await.unwrap();
        second.execute(update(2)).await.unwrap();
        // Each now waits for the row the other holds.
        let (a, b) = tokio::join!(first.execute(update(2)), second.execute(update(1)));
        let error = a
            .err()
            .or(b.err())
            .expect("one of them is the deadlock's victim");
        let database = error.as_database_error().unwrap();
        assert_eq!(database.code().as_deref(), Some("40P01"), "{error}");
        assert_eq!(error.code(), Some(Code::Aborted));

        drop((first, second));
        setup
            .execute(AssertSqlSafe(format!("DROP TABLE {table}")))
            .await
            .unwrap();
    }
}

#[cfg(feature = "mysql")]
mod mysql {
    use sqlx::{AssertSqlSafe, Executor, MySqlConnection};

    use super::*;

    const URL: &str = steadfast_test_support::MYSQL_URL;

    #[tokio::test]
    async fn duplicate_entry_is_already_exists() {
        let Some(url) = steadfast_test_support::server_url(URL) else {
            return;
        };
        let mut connection = MySqlConnection::connect(&url).await.unwrap();
        let error = insert_alice_twice(
            &mut connection,
            "CREATE TEMPORARY TABLE accounts (name VARCHAR(20) PRIMARY KEY)",
        )
        .await;
        let mysql = error
            .as_database_error()
            .unwrap()
            .downcast_ref::<sqlx::mysql::MySqlDatabaseError>();
        assert_eq!(mysql.number(), 1062, "{error}");
        assert_eq!(error.code(), Some(Code::AlreadyExists));
    }

    #[tokio::test]
    async fn lock_wait_timeout_is_aborted() {
        let Some(url) = steadfast_test_support::server_url(URL) else {
            return;
        };
        let table = unique_table("steadfast_lock_wait");
        let mut holder = MySqlConnection::connect(&url).await.unwrap();
        holder
            .execute(AssertSqlSafe(format!(
                "CREATE TABLE {table} (id INT PRIMARY KEY, cents INT) ENGINE = InnoDB"
            )))
            .await
            .unwrap();
        holder
            .execute(AssertSqlSafe(format!("INSERT INTO {table} VALUES (1, 0)")))
            .await
            .unwrap();
        holder.execute("BEGIN").await.unwrap();
        holder
            .execute(AssertSqlSafe(format!(
                "UPDATE {table} SET cents = 1 WHERE id = 1"
            )))
            .await
            .unwrap();

        let mut waiter = MySqlConnection::connect(&url).await.unwrap();
        // One second is the shortest wait InnoDB accepts.
        waiter
            .execute("SET SESSION innodb_lock_wait_timeout = 1")
            .await
            .unwrap();
        let error = waiter
            .execute(AssertSqlSafe(format!(
                "UPDATE {table} SET cents = 2 WHERE id = 1"
            )))
            .await
            .unwrap_err();
        let mysql = error
            .as_database_error()
            .unwrap()
            .downcast_ref::<sqlx::mysql::MySqlDatabaseError>();
        assert_eq!(mysql.number(), 1205, "{error}");
        assert_ne!(
            mysql.code(),
            Some("40001"),
            "the number, not the SQLSTATE, tells"
        );
        assert_eq!(error.code(), Some(Code::Aborted));

        holder.execute("ROLLBACK").await.unwrap();
        holder
            .execute(AssertSqlSafe(format!("DROP TABLE {table}")))
            .await
            .unwrap();
    }
}
