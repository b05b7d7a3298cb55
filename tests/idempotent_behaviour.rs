//! Behaviour of `#[idempotent]` over a `MemoryStore`: replays, concurrent
//! duplicates, scopes, cached and released errors, payload mismatches,
//! panics and cancellation, and stacking with `#[retry]`.

use std::{
    sync::{
        Arc, LazyLock,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use serde::{Deserialize, Serialize};
use steadfast::{
    Classify, Code,
    idempotency::{IdempotencyError, MemoryStore},
};
use tokio::{sync::Notify, task::JoinHandle};

/// A ledger whose handlers count how often their bodies run.
struct Ledger {
    store: MemoryStore,
    executions: AtomicU32,
    gate: Notify,
}

impl Ledger {
    fn new() -> Arc<Ledger> {
        Arc::new(Ledger {
            store: MemoryStore::new(),
            executions: AtomicU32::new(0),
            gate: Notify::new(),
        })
    }

    fn executions(&self) -> u32 {
        self.executions.load(Ordering::SeqCst)
    }

    /// [`Ledger::slow_reject`] in a task of its own.
    fn spawn_slow_reject(
        self: &Arc<Self>,
        request_id: &str,
    ) -> JoinHandle<Result<u32, IdempotencyError>> {
        let ledger = Arc::clone(self);
        let request_id = request_id.to_owned();
        tokio::spawn(async move { ledger.slow_reject(request_id).await })
    }

    #[steadfast::idempotent(key = request_id, store = self.store)]
    async fn deposit(&self, request_id: &str, cents: u64) -> Result<u64, IdempotencyError> {
        let run = self.executions.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(cents * 1000 + u64::from(run))
    }

    /// Runs until the gate opens.
    #[steadfast::idempotent(key = request_id, store = self.store)]
    async fn slow_reject(&self, request_id: String) -> Result<u32, IdempotencyError> {
        self.gate.notified().await;
        Ok(self.executions.fetch_add(1, Ordering::SeqCst) + 1)
    }

    #[steadfast::idempotent(key = request_id, store = self.store, in_progress = "wait(5s)")]
    async fn slow_wait(&self, request_id: String) -> Result<u32, IdempotencyError> {
        self.gate.notified().await;
        Ok(self.executions.fetch_add(1, Ordering::SeqCst) + 1)
    }

    #[steadfast::idempotent(key = request_id, store = self.store, scope = tenant)]
    async fn scoped(&self, tenant: &str, request_id: &str) -> Result<String, IdempotencyError> {
        self.executions.fetch_add(1, Ordering::SeqCst);
        Ok(format!("{tenant}:{request_id}"))
    }

    #[steadfast::idempotent(key = request_id, store = self.store, fingerprint = payload.as_bytes())]
    async fn with_payload(
        &self,
        request_id: &str,
        payload: String,
    ) -> Result<String, IdempotencyError> {
        self.executions.fetch_add(1, Ordering::SeqCst);
        Ok(payload)
    }

    #[steadfast::idempotent(key = request_id, store = self.store)]
    async fn failing(&self, request_id: &str, error: PaymentError) -> Result<u64, PaymentError> {
        self.executions.fetch_add(1, Ordering::SeqCst);
        Err(error)
    }

    #[steadfast::idempotent(key = id, store = self.store, cache_errors = "InvalidArgument|FailedPrecondition")]
    async fn failing_cached(&self, id: &str, error: PaymentError) -> Result<u64, PaymentError> {
        self.executions.fetch_add(1, Ordering::SeqCst);
        Err(error)
    }

    #[steadfast::idempotent(key = request_id, store = self.store)]
    async fn panicking(&self, request_id: &str, panic: bool) -> Result<u32, IdempotencyError> {
        let run = self.executions.fetch_add(1, Ordering::SeqCst) + 1;
        assert!(!panic, "the body panics");
        Ok(run)
    }

    #[steadfast::idempotent(key = request_id, store = self.store, ttl = "150ms", lease = "50ms")]
    async fn short_lived(&self, request_id: &str) -> Result<u32, IdempotencyError> {
        Ok(self.executions.fetch_add(1, Ordering::SeqCst) + 1)
    }

    #[steadfast::idempotent(key = request_id, store = self.store)]
    async fn optional_key(&self, request_id: Option<String>) -> Result<u32, IdempotencyError> {
        Ok(self.executions.fetch_add(1, Ordering::SeqCst) + 1)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, steadfast::Classify)]
enum PaymentError {
    #[code(InvalidArgument)]
    BadAmount(u64),
    #[code(Unavailable)]
    LedgerDown,
    #[code(FailedPrecondition)]
    Idempotency(String),
}

impl From<IdempotencyError> for PaymentError {
    fn from(error: IdempotencyError) -> PaymentError {
        PaymentError::Idempotency(error.to_string())
    }
}

#[tokio::test]
async fn sequential_duplicates_replay_the_first_result() {
    let ledger = Ledger::new();
    let first = ledger.deposit("d-1", 5).await.unwrap();
    for _ in 0..5 {
        assert_eq!(ledger.deposit("d-1", 5).await.unwrap(), first);
    }
    assert_eq!(ledger.executions(), 1);
    assert_ne!(
        ledger.deposit("d-2", 5).await.unwrap(),
        first,
        "another key runs on its own"
    );
    assert_eq!(ledger.executions(), 2);
}

#[tokio::test]
async fn a_concurrent_duplicate_is_rejected_while_the_first_runs() {
    let ledger = Ledger::new();
    let first = ledger.spawn_slow_reject("r-1");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let duplicate = ledger.slow_reject("r-1".into()).await.unwrap_err();
    assert!(
        matches!(duplicate, IdempotencyError::InProgress { .. }),
        "{duplicate}"
    );
    assert_eq!(duplicate.code(), Some(Code::Aborted));
    ledger.gate.notify_waiters();
    assert_eq!(first.await.unwrap().unwrap(), 1);
    assert_eq!(
        ledger.slow_reject("r-1".into()).await.unwrap(),
        1,
        "replayed after completion"
    );
    assert_eq!(ledger.executions(), 1);
}

#[tokio::test]
async fn concurrent_duplicates_wait_for_the_first_result() {
    let ledger = Ledger::new();
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let ledger = ledger.clone();
            tokio::spawn(async move { ledger.slow_wait("w-1".into()).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(30)).await;
    ledger.gate.notify_waiters();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap(), 1);
    }
    assert_eq!(ledger.executions(), 1);
}

#[tokio::test]
async fn scopes_never_meet() {
    let ledger = Ledger::new();
    assert_eq!(ledger.scoped("acme", "k").await.unwrap(), "acme:k");
    assert_eq!(ledger.scoped("globex", "k").await.unwrap(), "globex:k");
    assert_eq!(ledger.scoped("acme", "k").await.unwrap(), "acme:k");
    assert_eq!(ledger.executions(), 2);
}

#[tokio::test]
async fn a_reused_key_with_another_payload_is_refused() {
    let ledger = Ledger::new();
    assert_eq!(
        ledger.with_payload("p-1", "pay 5".into()).await.unwrap(),
        "pay 5"
    );
    let error = ledger
        .with_payload("p-1", "pay 500".into())
        .await
        .unwrap_err();
    assert!(
        matches!(error, IdempotencyError::PayloadMismatch),
        "{error}"
    );
    assert_eq!(
        ledger.with_payload("p-1", "pay 5".into()).await.unwrap(),
        "pay 5"
    );
    assert_eq!(ledger.executions(), 1);
}

#[tokio::test]
async fn errors_release_the_claim_unless_their_code_is_cached() {
    let ledger = Ledger::new();
    for _ in 0..3 {
        assert_eq!(
            ledger.failing("e-1", PaymentError::LedgerDown).await,
            Err(PaymentError::LedgerDown)
        );
    }
    assert_eq!(
        ledger.executions(),
        3,
        "an error released the claim each time"
    );

    let ledger = Ledger::new();
    for _ in 0..3 {
        let replayed = ledger
            .failing_cached("e-2", PaymentError::BadAmount(7))
            .await;
        assert_eq!(replayed, Err(PaymentError::BadAmount(7)));
    }
    assert_eq!(ledger.executions(), 1, "a cached error is replayed");
    for _ in 0..2 {
        assert_eq!(
            ledger.failing_cached("e-3", PaymentError::LedgerDown).await,
            Err(PaymentError::LedgerDown)
        );
    }
    assert_eq!(ledger.executions(), 3, "an uncached code still releases");
}

#[tokio::test]
async fn a_panic_in_the_body_releases_the_claim() {
    let ledger = Ledger::new();
    let panicked = tokio::spawn({
        let ledger = ledger.clone();
        async move { ledger.panicking("x-1", true).await }
    })
    .await;
    assert!(panicked.unwrap_err().is_panic());
    assert_eq!(
        ledger.panicking("x-1", false).await.unwrap(),
        2,
        "the retry runs"
    );
}

#[tokio::test]
async fn a_dropped_call_releases_the_claim() {
    let ledger = Ledger::new();
    let call = ledger.spawn_slow_reject("c-1");
    tokio::time::sleep(Duration::from_millis(20)).await;
    call.abort();
    assert!(call.await.unwrap_err().is_cancelled());
    let retried = ledger.spawn_slow_reject("c-1");
    tokio::time::sleep(Duration::from_millis(20)).await;
    ledger.gate.notify_waiters();
    assert_eq!(
        retried.await.unwrap().unwrap(),
        1,
        "not InProgress: the claim was released"
    );
}

#[tokio::test]
async fn results_expire_with_their_ttl() {
    let ledger = Ledger::new();
    assert_eq!(ledger.short_lived("t-1").await.unwrap(), 1);
    assert_eq!(ledger.short_lived("t-1").await.unwrap(), 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        ledger.short_lived("t-1").await.unwrap(),
        2,
        "expired: runs again"
    );
}

#[tokio::test]
async fn a_missing_or_oversized_key_is_refused_before_the_body() {
    let ledger = Ledger::new();
    assert!(matches!(
        ledger.optional_key(None).await,
        Err(IdempotencyError::MissingKey)
    ));
    assert!(matches!(
        ledger.optional_key(Some(String::new())).await,
        Err(IdempotencyError::MissingKey)
    ));
    let long = "k".repeat(256);
    assert!(matches!(
        ledger.optional_key(Some(long)).await,
        Err(IdempotencyError::KeyTooLong { length: 256 })
    ));
    assert_eq!(ledger.executions(), 0);
    assert_eq!(ledger.optional_key(Some("ok".into())).await.unwrap(), 1);
}

static STORE: LazyLock<MemoryStore> = LazyLock::new(MemoryStore::new);
static CALLS: AtomicU32 = AtomicU32::new(0);
static BODIES: AtomicU32 = AtomicU32::new(0);

/// Retries outside, idempotency inside: every attempt claims again, and
/// a failed attempt released its claim, so the body runs until it succeeds.
#[steadfast::retry(max = 3, backoff = "none")]
#[steadfast::idempotent(key = key, store = *STORE)]
async fn retried_then_deduplicated(key: &str) -> Result<u32, PaymentError> {
    let call = CALLS.fetch_add(1, Ordering::SeqCst) + 1;
    if call < 3 {
        return Err(PaymentError::LedgerDown);
    }
    Ok(BODIES.fetch_add(1, Ordering::SeqCst) + 1)
}

/// Idempotency outside, retries inside: one claim, one retry loop.
#[steadfast::idempotent(key = key, store = *STORE)]
#[steadfast::retry(max = 3, backoff = "none")]
async fn deduplicated_then_retried(key: &str, attempts: &AtomicU32) -> Result<u32, PaymentError> {
    let attempt = attempts.fetch_add(1, Ordering::SeqCst) + 1;
    if attempt < 3 {
        return Err(PaymentError::LedgerDown);
    }
    Ok(attempt)
}

#[tokio::test]
async fn stacks_with_retry_in_either_order() {
    assert_eq!(retried_then_deduplicated("s-1").await, Ok(1));
    assert_eq!(retried_then_deduplicated("s-1").await, Ok(1), "replayed");
    assert_eq!(CALLS.load(Ordering::SeqCst), 3);

    let attempts = AtomicU32::new(0);
    assert_eq!(deduplicated_then_retried("s-2", &attempts).await, Ok(3));
    assert_eq!(
        deduplicated_then_retried("s-2", &attempts).await,
        Ok(3),
        "replayed"
    );
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
}

/// Two handlers of the same name in one module, sharing a store and a
/// result type: their default scopes differ (the implementing type is part
/// of it), so a key used on one never replays the other's result.
mod same_names {
    use super::*;

    pub(super) static SHARED: LazyLock<MemoryStore> = LazyLock::new(MemoryStore::new);

    pub(super) struct Accounts;
    pub(super) struct Invoices;

    impl Accounts {
        #[steadfast::idempotent(key = id, store = SHARED)]
        pub(super) async fn create(&self, id: &str) -> Result<String, IdempotencyError> {
            Ok(format!("account {id}"))
        }
    }

    impl Invoices {
        #[steadfast::idempotent(key = id, store = SHARED)]
        pub(super) async fn create(&self, id: &str) -> Result<String, IdempotencyError> {
            Ok(format!("invoice {id}"))
        }
    }

    pub(super) trait Create {
        async fn create(&self, id: &str) -> Result<String, IdempotencyError>;
    }

    impl Create for Invoices {
        #[steadfast::idempotent(key = id, store = SHARED)]
        async fn create(&self, id: &str) -> Result<String, IdempotencyError> {
            Ok(format!("trait invoice {id}"))
        }
    }

    #[steadfast::idempotent(key = id, store = SHARED)]
    pub(super) async fn create(id: String) -> Result<String, IdempotencyError> {
        Ok(format!("free {id}"))
    }
}

#[tokio::test]
async fn same_named_handlers_in_one_module_never_share_records() {
    use same_names::{Accounts, Create, Invoices};
    assert_eq!(Accounts.create("k").await.unwrap(), "account k");
    assert_eq!(Invoices.create("k").await.unwrap(), "invoice k");
    assert_eq!(
        Create::create(&Invoices, "k").await.unwrap(),
        "trait invoice k"
    );
    assert_eq!(same_names::create("k".into()).await.unwrap(), "free k");
    assert_eq!(
        Accounts.create("k").await.unwrap(),
        "account k",
        "replayed, its own"
    );
    assert_eq!(same_names::SHARED.len(), 4, "four scopes, four records");
}

/// A result that counts how often it is decoded, and can be cloned.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct CountedReceipt {
    amount: u64,
}

