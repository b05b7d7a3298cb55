//! The retry-storm experiment: how much load a failing server receives from
//! clients that retry, with no budget and with each of the budgets.
//!
//! ```text
//! cargo run --release --example storm
//! ```
//!
//! 100 clients each make 100 calls, one after another with 50 ms between
//! them, against one server that fails a share of the attempts it receives
//! (0 %, 10 %, 50 %, 90 %, 100 %). Every call is a `#[steadfast::retry(max =
//! 3)]` fn. For each strategy and failure rate the experiment prints the
//! load amplification (attempts the server received ÷ calls the clients
//! made) and the share of calls that failed, as markdown tables, and writes
//! the amplification as an SVG plot to `docs/storm.svg`.
//!
//! The server is a plain async fn behind a fake network delay, not a tonic
//! service: what is measured is the retry policy's behaviour, which does not
//! depend on the transport, and a plain fn can run on tokio's paused clock,
//! where time only moves when every task waits. The whole experiment then
//! takes well under a second of real time for minutes of simulated time,
//! and the same run gives the same figures: the server fails attempts by a
//! hash of their sequence number, and the clients' backoff has no jitter.
//!
//! One attempt in ten is slow (40 ms instead of 2 ms on the way in), so that
//! hedging after 10 ms hedges about one call in ten. To add a strategy, add
//! a variant to [`Strategy`] and say in [`Strategy::call`] how it makes one
//! call.

use std::{
    fmt::Write as _,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use steadfast::{Budget, Code, RatioBudget, RetryBudget};

const CLIENTS: u64 = 100;
const CALLS_PER_CLIENT: u64 = 100;
/// Between one client's calls.
const THINK_TIME: Duration = Duration::from_millis(50);
/// Each way, for every attempt.
const NETWORK_DELAY: Duration = Duration::from_millis(2);
const FAILURE_RATES: [u32; 5] = [0, 10, 50, 90, 100];
/// The share of attempts (%) the server answers slowly, and how slowly.
const SLOW_SHARE: u64 = 10;
const SLOW_DELAY: Duration = Duration::from_millis(40);
/// Draws the slow attempts independently of the failing ones.
const SLOW_SALT: u64 = 0x5eed;

/// How the clients retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strategy {
    /// `max = 3`, nothing else: every failure is retried.
    NoBudget,
    /// `max = 3` with one shared `RetryBudget::default()` (gRPC throttling:
    /// 10 tokens, 0.1 back per success).
    RetryBudget,
    /// `max = 3` with one shared `RatioBudget::new(5.0)` (5 % of the calls
    /// over 10 s, plus 10 retries a second).
    RatioBudget,
    /// `max = 3`, `hedge = "10ms"` (the server's 90th percentile is 4 ms,
    /// so about one call in ten is hedged) with one shared
    /// `RetryBudget::default()`, which pays for every hedge.
    Hedging,
}

impl Strategy {
    const ALL: [Strategy; 4] = [
        Strategy::NoBudget,
        Strategy::RetryBudget,
        Strategy::RatioBudget,
        Strategy::Hedging,
    ];

    fn name(self) -> &'static str {
        match self {
            Strategy::NoBudget => "no budget",
            Strategy::RetryBudget => "`RetryBudget` (10, 0.1)",
            Strategy::RatioBudget => "`RatioBudget` (5 %, 10/s)",
            Strategy::Hedging => "hedging (10 % hedged) + `RetryBudget`",
        }
    }

    /// The colour of its line in the plot.
    fn colour(self) -> &'static str {
        match self {
            Strategy::NoBudget => "#d62728",
            Strategy::RetryBudget => "#1f77b4",
            Strategy::RatioBudget => "#2ca02c",
            Strategy::Hedging => "#9467bd",
        }
    }

    /// The budget all the clients share.
    fn budget(self) -> Arc<dyn Budget> {
        match self {
            Strategy::NoBudget => Arc::new(None::<RetryBudget>),
            Strategy::RetryBudget | Strategy::Hedging => Arc::new(RetryBudget::default()),
            Strategy::RatioBudget => Arc::new(RatioBudget::new(5.0)),
        }
    }

    /// One call, with its retries.
    async fn call(self, server: &Server, budget: &Arc<dyn Budget>) -> Result<(), Code> {
        match self {
            Strategy::NoBudget | Strategy::RetryBudget | Strategy::RatioBudget => {
                retried(server, budget).await
            }
            Strategy::Hedging => hedged(server, budget).await,
        }
    }
}

