//! [`RedisStore`]: idempotency records in Redis, one hash per record,
//! changed only by Lua scripts (each one atomic on its record).

use std::{
    fmt,
    sync::{Arc, LazyLock},
    time::Duration,
};

use redis::{
    Script,
    aio::{ConnectionManager, ConnectionManagerConfig},
};

use super::{
    Claim, ClaimRequest, Completion, FENCED_LEASE, Fingerprint, IdempotencyStore, Millis,
    RecordKey, StoreError, StoreFuture, StoredResult, now_millis, store::spawn_release,
};

/// How long Redis keeps a record past its expiry by the caller's clock.
/// Expiry is decided by each script's condition against the caller's `now`;
/// Redis's own expiry (a duration counted on Redis's clock from the
/// caller's times) only collects garbage, a minute late so that replicas
/// whose clocks disagree by less than that never see a live record vanish.
const EXPIRY_GRACE: Millis = 60_000;

/// Inserts a claim, takes over an expired record (or a lapsed claim whose
/// fingerprint does not differ), or reports the record found.
/// ARGV: token, fingerprint (`""`: none), now, lease_until, expires_at, keep (ms).
static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local record = redis.call('HMGET', KEYS[1], 'token', 'fingerprint', 'lease_until', 'expires_at', 'payload')
if record[1] then
  local now = tonumber(ARGV[3])
  local done = record[5] ~= false
  if record[1] == ARGV[1] and not done then return {'claimed'} end
  local differs = record[2] and ARGV[2] ~= '' and record[2] ~= ARGV[2]
  local takeable = tonumber(record[4]) <= now or (not done and tonumber(record[3]) <= now and not differs)
  if not takeable then
    if done then return {'completed', record[2] or '', record[5]} end
    return {'in_progress', record[2] or '', record[3]}
  end
  redis.call('DEL', KEYS[1])
end
redis.call('HSET', KEYS[1], 'token', ARGV[1], 'lease_until', ARGV[4], 'expires_at', ARGV[5])
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'fingerprint', ARGV[2]) end
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return {'claimed'}
",
    )
});

/// Stores the result under the token. ARGV: token, payload, expires_at, keep (ms).
static COMPLETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local record = redis.call('HMGET', KEYS[1], 'token', 'payload')
if record[1] ~= ARGV[1] or record[2] then return 0 end
redis.call('HSET', KEYS[1], 'payload', ARGV[2], 'expires_at', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
",
    )
});

/// Deletes an unfenced claim under the token. ARGV: token, the least fenced
/// lease.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local record = redis.call('HMGET', KEYS[1], 'token', 'payload', 'lease_until')
if record[1] ~= ARGV[1] or record[2] or tonumber(record[3]) >= tonumber(ARGV[2]) then return 0 end
redis.call('DEL', KEYS[1])
return 1
",
    )
});

/// Moves an unfenced claim's lease under the token, and raises its expiry
/// (field and key) to at least the new lease, so that a claim being renewed
/// never expires. ARGV: token, lease_until, the least fenced lease, keep (ms from
/// now to the new lease, plus the grace).
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local record = redis.call('HMGET', KEYS[1], 'token', 'payload', 'lease_until', 'expires_at')
if record[1] ~= ARGV[1] or record[2] or tonumber(record[3]) >= tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], 'lease_until', ARGV[2])
if tonumber(ARGV[2]) > tonumber(record[4]) then
  redis.call('HSET', KEYS[1], 'expires_at', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
return 1
",
    )
});

/// Deletes the expired records among KEYS (other types are left alone):
/// `expires_at <= now`. A lapsed claim is kept until then, like any record:
/// it still refuses other payloads. ARGV: now.
static PURGE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local now = tonumber(ARGV[1])
local purged = 0
for _, key in ipairs(KEYS) do
  if redis.call('TYPE', key).ok == 'hash' then
    local record = redis.call('HMGET', key, 'token', 'expires_at')
    if record[1] and record[2] and tonumber(record[2]) <= now then
      redis.call('DEL', key)
      purged = purged + 1
    end
  end
end
return purged
",
    )
});

