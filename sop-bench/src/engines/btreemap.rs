//! The in-memory ceiling: a `BTreeMap` behind a lock, no durability.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{PoisonError, RwLock};

use super::{Engine, Result, counter, with_counter};

/// `RwLock<BTreeMap>`; writers hold the write lock for a transaction.
#[derive(Debug, Default)]
pub(crate) struct BTreeMapEngine {
    map: RwLock<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl Engine for BTreeMapEngine {
    fn put_batch(&self, items: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        let mut m = self.map.write().unwrap_or_else(PoisonError::into_inner);
        for (k, v) in items {
            m.insert(k.clone(), v.clone());
        }
        Ok(())
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.map.read().unwrap_or_else(PoisonError::into_inner).get(key).cloned())
    }

    fn get_batch(&self, keys: &[Vec<u8>]) -> Result<usize> {
        let m = self.map.read().unwrap_or_else(PoisonError::into_inner);
        Ok(keys.iter().filter(|k| m.get(*k).is_some_and(|v| !v.is_empty())).count())
    }

    fn scan(&self, from: Option<&[u8]>, limit: usize) -> Result<usize> {
        let m = self.map.read().unwrap_or_else(PoisonError::into_inner);
        let lo = from.map_or(Bound::Unbounded, Bound::Included);
        let mut n = 0;
        for (k, v) in m.range::<[u8], _>((lo, Bound::Unbounded)).take(limit) {
            std::hint::black_box((k, v));
            n += 1;
        }
        Ok(n)
    }

    fn increment(&self, key: &[u8]) -> Result<bool> {
        let mut m = self.map.write().unwrap_or_else(PoisonError::into_inner);
        let v = m.get(key).cloned().unwrap_or_default();
        m.insert(key.to_vec(), with_counter(&v, counter(&v) + 1));
        Ok(true)
    }

    fn transfer(&self, a: &[u8], b: &[u8]) -> Result<bool> {
        let mut m = self.map.write().unwrap_or_else(PoisonError::into_inner);
        let va = m.get(a).cloned().unwrap_or_default();
        let vb = m.get(b).cloned().unwrap_or_default();
        m.insert(a.to_vec(), with_counter(&va, counter(&va).wrapping_sub(1)));
        m.insert(b.to_vec(), with_counter(&vb, counter(&vb).wrapping_add(1)));
        Ok(true)
    }

    fn delete_batch(&self, keys: &[Vec<u8>]) -> Result<()> {
        let mut m = self.map.write().unwrap_or_else(PoisonError::into_inner);
        for k in keys {
            m.remove(k);
        }
        Ok(())
    }

    /// In memory only: nothing to close, no cache to cool.
    fn close(&mut self) -> Result<()> {
        Ok(())
    }

    fn open_again(&mut self) -> Result<()> {
        Ok(())
    }

    fn cleanup(&mut self) -> Result<()> {
        Ok(())
    }
}
