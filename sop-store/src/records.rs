//! Records in an object store: a commit's node blobs as one object, read
//! by ranges, deleted by dead lists and reclaimed by sweeps
//! ([`sop_core::record`] has the formats).
//!
//! Layout under the store's prefix: a record at `<xx>/<17 hex digits>.rec`
//! (`xx` its id's low byte), dead lists at `dead/<UUIDv7>.dead`.
//!
//! A sweep reads every dead list, unions their parts per record, deletes
//! each record whose dead parts tile it, then writes the parts still
//! waiting as one new dead list and deletes the lists it read. Two sweeps
//! at once (two processes) are safe: a dead list is a set, so one read
//! twice or written twice changes nothing, and a sweep deletes only the
//! lists it read, after writing what they held.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use sop_core::record::{
    self, PartRef, RecordId, decode_dead, decode_header, encode_dead, encode_header, header_parts,
};
use sop_core::{Error, PhysicalId, Result};

use crate::object::{ObjectBlobStore, count, from_os};

/// A sweep runs after this many dead lists written by one store.
pub(crate) const SWEEP_EVERY: usize = 16;

/// What a store remembers about its records between calls.
#[derive(Debug, Default)]
pub(crate) struct RecordState {
    /// Dead lists written since the last sweep.
    unswept: AtomicUsize,
    /// One sweep at a time per store.
    sweeping: tokio::sync::Mutex<()>,
    /// Sweeps run (for tests).
    sweeps: AtomicUsize,
}

/// What one sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// Dead lists read.
    pub lists: usize,
    /// Records deleted.
    pub records: usize,
    /// Dead parts still waiting for the rest of their record.
    pub waiting: usize,
}

impl ObjectBlobStore {
    pub(crate) fn record_path(&self, record: RecordId) -> Path {
        self.prefix
            .clone()
            .join(format!("{:02x}", record.low_byte()))
            .join(format!("{}.rec", record.to_hex()))
    }

    fn dead_dir(&self) -> Path {
        self.prefix.clone().join("dead")
    }

    /// Stores one record: `parts` must be all of a record's parts.
    pub(crate) async fn put_record(&self, record: RecordId, mut parts: Vec<(PartRef, Bytes)>) -> Result<()> {
        parts.sort_by_key(|(p, _)| p.offset);
        let lens: Vec<u32> = parts.iter().map(|(p, _)| p.len).collect();
        let header = encode_header(&lens)?;
        let mut at = header.len() as u64;
        for (p, data) in &parts {
            if u64::from(p.offset) != at || data.len() != p.len as usize {
                return Err(Error::invalid(
                    "blob ids",
                    format!(
                        "the parts given for record {} do not tile it (allocate, then put them together)",
                        record.to_hex()
                    ),
                ));
            }
            at += u64::from(p.len);
        }
        let mut body = Vec::with_capacity(at as usize);
        body.extend_from_slice(&header);
        for (_, data) in &parts {
            body.extend_from_slice(data);
        }
        self.put_new(
            &self.record_path(record),
            PutPayload::from(body),
            &format!("record {}", record.to_hex()),
        )
        .await
    }

    /// Reads one part with a ranged read of its record.
    pub(crate) async fn get_part(&self, id: PhysicalId, part: PartRef) -> Result<Bytes> {
        count("get");
        let path = self.record_path(part.record);
        let got =
            self.store.get_range(&path, part.range()).await.map_err(|e| from_os(e, &format!("blob {id}")))?;
        if got.len() != part.len as usize {
            return Err(Error::corruption(
                "record",
                format!("blob {id}: {} of {} bytes", got.len(), part.len),
            ));
        }
        Ok(got)
    }

    /// Deletes parts: one dead list naming them, then a sweep every
    /// [`SWEEP_EVERY`] lists unless one is under way (its errors wait for
    /// the next sweep: the parts are deleted once listed).
    pub(crate) async fn delete_parts(&self, parts: &[PhysicalId]) -> Result<()> {
        if parts.is_empty() {
            return Ok(());
        }
        self.put_dead(parts).await?;
        if self.records.unswept.fetch_add(1, Ordering::Relaxed) + 1 >= SWEEP_EVERY
            && let Ok(one) = self.records.sweeping.try_lock()
        {
            let _ = self.sweep_locked(one).await;
        }
        Ok(())
    }

    async fn put_dead(&self, parts: &[PhysicalId]) -> Result<()> {
        let path = self.dead_dir().join(format!("{}.dead", PhysicalId::new()));
        self.put_new(&path, PutPayload::from(encode_dead(parts)), "dead list").await
    }