/// Idempotency records in Redis: for services whose replicas already share
/// a Redis (feature `redis`).
///
/// Each record is a hash at `<prefix>:<SHA-256 of scope and key, in hex>`
/// with the fields `token`, `fingerprint`, `lease_until`, `expires_at` and
/// `payload`, changed only by Lua scripts, each atomic on its record: a
/// claim is one round trip (`EVALSHA`), and so is every other operation.
/// Expiry is each script's condition against the caller's `now`, like the SQL
/// stores; Redis's `PEXPIRE` only collects records a minute after they
/// expired.
///
/// Redis cannot join the body's database transaction, so it has no `fence`:
/// keep the effects and the record in one SQL database when a crash between
/// them must not re-run the body. A single Redis server (or a primary with
/// replicas; not Redis Cluster, whose `purge_expired` scan would see one node).
/// Durability is Redis's: run it with `maxmemory-policy noeviction` (every
/// record carries an expiry, so any `volatile-*` or `allkeys-*` policy may
/// evict live records under memory pressure, and their duplicates run
/// again; [`migrate`](RedisStore::migrate) warns otherwise) and with AOF
/// (`appendfsync always`), else a restart forgets recent records. A failover
/// to an asynchronous replica can lose acknowledged claims and results the
/// same way.
///
/// ```no_run
/// use steadfast::idempotency::{Idempotency, IdempotencyError, RedisStore};
/// # async fn example() -> Result<(), IdempotencyError> {
/// let store = RedisStore::connect("redis://127.0.0.1:6379")
///     .await?
///     .with_prefix("payments")?;
/// store.migrate().await?;
/// let receipt: Result<u64, IdempotencyError> = Idempotency::new(&store)
///     .key("payment-42")
///     .run(|| async { Ok(500) })
///     .await;
/// assert_eq!(receipt?, 500);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    connection: ConnectionManager,
    prefix: Arc<str>,
}

impl RedisStore {
    /// The default key prefix: records are `steadfast_idempotency:<64 hex digits>`.
    pub const DEFAULT_PREFIX: &'static str = "steadfast_idempotency";

