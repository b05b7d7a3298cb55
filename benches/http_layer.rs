//! `IdempotencyLayer` over real HTTP: one trivial `POST` route served bare
//! and under the layer, driven by a hyper client over keep-alive loopback
//! connections (issue 14).
//!
//! The server is axum on `127.0.0.1` (an ephemeral port), on a tokio
//! runtime of two workers; the load generator is a hyper HTTP/1 client on a
//! current-thread runtime of its own thread (as `wrk -t1`). They share the
//! machine's cores, so a request's figure holds the client's cost too; it is
//! the same for every variant. Each connection sends requests back to back
//! (one in flight), for `--seconds` (default 2), at each number of
//! `--connections` (default `1,64`):
//!
//! - `bare`: `POST /bare`, the handler without the layer.
//! - `<store> fresh`: `POST /<store>` under the layer, a new
//!   `Idempotency-Key` per request (claim, handler, keep the response).
//! - `<store> replay`: the same route, the key drawn at random from 10 000
//!   completed keys (claim answered `Completed`, the stored response).
//!
//! Stores (`--stores`, default `memory,sqlite`): a `MemoryStore`, and a
//! `SqliteStore` on a WAL file in the temporary directory. Every response is
//! checked: `201`, `Idempotency-Replayed: true` on replays only, and a
//! replay's body equal to the one its key's first request returned (the
//! handler numbers its runs, so a second run would differ).
//!
//! A round starts a server with empty stores, completes the replay keys,
//! then, at each number of connections, measures `bare` before and after
//! every other variant: a variant's ratio is to the mean of the two `bare`
//! runs around it (the machine is shared, and its load drifts). After
//! `--rounds` rounds (default 5), the table gives, per cell, the median
//! round's requests per second, p50 and p99 latency, and the median of the
//! rounds' ratios.
//!
//! Run with `cargo bench --features axum,sqlite --bench http_layer`
//! (`-- --seconds 2 --connections 1,64 --rounds 5 --stores memory,sqlite`).
//!
//! `-- --in-process VARIANT N` (`bare`, `fresh`, `replay`) instead calls the
//! router N times in process (no sockets, a current-thread runtime, a
//! `MemoryStore`), for valgrind: the difference in instructions between two
//! values of N, divided by the difference in N, is one request's cost
//! through the router, without the network and the runtime's start-up:
//!
//! ```sh
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/deps/http_layer-… --in-process replay 1000
//! ```

use std::{
    fmt,
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{Request, StatusCode, header::CONTENT_TYPE},
    response::IntoResponse,
    routing::post,
    serve::ListenerExt,
};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use steadfast::idempotency::{
    IDEMPOTENCY_KEY, IDEMPOTENCY_REPLAYED, IdempotencyLayer, IdempotencyStore, MemoryStore,
    SqliteStore,
};
use tokio::{
    net::{TcpListener, TcpStream},
    runtime::Runtime,
    sync::oneshot,
};

/// How many completed keys a replay draws from.
const REPLAY_KEYS: u64 = 10_000;
/// Connections that complete the replay keys at the start of a round.
const FILL_CONNECTIONS: usize = 16;
/// The most requests one connection sends in one measurement, whatever the
/// time: a bound on the loop beside the clock.
const MAX_REQUESTS: u64 = 50_000_000;
/// The request body: a small JSON payment.
const PAYLOAD: &[u8] = br#"{"from":"alice","to":"bob","cents":1250}"#;

// --- the server --------------------------------------------------------------

/// Runs of the handler, all routes: each response names its run.
#[derive(Default)]
struct Runs(AtomicU64);

/// The trivial handler every route runs: it numbers its run and answers
/// `201` with a small JSON body.
async fn pay(State(runs): State<Arc<Runs>>, body: Bytes) -> impl IntoResponse {
    let run = runs.0.fetch_add(1, Ordering::Relaxed);
    (
        StatusCode::CREATED,
        [(CONTENT_TYPE, "application/json")],
        format!(r#"{{"run":{run},"bytes":{}}}"#, body.len()),
    )
}

/// A store under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Store {
    Memory,
    Sqlite,
}

