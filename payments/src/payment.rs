//! A logical payment, as the client generates it (once, before any retry).

use std::fmt;

/// What a payment does to the accounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Movement {
    /// Money into `account`, from outside the ledger.
    Deposit {
        /// The credited account.
        account: String,
    },
    /// Money from one account to another.
    Transfer {
        /// The debited account.
        from: String,
        /// The credited account.
        to: String,
    },
}

/// A payment: its idempotency key (`id`), what it moves and how much.
///
/// ```
/// use steadfast_payments::{Movement, Payment};
///
/// let payment = Payment {
///     id: "run-1-000042".into(),
///     movement: Movement::Transfer { from: "b".into(), to: "a".into() },
///     cents: 250,
/// };
/// // Legs in account order, so that concurrent transfers lock rows in one order.
/// assert_eq!(payment.legs(), vec![("a", 250), ("b", -250)]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    /// The idempotency key, generated once per payment.
    pub id: String,
    /// What it moves.
    pub movement: Movement,
    /// How much, in cents (positive).
    pub cents: i64,
}

impl Payment {
    /// The balance changes it makes, sorted by account name.
    pub fn legs(&self) -> Vec<(&str, i64)> {
        let mut legs = match &self.movement {
            Movement::Deposit { account } => vec![(account.as_str(), self.cents)],
            Movement::Transfer { from, to } => {
                vec![(from.as_str(), -self.cents), (to.as_str(), self.cents)]
            }
        };
        legs.sort_unstable();
        legs
    }

    /// `deposit` or `transfer`: the `kind` column of its row.
    pub fn kind(&self) -> &'static str {
        match self.movement {
            Movement::Deposit { .. } => "deposit",
            Movement::Transfer { .. } => "transfer",
        }
    }

    /// The account whose balance its receipt reports: the debited account
    /// of a transfer, the credited account of a deposit.
    pub fn reported_account(&self) -> &str {
        match &self.movement {
            Movement::Deposit { account } => account,
            Movement::Transfer { from, .. } => from,
        }
    }

    /// The debited account, if any.
    pub fn from_account(&self) -> Option<&str> {
        match &self.movement {
            Movement::Deposit { .. } => None,
            Movement::Transfer { from, .. } => Some(from),
        }
    }

    /// The credited account.
    pub fn to_account(&self) -> &str {
        match &self.movement {
            Movement::Deposit { account } => account,
            Movement::Transfer { to, .. } => to,
        }
    }
}

impl fmt::Display for Payment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.movement {
            Movement::Deposit { account } => {
                write!(f, "{}: deposit {} to {account}", self.id, self.cents)
            }
            Movement::Transfer { from, to } => {
                write!(f, "{}: transfer {} {from} → {to}", self.id, self.cents)
            }
        }
    }
}

/// `count` payments between `accounts` accounts (`acct-00`, `acct-01`, …),
/// the same for the same `seed`: one in five a deposit, the rest transfers,
/// 1 to 500 cents each. Ids are `{run}-{index:06}`.
pub fn generate(run: &str, count: usize, accounts: usize, seed: u64) -> Vec<Payment> {
    assert!(accounts >= 2, "transfers need two accounts");
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..count)
        .map(|index| {
            let cents = rng.i64(1..=500);
            let from = rng.usize(..accounts);
            let movement = if rng.u8(..5) == 0 {
                Movement::Deposit {
                    account: account_name(from),
                }
            } else {
                let to = (from + rng.usize(1..accounts)) % accounts;
                Movement::Transfer {
                    from: account_name(from),
                    to: account_name(to),
                }
            };
            Payment {
                id: format!("{run}-{index:06}"),
                movement,
                cents,
            }
        })
        .collect()
}

/// The name of account `index`.
pub fn account_name(index: usize) -> String {
    format!("acct-{index:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_seeded_and_valid() {
        let first = generate("r", 500, 4, 7);
        assert_eq!(first, generate("r", 500, 4, 7));
        assert_ne!(first, generate("r", 500, 4, 8));
        for payment in &first {
            assert!((1..=500).contains(&payment.cents));
            if let Movement::Transfer { from, to } = &payment.movement {
                assert_ne!(from, to, "{payment}");
            }
        }
        let deposits = first.iter().filter(|p| p.kind() == "deposit").count();
        assert!((50..150).contains(&deposits), "{deposits} deposits of 500");
    }
}
