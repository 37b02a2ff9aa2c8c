//! Where the Redis store keeps the overrides of the admin API (see `crate::overrides`, which
//! owns what they mean): one hash, `{prefix}{overrides}`, of opaque values by field, and a
//! version key, `{prefix}{overrides}:version`, bumped by every change in the same script, so
//! that replicas poll one small key and read the hash only when it moved. Both keys share the
//! hash tag `{overrides}`, so the scripts work on Redis Cluster too. Every call has the
//! store's command timeout; failures are returned as text for the caller to log or answer.

use std::future::Future;
use std::sync::LazyLock;

use redis::{FromRedisValue, Script};

use super::{Conn, Redis};

/// Sets a field unless the hash is full (`ARGV[3]` fields, not counting the one replaced):
/// returns the new version, or -1 when full.
static SET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then
  return -1
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return redis.call('INCR', KEYS[2])
",
    )
});

/// Deletes a field (only if it still holds `ARGV[2]`, when that is not empty): 1 if deleted.
static DELETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if ARGV[2] ~= '' and redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then
  return 0
end
local n = redis.call('HDEL', KEYS[1], ARGV[1])
if n == 1 then redis.call('INCR', KEYS[2]) end
return n
",
    )
});

/// The version and every field and value, read at one instant: `[version, f1, v1, f2, v2..]`.
static LOAD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local out = {redis.call('GET', KEYS[2]) or ''}
for _, x in ipairs(redis.call('HGETALL', KEYS[1])) do out[#out + 1] = x end
return out
",
    )
});

impl Redis {
    fn overrides_keys(&self) -> (String, String) {
        let prefix = &self.config.prefix;
        (format!("{prefix}{{overrides}}"), format!("{prefix}{{overrides}}:version"))
    }

    /// Runs `call` on the connection within the command timeout.
    async fn overrides_call<T, F, Fut>(&self, call: F) -> Result<T, String>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let Some(conn) = self.conn.load_full() else { return Err("not connected to redis yet".into()) };
        match tokio::time::timeout(self.config.command_timeout, call((*conn).clone())).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {:?}", self.config.command_timeout)),
        }
    }

    async fn overrides_script<T: FromRedisValue>(&self, script: &Script, args: &[&str]) -> Result<T, String> {
        let (hash, version) = self.overrides_keys();
        let mut invocation = script.prepare_invoke();
        invocation.key(hash).key(version);
        for a in args {
            invocation.arg(*a);
        }
        self.overrides_call(|conn| async move {
            match conn {
                Conn::Single(mut c) => invocation.invoke_async(&mut c).await,
                Conn::Cluster(mut c) => invocation.invoke_async(&mut c).await,
            }
        })
        .await
    }

    /// The version of the overrides: it changes with every change ("" before the first).
    pub async fn overrides_version(&self) -> Result<String, String> {
        let (_, key) = self.overrides_keys();
        let version: Option<String> = self
            .overrides_call(|conn| async move {
                let mut get = redis::cmd("GET");
                get.arg(key);
                match conn {
                    Conn::Single(mut c) => get.query_async(&mut c).await,
                    Conn::Cluster(mut c) => get.query_async(&mut c).await,
                }
            })
            .await?;
        Ok(version.unwrap_or_default())
    }

    /// The version and every (field, value) it stands for.
    pub async fn overrides_load(&self) -> Result<(String, Vec<(String, Vec<u8>)>), String> {
        let reply: Vec<Vec<u8>> = self.overrides_script(&LOAD, &[]).await?;
        let mut values = reply.into_iter();
        let version = values.next().ok_or("an empty reply")?;
        let version = String::from_utf8(version).map_err(|_| "a version that is not text")?;
        let mut fields = Vec::with_capacity(values.len() / 2);
        while let (Some(field), Some(value)) = (values.next(), values.next()) {
            fields.push((String::from_utf8_lossy(&field).into_owned(), value));
        }
        Ok((version, fields))
    }

    /// Sets `field` to `value`, unless that would make more than `max` fields: `Ok(false)` then.
    pub async fn override_set(&self, field: &str, value: &str, max: usize) -> Result<bool, String> {
        let version: i64 = self.overrides_script(&SET, &[field, value, &max.to_string()]).await?;
        Ok(version >= 0)
    }

    /// Deletes `field`, if it still holds `only_if` when given; whether it was deleted.
    pub async fn override_delete(&self, field: &str, only_if: Option<&[u8]>) -> Result<bool, String> {
        let only_if = only_if.map(String::from_utf8_lossy).unwrap_or_default();
        let deleted: i64 = self.overrides_script(&DELETE, &[field, &only_if]).await?;
        Ok(deleted == 1)
    }
}