impl Store {
    fn parse(name: &str) -> Store {
        match name {
            "memory" => Store::Memory,
            "sqlite" => Store::Sqlite,
            other => panic!("unknown store {other} (memory, sqlite)"),
        }
    }

    fn path(self) -> &'static str {
        match self {
            Store::Memory => "/memory",
            Store::Sqlite => "/sqlite",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Store::Memory => "MemoryStore",
            Store::Sqlite => "SqliteStore",
        }
    }
}

/// The rounds started, which name each round's SQLite file.
static ROUND: AtomicU64 = AtomicU64::new(0);

/// The SQLite file of `round`, and its WAL and shared-memory files: a file
/// per round, so that a round never meets the connections of the last.
fn sqlite_files(round: u64) -> Vec<PathBuf> {
    let name = format!("steadfast_http_layer_{}_{round}.db", std::process::id());
    let path = std::env::temp_dir().join(name);
    ["", "-wal", "-shm"]
        .iter()
        .map(|suffix| {
            let mut file = path.as_os_str().to_owned();
            file.push(suffix);
            PathBuf::from(file)
        })
        .collect()
}

/// A fresh, empty store of kind `store`.
async fn open(store: Store) -> Arc<dyn IdempotencyStore> {
    match store {
        // Room for every fresh key of a round (a round starts a new store).
        Store::Memory => {
            Arc::new(MemoryStore::with_capacity(4_000_000).with_scope_capacity(4_000_000))
        }
        Store::Sqlite => {
            let files = sqlite_files(ROUND.load(Ordering::Relaxed));
            for file in &files {
                let _ = std::fs::remove_file(file);
            }
            let url = format!("sqlite:{}?mode=rwc", files[0].display());
            let store = SqliteStore::connect(&url).await.expect("SQLite");
            store.migrate().await.expect("migrate");
            Arc::new(store)
        }
    }
}

/// `/bare`, and one route per store under its own layer.
async fn app(stores: &[Store]) -> Router {
    let runs = Arc::new(Runs::default());
    let mut app = Router::new().route("/bare", post(pay));
    for &store in stores {
        let layer = IdempotencyLayer::new(open(store).await).scope("bench");
        app = app.merge(Router::new().route(store.path(), post(pay)).layer(layer));
    }
    app.with_state(runs)
}

/// A server on an ephemeral loopback port, on `runtime`, until its stop
/// channel fires: its address, the channel, and its task.
fn start_server(
    runtime: &Runtime,
    stores: &[Store],
) -> (SocketAddr, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let app = runtime.block_on(app(stores));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    listener
        .set_nonblocking(true)
        .expect("a non-blocking listener");
    let address = listener.local_addr().expect("an address");
    let (stop, stopped) = oneshot::channel();
    let server = runtime.spawn(async move {
        let listener = TcpListener::from_std(listener).expect("a listener");
        let listener = listener.tap_io(|stream| {
            let _ = stream.set_nodelay(true);
        });
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
            .expect("the server");
    });
    (address, stop, server)
}

// --- the client --------------------------------------------------------------

/// What a variant sends and expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Bare,
    Fresh(Store),
    Replay(Store),
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Variant::Bare => f.write_str("bare"),
            Variant::Fresh(store) => write!(f, "{} fresh", store.name()),
            Variant::Replay(store) => write!(f, "{} replay", store.name()),
        }
    }
}

/// Fresh keys: never the same twice in a process.
static FRESH: AtomicU64 = AtomicU64::new(0);

/// The `n`th replay key, as long as a UUID.
fn replay_key(n: u64) -> String {
    format!("{:032x}", (1_u128 << 127) | u128::from(n))
}

/// A new key, as long as a UUID.
fn fresh_key() -> String {
    format!("{:032x}", FRESH.fetch_add(1, Ordering::Relaxed))
}

/// A keep-alive HTTP/1 connection to `address`.
async fn connect(address: SocketAddr) -> SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(address).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("an HTTP/1 handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    sender
}

