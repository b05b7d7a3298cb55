//! The database going away (issue 12, part 4): a [`FaultProxy`] on
//! loopback between the replicas and the database (PostgreSQL, MariaDB,
//! Redis) cuts every connection at moments spread over the run and refuses
//! new ones for 1–2 s, four times per run. Checked: while it is down,
//! idempotent calls fail closed (no body runs without a claim); clients
//! retry through it; afterwards the ledger is exact, and no key stays
//! blocked longer than its lease.
//!
//! The tests read `STEADFAST_TEST_POSTGRES_URL`, `STEADFAST_TEST_MYSQL_URL`
//! and `STEADFAST_TEST_REDIS_URL`; without one, its test prints "skipped"
//! and passes, except under `CI=true`, where it fails.

use std::{
    collections::HashMap,
    net::{SocketAddr, ToSocketAddrs},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use sqlx::AssertSqlSafe;
use steadfast::idempotency::{
    ACQUIRE_TIMEOUT, Claim, ClaimRequest, Completion, Idempotency, IdempotencyError,
    IdempotencyStore, Millis, MySqlStore, PostgresStore, RecordKey, RedisStore, SqlBackend,
    SqlStore, StoreFuture, current_claim,
};
use steadfast_payments::{
    Backend, Cluster, DemoConfig, FaultPlan, Movement, Payment, PaymentsClient, Traffic,
    account_name, generate,
    proto::{Receipt, ledger_client::LedgerClient},
    send_once, summarize,
};
use steadfast_test_support::{FaultProxy, proxy::ProxyCounters};
use tokio::time::Instant;
use tonic::{Code, Status, transport::Channel};

/// The demo's lease (`LEASE` in `payments/src/books.rs`, crate-private):
/// how long a payment's claim holds without renewal.
const DEMO_LEASE: Duration = Duration::from_secs(2);
/// The lease of the Redis test's records.
const REDIS_LEASE: Duration = Duration::from_millis(500);
/// What a key may be blocked for beyond its lease and the outages: the
/// clients' pauses between attempts and a reconnect.
const SLACK: Duration = Duration::from_millis(1000);
/// Cut-and-refuse rounds per run.
const ROUNDS: usize = 4;

/// `host:port` of `url` (after `scheme://` and any `user@`), resolved.
fn upstream_of(url: &str) -> SocketAddr {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    host.to_socket_addrs()
        .expect("the server's address resolves")
        .next()
        .expect("the server has an address")
}

/// The refusal windows of a run, and its plain cuts.
#[derive(Debug, Default)]
struct Outages {
    /// From the refusal to the proxy listening again.
    windows: Vec<(Instant, Instant)>,
    /// Cuts without a refusal.
    cuts: usize,
}

impl Outages {
    /// How long the proxy refused within `from..to`.
    fn overlap(&self, from: Instant, to: Instant) -> Duration {
        self.windows
            .iter()
            .map(|&(start, end)| end.min(to).saturating_duration_since(start.max(from)))
            .sum()
    }

    fn refused(&self) -> Duration {
        self.windows.iter().map(|&(start, end)| end - start).sum()
    }
}

/// Cuts and refusals spread over a run of `total` units of work, `done()`
/// of which are finished: in each of [`ROUNDS`] rounds, a cut of every
/// connection once another tenth of the work is done (plus 0–40 ms), then
/// a refusal of 1–2 s after the next tenth. Stops early if the work ends;
/// each wait is bounded by `patience`.
async fn make_outages(
    proxy: &FaultProxy,
    total: usize,
    done: impl Fn() -> usize,
    seed: u64,
) -> Outages {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut outages = Outages::default();
    let steps = 2 * ROUNDS + 2;
    for round in 0..ROUNDS {
        let cut_at = total * (2 * round + 1) / steps;
        if !wait_until(&done, cut_at, total).await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(rng.u64(0..40))).await;
        proxy.cut().await;
        outages.cuts += 1;

        let refuse_at = total * (2 * round + 2) / steps;
        if !wait_until(&done, refuse_at, total).await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(rng.u64(0..40))).await;
        let started = Instant::now();
        proxy
            .refuse_for(Duration::from_millis(rng.u64(1000..2000)))
            .await;
        proxy.accepting().await.expect("the proxy listens again");
        outages.windows.push((started, Instant::now()));
    }
    outages
}

