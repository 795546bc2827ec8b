//! [`RocksRegistry`]: the embedded default registry, on RocksDB.
//!
//! Column families: `handles` (logical id → [`Handle`] record), `stores`
//! (name → [`StoreInfo`] record), `counts` (name → i64 sum, maintained by
//! an associative merge operator so that count deltas never serialize
//! publishes), `intents` (tx id → [`Intent`] record) and `meta` (format
//! version). Every value is a versioned, checksummed `sop-core` record.
//!
//! Validate-and-publish takes per-key stripe locks for every id it touches
//! (ascending, so never deadlocking; exclusive for the ids it writes,
//! shared for the ids it only checks), then the count locks of the stores
//! whose counts it changes (shared) or checks (exclusive), then a shared
//! lock on the store table, reads the current versions (from the handle
//! table in memory, `table.rs`), and applies
//! everything in one unsynced `WriteBatch`. With the locks released it
//! waits for a WAL sync that covers it (group commit, `sop_registry::group`:
//! one leader syncs for every publish waiting), so it is acknowledged only
//! once durable, and concurrent commits share their fsyncs. A lock
//! file (`sop.lock`, held with an OS file lock) keeps the directory to one
//! process, which makes these in-process locks sufficient; a second open
//! fails with `ErrorKind::Locked`.
//!
//! Intents are written without a sync of their own: the WAL is sequential,
//! so the next synced publish makes them durable, and a process crash
//! (the page cache survives) loses nothing. After a power loss an intent
//! written after the last synced publish may be lost, which can leave the
//! staged blobs of a never-published commit as orphans (a leak that
//! `Database::check` reports), never a torn commit.

mod blobs;
mod error;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use bytes::Bytes;
use rocksdb::{
    BlockBasedOptions, BottommostLevelCompaction, ColumnFamily, ColumnFamilyDescriptor, CompactOptions, DB,
    IteratorMode, MergeOperands, Options, WriteBatch, WriteOptions,
};
use sop_core::{
    Error, Handle, Intent, IntentState, LogicalId, PhysicalId, PublishRequest, Registry, Result, StoreInfo,
    Subject, TxId,
};

use error::from_rocks;
use sop_registry::table::HandleTable;

use sop_registry::group::GroupSync;
use sop_registry::stripes::{CountLocks, Stripes};

/// The id whose stripe guards a transaction's intent.
fn intent_key(tx_id: TxId) -> LogicalId {
    LogicalId::from_u128(tx_id.as_u128())
}

pub use blobs::RocksBlobStore;

const CF_HANDLES: &str = "handles";
const CF_STORES: &str = "stores";
const CF_COUNTS: &str = "counts";
const CF_INTENTS: &str = "intents";
const CF_META: &str = "meta";
const CF_BLOBS: &str = "blobs";
const FORMAT_KEY: &[u8] = b"format";
/// Format 2: node blobs may be leaf deltas (`sop_core::LeafDelta`);
/// format 3: deltas may be links of a chain (delta frame version 2).
const FORMAT_VERSION: u8 = 3;
/// The bound on the write-ahead log's total size (64 MiB left 57 MiB of
/// log behind a 100 000-item load: half the database's disk space).
const MAX_WAL_BYTES: u64 = 16 << 20;
const ALL_CFS: [&str; 6] = [CF_HANDLES, CF_STORES, CF_COUNTS, CF_INTENTS, CF_META, CF_BLOBS];

/// Open-time settings of a [`RocksRegistry`].
#[derive(Debug, Clone)]
pub struct RocksConfig {
    /// Sync the WAL on every publish, store change and intent (default
    /// `true`). With `false`, a machine crash may lose recent commits; a
    /// process crash loses nothing.
    pub sync: bool,
    /// Number of stripe locks for per-key locking (default 1024).
    pub lock_stripes: usize,
}

impl Default for RocksConfig {
    fn default() -> Self {
        Self { sync: true, lock_stripes: 1024 }
    }
}

/// A durable [`Registry`] in a local RocksDB database.
#[derive(Debug, Clone)]
pub struct RocksRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    db: DB,
    path: PathBuf,
    write_opts: WriteOptions,
    /// Unsynced writes: intents and blobs, made durable by the next synced
    /// publish (the WAL is sequential).
    lazy_opts: WriteOptions,
    stripes: Stripes,
    counts: CountLocks,
    /// Group commit: publishes wait here for a sync that covers them.
    group: GroupSync,
    /// Whether a publish waits for its WAL sync (`RocksConfig::sync`).
    sync: bool,
    stores_lock: RwLock<()>,
    /// Every handle, in memory (`table.rs`): reads and validation take no
    /// RocksDB read.
    table: HandleTable,
    /// Held (with an OS lock) for as long as the registry is open.
    _lock_file: std::fs::File,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksRegistry").field("path", &self.path).finish_non_exhaustive()
    }
}

