//! One replica as a process of its own: `payments serve`. The parent
//! ([`ReplicaProcesses`](crate::ReplicaProcesses)) starts it, talks to it
//! over its standard streams and kills it with `SIGKILL`.
//!
//! Its standard output is a line protocol:
//! - `listening ADDR` once the port is bound;
//! - `tally …` (a [`ServerTally`](crate::ServerTally)) every 50 ms while
//!   the counts change, so that a kill loses at most 50 ms of them;
//! - `stalled ID` when an armed [`Stall`](crate::Stall) froze a handler.
//!
//! Its standard input takes `stall ID before-commit|after-commit`, which
//! arms a stall for the payment `ID`. When it closes (the parent ended), the
//! replica exits: none outlives its parent.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncBufReadExt, BufReader},
    sync::oneshot,
};

use crate::{Backend, FaultPlan, StallPoint, books::Database, cli::parse_in, cluster::serve};

/// The usage line of `payments serve`.
pub const SERVE_USAGE: &str = "usage: payments serve --store sqlite:PATH|postgres://…|mysql://… \
--listen ADDR [--prefix P] [--fault-rate P] [--seed S]";

/// What `payments serve` was asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct ServeOptions {
    /// The database of the store and the money (its tables already made).
    pub backend: Backend,
    /// The tables' prefix.
    pub prefix: String,
    /// Where to listen (port 0: any free port).
    pub listen: SocketAddr,
    /// Share of calls that get an injected fault.
    pub fault_rate: f64,
    /// Seeds the faults.
    pub seed: u64,
}

impl ServeOptions {
    /// Parses the flags after `serve`. `Err` holds the message to print.
    ///
    /// ```
    /// use steadfast_payments::replica::ServeOptions;
    ///
    /// let args = ["--store", "postgres://h/db", "--listen", "127.0.0.1:0", "--seed", "4"];
    /// let options = ServeOptions::parse(args.map(String::from)).unwrap();
    /// assert_eq!((options.seed, options.prefix.as_str()), (4, "payments"));
    /// assert!(ServeOptions::parse(["--store", "memory"].map(String::from)).is_err());
    /// ```
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<ServeOptions, String> {
        let (mut backend, mut listen) = (None, None);
        let mut options = ServeOptions {
            backend: Backend::Memory,
            prefix: "payments".to_owned(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            fault_rate: 0.0,
            seed: 1,
        };
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            let value = args
                .next()
                .ok_or_else(|| format!("{flag} needs a value\n{SERVE_USAGE}"))?;
            let bad = |what: &str| format!("{flag} {value:?}: expected {what}\n{SERVE_USAGE}");
            match flag.as_str() {
                "--store" => {
                    backend = Some(value.parse::<Backend>().map_err(|e| bad(&e.to_string()))?)
                }
                "--listen" => listen = Some(value.parse().map_err(|_| bad("HOST:PORT"))?),
                "--prefix" => options.prefix.clone_from(&value),
                "--fault-rate" => {
                    options.fault_rate = parse_in(&value, 0.0..=1.0)
                        .ok_or_else(|| bad("a share between 0 and 1"))?;
                }
                "--seed" => options.seed = value.parse().map_err(|_| bad("an integer"))?,
                _ => return Err(format!("unknown flag {flag}\n{SERVE_USAGE}")),
            }
        }
        options.backend = match backend {
            Some(Backend::Memory) | None => {
                return Err(format!(
                    "serve needs --store with a database that replicas can share\n{SERVE_USAGE}"
                ));
            }
            Some(backend) => backend,
        };
        options.listen =
            listen.ok_or_else(|| format!("serve needs --listen HOST:PORT\n{SERVE_USAGE}"))?;
        Ok(options)
    }
}

/// How often the replica prints its tally.
const TALLY_EVERY: Duration = Duration::from_millis(50);

