//! Throughput of idempotent calls, `N` concurrent callers at a time, over
//! every store (`--store postgres|mysql|sqlite|redis`, default
//! `postgres`), beside its floor: the minimal statements a hand-written
//! idempotency would run, through the raw client (issue 14).
//!
//! Each caller loops for `--seconds` (default 5) in one mode; a row of the
//! table is one mode at one number of callers. The modes run interleaved:
//! for each round (`--rounds`, default 1), for each number of callers
//! (`--callers`, default `1,16,64`), every mode in turn, so that a mode and
//! its floor are measured minutes apart at most and their ratio holds on a
//! shared machine; with several rounds a row is their median. Each row is
//! measured on a pool (SQL) of its own with as many connections as
//! callers (`--spare K`: `K` more), opened before and closed after it,
//! like `pgbench -c N`. The
//! table, printed at the end in Markdown, gives each row's ratio to its
//! floor: the fresh floor for `fresh` and the `write` modes, the replay
//! floor for the others.
//!
//! The store, `Idempotency::new(&store).key(k).run(…)` with a trivial body:
//!
//! - `replay`: `k` drawn at random from 10 000 completed keys (`k-0` …
//!   `k-9999`, scope `""`): one claim per call, answered `Completed`.
//! - `hot`: every caller replays the same completed key `k-0`.
//! - `fresh`: a new key per call: claim, body, complete.
//! - `claim`: the store's `claim` alone on a random completed key (no
//!   engine: no decoding, no in-process waiters).
//!
//! The raw client (sqlx, redis-rs), on the same keys, through the pool
//! (one connection acquired per statement and given back, where sqlx pings
//! it, as the store does) or, with `-conn`, over one connection of the pool
//! per caller held for the run (no acquire, no ping):
//!
//! - `select`, `select-conn`: the primary-key `SELECT` of a random
//!   completed record (the statement a replay runs on MariaDB and SQLite;
//!   Redis: a `GET`). The replay floor: `select-conn`; on PostgreSQL
//!   `pgbench-select`; on Redis `select`.
//! - `write`, `write-conn`: a fresh request's two statements for a new key:
//!   the store's claim (PostgreSQL: its one statement; MariaDB and SQLite:
//!   its upsert) and its complete `UPDATE` (Redis: `SET key NX PX` then
//!   `SET key value XX PX`). The fresh floor: `write-conn`; on PostgreSQL
//!   `pgbench-write`; on Redis `write`.
//! - `read-write-conn`: the primary-key `SELECT` first, then the two: the
//!   statements of a fresh request on MariaDB and SQLite, whose claim
//!   reads before it writes.
//! - `claim-conn` (PostgreSQL): the store's claim statement on a random
//!   completed key.
//!
//! On Redis there is no pool: the store and `select`/`write` share one
//! multiplexed connection (a `ConnectionManager`, as `RedisStore::connect`
//! makes); `-conn` gives each caller a multiplexed connection of its own.
//! The raw commands run on keys of their own (`steadfast_throughput_floor:…`,
//! strings), the store's on hashes under the prefix `steadfast_throughput`.
//!
//! PostgreSQL also runs `pgbench` itself, if it is on the `PATH`
//! (`pgbench -n -M prepared -j 2 -T <seconds> -c N -f <script> <URL>`, with
//! `-j 1` for one client), on the scripts it prints at start:
//!
//! - `pgbench-select`: the primary-key `SELECT` of a random completed record
//!   (`pgbench` computes the key's hash, SHA-256 of the scope's length, the
//!   scope and the key, with `sha256`).
//! - `pgbench-write`: the store's own claim and complete statements, its
//!   parameters filled in by `pgbench` for a new key (a hash of the client
//!   and a random number).
//!
//! The SQL stores' table is `steadfast_throughput`, emptied and refilled at
//! start (SQLite: a file in the temporary directory, with the options of
//! `SqliteStore::connect`); Redis keys under both prefixes are deleted at
//! start and at the end.
//!
//! Modes given on the command line replace the store's default set: all of
//! the above that apply to it. Run with
//!
//! ```sh
//! export STEADFAST_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
//!   STEADFAST_TEST_MYSQL_URL=mysql://root@127.0.0.1:3306/test \
//!   STEADFAST_TEST_REDIS_URL=redis://127.0.0.1:6379
//! cargo bench --features postgres,mysql,sqlite,redis --bench throughput -- --store postgres
//! cargo bench --features postgres,mysql,sqlite,redis --bench throughput -- --store mysql fresh write-conn --callers 16

