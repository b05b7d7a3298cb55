//! Behaviour of `#[retry]` under tokio's paused clock: exact schedules,
//! attempt counts, pushback, deadlines, timeouts, cancellation and the way
//! arguments reach each attempt.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use steadfast::{Classify, Code, RetryAfter, RetryBudget, RetryEvent};
use tokio::time::Instant;

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

/// An error with a code and an optional pushback.
#[derive(Debug, Clone, PartialEq)]
struct Failure {
    code: Code,
    pushback: Option<RetryAfter>,
}

impl Failure {
    fn new(code: Code) -> Failure {
        Failure {
            code,
            pushback: None,
        }
    }
}

impl Classify for Failure {
    fn code(&self) -> Option<Code> {
        Some(self.code)
    }

    fn retry_after(&self) -> Option<RetryAfter> {
        self.pushback
    }
}

/// The delays a call slept, recorded by its `notify` hook.
static SLEPT: Mutex<Vec<Duration>> = Mutex::new(Vec::new());

fn record(_: &Failure, event: RetryEvent) {
    SLEPT.lock().unwrap().push(event.delay);
}

fn take_slept() -> Vec<u128> {
    std::mem::take(&mut *SLEPT.lock().unwrap())
        .into_iter()
        .map(|d| d.as_millis())
        .collect()
}

/// Tests that read SLEPT run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

macro_rules! always_failing {
    ($name:ident, $($args:tt)*) => {
        #[steadfast::retry($($args)*, jitter = "none", notify = record)]
        async fn $name(attempts: &mut u32) -> Result<(), Failure> {
            *attempts += 1;
            Err(Failure::new(Code::Unavailable))
        }
    };
}

always_failing!(exp_schedule, max = 3, backoff = "exp(100ms)");
always_failing!(const_schedule, max = 3, backoff = "const(50ms)");
always_failing!(linear_schedule, max = 4, backoff = "linear(100ms)");
always_failing!(fib_schedule, max = 6, backoff = "fib(10ms)");
always_failing!(
    capped_schedule,
    max = 5,
    backoff = "exp(100ms, factor = 3, max = 1s)"
);
always_failing!(no_delay, max = 3, backoff = "none");

#[tokio::test(start_paused = true)]
async fn every_backoff_sleeps_its_exact_schedule_without_jitter() {
    let _serial = SERIAL.lock().await;
    let cases: [(&str, u32, Vec<u128>); 6] = [
        ("exp", 4, vec![100, 200, 400]),
        ("const", 4, vec![50, 50, 50]),
        ("linear", 5, vec![100, 200, 300, 400]),
        ("fib", 7, vec![10, 10, 20, 30, 50, 80]),
        ("capped", 6, vec![100, 300, 900, 1000, 1000]),
        ("none", 4, vec![0, 0, 0]),
    ];
    for (name, expected_attempts, expected_sleeps) in cases {
        let mut attempts = 0;
        let started = Instant::now();
        let result = match name {
            "exp" => exp_schedule(&mut attempts).await,
            "const" => const_schedule(&mut attempts).await,
            "linear" => linear_schedule(&mut attempts).await,
            "fib" => fib_schedule(&mut attempts).await,
            "capped" => capped_schedule(&mut attempts).await,
            _ => no_delay(&mut attempts).await,
        };
        assert_eq!(result, Err(Failure::new(Code::Unavailable)), "{name}");
        assert_eq!(attempts, expected_attempts, "{name}: attempts");
        let total: u128 = expected_sleeps.iter().sum();
        assert_eq!(take_slept(), expected_sleeps, "{name}: sleeps");
        assert_eq!(started.elapsed().as_millis(), total, "{name}: time");
    }
}

#[steadfast::retry(max = 3, backoff = "exp(100ms)", jitter = "full", notify = record)]
async fn jittered(attempts: &mut u32) -> Result<(), Failure> {
    *attempts += 1;
    Err(Failure::new(Code::Unavailable))
}

