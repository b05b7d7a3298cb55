//! The HTTP pair: an axum transfer service behind `IdempotencyLayer`, and a
//! reqwest client whose calls carry `#[retry]`, with a fault injector
//! between them that refuses requests, loses responses after the money
//! moved, and throttles with `Retry-After`.
//!
//! ```text
//! cargo run --example http --features axum,reqwest
//! cargo run --example http --features axum,reqwest -- --transfers 500 --fault-rate 0.4 --seed 7
//! ```
//!
//! Flags: `--transfers N` (300), `--fault-rate P` (0.3), `--seed S` (1).
//! Exits with status 1 if a transfer ran twice or the balances are wrong,
//! 2 on bad flags.

use std::{
    collections::BTreeMap,
    process::ExitCode,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use axum::{
    Json, Router,
    extract::{Request, State},
    http::{
        Method, StatusCode,
        header::{CONTENT_TYPE, LOCATION, RETRY_AFTER},
    },
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::{Deserialize, Serialize};
use steadfast::{
    http::HttpError,
    idempotency::{IDEMPOTENCY_REPLAYED, IdempotencyLayer, SqliteStore},
    retry,
};

const ACCOUNTS: [&str; 4] = ["alice", "bob", "carol", "dave"];
const OPENING_BALANCE: i64 = 1_000_000;

/// A transfer request, as the client sends it (the body of `POST /transfers`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Transfer {
    from: String,
    to: String,
    cents: i64,
}

/// The service's answer to a transfer.
#[derive(Debug, Serialize, Deserialize)]
struct Receipt {
    transfer: u64,
    from_balance: i64,
}

/// The service's books, in memory: the point is how often a transfer runs.
struct Books {
    balances: Mutex<BTreeMap<String, i64>>,
    executions: AtomicU64,
}

async fn transfer(State(books): State<Arc<Books>>, Json(transfer): Json<Transfer>) -> Response {
    let mut balances = books.balances.lock().expect("books lock");
    if transfer.cents <= 0 || !balances.contains_key(&transfer.to) {
        return (
            StatusCode::BAD_REQUEST,
            "unknown account or non-positive amount",
        )
            .into_response();
    }
    let Some(from) = balances.get_mut(&transfer.from) else {
        return (StatusCode::BAD_REQUEST, "unknown account").into_response();
    };
    *from -= transfer.cents;
    let from_balance = *from;
    *balances.get_mut(&transfer.to).expect("checked above") += transfer.cents;
    let number = books.executions.fetch_add(1, Ordering::SeqCst) + 1;
    let receipt = Receipt {
        transfer: number,
        from_balance,
    };
    (
        StatusCode::CREATED,
        [(LOCATION, format!("/transfers/{number}"))],
        Json(receipt),
    )
        .into_response()
}

async fn balances(State(books): State<Arc<Books>>) -> Json<BTreeMap<String, i64>> {
    Json(books.balances.lock().expect("books lock").clone())
}

/// The injected faults, counted by kind.
#[derive(Default)]
struct Faults {
    rate: f64,
    rng: Mutex<Option<fastrand::Rng>>,
    refused: AtomicU64,
    lost: AtomicU64,
    throttled: AtomicU64,
}

/// In front of the idempotency layer, on writes: refuse (503 before anything runs),
/// lose the response (the transfer ran; the client sees 503), or throttle
/// (429 with `Retry-After: 1`, rarely: it costs a second).
async fn inject_faults(
    State(faults): State<Arc<Faults>>,
    request: Request,
    next: Next,
) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let draw = {
        let mut rng = faults.rng.lock().expect("fault rng lock");
        rng.as_mut().map_or(1.0, fastrand::Rng::f64)
    };
    if draw >= faults.rate {
        return next.run(request).await;
    }
    let kind = draw / faults.rate;
    if kind < 0.45 {
        faults.refused.fetch_add(1, Ordering::Relaxed);
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "refused by the fault injector",
        )
            .into_response()
    } else if kind < 0.9 {
        let _ran = next.run(request).await;
        faults.lost.fetch_add(1, Ordering::Relaxed);
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "response lost by the fault injector",
        )
            .into_response()
    } else {
        faults.throttled.fetch_add(1, Ordering::Relaxed);
        (
            StatusCode::TOO_MANY_REQUESTS,
            [(RETRY_AFTER, "1")],
            "throttled",
        )
            .into_response()
    }
}

/// What the client saw.
#[derive(Default)]
struct ClientStats {
    attempts: AtomicU64,
    replays: AtomicU64,
}

/// One transfer. The key is made once per logical transfer by the caller;
/// the body is rebuilt on every attempt; a `429` or `503` with `Retry-After`
/// waits as long as the server asked.
#[retry(
    max = 20,
    backoff = "exp(10ms, max = 500ms)",
    timeout = "5s",
    deadline = "60s",
    on = "Unavailable|DeadlineExceeded|ResourceExhausted|Aborted"
)]
async fn send_transfer(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    transfer: &Transfer,
    stats: &ClientStats,
) -> Result<Receipt, HttpError> {
    stats.attempts.fetch_add(1, Ordering::Relaxed);
    let body = serde_json::to_vec(transfer).expect("a transfer serializes");
    let response = client
        .post(url)
        .header("Idempotency-Key", key)
        .header(CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await?;
    let response = HttpError::check(response)?;
    if response.headers().contains_key(IDEMPOTENCY_REPLAYED) {
        stats.replays.fetch_add(1, Ordering::Relaxed);
    }
    let bytes = response.bytes().await?;
    serde_json::from_slice(&bytes)
        .map_err(|error| HttpError::new(format!("not a receipt: {error}")))
}

struct Flags {
    transfers: u64,
    fault_rate: f64,
    seed: u64,
}

fn parse_flags(mut args: impl Iterator<Item = String>) -> Result<Flags, String> {
    let mut flags = Flags {
        transfers: 300,
        fault_rate: 0.3,
        seed: 1,
    };
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |error: &dyn std::fmt::Display| format!("{flag} {value}: {error}");
        match flag.as_str() {
            "--transfers" => flags.transfers = value.parse().map_err(|e| bad(&e))?,
            "--fault-rate" => {
                flags.fault_rate = value.parse().map_err(|e| bad(&e))?;
                if !(0.0..1.0).contains(&flags.fault_rate) {
                    return Err(bad(&"a rate in [0, 1)"));
                }
            }
            "--seed" => flags.seed = value.parse().map_err(|e| bad(&e))?,
            _ => {
                return Err(format!(
                    "unknown flag {flag}; flags: --transfers N --fault-rate P --seed S"
                ));
            }
        }
    }
    Ok(flags)
}

