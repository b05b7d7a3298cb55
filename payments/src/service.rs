//! The ledger's gRPC service: `Deposit` and `Transfer` under `#[idempotent]`.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use prost::Message;
use steadfast::{idempotency::IdempotencyStore, idempotent};
use tonic::{Request, Response, Status};

use crate::{
    FaultPlan, Movement, Payment,
    books::Books,
    proto::{Balance, BalanceRequest, DepositRequest, Receipt, TransferRequest, ledger_server},
};

/// What the replicas of a cluster did, summed over all of them.
#[derive(Debug, Default)]
pub(crate) struct ServerCounters {
    /// Payment bodies that committed their money.
    pub(crate) executions: AtomicU64,
}

/// One replica's service.
pub(crate) struct LedgerService {
    books: Books,
    store: Arc<dyn IdempotencyStore>,
    counters: Arc<ServerCounters>,
    faults: Arc<FaultPlan>,
}

impl LedgerService {
    pub(crate) fn new(
        books: Books,
        counters: Arc<ServerCounters>,
        faults: Arc<FaultPlan>,
    ) -> LedgerService {
        LedgerService {
            store: books.store(),
            books,
            counters,
            faults,
        }
    }

    async fn execute(&self, payment: Payment) -> Result<Response<Receipt>, Status> {
        if payment.cents <= 0 {
            return Err(Status::invalid_argument(format!(
                "cents must be positive, got {}",
                payment.cents
            )));
        }
        let receipt = self.books.apply(&payment, &self.faults).await?;
        self.counters.executions.fetch_add(1, Ordering::Relaxed);
        Ok(Response::new(receipt))
    }
}

impl std::fmt::Debug for LedgerService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerService")
            .field("books", &self.books)
            .finish_non_exhaustive()
    }
}

#[tonic::async_trait]
impl ledger_server::Ledger for LedgerService {
    // The lease is short so that a payment held by a replica that died
    // is taken over within seconds; it is renewed while the body runs.
    #[idempotent(
        key = request.get_ref().payment_id,
        store = self.store,
        fingerprint = request.get_ref().encode_to_vec(),
        lease = "2s",
        ttl = "1h"
    )]
    async fn deposit(&self, request: Request<DepositRequest>) -> Result<Response<Receipt>, Status> {
        let DepositRequest {
            payment_id,
            account,
            cents,
        } = request.into_inner();
        self.execute(Payment {
            id: payment_id,
            movement: Movement::Deposit { account },
            cents,
        })
        .await
    }

    #[idempotent(
        key = request.get_ref().payment_id,
        store = self.store,
        fingerprint = request.get_ref().encode_to_vec(),
        lease = "2s",
        ttl = "1h"
    )]
    async fn transfer(
        &self,
        request: Request<TransferRequest>,
    ) -> Result<Response<Receipt>, Status> {
        let TransferRequest {
            payment_id,
            from,
            to,
            cents,
        } = request.into_inner();
        if from == to {
            return Err(Status::invalid_argument(
                "a transfer needs two different accounts",
            ));
        }
        self.execute(Payment {
            id: payment_id,
            movement: Movement::Transfer { from, to },
            cents,
        })
        .await
    }

    async fn get_balance(
        &self,
        request: Request<BalanceRequest>,
    ) -> Result<Response<Balance>, Status> {
        let account = request.into_inner().account;
        let cents = self.books.balance(&account).await?;
        Ok(Response::new(Balance { account, cents }))
    }
}
