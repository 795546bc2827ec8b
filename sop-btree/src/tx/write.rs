//! Writes on a transaction's view, shared by the store API and by swarm
//! merge's replay; value placement (inline or own blob); read logging.

use std::sync::Arc;

use bytes::Bytes;
use sop_core::{Error, Item, PhysicalId, Result, Value};

use crate::inner::DbInner;
use crate::tx::log::{ReadEntry, WriteOp};
use crate::tx::state::TxState;

/// The largest key, in bytes (as stored; a non-unique store adds 18).
pub const MAX_KEY_LEN: usize = 4096;
/// The largest value, in bytes.
pub const MAX_VALUE_LEN: usize = 64 << 20;

/// The read log's first allocation, in entries.
const READ_LOG_START: usize = 32;

/// Checks a key and value against the documented limits.
pub(crate) fn check_sizes(key: &[u8], value: Option<&[u8]>) -> Result<()> {
    if key.len() > MAX_KEY_LEN {
        return Err(Error::invalid(
            "key",
            format!("key of {} bytes is over the {MAX_KEY_LEN}-byte limit", key.len()),
        ));
    }
    if let Some(v) = value.filter(|v| v.len() > MAX_VALUE_LEN) {
        return Err(Error::invalid(
            "value",
            format!("value of {} bytes is over the {MAX_VALUE_LEN}-byte limit", v.len()),
        ));
    }
    Ok(())
}

impl TxState {
    /// Puts (`Some`) or removes (`None`) `key` in `store`, logs the write
    /// and adjusts the count delta; returns the item that was there.
    pub(crate) async fn apply_write(
        &mut self,
        db: &DbInner,
        store: &str,
        key: Bytes,
        value: Option<Bytes>,
    ) -> Result<Option<Item>> {
        let s = self.store(db, store).await?;
        let (root, slot) = (s.meta.info.root, s.meta.info.options.slot_length as usize);
        let (threshold, name) = (s.meta.info.options.value_in_node_threshold as usize, s.meta.name.clone());
        self.writing = true;
        let old = match &value {
            Some(v) => {
                let value = self.place_value(v.clone(), threshold);
                let item = Item { key: key.clone(), version: self.id, value };
                self.tree(db, root, slot).put(item).await?
            }
            None => self.tree(db, root, slot).delete(&key).await?,
        };
        if let Some(old) = &old {
            self.release_value(&old.value);
        }
        let delta: i8 = match (value.is_some(), old.is_some()) {
            (true, false) => 1,
            (false, true) => -1,
            _ => 0,
        };
        let s = self.store(db, store).await?;
        s.delta += i64::from(delta);
        s.written.insert(key.clone());
        self.writes.push(WriteOp { store: name, key, value, delta });
        self.writing = false;
        Ok(old)
    }

    /// Removes `key` from a unique store in one descent, logging the read
    /// that decides the result (the item's version, or its absence) before
    /// the write; `true` when it was there.
    pub(crate) async fn apply_remove(&mut self, db: &DbInner, store: &str, key: Bytes) -> Result<bool> {
        let s = self.store(db, store).await?;
        let (root, slot, name) =
            (s.meta.info.root, s.meta.info.options.slot_length as usize, s.meta.name.clone());
        self.writing = true;
        let old = self.tree(db, root, slot).delete(&key).await?;
        self.log_point(&name, &key, old.as_ref());
        let Some(old) = old else {
            self.writing = false;
            return Ok(false);
        };
        self.release_value(&old.value);
        let s = self.store(db, store).await?;
        s.delta -= 1;
        s.written.insert(key.clone());
        self.writes.push(WriteOp { store: name, key, value: None, delta: -1 });
        self.writing = false;
        Ok(true)
    }

    /// Re-applies the logged writes on a fresh view (swarm merge).
    pub(crate) async fn replay_writes(&mut self, db: &DbInner) -> Result<()> {
        let writes = std::mem::take(&mut self.writes);
        for w in writes {
            self.apply_write(db, &w.store, w.key, w.value).await?;
        }
        Ok(())
    }

    fn place_value(&mut self, v: Bytes, threshold: usize) -> Value {
        if v.len() <= threshold {
            return Value::Inline(v);
        }
        let id = PhysicalId::new();
        let len = v.len() as u64;
        self.pending_values.insert(id, v);
        Value::Blob { id, len }
    }

    fn release_value(&mut self, v: &Value) {
        if let Value::Blob { id, .. } = v
            && self.pending_values.remove(id).is_none()
        {
            self.obsolete_values.push(*id);
        }
    }

    /// The bytes of an item's value. A value blob is never collected while
    /// a transaction that may reach it is live (`crate::epoch`), so a
    /// missing one is data loss: `Corruption`, never "not found".
    pub(crate) async fn value_of(&self, db: &DbInner, item: &Item) -> Result<Bytes> {
        self.value_bytes(db, &item.key, item.value.clone()).await
    }

    /// The bytes of `value`, the value of `key` ([`TxState::value_of`]).
    pub(crate) async fn value_bytes(&self, db: &DbInner, key: &[u8], value: Value) -> Result<Bytes> {
        match value {
            Value::Inline(b) => Ok(b),
            Value::Blob { id, .. } => match self.pending_values.get(&id) {
                Some(b) => Ok(b.clone()),
                None => Box::pin(db.cache.value(id, &db.blobs)).await.map_err(|e| {
                    if e.kind() == sop_core::ErrorKind::NotFound {
                        Error::corruption("value", format!("the blob {id} of key {key:?} is missing"))
                    } else {
                        e
                    }
                }),
            },
        }
    }

    /// Logs a point read unless it was answered from this transaction's
    /// own writes.
    pub(crate) fn log_point(&mut self, store: &Arc<str>, key: &Bytes, item: Option<&Item>) {
        self.log_read(store, key.clone(), item.map(|i| i.version));
    }

    /// [`TxState::log_point`] with the key and the version read (`None`:
    /// absent) taken as they are.
    /// `store` is the store's name as its `TxStore` shares it. A read-only
    /// transaction wrote nothing, so it logs without looking the store up.
    pub(crate) fn log_read(&mut self, store: &Arc<str>, key: Bytes, version: Option<sop_core::TxId>) {
        if self.writable {
            let Some(s) = self.stores.get(&**store) else { return };
            if !s.written.is_empty() && s.written.contains(&key) {
                return;
            }
        }
        if self.reads.capacity() == 0 {
            // Grown from empty one entry at a time, a read transaction
            // of 100 gets moved its log six times (4.5 % of its
            // instructions, `docs/BENCHMARKS.md`).
            self.reads.reserve(READ_LOG_START);
        }
        self.reads.push(ReadEntry::Point { store: store.clone(), key, version });
    }
}