#[tokio::main]
async fn main() -> Result<ExitCode, Box<dyn std::error::Error>> {
    let flags = match parse_flags(std::env::args().skip(1)) {
        Ok(flags) => flags,
        Err(message) => {
            eprintln!("{message}");
            return Ok(ExitCode::from(2));
        }
    };

    // The server: the idempotency records in a SQLite file.
    let dir = std::env::temp_dir().join(format!("steadfast-http-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let store = SqliteStore::connect(&format!(
        "sqlite:{}?mode=rwc",
        dir.join("idempotency.db").display()
    ))
    .await?;
    store.migrate().await?;
    let books = Arc::new(Books {
        balances: Mutex::new(
            ACCOUNTS
                .iter()
                .map(|name| (name.to_string(), OPENING_BALANCE))
                .collect(),
        ),
        executions: AtomicU64::new(0),
    });
    let faults = Arc::new(Faults {
        rate: flags.fault_rate,
        rng: Mutex::new(Some(fastrand::Rng::with_seed(flags.seed))),
        ..Faults::default()
    });
    let app = Router::new()
        .route("/transfers", post(transfer))
        .route("/balances", get(balances))
        .with_state(Arc::clone(&books))
        .layer(IdempotencyLayer::new(store).scope("transfers"))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&faults),
            inject_faults,
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });

    // The client: 16 concurrent callers, each transfer's key made once.
    let mut plan = fastrand::Rng::with_seed(flags.seed ^ 0x5eed);
    let transfers: Vec<(String, Transfer)> = (0..flags.transfers)
        .map(|number| {
            let from = plan.usize(..ACCOUNTS.len());
            let to = (from + plan.usize(1..ACCOUNTS.len())) % ACCOUNTS.len();
            let key = format!("{:032x}", plan.u128(..));
            let transfer = Transfer {
                from: ACCOUNTS[from].into(),
                to: ACCOUNTS[to].into(),
                cents: 1 + (number as i64 % 997),
            };
            (key, transfer)
        })
        .collect();
    let client = reqwest::Client::new();
    let stats = Arc::new(ClientStats::default());
    let url = format!("{base}/transfers");
    let queue = Arc::new(Mutex::new(transfers.clone().into_iter()));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (client, url, stats, queue) = (
            client.clone(),
            url.clone(),
            Arc::clone(&stats),
            Arc::clone(&queue),
        );
        workers.spawn(async move {
            let mut failed = 0_u64;
            loop {
                let next = queue.lock().expect("queue lock").next();
                let Some((key, transfer)) = next else {
                    return failed;
                };
                if let Err(error) = send_transfer(&client, &url, &key, &transfer, &stats).await {
                    eprintln!("transfer {key} failed: {error}");
                    failed += 1;
                }
            }
        });
    }
    let mut failed = 0;
    while let Some(worker) = workers.join_next().await {
        failed += worker?;
    }

    // The check: each acknowledged transfer ran once, and the balances are
    // the opening balances moved by exactly the planned transfers.
    let mut expected: BTreeMap<String, i64> = ACCOUNTS
        .iter()
        .map(|name| (name.to_string(), OPENING_BALANCE))
        .collect();
    for (_, transfer) in &transfers {
        *expected.get_mut(&transfer.from).expect("planned account") -= transfer.cents;
        *expected.get_mut(&transfer.to).expect("planned account") += transfer.cents;
    }
    let served: BTreeMap<String, i64> = serde_json::from_slice(
        &reqwest::get(format!("{base}/balances"))
            .await?
            .bytes()
            .await?,
    )?;
    let executions = books.executions.load(Ordering::SeqCst);
    let exact = failed == 0 && executions == flags.transfers && served == expected;

    let attempts = stats.attempts.load(Ordering::Relaxed);
    println!("| transfers | {} |", flags.transfers);
    println!(
        "| attempts | {attempts} ({} retries) |",
        attempts - flags.transfers
    );
    println!(
        "| faults: refused / response lost / throttled | {} / {} / {} |",
        faults.refused.load(Ordering::Relaxed),
        faults.lost.load(Ordering::Relaxed),
        faults.throttled.load(Ordering::Relaxed)
    );
    println!("| executions | {executions} |");
    println!(
        "| replays (Idempotency-Replayed: true) | {} |",
        stats.replays.load(Ordering::Relaxed)
    );
    println!("| failed transfers | {failed} |");
    println!(
        "| balances | {} |",
        served
            .iter()
            .map(|(name, cents)| format!("{name} {cents}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("| books exact | {} |", if exact { "yes" } else { "no" });
    let _ = std::fs::remove_dir_all(&dir);
    Ok(if exact {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
