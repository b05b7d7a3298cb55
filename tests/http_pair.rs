//! `IdempotencyLayer` over real HTTP (axum server, reqwest client on
//! loopback): the IETF Idempotency-Key draft's answers, what is kept and
//! replayed, bounds, a failing store, replicas sharing a SQLite file, and a
//! `#[retry]` client through a server that loses responses.

use std::{
    future::poll_fn,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    extract::{Request, State},
    http::{
        HeaderMap, StatusCode,
        header::{CONTENT_ENCODING, CONTENT_TYPE, LOCATION, RETRY_AFTER, SET_COOKIE, VARY},
    },
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{post, put},
};
use serde::{Deserialize, Serialize};
use steadfast::{
    http::HttpError,
    idempotency::{
        IDEMPOTENCY_REPLAYED, IdempotencyLayer, IdempotencyStore, InProgressPolicy, MemoryStore,
        SqliteStore, conformance::FailingStore,
    },
};
use tokio::{net::TcpListener, sync::Notify};
use tower_service::Service;

/// What the handlers did, counted.
#[derive(Default)]
struct Ledger {
    payments: AtomicU32,
    flaky: AtomicU32,
    big: AtomicU32,
    reads: AtomicU32,
    slow: AtomicU32,
    puts: AtomicU32,
    slow_started: Notify,
    slow_gate: Notify,
    slow_finished: Notify,
    guarded: AtomicU32,
    broken: AtomicU32,
    endless: AtomicU32,
    endless_frames: AtomicU32,
    panics: AtomicU32,
}

#[derive(Debug, Serialize, Deserialize)]
struct Payment {
    from: String,
    to: String,
    cents: u64,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Receipt {
    payment: u32,
    cents: u64,
}

async fn pay(State(ledger): State<Arc<Ledger>>, body: String) -> Response {
    let Ok(payment) = serde_json::from_str::<Payment>(&body) else {
        return (StatusCode::BAD_REQUEST, "not a payment").into_response();
    };
    if payment.cents == 0 {
        return (StatusCode::BAD_REQUEST, "a payment moves at least one cent").into_response();
    }
    let number = ledger.payments.fetch_add(1, Ordering::SeqCst) + 1;
    let receipt = Receipt {
        payment: number,
        cents: payment.cents,
    };
    (
        StatusCode::CREATED,
        [
            (CONTENT_TYPE, "application/json".to_owned()),
            (LOCATION, format!("/payments/{number}")),
            (SET_COOKIE, format!("session={number}")),
        ],
        serde_json::to_string(&receipt).unwrap(),
    )
        .into_response()
}

async fn list(State(ledger): State<Arc<Ledger>>) -> &'static str {
    ledger.reads.fetch_add(1, Ordering::SeqCst);
    "[]"
}

/// Fails with 503 the first time it runs, then succeeds.
async fn flaky(State(ledger): State<Arc<Ledger>>) -> Response {
    match ledger.flaky.fetch_add(1, Ordering::SeqCst) {
        0 => (StatusCode::SERVICE_UNAVAILABLE, "try again").into_response(),
        runs => format!("ran {}", runs + 1).into_response(),
    }
}

/// A 2 KiB response, over the 1 KiB bound of [`app`].
async fn big(State(ledger): State<Arc<Ledger>>) -> (StatusCode, String) {
    ledger.big.fetch_add(1, Ordering::SeqCst);
    (StatusCode::CREATED, "x".repeat(2048))
}

/// Holds until the test opens the gate.
async fn slow(State(ledger): State<Arc<Ledger>>) -> &'static str {
    ledger.slow.fetch_add(1, Ordering::SeqCst);
    ledger.slow_started.notify_one();
    ledger.slow_gate.notified().await;
    ledger.slow_finished.notify_one();
    "slow done"
}

/// Refuses the first caller as unauthenticated (`401`), then runs.
async fn guarded(State(ledger): State<Arc<Ledger>>) -> (StatusCode, &'static str) {
    match ledger.guarded.fetch_add(1, Ordering::SeqCst) {
        0 => (StatusCode::UNAUTHORIZED, "token expired"),
        _ => (StatusCode::CREATED, "accepted"),
    }
}

