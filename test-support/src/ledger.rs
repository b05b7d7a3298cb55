//! The test gRPC service (feature `proto`): code generated from
//! `proto/ledger.proto`, the `steadfast.test.Ledger` service, its client
//! and its server, and [`serve`] / [`connect`] on loopback.

/// The `steadfast.test` package: messages, `ledger_client` and `ledger_server`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
mod generated {
    tonic::include_proto!("steadfast.test");
}

pub use generated::*;

use std::{net::SocketAddr, sync::Arc};

use generated::{
    ledger_client::LedgerClient,
    ledger_server::{Ledger, LedgerServer},
};
use tonic::transport::{Channel, Server, server::TcpIncoming};

/// A client of the test ledger over a tonic channel, as [`connect`] makes it.
pub type Client = LedgerClient<Channel>;

/// Serves `ledger` on a free port of 127.0.0.1 until the calling runtime ends.
pub async fn serve<L: Ledger>(ledger: Arc<L>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port on 127.0.0.1");
    let address = listener.local_addr().expect("a bound address");
    tokio::spawn(
        Server::builder()
            .add_service(LedgerServer::from_arc(ledger))
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    address
}

/// A client of the ledger at `address`.
pub async fn connect(address: SocketAddr) -> Client {
    LedgerClient::connect(format!("http://{address}"))
        .await
        .expect("the test server accepts connections")
}