    /// Connects to `url` (`redis://[:password@]host:port[/db]`, or
    /// `rediss://` with a TLS-enabled build of `redis`) through a
    /// reconnecting, multiplexed connection whose commands time out after
    /// 5 s (a store that does not answer fails closed).
    pub async fn connect(url: &str) -> Result<RedisStore, StoreError> {
        let client = redis::Client::open(url)
            .map_err(|error| StoreError::new("invalid Redis URL", error))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(2);
        let connection = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|error| StoreError::new("cannot connect to Redis", error))?;
        Ok(RedisStore::from_connection(connection))
    }

    /// A store over an existing connection, with the prefix
    /// [`DEFAULT_PREFIX`](RedisStore::DEFAULT_PREFIX).
    pub fn from_connection(connection: ConnectionManager) -> RedisStore {
        RedisStore {
            connection,
            prefix: Arc::from(RedisStore::DEFAULT_PREFIX),
        }
    }

    /// The same store with the key prefix `prefix` (1 to 63 ASCII letters,
    /// digits, `_`, `-` or `.`); an error for any other.
    pub fn with_prefix(self, prefix: &str) -> Result<RedisStore, StoreError> {
        let valid = (1..=63).contains(&prefix.len())
            && prefix
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'.'));
        if !valid {
            return Err(StoreError::msg(format!(
                "invalid Redis key prefix {prefix:?}: expected 1 to 63 ASCII letters, digits, '_', '-' or '.'"
            )));
        }
        Ok(RedisStore {
            connection: self.connection,
            prefix: Arc::from(prefix),
        })
    }

    /// Loads the scripts into the server: nothing else to create, but it
    /// checks that the server answers and runs Lua, and logs a warning if
    /// its `maxmemory-policy` may evict records. Idempotent.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let mut connection = self.connection.clone();
        // Managed services may forbid CONFIG: then there is nothing to check.
        let policy: Result<(String, String), _> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("maxmemory-policy")
            .query_async(&mut connection)
            .await;
        if let Ok((_, policy)) = policy
            && policy != "noeviction"
        {
            tracing::warn!(
                policy,
                "Redis evicts keys under memory pressure (maxmemory-policy {policy}); evicted idempotency records let duplicates run again: use noeviction"
            );
        }
        for script in [&*CLAIM, &*COMPLETE, &*RELEASE, &*RENEW, &*PURGE] {
            script
                .load_async(&mut connection)
                .await
                .map_err(|error| StoreError::new("Redis migrate: load scripts", error))?;
        }
        Ok(())
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The Redis key of `key`.
    fn record(&self, key: &RecordKey) -> String {
        use std::fmt::Write;
        let mut name = String::with_capacity(self.prefix.len() + 65);
        name.push_str(&self.prefix);
        name.push(':');
        for byte in key.hash() {
            let _ = write!(name, "{byte:02x}");
        }
        name
    }

    async fn claim_record(&self, request: &ClaimRequest<'_>) -> Result<Claim, StoreError> {
        let fingerprint: &[u8] = request.fingerprint.as_ref().map_or(&[], |f| &f.0);
        let keep = request.expires_at.saturating_sub(request.now).max(0) + EXPIRY_GRACE;
        let reply: Vec<Vec<u8>> = CLAIM
            .key(self.record(request.key))
            .arg(request.token.to_string())
            .arg(fingerprint)
            .arg(request.now)
            .arg(request.lease_until)
            .arg(request.expires_at)
            .arg(keep)
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(|error| StoreError::new("Redis claim", error))?;
        decode_claim(reply)
    }

    async fn release_record(
        connection: &mut ConnectionManager,
        record: String,
        token: u64,
    ) -> Result<bool, StoreError> {
        let released: i64 = RELEASE
            .key(record)
            .arg(token.to_string())
            .arg(FENCED_LEASE)
            .invoke_async(connection)
            .await
            .map_err(|error| StoreError::new("Redis release", error))?;
        Ok(released == 1)
    }

    /// Runs `script` on `key`'s record under `token` with `args`, then how
    /// long Redis keeps the record (past `until`, by a grace); whether the
    /// token held.
    async fn under_token(
        &self,
        what: &str,
        script: &Script,
        key: &RecordKey,
        token: u64,
        args: impl redis::ToRedisArgs,
        until: Millis,
    ) -> Result<bool, StoreError> {
        let keep = until.saturating_sub(now_millis()).max(0) + EXPIRY_GRACE;
        let acted: i64 = script
            .key(self.record(key))
            .arg(token.to_string())
            .arg(args)
            .arg(keep)
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(|error| StoreError::new(format!("Redis {what}"), error))?;
        Ok(acted == 1)
    }

    /// The keys of every record under the prefix, a batch at a time, purged
    /// by one script call per batch.
    async fn purge(&self, now: Millis) -> Result<u64, StoreError> {
        let mut connection = self.connection.clone();
        let pattern = format!("{}:{}", self.prefix, "?".repeat(64));
        let mut cursor = 0_u64;
        let mut purged = 0_u64;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(500)
                .query_async(&mut connection)
                .await
                .map_err(|error| StoreError::new("Redis purge: scan", error))?;
            if !keys.is_empty() {
                let mut invocation = PURGE.prepare_invoke();
                for key in &keys {
                    invocation.key(key);
                }
                let count: u64 = invocation
                    .arg(now)
                    .invoke_async(&mut connection)
                    .await
                    .map_err(|error| StoreError::new("Redis purge", error))?;
                purged += count;
            }
            if next == 0 {
                return Ok(purged);
            }
            cursor = next;
        }
    }
}

