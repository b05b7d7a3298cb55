//! Methods: `&self`, `&mut self`, `self` and `mut self` (the receiver is
//! cloned for each attempt but the last), with `Self` in the body.

#![deny(warnings)]
#![deny(clippy::all, clippy::pedantic, clippy::nursery)]

use std::sync::{
    Arc,
    atomic::{AtomicU32, Ordering},
};

use steadfast::Code;

#[derive(Clone, Default)]
struct Client {
    calls: Arc<AtomicU32>,
    local: u32,
    name: String,
}

impl Client {
    fn fail_until(&self, n: u32) -> Result<u32, Code> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if call < n {
            Err(Code::Unavailable)
        } else {
            Ok(call)
        }
    }

    #[steadfast::retry(backoff = "none")]
    async fn get(&self, key: &str) -> Result<String, Code> {
        let call = self.fail_until(2)?;
        Ok(format!("{key}#{call}"))
    }

    #[steadfast::retry(backoff = "none")]
    async fn bump(&mut self) -> Result<u32, Code> {
        self.local += 1;
        if self.local < 3 {
            Err(Code::Unavailable)
        } else {
            Ok(self.local)
        }
    }

    #[steadfast::retry(backoff = "none")]
    async fn into_name(self) -> Result<String, Code> {
        self.fail_until(2)?;
        let this: Self = self;
        Ok(this.name)
    }

    #[steadfast::retry(backoff = "none")]
    async fn renamed(mut self, suffix: &str) -> Result<String, Code> {
        // Each attempt starts from its own copy of `self`.
        self.name.push_str(suffix);
        self.fail_until(3)?;
        Ok(self.name)
    }

    #[steadfast::retry(backoff = "none")]
    fn blocking_get(&self) -> Result<u32, Code> {
        Self::fail_until(self, 2)
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let client = Client {
        name: "ledger".into(),
        ..Client::default()
    };
    assert_eq!(client.get("a").await, Ok("a#2".to_owned()));

    let mut client = Client::default();
    assert_eq!(client.bump().await, Ok(3));
    assert_eq!(client.local, 3);

    let client = Client {
        name: "ledger".into(),
        ..Client::default()
    };
    let calls = client.calls.clone();
    assert_eq!(client.into_name().await, Ok("ledger".to_owned()));
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    let client = Client {
        name: "ledger".into(),
        ..Client::default()
    };
    assert_eq!(client.renamed("-v2").await, Ok("ledger-v2".to_owned()));

    let client = Client::default();
    assert_eq!(client.blocking_get(), Ok(2));
}
