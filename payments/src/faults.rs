//! Seeded fault injection: a tower layer in front of the ledger service.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use tokio::sync::Notify;
use tonic::{Code, Status};

/// The faults the layer injects, each as likely as the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `Unavailable` before the handler runs: nothing happened.
    Refuse,
    /// The handler runs (the money moves), then the response is dropped and
    /// the client sees `Unavailable`: the dangerous case a retry must not
    /// turn into a second payment.
    DropResponse,
    /// The handler runs, then the response waits past the client's
    /// per-attempt timeout: the client gives up on it (`DeadlineExceeded`).
    Delay,
    /// `ResourceExhausted` with `grpc-retry-pushback-ms`, before the handler.
    Exhaust,
}

impl Fault {
    /// Every kind, in summary order.
    pub const ALL: [Fault; 4] = [
        Fault::Refuse,
        Fault::DropResponse,
        Fault::Delay,
        Fault::Exhaust,
    ];

    /// What a summary calls it.
    pub fn describe(self) -> &'static str {
        match self {
            Fault::Refuse => "refused before the handler (Unavailable)",
            Fault::DropResponse => "ran, response dropped (Unavailable)",
            Fault::Delay => "ran, answered past the timeout",
            Fault::Exhaust => "ResourceExhausted + pushback",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// How often and how the layer injects faults.
///
/// ```
/// use std::time::Duration;
/// use steadfast_payments::FaultPlan;
///
/// let plan = FaultPlan::new(0.3, 42).with_delay(Duration::from_millis(400));
/// assert_eq!(plan.rate(), 0.3);
/// ```
pub struct FaultPlan {
    rate: f64,
    rng: Mutex<fastrand::Rng>,
    delay: Duration,
    pushback: Duration,
    injected: [AtomicU64; 4],
    outcomes: Outcomes,
    stalls: Mutex<Vec<Arc<Stall>>>,
}

/// Where in the handler a [`Stall`] freezes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StallPoint {
    /// Inside the money's transaction, before the fence and the commit:
    /// the claim is held, nothing is committed.
    BeforeCommit,
    /// After the commit (money moved, claim fenced), before the result is
    /// stored.
    AfterCommit,
}

/// A handler frozen on purpose, once: the payment `payment_id` stops at
/// `point` and never goes on, as on a replica that hangs until it is killed.
///
/// ```
/// use steadfast_payments::{FaultPlan, StallPoint};
///
/// let plan = FaultPlan::new(0.0, 1);
/// let stall = plan.stall("run-000001", StallPoint::BeforeCommit);
/// assert!(stall.is_armed());
/// ```
#[derive(Debug)]
pub struct Stall {
    payment_id: String,
    point: StallPoint,
    armed: std::sync::atomic::AtomicBool,
    reached: Notify,
}

impl Stall {
    /// Waits until a handler has frozen here.
    pub async fn reached(&self) {
        self.reached.notified().await;
    }

    /// Whether no handler has frozen here yet.
    pub fn is_armed(&self) -> bool {
        self.armed.load(Ordering::SeqCst)
    }
}

/// What the handlers answered, as the layer saw it (before any fault).
#[derive(Debug, Default)]
struct Outcomes {
    ok: AtomicU64,
    aborted: AtomicU64,
}

impl fmt::Debug for FaultPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultPlan")
            .field("rate", &self.rate)
            .field("delay", &self.delay)
            .field("pushback", &self.pushback)
            .finish_non_exhaustive()
    }
}

impl FaultPlan {
    /// Faults on a `rate` share of calls (0 to 1), drawn from `seed`; the
    /// delay defaults to 400 ms, the pushback to 20 ms.
    pub fn new(rate: f64, seed: u64) -> FaultPlan {
        FaultPlan {
            rate: rate.clamp(0.0, 1.0),
            rng: Mutex::new(fastrand::Rng::with_seed(seed)),
            delay: Duration::from_millis(400),
            pushback: Duration::from_millis(20),
            injected: Default::default(),
            outcomes: Outcomes::default(),
            stalls: Mutex::default(),
        }
    }