impl RocksRegistry {
    /// Opens (creating if needed) the registry in directory `path`.
    ///
    /// # Errors
    /// `Io` when the directory cannot be opened (or is locked by another
    /// process), `Corruption`/`UnsupportedVersion` for a foreign format.
    pub fn open(path: impl AsRef<Path>, config: &RocksConfig) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let lock_file = lock_directory(&path)?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_background_jobs(2);
        // A WAL past this size forces the flush of the column families
        // that pin its oldest file, so the log never grows without bound.
        opts.set_max_total_wal_size(MAX_WAL_BYTES);
        let mut counts = Options::default();
        counts.set_merge_operator_associative("sop_count_sum", merge_counts);
        // The handles' vector memtable takes no concurrent inserts
        // (`handles_descriptor`).
        opts.set_allow_concurrent_memtable_write(false);
        let cfs = [CF_STORES, CF_META]
            .into_iter()
            .map(|n| ColumnFamilyDescriptor::new(n, Options::default()))
            .chain([
                handles_descriptor(),
                ColumnFamilyDescriptor::new(CF_COUNTS, counts),
                intents_descriptor(),
                blobs::descriptor(),
            ]);
        let db = DB::open_cf_descriptors(&opts, &path, cfs)
            .map_err(|e| from_rocks(e, &format!("opening {}", path.display())))?;
        let mut write_opts = WriteOptions::default();
        write_opts.set_sync(config.sync);
        let mut lazy_opts = WriteOptions::default();
        lazy_opts.set_sync(false);
        let inner = Inner {
            db,
            path,
            write_opts,
            lazy_opts,
            stripes: Stripes::new(config.lock_stripes),
            counts: CountLocks::new(64),
            group: GroupSync::default(),
            sync: config.sync,
            stores_lock: RwLock::new(()),
            table: HandleTable::new([], Default::default()),
            _lock_file: lock_file,
        };
        inner.check_format()?;
        let inner = Inner { table: inner.load_table()?, ..inner };
        Ok(Self { inner: Arc::new(inner) })
    }

    /// A blob store in this registry's own database (column family
    /// `blobs`), so that a commit's staged blobs, intent and publish share
    /// one synced WAL write. See [`RocksBlobStore`].
    #[must_use]
    pub fn blob_store(&self) -> RocksBlobStore {
        RocksBlobStore::new(self.inner.clone())
    }

    /// The directory this registry lives in.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Returns once a WAL sync covers `seq` (with `sync` on): group
    /// commit. A validation-only request waits too, but only when a write
    /// it may have read is not durable yet: a reader never returns what a
    /// crash could still take back. The publish runs on the caller's
    /// thread: [`Inner::apply`] validates and writes
    /// unsynced under its locks (no `.await` while they are held), then a
    /// lone writer syncs right there, and writers that find a sync under
    /// way await its end (`GroupSync::durable`). No hand-off to a blocking
    /// thread and back: a lone commit's latency measured in
    /// docs/BENCHMARKS.md.
    async fn durable(&self, seq: u64) -> Result<()> {
        let inner = &self.inner;
        if !inner.sync {
            return Ok(());
        }
        let sync = || inner.db.flush_wal(true).map_err(|e| from_rocks(e, "syncing the WAL"));
        inner.group.durable(seq, || inner.db.latest_sequence_number(), sync).await
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| Error::Indeterminate(format!("registry task failed: {e}")))?
    }
}

/// Creates `path` if needed and takes its lock file, so that a second
/// process (or a second open in this one) gets `Locked`, not RocksDB's
/// I/O error.
fn lock_directory(path: &Path) -> Result<std::fs::File> {
    std::fs::create_dir_all(path).map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
    let file_path = path.join("sop.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&file_path)
        .map_err(|e| Error::io(format!("opening {}", file_path.display()), e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Locked { path: path.display().to_string() }),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io(format!("locking {}", file_path.display()), e)),
    }
}

