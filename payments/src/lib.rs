//! The payments demo of steadfast, as a library: the binary `payments`
//! (`src/bin/payments.rs`, `cargo run --release -p steadfast-payments`) runs
//! it from the command line, and the chaos tests
//! drive it with replicas killed mid-run.
//!
//! - [`proto`]: the `steadfast.payments.Ledger` gRPC service, compiled with
//!   protox and tonic-prost-build (no system `protoc`).
//! - The service (`Deposit`, `Transfer` under `#[idempotent]`) keeps its
//!   money in the same database as the idempotency store, one row per
//!   execution, and fences its claim inside the money's transaction.
//! - [`FaultLayer`]: seeded fault injection in front of the service.
//! - [`Cluster`]: replicas on loopback ports, each on its own runtime, that
//!   can be killed and restarted.
//! - [`ReplicaProcesses`]: replicas as processes of their own (`payments
//!   serve`, [`replica`]), killed with `SIGKILL`.
//! - [`PaymentsClient`]: one `#[retry]` call per payment, failing over
//!   between replicas.
//! - [`Audit`] and [`Summary`]: the ledger check and the printed table.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use steadfast_payments::{Backend, DemoConfig};
//!
//! let config = DemoConfig::new(Backend::Memory).payments(200).fault_rate(0.3);
//! let summary = steadfast_payments::run(&config, &Default::default()).await?;
//! println!("{summary}");
//! assert!(summary.audit.exact());
//! # Ok(())
//! # }
//! ```

mod audit;
mod backend;
mod books;
pub mod cli;
mod client;
mod cluster;
mod faults;
mod payment;
mod processes;
pub mod replica;
mod service;
mod summary;

/// Code generated from `proto/payments.proto`: messages, `ledger_client`
/// and `ledger_server`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("steadfast.payments");
}

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

pub use audit::Audit;
pub use backend::{Backend, UnknownBackend};
pub use books::{LedgerSnapshot, TransferRow};
pub use client::{COUNTED_CODES, ClientStats, PaymentsClient, send_once};
pub use cluster::{Cluster, ClusterConfig};
pub use faults::{Fault, FaultLayer, FaultPlan, FaultService, ServerTally, Stall, StallPoint};
pub use payment::{Movement, Payment, account_name, generate};
pub use processes::{ProcessesConfig, ReplicaProcesses};
use steadfast::{Budget, RatioBudget, idempotency::StoreError};
pub use summary::Summary;
use tonic::Status;

use crate::proto::Receipt;

/// A demo run's settings; [`DemoConfig::new`] gives the defaults of the
/// command line.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// Where the store and the money live.
    pub backend: Backend,
    /// Replicas sharing the database.
    pub replicas: usize,
    /// Payments to make.
    pub payments: usize,
    /// Concurrent clients.
    pub clients: usize,
    /// Share of calls that get an injected fault.
    pub fault_rate: f64,
    /// Seeds the payments and the faults.
    pub seed: u64,
    /// Accounts, each opened with [`DemoConfig::opening_balance`].
    pub accounts: usize,
    /// Cents in each account at the start.
    pub opening_balance: i64,
    /// Prefix of the tables.
    pub prefix: String,
    /// The clients' shared retry budget: retries at most this percentage
    /// of the payments (over 10 s, plus 10 a second), or `None` for no
    /// budget (every failure retried up to `max = 30`).
    pub retry_budget: Option<f64>,
}

impl DemoConfig {
    /// 1000 payments, 1 replica, 16 clients, 30% faults, seed 1, 16
    /// accounts of 1,000,000 cents, tables `payments_*`, a retry budget of
    /// 50 % (30 % of faulty attempts need about 43 % of retries).
    pub fn new(backend: Backend) -> DemoConfig {
        DemoConfig {
            backend,
            replicas: 1,
            payments: 1000,
            clients: 16,
            fault_rate: 0.3,
            seed: 1,
            accounts: 16,
            opening_balance: 1_000_000,
            prefix: "payments".to_owned(),
            retry_budget: Some(50.0),
        }
    }

    /// With `payments` payments.
    pub fn payments(mut self, payments: usize) -> DemoConfig {
        self.payments = payments;
        self
    }

    /// With a share `rate` of faulty calls.
    pub fn fault_rate(mut self, rate: f64) -> DemoConfig {
        self.fault_rate = rate;
        self
    }

    /// The accounts and their opening balances.
    pub fn opening(&self) -> BTreeMap<String, i64> {
        (0..self.accounts)
            .map(|index| (account_name(index), self.opening_balance))
            .collect()
    }

    /// The cluster these settings describe.
    pub fn cluster(&self) -> ClusterConfig {
        ClusterConfig {
            backend: self.backend.clone(),
            prefix: self.prefix.clone(),
            replicas: self.replicas,
            accounts: self.opening(),
        }
    }
}

/// How many payments have finished; read it to draw a progress bar.
#[derive(Debug, Default, Clone)]
pub struct Progress(Arc<AtomicUsize>);

