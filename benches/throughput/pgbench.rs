//! PostgreSQL's other floor, `pgbench` itself: the scripts of
//! `pgbench-select` and `pgbench-write`, written out and printed, and one
//! run of `pgbench` on a script.

use std::path::{Path, PathBuf};

use steadfast::idempotency::PostgresStore;

use crate::{
    postgres_floor::PG_SELECT,
    servers::postgres_url,
    workload::{KEYS, times},
};

/// The `pgbench` scripts of `pgbench-select` and `pgbench-write`: the
/// store's statements, their parameters written as `pgbench` variables and
/// SQL.
pub(crate) fn scripts(store: &PostgresStore) -> (String, String) {
    let select = format!(
        "\\set k random(0, {})\n{};\n",
        KEYS - 1,
        PG_SELECT.replace("$1", "''").replace(
            "$2",
            "sha256('\\x0000000000000000'::bytea || convert_to('k-' || :k, 'UTF8'))"
        )
    );
    let (claim, complete) = store.statements();
    let times = times();
    let key = "sha256(convert_to('p-' || :client_id || '-' || :k, 'UTF8'))";
    // `$4::BYTEA` in the statement: a NULL fingerprint.
    let claim = claim
        .as_str()
        .replace("$1", "''")
        .replace("$2", key)
        .replace("$3", ":k")
        .replace("$4", "NULL")
        .replace("$5", &times.lease_until.to_string())
        .replace("$6", &times.expires_at.to_string())
        .replace("$7", &times.now.to_string());
    let complete = complete
        .as_str()
        .replace("$1", "'\\x3432'::bytea")
        .replace("$2", &times.expires_at.to_string())
        .replace("$3", "''")
        .replace("$4", key)
        .replace("$5", ":k");
    let write = format!(
        "\\set k random(1, 9000000000000000000)\n{};\n{};\n",
        one_line(&claim),
        one_line(&complete)
    );
    (select, write)
}

/// `sql` on one line (`pgbench` ends a statement at the end of its line).
fn one_line(sql: &str) -> String {
    sql.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Writes the scripts `select` and `write` to the temporary directory and
/// prints them with the command that runs them: their paths.
pub(crate) fn write_scripts(select: &str, write: &str, seconds: f64) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir();
    let (select_path, write_path) = (dir.join("select.sql"), dir.join("write.sql"));
    std::fs::write(&select_path, select).expect("select.sql");
    std::fs::write(&write_path, write).expect("write.sql");
    println!("{}:\n{select}", select_path.display());
    println!("{}:\n{write}", write_path.display());
    println!(
        "pgbench -n -M prepared -j 2 -T {} -c N -f <script> <STEADFAST_TEST_POSTGRES_URL>\n",
        seconds.round()
    );
    (select_path, write_path)
}

/// Runs `pgbench` with `script` for `callers` clients and `seconds`: its
/// transactions per second, `None` if it is not installed or fails.
pub(crate) fn pgbench(script: &Path, callers: usize, seconds: f64) -> Option<f64> {
    let output = std::process::Command::new("pgbench")
        .args(["-n", "-M", "prepared"])
        .args(["-j", &callers.min(2).to_string()])
        .args(["-T", &(seconds.round() as u64).max(1).to_string()])
        .args(["-c", &callers.to_string()])
        .arg("-f")
        .arg(script)
        .arg(postgres_url())
        .output()
        .ok()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let tps = stdout
        .lines()
        .find_map(|line| line.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|tps| tps.parse().ok());
    if tps.is_none() {
        eprintln!(
            "pgbench failed: {}{}",
            stdout,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    tps
}