/// One `POST` to `path` with `key`; its status, whether it is marked
/// replayed, and its body.
async fn post_once(
    sender: &mut SendRequest<Full<Bytes>>,
    path: &str,
    key: Option<&str>,
) -> (StatusCode, bool, Bytes) {
    let mut request = Request::post(path)
        .header("host", "127.0.0.1")
        .header(CONTENT_TYPE, "application/json");
    if let Some(key) = key {
        request = request.header(IDEMPOTENCY_KEY, key);
    }
    let request = request
        .body(Full::new(Bytes::from_static(PAYLOAD)))
        .expect("a request");
    sender.ready().await.expect("the connection is ready");
    let response = sender.send_request(request).await.expect("a response");
    let status = response.status();
    let replayed = response
        .headers()
        .get(IDEMPOTENCY_REPLAYED)
        .is_some_and(|value| value == "true");
    let body = response
        .into_body()
        .collect()
        .await
        .expect("a body")
        .to_bytes();
    (status, replayed, body)
}

/// The bodies of the completed replay keys of each store, by key number.
type Completed = Arc<Vec<(Store, Vec<Bytes>)>>;

/// Completes the replay keys of `store` through HTTP; their first bodies.
async fn complete_replay_keys(address: SocketAddr, store: Store) -> Vec<Bytes> {
    let tasks: Vec<_> = (0..FILL_CONNECTIONS as u64)
        .map(|connection| {
            tokio::spawn(async move {
                let mut sender = connect(address).await;
                let mut bodies = Vec::new();
                let mut n = connection;
                while n < REPLAY_KEYS {
                    let (status, replayed, body) =
                        post_once(&mut sender, store.path(), Some(&replay_key(n))).await;
                    assert_eq!(
                        status,
                        StatusCode::CREATED,
                        "{}",
                        String::from_utf8_lossy(&body)
                    );
                    assert!(!replayed, "a first request is not a replay");
                    bodies.push((n, body));
                    n += FILL_CONNECTIONS as u64;
                }
                bodies
            })
        })
        .collect();
    let mut all = vec![Bytes::new(); REPLAY_KEYS as usize];
    for task in tasks {
        for (n, body) in task.await.expect("a filler") {
            all[n as usize] = body;
        }
    }
    all
}

/// One request of `variant`, checked.
async fn request(sender: &mut SendRequest<Full<Bytes>>, variant: Variant, completed: &Completed) {
    match variant {
        Variant::Bare => {
            let (status, replayed, body) = post_once(sender, "/bare", None).await;
            assert_eq!(
                status,
                StatusCode::CREATED,
                "{}",
                String::from_utf8_lossy(&body)
            );
            assert!(!replayed && body.starts_with(b"{\"run\":"));
        }
        Variant::Fresh(store) => {
            let key = fresh_key();
            let (status, replayed, body) = post_once(sender, store.path(), Some(&key)).await;
            assert_eq!(
                status,
                StatusCode::CREATED,
                "{}",
                String::from_utf8_lossy(&body)
            );
            assert!(!replayed && body.starts_with(b"{\"run\":"));
        }
        Variant::Replay(store) => {
            let n = fastrand::u64(..REPLAY_KEYS);
            let key = replay_key(n);
            let (status, replayed, body) = post_once(sender, store.path(), Some(&key)).await;
            assert_eq!(
                status,
                StatusCode::CREATED,
                "{}",
                String::from_utf8_lossy(&body)
            );
            assert!(replayed, "a completed key's request is a replay");
            let expected = completed
                .iter()
                .find(|(kind, _)| *kind == store)
                .map(|(_, bodies)| &bodies[n as usize])
                .expect("the store's keys");
            assert_eq!(&body, expected, "a replay returns the stored body");
        }
    }
}

/// Per number of connections and variant: each round's figures and ratio
/// to bare.
type Results = Vec<(usize, Variant, Vec<(Figures, f64)>)>;

