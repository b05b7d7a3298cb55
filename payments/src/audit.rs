//! The end-of-run check: does the database's ledger match what the clients
//! were told, with every payment executed once?

use std::collections::{BTreeMap, HashMap};

use tonic::Status;

use crate::{LedgerSnapshot, Payment, proto::Receipt};

/// What the audit found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Audit {
    /// Payments the clients were told succeeded.
    pub acknowledged: usize,
    /// Payments whose client gave up (the error is the last one it saw).
    pub failed: usize,
    /// Of those, how many did execute (their row exists): the client gave
    /// up on an answer, not on the payment.
    pub failed_but_executed: usize,
    /// Rows beyond the first per payment, as the database counts them.
    pub duplicate_rows: i64,
    /// Payment ids with more than one row.
    pub duplicated: Vec<String>,
    /// Acknowledged payments without a row.
    pub lost: Vec<String>,
    /// Rows that match no issued payment, or whose accounts or amount
    /// differ from it.
    pub foreign_rows: Vec<String>,
    /// Acknowledged payments whose receipt names another row than the one
    /// that exists (a replay must return the first execution's receipt).
    pub receipt_mismatches: Vec<String>,
    /// Accounts whose balance is not opening balance plus the rows' effects:
    /// `(account, expected, actual)`.
    pub balance_mismatches: Vec<(String, i64, i64)>,
    /// Opening total plus deposits, by the rows.
    pub expected_total: i64,
    /// The sum of balances, by the database.
    pub actual_total: i64,
}

impl Audit {
    /// Compares the ledger with the payments and what their clients got.
    pub fn new(
        opening: &BTreeMap<String, i64>,
        payments: &[Payment],
        results: &[Result<Receipt, Status>],
        ledger: &LedgerSnapshot,
    ) -> Audit {
        assert_eq!(payments.len(), results.len(), "one result per payment");
        let mut audit = Audit {
            duplicate_rows: ledger.duplicate_rows,
            actual_total: ledger.total,
            ..Audit::default()
        };
        let issued: HashMap<&str, &Payment> = payments
            .iter()
            .map(|payment| (payment.id.as_str(), payment))
            .collect();

        let mut rows_by_payment: HashMap<&str, Vec<&crate::TransferRow>> = HashMap::new();
        let mut expected = opening.clone();
        let mut deposits = 0;
        for row in &ledger.rows {
            rows_by_payment
                .entry(row.payment_id.as_str())
                .or_default()
                .push(row);
            let matches = issued.get(row.payment_id.as_str()).is_some_and(|payment| {
                payment.kind() == row.kind
                    && payment.from_account() == row.from_account.as_deref()
                    && payment.to_account() == row.to_account
                    && payment.cents == row.cents
            });
            if !matches {
                audit.foreign_rows.push(row.transfer_id.clone());
            }
            if let Some(from) = &row.from_account {
                *expected.entry(from.clone()).or_default() -= row.cents;
            } else {
                deposits += row.cents;
            }
            *expected.entry(row.to_account.clone()).or_default() += row.cents;
        }
        audit.expected_total = opening.values().sum::<i64>() + deposits;

        for (payment_id, rows) in &rows_by_payment {
            if rows.len() > 1 {
                audit.duplicated.push((*payment_id).to_owned());
            }
        }
        audit.duplicated.sort();

        for (payment, result) in payments.iter().zip(results) {
            let rows = rows_by_payment.get(payment.id.as_str());
            match result {
                Ok(receipt) => {
                    audit.acknowledged += 1;
                    match rows {
                        None => audit.lost.push(payment.id.clone()),
                        Some(rows) => {
                            if !rows
                                .iter()
                                .any(|row| row.transfer_id == receipt.transfer_id)
                            {
                                audit.receipt_mismatches.push(payment.id.clone());
                            }
                        }
                    }
                }
                Err(_) => {
                    audit.failed += 1;
                    if rows.is_some() {
                        audit.failed_but_executed += 1;
                    }
                }
            }
        }

        let accounts: std::collections::BTreeSet<&String> =
            expected.keys().chain(ledger.balances.keys()).collect();
        for account in accounts {
            let want = expected.get(account).copied().unwrap_or_default();
            let have = ledger.balances.get(account).copied().unwrap_or_default();
            if want != have {
                audit.balance_mismatches.push((account.clone(), want, have));
            }
        }
        audit
    }

