//! `#[steadfast::idempotent]` over each store, side by side with the bare
//! handler and with raw sqlx running the PostgreSQL store's own statements.
//!
//! Three criterion groups, on one current-thread tokio runtime each:
//!
//! - `in_process`: the handler without the attribute (`bare`), and with it
//!   over a `MemoryStore`, each call with a new key (`memory_fresh`: claim,
//!   body, complete) or the same, completed key (`memory_replay`: claim,
//!   and a clone of the value the first replay decoded, since the result
//!   type is `Clone`; `memory_replay_unclonable`: the same result in a
//!   type that is not, decoded from JSON on every replay).
//! - `sqlite`: the same over a `SqliteStore` on a temporary file in WAL mode.
//! - `postgres`: the same over a `PostgresStore` (`STEADFAST_TEST_POSTGRES_URL`,
//!   default `postgres://postgres@127.0.0.1:5432/test`; the group is skipped
//!   with a note when the server cannot be reached), and the physical limit:
//!   raw sqlx running exactly the statements the store runs per request
//!   (`PostgresStore::statements`: claim + complete when fresh, claim on a
//!   replay), with the same binds and the same row decoding, once over the
//!   store's own pool (`raw_pool_*`) and once over one connection held for
//!   the whole sample (`raw_conn_*`: no pool acquire, no ping on release).
//!
//! Before timing, the `postgres` group counts the frontend messages on the
//! wire (through a counting TCP relay) for a few hundred requests of each
//! kind: statements executed (`Execute`), round trips (`Sync`, each answered
//! by one `ReadyForQuery`) and statements prepared (`Parse`), per request.
//!
//! Every database object is private to the run: a random table name, dropped
//! at the end, and a temporary SQLite file, removed at the end.
//!
//! Run with
//! `STEADFAST_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test cargo bench --features sqlite,postgres --bench idempotency`.

