//! The demo's client: each payment is one `#[retry]` call, which fails over
//! to the next replica when the current one is unavailable.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use steadfast::{Budget, RatioBudget, retry};
use tonic::{
    Code, Status,
    transport::{Channel, Endpoint},
};

use crate::{
    Movement, Payment,
    proto::{DepositRequest, Receipt, TransferRequest, ledger_client::LedgerClient},
};

/// The codes the client counts attempts by (the rest land in `other`).
pub const COUNTED_CODES: [Code; 5] = [
    Code::Unavailable,
    Code::DeadlineExceeded,
    Code::ResourceExhausted,
    Code::Aborted,
    Code::Internal,
];

/// What the client saw, over every payment.
#[derive(Debug, Default)]
pub struct ClientStats {
    attempts: AtomicU64,
    answered: AtomicU64,
    failures: [AtomicU64; 6],
    failovers: AtomicU64,
}

impl ClientStats {
    /// Attempts started.
    pub fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::Relaxed)
    }

    /// Attempts that failed with `code` (`DeadlineExceeded` counts the
    /// attempts the per-attempt timeout cut as well).
    pub fn failures(&self, code: Code) -> u64 {
        let index = COUNTED_CODES.iter().position(|counted| *counted == code);
        let counted = self.failures[index.unwrap_or(COUNTED_CODES.len())].load(Ordering::Relaxed);
        if code == Code::DeadlineExceeded {
            // An attempt that started and never answered was cut by the timeout.
            counted + self.attempts() - self.answered.load(Ordering::Relaxed)
        } else {
            counted
        }
    }

    /// Attempts that failed with a code outside [`COUNTED_CODES`].
    pub fn other_failures(&self) -> u64 {
        self.failures[COUNTED_CODES.len()].load(Ordering::Relaxed)
    }

    /// Times the client moved on to the next replica.
    pub fn failovers(&self) -> u64 {
        self.failovers.load(Ordering::Relaxed)
    }

    fn record(&self, result: &Result<Receipt, Status>) {
        self.answered.fetch_add(1, Ordering::Relaxed);
        if let Err(status) = result {
            let code = effective_code(status);
            let index = COUNTED_CODES
                .iter()
                .position(|counted| *counted == code)
                .unwrap_or(COUNTED_CODES.len());
            self.failures[index].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The code as the retry loop sees it: a connection that broke mid-call
/// (tonic says `Unknown` or `Cancelled`, with the transport error as
/// source) is `Unavailable`.
fn effective_code(status: &Status) -> Code {
    if steadfast::Classify::code(status) == Some(steadfast::Code::Unavailable) {
        Code::Unavailable
    } else {
        status.code()
    }
}

/// A client of every replica of the ledger.
#[derive(Debug)]
pub struct PaymentsClient {
    replicas: Vec<LedgerClient<Channel>>,
    current: AtomicUsize,
    stats: ClientStats,
    /// Shared by every client of the cluster: retries stop when the
    /// cluster fails too many calls, instead of multiplying its load.
    budget: Arc<dyn Budget>,
}

impl PaymentsClient {
    /// A client of the replicas at `addresses` without a retry budget: it
    /// retries every failure up to its `max`, as the chaos tests need to
    /// see every payment through. Connections are made on first use and
    /// remade after a replica restarts.
    pub fn new(addresses: &[SocketAddr]) -> PaymentsClient {
        PaymentsClient::with_budget(addresses, Arc::new(None::<RatioBudget>))
    }

    /// A client of the replicas at `addresses` that draws its retries from
    /// `budget`; give every client of one cluster the same one.
    pub fn with_budget(addresses: &[SocketAddr], budget: Arc<dyn Budget>) -> PaymentsClient {
        assert!(!addresses.is_empty(), "at least one replica");
        let replicas = addresses
            .iter()
            .map(|address| {
                let endpoint = Endpoint::from_shared(format!("http://{address}"))
                    .expect("a loopback URI")
                    .connect_timeout(Duration::from_millis(250))
                    .tcp_nodelay(true);
                LedgerClient::new(endpoint.connect_lazy())
            })
            .collect();
        PaymentsClient {
            replicas,
            current: AtomicUsize::new(0),
            stats: ClientStats::default(),
            budget,
        }
    }

    /// What the client saw so far.
    pub fn stats(&self) -> &ClientStats {
        &self.stats
    }

    /// Sends `payment` until it succeeds or fails for good: retries on
    /// `Unavailable`, `DeadlineExceeded` (the 300 ms per-attempt timeout),
    /// `ResourceExhausted` (honouring the server's pushback) and `Aborted`
    /// (the payment is in progress elsewhere: the pushback is the time
    /// left on its lease, capped at the backoff's 400 ms). Its key,
    /// `payment.id`, was generated once, before this call: every attempt
    /// carries the same one. Retries are drawn from the client's budget.
    #[retry(
        max = 30,
        backoff = "exp(10ms, max = 400ms)",
        timeout = "300ms",
        deadline = "60s",
        on = "Unavailable|DeadlineExceeded|ResourceExhausted|Aborted",
        budget = self.budget
    )]
    pub async fn pay(&self, payment: &Payment) -> Result<Receipt, Status> {
        self.stats.attempts.fetch_add(1, Ordering::Relaxed);
        let replica = self.current.load(Ordering::Relaxed) % self.replicas.len();
        let mut client = self.replicas[replica].clone();
        let result = send_once(&mut client, payment).await;
        self.stats.record(&result);
        if matches!(&result, Err(status) if effective_code(status) == Code::Unavailable) {
            self.fail_over(replica);
        }
        result
    }

    /// Moves on from `replica` to the next one, unless another call did.
    fn fail_over(&self, replica: usize) {
        if self.replicas.len() > 1 {
            let moved = self.current.compare_exchange(
                replica,
                (replica + 1) % self.replicas.len(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            if moved.is_ok() {
                self.stats.failovers.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// One call of `payment` on `client`, without retries: what a first try, or
/// a duplicate sent by hand, gets from a replica.
pub async fn send_once(
    client: &mut LedgerClient<Channel>,
    payment: &Payment,
) -> Result<Receipt, Status> {
    let payment_id = payment.id.clone();
    let answer = match &payment.movement {
        Movement::Deposit { account } => {
            client
                .deposit(DepositRequest {
                    payment_id,
                    account: account.clone(),
                    cents: payment.cents,
                })
                .await
        }
        Movement::Transfer { from, to } => {
            client
                .transfer(TransferRequest {
                    payment_id,
                    from: from.clone(),
                    to: to.clone(),
                    cents: payment.cents,
                })
                .await
        }
    };
    answer.map(tonic::Response::into_inner)
}
