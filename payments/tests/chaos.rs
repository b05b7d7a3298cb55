//! Chaos: the payments service on three replicas, each a process of its own
//! (`payments serve`) sharing one database, killed by `SIGKILL`: no
//! destructor, rollback or connection close runs in a killed replica, as
//! when the operating system kills a server.
//!
//! - Under 30 % injected faults of every kind, a replica at a time is
//!   killed at random moments and restarted; every other kill lands right
//!   after a payment's commit, before its answer leaves (the replica was
//!   told to freeze there). The ledger must be exact.
//! - Three kills at chosen instants, each with one payment: inside the
//!   money's transaction; after a fenced deposit's commit; after the commit
//!   of a transfer that ran in the engine's transaction (`transaction = tx`).
//!
//! The PostgreSQL and MariaDB tests read `STEADFAST_TEST_POSTGRES_URL` and
//! `STEADFAST_TEST_MYSQL_URL`; without them they print "skipped" and pass,
//! except under `CI=true`, where they fail. The SQLite variants run
//! everywhere.

use std::{sync::Arc, time::Duration};

use steadfast_payments::{
    Backend, DemoConfig, Fault, Movement, Payment, PaymentsClient, ProcessesConfig,
    ReplicaProcesses, Replicas, StallPoint, Traffic, generate,
    proto::{Receipt, ledger_client::LedgerClient},
    send_once, summarize,
};
use steadfast_test_support::{MYSQL_URL, POSTGRES_URL, server_url};
use tonic::Code;

