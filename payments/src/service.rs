//! The ledger's gRPC service: `Deposit` under `#[idempotent]`, fenced in
//! its own transaction; `Transfer` in the engine's transaction
//! (`Idempotency::run_in_transaction`) on SQL backends, under
//! `#[idempotent]` in memory.

use std::sync::Arc;

use prost::Message;
use steadfast::{
    idempotency::{Idempotency, IdempotencyStore, NotStored, ProstCodec},
    idempotent,
};
use tonic::{Request, Response, Status};

use crate::{
    FaultPlan, Movement, Payment,
    books::{Books, LEASE, TRANSFER_SCOPE, TTL},
    proto::{Balance, BalanceRequest, DepositRequest, Receipt, TransferRequest, ledger_server},
};

/// One replica's service.
pub(crate) struct LedgerService {
    books: Books,
    store: Arc<dyn IdempotencyStore>,
    faults: Arc<FaultPlan>,
}

impl LedgerService {
    pub(crate) fn new(books: Books, faults: Arc<FaultPlan>) -> LedgerService {
        LedgerService {
            store: books.store(),
            books,
            faults,
        }
    }

    async fn execute(&self, payment: Payment) -> Result<Response<Receipt>, Status> {
        check(&payment)?;
        let receipt = self.books.apply(&payment, &self.faults).await?;
        Ok(Response::new(receipt))
    }

    /// A transfer in memory, where there is no transaction to run it in:
    /// the same key, scope and settings, the result stored after the body.
    async fn transfer_in_memory(
        &self,
        payment: Payment,
        fingerprint: &[u8],
    ) -> Result<Response<Receipt>, Status> {
        Idempotency::new(&*self.store)
            .key(&payment.id)
            .scope(TRANSFER_SCOPE)
            .fingerprint(fingerprint)
            .lease(LEASE)
            .ttl(TTL)
            .run_with(&ProstCodec, &NotStored, |_| false, || self.execute(payment))
            .await
    }
}

/// A positive amount, or `InvalidArgument`.
fn check(payment: &Payment) -> Result<(), Status> {
    if payment.cents <= 0 {
        return Err(Status::invalid_argument(format!(
            "cents must be positive, got {}",
            payment.cents
        )));
    }
    Ok(())
}

/// The payment a transfer request asks for, or `InvalidArgument`.
fn transfer(request: TransferRequest) -> Result<Payment, Status> {
    let TransferRequest {
        payment_id,
        from,
        to,
        cents,
    } = request;
    if from == to {
        return Err(Status::invalid_argument(
            "a transfer needs two different accounts",
        ));
    }
    let payment = Payment {
        id: payment_id,
        movement: Movement::Transfer { from, to },
        cents,
    };
    check(&payment)?;
    Ok(payment)
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

    async fn transfer(
        &self,
        request: Request<TransferRequest>,
    ) -> Result<Response<Receipt>, Status> {
        let fingerprint = request.get_ref().encode_to_vec();
        let payment = transfer(request.into_inner())?;
        let Books::Sql(books) = &self.books else {
            return self.transfer_in_memory(payment, &fingerprint).await;
        };
        // The money and the receipt commit in one transaction.
        let receipt = books
            .apply_once(&payment, &fingerprint, &self.faults)
            .await?;
        Ok(Response::new(receipt))
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
