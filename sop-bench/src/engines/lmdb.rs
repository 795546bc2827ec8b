//! LMDB through `heed`: a copy-on-write B+tree in one memory map; one
//! writer at a time, readers never block. The read ceiling among real
//! engines in redb's own published table.

use std::path::{Path, PathBuf};

use heed::types::Bytes;
use heed::{CompactionOption, Env, EnvFlags, EnvOpenOptions};

use super::{Engine, Result, counter, err, with_counter};

type Table = heed::Database<Bytes, Bytes>;

/// The memory map's size: address space only, the file grows as used.
const MAP_BYTES: usize = 16 << 30;

/// One LMDB environment (directory `lmdb/` of the run's directory).
pub(crate) struct LmdbEngine {
    env: Option<(Env, Table)>,
    dir: PathBuf,
    sync: bool,
}

impl std::fmt::Debug for LmdbEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LmdbEngine({})", self.dir.display())
    }
}

impl LmdbEngine {
    pub(crate) fn open(dir: &Path, sync: bool) -> Result<Self> {
        let mut e = Self { env: None, dir: dir.join("lmdb"), sync };
        std::fs::create_dir_all(&e.dir).map_err(err)?;
        e.open_again()?;
        Ok(e)
    }

    fn get_env(&self) -> Result<&(Env, Table)> {
        self.env.as_ref().ok_or_else(|| "database closed".to_owned())
    }

    fn write(&self, f: impl FnOnce(&mut heed::RwTxn<'_>, Table) -> Result<()>) -> Result<bool> {
        let (env, table) = self.get_env()?;
        let mut tx = env.write_txn().map_err(err)?;
        f(&mut tx, *table)?;
        tx.commit().map_err(err)?;
        Ok(true)
    }
}

#[allow(unsafe_code)]
fn open_env(dir: &Path, sync: bool) -> Result<Env> {
    let mut opts = EnvOpenOptions::new();
    opts.map_size(MAP_BYTES).max_dbs(1);
    // SAFETY: the benchmark opens this directory once per process, closes
    // it before opening it again and never truncates or edits its file
    // while mapped (the conditions of `EnvOpenOptions::open` and of
    // `NO_SYNC`, whose only cost is durability, which `--no-sync` waives).
    unsafe {
        if !sync {
            opts.flags(EnvFlags::NO_SYNC);
        }
        opts.open(dir).map_err(err)
    }
}

impl Engine for LmdbEngine {
    fn put_batch(&self, items: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        self.write(|tx, t| {
            for (k, v) in items {
                t.put(tx, k, v).map_err(err)?;
            }
            Ok(())
        })
        .map(drop)
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let (env, t) = self.get_env()?;
        let tx = env.read_txn().map_err(err)?;
        Ok(t.get(&tx, key).map_err(err)?.map(<[u8]>::to_vec))
    }

    fn get_batch(&self, keys: &[Vec<u8>]) -> Result<usize> {
        let (env, t) = self.get_env()?;
        let tx = env.read_txn().map_err(err)?;
        let mut n = 0;
        for k in keys {
            n += usize::from(t.get(&tx, k).map_err(err)?.is_some());
        }
        Ok(n)
    }

    fn scan(&self, from: Option<&[u8]>, limit: usize) -> Result<usize> {
        let (env, t) = self.get_env()?;
        let tx = env.read_txn().map_err(err)?;
        let lo = from.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Included);
        let iter = t.range(&tx, &(lo, std::ops::Bound::Unbounded)).map_err(err)?;
        let mut n = 0;
        for kv in iter.take(limit) {
            kv.map_err(err)?;
            n += 1;
        }
        Ok(n)
    }

    fn increment(&self, key: &[u8]) -> Result<bool> {
        self.write(|tx, t| {
            let v = t.get(tx, key).map_err(err)?.unwrap_or_default().to_vec();
            t.put(tx, key, &with_counter(&v, counter(&v) + 1)).map_err(err)
        })
    }

    fn transfer(&self, a: &[u8], b: &[u8]) -> Result<bool> {
        self.write(|tx, t| {
            let va = t.get(tx, a).map_err(err)?.unwrap_or_default().to_vec();
            let vb = t.get(tx, b).map_err(err)?.unwrap_or_default().to_vec();
            t.put(tx, a, &with_counter(&va, counter(&va).wrapping_sub(1))).map_err(err)?;
            t.put(tx, b, &with_counter(&vb, counter(&vb).wrapping_add(1))).map_err(err)
        })
    }

    fn delete_batch(&self, keys: &[Vec<u8>]) -> Result<()> {
        self.write(|tx, t| {
            for k in keys {
                t.delete(tx, k).map_err(err)?;
            }
            Ok(())
        })
        .map(drop)
    }

    fn close(&mut self) -> Result<()> {
        if let Some((env, _)) = self.env.take() {
            env.prepare_for_closing().wait();
        }
        Ok(())
    }

    fn open_again(&mut self) -> Result<()> {
        self.close()?;
        let env = open_env(&self.dir, self.sync)?;
        let mut tx = env.write_txn().map_err(err)?;
        let table: Table = env.create_database(&mut tx, None).map_err(err)?;
        tx.commit().map_err(err)?;
        self.env = Some((env, table));
        Ok(())
    }

    /// LMDB never shrinks its file: a compacting copy replaces it.
    fn cleanup(&mut self) -> Result<()> {
        let copy = self.dir.with_extension("compact");
        std::fs::create_dir_all(&copy).map_err(err)?;
        let file = copy.join("data.mdb");
        self.get_env()?
            .0
            .copy_to_path(&file, CompactionOption::Enabled)
            .map_err(err)?
            .sync_all()
            .map_err(err)?;
        self.close()?;
        std::fs::rename(&file, self.dir.join("data.mdb")).map_err(err)?;
        let _ = std::fs::remove_dir_all(&copy);
        self.open_again()
    }
}