#[tokio::test(start_paused = true)]
async fn full_jitter_stays_under_the_schedule_and_varies() {
    let _serial = SERIAL.lock().await;
    let mut all = Vec::new();
    for _ in 0..200 {
        let mut attempts = 0;
        let _ = jittered(&mut attempts).await;
        let slept = take_slept();
        assert_eq!(slept.len(), 3);
        for (delay, bound) in slept.iter().zip([100, 200, 400]) {
            assert!(*delay <= bound, "{delay} > {bound}");
        }
        all.push(slept[2]);
    }
    all.sort_unstable();
    all.dedup();
    assert!(
        all.len() > 50,
        "delays vary from call to call: {} distinct",
        all.len()
    );
}

#[steadfast::retry(max = 5, backoff = "exp(1s)", jitter = "none", notify = record)]
async fn pushed_back(attempts: &mut u32, pushback: RetryAfter) -> Result<u32, Failure> {
    *attempts += 1;
    if *attempts < 3 {
        return Err(Failure {
            code: Code::Unavailable,
            pushback: Some(pushback),
        });
    }
    Ok(*attempts)
}

#[tokio::test(start_paused = true)]
async fn pushback_replaces_the_backoff_and_stop_ends_the_call() {
    let _serial = SERIAL.lock().await;
    let mut attempts = 0;
    let started = Instant::now();
    assert_eq!(
        pushed_back(&mut attempts, RetryAfter::Delay(ms(250))).await,
        Ok(3)
    );
    assert_eq!(take_slept(), [250, 250]);
    assert_eq!(started.elapsed(), ms(500));

    let mut attempts = 0;
    let result = pushed_back(&mut attempts, RetryAfter::Stop).await;
    assert_eq!(result.unwrap_err().pushback, Some(RetryAfter::Stop));
    assert_eq!(attempts, 1, "a pushback that says stop ends the call");
    assert!(take_slept().is_empty());
}

#[steadfast::retry(max = 3, backoff = "const(300ms)", jitter = "none", deadline = "1s")]
async fn slow_and_failing(attempts: &mut u32, work: Duration) -> Result<(), std::io::Error> {
    *attempts += 1;
    tokio::time::sleep(work).await;
    Err(std::io::ErrorKind::ConnectionRefused.into())
}

#[tokio::test(start_paused = true)]
async fn the_deadline_is_never_overslept() {
    // 100ms attempts, 300ms sleeps: attempts start at 0, 400, 800; the next
    // would start at 1200 > 1s, so no third sleep starts, though `max = 3`
    // allows a fourth attempt (the most whose sleeps end before the
    // deadline: a larger `max` would not compile).
    let mut attempts = 0;
    let started = Instant::now();
    let error = slow_and_failing(&mut attempts, ms(100)).await.unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused);
    assert_eq!(attempts, 3);
    assert_eq!(started.elapsed(), ms(900));

    // An attempt still running at the deadline is cut there.
    let mut attempts = 0;
    let started = Instant::now();
    let error = slow_and_failing(&mut attempts, ms(5000)).await.unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
    assert_eq!(error.code(), Some(Code::DeadlineExceeded));
    assert_eq!(attempts, 1);
    assert_eq!(started.elapsed(), ms(1000));
}

#[steadfast::retry(max = 2, backoff = "const(10ms)", jitter = "none", timeout = "1s")]
async fn hanging(attempts: &mut u32, hang: bool) -> Result<&'static str, tonic_free::Error> {
    *attempts += 1;
    if hang {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    Ok("answered")
}

/// An error enum whose timeout variant is derived.
mod tonic_free {
    #[derive(Debug, PartialEq, steadfast::Classify)]
    pub(crate) enum Error {
        #[code(DeadlineExceeded)]
        #[classify(timeout)]
        TimedOut,
    }
}

#[tokio::test(start_paused = true)]
async fn a_slow_attempt_becomes_deadline_exceeded_and_is_retried() {
    let mut attempts = 0;
    let started = Instant::now();
    assert_eq!(
        hanging(&mut attempts, true).await,
        Err(tonic_free::Error::TimedOut)
    );
    assert_eq!(attempts, 3);
    assert_eq!(started.elapsed(), ms(3020));
    let mut attempts = 0;
    assert_eq!(hanging(&mut attempts, false).await, Ok("answered"));
}

#[steadfast::retry(max = 3, backoff = "none")]
async fn rejected(attempts: &mut u32) -> Result<(), Failure> {
    *attempts += 1;
    Err(Failure::new(Code::InvalidArgument))
}

