//! The shapes of a tonic user, both attributes: a `#[tonic::async_trait]`
//! service with `#[idempotent]` handlers (one-line and multi-line bodies,
//! `?` and `return`, keys from the message and from metadata), and a
//! `#[retry]` client over a real channel (`&mut` client, owned request
//! cloned per attempt, per-attempt timeout).

#![deny(warnings)]
#![deny(clippy::all, clippy::pedantic, clippy::nursery)]

use std::sync::{
    Arc,
    atomic::{AtomicI64, Ordering},
};

use steadfast::idempotency::MemoryStore;
use steadfast_test_support::ledger::{
    Balance, BalanceRequest, TransferReceipt, TransferRequest, ledger_client::LedgerClient,
    ledger_server::Ledger,
};
use tonic::{Request, Response, Status, transport::Channel};

#[derive(Debug, Default)]
struct IdempotentLedger {
    store: MemoryStore,
    moved: AtomicI64,
}

fn positive(cents: i64) -> Result<i64, Status> {
    if cents > 0 {
        Ok(cents)
    } else {
        Err(Status::invalid_argument("cents must be positive"))
    }
}

#[tonic::async_trait]
impl Ledger for IdempotentLedger {
    #[rustfmt::skip]
    #[steadfast::idempotent(key = request.metadata().get("idempotency-key"), store = self.store)]
    async fn get_balance(&self, request: Request<BalanceRequest>) -> Result<Response<Balance>, Status> { Ok(Response::new(Balance { account: request.into_inner().account, cents: self.moved.load(Ordering::SeqCst) })) }

    #[rustfmt::skip]
    #[steadfast::idempotent(
        key = request.get_ref().request_id,
        store = self.store,
        fingerprint = request.get_ref(),
        cache_errors = "InvalidArgument",
    )]
    async fn transfer(&self, request: Request<TransferRequest>) -> Result<Response<TransferReceipt>, Status> {
        let transfer = request.into_inner();
        if transfer.from == transfer.to {
            return Err(Status::invalid_argument("a transfer needs two accounts"));
        }
        let cents = positive(transfer.cents)?;
        let total = self.moved.fetch_add(cents, Ordering::SeqCst) + cents;
        Ok(Response::new(TransferReceipt { transfer_id: format!("t-{total}"), from_balance: -total }))
    }
}

#[rustfmt::skip]
#[steadfast::retry(max = 3, backoff = "exp(10ms)", timeout = "2s")]
async fn send(client: &mut LedgerClient<Channel>, request: TransferRequest) -> Result<TransferReceipt, Status> { Ok(client.transfer(request).await?.into_inner()) }

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let ledger = Arc::new(IdempotentLedger::default());
    let mut client = steadfast_test_support::ledger::connect(
        steadfast_test_support::ledger::serve(ledger.clone()).await,
    )
    .await;
    let request = TransferRequest {
        request_id: "p-1".into(),
        from: "alice".into(),
        to: "bob".into(),
        cents: 5,
    };
    let first = send(&mut client, request.clone()).await.unwrap();
    assert_eq!(
        send(&mut client, request.clone()).await.unwrap(),
        first,
        "replayed"
    );
    let other = TransferRequest {
        cents: 6,
        ..request
    };
    let mismatch = send(&mut client, other).await.unwrap_err();
    assert_eq!(
        mismatch.code(),
        tonic::Code::FailedPrecondition,
        "the prost fingerprint differs"
    );
    assert_eq!(ledger.moved.load(Ordering::SeqCst), 5);
}
