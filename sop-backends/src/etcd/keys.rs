//! The key layout under a database's prefix `P`:
//!
//! | key | value |
//! |---|---|
//! | `P#format` | one byte: the registry format version |
//! | `P#h/<logical id, 32 hex digits>` | a `Handle` record; etcd's own key version equals the handle's version |
//! | `P#s/<store name>` | a `StoreInfo` record (count 0: counts live apart) |
//! | `P#c/<store name in hex>/<shard, 2 hex digits>` | an i64, little-endian: one shard of the store's count |
//! | `P#i/<tx id, 32 hex digits>` | an `Intent` record |
//!
//! A prefix may not contain `#`, so no database's keys lie under another's
//! (`db` and `db/s`, `db` and `dbx` are apart). Store names are
//! hex-encoded in counter keys so that no name's counter prefix is a
//! prefix of another's.

use sop_core::{LogicalId, TxId};

/// The keys of one database.
#[derive(Debug, Clone)]
pub(super) struct Keys {
    /// `P#`.
    root: String,
}

impl Keys {
    pub(super) fn new(prefix: &str) -> Self {
        Self { root: format!("{prefix}#") }
    }

    pub(super) fn format(&self) -> Vec<u8> {
        format!("{}format", self.root).into_bytes()
    }

    pub(super) fn handle(&self, id: LogicalId) -> Vec<u8> {
        format!("{}h/{:032x}", self.root, id.as_u128()).into_bytes()
    }

    pub(super) fn handles(&self) -> Vec<u8> {
        format!("{}h/", self.root).into_bytes()
    }

    pub(super) fn store(&self, name: &str) -> Vec<u8> {
        let mut k = self.stores();
        k.extend_from_slice(name.as_bytes());
        k
    }

    pub(super) fn stores(&self) -> Vec<u8> {
        format!("{}s/", self.root).into_bytes()
    }

    /// The prefix of every counter shard of store `name`.
    pub(super) fn counts(&self, name: &str) -> Vec<u8> {
        let mut k = format!("{}c/", self.root);
        for b in name.as_bytes() {
            k.push_str(&format!("{b:02x}"));
        }
        k.push('/');
        k.into_bytes()
    }

    pub(super) fn count(&self, name: &str, shard: u32) -> Vec<u8> {
        let mut k = self.counts(name);
        k.extend_from_slice(format!("{shard:02x}").as_bytes());
        k
    }

    pub(super) fn intent(&self, tx_id: TxId) -> Vec<u8> {
        format!("{}i/{:032x}", self.root, tx_id.as_u128()).into_bytes()
    }

    pub(super) fn intents(&self) -> Vec<u8> {
        format!("{}i/", self.root).into_bytes()
    }

    /// The transaction id an intent key names, if it is one.
    pub(super) fn intent_id(&self, key: &[u8]) -> Option<TxId> {
        let hex = key.strip_prefix(self.intents().as_slice())?;
        let hex = std::str::from_utf8(hex).ok()?;
        u128::from_str_radix(hex, 16).ok().filter(|_| hex.len() == 32).map(TxId::from_u128)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_prefixes_never_nest_and_ids_round_trip() {
        let k = Keys::new("db");
        assert!(!k.counts("ab").starts_with(&k.counts("a")));
        assert!(!k.count("ab", 0).starts_with(&k.counts("a")));
        assert!(!k.counts("a/").starts_with(&k.counts("a")));
        assert_eq!(k.count("a", 3), b"db#c/61/03");
        // Nested and extended prefixes stay apart.
        for other in ["db/s", "db/c/61", "dbx", "db/"] {
            let o = Keys::new(other);
            for mine in [k.handles(), k.stores(), k.counts("a"), k.intents(), k.format()] {
                assert!(!o.format().starts_with(&mine) && !mine.starts_with(&o.format()), "{other}");
                assert!(!o.counts("a").starts_with(&mine) && !o.handles().starts_with(&mine), "{other}");
            }
        }
        let tx = TxId::new();
        assert_eq!(k.intent_id(&k.intent(tx)), Some(tx));
        assert_eq!(k.intent_id(b"db#i/zz"), None);
        assert!(k.handle(LogicalId::new()).starts_with(&k.handles()));
    }
}