impl Progress {
    /// Payments finished so far.
    pub fn done(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// Runs the demo: starts the cluster, makes the payments, audits the
/// ledger, stops the cluster.
pub async fn run(config: &DemoConfig, progress: &Progress) -> Result<Summary, StoreError> {
    let faults = Arc::new(FaultPlan::new(config.fault_rate, config.seed));
    let cluster = Cluster::start(config.cluster(), faults).await?;
    let run = format!("{}-{:08x}", config.prefix, fastrand::u32(..));
    let payments: Arc<[Payment]> =
        generate(&run, config.payments, config.accounts, config.seed).into();
    let budget: Arc<dyn Budget> = Arc::new(config.retry_budget.map(RatioBudget::new));
    let clients: Vec<Arc<PaymentsClient>> = (0..config.clients.max(1))
        .map(|_| {
            Arc::new(PaymentsClient::with_budget(
                &cluster.addresses(),
                budget.clone(),
            ))
        })
        .collect();
    let started = Instant::now();
    let results = drive(&clients, payments.clone(), progress).await;
    let summary = summarize(
        config,
        &cluster,
        &clients,
        &payments,
        &results,
        started.elapsed(),
        0,
    )
    .await;
    cluster.shutdown().await;
    summary
}

/// Payments under way in a task of their own, as the chaos tests drive
/// them while they break the replicas or the database.
#[derive(Debug)]
pub struct Traffic {
    /// The clients, one per [`DemoConfig::clients`], without a budget.
    pub clients: Vec<Arc<PaymentsClient>>,
    /// How many payments have finished.
    pub progress: Progress,
    /// When the payments started.
    pub started: Instant,
    /// The payments' results, in order, when they all finished.
    pub task: tokio::task::JoinHandle<Vec<Result<Receipt, Status>>>,
}

impl Traffic {
    /// `clients` clients of the replicas at `addresses` start making
    /// `payments` ([`drive`]).
    pub fn start(
        clients: usize,
        addresses: &[std::net::SocketAddr],
        payments: Arc<[Payment]>,
    ) -> Traffic {
        let clients: Vec<Arc<PaymentsClient>> = (0..clients.max(1))
            .map(|_| Arc::new(PaymentsClient::new(addresses)))
            .collect();
        let progress = Progress::default();
        let task = tokio::spawn({
            let (clients, progress) = (clients.clone(), progress.clone());
            async move { drive(&clients, payments, &progress).await }
        });
        Traffic {
            clients,
            progress,
            started: Instant::now(),
            task,
        }
    }
}

/// Makes `payments`, each once (with its retries), spread over `clients`
/// working concurrently; returns each payment's final result, in order.
pub async fn drive(
    clients: &[Arc<PaymentsClient>],
    payments: Arc<[Payment]>,
    progress: &Progress,
) -> Vec<Result<Receipt, Status>> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for client in clients {
        let client = client.clone();
        let payments = payments.clone();
        let next = next.clone();
        let done = progress.0.clone();
        workers.spawn(async move {
            let mut results = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(payment) = payments.get(index) else {
                    return results;
                };
                results.push((index, client.pay(payment).await));
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let mut results: Vec<Option<Result<Receipt, Status>>> =
        (0..payments.len()).map(|_| None).collect();
    while let Some(finished) = workers.join_next().await {
        for (index, result) in finished.expect("a client task does not panic") {
            results[index] = Some(result);
        }
    }
    results
        .into_iter()
        .map(|result| result.expect("every payment was made"))
        .collect()
}

/// What a run's summary reads from the replicas, whether they run in this
/// process ([`Cluster`]) or as processes of their own ([`ReplicaProcesses`]).
pub trait Replicas {
    /// What their fault layers counted, over every replica (and, for
    /// processes, every life of each).
    fn tally(&self) -> ServerTally;
    /// The ledger as the database holds it now.
    fn snapshot(&self) -> impl Future<Output = Result<LedgerSnapshot, StoreError>> + Send;
}

impl Replicas for Cluster {
    fn tally(&self) -> ServerTally {
        self.faults().tally()
    }

    fn snapshot(&self) -> impl Future<Output = Result<LedgerSnapshot, StoreError>> + Send {
        Cluster::snapshot(self)
    }
}

/// Audits the cluster's ledger against `results` and gathers the counters.
/// Executions are the ledger's rows: the database, not a counter a killed
/// replica takes with it, says which bodies committed.
pub async fn summarize(
    config: &DemoConfig,
    cluster: &impl Replicas,
    clients: &[Arc<PaymentsClient>],
    payments: &[Payment],
    results: &[Result<Receipt, Status>],
    elapsed: Duration,
    kills: usize,
) -> Result<Summary, StoreError> {
    let ledger = cluster.snapshot().await?;
    let audit = Audit::new(&config.opening(), payments, results, &ledger);
    let stats: Vec<&ClientStats> = clients.iter().map(|client| client.stats()).collect();
    Ok(Summary::new(
        config.backend.to_string(),
        config.replicas,
        &stats,
        elapsed,
        payments.len(),
        cluster.tally(),
        ledger.rows.len() as u64,
        kills,
        ledger.balances,
        audit,
    ))
}
