//! Chaos: the payments service on three replicas sharing one database, under
//! 30% injected faults of every kind, with a replica killed mid-run and
//! restarted, and a replica killed while it holds a claim.
//!
//! The PostgreSQL tests read `STEADFAST_TEST_POSTGRES_URL` (e.g.
//! `postgres://postgres@127.0.0.1:5432/test`); without it they print
//! "skipped" and pass, except under `CI=true`, where they fail. The SQLite
//! variants run everywhere.

use std::{sync::Arc, time::Duration};

use steadfast_payments::{
    Backend, Cluster, DemoConfig, Fault, FaultPlan, Movement, Payment, PaymentsClient, Progress,
    StallPoint, drive, generate,
    proto::{DepositRequest, Receipt, TransferRequest, ledger_client::LedgerClient},
    summarize,
};
use tonic::Code;

/// A SQLite file of its own for `name`, removed first if a past run left it.
fn sqlite_file(name: &str) -> Backend {
    let dir = std::env::temp_dir().join(format!("steadfast-chaos-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    Backend::Sqlite(dir.join("ledger.db"))
}

/// PostgreSQL, when `STEADFAST_TEST_POSTGRES_URL` is set (see
/// `steadfast_test_support::server_url`).
fn postgres() -> Option<Backend> {
    steadfast_test_support::server_url(steadfast_test_support::POSTGRES_URL).map(Backend::Postgres)
}

fn config(backend: Backend, prefix: &str, payments: usize) -> DemoConfig {
    let mut config = DemoConfig::new(backend).payments(payments).fault_rate(0.3);
    config.replicas = 3;
    config.clients = 16;
    config.seed = 2026;
    config.prefix = prefix.to_owned();
    config
}

/// 16 clients make `payments` payments through 3 replicas under 30% faults;
/// replica 1 is killed when a third of them are done and restarted at two
/// thirds. The ledger must be exact.
async fn kill_and_restart_mid_run(backend: Backend, prefix: &str, payments: usize) {
    let config = config(backend, prefix, payments);
    let faults = Arc::new(FaultPlan::new(config.fault_rate, config.seed));
    let mut cluster = Cluster::start(config.cluster(), faults)
        .await
        .expect("the cluster starts");
    let payments: Arc<[Payment]> = generate(prefix, payments, config.accounts, config.seed).into();
    let clients: Vec<Arc<PaymentsClient>> = (0..config.clients)
        .map(|_| Arc::new(PaymentsClient::new(&cluster.addresses())))
        .collect();
    let progress = Progress::default();
    let started = std::time::Instant::now();
    let run = tokio::spawn({
        let (clients, payments, progress) = (clients.clone(), payments.clone(), progress.clone());
        async move { drive(&clients, payments, &progress).await }
    });

    let total = payments.len();
    wait_for(&progress, total / 3).await;
    cluster.kill(1).await;
    assert!(!cluster.is_running(1));
    let killed_at = progress.done();
    wait_for(&progress, total * 2 / 3).await;
    cluster
        .restart(1)
        .await
        .expect("replica 1 restarts on its port");
    let restarted_at = progress.done();

    let results = run.await.expect("the clients finish");
    let summary = summarize(
        &config,
        &cluster,
        &clients,
        &payments,
        &results,
        started.elapsed(),
        1,
    )
    .await
    .expect("the ledger can be read");
    cluster.shutdown().await;
    println!("replica 1 killed after {killed_at} payments, restarted after {restarted_at}");
    println!("{summary}");

    let audit = &summary.audit;
    assert!(audit.exact(), "the ledger is not exact: {audit:#?}");
    assert_eq!(audit.duplicate_rows, 0, "a payment ran twice");
    assert!(
        audit.lost.is_empty(),
        "acknowledged payments lost: {:?}",
        audit.lost
    );
    // A payment whose replica died after its money and fence committed but
    // before its receipt was stored is never run again: its clients get
    // `Aborted` for the lease, then `DataLoss`, and give up. That window is a few
    // milliseconds wide per in-flight payment; nothing else may fail.
    assert_eq!(
        audit.failed, audit.failed_but_executed,
        "a payment failed without having run"
    );
    assert!(audit.failed <= 16, "{} payments failed", audit.failed);
    for kind in Fault::ALL {
        assert!(
            summary
                .faults
                .iter()
                .any(|(name, count)| *name == kind.describe() && *count > 0),
            "no {kind:?} fault injected"
        );
    }
    assert!(summary.replays > 0, "dropped responses must be replayed");
    assert!(
        summary.failovers > 0,
        "clients must fail over from the killed replica"
    );
    assert!(summary.failures_of(Code::Unavailable) > 0);
}

async fn wait_for(progress: &Progress, done: usize) {
    while progress.done() < done {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_replica_killed_mid_run() {
    let Some(backend) = postgres() else { return };
    kill_and_restart_mid_run(backend, "chaos_pg", 2000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_replica_killed_mid_run() {
    kill_and_restart_mid_run(sqlite_file("mid-run"), "chaos_sqlite", 2000).await;
}

/// The cluster of the kill tests: one payment, no random faults (only the
/// stalls the test arms in the returned plan).
async fn calm_cluster(backend: Backend, prefix: &str) -> (DemoConfig, Arc<FaultPlan>, Cluster) {
    let mut config = config(backend, prefix, 1);
    config.fault_rate = 0.0;
    let faults = Arc::new(FaultPlan::new(0.0, 1));
    let cluster = Cluster::start(config.cluster(), faults.clone())
        .await
        .expect("the cluster starts");
    (config, faults, cluster)
}

/// A replica freezes inside a payment's transaction (its claim held, its
/// money not committed) and is killed. The client fails over; the next
/// replica answers `Aborted` while the dead replica's lease (2 s) runs, then
/// takes the claim over and executes the payment, once.
async fn lease_expires_after_a_kill(backend: Backend, prefix: &str) {
    let (config, faults, mut cluster) = calm_cluster(backend, prefix).await;
    let payments: Arc<[Payment]> = generate(prefix, 1, config.accounts, 9).into();
    let stall = faults.stall(&payments[0].id, StallPoint::BeforeCommit);
    let client = Arc::new(PaymentsClient::new(&cluster.addresses()));
    let started = std::time::Instant::now();
    let pay = tokio::spawn({
        let (client, payments) = (client.clone(), payments.clone());
        async move { client.pay(&payments[0]).await }
    });

    stall.reached().await;
    assert!(!stall.is_armed());
    cluster.kill(0).await;
    let receipt = pay
        .await
        .expect("the client finishes")
        .expect("the payment completes");
    let elapsed = started.elapsed();

    let ledger = cluster.snapshot().await.expect("the ledger can be read");
    let summary = summarize(
        &config,
        &cluster,
        &[client],
        &payments,
        &[Ok(receipt.clone())],
        elapsed,
        1,
    )
    .await
    .expect("the ledger can be read");
    cluster.shutdown().await;
    println!("{summary}");
    let rows: Vec<_> = ledger
        .rows
        .iter()
        .filter(|row| row.payment_id == payments[0].id)
        .collect();
    assert_eq!(rows.len(), 1, "executed once: {rows:?}");
    assert_eq!(rows[0].transfer_id, receipt.transfer_id);
    assert_eq!(
        summary.executions, 1,
        "the frozen execution never committed"
    );
    assert!(
        summary.in_progress >= 1,
        "another replica must have refused the payment while the dead replica's lease ran"
    );
    assert!(summary.audit.exact(), "{:#?}", summary.audit);
    println!("completed by another replica after {elapsed:.2?} (lease 2 s)");
}

/// A replica freezes after its payment's money and fence committed, before
/// the receipt is stored, and is killed. No replica runs the payment again,
/// even after the lease: a duplicate gets `Aborted` while the lease runs,
/// then `DataLoss` (the payment ran; its receipt is lost), which no client
/// retries, and the money moved once. (Without the fence, the next replica
/// would take the lapsed claim over and move the money a second time.)
async fn fence_holds_after_a_kill(backend: Backend, prefix: &str) {
    let deposit = |movement: &Movement| matches!(movement, Movement::Deposit { .. });
    let (payment, cluster, first, mut other) = killed_after_commit(backend, prefix, deposit).await;
    let fenced_at = tokio::time::Instant::now();
    // Within the lease, its owner may still store the receipt: wait.
    let duplicate = send_once(&mut other, &payment)
        .await
        .expect_err("the fenced payment must not run again");
    if fenced_at.elapsed() < Duration::from_millis(1500) {
        assert_eq!(duplicate.code(), Code::Aborted, "{duplicate:?}");
    }
    // The first client gives up on the dead replica.
    let _ = first.await;
    // Past the dead replica's 2 s lease: an unfenced claim would be taken
    // over now; the fenced one says the result is lost, for good.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let duplicate = send_once(&mut other, &payment)
        .await
        .expect_err("the fenced payment must not run again");
    assert_eq!(duplicate.code(), Code::DataLoss, "{duplicate:?}");

    let ledger = cluster.snapshot().await.expect("the ledger can be read");
    cluster.shutdown().await;
    let rows = ledger
        .rows
        .iter()
        .filter(|row| row.payment_id == payment.id)
        .count();
    assert_eq!(rows, 1, "the money moved once");
    assert_eq!(ledger.duplicate_rows, 0);
}

/// A replica freezes after a transfer's money and receipt committed in the
/// engine's transaction (`run_in_transaction`), before its answer leaves,
/// and is killed. A duplicate sent to another replica at once gets the
/// stored receipt, and the money moved once.
async fn transaction_replays_after_a_kill(backend: Backend, prefix: &str) {
    let transfer = |movement: &Movement| matches!(movement, Movement::Transfer { .. });
    let (payment, cluster, first, mut other) = killed_after_commit(backend, prefix, transfer).await;
    let replayed = send_once(&mut other, &payment)
        .await
        .expect("the duplicate gets the stored receipt");
    let _ = first.await;
    let ledger = cluster.snapshot().await.expect("the ledger can be read");
    cluster.shutdown().await;
    let rows: Vec<_> = ledger
        .rows
        .iter()
        .filter(|row| row.payment_id == payment.id)
        .collect();
    assert_eq!(rows.len(), 1, "the money moved once");
    assert_eq!(
        replayed.transfer_id, rows[0].transfer_id,
        "the receipt of the one execution"
    );
    assert_eq!(ledger.duplicate_rows, 0);
}

/// A calm cluster in which the first replica took a payment of the kind
/// `wanted`, froze after its commit, before its answer, and was killed:
/// the payment, the cluster, the first client's call (which gives up on the
/// dead replica) and a client of the second replica.
async fn killed_after_commit(
    backend: Backend,
    prefix: &str,
    wanted: impl Fn(&Movement) -> bool,
) -> (
    Payment,
    Cluster,
    tokio::task::JoinHandle<Result<Receipt, tonic::Status>>,
    LedgerClient<tonic::transport::Channel>,
) {
    let (config, faults, mut cluster) = calm_cluster(backend, prefix).await;
    let payment = one_of(prefix, config.accounts, wanted);
    let stall = faults.stall(&payment.id, StallPoint::AfterCommit);
    let addresses = cluster.addresses();
    let first = tokio::spawn({
        let client = PaymentsClient::new(&addresses[..1]);
        let payment = payment.clone();
        async move { client.pay(&payment).await }
    });
    stall.reached().await;
    cluster.kill(0).await;
    let other = LedgerClient::connect(format!("http://{}", addresses[1]))
        .await
        .expect("replica 1 accepts connections");
    (payment, cluster, first, other)
}

/// The first generated payment whose movement `wanted` accepts.
fn one_of(prefix: &str, accounts: usize, wanted: impl Fn(&Movement) -> bool) -> Payment {
    generate(prefix, 64, accounts, 11)
        .into_iter()
        .find(|payment| wanted(&payment.movement))
        .expect("64 payments hold both kinds")
}

/// One call, no retries: what a duplicate of `payment` gets from a replica.
async fn send_once(
    client: &mut LedgerClient<tonic::transport::Channel>,
    payment: &Payment,
) -> Result<Receipt, tonic::Status> {
    let payment_id = payment.id.clone();
    let answer = match payment.movement.clone() {
        Movement::Deposit { account } => {
            client
                .deposit(DepositRequest {
                    payment_id,
                    account,
                    cents: payment.cents,
                })
                .await
        }
        Movement::Transfer { from, to } => {
            client
                .transfer(TransferRequest {
                    payment_id,
                    from,
                    to,
                    cents: payment.cents,
                })
                .await
        }
    };
    answer.map(tonic::Response::into_inner)
}

/// Each kill scenario twice, as `postgres_<scenario>` (skipped without a
/// server) and `sqlite_<scenario>` (on a file named `$name`), with tables
/// prefixed `chaos_pg_$name` and `chaos_sqlite_$name`.
macro_rules! on_postgres_and_sqlite {
    ($($scenario:ident($name:literal): $postgres:ident, $sqlite:ident;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $postgres() {
            let Some(backend) = postgres() else { return };
            $scenario(backend, concat!("chaos_pg_", $name)).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $sqlite() {
            $scenario(sqlite_file($name), concat!("chaos_sqlite_", $name)).await;
        }
    )*};
}

on_postgres_and_sqlite! {
    lease_expires_after_a_kill("lease"): postgres_lease_expires_after_a_kill, sqlite_lease_expires_after_a_kill;
    fence_holds_after_a_kill("fence"): postgres_fence_holds_after_a_kill, sqlite_fence_holds_after_a_kill;
    transaction_replays_after_a_kill("txkill"): postgres_transaction_replays_after_a_kill, sqlite_transaction_replays_after_a_kill;
}
