//! Hedging against real gRPC servers on 127.0.0.1: two replicas of the test
//! ledger, one answering in 5 ms and one in 300 ms. Without hedging, every
//! call that goes to the slow replica first takes 300 ms; with
//! `hedge = "30ms"` a second attempt goes to the other replica after 30 ms
//! and the first answer wins, so no call takes much more than 35 ms, and
//! the slow replica's calls are cancelled.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use steadfast::{previous_attempts, retry};
use steadfast_test_support::ledger::{
    Balance, BalanceRequest, Client, TransferReceipt, TransferRequest, connect,
    ledger_server::Ledger, serve,
};
use tonic::{Request, Response, Status};

const FAST: Duration = Duration::from_millis(5);
const SLOW: Duration = Duration::from_millis(300);

/// A replica that answers every balance after `delay`, and counts the calls
/// it began and those whose caller went away before the answer.
#[derive(Debug)]
struct Replica {
    delay: Duration,
    calls: AtomicU32,
    abandoned: Arc<AtomicU32>,
}

struct Abandoned(Arc<AtomicU32>);

impl Drop for Abandoned {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

#[tonic::async_trait]
impl Ledger for Replica {
    async fn get_balance(
        &self,
        request: Request<BalanceRequest>,
    ) -> Result<Response<Balance>, Status> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let guard = Abandoned(self.abandoned.clone());
        tokio::time::sleep(self.delay).await;
        std::mem::forget(guard);
        Ok(Response::new(Balance {
            account: request.into_inner().account,
            cents: i64::try_from(self.delay.as_millis()).unwrap(),
        }))
    }

    async fn transfer(
        &self,
        _: Request<TransferRequest>,
    ) -> Result<Response<TransferReceipt>, Status> {
        Err(Status::unimplemented("not part of these tests"))
    }
}

async fn replica(delay: Duration) -> (Arc<Replica>, Client) {
    let replica = Arc::new(Replica {
        delay,
        calls: AtomicU32::new(0),
        abandoned: Arc::new(AtomicU32::new(0)),
    });
    let client = connect(serve(replica.clone()).await).await;
    (replica, client)
}

/// The replica an attempt goes to: the call's first choice, then the other.
fn pick(replicas: &[Client; 2], first: usize) -> Client {
    let attempt = previous_attempts().unwrap_or(0) as usize;
    replicas[(first + attempt) % 2].clone()
}

#[retry(max = 1, backoff = "none", hedge = "30ms")]
async fn hedged_balance(replicas: &[Client; 2], first: usize) -> Result<Balance, Status> {
    let mut client = pick(replicas, first);
    let request = BalanceRequest {
        account: "a".to_owned(),
    };
    Ok(client.get_balance(request).await?.into_inner())
}

#[retry(max = 1, backoff = "none")]
async fn plain_balance(replicas: &[Client; 2], first: usize) -> Result<Balance, Status> {
    let mut client = pick(replicas, first);
    let request = BalanceRequest {
        account: "a".to_owned(),
    };
    Ok(client.get_balance(request).await?.into_inner())
}

/// The latencies of 20 calls, half of them sent to the slow replica first.
async fn latencies<F, Fut>(call: F) -> Vec<Duration>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<Balance, Status>>,
{
    let mut latencies = Vec::new();
    for index in 0..20 {
        let started = Instant::now();
        call(index % 2).await.expect("a balance");
        latencies.push(started.elapsed());
    }
    latencies.sort();
    latencies
}

#[tokio::test]
async fn hedging_cuts_the_tail_that_a_slow_replica_makes() {
    let (fast, fast_client) = replica(FAST).await;
    let (slow, slow_client) = replica(SLOW).await;
    let replicas = [fast_client, slow_client];

    let plain = latencies(|first| plain_balance(&replicas, first)).await;
    let hedged = latencies(|first| hedged_balance(&replicas, first)).await;
    let (plain_p50, plain_max) = (plain[10], plain[19]);
    let (hedged_p50, hedged_max) = (hedged[10], hedged[19]);
    println!("without hedging: p50 {plain_p50:.1?}, max {plain_max:.1?}");
    println!("hedge = 30ms:    p50 {hedged_p50:.1?}, max {hedged_max:.1?}");
    println!(
        "fast replica: {} calls; slow replica: {} calls, {} abandoned by their caller",
        fast.calls.load(Ordering::Relaxed),
        slow.calls.load(Ordering::Relaxed),
        slow.abandoned.load(Ordering::Relaxed)
    );

    assert!(
        plain_max >= SLOW,
        "without hedging the slow replica is waited for"
    );
    assert!(
        hedged_max < SLOW,
        "with hedging no call waits for the slow replica: {hedged:?}"
    );
    // The 10 hedged calls sent to the slow replica first were hedged to the
    // fast one (10 plain + 10 first + 10 hedges there), which answered; the
    // slow attempts were cancelled (the server drops a handler whose
    // caller reset the stream; wait for the last, at most 1 s).
    assert_eq!(
        slow.calls.load(Ordering::Relaxed),
        20,
        "10 plain, 10 hedged"
    );
    assert_eq!(fast.calls.load(Ordering::Relaxed), 30);
    for _ in 0..100 {
        if slow.abandoned.load(Ordering::Relaxed) >= 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        slow.abandoned.load(Ordering::Relaxed),
        10,
        "the hedged slow attempts were cancelled"
    );
}