    /// Every dead list: its path and parts (`Err` for one that does not
    /// decode). The lists are listed, read, and listed again until both
    /// listings agree and none vanished while read: a sweep writes what
    /// the lists it read held into a new one before deleting them, so a
    /// listing that is not a snapshot (a directory walk, pages) could
    /// otherwise miss both the new list and the old ones.
    async fn dead_lists(&self) -> Result<Vec<(Path, Result<Vec<PartRef>>)>> {
        const ATTEMPTS: usize = 20;
        for _ in 0..ATTEMPTS {
            if let Some(lists) = self.dead_lists_once(true).await? {
                return Ok(lists);
            }
        }
        Err(Error::io("reading dead lists", std::io::Error::other("they kept changing while read")))
    }

    async fn list_dead(&self) -> Result<HashSet<Path>> {
        count("list");
        let dir = self.dead_dir();
        let metas: Vec<_> =
            self.store.list(Some(&dir)).try_collect().await.map_err(|e| from_os(e, "listing dead lists"))?;
        Ok(metas.into_iter().map(|m| m.location).collect())
    }

    /// The dead lists, or `None` if one vanished while read or (`exact`)
    /// a new one appeared. A sweep needs no exact snapshot: a list it does
    /// not see only leaves parts waiting, and it deletes only lists it
    /// read.
    async fn dead_lists_once(&self, exact: bool) -> Result<Option<Vec<(Path, Result<Vec<PartRef>>)>>> {
        let listed = self.list_dead().await?;
        let mut lists = Vec::with_capacity(listed.len());
        for path in &listed {
            count("get");
            let got = self.store.get(path).await;
            let bytes = match got {
                Ok(got) => got.bytes().await,
                Err(e) => Err(e),
            };
            match bytes {
                Ok(b) => lists.push((path.clone(), decode_dead(&b))),
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(from_os(e, "reading a dead list")),
            }
        }
        if exact && !self.list_dead().await?.is_subset(&listed) {
            return Ok(None);
        }
        Ok(Some(lists))
    }