#[tokio::test]
async fn non_transient_errors_return_after_one_attempt() {
    let mut attempts = 0;
    assert_eq!(
        rejected(&mut attempts).await,
        Err(Failure::new(Code::InvalidArgument))
    );
    assert_eq!(attempts, 1);
}

#[steadfast::retry(max = 50, backoff = "const(1s)", jitter = "none")]
async fn counted_forever(attempts: Arc<AtomicU32>) -> Result<(), Failure> {
    attempts.fetch_add(1, Ordering::SeqCst);
    Err(Failure::new(Code::Unavailable))
}

#[tokio::test(start_paused = true)]
async fn dropping_the_future_cancels_the_loop() {
    let attempts = Arc::new(AtomicU32::new(0));
    let call = tokio::spawn(counted_forever(attempts.clone()));
    tokio::time::sleep(ms(2500)).await;
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
    call.abort();
    assert!(call.await.unwrap_err().is_cancelled());
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        3,
        "no attempt after the drop"
    );
    assert_eq!(Arc::strong_count(&attempts), 1, "the loop's state is gone");

    let attempts = Arc::new(AtomicU32::new(0));
    let timed_out = tokio::time::timeout(ms(1500), counted_forever(attempts.clone())).await;
    assert!(timed_out.is_err());
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
}

/// Counts its clones, to see what the expansion clones.
#[derive(Debug)]
struct Payload {
    clones: Arc<AtomicU32>,
    id: u32,
}

impl Clone for Payload {
    fn clone(&self) -> Payload {
        self.clones.fetch_add(1, Ordering::SeqCst);
        Payload {
            clones: self.clones.clone(),
            id: self.id,
        }
    }
}

#[steadfast::retry(max = 3, backoff = "none")]
async fn send(log: &mut Vec<u32>, payload: Payload, fail_until: usize) -> Result<usize, Failure> {
    // Consumes the payload: each attempt needs its own.
    let Payload { id, .. } = payload;
    log.push(id);
    if log.len() < fail_until {
        return Err(Failure::new(Code::Unavailable));
    }
    Ok(log.len())
}

#[tokio::test]
async fn owned_arguments_are_cloned_per_attempt_and_moved_into_the_last() {
    for (fail_until, expected_clones) in [(1, 1), (3, 3), (4, 3), (9, 3)] {
        let clones = Arc::new(AtomicU32::new(0));
        let mut log = Vec::new();
        let payload = Payload {
            clones: clones.clone(),
            id: 7,
        };
        let _ = send(&mut log, payload, fail_until).await;
        assert_eq!(
            log,
            vec![7; fail_until.min(4)],
            "&mut state is shared by attempts"
        );
        assert_eq!(
            clones.load(Ordering::SeqCst),
            expected_clones,
            "fail_until = {fail_until}"
        );
    }
}

fn parse_port(text: &str) -> Result<u16, Failure> {
    text.parse().map_err(|_| Failure::new(Code::Unavailable))
}

#[steadfast::retry(max = 3, backoff = "none")]
async fn question_mark(inputs: &mut Vec<&'static str>) -> Result<u16, Failure> {
    let next = inputs.pop().expect("an input per attempt");
    let port = parse_port(next)?;
    if port == 0 {
        return Err(Failure::new(Code::Unavailable));
    }
    Ok(port)
}

#[tokio::test]
async fn question_mark_and_return_end_one_attempt() {
    let mut inputs = vec!["8080", "0", "not a port"];
    assert_eq!(question_mark(&mut inputs).await, Ok(8080));
    assert!(inputs.is_empty());
}

static BUDGET: RetryBudget = RetryBudget::new(4, 1.0);

#[steadfast::retry(max = 10, backoff = "none", budget = BUDGET)]
async fn budgeted(attempts: &mut u32, succeed: bool) -> Result<(), Failure> {
    *attempts += 1;
    if succeed {
        Ok(())
    } else {
        Err(Failure::new(Code::Unavailable))
    }
}

