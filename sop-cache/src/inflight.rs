//! [`Inflight`]: concurrent misses on one id share one load, which runs in
//! the tasks that await it, never in a task of its own.
//!
//! foyer's `get_or_fetch` spawns every miss's load as a task: a read that
//! misses the cache then waits for another thread to run it and wake it
//! (~2.7 context switches per 100-get read transaction at 1 000 000 items,
//! where leaves miss). With no disk tier to consult, the cache runs its
//! misses here instead: the first caller's load is a shared future that
//! every caller for the same id polls, so the load goes on when the caller
//! that started it is dropped while others wait (one no caller awaits is
//! dropped), and a blob store that reads synchronously (RocksDB) answers
//! on the caller's own thread.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use sop_core::sync::{Mutex, MutexGuard, lock};
use sop_core::{Error, ErrorKind, Result};

use crate::CachedBlob;

type Load = Shared<BoxFuture<'static, Result<CachedBlob>>>;

/// A load in the table, with its number (to tell it from a later load of
/// the same id).
type Entry = (u64, Load);

/// See the module documentation.
#[derive(Default)]
pub(crate) struct Inflight {
    loads: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    entries: HashMap<u128, Entry>,
    next: u64,
}

/// A caller's share of a load; dropping it (the caller gave up, or got
/// its answer) removes the table's entry once no caller awaits the load,
/// so that a load every caller gave up on is dropped (its request
/// cancelled), not kept, with what it holds, by the table.
struct Waiting<'a> {
    inflight: &'a Inflight,
    id: u128,
    number: u64,
    load: Option<Load>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        drop(self.load.take());
        let mut table = self.inflight.table();
        let abandoned = |(n, load): &Entry| *n == self.number && load.strong_count() == Some(1);
        if table.entries.get(&self.id).is_some_and(abandoned) {
            table.entries.remove(&self.id);
        }
    }
}

impl Inflight {
    fn table(&self) -> MutexGuard<'_, Table> {
        lock(&self.loads)
    }

    /// Blob `id`: as `cached` finds it, else from the load in flight for
    /// it, else from `load` (started here and shared). The first caller to
    /// see a load succeed hands its blob to `keep` (to cache it) before the
    /// load leaves the table, and `cached` is asked under the same lock,
    /// so one id is loaded once (until it is evicted): a miss finds the
    /// blob cached or the load shared, never neither. A failed load (an
    /// error, or a panic, answered as a `Backend` error) is not kept: the
    /// next miss loads again. A load every caller gave up on is dropped.
    pub(crate) async fn load<F, Fut>(
        &self,
        id: u128,
        cached: impl FnOnce() -> Option<CachedBlob>,
        load: F,
        keep: impl FnOnce(&CachedBlob),
    ) -> Result<CachedBlob>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<CachedBlob>> + Send + 'static,
    {
        let mut waiting = {
            let mut table = self.table();
            match table.entries.get(&id) {
                Some((number, load)) => {
                    Waiting { inflight: self, id, number: *number, load: Some(load.clone()) }
                }
                None => {
                    if let Some(blob) = cached() {
                        return Ok(blob);
                    }
                    let started = AssertUnwindSafe(load())
                        .catch_unwind()
                        .map(|r| r.unwrap_or_else(|_| Err(panicked())));
                    let started = started.boxed().shared();
                    table.next += 1;
                    let number = table.next;
                    table.entries.insert(id, (number, started.clone()));
                    Waiting { inflight: self, id, number, load: Some(started) }
                }
            }
        };
        // Awaited in place: this caller holds one handle on the load.
        let out = match waiting.load.as_mut() {
            Some(load) => load.await,
            None => Err(panicked()),
        };
        let mut table = self.table();
        if table.entries.get(&id).is_some_and(|(n, _)| *n == waiting.number) {
            if let Ok(blob) = &out {
                keep(blob);
            }
            table.entries.remove(&id);
        }
        drop(table);
        waiting.load = None;
        out
    }

    /// Forgets the load in flight for `id` (its blob was deleted): callers
    /// already waiting still get its answer, but it is not kept.
    pub(crate) fn forget(&self, id: u128) {
        self.table().entries.remove(&id);
    }

    /// Loads in the table (for the loom model).
    #[cfg(all(test, sop_loom))]
    fn len(&self) -> usize {
        self.table().entries.len()
    }
}

/// What a load that panicked answers.
fn panicked() -> Error {
    Error::backend("node cache", ErrorKind::Backend, std::io::Error::other("loading a blob panicked"))
}

#[cfg(all(test, sop_loom))]
mod loom_tests {
    use super::Inflight;
    use crate::CachedBlob;
    use bytes::Bytes;
    use sop_core::sync::atomic::{AtomicUsize, Ordering};
    use sop_core::sync::{Arc, Mutex, lock, thread};

    /// Two readers miss one id at once (each asks the cache, then the
    /// table, as `NodeCache::get_or_load` does): the id is loaded once,
    /// both get the blob, and it ends up cached with no load left behind.
    #[test]
    fn loom_two_misses_load_once_and_cache_it() {
        loom::model(|| {
            let inflight = Arc::new(Inflight::default());
            let cache: Arc<Mutex<Option<CachedBlob>>> = Arc::new(Mutex::new(None));
            let loads = Arc::new(AtomicUsize::new(0));
            let reader = || {
                let (inflight, cache, loads) = (inflight.clone(), cache.clone(), loads.clone());
                thread::spawn(move || {
                    if let Some(hit) = lock(&cache).clone() {
                        return hit;
                    }
                    let cached = || lock(&cache).clone();
                    let load = || {
                        loads.fetch_add(1, Ordering::SeqCst);
                        async { Ok(CachedBlob::Value(Bytes::from_static(b"blob"))) }
                    };
                    let keep = |b: &CachedBlob| *lock(&cache) = Some(b.clone());
                    loom::future::block_on(inflight.load(7, cached, load, keep)).unwrap()
                })
            };
            let (a, b) = (reader(), reader());
            for got in [a.join().unwrap(), b.join().unwrap()] {
                assert!(matches!(got, CachedBlob::Value(v) if v.as_ref() == b"blob"));
            }
            assert_eq!(loads.load(Ordering::SeqCst), 1, "loaded twice");
            assert!(lock(&cache).is_some(), "not cached");
            assert_eq!(inflight.len(), 0, "a load left in the table");
        });
    }
}