/// A body whose first frame is an error: the handler took effect (`201`)
/// and its answer is lost on the way out.
struct BrokenBody;

impl http_body::Body for BrokenBody {
    type Data = axum::body::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::task::Poll::Ready(Some(Err(std::io::Error::other("disk gone"))))
    }
}

async fn broken(State(ledger): State<Arc<Ledger>>) -> Response {
    ledger.broken.fetch_add(1, Ordering::SeqCst);
    (StatusCode::CREATED, Body::new(BrokenBody)).into_response()
}

/// The frames an [`EndlessBody`] yields at most: 64 MiB, then it stalls
/// (still unfinished), so that a layer that buffered it whole would hang
/// the test rather than exhaust the machine's memory.
const ENDLESS_FRAME_CAP: u32 = 64 * 1024;

/// A body that never ends: 1 KiB frames, counted in the ledger.
struct EndlessBody(Arc<Ledger>);

impl http_body::Body for EndlessBody {
    type Data = axum::body::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        if self.0.endless_frames.fetch_add(1, Ordering::SeqCst) >= ENDLESS_FRAME_CAP {
            return std::task::Poll::Pending;
        }
        let frame = http_body::Frame::data(axum::body::Bytes::from_static(&[b'x'; 1024]));
        std::task::Poll::Ready(Some(Ok(frame)))
    }
}

async fn endless(State(ledger): State<Arc<Ledger>>) -> Response {
    ledger.endless.fetch_add(1, Ordering::SeqCst);
    (StatusCode::CREATED, Body::new(EndlessBody(ledger))).into_response()
}

/// A compressed answer, as a compression layer inside the idempotency
/// layer makes it (the bytes need not be valid gzip: reqwest here does not
/// decode).
async fn gzipped() -> Response {
    (
        StatusCode::CREATED,
        [
            (CONTENT_TYPE, "application/json"),
            (CONTENT_ENCODING, "gzip"),
            (VARY, "accept-encoding"),
        ],
        vec![0x1f, 0x8b, 0x08, 0x00, 0xde, 0xad],
    )
        .into_response()
}

/// Panics the first time it runs, then answers.
async fn panics(State(ledger): State<Arc<Ledger>>) -> &'static str {
    if ledger.panics.fetch_add(1, Ordering::SeqCst) == 0 {
        panic!("the first run of /panics panics (as the test wants)");
    }
    "ran after a panic"
}

/// Replaces a limit; counts how often it ran.
async fn put_limit(State(ledger): State<Arc<Ledger>>) -> String {
    format!("put {}", ledger.puts.fetch_add(1, Ordering::SeqCst) + 1)
}

fn routes(ledger: &Arc<Ledger>) -> Router {
    Router::new()
        .route("/payments", post(pay).get(list))
        .route("/flaky", post(flaky))
        .route("/big", post(big))
        .route("/slow", post(slow))
        .route("/limit", put(put_limit))
        .route("/guarded", post(guarded))
        .route("/broken", post(broken))
        .route("/endless", post(endless))
        .route("/gzipped", post(gzipped))
        .route("/panics", post(panics))
        .with_state(Arc::clone(ledger))
}

/// The layer of the tests: 1 KiB bodies.
fn layer(store: impl IdempotencyStore + 'static) -> IdempotencyLayer {
    IdempotencyLayer::new(store)
        .scope("http-pair")
        .max_body(1024)
}

fn app(ledger: &Arc<Ledger>, store: impl IdempotencyStore + 'static) -> Router {
    routes(ledger).layer(layer(store))
}

/// Serves `app` on a loopback port; returns its base URL.
async fn serve(app: Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{address}")
}

async fn start(store: impl IdempotencyStore + 'static) -> (String, Arc<Ledger>) {
    start_with(layer(store)).await
}

/// Serves the routes behind `layer`; returns the base URL and the ledger.
async fn start_with(layer: IdempotencyLayer) -> (String, Arc<Ledger>) {
    let ledger = Arc::new(Ledger::default());
    let base = serve(routes(&ledger).layer(layer)).await;
    (base, ledger)
}

/// Alice pays Bob `cents`.
fn alice_pays(cents: u64) -> Payment {
    Payment {
        from: "alice".into(),
        to: "bob".into(),
        cents,
    }
}

