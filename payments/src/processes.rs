//! Replicas of the ledger service as processes of their own (`payments
//! serve`), sharing one database: killed with `SIGKILL`, they get no chance
//! to roll back, close a connection or finish a write, as when the
//! operating system kills a server.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use steadfast::idempotency::StoreError;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    process::{Child, ChildStdin, ChildStdout, Command},
    sync::watch,
    task::JoinHandle,
};

use crate::{
    ClusterConfig, LedgerSnapshot, Replicas, ServerTally, StallPoint, books::Database,
    replica::stall_point_name,
};

/// How long a replica may take to open its database and bind its port.
const START_WITHIN: Duration = Duration::from_secs(30);

/// How to start [`ReplicaProcesses`].
#[derive(Debug, Clone)]
pub struct ProcessesConfig {
    /// The `payments` binary (in a test: `env!("CARGO_BIN_EXE_payments")`).
    pub binary: PathBuf,
    /// The database, its tables' prefix, the replicas and the accounts.
    pub cluster: ClusterConfig,
    /// Share of calls each replica faults.
    pub fault_rate: f64,
    /// Seeds the replicas' faults (each life of each replica draws its own).
    pub seed: u64,
}

/// Replicas running as `payments serve` processes on loopback ports.
#[derive(Debug)]
pub struct ReplicaProcesses {
    config: ProcessesConfig,
    database: Database,
    replicas: Vec<ProcessReplica>,
    /// What the replicas counted in the lives that ended.
    ended: ServerTally,
    kills: usize,
}

/// One replica: its port, kept across lives, and its current life.
#[derive(Debug)]
struct ProcessReplica {
    address: SocketAddr,
    lives: u64,
    life: Option<Life>,
}

/// A running `payments serve` process.
#[derive(Debug)]
struct Life {
    child: Child,
    commands: ChildStdin,
    /// The last tally it printed.
    tally: Arc<Mutex<ServerTally>>,
    /// The payments it froze on, as it announced them.
    stalled: watch::Receiver<Vec<String>>,
    reader: JoinHandle<()>,
}

impl ReplicaProcesses {
    /// Resets the ledger (as [`Cluster::start`](crate::Cluster::start)
    /// does) and starts `config.cluster.replicas` processes on free ports of
    /// 127.0.0.1.
    pub async fn start(config: ProcessesConfig) -> Result<ReplicaProcesses, StoreError> {
        let database = Database::new(config.cluster.backend.clone(), &config.cluster.prefix)?;
        if matches!(config.cluster.backend, crate::Backend::Memory) {
            return Err(StoreError::msg(
                "replicas in processes of their own need a database they can share, not memory",
            ));
        }
        database.reset(&config.cluster.accounts).await?;
        let mut processes = ReplicaProcesses {
            replicas: Vec::new(),
            database,
            ended: ServerTally::default(),
            kills: 0,
            config,
        };
        for _ in 0..processes.config.cluster.replicas.max(1) {
            processes.replicas.push(ProcessReplica {
                address: SocketAddr::from(([127, 0, 0, 1], 0)),
                lives: 0,
                life: None,
            });
            let index = processes.replicas.len() - 1;
            processes.launch(index).await?;
        }
        Ok(processes)
    }

