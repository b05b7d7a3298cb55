//! `#[retry]` and `RetryPolicy` against a real gRPC server on 127.0.0.1:
//! transient statuses are retried, and the server's `grpc-retry-pushback-ms`
//! decides when (or whether) the next attempt goes out.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use steadfast::RetryPolicy;
use steadfast_test_support::ledger::{
    Balance, BalanceRequest, Client, TransferReceipt, TransferRequest, ledger_client::LedgerClient,
    ledger_server::Ledger,
};
use steadfast_test_support::ledger::{connect, serve};
use tonic::{Request, Response, Status, metadata::MetadataValue, transport::Channel};

/// A ledger whose `GetBalance` misbehaves on purpose, by account:
///
/// - `flaky`: `UNAVAILABLE` twice, then 4200 cents;
/// - `throttled`: `RESOURCE_EXHAUSTED` with a pushback of 150 ms, then 100 cents;
/// - `closed`: always `RESOURCE_EXHAUSTED` with a negative pushback ("do not retry").
///
/// It records every call it receives, with the time it arrived.
#[derive(Debug, Default)]
struct MisbehavingLedger {
    calls: Mutex<Vec<(String, Instant)>>,
    /// Each call's `grpc-previous-rpc-attempts`, in order.
    previous_attempts: Mutex<Vec<Option<String>>>,
}

const PUSHBACK: Duration = Duration::from_millis(150);

impl MisbehavingLedger {
    /// A new ledger, served on loopback, and a client of it.
    async fn serve() -> (Arc<MisbehavingLedger>, Client) {
        let ledger = Arc::new(MisbehavingLedger::default());
        let client = connect(serve(ledger.clone()).await).await;
        (ledger, client)
    }

    /// The times at which calls for `account` arrived.
    fn calls(&self, account: &str) -> Vec<Instant> {
        let calls = self.calls.lock().unwrap();
        calls
            .iter()
            .filter(|(name, _)| name == account)
            .map(|(_, at)| *at)
            .collect()
    }
}

/// `RESOURCE_EXHAUSTED` with `grpc-retry-pushback-ms: {pushback_ms}`.
fn resource_exhausted(pushback_ms: i64) -> Status {
    let mut status = Status::resource_exhausted("too many requests");
    let value: MetadataValue<_> = pushback_ms.to_string().parse().unwrap();
    status
        .metadata_mut()
        .insert("grpc-retry-pushback-ms", value);
    status
}

#[tonic::async_trait]
impl Ledger for MisbehavingLedger {
    async fn get_balance(
        &self,
        request: Request<BalanceRequest>,
    ) -> Result<Response<Balance>, Status> {
        let previous = request
            .metadata()
            .get(steadfast::PREVIOUS_ATTEMPTS_HEADER)
            .map(|value| value.to_str().unwrap().to_owned());
        self.previous_attempts.lock().unwrap().push(previous);
        let account = request.into_inner().account;
        let call = {
            let mut calls = self.calls.lock().unwrap();
            calls.push((account.clone(), Instant::now()));
            calls.iter().filter(|(name, _)| *name == account).count()
        };
        let cents = match (account.as_str(), call) {
            ("flaky", 1 | 2) => return Err(Status::unavailable("warming up")),
            ("flaky", _) => 4200,
            ("throttled", 1) => {
                return Err(resource_exhausted(
                    i64::try_from(PUSHBACK.as_millis()).unwrap(),
                ));
            }
            ("throttled", _) => 100,
            ("closed", _) => return Err(resource_exhausted(-1)),
            _ => return Err(Status::not_found(format!("no account {account:?}"))),
        };
        Ok(Response::new(Balance { account, cents }))
    }

    async fn transfer(
        &self,
        _: Request<TransferRequest>,
    ) -> Result<Response<TransferReceipt>, Status> {
        Err(Status::unimplemented(
            "transfers are not part of these tests",
        ))
    }
}