/// What one measurement gave.
#[derive(Debug, Clone, Copy)]
struct Figures {
    per_second: f64,
    p50: Duration,
    p99: Duration,
}

/// `connections` keep-alive connections to `address`, each sending
/// `variant` requests back to back for `seconds`.
async fn measure(
    address: SocketAddr,
    variant: Variant,
    connections: usize,
    seconds: f64,
    completed: &Completed,
) -> Figures {
    let mut senders = Vec::with_capacity(connections);
    for _ in 0..connections {
        senders.push(connect(address).await);
    }
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(seconds);
    let tasks: Vec<_> = senders
        .into_iter()
        .map(|mut sender| {
            let completed = Arc::clone(completed);
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(1 << 16);
                for _ in 0..MAX_REQUESTS {
                    let sent = Instant::now();
                    if sent >= deadline {
                        break;
                    }
                    request(&mut sender, variant, &completed).await;
                    latencies.push(sent.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("a connection"));
    }
    let elapsed = start.elapsed();
    latencies.sort_unstable();
    let at = |share: f64| latencies[((latencies.len() - 1) as f64 * share) as usize];
    Figures {
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
    }
}

// --- the run -----------------------------------------------------------------

/// Settings from the command line.
struct Settings {
    seconds: f64,
    connections: Vec<usize>,
    rounds: usize,
    stores: Vec<Store>,
}

fn settings() -> Settings {
    let mut settings = Settings {
        seconds: 2.0,
        connections: vec![1, 64],
        rounds: 5,
        stores: vec![Store::Memory, Store::Sqlite],
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--seconds" => settings.seconds = value().parse().expect("--seconds 2"),
            "--rounds" => settings.rounds = value().parse().expect("--rounds 5"),
            "--connections" => {
                settings.connections = value()
                    .split(',')
                    .map(|n| n.parse().expect("--connections 1,64"))
                    .collect();
            }
            "--stores" => settings.stores = value().split(',').map(Store::parse).collect(),
            // cargo bench passes `--bench`.
            _ => {}
        }
    }
    assert!(settings.rounds > 0 && !settings.connections.is_empty());
    settings
}

/// The middle of `values` (the upper middle of an even count).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// `calls` requests of `variant` (`bare`, `fresh`, `replay`) through the
/// router in process, each checked; a replay draws from keys completed
/// first.
fn in_process(variant: &str, calls: u64) {
    use tower_service::Service;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime");
    runtime.block_on(async {
        let mut app = app(&[Store::Memory]).await;
        let post = |path: &str, key: Option<String>| {
            let mut request = Request::post(path).header(CONTENT_TYPE, "application/json");
            if let Some(key) = key {
                request = request.header(IDEMPOTENCY_KEY, key);
            }
            request
                .body(axum::body::Body::from(PAYLOAD))
                .expect("a request")
        };
        let keys = 100;
        for n in 0..keys {
            let response = app.call(post("/memory", Some(replay_key(n)))).await;
            assert_eq!(response.expect("infallible").status(), StatusCode::CREATED);
        }
        let start = Instant::now();
        for n in 0..calls {
            let (path, key) = match variant {
                "bare" => ("/bare", None),
                "fresh" => ("/memory", Some(fresh_key())),
                "replay" => ("/memory", Some(replay_key(n % keys))),
                other => panic!("unknown variant {other} (bare, fresh, replay)"),
            };
            let response = app.call(post(path, key)).await.expect("infallible");
            assert_eq!(response.status(), StatusCode::CREATED);
            assert_eq!(
                response.headers().contains_key(IDEMPOTENCY_REPLAYED),
                variant == "replay"
            );
            let body = response.into_body().collect().await.expect("a body");
            std::hint::black_box(body.to_bytes());
        }
        let per_call = start.elapsed() / u32::try_from(calls.max(1)).unwrap_or(u32::MAX);
        println!("{variant}: {per_call:?} a request");
    });
}

fn main() {
    let mut args = std::env::args()
        .skip_while(|arg| arg != "--in-process")
        .skip(1);
    if let (Some(variant), Some(calls)) = (args.next(), args.next()) {
        return in_process(&variant, calls.parse().expect("a number of calls"));
    }
    let settings = settings();
    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("the server's runtime");
    let client_runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("the client's runtime");
    let mut variants = Vec::new();
    for &store in &settings.stores {
        variants.extend([Variant::Fresh(store), Variant::Replay(store)]);
    }
    let mut results: Results = Vec::new();
    for round in 1..=settings.rounds {
        ROUND.store(round as u64, Ordering::Relaxed);
        let (address, stop, server) = start_server(&server_runtime, &settings.stores);
        client_runtime.block_on(async {
            let mut completed = Vec::new();
            for &store in &settings.stores {
                completed.push((store, complete_replay_keys(address, store).await));
            }
            let completed: Completed = Arc::new(completed);
            for &connections in &settings.connections {
                // Bare before and after each variant: its ratio is to the
                // mean of the two, measured right around it.
                let measure_bare = || {
                    measure(
                        address,
                        Variant::Bare,
                        connections,
                        settings.seconds,
                        &completed,
                    )
                };
                let mut before = measure_bare().await;
                record(
                    &mut results,
                    round,
                    connections,
                    Variant::Bare,
                    before,
                    before.per_second,
                );
                for &variant in &variants {
                    let figures =
                        measure(address, variant, connections, settings.seconds, &completed).await;
                    let after = measure_bare().await;
                    let reference = f64::midpoint(before.per_second, after.per_second);
                    record(
                        &mut results,
                        round,
                        connections,
                        variant,
                        figures,
                        reference,
                    );
                    record(
                        &mut results,
                        round,
                        connections,
                        Variant::Bare,
                        after,
                        after.per_second,
                    );
                    before = after;
                }
            }
        });
        let _ = stop.send(());
        server_runtime.block_on(server).expect("the server stops");
        for file in sqlite_files(round as u64) {
            let _ = std::fs::remove_file(file);
        }
    }
    print_table(&results, settings.rounds);
}

/// Keeps one measurement, and its ratio to `bare_per_second`, and prints
/// it as it comes.
fn record(
    results: &mut Results,
    round: usize,
    connections: usize,
    variant: Variant,
    figures: Figures,
    bare_per_second: f64,
) {
    let ratio = figures.per_second / bare_per_second;
    println!(
        "round {round}  c={connections:<3} {variant:<20} {:>8.0}/s  ×{ratio:.2}  p50 {:>7.1?}  p99 {:>7.1?}",
        figures.per_second, figures.p50, figures.p99
    );
    match results
        .iter_mut()
        .find(|(c, v, _)| *c == connections && *v == variant)
    {
        Some((_, _, rounds)) => rounds.push((figures, ratio)),
        None => results.push((connections, variant, vec![(figures, ratio)])),
    }
}

/// The table of the medians, in markdown.
fn print_table(results: &Results, rounds: usize) {
    println!(
        "\nmedian of {rounds} rounds (requests/s, p50 and p99 of the median round; × bare: median of the rounds' ratios to the bare runs right before and after)\n"
    );
    println!("| connections | variant | requests/s | × bare | p50 | p99 |");
    println!("|---:|---|---:|---:|---:|---:|");
    let mut seen: Vec<(usize, Variant)> = Vec::new();
    for (connections, variant, figures) in results {
        if seen.contains(&(*connections, *variant)) {
            continue;
        }
        seen.push((*connections, *variant));
        let mut by_rate = figures.clone();
        by_rate.sort_by(|a, b| a.0.per_second.total_cmp(&b.0.per_second));
        let middle = by_rate[by_rate.len() / 2].0;
        let ratio = median(figures.iter().map(|(_, ratio)| *ratio).collect());
        println!(
            "| {connections} | {variant} | {:.0} | {ratio:.2} | {:.0} µs | {:.0} µs |",
            middle.per_second,
            middle.p50.as_secs_f64() * 1e6,
            middle.p99.as_secs_f64() * 1e6,
        );
    }
}