/// Waits (at most 30 s) until `done()` reaches `target`; false if the work
/// ended first or the wait timed out.
async fn wait_until(done: &impl Fn() -> usize, target: usize, total: usize) -> bool {
    let patience = Instant::now() + Duration::from_secs(30);
    while done() < target {
        if done() >= total || Instant::now() >= patience {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    done() < total
}

// ---------------------------------------------------------------------------
// PostgreSQL and MariaDB: the payments cluster through the proxy.
// ---------------------------------------------------------------------------

/// A connection to the database that does not go through the proxy: it
/// counts rows while the proxy refuses.
enum Direct {
    Postgres(PostgresStore),
    MySql(MySqlStore),
}

impl Direct {
    async fn connect(backend: &Backend) -> Direct {
        match backend {
            Backend::Postgres(url) => Direct::Postgres(
                PostgresStore::connect(url)
                    .await
                    .expect("PostgreSQL accepts connections"),
            ),
            Backend::MySql(url) => Direct::MySql(
                MySqlStore::connect(url)
                    .await
                    .expect("MariaDB accepts connections"),
            ),
            other => panic!("no direct connection to {other}"),
        }
    }

    async fn count(&self, sql: String) -> i64 {
        let sql = AssertSqlSafe(sql);
        match self {
            Direct::Postgres(store) => sqlx::query_scalar(sql).fetch_one(store.pool()).await,
            Direct::MySql(store) => sqlx::query_scalar(sql).fetch_one(store.pool()).await,
        }
        .expect("the direct connection counts")
    }

    /// Rows of the ledger's transfers (executions) and of its idempotency
    /// records (claims).
    async fn rows(&self, prefix: &str) -> (i64, i64) {
        let transfers = self
            .count(format!("SELECT COUNT(*) FROM {prefix}_transfers"))
            .await;
        let claims = self
            .count(format!("SELECT COUNT(*) FROM {prefix}_idempotency"))
            .await;
        (transfers, claims)
    }

    async fn rows_of(&self, prefix: &str, payment_id: &str) -> i64 {
        self.count(format!(
            "SELECT COUNT(*) FROM {prefix}_transfers WHERE payment_id = '{payment_id}'"
        ))
        .await
    }
}

/// The backend `backend` with its URL's `host:port` pointed at `proxy`.
fn through(proxy: &FaultProxy, backend: &Backend) -> Backend {
    match backend {
        Backend::Postgres(url) => Backend::Postgres(proxy.url(url)),
        Backend::MySql(url) => Backend::MySql(proxy.url(url)),
        other => panic!("no proxy for {other}"),
    }
}

fn upstream_of_backend(backend: &Backend) -> SocketAddr {
    match backend {
        Backend::Postgres(url) | Backend::MySql(url) => upstream_of(url),
        other => panic!("{other} has no server"),
    }
}

/// 16 clients make 1000 payments through 3 replicas under 20% injected
/// faults, while the database's connections are cut and refused four
/// times; then the audit, the keys' answers, and a payment sent while the
/// database is refused.
async fn database_cut(backend: Backend, prefix: &str) {
    let started = std::time::Instant::now();
    let proxy = FaultProxy::start(upstream_of_backend(&backend))
        .await
        .expect("the proxy listens");
    let direct = Direct::connect(&backend).await;
    let mut config = DemoConfig::new(through(&proxy, &backend))
        .payments(1000)
        .fault_rate(0.2);
    config.replicas = 3;
    config.clients = 16;
    config.seed = 2027;
    config.prefix = prefix.to_owned();
    let faults = Arc::new(FaultPlan::new(config.fault_rate, config.seed));
    // Resets the ledger through the proxy, before any cut.
    let cluster = Cluster::start(config.cluster(), faults)
        .await
        .expect("the cluster starts");
    let payments: Arc<[Payment]> =
        generate(prefix, config.payments, config.accounts, config.seed).into();
    let Traffic {
        clients,
        progress,
        started: run_started,
        task: run,
    } = Traffic::start(config.clients, &cluster.addresses(), payments.clone());
    let outages = make_outages(&proxy, payments.len(), || progress.done(), config.seed).await;
    let results = run.await.expect("the clients finish");
    let run_elapsed = run_started.elapsed();
    let during_run = proxy.counters();

    let summary = summarize(
        &config,
        &cluster,
        &clients,
        &payments,
        &results,
        run_elapsed,
        0,
    )
    .await
    .expect("the ledger can be read");
    println!("{summary}");
    println!(
        "{during_run}; {} plain cuts, {} refusals ({:.1?} refused in all)",
        outages.cuts,
        outages.windows.len(),
        outages.refused()
    );
    assert!(
        outages.windows.len() >= 3,
        "at least 3 refusals during the run: {outages:?}"
    );
    assert!(during_run.cut > 0, "open connections were cut");

    // The ledger, as in tests/chaos.rs.
    let audit = &summary.audit;
    assert!(audit.exact(), "the ledger is not exact: {audit:#?}");
    assert_eq!(audit.duplicate_rows, 0, "a payment ran twice");
    assert!(
        audit.lost.is_empty(),
        "acknowledged payments lost: {:?}",
        audit.lost
    );
    // A deposit whose fenced commit succeeded but whose answer (or receipt)
    // was lost to a cut is never run again: its retries get `Aborted` for a
    // lease, then `DataLoss`, and give up. Nothing else may fail.
    assert_eq!(
        audit.failed, audit.failed_but_executed,
        "a payment failed without having run"
    );
    assert!(audit.failed <= 16, "{} payments failed", audit.failed);
    // What clients see while the database is away: the store's errors and
    // the ledger's are `Unavailable` (IdempotencyError::Store and db_error),
    // a replica waiting for a connection runs past the client's 300 ms
    // timeout (`DeadlineExceeded`); never `Internal`.
    assert!(
        summary.failures_of(Code::Unavailable) > 0,
        "clients saw the database go away"
    );
    assert_eq!(summary.failures_of(Code::Internal), 0);

    let answers = answers_after_the_run(&cluster, &payments, &results).await;
    println!("{answers}");

    let probe = refused_payment(&proxy, &cluster, &direct, prefix).await;
    println!("{probe}");
    cluster.shutdown().await;
    println!("{}; wall time {:.1?}", proxy.counters(), started.elapsed());
}

/// What the keys answered after the run.
#[derive(Debug, Default)]
struct KeyAnswers {
    replayed: usize,
    /// `DataLoss`: a fenced deposit whose receipt was lost to a cut.
    result_lost: usize,
    /// Keys answered `Aborted` at first, and the longest time until their
    /// final answer.
    blocked: usize,
    longest_block: Duration,
    /// Attempts answered `Unavailable` or `ResourceExhausted`: an injected
    /// fault, or a pooled connection cut while idle.
    unavailable: usize,
}

impl std::fmt::Display for KeyAnswers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "after the run: {} receipts replayed, {} results lost (DataLoss), {} keys blocked at first (longest {:.2?}, lease {:?}), {} attempts Unavailable or ResourceExhausted (injected faults, pooled connections cut while idle)",
            self.replayed,
            self.result_lost,
            self.blocked,
            self.longest_block,
            DEMO_LEASE,
            self.unavailable
        )
    }
}

