//! Replicas of the ledger service on loopback ports, sharing one database;
//! each runs on its own thread and runtime, so that killing one ends all its
//! tasks at once, as a crashed process would.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::Arc,
    thread::{self, JoinHandle},
};

use steadfast::idempotency::StoreError;
use tokio::sync::oneshot;
use tonic::transport::{Server, server::TcpIncoming};

use crate::{
    Backend, FaultLayer, FaultPlan, LedgerSnapshot, books::Database,
    proto::ledger_server::LedgerServer, service::LedgerService,
};

/// How to start a cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The database of the store and the money.
    pub backend: Backend,
    /// The tables' prefix (`{prefix}_accounts`, `{prefix}_transfers`,
    /// `{prefix}_idempotency`): runs with different prefixes can share a
    /// database.
    pub prefix: String,
    /// How many replicas.
    pub replicas: usize,
    /// The accounts and their opening balances.
    pub accounts: BTreeMap<String, i64>,
}

/// A running cluster.
#[derive(Debug)]
pub struct Cluster {
    database: Database,
    faults: Arc<FaultPlan>,
    replicas: Vec<Replica>,
}

/// One replica: its address, and while it runs, its thread.
#[derive(Debug)]
struct Replica {
    address: SocketAddr,
    running: Option<Running>,
}

#[derive(Debug)]
struct Running {
    kill: oneshot::Sender<()>,
    thread: JoinHandle<()>,
}

impl Cluster {
    /// Resets the ledger (tables created if missing, emptied, accounts
    /// opened) and starts `config.replicas` replicas on free ports of
    /// 127.0.0.1, each behind a [`FaultLayer`] with `faults`.
    pub async fn start(
        config: ClusterConfig,
        faults: Arc<FaultPlan>,
    ) -> Result<Cluster, StoreError> {
        let database = Database::new(config.backend, &config.prefix)?;
        database.reset(&config.accounts).await?;
        let mut cluster = Cluster {
            database,
            faults,
            replicas: Vec::new(),
        };
        for _ in 0..config.replicas.max(1) {
            let running = cluster
                .launch(SocketAddr::from(([127, 0, 0, 1], 0)))
                .await?;
            cluster.replicas.push(running);
        }
        Ok(cluster)
    }

    /// The replicas' addresses, in order (a killed replica keeps its
    /// address, and gets it back when restarted).
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.replicas
            .iter()
            .map(|replica| replica.address)
            .collect()
    }

    /// The fault plan shared by the replicas.
    pub fn faults(&self) -> &FaultPlan {
        &self.faults
    }

    /// The ledger as the database holds it now.
    pub async fn snapshot(&self) -> Result<LedgerSnapshot, StoreError> {
        self.database.snapshot().await
    }

    /// Kills replica `index`: its runtime is dropped, which aborts every
    /// task it runs (handlers mid-flight included) and closes its port.
    /// Returns when its thread has ended.
    pub async fn kill(&mut self, index: usize) {
        if let Some(running) = self.replicas[index].running.take() {
            let _ = running.kill.send(());
            tokio::task::spawn_blocking(move || running.thread.join())
                .await
                .expect("join the replica's thread")
                .expect("the replica's thread does not panic");
        }
    }

    /// Starts replica `index` again on its old port.
    pub async fn restart(&mut self, index: usize) -> Result<(), StoreError> {
        self.kill(index).await;
        let address = self.replicas[index].address;
        self.replicas[index] = self.launch(address).await?;
        Ok(())
    }

    /// Whether replica `index` runs.
    pub fn is_running(&self, index: usize) -> bool {
        self.replicas[index].running.is_some()
    }

    /// Stops every replica.
    pub async fn shutdown(mut self) {
        for index in 0..self.replicas.len() {
            self.kill(index).await;
        }
    }

    async fn launch(&self, address: SocketAddr) -> Result<Replica, StoreError> {
        let (ready_tx, ready_rx) = oneshot::channel();
        let (kill_tx, kill_rx) = oneshot::channel();
        let database = self.database.clone();
        let faults = self.faults.clone();
        let thread = thread::Builder::new()
            .name(format!("replica-{address}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a replica runtime");
                runtime.block_on(serve(database, faults, address, ready_tx, async {
                    let _ = kill_rx.await;
                }));
                // Dropping the runtime drops every task it still holds.
                drop(runtime);
            })
            .map_err(|error| StoreError::new("cannot start a replica thread", error))?;
        match ready_rx.await {
            Ok(Ok(address)) => Ok(Replica {
                address,
                running: Some(Running {
                    kill: kill_tx,
                    thread,
                }),
            }),
            Ok(Err(error)) => {
                let _ = thread.join();
                Err(error)
            }
            Err(_) => Err(StoreError::msg("a replica ended before it was ready")),
        }
    }
}

/// One replica's life: open the database, bind `address`, say on `ready`
/// where it listens, serve until `stop` completes.
pub(crate) async fn serve(
    database: Database,
    faults: Arc<FaultPlan>,
    address: SocketAddr,
    ready: oneshot::Sender<Result<SocketAddr, StoreError>>,
    stop: impl Future<Output = ()>,
) {
    let books = match database.open().await {
        Ok(books) => books,
        Err(error) => {
            let _ = ready.send(Err(error));
            return;
        }
    };
    let listener = match tokio::net::TcpListener::bind(address).await {
        Ok(listener) => listener,
        Err(error) => {
            let _ = ready.send(Err(StoreError::new(
                format!("cannot bind {address}"),
                error,
            )));
            return;
        }
    };
    let bound = listener.local_addr().expect("a bound address");
    let _ = ready.send(Ok(bound));
    let service = LedgerServer::new(LedgerService::new(books, faults.clone()));
    let server = Server::builder()
        .layer(FaultLayer::new(faults))
        .add_service(service)
        .serve_with_incoming(TcpIncoming::from(listener));
    tokio::select! {
        result = server => {
            if let Err(error) = result {
                tracing::error!(%error, "replica {bound} stopped");
            }
        }
        () = stop => {}
    }
}
