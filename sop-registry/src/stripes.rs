//! [`Stripes`]: per-key lock striping for `RocksRegistry`'s
//! validate-and-publish. A caller locks the stripes of every id it touches
//! in ascending stripe order, each once, so that two callers with
//! overlapping sets can never deadlock. Model-checked by `cargo xtask loom`.
#![cfg_attr(not(feature = "rocksdb"), allow(dead_code))]

use sop_core::LogicalId;
use sop_core::sync::{Mutex, MutexGuard, lock};

/// A fixed set of mutexes; an id maps to one of them.
#[derive(Debug)]
pub(crate) struct Stripes {
    locks: Vec<Mutex<()>>,
}

impl Stripes {
    /// `n` stripes (at least one).
    pub(crate) fn new(n: usize) -> Self {
        Self { locks: (0..n.max(1)).map(|_| Mutex::new(())).collect() }
    }

    fn index(&self, id: LogicalId) -> usize {
        let v = id.as_u128();
        ((v as u64 ^ (v >> 64) as u64) % self.locks.len() as u64) as usize
    }

    /// Locks the stripes of every id, ascending, each once.
    pub(crate) fn lock_all(&self, ids: impl IntoIterator<Item = LogicalId>) -> Vec<MutexGuard<'_, ()>> {
        let mut idx: Vec<usize> = ids.into_iter().map(|id| self.index(id)).collect();
        idx.sort_unstable();
        idx.dedup();
        idx.into_iter().filter_map(|i| self.locks.get(i)).map(lock).collect()
    }

    /// Locks the stripe of one id.
    pub(crate) fn lock_one(&self, id: LogicalId) -> Vec<MutexGuard<'_, ()>> {
        self.lock_all([id])
    }
}

#[cfg(all(test, sop_loom))]
mod loom_tests {
    use super::Stripes;
    use sop_core::LogicalId;
    use sop_core::sync::atomic::{AtomicUsize, Ordering};
    use sop_core::sync::{Arc, thread};

    #[test]
    fn loom_overlapping_stripe_sets_exclude_and_never_deadlock() {
        loom::model(|| {
            let stripes = Arc::new(Stripes::new(2));
            let inside = Arc::new(AtomicUsize::new(0));
            let (a, b) = (LogicalId::from_u128(0), LogicalId::from_u128(1));
            let worker = |ids: [LogicalId; 2]| {
                let (stripes, inside) = (stripes.clone(), inside.clone());
                thread::spawn(move || {
                    let _guards = stripes.lock_all(ids);
                    assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two writers inside at once");
                    inside.fetch_sub(1, Ordering::SeqCst);
                })
            };
            let (t1, t2) = (worker([a, b]), worker([b, a]));
            t1.join().unwrap();
            t2.join().unwrap();
        });
    }
}