/// With the proxy healthy, every payment is sent once more: each key
/// either replays its receipt, or, if a cut left its claim without a result
/// (a fenced deposit whose receipt was not stored), answers `Aborted` for
/// at most a lease after its fence, then `DataLoss`. No key stays blocked
/// longer than its lease: measured from its first `Aborted` here to its
/// final answer (the fence was earlier, so this bound is sound).
async fn answers_after_the_run(
    cluster: &Cluster,
    payments: &Arc<[Payment]>,
    results: &[Result<Receipt, Status>],
) -> KeyAnswers {
    let mut replicas = Vec::new();
    for address in cluster.addresses() {
        let client = LedgerClient::connect(format!("http://{address}"))
            .await
            .expect("a replica accepts connections");
        replicas.push(client);
    }
    let results: Arc<[Option<String>]> = results
        .iter()
        .map(|result| {
            result
                .as_ref()
                .ok()
                .map(|receipt| receipt.transfer_id.clone())
        })
        .collect();
    let next = Arc::new(AtomicUsize::new(0));
    let answers = Arc::new(Mutex::new(KeyAnswers::default()));
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..16 {
        let (payments, results, next, answers) = (
            payments.clone(),
            results.clone(),
            next.clone(),
            answers.clone(),
        );
        let mut client = replicas[worker % replicas.len()].clone();
        workers.spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(payment) = payments.get(index) else {
                    return;
                };
                let mut first_aborted = None;
                let mut final_answer = None;
                for _ in 0..100 {
                    let answer = tokio::time::timeout(
                        Duration::from_secs(5),
                        send_once(&mut client, payment),
                    )
                    .await
                    .unwrap_or_else(|_| panic!("{payment}: no answer within 5 s"));
                    match answer {
                        Err(status) if status.code() == Code::Aborted => {
                            first_aborted.get_or_insert_with(Instant::now);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Err(status) if retryable(&status) => {
                            answers.lock().unwrap().unavailable += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        answer => {
                            final_answer = Some(answer);
                            break;
                        }
                    }
                }
                let blocked = first_aborted.map(|at| at.elapsed());
                let mut answers = answers.lock().unwrap();
                if let Some(blocked) = blocked {
                    assert!(
                        blocked <= DEMO_LEASE + SLACK,
                        "{payment}: blocked {blocked:?}, longer than its lease ({DEMO_LEASE:?})"
                    );
                    answers.blocked += 1;
                    answers.longest_block = answers.longest_block.max(blocked);
                }
                match final_answer {
                    Some(Ok(receipt)) => {
                        if let Some(acknowledged) = &results[index] {
                            assert_eq!(
                                &receipt.transfer_id, acknowledged,
                                "{payment}: the replay is the acknowledged receipt"
                            );
                        }
                        answers.replayed += 1;
                    }
                    Some(Err(status)) if status.code() == Code::DataLoss => {
                        // Only a fenced deposit can lose its result: a
                        // transfer's receipt commits with its money.
                        assert!(
                            matches!(payment.movement, Movement::Deposit { .. }),
                            "{payment}: {status:?}"
                        );
                        answers.result_lost += 1;
                    }
                    other => panic!("{payment}: unexpected final answer {other:?}"),
                }
            }
        });
    }
    while let Some(worker) = workers.join_next().await {
        worker.expect("a probe worker does not panic");
    }
    Arc::try_unwrap(answers)
        .expect("the workers ended")
        .into_inner()
        .unwrap()
}

