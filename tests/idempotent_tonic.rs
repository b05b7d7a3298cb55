//! `#[idempotent]` on a real tonic service (`#[tonic::async_trait]`), over a
//! real gRPC connection on 127.0.0.1: a transfer retried by its client runs
//! once, and the duplicate gets the stored `Response` (prost-encoded).

use std::sync::{
    Arc,
    atomic::{AtomicU32, Ordering},
};

use steadfast::idempotency::MemoryStore;
use steadfast_test_support::ledger::{
    Balance, BalanceRequest, TransferReceipt, TransferRequest, ledger_server::Ledger,
};
use steadfast_test_support::ledger::{connect, serve};
use tonic::{Code, Request, Response, Status};

#[derive(Debug, Default)]
struct IdempotentLedger {
    store: MemoryStore,
    transfers: AtomicU32,
}

#[tonic::async_trait]
impl Ledger for IdempotentLedger {
    #[steadfast::idempotent(key = request.metadata().get("idempotency-key"), store = self.store)]
    async fn get_balance(
        &self,
        request: Request<BalanceRequest>,
    ) -> Result<Response<Balance>, Status> {
        let account = request.into_inner().account;
        Ok(Response::new(Balance {
            account,
            cents: i64::from(self.transfers.load(Ordering::SeqCst)),
        }))
    }

    #[steadfast::idempotent(
        key = request.get_ref().request_id,
        store = self.store,
        fingerprint = format!("{}>{}:{}", request.get_ref().from, request.get_ref().to, request.get_ref().cents),
        cache_errors = "InvalidArgument"
    )]
    async fn transfer(
        &self,
        request: Request<TransferRequest>,
    ) -> Result<Response<TransferReceipt>, Status> {
        let transfer = request.into_inner();
        if transfer.cents <= 0 {
            return Err(Status::invalid_argument(format!(
                "cannot transfer {} cents",
                transfer.cents
            )));
        }
        let number = self.transfers.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(Response::new(TransferReceipt {
            transfer_id: format!("t-{number}"),
            from_balance: 1000 - transfer.cents,
        }))
    }
}

fn transfer(request_id: &str, cents: i64) -> TransferRequest {
    TransferRequest {
        request_id: request_id.into(),
        from: "alice".into(),
        to: "bob".into(),
        cents,
    }
}

#[tokio::test]
async fn a_retried_transfer_runs_once_and_replays_its_receipt() {
    let ledger = Arc::new(IdempotentLedger::default());
    let mut client = connect(serve(ledger.clone()).await).await;
    let first = client
        .transfer(transfer("pay-1", 250))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        first,
        TransferReceipt {
            transfer_id: "t-1".into(),
            from_balance: 750
        }
    );
    for _ in 0..3 {
        let again = client
            .transfer(transfer("pay-1", 250))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(again, first);
    }
    assert_eq!(ledger.transfers.load(Ordering::SeqCst), 1);

    let mismatch = client.transfer(transfer("pay-1", 999)).await.unwrap_err();
    assert_eq!(mismatch.code(), Code::FailedPrecondition, "{mismatch:?}");

    let second = client
        .transfer(transfer("pay-2", 100))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.transfer_id, "t-2");
}

#[tokio::test]
async fn cached_statuses_replay_and_missing_keys_are_invalid() {
    let ledger = Arc::new(IdempotentLedger::default());
    let mut client = connect(serve(ledger.clone()).await).await;
    for _ in 0..2 {
        let refused = client.transfer(transfer("neg-1", -5)).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument);
        assert_eq!(refused.message(), "cannot transfer -5 cents");
    }
    let missing = client.transfer(transfer("", 5)).await.unwrap_err();
    assert_eq!(missing.code(), Code::InvalidArgument);
    assert_eq!(ledger.transfers.load(Ordering::SeqCst), 0);

    let no_header = client
        .get_balance(BalanceRequest {
            account: "alice".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        no_header.code(),
        Code::InvalidArgument,
        "the key comes from metadata"
    );
    let mut request = Request::new(BalanceRequest {
        account: "alice".into(),
    });
    request
        .metadata_mut()
        .insert("idempotency-key", "balance-1".parse().unwrap());
    assert_eq!(
        client
            .get_balance(request)
            .await
            .unwrap()
            .into_inner()
            .account,
        "alice"
    );
}