#[steadfast::retry(max = 3, backoff = "exp(10ms, max = 200ms)", jitter = "none", budget = budget)]
async fn retried(server: &Server, budget: &Arc<dyn Budget>) -> Result<(), Code> {
    server.handle().await
}

#[steadfast::retry(
    max = 3,
    backoff = "exp(10ms, max = 200ms)",
    jitter = "none",
    budget = budget,
    hedge = "10ms"
)]
async fn hedged(server: &Server, budget: &Arc<dyn Budget>) -> Result<(), Code> {
    server.handle().await
}

/// The server: fails `failure_rate` % of the attempts it receives, and
/// answers one attempt in ten slowly (its tail, which hedging cuts).
#[derive(Debug)]
struct Server {
    failure_rate: u32,
    received: AtomicU64,
}

impl Server {
    async fn handle(&self) -> Result<(), Code> {
        let sequence = self.received.fetch_add(1, Ordering::Relaxed);
        let slow = mix(sequence ^ SLOW_SALT) % 100 < SLOW_SHARE;
        tokio::time::sleep(if slow { SLOW_DELAY } else { NETWORK_DELAY }).await;
        let fails = (mix(sequence) % 100) < u64::from(self.failure_rate);
        tokio::time::sleep(NETWORK_DELAY).await;
        if fails {
            Err(Code::Unavailable)
        } else {
            Ok(())
        }
    }
}

/// SplitMix64's finalizer: a well-spread hash of the attempt's number.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// What one run measured.
#[derive(Debug, Clone, Copy)]
struct Outcome {
    calls: u64,
    attempts: u64,
    failed_calls: u64,
}

impl Outcome {
    fn amplification(&self) -> f64 {
        self.attempts as f64 / self.calls as f64
    }

    fn failed_share(&self) -> f64 {
        self.failed_calls as f64 / self.calls as f64
    }
}