#[path = "throughput/bench.rs"]
mod bench;
#[path = "throughput/driver.rs"]
mod driver;
#[path = "throughput/mode.rs"]
mod mode;
#[path = "throughput/mysql.rs"]
mod mysql;
#[path = "throughput/pgbench.rs"]
mod pgbench;
#[path = "throughput/postgres.rs"]
mod postgres;
#[path = "throughput/postgres_floor.rs"]
mod postgres_floor;
#[path = "throughput/read_first.rs"]
mod read_first;
#[path = "throughput/read_first_floor.rs"]
mod read_first_floor;
#[path = "throughput/redis.rs"]
mod redis;
#[path = "throughput/redis_floor.rs"]
mod redis_floor;
#[path = "throughput/report.rs"]
mod report;
#[path = "throughput/servers.rs"]
mod servers;
#[path = "throughput/source.rs"]
mod source;
#[path = "throughput/sql_statements.rs"]
mod sql_statements;
#[path = "throughput/sqlite.rs"]
mod sqlite;
#[path = "throughput/workload.rs"]
mod workload;

use std::sync::Arc;

use bench::Bench;
use mode::Mode;
use postgres::PostgresBench;
use read_first::ReadFirstBench;
use redis::RedisBench;
use report::{Rates, load, print_table};

/// The settings of a run.
struct Run {
    modes: Vec<Mode>,
    callers: Vec<usize>,
    seconds: f64,
    rounds: usize,
    /// Connections in a row's pool beyond one per caller.
    spare: usize,
}

/// Prepares `B`, measures every mode of `run` at every number of callers,
/// interleaved, and prints the table.
async fn bench_store<B: Bench>(
    run: &Run,
    pgbench_scripts: impl Fn(&B) -> Option<(String, String)>,
) {
    let modes: Vec<Mode> = match run.modes.is_empty() {
        true => B::MODES.to_vec(),
        false => run.modes.clone(),
    };
    let scripts = {
        let bench = B::open(1).await;
        bench.prepare().await;
        let scripts = pgbench_scripts(&bench);
        bench.close().await;
        scripts
    };
    let scripts =
        scripts.map(|(select, write)| pgbench::write_scripts(&select, &write, run.seconds));
    println!("load average at start: {}", load());
    let mut rates = Rates::new();
    for round in 0..run.rounds {
        for &n in &run.callers {
            for &mode in &modes {
                let rate = match (mode, &scripts) {
                    (Mode::PgbenchSelect, Some((select, _))) => {
                        pgbench::pgbench(select, n, run.seconds)
                    }
                    (Mode::PgbenchWrite, Some((_, write))) => {
                        pgbench::pgbench(write, n, run.seconds)
                    }
                    (Mode::PgbenchSelect | Mode::PgbenchWrite, None) => None,
                    _ => {
                        let bench = Arc::new(B::open(n + run.spare).await);
                        let rate = driver::measure(&bench, mode, n, run.seconds).await;
                        if let Ok(bench) = Arc::try_unwrap(bench) {
                            bench.close().await;
                        }
                        Some(rate)
                    }
                };
                let Some(rate) = rate else { continue };
                println!(
                    "round {round}: {} {}\tc={n}\t{rate:.0}/s",
                    B::NAME,
                    mode.name()
                );
                rates.entry((mode, n)).or_default().push(rate);
            }
        }
    }
    println!("load average at end: {}\n", load());
    print_table::<B>(run, &modes, &mut rates);
    B::open(1).await.finish().await;
}

fn main() {
    let mut settings = Run {
        modes: Vec::new(),
        callers: vec![1, 16, 64],
        seconds: 5.0,
        rounds: 1,
        spare: 0,
    };
    let mut store = "postgres".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--callers" => {
                let list = args.next().expect("--callers 1,16,64");
                settings.callers = list
                    .split(',')
                    .map(|n| n.parse().expect("a number of callers"))
                    .collect();
            }
            "--seconds" => {
                settings.seconds = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .expect("--seconds 5");
            }
            "--rounds" => {
                settings.rounds = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .expect("--rounds 1");
            }
            "--spare" => {
                settings.spare = args.next().and_then(|s| s.parse().ok()).expect("--spare 0");
            }
            "--store" => store = args.next().expect("--store postgres|mysql|sqlite|redis"),
            "--bench" => {}
            other => settings
                .modes
                .push(Mode::parse(other).unwrap_or_else(|| panic!("unknown mode {other}"))),
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    if store != "postgres"
        && settings
            .modes
            .iter()
            .any(|mode| Mode::POSTGRES_ONLY.contains(mode))
    {
        panic!("claim-conn, pgbench-select and pgbench-write are PostgreSQL's");
    }
    match store.as_str() {
        "postgres" => runtime.block_on(bench_store::<PostgresBench>(&settings, |bench| {
            Some(pgbench::scripts(&bench.store))
        })),
        "mysql" => runtime.block_on(bench_store::<ReadFirstBench<sqlx::MySql>>(
            &settings,
            |_| None,
        )),
        "sqlite" => {
            sqlite::remove_database_file();
            runtime.block_on(bench_store::<ReadFirstBench<sqlx::Sqlite>>(
                &settings,
                |_| None,
            ));
        }
        "redis" => runtime.block_on(bench_store::<RedisBench>(&settings, |_| None)),
        other => panic!("unknown store {other}: postgres, mysql, sqlite or redis"),
    }
}
