//! redb: a copy-on-write B-tree in one file; one writer at a time.

use std::path::{Path, PathBuf};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::{Engine, Result, counter, err, with_counter};

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("bench");

/// One redb database file.
pub(crate) struct RedbEngine {
    db: Option<Database>,
    path: PathBuf,
    sync: bool,
}

impl std::fmt::Debug for RedbEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedbEngine({})", self.path.display())
    }
}

impl RedbEngine {
    pub(crate) fn open(dir: &Path, sync: bool) -> Result<Self> {
        let mut e = Self { db: None, path: dir.join("redb.db"), sync };
        e.open_again()?;
        e.write(|_| Ok(()))?;
        Ok(e)
    }

    fn db(&self) -> Result<&Database> {
        self.db.as_ref().ok_or_else(|| "database closed".to_owned())
    }

    fn write(&self, f: impl FnOnce(&mut redb::Table<&[u8], &[u8]>) -> Result<()>) -> Result<bool> {
        let mut tx = self.db()?.begin_write().map_err(err)?;
        tx.set_durability(if self.sync { Durability::Immediate } else { Durability::None }).map_err(err)?;
        {
            let mut t = tx.open_table(TABLE).map_err(err)?;
            f(&mut t)?;
        }
        tx.commit().map_err(err)?;
        Ok(true)
    }
}

impl Engine for RedbEngine {
    fn put_batch(&self, items: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        self.write(|t| {
            for (k, v) in items {
                t.insert(k.as_slice(), v.as_slice()).map_err(err)?;
            }
            Ok(())
        })
        .map(drop)
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let tx = self.db()?.begin_read().map_err(err)?;
        let t = tx.open_table(TABLE).map_err(err)?;
        Ok(t.get(key).map_err(err)?.map(|g| g.value().to_vec()))
    }

    fn get_batch(&self, keys: &[Vec<u8>]) -> Result<usize> {
        let tx = self.db()?.begin_read().map_err(err)?;
        let t = tx.open_table(TABLE).map_err(err)?;
        let mut n = 0;
        for k in keys {
            n += usize::from(t.get(k.as_slice()).map_err(err)?.is_some());
        }
        Ok(n)
    }

    fn scan(&self, from: Option<&[u8]>, limit: usize) -> Result<usize> {
        let tx = self.db()?.begin_read().map_err(err)?;
        let t = tx.open_table(TABLE).map_err(err)?;
        let iter = match from {
            Some(k) => t.range::<&[u8]>(k..).map_err(err)?,
            None => t.range::<&[u8]>(..).map_err(err)?,
        };
        let mut n = 0;
        for kv in iter.take(limit) {
            kv.map_err(err)?;
            n += 1;
        }
        Ok(n)
    }

    fn increment(&self, key: &[u8]) -> Result<bool> {
        self.write(|t| {
            let v = t.get(key).map_err(err)?.map(|g| g.value().to_vec()).unwrap_or_default();
            t.insert(key, with_counter(&v, counter(&v) + 1).as_slice()).map_err(err)?;
            Ok(())
        })
    }

    fn transfer(&self, a: &[u8], b: &[u8]) -> Result<bool> {
        self.write(|t| {
            let va = t.get(a).map_err(err)?.map(|g| g.value().to_vec()).unwrap_or_default();
            let vb = t.get(b).map_err(err)?.map(|g| g.value().to_vec()).unwrap_or_default();
            t.insert(a, with_counter(&va, counter(&va).wrapping_sub(1)).as_slice()).map_err(err)?;
            t.insert(b, with_counter(&vb, counter(&vb).wrapping_add(1)).as_slice()).map_err(err)?;
            Ok(())
        })
    }

    fn delete_batch(&self, keys: &[Vec<u8>]) -> Result<()> {
        self.write(|t| {
            for k in keys {
                t.remove(k.as_slice()).map_err(err)?;
            }
            Ok(())
        })
        .map(drop)
    }

    fn close(&mut self) -> Result<()> {
        self.db = None;
        Ok(())
    }

    fn open_again(&mut self) -> Result<()> {
        self.db = None;
        self.db = Some(Database::create(&self.path).map_err(err)?);
        Ok(())
    }

    fn cleanup(&mut self) -> Result<()> {
        // A durable commit first: compaction needs no pending non-durable ones.
        let mut tx = self.db()?.begin_write().map_err(err)?;
        tx.set_durability(Durability::Immediate).map_err(err)?;
        tx.commit().map_err(err)?;
        let db = self.db.as_mut().ok_or("database closed")?;
        while db.compact().map_err(err)? {}
        Ok(())
    }
}