fn merge_counts(_key: &[u8], existing: Option<&[u8]>, operands: &MergeOperands) -> Option<Vec<u8>> {
    let mut sum = existing.map_or(Some(0), decode_count)?;
    for op in operands {
        sum = sum.wrapping_add(decode_count(op)?);
    }
    Some(sum.to_le_bytes().to_vec())
}

fn decode_count(b: &[u8]) -> Option<i64> {
    b.try_into().ok().map(i64::from_le_bytes)
}

impl Inner {
    fn cf(&self, name: &str) -> Result<&ColumnFamily> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| Error::corruption("registry", format!("missing column family {name}")))
    }

    fn check_format(&self) -> Result<()> {
        let meta = self.cf(CF_META)?;
        let found = self.db.get_cf(meta, FORMAT_KEY).map_err(|e| from_rocks(e, "reading format"))?;
        match found.as_deref() {
            // New, format 1 (full node blobs only) or format 2 (deltas with
            // no chain), which format 3 reads as is: mark it 3, so that
            // builds that cannot read what this one writes refuse it
            // (`UnsupportedVersion`) instead of failing on one blob.
            None | Some([1 | 2]) => {
                let mut batch = WriteBatch::default();
                batch.put_cf(meta, FORMAT_KEY, [FORMAT_VERSION]);
                self.write(batch)
            }
            Some([v]) if *v == FORMAT_VERSION => Ok(()),
            Some(v) => {
                Err(Error::UnsupportedVersion { what: "registry", version: v.first().copied().unwrap_or(0) })
            }
        }
    }

    fn write(&self, batch: WriteBatch) -> Result<()> {
        self.db.write_opt(batch, &self.write_opts).map_err(|e| from_rocks(e, "writing batch"))
    }

    /// Every handle stored, as the in-memory table.
    fn load_table(&self) -> Result<HandleTable> {
        let cf = self.cf(CF_HANDLES)?;
        let (mut handles, mut damaged) = (Vec::new(), rustc_hash::FxHashSet::default());
        for kv in self.db.iterator_cf(cf, IteratorMode::Start) {
            let (k, v) = kv.map_err(|e| from_rocks(e, "loading handles"))?;
            // A key no id can name is never read; `list_handles` (and so
            // `check`) reports it.
            let Ok(key) = <[u8; 16]>::try_from(&*k) else { continue };
            let id = LogicalId::from_bytes(key);
            match decode_handle(id, &v) {
                Ok(h) => handles.push(h),
                Err(_) => {
                    damaged.insert(id);
                }
            }
        }
        Ok(HandleTable::new(handles, damaged))
    }

    /// The handles of `ids`, from the in-memory table (a damaged record
    /// is read from RocksDB, which reports it).
    fn get_handles(&self, ids: &[LogicalId]) -> Result<Vec<Option<Handle>>> {
        ids.iter()
            .map(|id| match self.table.get(*id) {
                Ok(h) => Ok(h),
                Err(sop_registry::table::Damaged) => {
                    self.read_handles(&[*id]).map(|h| h.into_iter().next().flatten())
                }
            })
            .collect()
    }

    fn read_handles(&self, ids: &[LogicalId]) -> Result<Vec<Option<Handle>>> {
        let cf = self.cf(CF_HANDLES)?;
        let keys = ids.iter().map(|id| (cf, id.to_bytes()));
        ids.iter()
            .zip(self.db.multi_get_cf(keys))
            .map(|(id, got)| {
                let bytes = got.map_err(|e| from_rocks(e, "reading handles"))?;
                bytes.map(|b| decode_handle(*id, &b)).transpose()
            })
            .collect()
    }

    /// Validates `req` under its locks (written ids exclusive, checked ids
    /// shared) and applies it unsynced; the sequence number that must be
    /// durable before the publish is acknowledged.
    fn apply(&self, req: &PublishRequest, blobs: Option<&[(PhysicalId, Bytes)]>) -> Result<u64> {
        req.check_shape()?;
        let ids = req.touched_ids();
        let intent_id = req.intent.as_ref().map(|_| intent_key(req.tx_id));
        let written = req.writes.iter().map(sop_core::HandleWrite::id).chain(intent_id);
        let _guards = self.stripes.lock(written, req.checks.iter().map(|c| c.id));
        let deltas = req.count_deltas.iter().map(|(n, _)| n.as_str());
        let _counts = self.counts.lock(deltas, req.count_checks.iter().map(|(n, _)| n.as_str()));
        let _stores = self.stores_lock.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = self.get_handles(&ids)?;
        let version_of = |id: LogicalId| {
            ids.binary_search(&id).ok().and_then(|i| current.get(i).copied().flatten()).map(|h| h.version)
        };
        let conflicts = req.conflicts(version_of);
        if !conflicts.is_empty() {
            return Err(Error::Conflict { conflicts });
        }
        let stores = self.cf(CF_STORES)?;
        let names = req.count_deltas.iter().map(|(n, _)| n).chain(req.count_checks.iter().map(|(n, _)| n));
        for name in names {
            let exists = self.db.get_pinned_cf(stores, name).map_err(|e| from_rocks(e, "reading store"))?;
            if exists.is_none() {
                return Err(Error::NotFound(Subject::Store(name.clone())));
            }
        }
        for (name, seen) in &req.count_checks {
            if self.count_of(name)? != *seen {
                return Err(Error::changed(Subject::Count(name.clone()), format!("is no longer {seen}")));
            }
        }
        if let Some(intent) = &req.intent {
            let found = self.get_intent(intent.tx_id)?;
            // Staged in this write: no intent may exist yet. Staged before:
            // the transaction's pending intent must still be there.
            let ready = if blobs.is_some() {
                found.is_none()
            } else {
                found.is_some_and(|i| i.state == IntentState::Pending)
            };
            if !ready {
                return Err(req.intent_gone());
            }
        }
        if req.is_validation_only() {
            // Validation only: nothing to write; what it validated is
            // durable once everything written so far is.
            return Ok(self.group.written_so_far());
        }
        let batch = self.publish_batch(req, blobs.unwrap_or_default())?;
        self.write_lazy(batch)?;
        self.table.apply(&req.writes);
        // Still under the locks: a validation that reads these versions
        // afterwards also sees them counted as written.
        let seq = self.db.latest_sequence_number();
        self.group.written(seq);
        Ok(seq)
    }

    /// The batch of `req`'s handle writes, count deltas and intent, with
    /// `blobs` (those of a one-write publish). Its buffer is reserved whole
    /// first: grown as it filled, it was copied at every doubling (4.6 % of
    /// the instructions of a bulk load and a delete, `docs/BENCHMARKS.md`).
    fn publish_batch(&self, req: &PublishRequest, blobs: &[(PhysicalId, Bytes)]) -> Result<WriteBatch> {
        let (handles, counts, intents) = (self.cf(CF_HANDLES)?, self.cf(CF_COUNTS)?, self.cf(CF_INTENTS)?);
        let intent = req.intent.as_ref().map(|i| (i.tx_id, i.encode()));
        let encoded = intent.as_ref().map(|(_, bytes)| bytes.as_slice());
        let mut batch = WriteBatch::with_capacity_bytes(batch_bytes(req, blobs, encoded));
        for w in &req.writes {
            match w.result() {
                Some(h) => batch.put_cf(handles, h.logical_id.to_bytes(), h.encoded()),
                None => batch.delete_cf(handles, w.id().to_bytes()),
            }
        }
        for (name, delta) in &req.count_deltas {
            batch.merge_cf(counts, name, delta.to_le_bytes());
        }
        if let Some((tx_id, bytes)) = intent {
            batch.put_cf(intents, tx_id.to_bytes(), bytes);
        }
        if !blobs.is_empty() {
            let cf = self.cf(CF_BLOBS)?;
            for (id, data) in blobs {
                batch.put_cf(cf, id.to_bytes(), data);
            }
        }
        Ok(batch)
    }

    fn create_store(&self, info: &StoreInfo, root: &Handle) -> Result<()> {
        let _stripe = self.stripes.lock_one(root.logical_id);
        let _stores = self.stores_lock.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (stores, counts, handles) = (self.cf(CF_STORES)?, self.cf(CF_COUNTS)?, self.cf(CF_HANDLES)?);
        if self.db.get_pinned_cf(stores, &info.name).map_err(|e| from_rocks(e, "reading store"))?.is_some() {
            return Err(Error::AlreadyExists(Subject::Store(info.name.clone())));
        }
        if self.get_handles(&[root.logical_id])?.first().copied().flatten().is_some() {
            return Err(Error::AlreadyExists(Subject::Node(root.logical_id)));
        }
        let mut batch = WriteBatch::default();
        batch.put_cf(stores, &info.name, StoreInfo { count: 0, ..info.clone() }.encode());
        batch.put_cf(counts, &info.name, i64::try_from(info.count).unwrap_or(i64::MAX).to_le_bytes());
        batch.put_cf(handles, root.logical_id.to_bytes(), root.encode());
        self.write(batch)?;
        self.table.put(*root);
        Ok(())
    }

    fn get_store(&self, name: &str) -> Result<Option<StoreInfo>> {
        let stores = self.cf(CF_STORES)?;
        let Some(bytes) = self.db.get_pinned_cf(stores, name).map_err(|e| from_rocks(e, "reading store"))?
        else {
            return Ok(None);
        };
        self.with_count(StoreInfo::decode(&bytes)?).map(Some)
    }

    fn with_count(&self, mut info: StoreInfo) -> Result<StoreInfo> {
        info.count = self.count_of(&info.name)?;
        Ok(info)
    }

    fn count_of(&self, name: &str) -> Result<u64> {
        let counts = self.cf(CF_COUNTS)?;
        let raw = self.db.get_pinned_cf(counts, name).map_err(|e| from_rocks(e, "reading count"))?;
        let count = match raw.as_deref() {
            None => 0,
            Some(b) => decode_count(b)
                .ok_or_else(|| Error::corruption("store count", format!("{} bytes", b.len())))?,
        };
        Ok(u64::try_from(count).unwrap_or(0))
    }

    fn list_stores(&self) -> Result<Vec<StoreInfo>> {
        let stores = self.cf(CF_STORES)?;
        self.db
            .iterator_cf(stores, IteratorMode::Start)
            .map(|kv| {
                let (_, v) = kv.map_err(|e| from_rocks(e, "listing stores"))?;
                self.with_count(StoreInfo::decode(&v)?)
            })
            .collect()
    }

    fn remove_store(&self, name: &str) -> Result<StoreInfo> {
        self.remove_store_where(name, |_| true)?
            .ok_or_else(|| Error::NotFound(Subject::Store(name.to_owned())))
    }

    /// Removes store `name` if `keep_going` says so of its metadata, under
    /// the store table's lock; `None` when absent or refused.
    fn remove_store_where(
        &self,
        name: &str,
        keep_going: impl Fn(&StoreInfo) -> bool,
    ) -> Result<Option<StoreInfo>> {
        let _stores = self.stores_lock.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(info) = self.get_store(name)?.filter(|i| keep_going(i)) else { return Ok(None) };
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.cf(CF_STORES)?, name);
        batch.delete_cf(self.cf(CF_COUNTS)?, name);
        self.write(batch)?;
        Ok(Some(info))
    }

    fn put_intent(&self, intent: &Intent) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_INTENTS)?, intent.tx_id.to_bytes(), intent.encode());
        self.write_lazy(batch)
    }

    fn write_lazy(&self, batch: WriteBatch) -> Result<()> {
        self.db.write_opt(batch, &self.lazy_opts).map_err(|e| from_rocks(e, "writing batch"))
    }

    fn get_intent(&self, tx_id: TxId) -> Result<Option<Intent>> {
        let cf = self.cf(CF_INTENTS)?;
        let raw = self.db.get_pinned_cf(cf, tx_id.to_bytes()).map_err(|e| from_rocks(e, "reading intent"))?;
        raw.map(|b| Intent::decode(&b)).transpose()
    }

    fn list_intents(&self, created_before_ms: u64) -> Result<Vec<Intent>> {
        let mut out = Vec::new();
        self.each_intent(|_, decoded| {
            if let Ok(intent) = decoded
                && intent.created_at_ms < created_before_ms
            {
                out.push(intent);
            }
        })?;
        Ok(out)
    }

    fn damaged_intents(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        self.each_intent(|key, decoded| {
            if let Err(e) = decoded {
                let name = <[u8; 16]>::try_from(key)
                    .map_or_else(|_| format!("{key:02x?}"), |k| TxId::from_bytes(k).to_string());
                out.push(format!("intent {name}: {e}"));
            }
        })?;
        Ok(out)
    }

    /// Calls `f` with every intent record's key and decoding.
    fn each_intent(&self, mut f: impl FnMut(&[u8], Result<Intent>)) -> Result<()> {
        let cf = self.cf(CF_INTENTS)?;
        for kv in self.db.iterator_cf(cf, IteratorMode::Start) {
            let (k, v) = kv.map_err(|e| from_rocks(e, "listing intents"))?;
            f(&k, Intent::decode(&v));
        }
        Ok(())
    }

    fn abort_intent(&self, tx_id: TxId) -> Result<Option<IntentState>> {
        let _guard = self.stripes.lock_one(intent_key(tx_id));
        let Some(mut intent) = self.get_intent(tx_id)? else { return Ok(None) };
        if intent.state == IntentState::Pending {
            intent.state = IntentState::Aborted;
            self.put_intent(&intent)?;
        }
        Ok(Some(intent.state))
    }

    fn remove_intents(&self, tx_ids: &[TxId]) -> Result<()> {
        let cf = self.cf(CF_INTENTS)?;
        let mut batch = WriteBatch::default();
        for id in tx_ids {
            batch.delete_cf(cf, id.to_bytes());
        }
        self.write_lazy(batch)
    }

    /// Flushes every memtable, then compacts every column family to its
    /// bottom level, relocating every live blob (blob garbage collection
    /// over all blob files, not only the oldest quarter), so that deleted
    /// records and blobs give their space back; then drops the WAL files
    /// the flush made obsolete.
    fn compact(&self) -> Result<()> {
        let blobs = self.cf(CF_BLOBS)?;
        let set = |cutoff: &str| {
            self.db
                .set_options_cf(blobs, &[("blob_garbage_collection_age_cutoff", cutoff)])
                .map_err(|e| from_rocks(e, "setting blob GC options"))
        };
        set("1.0")?;
        let result = self.compact_all();
        set(blobs::GC_AGE_CUTOFF)?;
        result
    }

    fn compact_all(&self) -> Result<()> {
        let mut opts = CompactOptions::default();
        opts.set_bottommost_level_compaction(BottommostLevelCompaction::Force);
        for name in ALL_CFS {
            let cf = self.cf(name)?;
            self.db.flush_cf(cf).map_err(|e| from_rocks(e, "flushing"))?;
            self.db.compact_range_cf_opt(cf, None::<&[u8]>, None::<&[u8]>, &opts);
        }
        self.db.flush_wal(true).map_err(|e| from_rocks(e, "syncing the WAL"))
    }

    fn list_handles(&self) -> Result<Vec<Handle>> {
        let cf = self.cf(CF_HANDLES)?;
        self.db
            .iterator_cf(cf, IteratorMode::Start)
            .map(|kv| {
                let (k, v) = kv.map_err(|e| from_rocks(e, "listing handles"))?;
                let key: [u8; 16] =
                    (*k).try_into().map_err(|_| Error::corruption("handle", "bad key length"))?;
                decode_handle(LogicalId::from_bytes(key), &v)
            })
            .collect()
    }
}

