//! Run to completion through real servers on 127.0.0.1: a tonic service
//! behind `RunToCompletionLayer`, called by a `#[retry]` client whose
//! per-attempt timeout is shorter than the handler, and an axum handler fn
//! (owned arguments: the attribute alone) whose client disconnects
//! mid-request. Each handler makes its effect, then works on; the effect
//! must happen once, and the client must end with the first result.

use std::{
    sync::{
        Arc, LazyLock,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use steadfast::idempotency::{MemoryStore, RunToCompletionLayer};
use steadfast_test_support::ledger::{
    Balance, BalanceRequest, Client, TransferReceipt, TransferRequest,
    ledger_server::{Ledger, LedgerServer},
};
use tokio::io::AsyncWriteExt;
use tonic::{Request, Response, Status};

#[derive(Debug, Default)]
struct SlowLedger {
    store: MemoryStore,
    effects: AtomicU32,
}

#[tonic::async_trait]
impl Ledger for SlowLedger {
    async fn get_balance(
        &self,
        request: Request<BalanceRequest>,
    ) -> Result<Response<Balance>, Status> {
        Ok(Response::new(Balance {
            account: request.into_inner().account,
            cents: 0,
        }))
    }

    /// An ordinary, unfenced handler: the effect, then 300 ms more work.
    #[steadfast::idempotent(key = request.get_ref().request_id, store = self.store, in_progress = "wait(2s)")]
    async fn transfer(
        &self,
        request: Request<TransferRequest>,
    ) -> Result<Response<TransferReceipt>, Status> {
        let number = self.effects.fetch_add(1, Ordering::SeqCst) + 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(Response::new(TransferReceipt {
            transfer_id: format!("t-{number}"),
            from_balance: -request.get_ref().cents,
        }))
    }
}

/// Gives up on each attempt after 150 ms, half the handler's time.
#[steadfast::retry(
    max = 8,
    backoff = "const(20ms)",
    timeout = "150ms",
    on = "Unavailable|DeadlineExceeded|Aborted"
)]
async fn transfer(client: &mut Client, req: TransferRequest) -> Result<TransferReceipt, Status> {
    Ok(client.transfer(req).await?.into_inner())
}

async fn serve(ledger: Arc<SlowLedger>, run_to_completion: bool) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let service = LedgerServer::from_arc(ledger);
    if run_to_completion {
        tokio::spawn(
            tonic::transport::Server::builder()
                .layer(RunToCompletionLayer::new())
                .add_service(service)
                .serve_with_incoming(incoming),
        );
    } else {
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming),
        );
    }
    address
}

fn payment(id: &str) -> TransferRequest {
    TransferRequest {
        request_id: id.into(),
        from: "alice".into(),
        to: "bob".into(),
        cents: 250,
    }
}

#[tokio::test]
async fn a_client_timeout_shorter_than_the_handler_runs_it_once() {
    let ledger = Arc::new(SlowLedger::default());
    let mut client =
        steadfast_test_support::ledger::connect(serve(ledger.clone(), true).await).await;
    let receipt = transfer(&mut client, payment("pay-1")).await.unwrap();
    assert_eq!(receipt.transfer_id, "t-1", "the first execution's receipt");
    assert_eq!(
        ledger.effects.load(Ordering::SeqCst),
        1,
        "one payment, once"
    );
}

/// The control: without the layer, tonic drops the handler's future when
/// the client's attempt times out, and the retry runs the payment again.
#[tokio::test]
async fn without_the_layer_the_same_client_runs_it_again() {
    let ledger = Arc::new(SlowLedger::default());
    let mut client =
        steadfast_test_support::ledger::connect(serve(ledger.clone(), false).await).await;
    let _ = transfer(&mut client, payment("pay-2")).await;
    assert!(ledger.effects.load(Ordering::SeqCst) > 1);
}

mod http {
    use super::*;
    use axum::{Json, Router, extract::Path, routing::post};

    pub(super) static STORE: LazyLock<MemoryStore> = LazyLock::new(MemoryStore::new);
    pub(super) static EFFECTS: AtomicU32 = AtomicU32::new(0);
    pub(super) static PLAIN_ENDED: AtomicU32 = AtomicU32::new(0);

    #[derive(Debug, serde::Deserialize)]
    pub(super) struct Pay {
        cents: u64,
    }

    #[derive(Debug)]
    pub(super) struct ApiError(steadfast::idempotency::IdempotencyError);

    impl From<steadfast::idempotency::IdempotencyError> for ApiError {
        fn from(error: steadfast::idempotency::IdempotencyError) -> Self {
            Self(error)
        }
    }

    impl axum::response::IntoResponse for ApiError {
        fn into_response(self) -> axum::response::Response {
            (axum::http::StatusCode::CONFLICT, self.0.to_string()).into_response()
        }
    }

    /// An axum handler fn: its arguments are owned, so the attribute alone
    /// runs it to its end.
    #[steadfast::idempotent(key = id, store = STORE, in_progress = "wait(2s)")]
    pub(super) async fn pay(
        Path(id): Path<String>,
        Json(pay): Json<Pay>,
    ) -> Result<String, ApiError> {
        let number = EFFECTS.fetch_add(1, Ordering::SeqCst) + 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(format!("paid {} cents (execution {number})", pay.cents))
    }

    /// The control: the same work without the attribute.
    pub(super) async fn plain(Json(pay): Json<Pay>) -> String {
        tokio::time::sleep(Duration::from_millis(300)).await;
        PLAIN_ENDED.fetch_add(1, Ordering::SeqCst);
        format!("{} cents", pay.cents)
    }

    pub(super) async fn serve() -> std::net::SocketAddr {
        let app = Router::new()
            .route("/pay/{id}", post(pay))
            .route("/plain", post(plain));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        address
    }
}

/// Sends `POST path` with a JSON body, then hangs up after `wait`.
async fn post_and_disconnect(address: std::net::SocketAddr, path: &str, wait: Duration) {
    let body = r#"{"cents":5}"#;
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    tokio::time::sleep(wait).await;
    drop(stream);
}

#[tokio::test]
async fn an_http_client_that_disconnects_mid_request_does_not_run_it_twice() {
    let address = http::serve().await;
    // The control: hyper drops a plain handler's future when its client
    // hangs up, so the handler never ends.
    post_and_disconnect(address, "/plain", Duration::from_millis(50)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        http::PLAIN_ENDED.load(Ordering::SeqCst),
        0,
        "hyper cancels on disconnect"
    );

    post_and_disconnect(address, "/pay/pay-9", Duration::from_millis(50)).await;
    let retry = reqwest::Client::new()
        .post(format!("http://{address}/pay/pay-9"))
        .header("content-type", "application/json")
        .body(r#"{"cents":5}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(retry.status(), 200);
    assert_eq!(retry.text().await.unwrap(), "paid 5 cents (execution 1)");
    assert_eq!(
        http::EFFECTS.load(Ordering::SeqCst),
        1,
        "the payment ran once"
    );
}
