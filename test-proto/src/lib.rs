//! Code generated from `proto/ledger.proto` for steadfast's tests: the
//! `steadfast.test.Ledger` service, its client and its server.

/// The `steadfast.test` package: messages, `ledger_client` and `ledger_server`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod ledger {
    tonic::include_proto!("steadfast.test");
}
