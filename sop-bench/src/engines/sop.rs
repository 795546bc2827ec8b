//! SOP-rs on the embedded default: RocksDB registry holding the blobs,
//! foyer cache (256 MiB memory tier).

use std::ops::Bound;
use std::path::{Path, PathBuf};

use sop_btree::{Config, Database, ErrorKind, StoreOptions, Transaction};

use super::{Engine, Result, counter, err, with_counter};

const STORE: &str = "bench";

/// A SOP-rs database and the runtime that drives it.
#[derive(Debug)]
pub(crate) struct SopEngine {
    rt: tokio::runtime::Runtime,
    db: Option<Database>,
    dir: PathBuf,
    sync: bool,
}

fn conflict_or(e: sop_btree::Error) -> Result<bool> {
    if e.kind() == ErrorKind::Conflict { Ok(false) } else { Err(err(e)) }
}

impl SopEngine {
    pub(crate) fn open(dir: &Path, sync: bool) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(err)?;
        let mut e = Self { rt, db: None, dir: dir.to_path_buf(), sync };
        e.open_again()?;
        let db = e.db()?.clone();
        e.rt.block_on(async move {
            match db.create_store(STORE, StoreOptions::default()).await {
                Err(e) if e.kind() != ErrorKind::AlreadyExists => Err(err(e)),
                _ => Ok(()),
            }
        })?;
        Ok(e)
    }

    fn db(&self) -> Result<&Database> {
        self.db.as_ref().ok_or_else(|| "database closed".to_owned())
    }

    /// Runs `f` in a write transaction and commits: `Ok(false)` on conflict.
    fn write<F, Fut>(&self, f: F) -> Result<bool>
    where
        F: FnOnce(Transaction) -> Fut,
        Fut: Future<Output = sop_btree::Result<()>>,
    {
        let db = self.db()?.clone();
        self.rt.block_on(async move {
            let tx = db.begin_write().await.map_err(err)?;
            if let Err(e) = f(tx.clone()).await {
                tx.rollback().await;
                return conflict_or(e);
            }
            match tx.commit().await {
                Ok(_) => Ok(true),
                Err(e) => conflict_or(e),
            }
        })
    }

    fn must(&self, committed: Result<bool>) -> Result<()> {
        match committed? {
            true => Ok(()),
            false => Err("unexpected conflict in a single-writer phase".into()),
        }
    }
}

impl Engine for SopEngine {
    fn put_batch(&self, items: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        self.must(self.write(|tx| async move {
            let st = tx.bytes_store(STORE).await?;
            for (k, v) in items {
                st.upsert(k, v).await?;
            }
            Ok(())
        }))
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let db = self.db()?.clone();
        self.rt
            .block_on(async move {
                let tx = db.begin_read().await?;
                let v = tx.bytes_store(STORE).await?.get(key).await?;
                tx.commit().await?;
                Ok::<_, sop_btree::Error>(v.map(|b| b.to_vec()))
            })
            .map_err(err)
    }

    fn get_batch(&self, keys: &[Vec<u8>]) -> Result<usize> {
        let db = self.db()?.clone();
        self.rt
            .block_on(async move {
                let tx = db.begin_read().await?;
                let st = tx.bytes_store(STORE).await?;
                let mut n = 0;
                for k in keys {
                    n += usize::from(st.get(k).await?.is_some());
                }
                tx.commit().await?;
                Ok::<_, sop_btree::Error>(n)
            })
            .map_err(err)
    }

    fn scan(&self, from: Option<&[u8]>, limit: usize) -> Result<usize> {
        let db = self.db()?.clone();
        self.rt
            .block_on(async move {
                let tx = db.begin_read().await?;
                let st = tx.bytes_store(STORE).await?;
                let lo = from.map_or(Bound::Unbounded, Bound::Included);
                let mut cur = st.range(lo, Bound::Unbounded);
                let mut n = 0;
                while n < limit {
                    // Borrowed, as the peers' iterators lend theirs.
                    let Some(kv) = cur.next_ref().await? else { break };
                    std::hint::black_box(kv);
                    n += 1;
                }
                tx.commit().await?;
                Ok::<_, sop_btree::Error>(n)
            })
            .map_err(err)
    }

    fn increment(&self, key: &[u8]) -> Result<bool> {
        self.write(|tx| async move {
            let st = tx.bytes_store(STORE).await?;
            let v = st.get(key).await?.unwrap_or_default();
            st.upsert(key, &with_counter(&v, counter(&v) + 1)).await
        })
    }

    fn transfer(&self, a: &[u8], b: &[u8]) -> Result<bool> {
        self.write(|tx| async move {
            let st = tx.bytes_store(STORE).await?;
            let va = st.get(a).await?.unwrap_or_default();
            let vb = st.get(b).await?.unwrap_or_default();
            st.upsert(a, &with_counter(&va, counter(&va).wrapping_sub(1))).await?;
            st.upsert(b, &with_counter(&vb, counter(&vb).wrapping_add(1))).await
        })
    }

    fn delete_batch(&self, keys: &[Vec<u8>]) -> Result<()> {
        self.must(self.write(|tx| async move {
            let st = tx.bytes_store(STORE).await?;
            for k in keys {
                st.remove(k).await?;
            }
            Ok(())
        }))
    }

    fn close(&mut self) -> Result<()> {
        if let Some(db) = self.db.take() {
            self.rt.block_on(db.close()).map_err(err)?;
            drop(db);
        }
        Ok(())
    }

    fn open_again(&mut self) -> Result<()> {
        self.close()?;
        let mut config = Config::embedded(&self.dir);
        config.sync = self.sync;
        self.db = Some(self.rt.block_on(Database::open(config)).map_err(err)?);
        Ok(())
    }

    fn quiesce(&mut self) -> Result<()> {
        let db = self.db()?.clone();
        self.rt.block_on(db.flush_gc()).map_err(err)
    }

    fn cleanup(&mut self) -> Result<()> {
        let db = self.db()?.clone();
        self.rt.block_on(db.compact()).map_err(err)
    }
}
