//! `hedge`: with `&self`, an owned `self`, owned and borrowed arguments, a
//! generic fn, `#[async_trait]`, a predicate, `notify`, a timeout, a
//! deadline and a budget; every shape still compiles under the strictest
//! lints.

#![deny(warnings)]
#![deny(clippy::all, clippy::pedantic, clippy::nursery)]

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU32, Ordering},
};

use steadfast::{Code, RetryBudget, RetryEvent};

#[derive(Clone, Default)]
struct Client {
    calls: Arc<AtomicU32>,
}

static BUDGET: RetryBudget = RetryBudget::new(10, 0.1);

static EVENTS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn log<E: steadfast::Classify>(error: &E, event: RetryEvent) {
    let _ = error.code();
    EVENTS.lock().unwrap().push(event.attempt);
}

impl Client {
    fn next(&self) -> Result<u32, Code> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if call < 2 {
            Err(Code::Unavailable)
        } else {
            Ok(call)
        }
    }

    #[steadfast::retry(hedge = "10ms", backoff = "none")]
    async fn get(&self, key: &str, tag: String) -> Result<String, Code> {
        let call = self.next()?;
        Ok(format!("{key}{tag}#{call}"))
    }

    #[steadfast::retry(
        hedge = "10ms",
        backoff = "none",
        on = |code: &Code| matches!(code, Code::Unavailable),
        notify = log
    )]
    async fn owned(self) -> Result<u32, Code> {
        self.next()
    }

    #[steadfast::retry(hedge = "10ms", timeout = "1s", deadline = "5s", budget = BUDGET)]
    async fn timed(&self) -> Result<u32, Code> {
        self.next()
    }
}

#[steadfast::retry(hedge = "5ms", max = 2)]
async fn generic<T: Clone + Send + Sync + std::fmt::Debug>(value: T) -> Result<T, Code> {
    Ok(value)
}

#[async_trait::async_trait]
trait Fetch {
    async fn fetch(&self, id: u32) -> Result<u32, Code>;
}

#[async_trait::async_trait]
impl Fetch for Client {
    #[steadfast::retry(hedge = "10ms", backoff = "none")]
    async fn fetch(&self, id: u32) -> Result<u32, Code> {
        self.next().map(|call| call + id)
    }
}

const fn assert_send<T: Send>(value: T) -> T {
    value
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let client = Client::default();
    assert!(assert_send(client.get("k", "!".to_owned())).await.is_ok());
    assert!(client.clone().owned().await.is_ok());
    assert!(client.timed().await.is_ok());
    assert_eq!(generic(7).await, Ok(7));
    assert!(client.fetch(1).await.is_ok());
}