/// A SQLite file of its own for `name`, removed first if a past run left it.
fn sqlite_file(name: &str) -> Backend {
    let dir = std::env::temp_dir().join(format!("steadfast-chaos-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    Backend::Sqlite(dir.join("ledger.db"))
}

fn postgres() -> Option<Backend> {
    server_url(POSTGRES_URL).map(Backend::Postgres)
}

fn mysql() -> Option<Backend> {
    server_url(MYSQL_URL).map(Backend::MySql)
}

fn config(backend: Backend, prefix: &str, payments: usize, fault_rate: f64) -> DemoConfig {
    let mut config = DemoConfig::new(backend)
        .payments(payments)
        .fault_rate(fault_rate);
    config.replicas = 3;
    config.clients = 16;
    config.seed = 2026;
    config.prefix = prefix.to_owned();
    config
}

/// Starts `config`'s replicas as processes of the `payments` binary.
async fn start(config: &DemoConfig) -> ReplicaProcesses {
    ReplicaProcesses::start(ProcessesConfig {
        binary: env!("CARGO_BIN_EXE_payments").into(),
        cluster: config.cluster(),
        fault_rate: config.fault_rate,
        seed: config.seed,
    })
    .await
    .expect("the replicas start")
}

/// At most this many kill rounds per run (each is bounded in time).
const KILL_ROUNDS: usize = 40;

/// 16 clients make `payments` payments through 3 replicas under 30 %
/// faults, while a replica at a time is `SIGKILL`ed and restarted: at a
/// random moment on odd rounds; on even rounds right after it committed
/// one of the next payments (it was told to freeze there). The ledger must
/// be exact.
async fn killed_at_random(backend: Backend, prefix: &str, payments: usize) {
    let config = config(backend, prefix, payments, 0.3);
    let mut replicas = start(&config).await;
    let payments: Arc<[Payment]> = generate(prefix, payments, config.accounts, config.seed).into();
    let Traffic {
        clients,
        progress,
        started,
        task: run,
    } = Traffic::start(config.clients, &replicas.addresses(), payments.clone());

    let mut rng = fastrand::Rng::with_seed(config.seed);
    let mut frozen_after_commit = Vec::new();
    for round in 0..KILL_ROUNDS {
        tokio::time::sleep(Duration::from_millis(rng.u64(100..400))).await;
        if run.is_finished() {
            break;
        }
        let index = rng.usize(..replicas.addresses().len());
        if round % 2 == 0 {
            // Payments not yet sent (16 are in flight): the first of them to
            // commit on this replica freezes there, its answer not sent.
            let next = (progress.done() + 24).min(payments.len());
            let upcoming = &payments[next..(next + 32).min(payments.len())];
            for payment in upcoming {
                replicas
                    .stall(index, &payment.id, StallPoint::AfterCommit)
                    .await
                    .expect("the replica takes commands");
            }
            if let Some(id) = replicas.stalled(index, Duration::from_secs(2)).await {
                frozen_after_commit.push(id);
            }
        }
        replicas.kill(index).await;
        tokio::time::sleep(Duration::from_millis(rng.u64(50..300))).await;
        replicas
            .restart(index)
            .await
            .expect("the replica restarts on its port");
    }
    let results = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("the clients finish within 3 minutes")
        .expect("the clients do not panic");
    let kills = replicas.kills();
    let summary = summarize(
        &config,
        &replicas,
        &clients,
        &payments,
        &results,
        started.elapsed(),
        kills,
    )
    .await
    .expect("the ledger can be read");
    let replicas_ledger = replicas.snapshot().await.expect("the ledger can be read");
    replicas.shutdown().await;
    let deposits_frozen = frozen_after_commit
        .iter()
        .filter(|id| is_deposit(&payments, id))
        .count();
    println!(
        "{kills} replicas killed by SIGKILL, {} of them frozen right after a commit \
         ({deposits_frozen} fenced deposits, {} transfers in the engine's transaction)",
        frozen_after_commit.len(),
        frozen_after_commit.len() - deposits_frozen,
    );
    println!("{summary}");

    let audit = &summary.audit;
    assert!(audit.exact(), "the ledger is not exact: {audit:#?}");
    assert_eq!(audit.duplicate_rows, 0, "a payment ran twice");
    assert!(
        audit.lost.is_empty(),
        "acknowledged payments lost: {:?}",
        audit.lost
    );
    // A deposit whose replica died after its money and fence committed but
    // before its receipt was stored is never run again: its clients get
    // `Aborted` for the lease, then `DataLoss`, and give up. Nothing else
    // may fail: a transfer's receipt commits with its money.
    let ledger = replicas_ledger;
    let failed_unrun: Vec<_> = payments
        .iter()
        .zip(&results)
        .filter(|(payment, result)| {
            result.is_err() && !ledger.rows.iter().any(|row| row.payment_id == payment.id)
        })
        .map(|(payment, result)| (&payment.id, result.as_ref().err()))
        .collect();
    assert!(
        failed_unrun.is_empty(),
        "payments failed without having run: {failed_unrun:#?}"
    );
    assert_eq!(audit.failed, audit.failed_but_executed);
    for id in &frozen_after_commit {
        let index = payments.iter().position(|payment| &payment.id == id);
        let result = &results[index.expect("a payment of the run")];
        if !is_deposit(&payments, id) {
            assert!(
                result.is_ok(),
                "transfer {id} committed with its receipt, yet failed: {result:?}"
            );
        }
    }
    assert!(kills >= 6, "only {kills} kills");
    assert!(
        frozen_after_commit.len() >= 2,
        "too few kills right after a commit: {frozen_after_commit:?}"
    );
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
    assert!(summary.failovers > 0, "clients must fail over");
    assert!(summary.failures_of(Code::Unavailable) > 0);
}

fn is_deposit(payments: &[Payment], id: &str) -> bool {
    payments
        .iter()
        .any(|payment| payment.id == id && matches!(payment.movement, Movement::Deposit { .. }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_replicas_killed_at_random() {
    let Some(backend) = postgres() else { return };
    killed_at_random(backend, "chaos_pg", 2000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_replicas_killed_at_random() {
    let Some(backend) = mysql() else { return };
    killed_at_random(backend, "chaos_my", 2000).await;
}

/// The replicas of the kill tests, without random faults; one payment of
/// the kind `wanted`.
async fn calm_replicas(
    backend: Backend,
    prefix: &str,
    wanted: impl Fn(&Movement) -> bool,
) -> (DemoConfig, Payment, ReplicaProcesses) {
    let config = config(backend, prefix, 1, 0.0);
    let replicas = start(&config).await;
    let payment = generate(prefix, 64, config.accounts, 11)
        .into_iter()
        .find(|payment| wanted(&payment.movement))
        .expect("64 payments hold both kinds");
    (config, payment, replicas)
}

/// A replica freezes inside a payment's transaction (its claim held, its
/// money not committed) and is killed. The client fails over; the next
/// replica answers `Aborted` while the dead replica's lease (2 s) runs, then
/// takes the claim over and executes the payment, once.
async fn lease_expires_after_a_kill(backend: Backend, prefix: &str) {
    let (config, payment, mut replicas) = calm_replicas(backend, prefix, |_| true).await;
    replicas
        .stall(0, &payment.id, StallPoint::BeforeCommit)
        .await
        .expect("replica 0 takes commands");
    let client = Arc::new(PaymentsClient::new(&replicas.addresses()));
    let started = std::time::Instant::now();
    let pay = tokio::spawn({
        let (client, payment) = (client.clone(), payment.clone());
        async move { client.pay(&payment).await }
    });

    let frozen = replicas.stalled(0, Duration::from_secs(10)).await;
    assert_eq!(frozen.as_deref(), Some(payment.id.as_str()));
    replicas.kill(0).await;
    let receipt = pay
        .await
        .expect("the client finishes")
        .expect("the payment completes");
    let elapsed = started.elapsed();

    let ledger = replicas.snapshot().await.expect("the ledger can be read");
    let payments = [payment.clone()];
    let summary = summarize(
        &config,
        &replicas,
        &[client],
        &payments,
        &[Ok(receipt.clone())],
        elapsed,
        1,
    )
    .await
    .expect("the ledger can be read");
    replicas.shutdown().await;
    println!("{summary}");
    let rows: Vec<_> = ledger
        .rows
        .iter()
        .filter(|row| row.payment_id == payment.id)
        .collect();
    assert_eq!(rows.len(), 1, "executed once: {rows:?}");
    assert_eq!(rows[0].transfer_id, receipt.transfer_id);
    assert!(
        summary.in_progress >= 1,
        "another replica must have refused the payment while the dead replica's lease ran"
    );
    assert!(summary.audit.exact(), "{:#?}", summary.audit);
    assert!(
        elapsed >= Duration::from_millis(1500),
        "taken over before the dead replica's lease ended: {elapsed:.2?}"
    );
    println!("completed by another replica after {elapsed:.2?} (lease 2 s)");
}

/// A replica freezes after its deposit's money and fence committed, before
/// the receipt is stored, and is killed. No replica runs the payment again,
/// even after the lease: a duplicate gets `Aborted` while the lease runs,
/// then `DataLoss` (the payment ran; its receipt is lost), which no client
/// retries, and the money moved once. (Without the fence, the next replica
/// would take the lapsed claim over and move the money a second time.)
async fn fence_holds_after_a_kill(backend: Backend, prefix: &str) {
    let deposit = |movement: &Movement| matches!(movement, Movement::Deposit { .. });
    let (payment, replicas, first, mut other) = killed_after_commit(backend, prefix, deposit).await;
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

    let ledger = replicas.snapshot().await.expect("the ledger can be read");
    replicas.shutdown().await;
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
/// and is killed by `SIGKILL`. A duplicate sent to another replica at once
/// gets the stored receipt, and the money moved once.
async fn transaction_replays_after_a_kill(backend: Backend, prefix: &str) {
    let transfer = |movement: &Movement| matches!(movement, Movement::Transfer { .. });
    let (payment, replicas, first, mut other) =
        killed_after_commit(backend, prefix, transfer).await;
    let replayed = send_once(&mut other, &payment)
        .await
        .expect("the duplicate gets the stored receipt");
    let _ = first.await;
    let ledger = replicas.snapshot().await.expect("the ledger can be read");
    replicas.shutdown().await;
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

/// Calm replicas in which the first took a payment of the kind `wanted`,
/// froze after its commit, before its answer, and was killed by `SIGKILL`:
/// the payment, the replicas, the first client's call (which gives up on
/// the dead replica) and a client of the second replica.
async fn killed_after_commit(
    backend: Backend,
    prefix: &str,
    wanted: impl Fn(&Movement) -> bool,
) -> (
    Payment,
    ReplicaProcesses,
    tokio::task::JoinHandle<Result<Receipt, tonic::Status>>,
    LedgerClient<tonic::transport::Channel>,
) {
    let (_, payment, mut replicas) = calm_replicas(backend, prefix, wanted).await;
    replicas
        .stall(0, &payment.id, StallPoint::AfterCommit)
        .await
        .expect("replica 0 takes commands");
    let addresses = replicas.addresses();
    let first = tokio::spawn({
        let client = PaymentsClient::new(&addresses[..1]);
        let payment = payment.clone();
        async move { client.pay(&payment).await }
    });
    let frozen = replicas.stalled(0, Duration::from_secs(10)).await;
    assert_eq!(frozen.as_deref(), Some(payment.id.as_str()));
    replicas.kill(0).await;
    let other = LedgerClient::connect(format!("http://{}", addresses[1]))
        .await
        .expect("replica 1 accepts connections");
    (payment, replicas, first, other)
}

/// Each kill scenario on every database, as `postgres_<scenario>`,
/// `mysql_<scenario>` (skipped without a server) and `sqlite_<scenario>`
/// (on a file named `$name`), with tables prefixed `chaos_pg_$name`,
/// `chaos_my_$name` and `chaos_sqlite_$name`.
macro_rules! on_every_database {
    ($($scenario:ident($name:literal): $postgres:ident, $mysql:ident, $sqlite:ident;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $postgres() {
            let Some(backend) = postgres() else { return };
            $scenario(backend, concat!("chaos_pg_", $name)).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $mysql() {
            let Some(backend) = mysql() else { return };
            $scenario(backend, concat!("chaos_my_", $name)).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $sqlite() {
            $scenario(sqlite_file($name), concat!("chaos_sqlite_", $name)).await;
        }
    )*};
}

on_every_database! {
    lease_expires_after_a_kill("lease"): postgres_lease_expires_after_a_kill, mysql_lease_expires_after_a_kill, sqlite_lease_expires_after_a_kill;
    fence_holds_after_a_kill("fence"): postgres_fence_holds_after_a_kill, mysql_fence_holds_after_a_kill, sqlite_fence_holds_after_a_kill;
    transaction_replays_after_a_kill("txkill"): postgres_transaction_replays_after_a_kill, mysql_transaction_replays_after_a_kill, sqlite_transaction_replays_after_a_kill;
}