use std::{
    cell::Cell,
    hash::{BuildHasher, RandomState},
    hint::black_box,
    path::PathBuf,
    str::FromStr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use criterion::{Criterion, criterion_group, criterion_main};
use sqlx::{
    AssertSqlSafe, Row, SqlStr,
    postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgSslMode},
};
use steadfast::idempotency::{
    IdempotencyError, IdempotencyStore, MemoryStore, PostgresStore, SqliteStore, now_millis,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use support::{
    BODY_RUNS, Counter, PAYLOAD, Receipt, bench_replay, checksum, in_process_group, runtime,
    server_group,
};

mod support;

// --- the handler -------------------------------------------------------------

/// The body every variant runs.
#[inline]
async fn body(bytes: &[u8; 64], amount: u64) -> Result<Receipt, IdempotencyError> {
    BODY_RUNS.fetch_add(1, Ordering::Relaxed);
    Ok(Receipt {
        checksum: checksum(black_box(bytes)),
        amount,
    })
}

/// (a) The handler without the attribute (it gets the key and ignores it).
async fn bare(key: &str, bytes: &[u8; 64], amount: u64) -> Result<Receipt, IdempotencyError> {
    black_box(key);
    body(bytes, amount).await
}

/// (b, c, d, e) Over a store: a `MemoryStore`, a `SqliteStore`, a
/// `PostgresStore` (one generic handler, one copy of it per store).
#[steadfast::idempotent(key = key, store = store)]
async fn over_store<S: IdempotencyStore>(
    store: &S,
    key: &str,
    bytes: &[u8; 64],
    amount: u64,
) -> Result<Receipt, IdempotencyError> {
    body(bytes, amount).await
}

/// A [`Receipt`] in a type that cannot be cloned: its replays decode it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct UnclonableReceipt(Receipt);

/// `over_store`, returning an [`UnclonableReceipt`]. Its scope is short,
/// as `over_store`'s, so that both hash their record key in one SHA-256
/// block (a longer one takes two).
#[steadfast::idempotent(key = key, store = store, scope = "unclonable")]
async fn over_store_unclonable<S: IdempotencyStore>(
    store: &S,
    key: &str,
    bytes: &[u8; 64],
    amount: u64,
) -> Result<UnclonableReceipt, IdempotencyError> {
    body(bytes, amount).await.map(UnclonableReceipt)
}

/// A handler over a `MemoryStore` with owned arguments, under
/// `#[idempotent(key = key, store = store, …)]` with the extra arguments
/// given, so that the two below differ in those alone.
macro_rules! owned_handler {
    ($(#[$doc:meta])* $name:ident $(, $extra:ident = $value:literal)?) => {
        $(#[$doc])*
        #[steadfast::idempotent(key = key, store = store $(, $extra = $value)?)]
        async fn $name(
            store: Arc<MemoryStore>,
            key: String,
            amount: u64,
        ) -> Result<Receipt, IdempotencyError> {
            body(&PAYLOAD, amount).await
        }
    };
}

owned_handler!(
    /// (b') The body runs to completion (polled inline, spawned only if
    /// the caller leaves).
    over_memory_owned
);
owned_handler!(
    /// (b'') `run_to_completion = false`: the cost of running to
    /// completion is the difference.
    over_memory_owned_inline,
    run_to_completion = false
);

/// A fresh key per call without allocating: `k-<n>` in a stack buffer.
struct Key {
    bytes: [u8; 24],
    len: usize,
}

impl Key {
    fn new(n: u64) -> Key {
        let mut digits = [0u8; 20];
        let (mut n, mut count) = (n, 0);
        loop {
            digits[19 - count] = b'0' + (n % 10) as u8;
            count += 1;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        let mut bytes = [0u8; 24];
        bytes[..2].copy_from_slice(b"k-");
        bytes[2..2 + count].copy_from_slice(&digits[20 - count..]);
        Key {
            bytes,
            len: 2 + count,
        }
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len]).expect("ASCII digits")
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(1);

fn counter() -> Counter {
    // Disjoint ranges per group, so that no two variants share a key.
    Counter(Cell::new(COUNTER.fetch_add(1, Ordering::Relaxed) << 40))
}

// --- (a, b, c) in process ---------------------------------------------------------

fn in_process(c: &mut Criterion) {
    let rt = runtime();
    let keys = counter();
    let keys = &keys;
    let mut group = in_process_group(c, "in_process");

    group.bench_function("bare", |b| {
        b.to_async(&rt).iter(|| async {
            let key = Key::new(keys.next());
            bare(black_box(key.as_str()), black_box(&PAYLOAD), 500).await
        });
    });
    // A new store per sample, sized for it, so that a fresh key never meets
    // a full shard; the store is dropped outside the timed loop.
    group.bench_function("memory_fresh", |b| {
        b.to_async(&rt).iter_custom(|iters| async move {
            let records = 2 * iters as usize + 4096;
            let store = MemoryStore::with_capacity(records).with_scope_capacity(records);
            let start = Instant::now();
            for _ in 0..iters {
                let key = Key::new(keys.next());
                let receipt = over_store(&store, black_box(key.as_str()), &PAYLOAD, 500).await;
                black_box(receipt.expect("a fresh call runs"));
            }
            let elapsed = start.elapsed();
            drop(black_box(store));
            elapsed
        });
    });
    for (name, to_completion) in [
        ("memory_fresh_owned", true),
        ("memory_fresh_owned_inline", false),
    ] {
        group.bench_function(name, |b| {
            b.to_async(&rt).iter_custom(|iters| async move {
                let records = 2 * iters as usize + 4096;
                let store =
                    Arc::new(MemoryStore::with_capacity(records).with_scope_capacity(records));
                let start = Instant::now();
                for _ in 0..iters {
                    let key = Key::new(keys.next()).as_str().to_owned();
                    let receipt = if to_completion {
                        over_memory_owned(Arc::clone(&store), black_box(key), 500).await
                    } else {
                        over_memory_owned_inline(Arc::clone(&store), black_box(key), 500).await
                    };
                    black_box(receipt.expect("a fresh call runs"));
                }
                let elapsed = start.elapsed();
                drop(black_box(store));
                elapsed
            });
        });
    }
    let store = MemoryStore::new();
    bench_replay(&mut group, &rt, "memory_replay", || {
        over_store(&store, black_box("replayed"), &PAYLOAD, 500)
    });
    bench_replay(&mut group, &rt, "memory_replay_unclonable", || {
        over_store_unclonable(&store, black_box("replayed"), &PAYLOAD, 500)
    });
    group.finish();
}

// --- (d) SQLite ---------------------------------------------------------------------

/// A table name of this run.
fn table_name() -> String {
    format!(
        "steadfast_bench_{:016x}",
        RandomState::new().hash_one(std::process::id())
    )
}

fn sqlite(c: &mut Criterion) {
    let rt = runtime();
    let keys = counter();
    let keys = &keys;
    let table = table_name();
    let path: PathBuf = std::env::temp_dir().join(format!("{table}.db"));
    let store = rt.block_on(async {
        let store = SqliteStore::connect(&format!("sqlite:{}?mode=rwc", path.display()))
            .await
            .expect("a SQLite file")
            .with_table(&table)
            .expect("a valid table name");
        store.migrate().await.expect("the table");
        store
    });
    let store = &store;
    let mut group = server_group(c, "sqlite");

    group.bench_function("sqlite_fresh", |b| {
        b.to_async(&rt).iter(|| async {
            let key = Key::new(keys.next());
            over_store(store, black_box(key.as_str()), &PAYLOAD, 500).await
        });
    });
    bench_replay(&mut group, &rt, "sqlite_replay", || {
        over_store(store, black_box("replayed"), &PAYLOAD, 500)
    });
    group.finish();

    rt.block_on(store.pool().close());
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.clone().into_os_string();
        file.push(suffix);
        let _ = std::fs::remove_file(file);
    }
}

// --- (e, f) PostgreSQL ----------------------------------------------------------------

const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The store's `ttl` and `lease` defaults, in ms.
const TTL_MS: i64 = 24 * 3600 * 1000;
const LEASE_MS: i64 = 30 * 1000;

/// One request's binds for the raw statements: the columns the store binds,
/// of the same types.
struct RawRequest {
    token: i64,
    hash: [u8; 32],
}

impl RawRequest {
    fn new(n: u64) -> RawRequest {
        let mut hash = [0u8; 32];
        hash[..8].copy_from_slice(&n.to_be_bytes());
        hash[31] = 0xa5;
        RawRequest {
            hash,
            token: (n & (i64::MAX as u64)) as i64 | 1,
        }
    }
}

/// Where [`raw_request`] runs its statements: the store's pool (each
/// statement on a connection of its own, as the store runs them) or one
/// connection the caller holds.
trait RawConnection {
    fn executor(&mut self) -> impl sqlx::PgExecutor<'_>;
}

impl RawConnection for &PgPool {
    fn executor(&mut self) -> impl sqlx::PgExecutor<'_> {
        *self
    }
}

impl RawConnection for &mut PgConnection {
    fn executor(&mut self) -> impl sqlx::PgExecutor<'_> {
        &mut **self
    }
}

/// The raw-sqlx counterpart of one request: `claim`, then (when claimed)
/// `complete`, binding and decoding as `PostgresStore` does.
async fn raw_request(
    mut conn: impl RawConnection,
    (claim, complete): &(SqlStr, SqlStr),
    scope: &str,
    request: &RawRequest,
    payload: &[u8],
) -> Result<bool, sqlx::Error> {
    let now = now_millis();
    let row = sqlx::query(claim.clone())
        .bind(scope)
        .bind(&request.hash[..])
        .bind(request.token)
        .bind(None::<&[u8]>)
        .bind(now + LEASE_MS)
        .bind(now + TTL_MS)
        .bind(now)
        .fetch_optional(conn.executor())
        .await?
        .expect("a claim returns a row");
    if !row.try_get::<bool, _>(0)? {
        // A replay: decode the live record as the store does.
        let _token: i64 = row.try_get(1)?;
        let _fingerprint: Option<Vec<u8>> = row.try_get(2)?;
        let _lease_until: i64 = row.try_get(3)?;
        let _expires_at: i64 = row.try_get(4)?;
        let payload: Option<Vec<u8>> = row.try_get(5)?;
        black_box(payload);
        return Ok(false);
    }
    let done = sqlx::query(complete.clone())
        .bind(payload)
        .bind(now_millis() + TTL_MS)
        .bind(scope)
        .bind(&request.hash[..])
        .bind(request.token)
        .execute(conn.executor())
        .await?;
    assert_eq!(done.rows_affected(), 1);
    Ok(true)
}

/// Frontend messages seen by the counting relay.
#[derive(Default)]
struct Wire {
    parse: AtomicU64,
    execute: AtomicU64,
    sync: AtomicU64,
}

impl Wire {
    fn take(&self) -> [u64; 3] {
        [&self.parse, &self.execute, &self.sync].map(|count| count.swap(0, Ordering::SeqCst))
    }
}

/// Relays TCP connections from a local port to `upstream`, counting the
/// frontend's `Parse`, `Execute` and `Sync` messages (SSL off, so that the
/// stream is readable). Returns the local port.
async fn counting_relay(upstream: (String, u16), wire: Arc<Wire>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a local port");
    let port = listener.local_addr().expect("an address").port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect((upstream.0.as_str(), upstream.1)).await else {
                continue;
            };
            let wire = Arc::clone(&wire);
            tokio::spawn(async move {
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let down = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                });
                // Frontend messages: a type byte and a length (that counts
                // itself), except the startup message, which has no type.
                let (mut header, mut skip, mut startup) = (Vec::with_capacity(5), 0usize, true);
                let mut buffer = vec![0u8; 16 * 1024];
                loop {
                    let read = match client_read.read(&mut buffer).await {
                        Ok(0) | Err(_) => break,
                        Ok(read) => read,
                    };
                    let mut data = &buffer[..read];
                    loop {
                        let skipped = skip.min(data.len());
                        skip -= skipped;
                        data = &data[skipped..];
                        if data.is_empty() {
                            break;
                        }
                        let need = if startup { 4 } else { 5 };
                        let take = (need - header.len()).min(data.len());
                        header.extend_from_slice(&data[..take]);
                        data = &data[take..];
                        if header.len() < need {
                            break;
                        }
                        let length =
                            u32::from_be_bytes(header[need - 4..need].try_into().expect("4 bytes"))
                                as usize;
                        if !startup {
                            match header[0] {
                                b'P' => wire.parse.fetch_add(1, Ordering::SeqCst),
                                b'E' => wire.execute.fetch_add(1, Ordering::SeqCst),
                                b'S' => wire.sync.fetch_add(1, Ordering::SeqCst),
                                _ => 0,
                            };
                        }
                        skip = length.saturating_sub(4);
                        header.clear();
                        startup = false;
                    }
                    if server_write.write_all(&buffer[..read]).await.is_err() {
                        break;
                    }
                }
                down.abort();
            });
        }
    });
    port
}