    /// Whether `parts`, all of a record's parts by their addresses, are all
    /// of it by its header (one ranged read): ids that tile a record but
    /// are not its parts (a foreign or damaged id deleted) never reclaim
    /// it. `None` when the record is not there (never stored, or gone).
    async fn header_names_exactly(&self, record: RecordId, parts: &[PartRef]) -> Result<Option<bool>> {
        count("get");
        let range = 0..record::header_len(parts.len()) as u64;
        match self.store.get_range(&self.record_path(record), range).await {
            Ok(header) => {
                let named: HashSet<PhysicalId> = match decode_header(record, &header) {
                    Ok(ids) => ids.into_iter().collect(),
                    Err(_) => return Ok(Some(false)),
                };
                Ok(Some(named.len() == parts.len() && parts.iter().all(|p| named.contains(&p.id()))))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(from_os(e, "reading a record header")),
        }
    }

    /// Reclaims every record whose parts are all dead; see the module
    /// documentation.
    ///
    /// # Errors
    /// `Io` when the store fails (nothing is lost: the next sweep redoes
    /// the work); `Corruption` after the sweep when a dead list could not
    /// be decoded (it is kept, and its parts are not reclaimed).
    pub async fn sweep(&self) -> Result<Swept> {
        self.sweep_locked(self.records.sweeping.lock().await).await
    }

    async fn sweep_locked(&self, _one: tokio::sync::MutexGuard<'_, ()>) -> Result<Swept> {
        self.records.unswept.store(0, Ordering::Relaxed);
        self.records.sweeps.fetch_add(1, Ordering::Relaxed);
        // A list gone while read: another sweep is at work; leave it be
        // (what this one saw of a record could be a part of it only).
        let Some(lists) = self.dead_lists_once(false).await? else { return Ok(Swept::default()) };
        let mut read = Vec::new();
        let mut bad = None;
        let mut dead: HashMap<RecordId, HashSet<PartRef>> = HashMap::new();
        for (path, parts) in lists {
            match parts {
                Ok(parts) => {
                    for p in parts {
                        dead.entry(p.record).or_default().insert(p);
                    }
                    read.push(path);
                }
                Err(e) => bad = Some(Error::corruption("dead list", format!("{path}: {e}"))),
            }
        }
        let mut swept = Swept { lists: read.len(), ..Swept::default() };
        let mut waiting = Vec::new();
        let mut dropped = false;
        for (record, parts) in dead {
            let parts: Vec<PartRef> = parts.into_iter().collect();
            // Parts of a record start after a header sized for all of
            // them: fewer can never tile it, and wait with no request.
            if record::tiling_end(&parts).is_none() {
                waiting.extend(parts.iter().map(PartRef::id));
                continue;
            }
            match self.header_names_exactly(record, &parts).await? {
                // Never stored (an aborted commit) or already reclaimed.
                None => dropped = true,
                Some(true) => {
                    self.delete_object(&self.record_path(record), "deleting a record").await?;
                    swept.records += 1;
                }
                Some(false) => waiting.extend(parts.iter().map(PartRef::id)),
            }
        }
        swept.waiting = waiting.len();
        let unchanged = read.len() == 1 && swept.records == 0 && !dropped;
        if !unchanged && !read.is_empty() {
            if !waiting.is_empty() {
                self.put_dead(&waiting).await?;
            }
            for path in &read {
                self.delete_object(path, "deleting a dead list").await?;
            }
        }
        bad.map_or(Ok(swept), Err)
    }

    /// The live parts of every record: those its header names and no dead
    /// list does.
    pub(crate) async fn live_parts(&self, records: Vec<RecordId>) -> Result<Vec<PhysicalId>> {
        let mut dead = HashSet::new();
        for (path, parts) in self.dead_lists().await? {
            let parts = parts.map_err(|e| Error::corruption("dead list", format!("{path}: {e}")))?;
            dead.extend(parts.iter().map(PartRef::id));
        }
        let mut live = Vec::new();
        for record in records {
            let path = self.record_path(record);
            count("get");
            let prefix = match self.store.get_range(&path, 0..6).await {
                Ok(b) => b,
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(from_os(e, "reading a record header")),
            };
            let n = header_parts(&prefix)?;
            count("get");
            let header = match self.store.get_range(&path, 0..record::header_len(n) as u64).await {
                Ok(b) => b,
                // Reclaimed by a sweep since the first read.
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(from_os(e, "reading a record header")),
            };
            live.extend(decode_header(record, &header)?.into_iter().filter(|id| !dead.contains(id)));
        }
        Ok(live)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use object_store::ObjectStore;
    use object_store::memory::InMemory;
    use sop_core::{BlobStore, ErrorKind};

    use super::*;

    fn shared() -> (Arc<InMemory>, ObjectBlobStore, ObjectBlobStore) {
        let mem = Arc::new(InMemory::new());
        let a = ObjectBlobStore::new(mem.clone(), Path::from("db"));
        let b = ObjectBlobStore::new(mem.clone(), Path::from("db"));
        (mem, a, b)
    }

    async fn objects(mem: &InMemory, suffix: &str) -> usize {
        let all: Vec<_> = mem.list(None).try_collect().await.unwrap();
        all.iter().filter(|m| m.location.as_ref().ends_with(suffix)).count()
    }

    fn blobs(store: &ObjectBlobStore, n: usize, tag: u8) -> Vec<(PhysicalId, Bytes)> {
        let lens: Vec<usize> = (0..n).map(|i| 1 + (i * 37) % 300).collect();
        let ids = store.allocate(&lens);
        ids.into_iter().zip(lens).map(|(id, len)| (id, Bytes::from(vec![tag; len]))).collect()
    }

    #[tokio::test]
    async fn a_batch_of_allocated_blobs_is_one_object() {
        let (mem, a, _) = shared();
        let batch = blobs(&a, 500, 7);
        a.put_many(batch.clone()).await.unwrap();
        assert_eq!(objects(&mem, ".rec").await, 1);
        assert_eq!(objects(&mem, "").await, 1, "nothing else was written");
        for (id, data) in &batch {
            assert_eq!(&a.get(*id).await.unwrap(), data);
        }
        // The same record again: never overwritten.
        let err = a.put_many(batch.clone()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    }

    #[tokio::test]
    async fn parts_that_do_not_tile_their_record_are_refused_and_nothing_is_stored() {
        let (mem, a, _) = shared();
        let mut batch = blobs(&a, 3, 1);
        batch.remove(1);
        let err = a.put_many(batch.clone()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        let mut wrong_len = blobs(&a, 2, 1);
        wrong_len[0].1 = Bytes::from_static(b"not the allocated length");
        let err = a.put_many(wrong_len).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        assert_eq!(objects(&mem, "").await, 0);
    }

    /// Records of random sizes, their parts deleted in random order through
    /// two stores (two processes) sweeping at random and at once: a part not
    /// deleted always reads back, and once everything is deleted and swept
    /// nothing is left.
    #[tokio::test]
    async fn two_stores_sweeping_at_once_never_reclaim_a_live_part() {
        let (mem, a, b) = shared();
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |n: usize| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % n as u64) as usize
        };
        let mut live: Vec<(PhysicalId, Bytes)> = Vec::new();
        for r in 0..12 {
            let batch = blobs(&a, 1 + next(20), r);
            a.put_many(batch.clone()).await.unwrap();
            live.extend(batch);
        }
        while !live.is_empty() {
            let k = 1 + next(3.min(live.len()));
            let gone: Vec<PhysicalId> = (0..k).map(|_| live.swap_remove(next(live.len())).0).collect();
            let (by, other) = if next(2) == 0 { (&a, &b) } else { (&b, &a) };
            by.delete_many(&gone).await.unwrap();
            if next(3) == 0 {
                let (x, y) = tokio::join!(by.sweep(), other.sweep());
                x.unwrap();
                y.unwrap();
            }
            for (id, data) in &live {
                assert_eq!(&a.get(*id).await.expect("a live part"), data);
            }
        }
        a.sweep().await.unwrap();
        let last = b.sweep().await.unwrap();
        assert_eq!(last.waiting, 0);
        assert_eq!(objects(&mem, ".rec").await, 0, "every record reclaimed");
        assert_eq!(objects(&mem, ".dead").await, 0, "no dead list left");
    }

    #[tokio::test]
    async fn a_corrupt_dead_list_is_kept_and_reported_and_the_rest_is_swept() {
        let (mem, a, _) = shared();
        let batch = blobs(&a, 4, 3);
        a.put_many(batch.clone()).await.unwrap();
        let ids: Vec<PhysicalId> = batch.iter().map(|b| b.0).collect();
        a.delete_many(&ids).await.unwrap();
        mem.put(&Path::from("db/dead/garbage.dead"), PutPayload::from_static(b"garbage")).await.unwrap();
        let err = a.sweep().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corruption, "{err}");
        assert_eq!(objects(&mem, ".rec").await, 0, "the record was reclaimed all the same");
        assert_eq!(objects(&mem, "garbage.dead").await, 1, "the unreadable list is kept");
    }

    #[tokio::test]
    async fn parts_of_a_record_never_stored_are_dropped_from_the_dead_lists() {
        let (mem, a, _) = shared();
        let ids: Vec<PhysicalId> = blobs(&a, 5, 1).into_iter().map(|b| b.0).collect();
        a.delete_many(&ids[..2]).await.unwrap();
        a.delete_many(&ids[2..]).await.unwrap();
        let swept = a.sweep().await.unwrap();
        assert_eq!((swept.lists, swept.records, swept.waiting), (2, 0, 0));
        assert_eq!(objects(&mem, "").await, 0);
    }

    /// Ids that tile a record with a deleted part but are not its parts
    /// (foreign or damaged ids deleted) never reclaim it: its header must
    /// name exactly the dead parts.
    #[tokio::test]
    async fn forged_ids_that_tile_a_record_do_not_reclaim_it() {
        let (mem, a, _) = shared();
        let ids = a.allocate(&[5, 10, 15]);
        let blobs: Vec<(PhysicalId, Bytes)> =
            ids.iter().zip([5usize, 10, 15]).map(|(id, n)| (*id, Bytes::from(vec![1u8; n]))).collect();
        a.put_many(blobs).await.unwrap();
        let first = ids[0].part().unwrap();
        let forged = |offset: u32, len: u32| PartRef { record: first.record, offset, len }.id();
        let end = first.range().end as u32;
        let dead = [ids[0], forged(end, 5), forged(end + 5, 20)];
        let parts: Vec<PartRef> = dead.iter().map(|id| id.part().unwrap()).collect();
        assert_eq!(record::tiling_end(&parts), Some(u64::from(end) + 25), "the forged ids do tile it");
        a.delete_many(&dead).await.unwrap();
        let swept = a.sweep().await.unwrap();
        assert_eq!((swept.records, swept.waiting), (0, 3));
        assert_eq!(objects(&mem, ".rec").await, 1);
        assert_eq!(a.get(ids[2]).await.unwrap(), Bytes::from(vec![1u8; 15]), "the live part is kept");
    }

    /// Deletions that arrive while a sweep runs do not each start another.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_deletions_share_their_sweeps() {
        let dir = tempfile::tempdir().unwrap();
        let a = ObjectBlobStore::local(dir.path(), false).unwrap(); // real I/O: calls overlap
        let mut ids = Vec::new();
        for _ in 0..64 {
            let batch = blobs(&a, 2, 4);
            a.put_many(batch.clone()).await.unwrap();
            ids.push(batch.into_iter().map(|b| b.0).collect::<Vec<_>>());
        }
        let deletes = ids.iter().map(|ids| a.delete_many(ids));
        for r in futures::future::join_all(deletes).await {
            r.unwrap();
        }
        let sweeps = a.records.sweeps.load(Ordering::Relaxed);
        assert!((1..=8).contains(&sweeps), "{sweeps} sweeps for 64 dead lists");
    }

    #[tokio::test]
    async fn deletions_sweep_by_themselves_every_few_dead_lists() {
        let (mem, a, _) = shared();
        for _ in 0..SWEEP_EVERY {
            let ids: Vec<PhysicalId> = {
                let batch = blobs(&a, 3, 2);
                a.put_many(batch.clone()).await.unwrap();
                batch.into_iter().map(|b| b.0).collect()
            };
            a.delete_many(&ids).await.unwrap();
        }
        assert_eq!(objects(&mem, "").await, 0, "records and dead lists swept");
    }
}
