//! [`EtcdConfig`]: where the etcd registry lives and the limits it keeps,
//! read from an `etcd://` URL.

use std::time::Duration;

use sop_core::{Error, Result};

/// etcd's default `--max-txn-ops`: operations per transaction (compares and
/// each branch are counted separately).
pub(super) const DEFAULT_MAX_TXN_OPS: usize = 128;
/// etcd's default `--max-request-bytes` (1.5 MiB).
pub(super) const DEFAULT_MAX_REQUEST_BYTES: usize = 3 << 19;
/// How long one request may take before it is abandoned (a write's outcome
/// is then resolved, never guessed).
pub(super) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Counter keys per store: concurrent commits to one store add to
/// different keys, so that unrelated inserts do not contend on one.
pub(super) const DEFAULT_COUNT_SHARDS: u32 = 16;

/// Open-time settings of an [`super::EtcdRegistry`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// The members' client addresses, `http://HOST:PORT`.
    pub endpoints: Vec<String>,
    /// The key prefix under which this database lives (several databases
    /// can share one etcd cluster under different prefixes, nested ones
    /// included). No trailing slash, no `#`; every key is `PREFIX#...`.
    pub prefix: String,
    /// The cluster's `--max-txn-ops`: a commit needing more operations in
    /// one etcd transaction is refused before anything is applied.
    pub max_txn_ops: usize,
    /// The cluster's `--max-request-bytes`.
    pub max_request_bytes: usize,
    /// The time bound of one request.
    pub timeout: Duration,
    /// Counter keys per store (at least 1).
    pub count_shards: u32,
}

impl EtcdConfig {
    /// A configuration with the defaults for `endpoints` and `prefix`.
    #[must_use]
    pub fn new(endpoints: Vec<String>, prefix: impl Into<String>) -> Self {
        Self {
            endpoints,
            prefix: prefix.into(),
            max_txn_ops: DEFAULT_MAX_TXN_OPS,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            timeout: DEFAULT_TIMEOUT,
            count_shards: DEFAULT_COUNT_SHARDS,
        }
    }

