//! Lock stripes for a registry's validate-and-publish (the RocksDB
//! registry of `sop-backends` uses them): [`Stripes`], per-key
//! reader-writer locks that a caller takes for every id it touches in
//! ascending stripe order, each once (exclusive for the ids it writes,
//! shared for the ids it only checks), so that two callers with
//! overlapping sets can never deadlock and validations never serialize
//! each other; and [`CountLocks`], per-store count locks. Model-checked by
//! `cargo xtask loom`.

use sop_core::LogicalId;
use sop_core::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// A fixed set of reader-writer locks; an id maps to one of them.
#[derive(Debug)]
pub struct Stripes {
    locks: Vec<RwLock<()>>,
}

/// A held stripe or count lock, shared or exclusive.
#[derive(Debug)]
pub enum StripeGuard<'a> {
    /// An id only checked (a count delta only).
    Shared(#[allow(dead_code)] RwLockReadGuard<'a, ()>),
    /// An id written (a count check).
    Exclusive(#[allow(dead_code)] RwLockWriteGuard<'a, ()>),
}

/// Locks `locks[i]` for every `(i, exclusive)` of `idx` in ascending `i`,
/// each once, exclusive when any entry for `i` asks for it.
fn lock_indices(locks: &[RwLock<()>], mut idx: Vec<(usize, bool)>) -> Vec<StripeGuard<'_>> {
    // Exclusive sorts after shared for one index; keep the last.
    idx.sort_unstable();
    let mut out = Vec::with_capacity(idx.len());
    for (pos, &(i, exclusive)) in idx.iter().enumerate() {
        if idx.get(pos + 1).is_some_and(|next| next.0 == i) {
            continue;
        }
        let Some(l) = locks.get(i) else { continue };
        out.push(if exclusive {
            StripeGuard::Exclusive(l.write().unwrap_or_else(std::sync::PoisonError::into_inner))
        } else {
            StripeGuard::Shared(l.read().unwrap_or_else(std::sync::PoisonError::into_inner))
        });
    }
    out
}

impl Stripes {
    /// `n` stripes (at least one).
    #[must_use]
    pub fn new(n: usize) -> Self {
        Self { locks: (0..n.max(1)).map(|_| RwLock::new(())).collect() }
    }

    fn index(&self, id: LogicalId) -> usize {
        let v = id.as_u128();
        ((v as u64 ^ (v >> 64) as u64) % self.locks.len() as u64) as usize
    }

    /// Locks the stripes of `written` exclusive and those of `checked`
    /// shared (exclusive when a stripe holds both), ascending, each once.
    pub fn lock(
        &self,
        written: impl IntoIterator<Item = LogicalId>,
        checked: impl IntoIterator<Item = LogicalId>,
    ) -> Vec<StripeGuard<'_>> {
        let idx: Vec<(usize, bool)> = checked
            .into_iter()
            .map(|id| (self.index(id), false))
            .chain(written.into_iter().map(|id| (self.index(id), true)))
            .collect();
        lock_indices(&self.locks, idx)
    }

    /// Locks the stripes of every id exclusive, ascending, each once.
    pub fn lock_all(&self, ids: impl IntoIterator<Item = LogicalId>) -> Vec<StripeGuard<'_>> {
        self.lock(ids, [])
    }

    /// Locks the stripe of one id exclusive.
    pub fn lock_one(&self, id: LogicalId) -> Vec<StripeGuard<'_>> {
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

/// A held count lock: shared for a delta only, exclusive for a count check.
pub type CountGuard<'a> = StripeGuard<'a>;

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
        let idx: Vec<(usize, bool)> = deltas
            .into_iter()
            .map(|n| (self.index(n), false))
            .chain(checks.into_iter().map(|n| (self.index(n), true)))
            .collect();
        lock_indices(&self.locks, idx)
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

    /// A validation holding an id's stripe shared excludes a publish that
    /// writes it: the validation never sees the write half-applied (two
    /// words that the writer changes together).
    #[test]
    fn loom_a_shared_check_excludes_a_write_of_its_id() {
        loom::model(|| {
            let stripes = Arc::new(Stripes::new(2));
            let (a, b) = (LogicalId::from_u128(0), LogicalId::from_u128(1));
            let words = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
            let (s1, w1) = (stripes.clone(), words.clone());
            let writer = thread::spawn(move || {
                let _g = s1.lock([a], [b]);
                w1[0].store(1, Ordering::SeqCst);
                w1[1].store(1, Ordering::SeqCst);
            });
            let (s2, w2) = (stripes.clone(), words.clone());
            let checker = thread::spawn(move || {
                let _g = s2.lock([], [b, a]);
                let first = w2[0].load(Ordering::SeqCst);
                assert_eq!(first, w2[1].load(Ordering::SeqCst), "a check saw half a write");
            });
            writer.join().unwrap();
            checker.join().unwrap();
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