fn payment(cents: u64) -> String {
    serde_json::to_string(&alice_pays(cents)).unwrap()
}

/// A POST of the JSON `body` to `url`, under `key` when there is one.
fn json_post(
    client: &reqwest::Client,
    url: &str,
    key: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> reqwest::RequestBuilder {
    let request = client
        .post(url)
        .header(CONTENT_TYPE, "application/json")
        .body(body);
    match key {
        Some(key) => request.header("Idempotency-Key", key),
        None => request,
    }
}

async fn post_with_key(
    base: &str,
    path: &str,
    key: Option<&str>,
    body: String,
) -> reqwest::Response {
    let url = format!("{base}{path}");
    let request = json_post(&reqwest::Client::new(), &url, key, body);
    request.send().await.unwrap()
}

/// [`post_with_key`] with an empty body, in a task of its own.
fn spawn_post(
    base: &str,
    path: &'static str,
    key: &'static str,
) -> tokio::task::JoinHandle<reqwest::Response> {
    let base = base.to_owned();
    tokio::spawn(async move { post_with_key(&base, path, Some(key), String::new()).await })
}

fn replayed(headers: &HeaderMap) -> bool {
    headers
        .get(IDEMPOTENCY_REPLAYED)
        .is_some_and(|value| value == "true")
}

#[tokio::test]
async fn a_post_without_a_key_is_400_and_does_not_run() {
    let (base, ledger) = start(MemoryStore::new()).await;
    let response = post_with_key(&base, "/payments", None, payment(100)).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let message = response.text().await.unwrap();
    assert!(
        message.contains("needs an Idempotency-Key header"),
        "{message}"
    );
    let empty = post_with_key(&base, "/payments", Some("\"\""), payment(100)).await;
    assert_eq!(empty.status(), StatusCode::BAD_REQUEST);
    let long = "k".repeat(256);
    let too_long = post_with_key(&base, "/payments", Some(&long), payment(100)).await;
    assert_eq!(too_long.status(), StatusCode::BAD_REQUEST);
    assert_eq!(ledger.payments.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_duplicate_gets_the_first_status_kept_headers_and_body_marked_replayed() {
    let (base, ledger) = start(MemoryStore::new()).await;
    let first = post_with_key(&base, "/payments", Some("pay-1"), payment(250)).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    assert!(!replayed(first.headers()));
    assert_eq!(first.headers()[SET_COOKIE], "session=1");
    let first_body = first.text().await.unwrap();

    // The draft's quoted form names the same key.
    let second = post_with_key(&base, "/payments", Some("\"pay-1\""), payment(250)).await;
    assert_eq!(second.status(), StatusCode::CREATED);
    assert!(replayed(second.headers()));
    assert_eq!(second.headers()[LOCATION], "/payments/1");
    assert_eq!(second.headers()[CONTENT_TYPE], "application/json");
    assert!(
        second.headers().get(SET_COOKIE).is_none(),
        "headers outside the allow-list belong to the first response"
    );
    assert_eq!(second.text().await.unwrap(), first_body);
    assert_eq!(ledger.payments.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_handlers_client_error_is_kept_and_replayed() {
    let (base, ledger) = start(MemoryStore::new()).await;
    for attempt in 0..2 {
        let response = post_with_key(&base, "/payments", Some("zero"), payment(0)).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(replayed(response.headers()), attempt == 1);
    }
    let other = post_with_key(&base, "/payments", Some("one"), payment(1)).await;
    assert_eq!(other.status(), StatusCode::CREATED);
    assert_eq!(ledger.payments.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_key_reused_with_another_body_or_path_is_422() {
    let (base, ledger) = start(MemoryStore::new()).await;
    let first = post_with_key(&base, "/payments", Some("pay-2"), payment(100)).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let other_body = post_with_key(&base, "/payments", Some("pay-2"), payment(999)).await;
    assert_eq!(other_body.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let other_path = post_with_key(&base, "/payments?dry_run=1", Some("pay-2"), payment(100)).await;
    assert_eq!(other_path.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(ledger.payments.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_duplicate_while_the_first_runs_is_409_with_the_lease_as_retry_after() {
    let short_lease = layer(MemoryStore::new()).lease(Duration::from_secs(2));
    let (base, ledger) = start_with(short_lease).await;
    let first = spawn_post(&base, "/slow", "slow-1");
    ledger.slow_started.notified().await;
    let duplicate = post_with_key(&base, "/slow", Some("slow-1"), String::new()).await;
    assert_eq!(duplicate.status(), StatusCode::CONFLICT);
    let retry_after: u64 = duplicate.headers()[RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "Retry-After: {retry_after}");

    ledger.slow_gate.notify_one();
    let first = first.await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let after = post_with_key(&base, "/slow", Some("slow-1"), String::new()).await;
    assert!(replayed(after.headers()));
    assert_eq!(after.text().await.unwrap(), "slow done");
    assert_eq!(ledger.slow.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn with_in_progress_wait_a_duplicate_gets_the_first_response() {
    let waiting =
        layer(MemoryStore::new()).in_progress(InProgressPolicy::Wait(Duration::from_secs(10)));
    let (base, ledger) = start_with(waiting).await;
    let first = spawn_post(&base, "/slow", "slow-2");
    ledger.slow_started.notified().await;
    let duplicate = spawn_post(&base, "/slow", "slow-2");
    // Let the duplicate reach the layer while the first still runs: with
    // `Reject` it would be answered 409 at once.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!duplicate.is_finished(), "the duplicate waits");
    ledger.slow_gate.notify_one();
    assert_eq!(first.await.unwrap().status(), StatusCode::OK);
    let duplicate = duplicate.await.unwrap();
    assert_eq!(duplicate.status(), StatusCode::OK);
    assert!(replayed(duplicate.headers()));
    assert_eq!(ledger.slow.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_request_body_over_the_bound_is_413_and_does_not_run() {
    let (base, ledger) = start(MemoryStore::new()).await;
    let response = post_with_key(&base, "/payments", Some("huge"), "x".repeat(4096)).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let message = response.text().await.unwrap();
    assert!(message.contains("4096 bytes"), "{message}");
    assert!(message.contains("1024 bytes"), "{message}");
    assert_eq!(ledger.payments.load(Ordering::SeqCst), 0);
}

/// Without a `Content-Length` (a streamed body) the bound is found while reading.
#[tokio::test]
async fn a_streamed_request_body_over_the_bound_is_413() {
    let ledger = Arc::new(Ledger::default());
    let mut service = app(&ledger, MemoryStore::new());
    let request = Request::post("/payments")
        .header("idempotency-key", "streamed")
        .body(Body::from("x".repeat(4096)))
        .unwrap();
    assert!(request.headers().get("content-length").is_none());
    poll_fn(|cx| Service::<Request>::poll_ready(&mut service, cx))
        .await
        .unwrap();
    let response: Response = service.call(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(ledger.payments.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_response_over_the_bound_reaches_the_first_caller_and_replays_as_413() {
    let (base, ledger) = start(MemoryStore::new()).await;
    let first = post_with_key(&base, "/big", Some("big-1"), String::new()).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    assert_eq!(first.text().await.unwrap().len(), 2048);

    let duplicate = post_with_key(&base, "/big", Some("big-1"), String::new()).await;
    assert_eq!(duplicate.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(replayed(duplicate.headers()));
    assert_eq!(duplicate.headers()["idempotency-original-status"], "201");
    let message = duplicate.text().await.unwrap();
    assert!(message.contains("ran once"), "{message}");
    assert_eq!(ledger.big.load(Ordering::SeqCst), 1, "never run twice");
}

/// A response body that never ends is read only up to the bound: past it
/// the layer stores the too-large marker and its task ends (so the claim is
/// no longer renewed), the first caller gets the stream, and reading stops
/// when the first caller goes away.
#[tokio::test]
async fn an_endless_response_is_buffered_only_up_to_the_bound() {
    let (base, ledger) = start(MemoryStore::new()).await;
    let bounded = Duration::from_secs(5);
    let first = tokio::time::timeout(
        bounded,
        post_with_key(&base, "/endless", Some("endless-1"), String::new()),
    )
    .await
    .expect("the first caller's answer starts although its body never ends");
    assert_eq!(first.status(), StatusCode::CREATED);
    assert!(!replayed(first.headers()));
    let mut first = first;
    let mut received = 0;
    while received < 8 * 1024 {
        let chunk = tokio::time::timeout(bounded, first.chunk()).await;
        received += chunk.unwrap().unwrap().expect("the body goes on").len();
    }

    // The record is the marker already: the task ended.
    let duplicate = tokio::time::timeout(
        bounded,
        post_with_key(&base, "/endless", Some("endless-1"), String::new()),
    )
    .await
    .expect("a duplicate is answered while the first body still streams");
    assert_eq!(duplicate.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(replayed(duplicate.headers()));
    assert_eq!(duplicate.headers()["idempotency-original-status"], "201");
    assert!(duplicate.text().await.unwrap().contains("ran once"));
    assert_eq!(ledger.endless.load(Ordering::SeqCst), 1, "never run twice");

    // The first caller goes away: the rest is not read.
    drop(first);
    let frames = || ledger.endless_frames.load(Ordering::SeqCst);
    let mut before = frames();
    let stopped = tokio::time::timeout(bounded, async {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = frames();
            if now == before {
                break now;
            }
            before = now;
        }
    })
    .await
    .expect("the body is no longer read once its caller is gone");
    assert!(
        stopped < ENDLESS_FRAME_CAP / 2,
        "{stopped} frames of 1 KiB were read"
    );
}

#[tokio::test]
async fn a_compressed_response_replays_with_its_encoding() {
    let (base, _) = start(MemoryStore::new()).await;
    let first = post_with_key(&base, "/gzipped", Some("gzip-1"), String::new()).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first_body = first.bytes().await.unwrap();
    let duplicate = post_with_key(&base, "/gzipped", Some("gzip-1"), String::new()).await;
    assert!(replayed(duplicate.headers()));
    assert_eq!(duplicate.headers()[CONTENT_ENCODING], "gzip");
    assert_eq!(duplicate.headers()[VARY], "accept-encoding");
    assert_eq!(duplicate.bytes().await.unwrap(), first_body);
}

#[tokio::test]
async fn a_server_error_is_not_kept_so_a_retry_runs_again() {
    let (base, ledger) = start(MemoryStore::new()).await;
    let first = post_with_key(&base, "/flaky", Some("flaky-1"), String::new()).await;
    assert_eq!(first.status(), StatusCode::SERVICE_UNAVAILABLE);
    let second = post_with_key(&base, "/flaky", Some("flaky-1"), String::new()).await;
    assert_eq!(second.status(), StatusCode::OK);
    assert!(!replayed(second.headers()));
    let third = post_with_key(&base, "/flaky", Some("flaky-1"), String::new()).await;
    assert!(replayed(third.headers()));
    assert_eq!(third.text().await.unwrap(), "ran 2");
    assert_eq!(ledger.flaky.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_handler_that_panics_is_500_and_a_retry_runs_again() {
    let (base, ledger) = start(MemoryStore::new()).await;
    let first = post_with_key(&base, "/panics", Some("panic-1"), String::new()).await;
    assert_eq!(first.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!replayed(first.headers()));
    assert!(first.text().await.unwrap().contains("panicked"));
    // The claim is given back as the panic unwinds (the store call may
    // still be landing): the retry runs the handler.
    let mut retried = None;
    for _ in 0..100 {
        let response = post_with_key(&base, "/panics", Some("panic-1"), String::new()).await;
        if response.status() != StatusCode::CONFLICT {
            retried = Some(response);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let retried = retried.expect("the panicked claim was released within a second");
    assert_eq!(retried.status(), StatusCode::OK);
    assert!(!replayed(retried.headers()));
    let third = post_with_key(&base, "/panics", Some("panic-1"), String::new()).await;
    assert!(replayed(third.headers()));
    assert_eq!(third.text().await.unwrap(), "ran after a panic");
    assert_eq!(ledger.panics.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn reads_pass_through_without_a_key() {
    let (base, ledger) = start(MemoryStore::new()).await;
    for _ in 0..2 {
        let response = reqwest::get(format!("{base}/payments")).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(!replayed(response.headers()));
    }
    assert_eq!(ledger.reads.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_put_is_idempotent_by_key_when_it_carries_one() {
    let (base, ledger) = start(MemoryStore::new()).await;
    let client = reqwest::Client::new();
    let put = |key: Option<&'static str>| {
        let mut request = client.put(format!("{base}/limit")).body("500");
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        request.send()
    };
    let keyed = [
        put(Some("limit-1")).await.unwrap(),
        put(Some("limit-1")).await.unwrap(),
    ];
    assert!(!replayed(keyed[0].headers()));
    assert!(replayed(keyed[1].headers()));
    assert_eq!(ledger.puts.load(Ordering::SeqCst), 1);
    for _ in 0..2 {
        let unkeyed = put(None).await.unwrap();
        assert_eq!(unkeyed.status(), StatusCode::OK, "a PUT needs no key");
        assert!(!replayed(unkeyed.headers()));
    }
    assert_eq!(ledger.puts.load(Ordering::SeqCst), 3);
}

/// Outside the idempotency layer, as a gateway or `TimeoutLayer` would be:
/// gives up after 200 ms and drops the request's future.
async fn give_up_after_200ms(request: Request, next: Next) -> Response {
    match tokio::time::timeout(Duration::from_millis(200), next.run(request)).await {
        Ok(response) => response,
        Err(_) => (StatusCode::GATEWAY_TIMEOUT, "gave up").into_response(),
    }
}

#[tokio::test]
async fn a_request_dropped_mid_handler_still_runs_once_to_its_end() {
    let ledger = Arc::new(Ledger::default());
    let app = app(&ledger, MemoryStore::new()).layer(middleware::from_fn(give_up_after_200ms));
    let base = serve(app).await;
    let send = post_with_key(&base, "/slow", Some("gone-1"), String::new());
    let (first, ()) = tokio::join!(send, ledger.slow_started.notified());
    assert_eq!(
        first.status(),
        StatusCode::GATEWAY_TIMEOUT,
        "the request's future was dropped"
    );

    // The handler goes on without its request's future, counted by `drain`
    // (other tests may have work of their own running too), and its
    // response is kept.
    assert!(
        steadfast::idempotency::drain(Duration::from_millis(1)).await >= 1,
        "drain waits for the handler whose request was dropped"
    );
    ledger.slow_gate.notify_one();
    tokio::time::timeout(Duration::from_secs(5), ledger.slow_finished.notified())
        .await
        .expect("the handler ran to its end after its request was dropped");
    let retried = loop {
        let response = post_with_key(&base, "/slow", Some("gone-1"), String::new()).await;
        if response.status() != StatusCode::CONFLICT {
            break response;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(retried.status(), StatusCode::OK);
    assert!(replayed(retried.headers()));
    assert_eq!(retried.text().await.unwrap(), "slow done");
    assert_eq!(ledger.slow.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_authentication_failure_is_not_kept() {
    let (base, ledger) = start(MemoryStore::new()).await;
    let first = post_with_key(&base, "/guarded", Some("auth-1"), String::new()).await;
    assert_eq!(first.status(), StatusCode::UNAUTHORIZED);
    let second = post_with_key(&base, "/guarded", Some("auth-1"), String::new()).await;
    assert_eq!(
        second.status(),
        StatusCode::CREATED,
        "fresh credentials, same key: runs"
    );
    assert!(!replayed(second.headers()));
    let third = post_with_key(&base, "/guarded", Some("auth-1"), String::new()).await;
    assert!(replayed(third.headers()));
    assert_eq!(ledger.guarded.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_response_body_that_fails_after_success_is_never_run_again() {
    let (base, ledger) = start(MemoryStore::new()).await;
    for attempt in 0..2 {
        let response = post_with_key(&base, "/broken", Some("broken-1"), String::new()).await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(replayed(response.headers()), attempt == 1);
        assert_eq!(response.headers()["idempotency-original-status"], "201");
        let message = response.text().await.unwrap();
        assert!(message.contains("ran once"), "{message}");
    }
    assert_eq!(ledger.broken.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn scope_by_keeps_each_callers_keys_apart() {
    let per_tenant = layer(MemoryStore::new()).scope_by(|parts| {
        let tenant = parts.headers.get("x-tenant");
        tenant
            .and_then(|value| value.to_str().ok())
            .unwrap_or("-")
            .to_owned()
    });
    let (base, ledger) = start_with(per_tenant).await;
    let client = reqwest::Client::new();
    let pay = |tenant: &'static str| {
        client
            .post(format!("{base}/payments"))
            .header("Idempotency-Key", "same-key")
            .header("x-tenant", tenant)
            .body(payment(100))
            .send()
    };
    let first = pay("acme").await.unwrap();
    let other = pay("globex").await.unwrap();
    let again = pay("acme").await.unwrap();
    assert!(!replayed(first.headers()));
    assert!(
        !replayed(other.headers()),
        "another tenant's key is its own"
    );
    assert!(replayed(again.headers()));
    assert_eq!(ledger.payments.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn nested_routes_are_told_apart_by_the_original_path() {
    let ledger = Arc::new(Ledger::default());
    let store = Arc::new(MemoryStore::new());
    let app = Router::new()
        .nest("/v1", app(&ledger, Arc::clone(&store)))
        .nest("/v2", app(&ledger, Arc::clone(&store)));
    let base = serve(app).await;
    let v1 = post_with_key(&base, "/v1/payments", Some("nested-1"), payment(100)).await;
    assert_eq!(v1.status(), StatusCode::CREATED);
    let v2 = post_with_key(&base, "/v2/payments", Some("nested-1"), payment(100)).await;
    assert_eq!(
        v2.status(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "not v1's response"
    );
    assert_eq!(ledger.payments.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_failing_store_is_503_and_nothing_runs() {
    let store = Arc::new(FailingStore::new(MemoryStore::new()));
    let (base, ledger) = start(Arc::clone(&store)).await;
    store.fail_claims(true);
    let refused = post_with_key(&base, "/payments", Some("down-1"), payment(100)).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers()[RETRY_AFTER], "1");
    let message = refused.text().await.unwrap();
    assert!(
        !message.contains("injected by FailingStore"),
        "the store's error text reached the client: {message}"
    );
    assert!(message.contains("store is unavailable"), "{message}");
    assert_eq!(ledger.payments.load(Ordering::SeqCst), 0, "fails closed");

    store.fail_claims(false);
    let retried = post_with_key(&base, "/payments", Some("down-1"), payment(100)).await;
    assert_eq!(retried.status(), StatusCode::CREATED);
    assert_eq!(ledger.payments.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn replicas_sharing_a_sqlite_file_replay_each_others_responses() {
    let dir = std::env::temp_dir().join(format!("steadfast-http-pair-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("idempotency.db");
    let _ = std::fs::remove_file(&path);
    let store = Arc::new(
        SqliteStore::connect(&format!("sqlite:{}?mode=rwc", path.display()))
            .await
            .unwrap(),
    );
    store.migrate().await.unwrap();
    let ledger = Arc::new(Ledger::default());
    let replica_a = serve(app(&ledger, Arc::clone(&store))).await;
    let replica_b = serve(app(&ledger, Arc::clone(&store))).await;

    let first = post_with_key(&replica_a, "/payments", Some("shared-1"), payment(700)).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first_body = first.text().await.unwrap();
    let duplicate = post_with_key(&replica_b, "/payments", Some("shared-1"), payment(700)).await;
    assert_eq!(duplicate.status(), StatusCode::CREATED);
    assert!(replayed(duplicate.headers()));
    assert_eq!(duplicate.headers()[LOCATION], "/payments/1");
    assert_eq!(duplicate.text().await.unwrap(), first_body);
    assert_eq!(ledger.payments.load(Ordering::SeqCst), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The client of the end-to-end tests: the body is rebuilt on every attempt,
/// the key is the caller's (made once per logical payment), a `409` or `503`
/// waits for the server's `Retry-After` (up to the backoff's cap of 2 s: the
/// cap bounds a pushback too).
#[steadfast::retry(
    max = 20,
    backoff = "exp(5ms, max = 2s)",
    timeout = "5s",
    on = "Unavailable|DeadlineExceeded|ResourceExhausted|Aborted"
)]
async fn send_payment(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    payment: &Payment,
) -> Result<Receipt, HttpError> {
    let body = serde_json::to_vec(payment).expect("a payment serializes");
    let response = json_post(client, url, Some(key), body).send().await?;
    let bytes = HttpError::check(response)?.bytes().await?;
    serde_json::from_slice(&bytes)
        .map_err(|error| HttpError::new(format!("not a receipt: {error}")))
}

/// In front of the idempotency layer: of every three requests, one is
/// refused before it runs and one runs but loses its response (a proxy
/// timing out after the money moved), both as `503`.
async fn lose_responses(
    State(seen): State<Arc<AtomicU32>>,
    request: Request,
    next: Next,
) -> Response {
    match seen.fetch_add(1, Ordering::SeqCst) % 3 {
        0 => (StatusCode::SERVICE_UNAVAILABLE, "refused").into_response(),
        1 => {
            let _ran = next.run(request).await;
            (StatusCode::SERVICE_UNAVAILABLE, "response lost").into_response()
        }
        _ => next.run(request).await,
    }
}

#[tokio::test]
async fn a_retrying_client_through_lost_responses_pays_each_payment_once() {
    let ledger = Arc::new(Ledger::default());
    let seen = Arc::new(AtomicU32::new(0));
    let app = app(&ledger, MemoryStore::new()).layer(middleware::from_fn_with_state(
        Arc::clone(&seen),
        lose_responses,
    ));
    let url = format!("{}/payments", serve(app).await);
    let client = reqwest::Client::new();
    let payments = 60_u64;
    let mut calls = tokio::task::JoinSet::new();
    for number in 0..payments {
        let (client, url) = (client.clone(), url.clone());
        calls.spawn(async move {
            let key = format!("payment-{number}");
            send_payment(&client, &url, &key, &alice_pays(number + 1)).await
        });
    }
    let mut receipts = Vec::new();
    while let Some(result) = calls.join_next().await {
        receipts.push(result.unwrap().expect("every payment is acknowledged"));
    }
    let mut paid: Vec<u64> = receipts.iter().map(|receipt| receipt.cents).collect();
    paid.sort_unstable();
    assert_eq!(paid, (1..=payments).collect::<Vec<_>>());
    assert_eq!(
        ledger.payments.load(Ordering::SeqCst),
        payments as u32,
        "each payment ran exactly once"
    );
    assert!(
        seen.load(Ordering::SeqCst) >= 3 * payments as u32 - 2,
        "every payment needed retries: {} requests",
        seen.load(Ordering::SeqCst)
    );
}

/// Answers `429` with `Retry-After: 1` to the first request it sees.
async fn throttle_once(
    State(seen): State<Arc<AtomicU32>>,
    request: Request,
    next: Next,
) -> Response {
    if seen.fetch_add(1, Ordering::SeqCst) == 0 {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(RETRY_AFTER, "1")],
            "slow down",
        )
            .into_response();
    }
    next.run(request).await
}

/// The client's backoff is 5 ms; a client that ignored `Retry-After` would
/// be answered by the second attempt within milliseconds. Elapsed time is
/// the observable here (a lower bound set by the server, not a benchmark).
#[tokio::test]
async fn the_retrying_client_waits_as_long_as_retry_after_says() {
    let ledger = Arc::new(Ledger::default());
    let seen = Arc::new(AtomicU32::new(0));
    let app = app(&ledger, MemoryStore::new()).layer(middleware::from_fn_with_state(
        Arc::clone(&seen),
        throttle_once,
    ));
    let url = format!("{}/payments", serve(app).await);
    let started = tokio::time::Instant::now();
    let receipt = send_payment(&reqwest::Client::new(), &url, "throttled", &alice_pays(5))
        .await
        .unwrap();
    assert_eq!(receipt.cents, 5);
    assert_eq!(seen.load(Ordering::SeqCst), 2);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "retried after {:?}, before the server's Retry-After: 1",
        started.elapsed()
    );
}

#[test]
#[should_panic(expected = "must exceed the lease")]
fn a_ttl_not_above_the_lease_is_refused_at_start_up() {
    let ledger = Arc::new(Ledger::default());
    let _ = routes(&ledger).layer(layer(MemoryStore::new()).ttl(Duration::from_secs(10)));
}