/// 100 clients, 100 calls each, against a server failing `failure_rate` %.
async fn run(strategy: Strategy, failure_rate: u32) -> Outcome {
    let budget = strategy.budget();
    let server = Arc::new(Server {
        failure_rate,
        received: AtomicU64::new(0),
    });
    let failed_calls = Arc::new(AtomicU64::new(0));
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..CLIENTS {
        let (server, budget, failed_calls) = (server.clone(), budget.clone(), failed_calls.clone());
        clients.spawn(async move {
            // Start a millisecond apart, so that clients do not move in step.
            tokio::time::sleep(Duration::from_millis(client)).await;
            for _ in 0..CALLS_PER_CLIENT {
                if strategy.call(&server, &budget).await.is_err() {
                    failed_calls.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(THINK_TIME).await;
            }
        });
    }
    while let Some(client) = clients.join_next().await {
        client.expect("a client does not panic");
    }
    Outcome {
        calls: CLIENTS * CALLS_PER_CLIENT,
        attempts: server.received.load(Ordering::Relaxed),
        failed_calls: failed_calls.load(Ordering::Relaxed),
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime");
    let results: Vec<(Strategy, Vec<Outcome>)> = Strategy::ALL
        .iter()
        .map(|&strategy| {
            let outcomes = FAILURE_RATES
                .iter()
                .map(|&rate| runtime.block_on(run(strategy, rate)))
                .collect();
            (strategy, outcomes)
        })
        .collect();

    println!(
        "{CLIENTS} clients × {CALLS_PER_CLIENT} calls, `#[retry(max = 3)]`: attempts the server received ÷ calls made\n"
    );
    print!(
        "{}",
        table(&results, |outcome| format!(
            "{:.2}×",
            outcome.amplification()
        ))
    );
    println!("\ncalls that failed (the caller got an error)\n");
    print!(
        "{}",
        table(&results, |outcome| format!(
            "{:.1} %",
            outcome.failed_share() * 100.0
        ))
    );
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/storm.svg");
    std::fs::create_dir_all(concat!(env!("CARGO_MANIFEST_DIR"), "/docs")).expect("docs/");
    std::fs::write(path, plot(&results)).expect("docs/storm.svg is writable");
    println!("\nplot written to docs/storm.svg");
}

/// A markdown table: one row per strategy, one column per failure rate.
fn table(results: &[(Strategy, Vec<Outcome>)], cell: impl Fn(&Outcome) -> String) -> String {
    let mut out = String::from("| strategy |");
    for rate in FAILURE_RATES {
        let _ = write!(out, " {rate} % failing |");
    }
    out.push_str("\n|---|");
    out.push_str(&"---:|".repeat(FAILURE_RATES.len()));
    out.push('\n');
    for (strategy, outcomes) in results {
        let _ = write!(out, "| {} |", strategy.name());
        for outcome in outcomes {
            let text = cell(outcome);
            let _ = write!(out, " {text} |");
        }
        out.push('\n');
    }
    out
}

/// The amplification against the failure rate, one line per strategy, as a
/// hand-written SVG.
fn plot(results: &[(Strategy, Vec<Outcome>)]) -> String {
    const WIDTH: f64 = 760.0;
    const HEIGHT: f64 = 400.0;
    const LEFT: f64 = 60.0;
    const RIGHT: f64 = 300.0;
    const TOP: f64 = 40.0;
    const BOTTOM: f64 = 50.0;
    const Y_MAX: f64 = 4.5;
    let x = |rate: f64| LEFT + rate / 100.0 * (WIDTH - LEFT - RIGHT);
    let y = |amplification: f64| {
        HEIGHT - BOTTOM - (amplification - 1.0) / (Y_MAX - 1.0) * (HEIGHT - TOP - BOTTOM)
    };
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="22" text-anchor="middle" font-size="14">Load on a failing server: attempts ÷ calls (100 clients, max = 3)</text>
"#,
        WIDTH / 2.0
    );
    // Grid and axes.
    for tick in [1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5] {
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{0:.1}" x2="{1:.1}" y2="{0:.1}" stroke="#ddd"/><text x="{2}" y="{3:.1}" text-anchor="end">{tick:.1}×</text>"##,
            y(tick),
            WIDTH - RIGHT,
            LEFT - 6.0,
            y(tick) + 4.0,
        );
    }
    for rate in FAILURE_RATES {
        let _ = writeln!(
            svg,
            r##"<line x1="{0:.1}" y1="{TOP}" x2="{0:.1}" y2="{1}" stroke="#eee"/><text x="{0:.1}" y="{2}" text-anchor="middle">{rate} %</text>"##,
            x(f64::from(rate)),
            HEIGHT - BOTTOM,
            HEIGHT - BOTTOM + 18.0,
        );
    }
    let _ = writeln!(
        svg,
        r##"<line x1="{LEFT}" y1="{0}" x2="{1}" y2="{0}" stroke="black"/><line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{0}" stroke="black"/>
<text x="{2:.1}" y="{3}" text-anchor="middle">share of attempts the server fails</text>"##,
        HEIGHT - BOTTOM,
        WIDTH - RIGHT,
        x(50.0),
        HEIGHT - 12.0,
    );
    // One line per measured strategy, with its legend entry.
    for (index, (strategy, outcomes)) in results.iter().enumerate() {
        let points: Vec<(f64, f64)> = FAILURE_RATES
            .iter()
            .zip(outcomes)
            .map(|(rate, outcome)| (x(f64::from(*rate)), y(outcome.amplification())))
            .collect();
        let legend_y = TOP + 20.0 + index as f64 * 22.0;
        let legend_x = WIDTH - RIGHT + 16.0;
        let colour = strategy.colour();
        let name = strategy.name().replace('`', "");
        let path: Vec<String> = points
            .iter()
            .map(|(px, py)| format!("{px:.1},{py:.1}"))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
            path.join(" ")
        );
        for (px, py) in &points {
            let _ = writeln!(
                svg,
                r#"<circle cx="{px:.1}" cy="{py:.1}" r="3.5" fill="{colour}"/>"#
            );
        }
        let _ = writeln!(
            svg,
            r#"<line x1="{legend_x}" y1="{legend_y:.1}" x2="{:.1}" y2="{legend_y:.1}" stroke="{colour}" stroke-width="2"/><text x="{:.1}" y="{:.1}">{name}</text>"#,
            legend_x + 20.0,
            legend_x + 26.0,
            legend_y + 4.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}
