//! [`Inflight`]: concurrent misses on one id share one load, which runs in
//! the tasks that await it, never in a task of its own.
//!
//! foyer's `get_or_fetch` spawns every miss's load as a task: a read that
//! misses the cache then waits for another thread to run it and wake it
//! (~2.7 context switches per 100-get read transaction at 1 000 000 items,
//! where leaves miss). With no disk tier to consult, the cache runs its
//! misses here instead: the first caller's load is a shared future that
//! every caller for the same id polls, so the load goes on when the caller
//! that started it is dropped, and a blob store that reads synchronously
//! (RocksDB) answers on the caller's own thread.

use std::collections::HashMap;
use std::future::Future;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use sop_core::Result;
use sop_core::sync::{Mutex, MutexGuard, lock};

use crate::CachedBlob;

type Load = Shared<BoxFuture<'static, Result<CachedBlob>>>;

/// See the module documentation.
#[derive(Default)]
pub(crate) struct Inflight {
    loads: Mutex<HashMap<u128, Load>>,
}

impl Inflight {
    fn loads(&self) -> MutexGuard<'_, HashMap<u128, Load>> {
        lock(&self.loads)
    }

    /// Blob `id`: as `cached` finds it, else from the load in flight for
    /// it, else from `load` (started here and shared). The first caller to
    /// see a load succeed hands its blob to `keep` (to cache it) before the
    /// load leaves the table, and `cached` is asked under the same lock,
    /// so one id is loaded once (until it is evicted): a miss finds the
    /// blob cached or the load shared, never neither. A failed load is not
    /// kept: the next miss loads again.
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
        let shared = {
            let mut loads = self.loads();
            match loads.get(&id) {
                Some(in_flight) => in_flight.clone(),
                None => {
                    if let Some(blob) = cached() {
                        return Ok(blob);
                    }
                    let started = load().boxed().shared();
                    loads.insert(id, started.clone());
                    started
                }
            }
        };
        let out = shared.clone().await;
        let mut loads = self.loads();
        if loads.get(&id).is_some_and(|l| l.ptr_eq(&shared)) {
            if let Ok(blob) = &out {
                keep(blob);
            }
            loads.remove(&id);
        }
        out
    }
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
            assert!(inflight.loads().is_empty(), "a load left in the table");
        });
    }
}
