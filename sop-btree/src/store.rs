//! Store handles: [`Store`] (bytes) and [`TypedStore`] (typed keys and
//! values), and [`Cursor`] for range reads.

use std::marker::PhantomData;
use std::ops::{Bound, Range, RangeBounds};
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sop_core::{Error, Item, Node, Result, StoreOptions, Subject, TxId, Value};

use crate::inner::CachedStore;
use crate::key::{Key, encode_bytes};
use crate::tree::leaf_items;
use crate::tx::Transaction;
use crate::tx::log::{RangeRead, ReadEntry, Seen};
use crate::tx::write::{MAX_KEY_LEN, check_sizes};

impl Transaction {
    /// A typed handle on store `name`: keys in the order-preserving
    /// encoding of [`Key`], values serialized with postcard.
    ///
    /// # Errors
    /// `NotFound` when there is no such store.
    pub async fn store<K: Key, V: Serialize + DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<TypedStore<K, V>> {
        Ok(TypedStore::new(self.bytes_store(name).await?))
    }

    /// A byte-level handle on store `name`: keys compare as bytes.
    ///
    /// # Errors
    /// `NotFound` when there is no such store.
    pub async fn bytes_store(&self, name: &str) -> Result<Store> {
        let mut st = self.shared.lock().await;
        st.check_live()?;
        let store = st.store(&self.shared.db, name).await?;
        Ok(Store::new(self.clone(), store.meta.clone()))
    }
}

/// Identifies one of several items with the same key in a non-unique store.
pub type ItemId = u128;

/// A byte-level handle on one store, inside one transaction.
///
/// In a unique store a key maps to one value. In a non-unique store
/// `insert` appends, duplicates keep insertion order, `get` returns the
/// first, and [`Store::get_all`]/[`Store::remove_item`] address each one.
#[derive(Debug, Clone)]
pub struct Store {
    tx: Transaction,
    /// Its name (as the transaction's log entries share it), root and
    /// options.
    meta: CachedStore,
}

const DUP_SUFFIX: usize = 16;

impl Store {
    pub(crate) fn new(tx: Transaction, meta: CachedStore) -> Self {
        Self { tx, meta }
    }