/// Statements, round trips and prepares per request, on the wire, for the
/// store and for the raw statements (fresh and replay), with the store's
/// pool settings. Printed, and checked against the goal of 2 and 1.
async fn count_round_trips(url: &str, table: &str) {
    const REQUESTS: u64 = 200;
    let options = PgConnectOptions::from_str(url).expect("a PostgreSQL URL");
    let wire = Arc::new(Wire::default());
    let port = counting_relay(
        (options.get_host().to_owned(), options.get_port()),
        Arc::clone(&wire),
    )
    .await;
    let options = options
        .host("127.0.0.1")
        .port(port)
        .ssl_mode(PgSslMode::Disable);
    // As `PostgresStore::connect` builds its pool.
    let pool = PgPoolOptions::new()
        .test_before_acquire(false)
        .connect_with(options)
        .await
        .expect("a connection through the relay");
    let store = PostgresStore::from_pool(pool.clone())
        .with_table(table)
        .expect("a valid table name");
    let statements = store.statements();
    let keys = counter();

    // Lets the release pings that sqlx spawns finish before reading counts.
    async fn settle() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    async fn measure(wire: &Wire, label: &str, mut run: impl AsyncFnMut()) -> [f64; 3] {
        for _ in 0..20 {
            run().await; // warm the connections' statement caches
        }
        settle().await;
        wire.take();
        for _ in 0..REQUESTS {
            run().await;
        }
        settle().await;
        let per_request = wire.take().map(|count| count as f64 / REQUESTS as f64);
        println!(
            "  {label:<22} {:>4.2} statements, {:>4.2} round trips (Sync), {:>4.2} prepares per request",
            per_request[1], per_request[2], per_request[0]
        );
        per_request
    }

    println!("postgres: frontend messages per request, on the wire ({REQUESTS} requests each):");
    let fresh = measure(&wire, "store fresh", async || {
        let key = Key::new(keys.next());
        over_store(&store, key.as_str(), &PAYLOAD, 500)
            .await
            .expect("a fresh call runs");
    })
    .await;
    over_store(&store, "replayed-on-the-wire", &PAYLOAD, 500)
        .await
        .expect("the first call runs");
    let replay = measure(&wire, "store replay", async || {
        over_store(&store, "replayed-on-the-wire", &PAYLOAD, 500)
            .await
            .expect("a replay");
    })
    .await;
    let payload = vec![7u8; 64];
    measure(&wire, "raw sqlx (pool) fresh", async || {
        let request = RawRequest::new(keys.next());
        assert!(
            raw_request(&pool, &statements, "raw", &request, &payload)
                .await
                .expect("raw")
        );
    })
    .await;
    let replayed = RawRequest::new(keys.next());
    raw_request(&pool, &statements, "raw", &replayed, &payload)
        .await
        .expect("raw");
    let replayed = RawRequest {
        token: replayed.token ^ 2,
        hash: replayed.hash,
    };
    measure(&wire, "raw sqlx (pool) replay", async || {
        assert!(
            !raw_request(&pool, &statements, "raw", &replayed, &payload)
                .await
                .expect("raw")
        );
    })
    .await;
    println!(
        "  (each statement is one round trip; the other Syncs are sqlx's ping of a connection as it goes back to the pool, after the request)"
    );
    assert_eq!(fresh[1], 2.0, "a fresh request executes 2 statements");
    assert_eq!(replay[1], 1.0, "a replay executes 1 statement");
    pool.close().await;
}