    /// The replicas' addresses, in order (a replica keeps its port across
    /// restarts).
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.replicas
            .iter()
            .map(|replica| replica.address)
            .collect()
    }

    /// Whether replica `index` runs.
    pub fn is_running(&self, index: usize) -> bool {
        self.replicas[index].life.is_some()
    }

    /// Kills replica `index` with `SIGKILL` and waits for it to be gone.
    pub async fn kill(&mut self, index: usize) {
        let Some(mut life) = self.replicas[index].life.take() else {
            return;
        };
        // SIGKILL: no destructor, rollback or goodbye runs in the replica.
        let _ = life.child.start_kill();
        let _ = life.child.wait().await;
        // Its last tally lines are read before its pipe's end.
        let _ = life.reader.await;
        self.ended = self.ended + *life.tally.lock().expect("tally");
        self.kills += 1;
    }

    /// Starts replica `index` again on its port, killing it first if it runs.
    pub async fn restart(&mut self, index: usize) -> Result<(), StoreError> {
        self.kill(index).await;
        self.launch(index).await
    }

    /// Replica kills so far.
    pub fn kills(&self) -> usize {
        self.kills
    }

    /// Arms replica `index` to freeze the first handler of `payment_id`
    /// that reaches `point` (see [`FaultPlan::stall`](crate::FaultPlan::stall)).
    pub async fn stall(
        &mut self,
        index: usize,
        payment_id: &str,
        point: StallPoint,
    ) -> Result<(), StoreError> {
        let life = self.replicas[index]
            .life
            .as_mut()
            .ok_or_else(|| StoreError::msg(format!("replica {index} is not running")))?;
        let line = format!("stall {payment_id} {}\n", stall_point_name(point));
        life.commands
            .write_all(line.as_bytes())
            .await
            .map_err(|error| StoreError::new("cannot command a replica", error))
    }

    /// Waits up to `within` for replica `index` to freeze on one of its
    /// armed stalls; returns the payment it froze on.
    pub async fn stalled(&self, index: usize, within: Duration) -> Option<String> {
        let mut stalled = self.replicas[index].life.as_ref()?.stalled.clone();
        tokio::time::timeout(within, stalled.wait_for(|ids| !ids.is_empty()))
            .await
            .ok()?
            .ok()?
            .first()
            .cloned()
    }

    /// Kills every replica.
    pub async fn shutdown(mut self) {
        for index in 0..self.replicas.len() {
            self.kill(index).await;
        }
    }

    /// Starts a life of replica `index`, on its port if it had one.
    async fn launch(&mut self, index: usize) -> Result<(), StoreError> {
        let replica = &mut self.replicas[index];
        let seed = self.config.seed ^ ((index as u64) << 32) ^ replica.lives;
        let mut child = Command::new(&self.config.binary)
            .arg("serve")
            .args(["--store", &self.config.cluster.backend.flag()])
            .args(["--prefix", &self.config.cluster.prefix])
            .args(["--listen", &replica.address.to_string()])
            .args(["--fault-rate", &self.config.fault_rate.to_string()])
            .args(["--seed", &seed.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| {
                StoreError::new(
                    format!("cannot start {}", self.config.binary.display()),
                    error,
                )
            })?;
        let commands = child.stdin.take().expect("a piped stdin");
        let mut lines = BufReader::new(child.stdout.take().expect("a piped stdout")).lines();
        let address = match tokio::time::timeout(START_WITHIN, first_address(&mut lines)).await {
            Ok(Some(address)) => address,
            failed => {
                let _ = child.start_kill();
                let status = child.wait().await.ok();
                let why = if failed.is_err() { "in time" } else { "at all" };
                return Err(StoreError::msg(format!(
                    "replica {index} did not listen {why} (exit status {status:?})"
                )));
            }
        };
        let tally = Arc::new(Mutex::new(ServerTally::default()));
        let (stalled_tx, stalled) = watch::channel(Vec::new());
        let reader = tokio::spawn(follow(lines, tally.clone(), stalled_tx));
        replica.address = address;
        replica.lives += 1;
        replica.life = Some(Life {
            child,
            commands,
            tally,
            stalled,
            reader,
        });
        Ok(())
    }
}

impl Replicas for ReplicaProcesses {
    fn tally(&self) -> ServerTally {
        let running = self
            .replicas
            .iter()
            .filter_map(|replica| replica.life.as_ref())
            .map(|life| *life.tally.lock().expect("tally"));
        self.ended + running.sum()
    }

    async fn snapshot(&self) -> Result<LedgerSnapshot, StoreError> {
        self.database.snapshot().await
    }
}

type Lines = tokio::io::Lines<BufReader<ChildStdout>>;

/// Reads lines up to `listening ADDR`; `None` if the process ended first.
async fn first_address(lines: &mut Lines) -> Option<SocketAddr> {
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(address) = line.strip_prefix("listening ") {
            return address.parse().ok();
        }
    }
    None
}

/// Follows a replica's output until it ends: its tallies and its stalls.
async fn follow(
    mut lines: Lines,
    tally: Arc<Mutex<ServerTally>>,
    stalled: watch::Sender<Vec<String>>,
) {
    while let Ok(Some(line)) = lines.next_line().await {
        if let Ok(counted) = line.parse::<ServerTally>() {
            *tally.lock().expect("tally") = counted;
        } else if let Some(payment_id) = line.strip_prefix("stalled ") {
            stalled.send_modify(|ids| ids.push(payment_id.to_owned()));
        }
    }
}