static RECEIPT_DECODES: AtomicU32 = AtomicU32::new(0);

impl<'de> Deserialize<'de> for CountedReceipt {
    fn deserialize<D: serde::Deserializer<'de>>(decoder: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Fields {
            amount: u64,
        }
        RECEIPT_DECODES.fetch_add(1, Ordering::SeqCst);
        Fields::deserialize(decoder).map(|fields| CountedReceipt {
            amount: fields.amount,
        })
    }
}

static RECEIPTS: LazyLock<MemoryStore> = LazyLock::new(MemoryStore::new);

#[steadfast::idempotent(key = key, store = RECEIPTS)]
async fn receipt(key: &str, amount: u64) -> Result<CountedReceipt, IdempotencyError> {
    Ok(CountedReceipt { amount })
}

/// On a `MemoryStore`, a result that can be cloned is decoded once, by the
/// first replay; the next replays get clones of that value, equal to what
/// a decode gives.
#[tokio::test]
async fn replays_of_a_result_that_can_be_cloned_decode_it_once() {
    let first = receipt("r-1", 5).await.unwrap();
    // The first call works out the type's shape (a probing decode).
    let before = RECEIPT_DECODES.load(Ordering::SeqCst);
    for _ in 0..5 {
        assert_eq!(receipt("r-1", 6).await.unwrap(), first, "the first result");
    }
    assert_eq!(RECEIPT_DECODES.load(Ordering::SeqCst) - before, 1);
    // Another key's record keeps its own value.
    assert_eq!(receipt("r-2", 7).await.unwrap().amount, 7);
    assert_eq!(receipt("r-2", 8).await.unwrap().amount, 7);
    assert_eq!(RECEIPT_DECODES.load(Ordering::SeqCst) - before, 2);
}