    /// Freezes the first handler of `payment_id` that reaches `point`.
    pub fn stall(&self, payment_id: &str, point: StallPoint) -> Arc<Stall> {
        let stall = Arc::new(Stall {
            payment_id: payment_id.to_owned(),
            point,
            armed: true.into(),
            reached: Notify::new(),
        });
        self.stalls.lock().expect("stalls").push(stall.clone());
        stall
    }

    /// Never returns if a stall is armed for `payment_id` at `point`.
    pub(crate) async fn maybe_stall(&self, payment_id: &str, point: StallPoint) {
        let stall = self
            .stalls
            .lock()
            .expect("stalls")
            .iter()
            .find(|stall| stall.payment_id == payment_id && stall.point == point)
            .cloned();
        if let Some(stall) = stall
            && stall.armed.swap(false, Ordering::SeqCst)
        {
            stall.reached.notify_one();
            std::future::pending::<()>().await;
        }
    }

    /// How long a [`Fault::Delay`] holds the response (longer than the
    /// client's per-attempt timeout).
    pub fn with_delay(mut self, delay: Duration) -> FaultPlan {
        self.delay = delay;
        self
    }

    /// The share of calls that get a fault.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// How many faults of `kind` were injected.
    pub fn injected(&self, kind: Fault) -> u64 {
        self.injected[kind.index()].load(Ordering::Relaxed)
    }

    /// Handler answers that were OK (fresh executions and replays).
    pub fn handler_ok(&self) -> u64 {
        self.outcomes.ok.load(Ordering::Relaxed)
    }

    /// Handler answers that were `Aborted`: duplicates that arrived while
    /// the first was still running (in-progress rejections).
    pub fn handler_aborted(&self) -> u64 {
        self.outcomes.aborted.load(Ordering::Relaxed)
    }

    /// Every count so far, as one [`ServerTally`].
    pub fn tally(&self) -> ServerTally {
        ServerTally {
            injected: Fault::ALL.map(|kind| self.injected(kind)),
            handler_ok: self.handler_ok(),
            handler_aborted: self.handler_aborted(),
        }
    }

    fn draw(&self) -> Option<Fault> {
        let mut rng = self.rng.lock().expect("fault rng");
        (rng.f64() < self.rate).then(|| Fault::ALL[rng.usize(..Fault::ALL.len())])
    }

    fn count(&self, fault: Fault) {
        self.injected[fault.index()].fetch_add(1, Ordering::Relaxed);
    }

    fn observe<B>(&self, response: &http::Response<B>) {
        let code = response
            .headers()
            .get("grpc-status")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<i32>().ok())
            .map_or(Code::Ok, Code::from_i32);
        match code {
            Code::Ok => self.outcomes.ok.fetch_add(1, Ordering::Relaxed),
            Code::Aborted => self.outcomes.aborted.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
    }
}

/// What the fault layers of a cluster counted: faults injected by kind (in
/// [`Fault::ALL`] order) and the handlers' answers. Replicas that run as
/// processes print theirs as a line (its `Display`), which the parent
/// parses back (`FromStr`) and sums.
///
/// ```
/// use steadfast_payments::{Fault, FaultPlan, ServerTally};
///
/// let tally = ServerTally { injected: [1, 2, 3, 4], handler_ok: 5, handler_aborted: 6 };
/// let line = tally.to_string();
/// assert_eq!(line, "tally 1 2 3 4 5 6");
/// assert_eq!(line.parse::<ServerTally>(), Ok(tally));
/// assert_eq!((tally + tally).injected(Fault::Delay), 6);
/// assert_eq!(FaultPlan::new(0.0, 1).tally(), ServerTally::default());
/// ```
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ServerTally {
    /// Faults injected, by kind, in [`Fault::ALL`] order.
    pub injected: [u64; 4],
    /// Handler answers that were OK (fresh executions and replays).
    pub handler_ok: u64,
    /// Handler answers that were `Aborted` (in-progress rejections).
    pub handler_aborted: u64,
}

