//! The table a run prints at its end.

use std::{fmt, time::Duration};

use tonic::Code;

use crate::{Audit, ClientStats, Fault, ServerTally, client::COUNTED_CODES};

/// Everything a run measured, ready to print.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The store, as `--store` named it (passwords hidden).
    pub store: String,
    /// Replicas started.
    pub replicas: usize,
    /// Concurrent clients.
    pub clients: usize,
    /// Wall time of the payments.
    pub elapsed: Duration,
    /// Payments issued.
    pub payments: usize,
    /// Attempts over every payment.
    pub attempts: u64,
    /// Failed attempts by code, `(code, count)`, in [`COUNTED_CODES`] order, then others.
    pub failures: Vec<(String, u64)>,
    /// Times a client moved to the next replica.
    pub failovers: u64,
    /// Faults injected by kind, `(description, count)`.
    pub faults: Vec<(&'static str, u64)>,
    /// Payment bodies that committed.
    pub executions: u64,
    /// OK answers without an execution: stored receipts replayed.
    pub replays: u64,
    /// Duplicates answered `Aborted` while the first was running.
    pub in_progress: u64,
    /// Replica kills during the run.
    pub kills: usize,
    /// Every account's final balance, as the database holds it.
    pub balances: std::collections::BTreeMap<String, i64>,
    /// The ledger check.
    pub audit: Audit,
}

impl Summary {
    /// Gathers the counters of a finished run.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: String,
        replicas: usize,
        clients: &[&ClientStats],
        elapsed: Duration,
        payments: usize,
        server: ServerTally,
        executions: u64,
        kills: usize,
        balances: std::collections::BTreeMap<String, i64>,
        audit: Audit,
    ) -> Summary {
        let sum = |f: &dyn Fn(&ClientStats) -> u64| clients.iter().map(|stats| f(stats)).sum();
        let mut failures: Vec<(String, u64)> = COUNTED_CODES
            .iter()
            .map(|code| (format!("{code:?}"), sum(&|stats| stats.failures(*code))))
            .collect();
        failures.push(("other".to_owned(), sum(&|stats| stats.other_failures())));
        Summary {
            store,
            replicas,
            clients: clients.len(),
            elapsed,
            payments,
            attempts: sum(&ClientStats::attempts),
            failures,
            failovers: sum(&ClientStats::failovers),
            faults: Fault::ALL
                .iter()
                .map(|kind| (kind.describe(), server.injected(*kind)))
                .collect(),
            executions,
            replays: server.handler_ok.saturating_sub(executions),
            in_progress: server.handler_aborted,
            kills,
            balances,
            audit,
        }
    }

    /// Failed attempts with `code`.
    pub fn failures_of(&self, code: Code) -> u64 {
        let name = format!("{code:?}");
        self.failures
            .iter()
            .find(|(counted, _)| *counted == name)
            .map_or(0, |(_, count)| *count)
    }

    /// The load the clients put on the cluster per payment: attempts ÷
    /// payments (1 when nothing is retried).
    pub fn amplification(&self) -> f64 {
        self.attempts as f64 / self.payments.max(1) as f64
    }

    /// Faults injected, every kind.
    pub fn faults_injected(&self) -> u64 {
        self.faults.iter().map(|(_, count)| count).sum()
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let line = |f: &mut fmt::Formatter<'_>, name: &str, value: &dyn fmt::Display| {
            writeln!(f, "  {name:<44} {value:>12}")
        };
        let audit = &self.audit;
        writeln!(
            f,
            "payments demo: {} payments, {} replica(s), {} clients, store {}, {:.2?}",
            self.payments, self.replicas, self.clients, self.store, self.elapsed
        )?;
        writeln!(f, "client")?;
        line(f, "payments", &self.payments)?;
        line(f, "  acknowledged", &audit.acknowledged)?;
        line(f, "  failed (client gave up)", &audit.failed)?;
        line(f, "attempts", &self.attempts)?;
        line(
            f,
            "retries",
            &self.attempts.saturating_sub(self.payments as u64),
        )?;
        line(
            f,
            "load amplification (attempts ÷ payments)",
            &format!("{:.2}×", self.amplification()),
        )?;
        for (code, count) in &self.failures {
            if *count > 0 {
                line(f, &format!("  failed attempts: {code}"), count)?;
            }
        }
        line(f, "failovers to another replica", &self.failovers)?;
        writeln!(f, "injected faults")?;
        for (kind, count) in &self.faults {
            line(f, &format!("  {kind}"), count)?;
        }
        line(f, "  total", &self.faults_injected())?;
        if self.kills > 0 {
            line(f, "  replicas killed and restarted", &self.kills)?;
        }
        writeln!(f, "server")?;
        line(f, "executions (bodies that committed)", &self.executions)?;
        line(f, "replays (stored receipt returned)", &self.replays)?;
        line(f, "in-progress rejections (Aborted)", &self.in_progress)?;
        writeln!(f, "final balances")?;
        for row in self.balances.iter().collect::<Vec<_>>().chunks(4) {
            let cells: Vec<String> = row
                .iter()
                .map(|(account, cents)| format!("{account} {cents:>9}"))
                .collect();
            writeln!(f, "  {}", cells.join("   "))?;
        }
        writeln!(f, "ledger")?;
        line(
            f,
            "sum of balances (SUM by the database)",
            &audit.actual_total,
        )?;
        line(f, "expected (opening + deposits)", &audit.expected_total)?;
        line(f, "rows executed twice", &audit.duplicate_rows)?;
        line(f, "acknowledged payments without a row", &audit.lost.len())?;
        line(
            f,
            "failed payments that did execute",
            &audit.failed_but_executed,
        )?;
        line(
            f,
            "receipts naming another row",
            &audit.receipt_mismatches.len(),
        )?;
        line(
            f,
            "accounts off their rows",
            &audit.balance_mismatches.len(),
        )?;
        writeln!(
            f,
            "ledger exact: {}",
            if audit.exact() { "yes" } else { "no" }
        )
    }
}