    /// The ledger is exact: no payment ran twice, none the clients were told
    /// about is missing, every row is an issued payment, every receipt names
    /// its row, and the balances (each one, and their sum by the database)
    /// are the opening balances plus the rows.
    pub fn exact(&self) -> bool {
        self.duplicate_rows == 0
            && self.duplicated.is_empty()
            && self.lost.is_empty()
            && self.foreign_rows.is_empty()
            && self.receipt_mismatches.is_empty()
            && self.balance_mismatches.is_empty()
            && self.expected_total == self.actual_total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Movement, TransferRow};

    fn transfer(id: &str, cents: i64) -> Payment {
        Payment {
            id: id.into(),
            movement: Movement::Transfer {
                from: "a".into(),
                to: "b".into(),
            },
            cents,
        }
    }

    fn row(transfer_id: &str, payment_id: &str, cents: i64) -> TransferRow {
        TransferRow {
            transfer_id: transfer_id.into(),
            payment_id: payment_id.into(),
            kind: "transfer".into(),
            from_account: Some("a".into()),
            to_account: "b".into(),
            cents,
        }
    }

    fn receipt(transfer_id: &str) -> Result<Receipt, Status> {
        Ok(Receipt {
            transfer_id: transfer_id.into(),
            balance: 0,
        })
    }

    fn opening() -> BTreeMap<String, i64> {
        BTreeMap::from([("a".into(), 1000), ("b".into(), 1000)])
    }

    fn ledger(rows: Vec<TransferRow>, a: i64, b: i64, duplicate_rows: i64) -> LedgerSnapshot {
        LedgerSnapshot {
            balances: BTreeMap::from([("a".into(), a), ("b".into(), b)]),
            total: a + b,
            duplicate_rows,
            rows,
        }
    }

    /// The audit of `payments` and what their clients got, against a ledger
    /// of `rows` with the given balances of `a` and `b`.
    fn audit_of(
        payments: &[Payment],
        results: &[Result<Receipt, Status>],
        rows: Vec<TransferRow>,
        a: i64,
        b: i64,
        duplicate_rows: i64,
    ) -> Audit {
        Audit::new(
            &opening(),
            payments,
            results,
            &ledger(rows, a, b, duplicate_rows),
        )
    }

    #[test]
    fn an_exact_ledger_passes() {
        let payments = [transfer("p1", 10), transfer("p2", 5)];
        let results = [receipt("t1"), Err(Status::unavailable("gave up"))];
        let audit = audit_of(&payments, &results, vec![row("t1", "p1", 10)], 990, 1010, 0);
        assert!(audit.exact(), "{audit:?}");
        assert_eq!((audit.acknowledged, audit.failed), (1, 1));
        assert_eq!(audit.failed_but_executed, 0);
    }

    #[test]
    fn a_duplicate_execution_fails_even_when_the_balances_agree() {
        let payments = [transfer("p1", 10)];
        let rows = vec![row("t1", "p1", 10), row("t2", "p1", 10)];
        let audit = audit_of(&payments, &[receipt("t1")], rows, 980, 1020, 1);
        assert!(!audit.exact());
        assert_eq!(audit.duplicated, vec!["p1".to_owned()]);
        assert!(
            audit.balance_mismatches.is_empty(),
            "the rows explain the balances"
        );
    }

    #[test]
    fn lost_payments_wrong_receipts_and_wrong_balances_fail() {
        let payments = [transfer("p1", 10), transfer("p2", 7)];
        let results = [receipt("t1"), receipt("t9")];
        let lost = audit_of(&payments, &results, vec![row("t1", "p1", 10)], 990, 1010, 0);
        assert_eq!(lost.lost, vec!["p2".to_owned()]);
        assert!(!lost.exact());

        let rows = vec![row("t1", "p1", 10), row("t2", "p2", 7)];
        let wrong_receipt = audit_of(&payments, &results, rows, 983, 1017, 0);
        assert_eq!(wrong_receipt.receipt_mismatches, vec!["p2".to_owned()]);

        let rows = vec![row("t1", "p1", 10)];
        let drifted = audit_of(&payments[..1], &results[..1], rows, 990, 1011, 0);
        assert_eq!(
            drifted.balance_mismatches,
            vec![("b".to_owned(), 1010, 1011)]
        );
        assert_ne!(drifted.expected_total, drifted.actual_total);
        assert!(!drifted.exact());
    }

    #[test]
    fn rows_of_unknown_or_altered_payments_fail() {
        let payments = [transfer("p1", 10)];
        let audit = audit_of(
            &payments,
            &[receipt("t1")],
            vec![row("t1", "p1", 11)],
            989,
            1011,
            0,
        );
        assert_eq!(audit.foreign_rows, vec!["t1".to_owned()]);
        assert!(!audit.exact());
    }
}
