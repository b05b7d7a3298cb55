//! The demo's command line.

use std::{ops::RangeInclusive, path::PathBuf, str::FromStr};

use crate::{Backend, DemoConfig};

/// The usage line printed with `--help` and after a bad flag.
pub const USAGE: &str = "usage: payments [--payments N] [--fault-rate P] [--replicas K] [--clients C] \
[--store sqlite:PATH|postgres://…|mysql://…|memory] [--seed S] [--retry-budget PERCENT|none]";

/// What the command line asked for.
#[derive(Debug, Clone)]
pub struct Cli {
    /// The run's settings.
    pub config: DemoConfig,
    /// A directory made for the default SQLite file, to remove at the end.
    pub scratch: Option<PathBuf>,
}

/// Parses the flags (without the program name) over the defaults of
/// [`DemoConfig::new`]; without `--store`, the store is a SQLite file in a
/// new directory under the system's temporary directory. `Err` holds the
/// message to print: a bad flag with the usage line, or the usage for `--help`.
///
/// ```
/// use steadfast_payments::{Backend, cli};
///
/// let cli = cli::parse(["--payments", "50", "--store", "memory"].map(String::from)).unwrap();
/// assert_eq!((cli.config.payments, cli.config.backend), (50, Backend::Memory));
/// assert!(cli::parse(["--fault-rate", "2"].map(String::from)).is_err());
/// ```
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Cli, String> {
    let mut config = DemoConfig::new(Backend::Memory);
    let mut store = None;
    let mut args = args.into_iter();
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
                config.fault_rate =
                    parse_in(&value, 0.0..=1.0).ok_or_else(|| bad("a share between 0 and 1"))?;
            }
            "--replicas" => {
                config.replicas =
                    parse_in(&value, 1..=16).ok_or_else(|| bad("1 to 16 replicas"))?;
            }
            "--clients" => {
                config.clients =
                    parse_in(&value, 1..=256).ok_or_else(|| bad("1 to 256 clients"))?;
            }
            "--seed" => config.seed = value.parse().map_err(|_| bad("an integer"))?,
            "--retry-budget" => {
                config.retry_budget = if value == "none" {
                    None
                } else {
                    Some(
                        parse_in(&value, 0.0..=1000.0)
                            .ok_or_else(|| bad("a percentage from 0 to 1000, or none"))?,
                    )
                };
            }
            "--store" => {
                store = Some(
                    value
                        .parse::<Backend>()
                        .map_err(|error| format!("{error}\n{USAGE}"))?,
                );
            }
            _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
        }
    }
    let mut scratch = None;
    config.backend = match store {
        Some(backend) => backend,
        None => {
            let dir = std::env::temp_dir().join(format!(
                "steadfast-payments-{}-{:08x}",
                std::process::id(),
                fastrand::u32(..)
            ));
            std::fs::create_dir_all(&dir)
                .map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
            scratch = Some(dir.clone());
            Backend::Sqlite(dir.join("ledger.db"))
        }
    };
    Ok(Cli { config, scratch })
}

/// `value` as a `T`, if it parses and lies in `range`.
pub(crate) fn parse_in<T: FromStr + PartialOrd>(
    value: &str,
    range: RangeInclusive<T>,
) -> Option<T> {
    value.parse().ok().filter(|parsed| range.contains(parsed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn every_flag_is_read() {
        let cli = parse(args(
            "--payments 7 --fault-rate 0.5 --replicas 3 --clients 4 --seed 9 --store postgres://u@h/db",
        ))
        .unwrap();
        let config = cli.config;
        assert_eq!(
            (
                config.payments,
                config.fault_rate,
                config.replicas,
                config.clients,
                config.seed
            ),
            (7, 0.5, 3, 4, 9)
        );
        assert_eq!(
            config.backend,
            Backend::Postgres("postgres://u@h/db".into())
        );
        assert!(cli.scratch.is_none());
        let budgets = ["--retry-budget 10", "--retry-budget none", "--payments 1"].map(|line| {
            parse(args(&format!("{line} --store memory")))
                .unwrap()
                .config
                .retry_budget
        });
        assert_eq!(budgets, [Some(10.0), None, Some(50.0)]);
    }

    #[test]
    fn the_default_store_is_a_sqlite_file_in_a_new_directory() {
        let cli = parse(args("")).unwrap();
        let dir = cli.scratch.expect("a scratch directory");
        assert!(dir.is_dir());
        assert_eq!(cli.config.backend, Backend::Sqlite(dir.join("ledger.db")));
        assert_eq!((cli.config.payments, cli.config.replicas), (1000, 1));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn bad_flags_say_what_is_expected() {
        for (line, expected) in [
            ("--payments many", "expected a count"),
            ("--fault-rate 1.5", "between 0 and 1"),
            ("--replicas 0", "1 to 16 replicas"),
            ("--clients 1000", "1 to 256 clients"),
            ("--store redis://h", "unknown store"),
            ("--seed", "needs a value"),
            ("--retry-budget 2000", "a percentage from 0 to 1000"),
            ("--colour red", "unknown flag --colour"),
        ] {
            let error = parse(args(line)).unwrap_err();
            assert!(error.contains(expected), "{line}: {error}");
            assert!(error.contains("usage: payments"), "{line}: {error}");
        }
    }
}