/// What a payment sent while the database was refused got.
#[derive(Debug)]
struct RefusedPayment {
    answer: String,
    rows: (i64, i64),
    receipt_after: String,
}

impl std::fmt::Display for RefusedPayment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "while refused: a deposit's attempts got {}; transfers and claims stayed at {:?}; afterwards it ran once ({})",
            self.answer, self.rows, self.receipt_after
        )
    }
}

/// Fail closed: while the proxy refuses, a new deposit sent to a replica
/// gets an error, and neither its claim nor its row appears (counted over a
/// direct connection); once the proxy listens again, it runs once.
async fn refused_payment(
    proxy: &FaultProxy,
    cluster: &Cluster,
    direct: &Direct,
    prefix: &str,
) -> RefusedPayment {
    let payment = Payment {
        id: format!("{prefix}-refused"),
        movement: Movement::Deposit {
            account: account_name(0),
        },
        cents: 100,
    };
    let address = cluster.addresses()[0];
    let mut client = LedgerClient::connect(format!("http://{address}"))
        .await
        .expect("a replica accepts connections");
    let before = direct.rows(prefix).await;
    proxy.refuse_for(Duration::from_secs(3)).await;
    // Four attempts, 400 ms each: the fault layer refuses one in ten
    // before the handler, so most of them reach it.
    let mut answers = Vec::new();
    for _ in 0..4 {
        let answer =
            tokio::time::timeout(Duration::from_millis(400), send_once(&mut client, &payment))
                .await;
        answers.push(match answer {
            Ok(Ok(receipt)) => panic!("a payment ran while the database was refused: {receipt:?}"),
            Ok(Err(status)) => {
                assert!(retryable(&status), "{status:?}");
                format!("{:?}", status.code())
            }
            // The replica waits for a connection (sqlx retries a refused
            // connect until its acquire timeout).
            Err(_) => "no answer in 400 ms".to_owned(),
        });
    }
    let answer = answers.join(", ");
    let during = direct.rows(prefix).await;
    assert!(
        proxy.is_refusing(),
        "the counts were taken while the proxy refused"
    );
    assert_eq!(
        during, before,
        "no claim and no execution while the database is refused"
    );
    assert_eq!(direct.rows_of(prefix, &payment.id).await, 0);

    proxy.accepting().await.expect("the proxy listens again");
    let receipt = PaymentsClient::new(&cluster.addresses())
        .pay(&payment)
        .await
        .expect("the deposit goes through once the database is back");
    assert_eq!(direct.rows_of(prefix, &payment.id).await, 1, "ran once");
    let replayed = answer_of(&mut client, &payment)
        .await
        .expect("the duplicate replays");
    assert_eq!(replayed.transfer_id, receipt.transfer_id);
    RefusedPayment {
        answer,
        rows: during,
        receipt_after: receipt.transfer_id,
    }
}

/// An answer the clients retry that says nothing about the payment: an
/// injected fault, or a store error (fail closed).
fn retryable(status: &Status) -> bool {
    matches!(status.code(), Code::Unavailable | Code::ResourceExhausted)
}