#[tokio::test]
async fn an_empty_budget_stops_retries_and_successes_refill_it() {
    let mut attempts = 0;
    assert!(budgeted(&mut attempts, false).await.is_err());
    assert_eq!(
        attempts, 2,
        "4 tokens: a retry needs more than 2 left after the withdrawal"
    );
    let mut attempts = 0;
    assert!(budgeted(&mut attempts, false).await.is_err());
    assert_eq!(attempts, 1, "the budget is spent: no retry");
    for _ in 0..4 {
        budgeted(&mut 0, true).await.unwrap();
    }
    let mut attempts = 0;
    assert!(budgeted(&mut attempts, false).await.is_err());
    assert_eq!(attempts, 2, "successes refilled the budget");
}

#[allow(clippy::ptr_arg)] // the predicate receives `&E`, here `&String`
fn retry_conflicts(error: &String) -> bool {
    error.contains("conflict")
}

#[steadfast::retry(max = 3, backoff = "none", on = retry_conflicts)]
async fn predicate(attempts: &mut u32, message: &str) -> Result<(), String> {
    *attempts += 1;
    Err(message.to_owned())
}

#[tokio::test]
async fn a_predicate_decides_for_error_types_without_codes() {
    let mut attempts = 0;
    assert!(predicate(&mut attempts, "write conflict").await.is_err());
    assert_eq!(attempts, 4);
    let mut attempts = 0;
    assert!(predicate(&mut attempts, "bad input").await.is_err());
    assert_eq!(attempts, 1);
}

#[steadfast::retry(max = 2, backoff = "const(1ms)", jitter = "none")]
fn blocking(attempts: &mut u32) -> Result<u32, std::io::Error> {
    *attempts += 1;
    if *attempts < 3 {
        return Err(std::io::ErrorKind::ConnectionReset.into());
    }
    Ok(*attempts)
}

#[test]
fn blocking_fns_sleep_the_thread() {
    let mut attempts = 0;
    let started = std::time::Instant::now();
    assert_eq!(blocking(&mut attempts).unwrap(), 3);
    assert!(started.elapsed() >= ms(2));
}

struct Client {
    calls: u32,
    name: String,
}

impl Client {
    #[steadfast::retry(max = 2, backoff = "none")]
    async fn call(&mut self) -> Result<u32, Failure> {
        self.calls += 1;
        if self.calls < 2 {
            Err(Failure::new(Code::Unavailable))
        } else {
            Ok(self.calls)
        }
    }

    #[steadfast::retry(max = 2, backoff = "none")]
    async fn describe(&self, suffix: &str) -> Result<String, Failure> {
        Ok(format!("{}{suffix}", self.name))
    }
}

#[tokio::test]
async fn methods_keep_their_receivers() {
    let mut client = Client {
        calls: 0,
        name: "ledger".into(),
    };
    assert_eq!(client.call().await, Ok(2));
    assert_eq!(client.describe("-v1").await.unwrap(), "ledger-v1");
}

#[tokio::test(start_paused = true)]
async fn the_run_api_is_the_same_engine() {
    let policy = steadfast::RetryPolicy::builder()
        .max_retries(2)
        .backoff("const(100ms)")
        .jitter("none")
        .timeout(ms(50))
        .build()
        .unwrap();
    let attempts = AtomicU32::new(0);
    let started = Instant::now();
    let result: Result<(), std::io::Error> = policy
        .run_timed(|| async {
            attempts.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok(())
        })
        .await;
    assert_eq!(result.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
    assert_eq!(started.elapsed(), ms(3 * 50 + 2 * 100));
}

#[steadfast::retry(max = 2, backoff = "none", timeout = "1s", deadline = "5s")]
async fn generic_send<C>(client: &mut C, request: String) -> Result<usize, std::io::Error>
where
    C: Extend<String> + Send,
{
    client.extend([request.clone()]);
    tokio::task::yield_now().await;
    Ok(request.len())
}

fn assert_send<T: Send>(value: T) -> T {
    value
}

#[tokio::test]
async fn retried_futures_are_send_and_spawnable() {
    let handle = tokio::spawn(async {
        let mut sent = Vec::new();
        let length = assert_send(generic_send(&mut sent, "hello".to_owned())).await;
        (length.unwrap(), sent)
    });
    assert_eq!(handle.await.unwrap(), (5, vec!["hello".to_owned()]));
}
