//! The payments demo: a gRPC ledger whose writes are `#[idempotent]`, a
//! client whose calls are `#[retry]`, and a fault injector between them.
//!
//! ```text
//! cargo run --release --example payments
//! cargo run --release --example payments -- --replicas 3 --store postgres://postgres@127.0.0.1:5432/test
//! ```
//!
//! Flags: `--payments N` (1000), `--fault-rate P` (0.3), `--replicas K` (1),
//! `--clients C` (16), `--store sqlite:PATH | postgres://… | mysql://… |
//! memory` (a SQLite file in a temporary directory), `--seed S` (1).
//! Exits with status 1 if the ledger is not exact, 2 on bad flags.

use std::{
    io::{IsTerminal, Write},
    path::PathBuf,
    process::ExitCode,
    time::Duration,
};

use steadfast_payments::{Backend, DemoConfig, Progress};

const USAGE: &str = "usage: payments [--payments N] [--fault-rate P] [--replicas K] [--clients C] \
[--store sqlite:PATH|postgres://…|mysql://…|memory] [--seed S]";

/// The flags, over the defaults.
fn parse(args: impl Iterator<Item = String>) -> Result<(DemoConfig, Option<PathBuf>), String> {
    let mut config = DemoConfig::new(Backend::Memory);
    let mut store = None;
    let mut args = args.peekable();
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            return Err(USAGE.to_owned());
        }
        let value = args
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let bad = |what: &str| format!("{flag} {value:?}: expected {what}\n{USAGE}");
        match flag.as_str() {
            "--payments" => config.payments = value.parse().map_err(|_| bad("a count"))?,
            "--fault-rate" => {
                config.fault_rate = value
                    .parse()
                    .ok()
                    .filter(|rate: &f64| (0.0..=1.0).contains(rate))
                    .ok_or_else(|| bad("a share between 0 and 1"))?;
            }
            "--replicas" => {
                config.replicas = value
                    .parse()
                    .ok()
                    .filter(|count| (1..=16).contains(count))
                    .ok_or_else(|| bad("1 to 16 replicas"))?;
            }
            "--clients" => {
                config.clients = value
                    .parse()
                    .ok()
                    .filter(|count| (1..=256).contains(count))
                    .ok_or_else(|| bad("1 to 256 clients"))?;
            }
            "--seed" => config.seed = value.parse().map_err(|_| bad("an integer"))?,
            "--store" => {
                store = Some(
                    value
                        .parse::<Backend>()
                        .map_err(|error| error.to_string())?,
                )
            }
            _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
        }
    }
    // The default store: a SQLite file in a directory of its own.
    let mut scratch = None;
    config.backend = match store {
        Some(backend) => backend,
        None => {
            let dir =
                std::env::temp_dir().join(format!("steadfast-payments-{}", std::process::id()));
            std::fs::create_dir_all(&dir)
                .map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
            scratch = Some(dir.clone());
            Backend::Sqlite(dir.join("ledger.db"))
        }
    };
    Ok((config, scratch))
}

/// Redraws `[#####.....] done/total` on stderr until every payment is done.
async fn draw_progress(progress: Progress, total: usize) {
    let interactive = std::io::stderr().is_terminal();
    let mut last = usize::MAX;
    loop {
        let done = progress.done();
        if done != last && (interactive || done == total) {
            let filled = (done * 40).checked_div(total).unwrap_or(40);
            eprint!(
                "\r[{}{}] {done}/{total} payments",
                "#".repeat(filled),
                ".".repeat(40 - filled)
            );
            let _ = std::io::stderr().flush();
            last = done;
        }
        if done >= total {
            eprintln!();
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let (config, scratch) = match parse(std::env::args().skip(1)) {
        Ok(parsed) => parsed,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    eprintln!(
        "{} payments through {} replica(s), {:.0}% of calls faulted, store {}",
        config.payments,
        config.replicas,
        config.fault_rate * 100.0,
        config.backend
    );
    let progress = Progress::default();
    let bar = tokio::spawn(draw_progress(progress.clone(), config.payments));
    let outcome = steadfast_payments::run(&config, &progress).await;
    if outcome.is_ok() {
        let _ = bar.await;
    } else {
        bar.abort();
    }
    if let Some(dir) = scratch {
        let _ = std::fs::remove_dir_all(dir);
    }
    match outcome {
        Ok(summary) => {
            println!("{summary}");
            if summary.audit.exact() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("payments demo failed: {error}");
            ExitCode::FAILURE
        }
    }
}
