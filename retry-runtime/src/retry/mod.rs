//! The retry half: what `#[retry]` and [`RetryPolicy`](crate::RetryPolicy)
//! run. A policy ([`policy`]) is a backoff ([`backoff`]) with jitter
//! ([`jitter`]), the codes it retries, timeouts and a deadline; the engine
//! ([`engine`]) runs one call's attempts under it, asking a budget
//! ([`budget`]) before each retry and counting what it did ([`telemetry`]);
//! a call inside another's attempt shares its retries ([`nest`]).

#[cfg(feature = "tonic")]
pub(crate) mod attempt_header;
pub(crate) mod backoff;
pub(crate) mod budget;
pub(crate) mod engine;
pub(crate) mod hedge;
pub(crate) mod jitter;
pub(crate) mod nest;
pub(crate) mod policy;
pub(crate) mod telemetry;