    /// The store's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.meta.info.name
    }

    /// The store's options.
    #[must_use]
    pub fn options(&self) -> StoreOptions {
        self.meta.info.options
    }

    fn unique(&self) -> bool {
        self.meta.info.options.unique
    }

    /// The subject of an error about `key` (the user's key as given).
    fn subject(&self, key: &[u8]) -> Subject {
        Subject::Key { store: self.meta.info.name.clone(), key: bytes::Bytes::copy_from_slice(key) }
    }

    fn slot(&self) -> usize {
        self.meta.info.options.slot_length as usize
    }

    /// The first item stored under `key` (for a unique store, the item).
    async fn lookup(&self, key: &[u8]) -> Result<Option<(Bytes, Item)>> {
        if self.unique() {
            let db = &self.tx.shared.db;
            let mut st = self.tx.shared.lock().await;
            st.check_live()?;
            let item = st.tree(db, self.meta.info.root, self.slot()).find(key).await?;
            // A found item's key shares the node's buffer: logging it
            // copies nothing; only an absent key is copied.
            let logged = item.as_ref().map_or_else(|| Bytes::copy_from_slice(key), |i| i.key.clone());
            st.log_point(&self.meta.name, &logged, item.as_ref());
            let value = match &item {
                Some(i) => Some(st.value_of(db, i).await?),
                None => None,
            };
            return Ok(value.zip(item));
        }
        let mut cur = self.dup_cursor(key);
        cur.next_item().await
    }

    fn dup_cursor(&self, key: &[u8]) -> Cursor {
        let mut lo = Vec::new();
        encode_bytes(key, &mut lo);
        let mut hi = lo.clone();
        hi.extend_from_slice(&[0xff; DUP_SUFFIX]);
        Cursor::new(self.clone(), Bound::Included(lo.into()), Bound::Included(hi.into()), false)
    }

    /// The value under `key`.
    ///
    /// # Errors
    /// `InvalidInput` (oversize key), `Closed`/`Timeout` (transaction over),
    /// backend errors; a node that moved underneath gives `Conflict`.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Bytes>> {
        check_sizes(key, None)?;
        if !self.unique() {
            return Ok(self.lookup(key).await?.map(|(v, _)| v));
        }
        let db = &self.tx.shared.db;
        let mut st = self.tx.shared.lock().await;
        st.check_live()?;
        // The key (shared with the node's buffer, for the read log) and the
        // value, not the whole item: two reference counts per read.
        let tree = &mut st.tree(db, self.meta.info.root, self.slot());
        let found = tree.find_map(key, |i| (i.key.clone(), i.version, i.value.clone())).await?;
        let Some((key_read, version, value)) = found else {
            st.log_read(&self.meta.name, Bytes::copy_from_slice(key), None);
            return Ok(None);
        };
        let value = match value {
            Value::Inline(b) => b,
            blob => st.value_bytes(db, key, blob).await?,
        };
        st.log_read(&self.meta.name, key_read, Some(version));
        Ok(Some(value))
    }

    /// Whether `key` is present.
    ///
    /// # Errors
    /// As [`Store::get`].
    pub async fn contains(&self, key: &[u8]) -> Result<bool> {
        Ok(self.get(key).await?.is_some())
    }

    async fn write(&self, key: Bytes, value: Option<Bytes>) -> Result<Option<Item>> {
        if key.len() > MAX_KEY_LEN {
            return Err(Error::invalid(
                "key",
                format!(
                    "key of {} bytes as stored (a non-unique store escapes the key and adds {}) is over the {}-byte limit",
                    key.len(),
                    DUP_SUFFIX + 2,
                    MAX_KEY_LEN
                ),
            ));
        }
        let db = &self.tx.shared.db;
        let mut st = self.tx.shared.lock().await;
        st.check_live()?;
        st.check_writable()?;
        st.apply_write(db, &self.meta.info.name, key, value).await
    }

    /// Adds `key`. In a unique store an existing key is an error; in a
    /// non-unique store the value is appended after existing duplicates.
    ///
    /// # Errors
    /// `AlreadyExists` (unique store, key present), `InvalidInput` (sizes,
    /// or a read-only transaction), as [`Store::get`] otherwise.
    pub async fn insert(&self, key: &[u8], value: &[u8]) -> Result<()> {
        check_sizes(key, Some(value))?;
        if !self.unique() {
            let mut stored = Vec::with_capacity(key.len() + 2 + DUP_SUFFIX);
            encode_bytes(key, &mut stored);
            stored.extend_from_slice(&TxId::new().as_u128().to_be_bytes());
            self.write(stored.into(), Some(Bytes::copy_from_slice(value))).await?;
            return Ok(());
        }
        if self.lookup(key).await?.is_some() {
            return Err(Error::AlreadyExists(self.subject(key)));
        }
        let (key, value) = self.item_bytes(key, value);
        self.write(key, Some(value)).await.map(|_| ())
    }

    /// `key` and `value` copied for an item. A value kept in its leaf
    /// shares one allocation with its key: they live and die together
    /// (an item is replaced whole), and a bulk load spent a tenth of its
    /// time allocating and freeing them apart (four allocations a put, with
    /// the reference counts each `Bytes` clone adds; two now). A value
    /// written as a blob of its own is copied alone, so that a key the
    /// tree keeps never holds it alive. (A separator an internal node
    /// takes from a split leaf's key keeps the key's value alive with it,
    /// at most `value_in_node_threshold` bytes, until that node is next
    /// read from its blob.)
    fn item_bytes(&self, key: &[u8], value: &[u8]) -> (Bytes, Bytes) {
        if value.len() > self.meta.info.options.value_in_node_threshold as usize {
            return (Bytes::copy_from_slice(key), Bytes::copy_from_slice(value));
        }
        let mut both = Vec::with_capacity(key.len() + value.len());
        both.extend_from_slice(key);
        both.extend_from_slice(value);
        let both = Bytes::from(both);
        (both.slice(..key.len()), both.slice(key.len()..))
    }

    /// Puts `key` whether or not it exists (a blind write in a unique
    /// store; replaces the first duplicate in a non-unique one).
    ///
    /// # Errors
    /// As [`Store::insert`], without `AlreadyExists`.
    pub async fn upsert(&self, key: &[u8], value: &[u8]) -> Result<()> {
        check_sizes(key, Some(value))?;
        if self.unique() {
            let (key, value) = self.item_bytes(key, value);
            return self.write(key, Some(value)).await.map(|_| ());
        }
        match self.lookup(key).await? {
            Some((_, item)) => self.write(item.key, Some(Bytes::copy_from_slice(value))).await.map(|_| ()),
            None => self.insert(key, value).await,
        }
    }

    /// Replaces the value of an existing `key` (the first duplicate).
    ///
    /// # Errors
    /// `NotFound` when `key` is absent; as [`Store::insert`] otherwise.
    pub async fn update(&self, key: &[u8], value: &[u8]) -> Result<()> {
        check_sizes(key, Some(value))?;
        let Some((_, item)) = self.lookup(key).await? else {
            return Err(Error::NotFound(self.subject(key)));
        };
        self.write(item.key, Some(Bytes::copy_from_slice(value))).await.map(|_| ())
    }

    /// Removes `key` (the first duplicate); returns whether it was there.
    ///
    /// # Errors
    /// As [`Store::insert`].
    pub async fn remove(&self, key: &[u8]) -> Result<bool> {
        check_sizes(key, None)?;
        if !self.unique() {
            return match self.lookup(key).await? {
                Some((_, item)) => self.write(item.key, None).await.map(|_| true),
                None => Ok(false),
            };
        }
        // One descent: the delete itself finds the item (or its absence),
        // logged as the read the returned flag depends on. The value is
        // never fetched.
        let db = &self.tx.shared.db;
        let mut st = self.tx.shared.lock().await;
        st.check_live()?;
        st.check_writable()?;
        st.apply_remove(db, &self.meta.info.name, Bytes::copy_from_slice(key)).await
    }

    /// Every duplicate under `key`, in insertion order, with its id.
    ///
    /// # Errors
    /// As [`Store::get`].
    pub async fn get_all(&self, key: &[u8]) -> Result<Vec<(ItemId, Bytes)>> {
        check_sizes(key, None)?;
        if self.unique() {
            return Ok(self.get(key).await?.map(|v| (0, v)).into_iter().collect());
        }
        let mut cur = self.dup_cursor(key);
        let mut out = Vec::new();
        while let Some((v, item)) = cur.next_item().await? {
            out.push((dup_id(&item.key), v));
        }
        Ok(out)
    }

    /// Removes one duplicate by its id; returns whether it was there.
    ///
    /// # Errors
    /// As [`Store::insert`].
    pub async fn remove_item(&self, key: &[u8], id: ItemId) -> Result<bool> {
        let items = self.get_all(key).await?;
        if !items.iter().any(|(i, _)| *i == id) {
            return Ok(false);
        }
        if self.unique() {
            return self.remove(key).await;
        }
        let mut stored = Vec::new();
        encode_bytes(key, &mut stored);
        stored.extend_from_slice(&id.to_be_bytes());
        self.write(stored.into(), None).await.map(|_| true)
    }

    /// The number of items, including this transaction's changes.
    ///
    /// # Errors
    /// `Closed`/`Timeout` when the transaction is over.
    pub async fn count(&self) -> Result<u64> {
        let db = &self.tx.shared.db;
        let mut st = self.tx.shared.lock().await;
        st.check_live()?;
        let s = st.store(db, &self.meta.info.name).await?;
        let committed = match s.committed {
            Some(c) => c,
            None => {
                let info = db.registry.get_store(&self.meta.info.name).await?;
                let c =
                    info.ok_or_else(|| Error::NotFound(Subject::Store(self.meta.info.name.clone())))?.count;
                st.store(db, &self.meta.info.name).await?.committed = Some(c);
                c
            }
        };
        let s = st.store(db, &self.meta.info.name).await?;
        let (delta, name) = (s.delta, s.meta.name.clone());
        let writes_before = st.writes.len();
        st.reads.push(ReadEntry::Count { store: name, committed, delta, writes_before });
        Ok(committed.saturating_add_signed(delta))
    }

    /// A forward cursor over `[lo, hi]` (either bound may be open).
    #[must_use]
    pub fn range(&self, lo: Bound<&[u8]>, hi: Bound<&[u8]>) -> Cursor {
        let (lo, hi) = self.stored_bounds(lo, hi);
        Cursor::new(self.clone(), lo, hi, false)
    }

    /// A reverse cursor over `[lo, hi]`, largest key first.
    #[must_use]
    pub fn range_rev(&self, lo: Bound<&[u8]>, hi: Bound<&[u8]>) -> Cursor {
        let (lo, hi) = self.stored_bounds(lo, hi);
        Cursor::new(self.clone(), lo, hi, true)
    }

    /// The smallest key and its value.
    ///
    /// # Errors
    /// As [`Store::get`].
    pub async fn first(&self) -> Result<Option<(Bytes, Bytes)>> {
        self.range(Bound::Unbounded, Bound::Unbounded).next().await
    }

    /// The largest key and its value.
    ///
    /// # Errors
    /// As [`Store::get`].
    pub async fn last(&self) -> Result<Option<(Bytes, Bytes)>> {
        self.range_rev(Bound::Unbounded, Bound::Unbounded).next().await
    }

    /// Maps user-key bounds to stored-key bounds (identity when unique).
    fn stored_bounds(&self, lo: Bound<&[u8]>, hi: Bound<&[u8]>) -> (Bound<Bytes>, Bound<Bytes>) {
        if self.unique() {
            return (lo.map(Bytes::copy_from_slice), hi.map(Bytes::copy_from_slice));
        }
        let enc = |k: &[u8], max_suffix: bool| {
            let mut v = Vec::new();
            encode_bytes(k, &mut v);
            if max_suffix {
                v.extend_from_slice(&[0xff; DUP_SUFFIX]);
            }
            Bytes::from(v)
        };
        let lo = match lo {
            Bound::Included(k) => Bound::Included(enc(k, false)),
            Bound::Excluded(k) => Bound::Excluded(enc(k, true)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let hi = match hi {
            Bound::Included(k) => Bound::Included(enc(k, true)),
            Bound::Excluded(k) => Bound::Excluded(enc(k, false)),
            Bound::Unbounded => Bound::Unbounded,
        };
        (lo, hi)
    }

    /// The user key of a stored key.
    fn user_key(&self, stored: &Bytes) -> Result<Bytes> {
        if self.unique() {
            return Ok(stored.clone());
        }
        let mut input: &[u8] = stored;
        crate::key::decode_bytes(&mut input).map(Bytes::from)
    }
}

fn dup_id(stored: &[u8]) -> ItemId {
    let tail = stored.len().saturating_sub(DUP_SUFFIX);
    stored.get(tail..).and_then(|t| <[u8; 16]>::try_from(t).ok()).map_or(0, u128::from_be_bytes)
}

/// The tighter of two lower bounds where `seek` is `Included` (a seek).
fn later_lower(seek: Bound<Bytes>, lo: &Bound<Bytes>) -> Bound<Bytes> {
    match (&seek, lo) {
        (Bound::Included(k), Bound::Included(l) | Bound::Excluded(l)) if k <= l => lo.clone(),
        _ => seek,
    }
}

/// The tighter of two upper bounds where `seek` is `Included` (a seek).
fn later_upper(seek: Bound<Bytes>, hi: &Bound<Bytes>) -> Bound<Bytes> {
    match (&seek, hi) {
        (Bound::Included(k), Bound::Included(h) | Bound::Excluded(h)) if k >= h => hi.clone(),
        _ => seek,
    }
}

/// A cursor over a key range, forward or reverse. Each leaf it reads is
/// logged for validation, so a range read is serializable: a key inserted
/// into the range by a concurrent commit makes this transaction's commit
/// fail (a phantom is caught).
#[derive(Debug)]
pub struct Cursor {
    store: Store,
    lo: Bound<Bytes>,
    hi: Bound<Bytes>,
    reverse: bool,
    /// The current leaf and the positions in it still to return.
    buffer: Option<(Arc<Node>, Range<usize>)>,
    /// Where the next batch starts; `None` once exhausted.
    next: Option<Bound<Bytes>>,
    /// [`Cursor::next_ref`]'s key when it is not the stored key (a
    /// non-unique store's) and its value when it is not inline.
    scratch_key: Bytes,
    scratch_value: Bytes,
}

impl Cursor {
    fn new(store: Store, lo: Bound<Bytes>, hi: Bound<Bytes>, reverse: bool) -> Self {
        let next = Some(if reverse { hi.clone() } else { lo.clone() });
        Self {
            store,
            lo,
            hi,
            reverse,
            buffer: None,
            next,
            scratch_key: Bytes::new(),
            scratch_value: Bytes::new(),
        }
    }

    /// Moves the cursor to `key`: the next item is the first at or after
    /// `key` (at or before, for a reverse cursor), within the range.
    pub fn seek(&mut self, key: &[u8]) {
        let (lo, hi) = self.store.stored_bounds(Bound::Included(key), Bound::Included(key));
        self.buffer = None;
        // Never start outside the cursor's range: a seek before the range
        // (after it, in reverse) starts at the range's own bound.
        self.next = Some(if self.reverse { later_upper(hi, &self.hi) } else { later_lower(lo, &self.lo) });
    }

    /// Reads the next leaf of the range into the buffer. On an error the
    /// cursor stays where it was: a retry reads the same leaf again.
    async fn fill(&mut self) -> Result<()> {
        let Some(from) = self.next.clone() else { return Ok(()) };
        let tx = &self.store.tx;
        let db = &tx.shared.db;
        let mut st = tx.shared.lock().await;
        st.check_live()?;
        let mut tree = st.tree(db, self.store.meta.info.root, self.store.slot());
        let batch = if self.reverse {
            tree.scan_backward(&self.lo, from).await?
        } else {
            tree.scan_forward(from, &self.hi).await?
        };
        let name = &self.store.meta.info.name;
        let tx_store = st.stores.get(name.as_str());
        let shared_name =
            tx_store.map_or_else(|| std::sync::Arc::from(name.as_str()), |s| s.meta.name.clone());
        // The transaction's own writes are not part of what it saw.
        let own: Vec<usize> = match tx_store.map(|s| &s.written) {
            Some(w) if !w.is_empty() => {
                let items = batch.items();
                batch.range.clone().zip(items).filter(|(_, i)| w.contains(&i.key)).map(|(p, _)| p).collect()
            }
            _ => Vec::new(),
        };
        let seen = Seen { leaf: batch.leaf.clone(), range: batch.range.clone(), own };
        let writes_before = st.writes.len();
        st.reads.push(ReadEntry::Range(Box::new(RangeRead {
            store: shared_name,
            lo: batch.lo,
            hi: batch.hi,
            seen,
            writes_before,
        })));
        self.buffer = Some((batch.leaf, batch.range));
        self.next = batch.next;
        Ok(())
    }

    /// The position of the next buffered item, from the front (from the
    /// back in reverse).
    fn pop(&mut self) -> Option<usize> {
        let (_, range) = self.buffer.as_mut()?;
        if self.reverse { range.next_back() } else { range.next() }
    }

    /// The buffered item at `at`.
    fn item(&self, at: usize) -> Option<&Item> {
        self.buffer.as_ref().and_then(|(leaf, _)| leaf_items(leaf).get(at))
    }

    fn buffered(&self) -> bool {
        self.buffer.as_ref().is_some_and(|(_, r)| !r.is_empty())
    }

    /// The next item of the leaf already read, if any: [`Cursor::advance`]
    /// with nothing to await.
    fn pop_buffered(&mut self) -> Result<Option<usize>> {
        if !self.buffered() {
            return Ok(None);
        }
        let at = self.pop();
        self.store.tx.shared.check_open()?;
        Ok(at)
    }

    /// Moves to the next item: its position in the buffered leaf.
    ///
    /// The transaction's deadline is checked as each leaf is read; an item
    /// of a leaf already read needs only the transaction to be open (one
    /// atomic load, no clock read per item).
    async fn advance(&mut self) -> Result<Option<usize>> {
        while !self.buffered() && self.next.is_some() {
            // Boxed: reading a leaf is a large future, and most steps do
            // not read one; held inline, it would be moved with every
            // step's future (measured: `memmove` 4.6 % of a short scan).
            Box::pin(self.fill()).await?;
        }
        self.pop_buffered()
    }

    /// `e`, after putting back the item at `at`, just popped: its value
    /// could not be read, and a retry must return it, not skip it.
    fn put_back(&mut self, at: usize, e: Error) -> Error {
        if let Some((_, range)) = self.buffer.as_mut() {
            if self.reverse { range.end = at + 1 } else { range.start = at }
        }
        e
    }

    /// The value of `item`: shared with the leaf when inline, else read
    /// from its blob, which this transaction keeps alive while it lives.
    async fn value(&self, item: &Item) -> Result<Bytes> {
        if let Value::Inline(v) = &item.value {
            return Ok(v.clone());
        }
        let tx = &self.store.tx;
        let st = tx.shared.lock().await;
        // A buffered item is read from this transaction's view: once it is
        // over, its blobs are no longer kept for it.
        st.check_live()?;
        st.value_of(&tx.shared.db, item).await
    }

    /// Moves to the next item: its position and its value (put back, not
    /// skipped, when the value cannot be read).
    async fn step(&mut self) -> Result<Option<(usize, Bytes)>> {
        let Some(at) = self.advance().await? else { return Ok(None) };
        let Some(item) = self.item(at) else { return Ok(None) };
        match self.value(item).await {
            Ok(v) => Ok(Some((at, v))),
            Err(e) => Err(self.put_back(at, e)),
        }
    }

    async fn next_item(&mut self) -> Result<Option<(Bytes, Item)>> {
        let Some((at, value)) = self.step().await? else { return Ok(None) };
        Ok(self.item(at).map(|item| (value, item.clone())))
    }

    /// The next key and value, or `None` at the end of the range.
    ///
    /// # Errors
    /// As [`Store::get`].
    pub async fn next(&mut self) -> Result<Option<(Bytes, Bytes)>> {
        let Some((at, value)) = self.step().await? else { return Ok(None) };
        let Some(item) = self.item(at) else { return Ok(None) };
        Ok(Some((self.store.user_key(&item.key)?, value)))
    }

    /// As [`Cursor::next`], borrowing the key and the value from the
    /// cursor instead of handing out shared handles: no reference count
    /// is touched for an inline value in a unique store, the common case
    /// of a scan. The borrow ends at the next call.
    ///
    /// # Errors
    /// As [`Store::get`].
    pub async fn next_ref(&mut self) -> Result<Option<(&[u8], &[u8])>> {
        // An item of the leaf already read is taken without the step's
        // future (its set-up was a fifth of a short scan's instructions).
        let at = match self.pop_buffered()? {
            Some(at) => at,
            None => match self.advance().await? {
                Some(at) => at,
                None => return Ok(None),
            },
        };
        let Some(item) = self.item(at) else { return Ok(None) };
        let value = match &item.value {
            Value::Inline(_) => None,
            Value::Blob { .. } => match Box::pin(self.value(item)).await {
                Ok(v) => Some(v),
                Err(e) => return Err(self.put_back(at, e)),
            },
        };
        let key = match self.store.unique() {
            true => None,
            false => Some(self.store.user_key(&item.key)?),
        };
        if let Some(v) = value {
            self.scratch_value = v;
        }
        if let Some(k) = key {
            self.scratch_key = k;
        }
        let Some(item) = self.item(at) else { return Ok(None) };
        let key: &[u8] = if self.store.unique() { &item.key } else { &self.scratch_key };
        let value: &[u8] = match &item.value {
            Value::Inline(v) => v,
            Value::Blob { .. } => &self.scratch_value,
        };
        Ok(Some((key, value)))
    }

    /// Up to `limit` more items.
    ///
    /// # Errors
    /// As [`Store::get`].
    pub async fn take(&mut self, limit: usize) -> Result<Vec<(Bytes, Bytes)>> {
        let mut out = Vec::new();
        while out.len() < limit {
            match self.next().await? {
                Some(kv) => out.push(kv),
                None => break,
            }
        }
        Ok(out)
    }
}

/// A typed handle on one store: keys encoded with [`Key`] (so their
/// natural order is the store's order), values serialized with postcard.
#[derive(Debug, Clone)]
pub struct TypedStore<K, V> {
    inner: Store,
    _types: PhantomData<fn() -> (K, V)>,
}

fn encode_value<V: Serialize>(v: &V) -> Result<Vec<u8>> {
    postcard::to_allocvec(v).map_err(|e| Error::invalid("value", format!("value does not serialize: {e}")))
}

fn decode_value<V: DeserializeOwned>(b: &[u8]) -> Result<V> {
    postcard::from_bytes(b).map_err(|e| Error::corruption("value", format!("does not deserialize: {e}")))
}

impl<K: Key, V: Serialize + DeserializeOwned> TypedStore<K, V> {
    pub(crate) fn new(inner: Store) -> Self {
        Self { inner, _types: PhantomData }
    }

    /// The byte-level handle underneath.
    #[must_use]
    pub fn bytes(&self) -> &Store {
        &self.inner
    }

    /// The value under `key`.
    ///
    /// # Errors
    /// As [`Store::get`]; `Corruption` when the stored value does not
    /// deserialize as `V`.
    pub async fn get(&self, key: &K) -> Result<Option<V>> {
        self.inner.get(&key.to_key_bytes()).await?.map(|b| decode_value(&b)).transpose()
    }

    /// Whether `key` is present.
    ///
    /// # Errors
    /// As [`Store::get`].
    pub async fn contains(&self, key: &K) -> Result<bool> {
        self.inner.contains(&key.to_key_bytes()).await
    }

    /// See [`Store::insert`].
    ///
    /// # Errors
    /// As [`Store::insert`].
    pub async fn insert(&self, key: &K, value: &V) -> Result<()> {
        self.inner.insert(&key.to_key_bytes(), &encode_value(value)?).await
    }

    /// See [`Store::upsert`].
    ///
    /// # Errors
    /// As [`Store::upsert`].
    pub async fn upsert(&self, key: &K, value: &V) -> Result<()> {
        self.inner.upsert(&key.to_key_bytes(), &encode_value(value)?).await
    }

    /// See [`Store::update`].
    ///
    /// # Errors
    /// As [`Store::update`].
    pub async fn update(&self, key: &K, value: &V) -> Result<()> {
        self.inner.update(&key.to_key_bytes(), &encode_value(value)?).await
    }

    /// See [`Store::remove`].
    ///
    /// # Errors
    /// As [`Store::remove`].
    pub async fn remove(&self, key: &K) -> Result<bool> {
        self.inner.remove(&key.to_key_bytes()).await
    }

    /// See [`Store::count`].
    ///
    /// # Errors
    /// As [`Store::count`].
    pub async fn count(&self) -> Result<u64> {
        self.inner.count().await
    }

    /// All items with keys in `range`, in order (or reversed), up to `limit`.
    ///
    /// # Errors
    /// As [`Store::get`].
    pub async fn range(
        &self,
        range: impl RangeBounds<K>,
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<(K, V)>> {
        let enc = |b: Bound<&K>| b.map(Key::to_key_bytes);
        let (lo, hi) = (enc(range.start_bound()), enc(range.end_bound()));
        let (lo, hi) = (lo.as_ref().map(Vec::as_slice), hi.as_ref().map(Vec::as_slice));
        let mut cur = if reverse { self.inner.range_rev(lo, hi) } else { self.inner.range(lo, hi) };
        let mut out = Vec::new();
        for (k, v) in cur.take(limit).await? {
            out.push((K::from_key_bytes(&k)?, decode_value(&v)?));
        }
        Ok(out)
    }
}
