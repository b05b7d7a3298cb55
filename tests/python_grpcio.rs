//! A client we did not write: Python's grpcio, retrying with gRPC's own
//! retry policy (from its service config), against the payments server
//! under 30% injected faults. The ledger must stay exact: every payment
//! acknowledged, run once, with the receipt of its one row.
//!
//! Needs `python3` with `grpcio` (`python3 -m pip install grpcio`; `.ci/run`
//! installs it). Without it the test prints "skipped" and passes, except
//! under `CI=true`, where it fails.

use std::{
    io::Write,
    process::{Command, Stdio},
    sync::Arc,
};

use steadfast_payments::{
    Audit, Backend, Cluster, DemoConfig, Fault, FaultPlan, Movement, Payment, generate,
    proto::Receipt,
};
use tonic::{Code, Status};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/python/grpcio_payments.py"
);

/// Whether `python3` can import grpc; under `CI=true` it must.
fn python_with_grpcio() -> bool {
    let found = Command::new("python3")
        .args(["-c", "import grpc"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !found {
        steadfast_test_support::skip(
            "python3 with grpcio not found (python3 -m pip install grpcio)",
        );
    }
    found
}

/// One JSON line per payment, as the script reads them.
fn as_json_line(payment: &Payment) -> String {
    let value = match &payment.movement {
        Movement::Deposit { account } => serde_json::json!({
            "id": payment.id, "kind": "deposit", "account": account, "cents": payment.cents,
        }),
        Movement::Transfer { from, to } => serde_json::json!({
            "id": payment.id, "kind": "transfer", "from": from, "to": to, "cents": payment.cents,
        }),
    };
    format!("{value}\n")
}

/// The script's line for one payment, as the audit reads results.
fn parse_result(line: &serde_json::Value) -> Result<Receipt, Status> {
    if line["ok"].as_bool() == Some(true) {
        Ok(Receipt {
            transfer_id: line["transfer_id"]
                .as_str()
                .expect("a transfer id")
                .to_owned(),
            balance: line["balance"].as_i64().expect("a balance"),
        })
    } else {
        let code = line["code"].as_i64().expect("a status code") as i32;
        Err(Status::new(
            Code::from_i32(code),
            line["details"].as_str().unwrap_or_default().to_owned(),
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpcio_client_with_grpc_retry_policy_keeps_the_ledger_exact() {
    if !python_with_grpcio() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("steadfast-grpcio-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut config = DemoConfig::new(Backend::Sqlite(dir.join("ledger.db")))
        .payments(400)
        .fault_rate(0.3);
    config.prefix = "grpcio".to_owned();
    config.seed = 11;
    let faults = Arc::new(FaultPlan::new(config.fault_rate, config.seed));
    let cluster = Cluster::start(config.cluster(), Arc::clone(&faults))
        .await
        .unwrap();
    let payments = generate("grpcio", config.payments, config.accounts, config.seed);
    let input: String = payments.iter().map(as_json_line).collect();

    let address = cluster.addresses()[0].to_string();
    let output = tokio::task::spawn_blocking(move || {
        let mut child = Command::new("python3")
            .args([SCRIPT, &address])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 starts");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().expect("the script runs")
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "the script failed: {:?}",
        output.status
    );

    let lines: Vec<serde_json::Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), payments.len(), "one result per payment");
    for (line, payment) in lines.iter().zip(&payments) {
        assert_eq!(line["id"], payment.id.as_str(), "results in input order");
    }
    let results: Vec<Result<Receipt, Status>> = lines.iter().map(parse_result).collect();
    let ledger = cluster.snapshot().await.unwrap();
    let audit = Audit::new(&config.opening(), &payments, &results, &ledger);

    println!("| grpcio client, 1 replica, SQLite | |");
    println!("|---|---|");
    println!("| payments | {} |", payments.len());
    for kind in Fault::ALL {
        println!("| fault: {} | {} |", kind.describe(), faults.injected(kind));
    }
    let resent: u64 = lines
        .iter()
        .map(|line| line["sent"].as_u64().expect("a call count") - 1)
        .sum();
    let injected: u64 = Fault::ALL.iter().map(|&kind| faults.injected(kind)).sum();
    println!("| calls re-sent by the script (gRPC's retries exhausted) | {resent} |");
    let executions = ledger.rows.len();
    println!("| executions | {executions} |");
    println!("| acknowledged | {} |", audit.acknowledged);
    println!(
        "| ledger exact | {} |",
        if audit.exact() { "yes" } else { "no" }
    );

    assert!(audit.exact(), "{audit:#?}");
    assert_eq!(audit.acknowledged, payments.len(), "{audit:#?}");
    assert_eq!(executions, payments.len(), "each payment ran once");
    assert!(
        faults.injected(Fault::DropResponse) > 0,
        "the dangerous fault (ran, response dropped) happened"
    );
    assert!(
        resent * 4 < injected,
        "gRPC's retry policy absorbed the faults: {resent} re-sends for {injected} faults"
    );
    cluster.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
