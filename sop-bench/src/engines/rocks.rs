//! RocksDB through `OptimisticTransactionDB`: reads with
//! `get_for_update` are validated at commit (`Busy` on a conflict).

use std::path::{Path, PathBuf};

use rocksdb::{
    ErrorKind, OptimisticTransactionDB, OptimisticTransactionOptions, Options, ReadOptions, SingleThreaded,
    Transaction, WriteOptions,
};

use super::{Engine, Result, counter, err, with_counter};

type Db = OptimisticTransactionDB<SingleThreaded>;

/// One RocksDB database.
pub(crate) struct RocksEngine {
    db: Option<Db>,
    dir: PathBuf,
    write: WriteOptions,
}

impl std::fmt::Debug for RocksEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RocksEngine({})", self.dir.display())
    }
}

fn options() -> Options {
    let mut o = Options::default();
    o.create_if_missing(true);
    o.set_max_background_jobs(2);
    o
}

impl RocksEngine {
    pub(crate) fn open(dir: &Path, sync: bool) -> Result<Self> {
        let mut write = WriteOptions::default();
        write.set_sync(sync);
        let mut e = Self { db: None, dir: dir.join("rocksdb"), write };
        e.reopen()?;
        Ok(e)
    }

    fn db(&self) -> Result<&Db> {
        self.db.as_ref().ok_or_else(|| "database closed".to_owned())
    }

    fn begin(&self) -> Result<Transaction<'_, Db>> {
        let mut o = OptimisticTransactionOptions::default();
        o.set_snapshot(true);
        Ok(self.db()?.transaction_opt(&self.write, &o))
    }

    fn finish(tx: Transaction<'_, Db>) -> Result<bool> {
        match tx.commit() {
            Ok(()) => Ok(true),
            Err(e) if matches!(e.kind(), ErrorKind::Busy | ErrorKind::TryAgain) => Ok(false),
            Err(e) => Err(err(e)),
        }
    }
}

impl Engine for RocksEngine {
    fn put_batch(&self, items: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        let tx = self.begin()?;
        for (k, v) in items {
            tx.put(k, v).map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db()?.get(key).map_err(err)
    }

    fn get_batch(&self, keys: &[Vec<u8>]) -> Result<usize> {
        let db = self.db()?;
        let snap = db.snapshot();
        let mut n = 0;
        for k in keys {
            n += usize::from(snap.get_pinned(k).map_err(err)?.is_some());
        }
        Ok(n)
    }

    fn scan(&self, from: Option<&[u8]>, limit: usize) -> Result<usize> {
        let db = self.db()?;
        let snap = db.snapshot();
        let mut ro = ReadOptions::default();
        ro.set_snapshot(&snap);
        // The raw iterator lends each key and value (the plain iterator
        // copies both into boxes), as redb's and LMDB's iterators do.
        let mut it = db.raw_iterator_opt(ro);
        match from {
            Some(k) => it.seek(k),
            None => it.seek_to_first(),
        }
        let mut n = 0;
        while n < limit && it.valid() {
            std::hint::black_box((it.key(), it.value()));
            n += 1;
            it.next();
        }
        it.status().map_err(err)?;
        Ok(n)
    }

    fn increment(&self, key: &[u8]) -> Result<bool> {
        let tx = self.begin()?;
        let v = tx.get_for_update(key, true).map_err(err)?.unwrap_or_default();
        tx.put(key, with_counter(&v, counter(&v) + 1)).map_err(err)?;
        Self::finish(tx)
    }

    fn transfer(&self, a: &[u8], b: &[u8]) -> Result<bool> {
        let tx = self.begin()?;
        let va = tx.get_for_update(a, true).map_err(err)?.unwrap_or_default();
        let vb = tx.get_for_update(b, true).map_err(err)?.unwrap_or_default();
        tx.put(a, with_counter(&va, counter(&va).wrapping_sub(1))).map_err(err)?;
        tx.put(b, with_counter(&vb, counter(&vb).wrapping_add(1))).map_err(err)?;
        Self::finish(tx)
    }

    fn delete_batch(&self, keys: &[Vec<u8>]) -> Result<()> {
        let tx = self.begin()?;
        for k in keys {
            tx.delete(k).map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    fn close(&mut self) -> Result<()> {
        self.db = None;
        Ok(())
    }

    fn open_again(&mut self) -> Result<()> {
        self.db = None;
        self.db = Some(Db::open(&options(), &self.dir).map_err(err)?);
        Ok(())
    }

    fn cleanup(&mut self) -> Result<()> {
        self.db()?.compact_range::<&[u8], &[u8]>(None, None);
        Ok(())
    }
}
