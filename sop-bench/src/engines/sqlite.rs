//! SQLite through rusqlite: WAL mode, one `WITHOUT ROWID` table keyed by
//! the key; `synchronous=FULL` (a WAL sync per commit) unless `--no-sync`.
//! Writers take `BEGIN IMMEDIATE`, so they run one at a time.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{Engine, Result, counter, err, with_counter};

/// A pool of connections to one database file.
#[derive(Debug)]
pub(crate) struct SqliteEngine {
    path: PathBuf,
    sync: bool,
    pool: Mutex<Vec<Connection>>,
}

impl SqliteEngine {
    pub(crate) fn open(dir: &Path, sync: bool) -> Result<Self> {
        let e = Self { path: dir.join("sqlite.db"), sync, pool: Mutex::new(Vec::new()) };
        let c = e.connect()?;
        c.execute_batch("CREATE TABLE IF NOT EXISTS kv (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID;")
            .map_err(err)?;
        e.give(c);
        Ok(e)
    }

    fn connect(&self) -> Result<Connection> {
        let c = Connection::open(&self.path).map_err(err)?;
        c.busy_timeout(Duration::from_secs(60)).map_err(err)?;
        let sync = if self.sync { "FULL" } else { "OFF" };
        c.execute_batch(&format!(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous={sync}; PRAGMA cache_size=-262144;"
        ))
        .map_err(err)?;
        Ok(c)
    }

    fn take(&self) -> Result<Connection> {
        let pooled = self.pool.lock().unwrap_or_else(PoisonError::into_inner).pop();
        match pooled {
            Some(c) => Ok(c),
            None => self.connect(),
        }
    }

    fn give(&self, c: Connection) {
        self.pool.lock().unwrap_or_else(PoisonError::into_inner).push(c);
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        let mut c = self.take()?;
        let out = f(&mut c);
        self.give(c);
        out
    }

    fn write(&self, f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<()>) -> Result<bool> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
            f(&tx)?;
            tx.commit().map_err(err)?;
            Ok(true)
        })
    }
}

fn get(tx: &rusqlite::Transaction<'_>, k: &[u8]) -> Result<Vec<u8>> {
    let mut st = tx.prepare_cached("SELECT v FROM kv WHERE k = ?1").map_err(err)?;
    Ok(st.query_row(params![k], |r| r.get::<_, Vec<u8>>(0)).optional().map_err(err)?.unwrap_or_default())
}

fn put(tx: &rusqlite::Transaction<'_>, k: &[u8], v: &[u8]) -> Result<()> {
    let mut st = tx.prepare_cached("INSERT OR REPLACE INTO kv (k, v) VALUES (?1, ?2)").map_err(err)?;
    st.execute(params![k, v]).map_err(err).map(drop)
}

impl Engine for SqliteEngine {
    fn put_batch(&self, items: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        self.write(|tx| items.iter().try_for_each(|(k, v)| put(tx, k, v))).map(drop)
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.with(|c| {
            let mut st = c.prepare_cached("SELECT v FROM kv WHERE k = ?1").map_err(err)?;
            st.query_row(params![key], |r| r.get::<_, Vec<u8>>(0)).optional().map_err(err)
        })
    }

    fn get_batch(&self, keys: &[Vec<u8>]) -> Result<usize> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Deferred).map_err(err)?;
            let mut n = 0;
            {
                let mut st = tx.prepare_cached("SELECT length(v) FROM kv WHERE k = ?1").map_err(err)?;
                for k in keys {
                    n += usize::from(
                        st.query_row(params![k], |r| r.get::<_, i64>(0)).optional().map_err(err)?.is_some(),
                    );
                }
            }
            tx.commit().map_err(err)?;
            Ok(n)
        })
    }

    fn scan(&self, from: Option<&[u8]>, limit: usize) -> Result<usize> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Deferred).map_err(err)?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let mut n = 0;
            {
                let mut st = tx
                    .prepare_cached("SELECT k, v FROM kv WHERE k >= ?1 ORDER BY k LIMIT ?2")
                    .map_err(err)?;
                let mut rows = st.query(params![from.unwrap_or(&[]), limit]).map_err(err)?;
                while let Some(r) = rows.next().map_err(err)? {
                    let v: &[u8] = r.get_ref(1).map_err(err)?.as_blob().map_err(err)?;
                    std::hint::black_box(v);
                    n += 1;
                }
            }
            tx.commit().map_err(err)?;
            Ok(n)
        })
    }

    fn increment(&self, key: &[u8]) -> Result<bool> {
        self.write(|tx| {
            let v = get(tx, key)?;
            put(tx, key, &with_counter(&v, counter(&v) + 1))
        })
    }

    fn transfer(&self, a: &[u8], b: &[u8]) -> Result<bool> {
        self.write(|tx| {
            let (va, vb) = (get(tx, a)?, get(tx, b)?);
            put(tx, a, &with_counter(&va, counter(&va).wrapping_sub(1)))?;
            put(tx, b, &with_counter(&vb, counter(&vb).wrapping_add(1)))
        })
    }

    fn delete_batch(&self, keys: &[Vec<u8>]) -> Result<()> {
        self.write(|tx| {
            let mut st = tx.prepare_cached("DELETE FROM kv WHERE k = ?1").map_err(err)?;
            keys.iter().try_for_each(|k| st.execute(params![k]).map(drop).map_err(err))
        })
        .map(drop)
    }

    fn close(&mut self) -> Result<()> {
        self.pool.lock().unwrap_or_else(PoisonError::into_inner).clear();
        Ok(())
    }

    /// Connections open on demand.
    fn open_again(&mut self) -> Result<()> {
        self.close()
    }

    fn cleanup(&mut self) -> Result<()> {
        self.with(|c| c.execute_batch("VACUUM; PRAGMA wal_checkpoint(TRUNCATE);").map_err(err))
    }
}