    /// Reads `etcd://HOST:PORT[,HOST:PORT...]/PREFIX[?OPTIONS]`, where
    /// OPTIONS are `&`-separated `max_txn_ops=N` (match the cluster's
    /// `--max-txn-ops`), `max_request_bytes=N`, `timeout_ms=N` and
    /// `count_shards=N`.
    ///
    /// # Errors
    /// `InvalidInput` naming what is wrong: another scheme, no member, a
    /// member without a port, an empty prefix, an unknown or bad option.
    pub fn from_url(url: &str) -> Result<Self> {
        let bad = |detail: String| Error::invalid("url", format!("{url:?}: {detail}"));
        let rest = url.strip_prefix("etcd://").ok_or_else(|| bad("not an etcd:// URL".into()))?;
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (hosts, prefix) =
            rest.split_once('/').ok_or_else(|| bad("needs a key prefix: etcd://HOST:PORT/PREFIX".into()))?;
        let prefix = prefix.trim_end_matches('/');
        if prefix.is_empty() {
            return Err(bad("needs a key prefix: etcd://HOST:PORT/PREFIX".into()));
        }
        let endpoints = hosts.split(',').map(|h| endpoint(h).map_err(&bad)).collect::<Result<Vec<_>>>()?;
        let mut config = Self::new(endpoints, prefix);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) =
                pair.split_once('=').ok_or_else(|| bad(format!("option {pair:?} has no value")))?;
            let n: u64 =
                value.parse().map_err(|_| bad(format!("option {name} wants a number, got {value:?}")))?;
            let size =
                |n: u64| usize::try_from(n).map_err(|_| bad(format!("option {name}: {n} is too large")));
            match name {
                "max_txn_ops" => config.max_txn_ops = size(n)?,
                "max_request_bytes" => config.max_request_bytes = size(n)?,
                "timeout_ms" => config.timeout = Duration::from_millis(n),
                "count_shards" => {
                    config.count_shards =
                        u32::try_from(n).map_err(|_| bad(format!("count_shards {n} is too large")))?;
                }
                _ => {
                    return Err(bad(format!(
                        "unknown option {name:?} (known: max_txn_ops, max_request_bytes, timeout_ms, count_shards)"
                    )));
                }
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks the limits.
    ///
    /// # Errors
    /// `InvalidInput` for no endpoint, an empty prefix, fewer than 8
    /// operations per transaction, under 64 KiB per request, a zero
    /// timeout or zero count shards.
    pub fn validate(&self) -> Result<()> {
        let bad = |detail: &str| Err(Error::invalid("etcd options", detail.to_owned()));
        if self.endpoints.is_empty() {
            return bad("no etcd endpoint");
        }
        if self.prefix.is_empty() {
            return bad("an empty key prefix");
        }
        if self.prefix.chars().any(|c| c == '#' || c.is_control()) {
            return bad("a key prefix may not contain '#' or control characters");
        }
        if self.max_txn_ops < 8 {
            return bad("max_txn_ops below 8 leaves no room for a commit");
        }
        if self.max_request_bytes < 64 << 10 {
            return bad("max_request_bytes below 64 KiB leaves no room for a commit");
        }
        if self.timeout.is_zero() {
            return bad("a zero timeout");
        }
        if self.count_shards == 0 {
            return bad("count_shards must be at least 1");
        }
        Ok(())
    }
}

/// `HOST:PORT` → `http://HOST:PORT`.
fn endpoint(host: &str) -> std::result::Result<String, String> {
    let (name, port) = host.rsplit_once(':').ok_or_else(|| format!("member {host:?} has no :PORT"))?;
    if name.is_empty() {
        return Err(format!("member {host:?} has no host name"));
    }
    port.parse::<u16>().map_err(|_| format!("member {host:?}: {port:?} is not a port"))?;
    Ok(format!("http://{host}"))
}

#[cfg(test)]
mod tests {
    use sop_core::ErrorKind;

    use super::*;

    #[test]
    fn urls_name_members_prefix_and_limits() {
        let c = EtcdConfig::from_url(
            "etcd://127.0.0.1:2379,10.0.0.2:2479/bank/db1/?max_txn_ops=1024&timeout_ms=250",
        )
        .unwrap();
        assert_eq!(c.endpoints, vec!["http://127.0.0.1:2379", "http://10.0.0.2:2479"]);
        assert_eq!(c.prefix, "bank/db1");
        assert_eq!(c.max_txn_ops, 1024);
        assert_eq!(c.timeout, Duration::from_millis(250));
        assert_eq!(c.max_request_bytes, DEFAULT_MAX_REQUEST_BYTES);
        assert_eq!(c.count_shards, DEFAULT_COUNT_SHARDS);
    }

    #[test]
    fn bad_urls_are_refused_with_what_is_wrong() {
        for (url, says) in [
            ("rocksdb://x", "not an etcd"),
            ("etcd://127.0.0.1:2379", "needs a key prefix"),
            ("etcd://127.0.0.1:2379/", "needs a key prefix"),
            ("etcd://127.0.0.1/p", "no :PORT"),
            ("etcd://:2379/p", "no host name"),
            ("etcd://h:99999/p", "not a port"),
            ("etcd://h:1,/p", "no :PORT"),
            ("etcd://h:1/p?max_txn_ops=x", "wants a number"),
            ("etcd://h:1/p?max_txn_ops=4", "max_txn_ops below 8"),
            ("etcd://h:1/p?colour=4", "unknown option"),
            ("etcd://h:1/p?timeout_ms", "has no value"),
            ("etcd://h:1/p?count_shards=0", "at least 1"),
            ("etcd://h:1/a#b", "may not contain '#'"),
        ] {
            let e = EtcdConfig::from_url(url).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{url}: {e}");
            assert!(e.to_string().contains(says), "{url}: {e}");
        }
    }
}