/// The claim script's reply: `claimed`, `completed fingerprint payload` or
/// `in_progress fingerprint lease_until`.
fn decode_claim(reply: Vec<Vec<u8>>) -> Result<Claim, StoreError> {
    let unexpected = || StoreError::msg("Redis claim: unexpected reply from the claim script");
    let mut fields = reply.into_iter();
    let outcome = fields.next().ok_or_else(unexpected)?;
    match outcome.as_slice() {
        b"claimed" => Ok(Claim::Claimed),
        b"completed" => {
            let fingerprint = decode_fingerprint(fields.next().ok_or_else(unexpected)?)?;
            let payload = fields.next().ok_or_else(unexpected)?;
            Ok(Claim::Completed(StoredResult {
                fingerprint,
                payload,
            }))
        }
        b"in_progress" => {
            let fingerprint = decode_fingerprint(fields.next().ok_or_else(unexpected)?)?;
            let lease_until = fields
                .next()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .and_then(|text| text.parse::<Millis>().ok())
                .ok_or_else(unexpected)?;
            Ok(Claim::InProgress {
                lease_until,
                fingerprint,
            })
        }
        _ => Err(unexpected()),
    }
}

/// A stored fingerprint field (empty: none), checked.
fn decode_fingerprint(bytes: Vec<u8>) -> Result<Option<Fingerprint>, StoreError> {
    if bytes.is_empty() {
        return Ok(None);
    }
    Fingerprint::from_stored(&bytes).map(Some)
}

impl IdempotencyStore for RedisStore {
    fn claim<'a>(&'a self, request: &'a ClaimRequest<'a>) -> StoreFuture<'a, Claim> {
        Box::pin(self.claim_record(request))
    }

    fn complete<'a>(&'a self, completion: Completion<'a>) -> StoreFuture<'a, bool> {
        let Completion { key, token, .. } = completion;
        let args = (completion.payload, completion.expires_at);
        Box::pin(self.under_token(
            "complete",
            &COMPLETE,
            key,
            token,
            args,
            completion.expires_at,
        ))
    }

    fn release<'a>(&'a self, key: &'a RecordKey, token: u64) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            RedisStore::release_record(&mut self.connection.clone(), self.record(key), token).await
        })
    }

    fn renew<'a>(&'a self, key: &'a RecordKey, token: u64, until: Millis) -> StoreFuture<'a, bool> {
        Box::pin(self.under_token("renew", &RENEW, key, token, (until, FENCED_LEASE), until))
    }

    fn purge_expired(&self, now: Millis) -> StoreFuture<'_, u64> {
        Box::pin(self.purge(now))
    }

    /// Spawns the release on the current tokio runtime (nothing without
    /// one: the claim then lapses with its lease).
    fn release_detached(&self, key: RecordKey, token: u64) {
        let (mut connection, record) = (self.connection.clone(), self.record(&key));
        spawn_release(
            async move { RedisStore::release_record(&mut connection, record, token).await },
        );
    }

    /// A clone: the connection manager is shared.
    fn shared(&self) -> Option<std::sync::Arc<dyn IdempotencyStore>> {
        Some(std::sync::Arc::new(self.clone()))
    }

    /// Its prefix, shared by its clones.
    fn identity(&self) -> usize {
        std::sync::Arc::as_ptr(&self.prefix).cast::<u8>() as usize
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_replies_decode_and_bad_ones_are_errors() {
        let bytes = |parts: &[&[u8]]| parts.iter().map(|part| part.to_vec()).collect::<Vec<_>>();
        assert_eq!(decode_claim(bytes(&[b"claimed"])).unwrap(), Claim::Claimed);
        assert_eq!(
            decode_claim(bytes(&[b"in_progress", b"", b"1700000000123"])).unwrap(),
            Claim::InProgress {
                lease_until: 1_700_000_000_123,
                fingerprint: None
            }
        );
        let fingerprint = Fingerprint::of("payload");
        assert_eq!(
            decode_claim(bytes(&[b"completed", &fingerprint.0, b"result"])).unwrap(),
            Claim::Completed(StoredResult {
                fingerprint: Some(fingerprint),
                payload: b"result".to_vec()
            })
        );
        assert!(decode_claim(bytes(&[])).is_err());
        assert!(decode_claim(bytes(&[b"completed", b"short", b"x"])).is_err());
        assert!(decode_claim(bytes(&[b"in_progress", b"", b"soon"])).is_err());
        assert!(decode_claim(bytes(&[b"unknown"])).is_err());
    }
}
