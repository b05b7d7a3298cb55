//! Where the servers are: `STEADFAST_TEST_<NAME>_URL`, or this machine's.

/// PostgreSQL's URL (the store's and `pgbench`'s).
pub(crate) fn postgres_url() -> String {
    url("POSTGRES", "postgres://postgres@127.0.0.1:5432/test")
}

/// MariaDB's URL.
pub(crate) fn mysql_url() -> String {
    url("MYSQL", "mysql://root@127.0.0.1:3306/test")
}

/// Redis's URL.
pub(crate) fn redis_url() -> String {
    url("REDIS", "redis://127.0.0.1:6379")
}

/// `STEADFAST_TEST_<NAME>_URL`, or `default`.
fn url(name: &str, default: &str) -> String {
    std::env::var(format!("STEADFAST_TEST_{name}_URL")).unwrap_or_else(|_| default.to_owned())
}