fn decode_handle(id: LogicalId, bytes: &[u8]) -> Result<Handle> {
    let h = Handle::decode(bytes)?;
    if h.logical_id != id {
        return Err(Error::corruption("handle", format!("stored under {id} but names {}", h.logical_id)));
    }
    Ok(h)
}

#[async_trait]
impl Registry for RocksRegistry {
    async fn get_handles(&self, ids: &[LogicalId]) -> Result<Vec<Option<Handle>>> {
        self.inner.get_handles(ids)
    }

    async fn publish(&self, request: &PublishRequest) -> Result<()> {
        let seq = self.inner.apply(request, None)?;
        self.durable(seq).await
    }

    /// Blob ids are fresh (UUIDv7, 74 random bits): they are written
    /// without the existence probe of `RocksBlobStore::put_many`.
    async fn publish_with_blobs(
        &self,
        request: &PublishRequest,
        blobs: Vec<(PhysicalId, Bytes)>,
    ) -> Result<()> {
        if request.writes.is_empty() && !blobs.is_empty() {
            return Err(Error::invalid("publish", "blobs staged by a publish that writes no handle"));
        }
        let seq = self.inner.apply(request, Some(&blobs))?;
        self.durable(seq).await
    }

    fn all_durable(&self) -> bool {
        !self.inner.sync || self.inner.group.all_durable()
    }