/// The payment's answer, past injected faults (at most 20 attempts).
async fn answer_of(
    client: &mut LedgerClient<Channel>,
    payment: &Payment,
) -> Result<Receipt, Status> {
    let mut answer = send_once(client, payment).await;
    for _ in 0..20 {
        match &answer {
            Err(status) if retryable(status) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                answer = send_once(client, payment).await;
            }
            _ => break,
        }
    }
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_database_cut() {
    let Some(url) = steadfast_test_support::server_url(steadfast_test_support::POSTGRES_URL) else {
        return;
    };
    database_cut(Backend::Postgres(url), "dbcut_pg").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_database_cut() {
    let Some(url) = steadfast_test_support::server_url(steadfast_test_support::MYSQL_URL) else {
        return;
    };
    database_cut(Backend::MySql(url), "dbcut_my").await;
}

/// While the database refuses connections for longer than the pool's
/// acquire timeout, a claim fails closed (a store error, the body not run)
/// within that timeout, not after sqlx's default 30 s (nor, as a pool with
/// that default did, by succeeding once the database is back, its caller
/// held for the whole outage).
async fn claim_fails_closed_within_the_acquire_timeout<S: IdempotencyStore>(store: &S) {
    let proxy_outage = ACQUIRE_TIMEOUT + Duration::from_secs(4);
    let ran = AtomicU64::new(0);
    let started = Instant::now();
    // The first claims may fail at once on the pool's cut connections; the
    // next has none left and must open one, which the proxy refuses.
    let mut answers = Vec::new();
    for _ in 0..5 {
        let attempt = Instant::now();
        let answer = Idempotency::new(store)
            .key(format!("acquire-{}", fastrand::u64(..)))
            .run(|| async {
                ran.fetch_add(1, Ordering::Relaxed);
                Ok::<_, IdempotencyError>(1)
            })
            .await;
        let waited = attempt.elapsed();
        assert!(
            matches!(answer, Err(IdempotencyError::Store(_))),
            "a store error, not {answer:?}"
        );
        answers.push(waited);
        if waited >= Duration::from_secs(1) {
            break;
        }
    }
    let elapsed = started.elapsed();
    println!("claims failed after {answers:.2?} of a {proxy_outage:?} refusal");
    assert_eq!(
        ran.load(Ordering::Relaxed),
        0,
        "no body runs without a claim"
    );
    assert!(
        answers
            .last()
            .is_some_and(|waited| *waited >= Duration::from_secs(1)),
        "no claim waited for a new connection: {answers:?}"
    );
    assert!(
        elapsed < proxy_outage,
        "the claims waited out the outage ({elapsed:.2?})"
    );
}

/// A store connected through a proxy that then cuts its connections and
/// refuses new ones for [`ACQUIRE_TIMEOUT`] + 4 s; the proxy is returned so
/// that it lives as long as the test.
async fn refused_store<S>(
    url: &str,
    connect: impl AsyncFnOnce(&str) -> Result<S, steadfast::idempotency::StoreError>,
) -> (S, FaultProxy) {
    let proxy = FaultProxy::start(upstream_of(url))
        .await
        .expect("a proxy on loopback");
    let store = connect(&proxy.url(url)).await.expect("the store connects");
    proxy
        .refuse_for(ACQUIRE_TIMEOUT + Duration::from_secs(4))
        .await;
    (store, proxy)
}

/// [`claim_fails_closed_within_the_acquire_timeout`] over the SQL store on
/// `DB` at the server in the environment variable `var`.
async fn sql_claim_fails_closed_within_the_acquire_timeout<DB: SqlBackend>(var: &str) {
    let Some(url) = steadfast_test_support::server_url(var) else {
        return;
    };
    let (store, _proxy) = refused_store(&url, async |url| {
        let store = SqlStore::<DB>::connect(url)
            .await?
            .with_table("dbcut_acquire")?;
        store.migrate().await?;
        Ok(store)
    })
    .await;
    claim_fails_closed_within_the_acquire_timeout(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_claim_fails_closed_within_the_acquire_timeout() {
    sql_claim_fails_closed_within_the_acquire_timeout::<sqlx::Postgres>(
        steadfast_test_support::POSTGRES_URL,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_claim_fails_closed_within_the_acquire_timeout() {
    sql_claim_fails_closed_within_the_acquire_timeout::<sqlx::MySql>(
        steadfast_test_support::MYSQL_URL,
    )
    .await;
}

// ---------------------------------------------------------------------------
// Redis: an idempotent handler over RedisStore through the proxy.
// ---------------------------------------------------------------------------

/// What the store saw, per record key.
#[derive(Debug, Default)]
struct KeyLog {
    /// Tokens whose claim the store granted.
    won: Vec<u64>,
    /// The latest `lease_until` granted (claim or renewal) and not ended
    /// by a completion.
    lease_until: Option<Millis>,
    /// `complete` calls that failed (an error, or the token no longer held).
    failed_completions: u32,
    /// When the last one failed.
    last_failed_completion: Option<Instant>,
    /// Claims granted after a failed completion: how long after it, and
    /// whether before the lease ran out by the store's clock.
    takeovers: Vec<(Duration, Instant, Instant, bool)>,
}

/// A [`RedisStore`] whose every call is logged per key.
#[derive(Clone)]
struct Watched {
    store: RedisStore,
    log: Arc<Mutex<HashMap<RecordKey, KeyLog>>>,
    claims: Arc<AtomicU64>,
    claim_errors: Arc<AtomicU64>,
}

impl Watched {
    fn with<R>(&self, key: &RecordKey, f: impl FnOnce(&mut KeyLog) -> R) -> R {
        f(self.log.lock().unwrap().entry(key.clone()).or_default())
    }

    /// Whether `token` won a claim on `key`.
    fn won(&self, key: &RecordKey, token: u64) -> bool {
        self.with(key, |log| log.won.contains(&token))
    }
}

impl IdempotencyStore for Watched {
    fn claim<'a>(&'a self, request: &'a ClaimRequest<'a>) -> StoreFuture<'a, Claim> {
        Box::pin(async move {
            self.claims.fetch_add(1, Ordering::Relaxed);
            let claim = self.store.claim(request).await;
            match &claim {
                Ok(Claim::Claimed) => self.with(request.key, |log| {
                    if let Some(failed_at) = log.last_failed_completion.take() {
                        let early = log.lease_until.is_some_and(|until| request.now < until);
                        log.takeovers
                            .push((failed_at.elapsed(), failed_at, Instant::now(), early));
                    }
                    log.won.push(request.token);
                    log.lease_until = Some(request.lease_until);
                }),
                Ok(_) => {}
                Err(_) => {
                    self.claim_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            claim
        })
    }

    fn complete<'a>(&'a self, completion: Completion<'a>) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let key = completion.key;
            let done = self.store.complete(completion).await;
            self.with(key, |log| match done {
                Ok(true) => log.lease_until = None,
                _ => {
                    log.failed_completions += 1;
                    log.last_failed_completion = Some(Instant::now());
                }
            });
            done
        })
    }

    fn release<'a>(&'a self, key: &'a RecordKey, token: u64) -> StoreFuture<'a, bool> {
        self.store.release(key, token)
    }

    fn renew<'a>(&'a self, key: &'a RecordKey, token: u64, until: Millis) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let renewed = self.store.renew(key, token, until).await;
            if matches!(renewed, Ok(true)) {
                self.with(key, |log| log.lease_until = Some(until));
            }
            renewed
        })
    }

    fn purge_expired(&self, now: Millis) -> StoreFuture<'_, u64> {
        self.store.purge_expired(now)
    }

    fn shared(&self) -> Option<Arc<dyn IdempotencyStore>> {
        Some(Arc::new(self.clone()))
    }

    fn identity(&self) -> usize {
        Arc::as_ptr(&self.log) as usize
    }
}