impl ServerTally {
    /// Faults of `kind` injected.
    pub fn injected(&self, kind: Fault) -> u64 {
        self.injected[kind.index()]
    }
}

impl std::ops::Add for ServerTally {
    type Output = ServerTally;

    fn add(self, other: ServerTally) -> ServerTally {
        ServerTally {
            injected: std::array::from_fn(|index| self.injected[index] + other.injected[index]),
            handler_ok: self.handler_ok + other.handler_ok,
            handler_aborted: self.handler_aborted + other.handler_aborted,
        }
    }
}

impl std::iter::Sum for ServerTally {
    fn sum<I: Iterator<Item = ServerTally>>(tallies: I) -> ServerTally {
        tallies.fold(ServerTally::default(), |sum, tally| sum + tally)
    }
}

impl fmt::Display for ServerTally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tally")?;
        for count in self
            .injected
            .iter()
            .chain([&self.handler_ok, &self.handler_aborted])
        {
            write!(f, " {count}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for ServerTally {
    type Err = String;

    fn from_str(line: &str) -> Result<ServerTally, String> {
        let bad = || format!("not a tally line: {line:?}");
        let mut words = line.split_whitespace();
        if words.next() != Some("tally") {
            return Err(bad());
        }
        let counts: Vec<u64> = words
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map_err(|_| bad())?;
        let [a, b, c, d, handler_ok, handler_aborted] = counts[..] else {
            return Err(bad());
        };
        Ok(ServerTally {
            injected: [a, b, c, d],
            handler_ok,
            handler_aborted,
        })
    }
}

/// The tower layer: `Server::builder().layer(FaultLayer::new(plan))`.
#[derive(Debug, Clone)]
pub struct FaultLayer {
    plan: Arc<FaultPlan>,
}

impl FaultLayer {
    /// A layer injecting `plan`'s faults.
    pub fn new(plan: Arc<FaultPlan>) -> FaultLayer {
        FaultLayer { plan }
    }
}

impl<S> tower_layer::Layer<S> for FaultLayer {
    type Service = FaultService<S>;

    fn layer(&self, inner: S) -> FaultService<S> {
        FaultService {
            inner,
            plan: self.plan.clone(),
        }
    }
}

/// The service [`FaultLayer`] wraps around the ledger.
#[derive(Debug, Clone)]
pub struct FaultService<S> {
    inner: S,
    plan: Arc<FaultPlan>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody, ResBody> tower_service::Service<http::Request<ReqBody>> for FaultService<S>
where
    S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        // The ready clone serves this call; a fresh clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let plan = self.plan.clone();
        let fault = plan.draw();
        Box::pin(async move {
            match fault {
                Some(Fault::Refuse) => {
                    plan.count(Fault::Refuse);
                    Ok(
                        Status::unavailable("injected fault: refused before the handler")
                            .into_http(),
                    )
                }
                Some(Fault::Exhaust) => {
                    plan.count(Fault::Exhaust);
                    let mut status = Status::resource_exhausted("injected fault: overloaded");
                    let millis = plan.pushback.as_millis().to_string();
                    if let Ok(value) = millis.parse() {
                        status
                            .metadata_mut()
                            .insert("grpc-retry-pushback-ms", value);
                    }
                    Ok(status.into_http())
                }
                Some(Fault::DropResponse) => {
                    let response = inner.call(request).await?;
                    plan.observe(&response);
                    plan.count(Fault::DropResponse);
                    drop(response);
                    Ok(Status::unavailable("injected fault: response lost").into_http())
                }
                Some(Fault::Delay) => {
                    let response = inner.call(request).await?;
                    plan.observe(&response);
                    plan.count(Fault::Delay);
                    tokio::time::sleep(plan.delay).await;
                    Ok(response)
                }
                None => {
                    let response = inner.call(request).await?;
                    plan.observe(&response);
                    Ok(response)
                }
            }
        })
    }
}