    async fn create_store(&self, info: &StoreInfo, root: &Handle) -> Result<()> {
        let (info, root) = (info.clone(), *root);
        self.blocking(move |i| i.create_store(&info, &root)).await
    }

    async fn get_store(&self, name: &str) -> Result<Option<StoreInfo>> {
        self.inner.get_store(name)
    }

    async fn list_stores(&self) -> Result<Vec<StoreInfo>> {
        self.inner.list_stores()
    }

    async fn remove_store(&self, name: &str) -> Result<StoreInfo> {
        let name = name.to_owned();
        self.blocking(move |i| i.remove_store(&name)).await
    }

    async fn remove_store_if_root(&self, name: &str, root: LogicalId) -> Result<Option<StoreInfo>> {
        let name = name.to_owned();
        self.blocking(move |i| i.remove_store_where(&name, |s| s.root == root)).await
    }

    async fn put_intent(&self, intent: &Intent) -> Result<()> {
        self.inner.put_intent(intent)
    }

    async fn get_intent(&self, tx_id: TxId) -> Result<Option<Intent>> {
        self.inner.get_intent(tx_id)
    }

    async fn list_intents(&self, created_before_ms: u64) -> Result<Vec<Intent>> {
        self.inner.list_intents(created_before_ms)
    }

    async fn damaged_intents(&self) -> Result<Vec<String>> {
        self.inner.damaged_intents()
    }