/// The keys' effects: executions per key, and bodies that ran without a
/// claim won by their token.
#[derive(Debug)]
struct Effects {
    executions: Vec<AtomicU64>,
    unclaimed: AtomicU64,
}

const REDIS_KEYS: usize = 300;
const REDIS_SCOPE: &str = "database_cut";

/// One call of the handler for key `index`: the effect is the key's
/// counter; the result names the execution (`index << 16 | n`).
async fn handler(
    store: &Watched,
    effects: &Effects,
    run: &str,
    index: usize,
) -> Result<u64, IdempotencyError> {
    Idempotency::new(store)
        .key(format!("{run}-{index:04}"))
        .scope(REDIS_SCOPE)
        .lease(REDIS_LEASE)
        .ttl(Duration::from_secs(120))
        .run(|| async move {
            let claim = current_claim().expect("a body runs under a claim");
            if !store.won(claim.record_key(), claim.token()) {
                effects.unclaimed.fetch_add(1, Ordering::Relaxed);
            }
            let n = effects.executions[index].fetch_add(1, Ordering::Relaxed) + 1;
            tokio::time::sleep(Duration::from_millis(fastrand::u64(0..3))).await;
            Ok(((index as u64) << 16) | n)
        })
        .await
}

/// What callers saw.
#[derive(Debug, Default)]
struct Calls {
    /// Per key, the results its callers got.
    results: Vec<Vec<u64>>,
    store_errors: u64,
    in_progress: u64,
    /// Per call that was answered `InProgress`: from the first such answer
    /// to its result, and when.
    blocked: Vec<(Duration, Instant, Instant)>,
}