#[steadfast::retry(
    max = 3,
    backoff = "exp(10ms)",
    jitter = "none",
    on = "Unavailable|DeadlineExceeded"
)]
async fn get_balance(client: &mut Client, account: &str) -> Result<Balance, tonic::Status> {
    let request = BalanceRequest {
        account: account.to_owned(),
    };
    Ok(client.get_balance(request).await?.into_inner())
}

#[tokio::test]
async fn unavailable_twice_then_the_balance() {
    let (ledger, mut client) = MisbehavingLedger::serve().await;

    let balance = get_balance(&mut client, "flaky").await.unwrap();

    assert_eq!(
        balance,
        Balance {
            account: "flaky".into(),
            cents: 4200
        }
    );
    assert_eq!(ledger.calls("flaky").len(), 3);
}

#[tokio::test]
async fn errors_that_are_not_retried_return_after_one_call() {
    let (ledger, mut client) = MisbehavingLedger::serve().await;

    let error = get_balance(&mut client, "nobody").await.unwrap_err();

    assert_eq!(error.code(), tonic::Code::NotFound);
    assert_eq!(ledger.calls("nobody").len(), 1);
}

/// Retries `ResourceExhausted` after 1 ms, unless the server pushes back
/// (for at most the backoff's cap, 1 s).
fn throttled_policy() -> RetryPolicy {
    RetryPolicy::builder()
        .max_retries(2)
        .backoff("exp(1ms, max = 1s)")
        .jitter("none")
        .on("ResourceExhausted|Unavailable")
        .build()
        .unwrap()
}

/// The balance of `account`, each attempt a call of its own under
/// [`throttled_policy`].
async fn throttled_balance(client: &Client, account: &str) -> Result<Balance, Status> {
    throttled_policy()
        .run(|| {
            let mut client = client.clone();
            let request = BalanceRequest {
                account: account.to_owned(),
            };
            async move { Ok::<_, Status>(client.get_balance(request).await?.into_inner()) }
        })
        .await
}

#[tokio::test]
async fn the_retry_waits_for_the_servers_pushback() {
    let (ledger, client) = MisbehavingLedger::serve().await;

    let balance = throttled_balance(&client, "throttled").await.unwrap();

    assert_eq!(balance.cents, 100);
    let calls = ledger.calls("throttled");
    assert_eq!(calls.len(), 2);
    let gap = calls[1] - calls[0];
    assert!(
        gap >= PUSHBACK,
        "the retry came {gap:?} after the first call, before the pushback of {PUSHBACK:?}"
    );
}

#[tokio::test]
async fn a_negative_pushback_stops_the_retries() {
    let (ledger, client) = MisbehavingLedger::serve().await;

    let error = throttled_balance(&client, "closed").await.unwrap_err();

    assert_eq!(error.code(), tonic::Code::ResourceExhausted);
    assert_eq!(ledger.calls("closed").len(), 1);
}

#[steadfast::retry(max = 3, backoff = "exp(10ms)", jitter = "none")]
async fn get_balance_through(
    client: &mut LedgerClient<steadfast::PreviousAttempts<Channel>>,
    account: &str,
) -> Result<Balance, tonic::Status> {
    let request = BalanceRequest {
        account: account.to_owned(),
    };
    Ok(client.get_balance(request).await?.into_inner())
}

#[tokio::test]
async fn retries_tell_the_server_which_attempt_they_are() {
    let ledger = Arc::new(MisbehavingLedger::default());
    let address = serve(ledger.clone()).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = LedgerClient::new(steadfast::PreviousAttempts::new(channel));
    let balance = get_balance_through(&mut client, "flaky").await.unwrap();
    assert_eq!(balance.cents, 4200);
    let seen = ledger.previous_attempts.lock().unwrap().clone();
    assert_eq!(seen, [None, Some("1".to_owned()), Some("2".to_owned())]);
}