    async fn remove_intent(&self, tx_id: TxId) -> Result<()> {
        self.inner.remove_intents(&[tx_id])
    }

    /// One unsynced write for all of them.
    async fn remove_intents(&self, tx_ids: &[TxId]) -> Result<()> {
        self.inner.remove_intents(tx_ids)
    }

    async fn abort_intent(&self, tx_id: TxId) -> Result<Option<IntentState>> {
        self.inner.abort_intent(tx_id)
    }

    async fn list_handles(&self) -> Result<Vec<Handle>> {
        self.inner.list_handles()
    }

    async fn compact(&self) -> Result<()> {
        self.blocking(Inner::compact).await
    }
}

/// The memtable of the `intents` column family, in bytes: intents are
/// small and short-lived (written by a commit, deleted by its clean-up).
const INTENTS_WRITE_BUFFER: usize = 16 << 20;

/// The handles' column family keeps its memtable as a vector (appends,
/// sorted when flushed) rather than a skip list: handles are read from
/// RocksDB only when the registry opens (`load_table`, one scan) or for a
/// record the table holds as damaged, while every commit writes one per
/// node it changed, at a random place among the logical ids. The skip
/// list's search for that place was most of a commit's memtable inserts
/// (callgrind, `sop-bench --quick --no-sync --phases main`, 100 000 items:
/// inserts 1 362 M -> 1 315 M instructions, deletes 1 441 M -> 1 354 M, an
/// update 58.9 K -> 55.5 K, a transfer 74.8 K -> 68.2 K). A vector takes
/// no concurrent inserts, so the database inserts a write group's batches
/// one after the other (`allow_concurrent_memtable_write` off): on two
/// cores, interleaved runs of 8 and 32 committers lost nothing (with the
/// eleventh pass's other changes, 32 committers on 100 000 keys gained
/// 18 %, `docs/BENCHMARKS.md`).
fn handles_descriptor() -> ColumnFamilyDescriptor {
    let mut opts = Options::default();
    opts.set_memtable_factory(rocksdb::MemtableFactory::Vector);
    ColumnFamilyDescriptor::new(CF_HANDLES, opts)
}

