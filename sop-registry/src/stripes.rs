//! Lock stripes for a registry's validate-and-publish (the RocksDB
//! registry of `sop-backends` uses them): [`Stripes`], per-key locks that a
//! caller takes for every id it touches in ascending stripe order, each
//! once, so that two callers with overlapping sets can never deadlock; and
//! [`CountLocks`], per-store count locks. Model-checked by `cargo xtask loom`.

use sop_core::LogicalId;
use sop_core::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard, lock};

/// A fixed set of mutexes; an id maps to one of them.
#[derive(Debug)]
pub struct Stripes {
    locks: Vec<Mutex<()>>,
}

impl Stripes {
    /// `n` stripes (at least one).
    #[must_use]
    pub fn new(n: usize) -> Self {
        Self { locks: (0..n.max(1)).map(|_| Mutex::new(())).collect() }
    }

    fn index(&self, id: LogicalId) -> usize {
        let v = id.as_u128();
        ((v as u64 ^ (v >> 64) as u64) % self.locks.len() as u64) as usize
    }

    /// Locks the stripes of every id, ascending, each once.
    pub fn lock_all(&self, ids: impl IntoIterator<Item = LogicalId>) -> Vec<MutexGuard<'_, ()>> {
        let mut idx: Vec<usize> = ids.into_iter().map(|id| self.index(id)).collect();
        idx.sort_unstable();
        idx.dedup();
        idx.into_iter().filter_map(|i| self.locks.get(i)).map(lock).collect()
    }

    /// Locks the stripe of one id.
    pub fn lock_one(&self, id: LogicalId) -> Vec<MutexGuard<'_, ()>> {
        self.lock_all([id])
    }
}

/// Per-store count locks. A publish that applies a store's count delta
/// holds the store's lock shared, so deltas of one store never serialize
/// each other; a publish that checks a store's count holds it exclusive,
/// so no delta of that store lands between its check and its write.
/// Locks are taken in ascending order, after the id stripes, each once.
#[derive(Debug)]
pub struct CountLocks {
    locks: Vec<RwLock<()>>,
}

/// A held count lock, shared or exclusive.
#[derive(Debug)]
pub enum CountGuard<'a> {
    /// A delta only.
    Shared(#[allow(dead_code)] RwLockReadGuard<'a, ()>),
    /// A count check.
    Exclusive(#[allow(dead_code)] RwLockWriteGuard<'a, ()>),
}

impl CountLocks {
    /// `n` locks (at least one).
    #[must_use]
    pub fn new(n: usize) -> Self {
        Self { locks: (0..n.max(1)).map(|_| RwLock::new(())).collect() }
    }

    fn index(&self, store: &str) -> usize {
        // FNV-1a: stable and cheap; store names are chosen by the caller,
        // and a collision only makes two stores share a lock.
        let hash = store
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        (hash % self.locks.len() as u64) as usize
    }

    /// Locks the stores of `deltas` shared and those of `checks` exclusive.
    pub fn lock<'s>(
        &self,
        deltas: impl IntoIterator<Item = &'s str>,
        checks: impl IntoIterator<Item = &'s str>,
    ) -> Vec<CountGuard<'_>> {
        let mut idx: Vec<(usize, bool)> = deltas
            .into_iter()
            .map(|n| (self.index(n), false))
            .chain(checks.into_iter().map(|n| (self.index(n), true)))
            .collect();
        // Exclusive sorts after shared for one index; keep the last.
        idx.sort_unstable();
        let mut out = Vec::with_capacity(idx.len());
        for (pos, &(i, exclusive)) in idx.iter().enumerate() {
            if idx.get(pos + 1).is_some_and(|next| next.0 == i) {
                continue;
            }
            let Some(l) = self.locks.get(i) else { continue };
            out.push(if exclusive {
                CountGuard::Exclusive(l.write().unwrap_or_else(std::sync::PoisonError::into_inner))
            } else {
                CountGuard::Shared(l.read().unwrap_or_else(std::sync::PoisonError::into_inner))
            });
        }
        out
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

    #[test]
    fn loom_mirrored_count_checks_never_both_pass() {
        use super::CountLocks;
        use sop_core::sync::Mutex;
        loom::model(|| {
            let locks = Arc::new(CountLocks::new(4));
            // Counts of stores "a" and "b"; each publish: if count(x) == 0,
            // add one to y (a write skew unless checks exclude deltas).
            let counts = Arc::new([Mutex::new(0u32), Mutex::new(0u32)]);
            let publish = |check: usize, delta: usize| {
                let (locks, counts) = (locks.clone(), counts.clone());
                thread::spawn(move || {
                    let names = ["a", "b"];
                    let _g = locks.lock([names[delta]], [names[check]]);
                    let seen = *sop_core::sync::lock(&counts[check]);
                    if seen == 0 {
                        *sop_core::sync::lock(&counts[delta]) += 1;
                        true
                    } else {
                        false
                    }
                })
            };
            let (t1, t2) = (publish(0, 1), publish(1, 0));
            let (a, b) = (t1.join().unwrap(), t2.join().unwrap());
            assert!(!(a && b), "both count checks passed");
        });
    }
}