/// Runs one replica until its standard input closes; `Err` says why it
/// could not start.
pub async fn serve_replica(options: ServeOptions) -> Result<(), String> {
    let database = Database::new(options.backend, &options.prefix).map_err(|e| e.to_string())?;
    let faults = Arc::new(FaultPlan::new(options.fault_rate, options.seed));
    let (ready_tx, ready_rx) = oneshot::channel();
    let server = serve(
        database,
        faults.clone(),
        options.listen,
        ready_tx,
        obey_parent(faults.clone()),
    );
    tokio::pin!(server);
    let mut ready = Some(ready_rx);
    let mut printed = None;
    let mut ticks = tokio::time::interval(TALLY_EVERY);
    loop {
        tokio::select! {
            () = &mut server => return match ready {
                Some(_) => Err("the replica ended before it listened".to_owned()),
                None => Ok(()),
            },
            answer = async { ready.as_mut().expect("armed while waiting").await }, if ready.is_some() => {
                ready = None;
                match answer {
                    Ok(Ok(address)) => println!("listening {address}"),
                    Ok(Err(error)) => return Err(error.to_string()),
                    Err(_) => return Err("the replica ended before it listened".to_owned()),
                }
            }
            _ = ticks.tick() => {
                let tally = faults.tally();
                if printed != Some(tally) {
                    println!("{tally}");
                    printed = Some(tally);
                }
            }
        }
    }
}

/// Reads the parent's commands until its end of the pipe closes.
async fn obey_parent(faults: Arc<FaultPlan>) {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        match parse_stall(&line) {
            Some((payment_id, point)) => {
                let stall = faults.stall(payment_id, point);
                let payment_id = payment_id.to_owned();
                tokio::spawn(async move {
                    stall.reached().await;
                    println!("stalled {payment_id}");
                });
            }
            None => eprintln!("replica: unknown command {line:?}"),
        }
    }
}

/// `stall ID before-commit|after-commit` as its payment and point.
fn parse_stall(line: &str) -> Option<(&str, StallPoint)> {
    let mut words = line.split_whitespace();
    let (Some("stall"), Some(payment_id), Some(point), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return None;
    };
    Some((payment_id, stall_point(point)?))
}

/// A stall point as the command names it.
pub(crate) fn stall_point(name: &str) -> Option<StallPoint> {
    match name {
        "before-commit" => Some(StallPoint::BeforeCommit),
        "after-commit" => Some(StallPoint::AfterCommit),
        _ => None,
    }
}

/// The name [`stall_point`] reads back.
pub(crate) fn stall_point_name(point: StallPoint) -> &'static str {
    match point {
        StallPoint::BeforeCommit => "before-commit",
        StallPoint::AfterCommit => "after-commit",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stall_commands_are_read_back() {
        for point in [StallPoint::BeforeCommit, StallPoint::AfterCommit] {
            let line = format!("stall run-000007 {}", stall_point_name(point));
            assert_eq!(parse_stall(&line), Some(("run-000007", point)));
        }
        for line in [
            "stall x",
            "stall x later",
            "stall x after-commit y",
            "halt x after-commit",
        ] {
            assert_eq!(parse_stall(line), None, "{line}");
        }
    }

    #[test]
    fn serve_needs_a_shared_database_and_an_address() {
        let parse = |line: &str| ServeOptions::parse(line.split_whitespace().map(String::from));
        let error = parse("--listen 127.0.0.1:0").unwrap_err();
        assert!(error.contains("needs --store"), "{error}");
        let error = parse("--store memory --listen 127.0.0.1:0").unwrap_err();
        assert!(error.contains("needs --store"), "{error}");
        let error = parse("--store sqlite:/tmp/x.db").unwrap_err();
        assert!(error.contains("needs --listen"), "{error}");
        let error = parse("--store sqlite:/tmp/x.db --listen here").unwrap_err();
        assert!(error.contains("expected HOST:PORT"), "{error}");
        let options = parse(
            "--store mysql://root@127.0.0.1/test --listen 127.0.0.1:7000 --prefix p --fault-rate 0.3 --seed 9",
        )
        .unwrap();
        assert_eq!(
            options,
            ServeOptions {
                backend: Backend::MySql("mysql://root@127.0.0.1/test".into()),
                prefix: "p".into(),
                listen: "127.0.0.1:7000".parse().unwrap(),
                fault_rate: 0.3,
                seed: 9,
            }
        );
    }
}