/// The `intents` column family. Every publish that carries an intent
/// first looks its transaction's id up there, and the answer is almost
/// always "absent": without filters that miss searched the memtable's
/// skip list (full of the intents and tombstones of recent commits) and
/// each table file's index, 7 300 instructions, a tenth of a single-key
/// update's (`docs/BENCHMARKS.md`). Whole-key bloom filters in the
/// memtable and the table files answer most misses from one or two
/// cache lines. The memtable's filter takes 2 % of its buffer (~330 KiB).
fn intents_descriptor() -> ColumnFamilyDescriptor {
    let mut table = BlockBasedOptions::default();
    table.set_bloom_filter(10.0, false);
    table.set_whole_key_filtering(true);
    let mut opts = Options::default();
    opts.set_block_based_table_factory(&table);
    opts.set_write_buffer_size(INTENTS_WRITE_BUFFER);
    opts.set_memtable_prefix_bloom_ratio(0.02);
    opts.set_memtable_whole_key_filtering(true);
    ColumnFamilyDescriptor::new(CF_INTENTS, opts)
}

/// Room for one record of a write batch besides its key's and value's
/// bytes: its tag, column family and two lengths (varints), rounded up.
const BATCH_RECORD: usize = 16;

/// About how many bytes the batch of `req` takes with `blobs` and the
/// encoded `intent` (its header, then each record's key and value).
fn batch_bytes(req: &PublishRequest, blobs: &[(PhysicalId, Bytes)], intent: Option<&[u8]>) -> usize {
    // A logical or physical id; an encoded handle (`Handle::encode`).
    const ID: usize = 16;
    const HANDLE: usize = 46;
    let blobs: usize = blobs.iter().map(|(_, data)| BATCH_RECORD + ID + data.len()).sum();
    let handles = req.writes.len() * (BATCH_RECORD + ID + HANDLE);
    let counts: usize = req.count_deltas.iter().map(|(name, _)| BATCH_RECORD + name.len() + 8).sum();
    let intent = intent.map_or(0, |i| BATCH_RECORD + ID + i.len());
    12 + blobs + handles + counts + intent
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_operator_sums_and_rejects_garbage() {
        // The merge function itself; the full path is covered by the
        // conformance suite in tests/.
        assert_eq!(decode_count(&7i64.to_le_bytes()), Some(7));
        assert_eq!(decode_count(b"bad"), None);
    }

    /// The intents column family is opened with whole-key bloom filters
    /// in its memtable and its table files (its lookups are almost all
    /// misses), as RocksDB's own record of the options it opened with
    /// says, and it keeps them across a reopen.
    #[test]
    fn the_intents_column_family_filters_its_misses() {
        let dir = tempfile::tempdir().expect("tempdir");
        for _ in 0..2 {
            drop(RocksRegistry::open(dir.path(), &RocksConfig::default()).expect("open"));
            let latest = std::fs::read_dir(dir.path())
                .expect("list")
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("OPTIONS-")))
                .max()
                .expect("an OPTIONS file");
            let text = std::fs::read_to_string(latest).expect("read options");
            let section = |name: &str| {
                let start = text.find(&format!("[CFOptions \"{name}\"]")).expect("the section");
                let rest = &text[start + 1..];
                rest[..rest.find("\n[CFOptions").unwrap_or(rest.len())].to_owned()
            };
            let (intents, handles) = (section(CF_INTENTS), section(CF_HANDLES));
            assert!(intents.contains("memtable_whole_key_filtering=true"), "{intents}");
            assert!(intents.contains("bloomfilter"), "{intents}");
            assert!(!handles.contains("memtable_whole_key_filtering=true"), "only the intents");
        }
    }

    /// A publish's batch is reserved whole: what it holds never outgrows
    /// the room `batch_bytes` gives it (else it is regrown and copied as
    /// it fills), for commits of one to a thousand writes with and without
    /// blobs and an intent, and it does not reserve grossly more.
    #[test]
    fn a_publish_batch_fits_the_room_reserved_for_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let reg = RocksRegistry::open(dir.path(), &RocksConfig::default()).expect("open");
        for n in [0usize, 1, 7, 100, 1000] {
            for with_intent in [false, true] {
                let blobs: Vec<(PhysicalId, Bytes)> =
                    (0..n).map(|i| (PhysicalId::new(), Bytes::from(vec![7u8; 1 + i * 37 % 900]))).collect();
                let writes = (0..n)
                    .map(|i| match i % 3 {
                        0 => sop_core::HandleWrite::Insert {
                            id: LogicalId::new(),
                            physical_id: PhysicalId::new(),
                        },
                        1 => sop_core::HandleWrite::Update {
                            id: LogicalId::new(),
                            expected: 3,
                            physical_id: PhysicalId::new(),
                        },
                        _ => sop_core::HandleWrite::Remove { id: LogicalId::new(), expected: 9 },
                    })
                    .collect();
                let tx_id = TxId::new();
                let intent = with_intent.then(|| {
                    let mut intent = Intent::pending(tx_id, blobs.iter().map(|b| b.0).collect());
                    intent.state = IntentState::Committed;
                    intent.obsolete = (0..n / 2).map(|_| PhysicalId::new()).collect();
                    intent
                });
                let req = PublishRequest {
                    tx_id,
                    writes,
                    count_deltas: vec![("a store".to_owned(), 5), ("another".to_owned(), -2)],
                    intent,
                    ..PublishRequest::default()
                };
                let encoded = req.intent.as_ref().map(Intent::encode);
                let room = batch_bytes(&req, &blobs, encoded.as_deref());
                let batch = reg.inner.publish_batch(&req, &blobs).expect("batch");
                let used = batch.size_in_bytes();
                assert!(used <= room, "{n} writes, intent {with_intent}: {used} bytes in {room} reserved");
                assert!(
                    room <= used * 2 + 64,
                    "{n} writes, intent {with_intent}: {room} reserved for {used}"
                );
            }
        }
    }
}