fn postgres(c: &mut Criterion) {
    let rt = runtime();
    let url = std::env::var("STEADFAST_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned());
    let table = table_name();
    let connected = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(5), PostgresStore::connect(&url)).await
    });
    let store = match connected {
        Ok(Ok(store)) => store.with_table(&table).expect("a valid table name"),
        Ok(Err(error)) => {
            println!("postgres: skipped, cannot connect to {url}: {error}");
            return;
        }
        Err(_) => {
            println!("postgres: skipped, no answer from {url} within 5 s");
            return;
        }
    };
    rt.block_on(store.migrate()).expect("the table");
    println!("postgres: table {table} (dropped at the end)");
    rt.block_on(count_round_trips(&url, &table));

    let keys = counter();
    let keys = &keys;
    let store = &store;
    let pool: &PgPool = store.pool();
    let statements = &store.statements();
    let payload = &vec![7u8; 64][..];
    let mut group = server_group(c, "postgres");

    // Fresh: the limit first, then the store.
    group.bench_function("raw_conn_fresh", |b| {
        b.to_async(&rt).iter_custom(|iters| async move {
            let mut conn = pool.acquire().await.expect("a connection");
            let start = Instant::now();
            for _ in 0..iters {
                let request = RawRequest::new(keys.next());
                let claimed = raw_request(&mut *conn, statements, "raw", &request, payload);
                assert!(claimed.await.expect("raw"));
            }
            start.elapsed()
        });
    });
    group.bench_function("raw_pool_fresh", |b| {
        b.to_async(&rt).iter(|| async {
            let request = RawRequest::new(keys.next());
            let claimed = raw_request(pool, statements, "raw", &request, payload).await;
            assert!(claimed.expect("raw"));
        });
    });
    group.bench_function("postgres_fresh", |b| {
        b.to_async(&rt).iter(|| async {
            let key = Key::new(keys.next());
            over_store(store, black_box(key.as_str()), &PAYLOAD, 500).await
        });
    });

    // Replay: one completed record, claimed again and again.
    let replayed = RawRequest::new(keys.next());
    rt.block_on(raw_request(pool, statements, "raw", &replayed, payload))
        .expect("raw");
    let replayed = &RawRequest {
        token: replayed.token ^ 2,
        hash: replayed.hash,
    };
    group.bench_function("raw_conn_replay", |b| {
        b.to_async(&rt).iter_custom(|iters| async move {
            let mut conn = pool.acquire().await.expect("a connection");
            let start = Instant::now();
            for _ in 0..iters {
                let claimed = raw_request(&mut *conn, statements, "raw", replayed, payload);
                assert!(!claimed.await.expect("raw"));
            }
            start.elapsed()
        });
    });
    group.bench_function("raw_pool_replay", |b| {
        b.to_async(&rt).iter(|| async {
            let claimed = raw_request(pool, statements, "raw", replayed, payload).await;
            assert!(!claimed.expect("raw"));
        });
    });
    bench_replay(&mut group, &rt, "postgres_replay", || {
        over_store(store, black_box("replayed"), &PAYLOAD, 500)
    });
    group.finish();

    rt.block_on(async {
        sqlx::query(AssertSqlSafe(format!(r#"DROP TABLE IF EXISTS "{table}""#)))
            .execute(pool)
            .await
            .expect("the table dropped");
        pool.close().await;
    });
}

criterion_group!(benches, in_process, sqlite, postgres);
criterion_main!(benches);
