//! What a run prints besides its rows: the table of rates, each beside its
//! floor, and the machine's load.

use std::collections::HashMap;

use crate::{Run, bench::Bench, mode::Mode};

/// Each row's rates, one a round.
pub(crate) type Rates = HashMap<(Mode, usize), Vec<f64>>;

/// The table of `rates` (the median of each row's rounds), each beside its
/// floor.
pub(crate) fn print_table<B: Bench>(run: &Run, modes: &[Mode], rates: &mut Rates) {
    let median = |rates: &mut Rates, mode, n| {
        let rounds = rates.get_mut(&(mode, n))?;
        rounds.sort_by(f64::total_cmp);
        Some(rounds[rounds.len() / 2])
    };
    let columns: Vec<String> = run.callers.iter().map(|n| format!("c = {n}")).collect();
    println!(
        "{}, calls per second ({} s a row, median of {} round(s), {} spare connection(s)), × its floor\n",
        B::NAME,
        run.seconds,
        run.rounds,
        run.spare
    );
    println!("| mode | {} |", columns.join(" | "));
    println!("|---|{}", "---:|".repeat(columns.len()));
    for &mode in modes {
        let floor = match mode.writes() {
            true => B::FLOORS.0,
            false => B::FLOORS.1,
        };
        let cells: Vec<String> = run
            .callers
            .iter()
            .map(
                |&n| match (median(rates, mode, n), median(rates, floor, n)) {
                    (Some(rate), _) if mode == floor => thousands(rate),
                    (Some(rate), Some(floor)) => {
                        format!("{} ({:.2}×)", thousands(rate), rate / floor)
                    }
                    (Some(rate), None) => thousands(rate),
                    (None, _) => "–".to_owned(),
                },
            )
            .collect();
        let name = match mode == floor {
            true => format!("`{}` (floor)", mode.name()),
            false => format!("`{}`", mode.name()),
        };
        println!("| {name} | {} |", cells.join(" | "));
    }
}

/// `rate` rounded, its thousands apart: `16 374`.
fn thousands(rate: f64) -> String {
    let digits = format!("{rate:.0}");
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(' ');
        }
        out.push(digit);
    }
    out
}

/// The machine's load averages (`/proc/loadavg`).
pub(crate) fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|load| {
            load.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".to_owned())
}
