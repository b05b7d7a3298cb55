//! The payments demo: a gRPC ledger whose writes are `#[idempotent]`, a
//! client whose calls are `#[retry]`, and a fault injector between them.
//!
//! ```text
//! cargo run --release -p steadfast-payments
//! cargo run --release -p steadfast-payments -- --replicas 3 --store postgres://postgres@127.0.0.1:5432/test
//! ```
//!
//! Flags: `--payments N` (1000), `--fault-rate P` (0.3), `--replicas K` (1),
//! `--clients C` (16), `--store sqlite:PATH | postgres://… | mysql://… |
//! memory` (a SQLite file in a temporary directory), `--seed S` (1),
//! `--retry-budget PERCENT | none` (50: the clients share a `RatioBudget`).
//! Exits with status 1 if the ledger is not exact, 2 on bad flags.
//!
//! `payments serve --store … --listen ADDR [--prefix P] [--fault-rate P]
//! [--seed S]` runs one replica alone, as the chaos tests start them (see
//! `steadfast_payments::replica`).

use std::{
    io::{IsTerminal, Write},
    process::ExitCode,
    time::Duration,
};

use steadfast_payments::{
    Progress, cli,
    replica::{ServeOptions, serve_replica},
};

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
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("serve") {
        return serve(args.skip(1)).await;
    }
    let cli::Cli { config, scratch } = match cli::parse(args) {
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

/// `payments serve …`: one replica, until its standard input closes.
async fn serve(args: impl Iterator<Item = String>) -> ExitCode {
    let options = match ServeOptions::parse(args) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    match serve_replica(options).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("payments serve failed: {error}");
            ExitCode::FAILURE
        }
    }
}
