//! Parsing and checking the arguments of `#[idempotent(…)]`.

use std::time::Duration;

use proc_macro2::{Span, TokenStream};
use steadfast_macro_support::syntax::{
    AttributeArguments, Ctxt, Spanned, positive_duration, runtime_root, string_value, value_of,
};
use steadfast_macro_support::{parse_code_list, parse_in_progress};
use syn::{Expr, ExprPath, Meta, Path};

/// Each argument, with a value to show in messages.
const ARGUMENTS: [(&str, &str); 11] = [
    ("key", "req.request_id"),
    ("store", "self.store"),
    ("transaction", "tx"),
    ("scope", "req.tenant"),
    ("fingerprint", "(req.amount, &req.to)"),
    ("ttl", "\"24h\""),
    ("lease", "\"30s\""),
    ("in_progress", "\"wait(5s)\""),
    ("cache_errors", "\"InvalidArgument|FailedPrecondition\""),
    ("run_to_completion", "false"),
    ("crate", "::steadfast"),
];

/// The arguments of one `#[idempotent(…)]`, each checked on its own.
#[derive(Default)]
pub(crate) struct IdempotentArgs {
    pub(crate) key: Option<Expr>,
    pub(crate) store: Option<Expr>,
    /// `transaction = tx`: the name the body's transaction is bound to.
    pub(crate) transaction: Option<syn::Ident>,
    pub(crate) scope: Option<Expr>,
    pub(crate) fingerprint: Option<Expr>,
    pub(crate) ttl: Option<Spanned<Duration>>,
    pub(crate) lease: Option<Spanned<Duration>>,
    /// `None` inside: reject; `Some(d)`: wait up to `d`.
    pub(crate) in_progress: Option<Spanned<Option<Duration>>>,
    pub(crate) cache_errors: Option<Spanned<Vec<&'static str>>>,
    /// `run_to_completion = true|false`, and where it was written.
    pub(crate) run_to_completion: Option<syn::LitBool>,
    pub(crate) crate_path: Option<Path>,
}

impl AttributeArguments for IdempotentArgs {
    const ATTRIBUTE: &'static str = "idempotent";
    const ARGUMENTS: &'static [(&'static str, &'static str)] = &ARGUMENTS;

    fn set(&mut self, name: &str, meta: Meta, cx: &Ctxt) {
        self.set_one(name, meta, cx);
    }

    fn check(&self, cx: &Ctxt) {
        self.check_durations(cx);
        self.check_transaction(cx);
        if self.key.is_none() {
            cx.syn_error(syn::Error::new(
                Span::call_site(),
                "#[idempotent] needs `key = …`, the request's idempotency key, as in `key = req.request_id` or `key = request.metadata().get(\"idempotency-key\")`",
            ));
        }
    }
}

impl IdempotentArgs {
    /// `lease` of at least 1 ms, `ttl` longer than `lease` (with the
    /// defaults for the one not given), each reported at its literal.
    fn check_durations(&self, cx: &Ctxt) {
        const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
        const DEFAULT_LEASE: Duration = Duration::from_secs(30);
        if let Some(lease) = &self.lease
            && lease.value < Duration::from_millis(1)
        {
            cx.error_spanned_by(
                &lease.literal,
                "`lease` must be at least 1ms: stores count leases in milliseconds, so a shorter one would lapse at once and every duplicate would take the claim over; write `lease = \"1ms\"` or more (the default is \"30s\")",
            );
            return;
        }
        let ttl = self.ttl.as_ref().map_or(DEFAULT_TTL, |ttl| ttl.value);
        let lease = self
            .lease
            .as_ref()
            .map_or(DEFAULT_LEASE, |lease| lease.value);
        if ttl <= lease {
            let at = match (&self.ttl, &self.lease) {
                (Some(ttl), _) => &ttl.literal,
                (None, Some(lease)) => &lease.literal,
                (None, None) => return,
            };
            cx.error_spanned_by(
                at,
                format!(
                    "the ttl ({ttl:?}) must exceed the lease ({lease:?}): a result is kept for the ttl after its body ends, and a claim must not outlive the record it guards; write a ttl longer than the lease, as in `ttl = \"24h\", lease = \"30s\"`"
                ),
            );
        }
    }

    /// `transaction` runs the body in a transaction of the store's
    /// database, so it needs a store named, an SQL one.
    fn check_transaction(&self, cx: &Ctxt) {
        if let (Some(name), None) = (&self.transaction, &self.store) {
            cx.error_spanned_by(
                name,
                format!(
                    "`transaction = {name}` runs the body in a transaction of the store's database, so it needs `store = …`, an SQL store (`SqliteStore`, `PostgresStore`, `MySqlStore`), as in `store = self.store, transaction = {name}`"
                ),
            );
        }
    }

    fn set_one(&mut self, name: &str, meta: Meta, cx: &Ctxt) {
        let example = Self::example(name);
        let Some(value) = value_of(meta, name, example, cx) else {
            return;
        };
        match name {
            "key" => self.key = Some(value),
            "store" => self.store = Some(value),
            "transaction" => match value {
                Expr::Path(ExprPath { path, .. }) if path.get_ident().is_some() => {
                    self.transaction = path.get_ident().cloned();
                }
                other => cx.error_spanned_by(
                    other,
                    "`transaction` takes the name the body's transaction is bound to, as in `transaction = tx` (then `sqlx::query(…).execute(&mut *tx)`)",
                ),
            },
            "scope" => self.scope = Some(value),
            "fingerprint" => self.fingerprint = Some(value),
            "ttl" => self.ttl = positive_duration(&value, name, example, cx),
            "lease" => self.lease = positive_duration(&value, name, example, cx),
            "in_progress" => {
                self.in_progress = string_value(&value, name, example, cx, parse_in_progress);
            }
            "cache_errors" => {
                self.cache_errors = string_value(&value, name, example, cx, parse_code_list);
            }
            "run_to_completion" => match value {
                Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Bool(flag),
                    ..
                }) => self.run_to_completion = Some(flag),
                other => cx.error_spanned_by(
                    other,
                    "`run_to_completion` takes `true` or `false`, as in `run_to_completion = false`",
                ),
            },
            "crate" => match value {
                Expr::Path(ExprPath { path, .. }) => self.crate_path = Some(path),
                other => {
                    cx.error_spanned_by(other, "`crate` takes a path, as in `crate = ::steadfast`")
                }
            },
            _ => unreachable!("every argument in ARGUMENTS is handled"),
        }
    }

    /// Rewrites the expressions (`key`, `store`, `scope`, `fingerprint`) with `rewrite`.
    pub(crate) fn rewrite_exprs(&mut self, rewrite: impl Fn(&Expr) -> TokenStream) {
        for expr in [
            &mut self.key,
            &mut self.store,
            &mut self.scope,
            &mut self.fingerprint,
        ]
        .into_iter()
        .flatten()
        {
            if let Ok(rewritten) = syn::parse2(rewrite(expr)) {
                *expr = rewritten;
            }
        }
    }

    /// The root of the runtime in generated code.
    pub(crate) fn root(&self) -> Path {
        runtime_root(self.crate_path.as_ref())
    }
}