/// A caller: retries `InProgress` (after the pushback, at most 100 ms) and
/// store errors (after 50 ms), at most 400 times and 30 s.
async fn call_until_done(
    store: &Watched,
    effects: &Effects,
    run: &str,
    index: usize,
    calls: &Mutex<Calls>,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut first_in_progress: Option<Instant> = None;
    for _ in 0..400 {
        assert!(Instant::now() < deadline, "key {index}: no result in 30 s");
        match handler(store, effects, run, index).await {
            Ok(value) => {
                let mut calls = calls.lock().unwrap();
                calls.results[index].push(value);
                if let Some(first) = first_in_progress {
                    calls.blocked.push((first.elapsed(), first, Instant::now()));
                }
                return;
            }
            Err(IdempotencyError::InProgress { retry_after }) => {
                first_in_progress.get_or_insert_with(Instant::now);
                calls.lock().unwrap().in_progress += 1;
                tokio::time::sleep(
                    retry_after.clamp(Duration::from_millis(5), Duration::from_millis(100)),
                )
                .await;
            }
            Err(IdempotencyError::Store(_)) => {
                calls.lock().unwrap().store_errors += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(other) => panic!("key {index}: {other:?}"),
        }
    }
    panic!("key {index}: no result in 400 calls");
}

/// 300 keys, each called by two of 16 concurrent callers at about the same
/// time, over a `RedisStore` reached through the proxy, which cuts and
/// refuses four times. Redis cannot commit a body's effects with its
/// result: a body whose `complete` was cut has run, its result is not
/// stored, and once its lease lapses the key is claimed and run again.
/// That is the only way a key may run twice here; the SQL stores'
/// `transaction = tx` and fence are what prevent it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_database_cut() {
    let Some(url) = steadfast_test_support::server_url(steadfast_test_support::REDIS_URL) else {
        return;
    };
    let started = std::time::Instant::now();
    let proxy = FaultProxy::start(upstream_of(&url))
        .await
        .expect("the proxy listens");
    let run = format!("{:08x}", fastrand::u32(..));
    let redis = RedisStore::connect(&proxy.url(&url))
        .await
        .expect("Redis accepts connections")
        .with_prefix(&format!("steadfast_dbcut_{run}"))
        .expect("a valid prefix");
    redis.migrate().await.expect("the scripts load");
    let store = Watched {
        store: redis,
        log: Arc::default(),
        claims: Arc::default(),
        claim_errors: Arc::default(),
    };
    let effects = Arc::new(Effects {
        executions: (0..REDIS_KEYS + 1).map(|_| AtomicU64::new(0)).collect(),
        unclaimed: AtomicU64::new(0),
    });
    let calls = Arc::new(Mutex::new(Calls {
        results: vec![Vec::new(); REDIS_KEYS + 1],
        ..Calls::default()
    }));

    // Each key twice, one after the other: two callers race for it.
    let queue: Arc<[usize]> = (0..2 * REDIS_KEYS).map(|slot| slot / 2).collect();
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (store, effects, calls, queue, next, done, run) = (
            store.clone(),
            effects.clone(),
            calls.clone(),
            queue.clone(),
            next.clone(),
            done.clone(),
            run.clone(),
        );
        callers.spawn(async move {
            while let Some(&index) = queue.get(next.fetch_add(1, Ordering::Relaxed)) {
                call_until_done(&store, &effects, &run, index, &calls).await;
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let outages = make_outages(&proxy, queue.len(), || done.load(Ordering::Relaxed), 7).await;
    while let Some(caller) = callers.join_next().await {
        caller.expect("a caller does not panic");
    }
    let run_elapsed = started.elapsed();
    let during_run = proxy.counters();

    // Fail closed, directly: while the proxy refuses, a new key's call
    // fails with a store error and its body does not run.
    let refused_key = REDIS_KEYS;
    proxy.refuse_for(Duration::from_secs(3)).await;
    let refused = handler(&store, &effects, &run, refused_key).await;
    assert!(
        matches!(refused, Err(IdempotencyError::Store(_))),
        "{refused:?}"
    );
    assert!(
        proxy.is_refusing(),
        "the call failed while the proxy refused"
    );
    assert_eq!(effects.executions[refused_key].load(Ordering::Relaxed), 0);
    proxy.accepting().await.expect("the proxy listens again");
    call_until_done(&store, &effects, &run, refused_key, &calls).await;
    assert_eq!(effects.executions[refused_key].load(Ordering::Relaxed), 1);

    // Every key ends completed: a key whose last completion was cut is run
    // once more (after its lease), then every key replays one result.
    let executions_before: Vec<u64> = snapshot(&effects);
    for index in 0..=REDIS_KEYS {
        call_until_done(&store, &effects, &run, index, &calls).await;
    }
    let completing: Vec<u64> = snapshot(&effects);
    let final_results: Vec<u64> = {
        let calls = calls.lock().unwrap();
        calls
            .results
            .iter()
            .map(|results| *results.last().unwrap())
            .collect()
    };
    for index in 0..=REDIS_KEYS {
        let replayed = handler(&store, &effects, &run, index)
            .await
            .expect("the healthy store replays");
        assert_eq!(
            replayed, final_results[index],
            "key {index} replays its result"
        );
        assert_eq!(
            replayed & 0xffff,
            completing[index],
            "key {index}: the stored result is its last execution's"
        );
    }
    assert_eq!(snapshot(&effects), completing, "replays run no body");

    // No body without a claim.
    assert_eq!(
        effects.unclaimed.load(Ordering::Relaxed),
        0,
        "a body ran without a claim won by its token"
    );
    let log = store.log.lock().unwrap();
    let calls = calls.lock().unwrap();
    let claims_won: usize = log.values().map(|key| key.won.len()).sum();
    let bodies: u64 = completing.iter().sum();
    assert!(
        bodies <= claims_won as u64,
        "{bodies} bodies ran on {claims_won} claims won"
    );

    // A key runs more than once only after a failed completion, and the
    // claim is taken over only once the lease ran out, within the lease
    // plus the outages of the wait.
    let mut twice = 0;
    let mut longest_takeover = Duration::ZERO;
    for (index, &runs) in completing.iter().enumerate() {
        let key = RecordKey::new(REDIS_SCOPE, &format!("{run}-{index:04}")).unwrap();
        let key_log = log.get(&key).expect("every key was claimed");
        assert!(runs >= 1, "key {index} never ran");
        if runs > 1 {
            twice += 1;
            assert!(
                u64::from(key_log.failed_completions) >= runs - 1,
                "key {index} ran {runs} times with {} failed completions",
                key_log.failed_completions
            );
        }
        if key_log.failed_completions == 0 {
            let results = &calls.results[index];
            assert!(
                results.iter().all(|result| *result == results[0]),
                "key {index}: callers got different results without a failed completion: {results:?}"
            );
        }
        for &(after, failed_at, claimed_at, early) in &key_log.takeovers {
            assert!(!early, "key {index}: taken over before its lease ran out");
            let allowed = REDIS_LEASE + outages.overlap(failed_at, claimed_at) + SLACK;
            assert!(
                after <= allowed,
                "key {index}: claimable again {after:?} after its completion failed (allowed {allowed:?})"
            );
            longest_takeover = longest_takeover.max(after);
        }
    }
    let mut longest_block = Duration::ZERO;
    for &(blocked, from, to) in &calls.blocked {
        let allowed = REDIS_LEASE + outages.overlap(from, to) + SLACK;
        assert!(
            blocked <= allowed,
            "a key was blocked {blocked:?} (allowed {allowed:?})"
        );
        longest_block = longest_block.max(blocked);
    }
    let failed_completions: u32 = log.values().map(|key| key.failed_completions).sum();
    let claim_errors = store.claim_errors.load(Ordering::Relaxed);
    assert!(calls.store_errors > 0, "callers saw the store go away");
    assert!(
        outages.windows.len() >= 3,
        "at least 3 refusals during the run: {outages:?}"
    );
    print_redis(&RedisFigures {
        proxy: during_run,
        outages: &outages,
        calls: &calls,
        bodies,
        claims: store.claims.load(Ordering::Relaxed),
        claims_won,
        claim_errors,
        failed_completions,
        twice,
        rerun_after_run: completing
            .iter()
            .zip(&executions_before)
            .filter(|(after, before)| after > before)
            .count(),
        longest_block,
        longest_takeover,
        run_elapsed,
    });
    println!("{}; wall time {:.1?}", proxy.counters(), started.elapsed());
}

fn snapshot(effects: &Effects) -> Vec<u64> {
    effects
        .executions
        .iter()
        .map(|count| count.load(Ordering::Relaxed))
        .collect()
}

struct RedisFigures<'a> {
    proxy: ProxyCounters,
    outages: &'a Outages,
    calls: &'a Calls,
    bodies: u64,
    claims: u64,
    claims_won: usize,
    claim_errors: u64,
    failed_completions: u32,
    twice: usize,
    rerun_after_run: usize,
    longest_block: Duration,
    longest_takeover: Duration,
    run_elapsed: std::time::Duration,
}

fn print_redis(figures: &RedisFigures<'_>) {
    let RedisFigures {
        proxy,
        outages,
        calls,
        ..
    } = figures;
    println!(
        "redis: {} keys, {} calls in {:.1?}; {} plain cuts, {} refusals ({:.1?} refused)",
        REDIS_KEYS,
        2 * REDIS_KEYS,
        figures.run_elapsed,
        outages.cuts,
        outages.windows.len(),
        outages.refused()
    );
    println!("{proxy}");
    println!(
        "callers: {} store errors (Unavailable), {} InProgress (Aborted); longest block {:.2?} (lease {:?})",
        calls.store_errors, calls.in_progress, figures.longest_block, REDIS_LEASE
    );
    println!(
        "store: {} claims ({} won, {} failed), {} bodies, {} failed completions, {} keys run more than once (each after a failed completion), {} completed only after the run; longest takeover after a failed completion {:.2?}",
        figures.claims,
        figures.claims_won,
        figures.claim_errors,
        figures.bodies,
        figures.failed_completions,
        figures.twice,
        figures.rerun_after_run,
        figures.longest_takeover
    );
}
