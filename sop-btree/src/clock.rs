//! [`PublishClock`]: how many publishes of this process are in flight and
//! how many have finished, in one atomic word — what lets a read-only
//! transaction skip validation when nothing was published since it began.
//!
//! A publish is *bracketed*: [`PublishClock::start`] raises the in-flight
//! count before the registry call, and the [`Bracket`] lowers it (and
//! counts one more finished publish) only after the handle cache holds the
//! publish's outcome: its new handles on success, or, on any failure or
//! when the commit future is dropped, none of the ids it wrote (the
//! registry may have applied a publish whose reply was lost). So:
//!
//! 1. *A quiet stamp means a coherent cache.* If no publish is in flight,
//!    every publish that ever finished has written its outcome into the
//!    handle cache, and [`HandleCache::observe_if`] never inserts a handle
//!    read from the registry before a publish that started since: every
//!    cached handle is the registry's current one (exclusive mode, where
//!    this process makes every publish).
//! 2. *An unchanged quiet stamp means nothing changed.* A transaction that
//!    began at quiet stamp `s` and finds the clock still at `s` when it
//!    commits saw no publish start or finish in between: every version it
//!    read is still current, which is exactly what validation would check.
//!
//! Loom-checked (`cargo xtask loom`): a handle resolved from the registry
//! concurrently with a publish never leaves the cache stale behind a quiet
//! stamp.

use sop_core::sync::atomic::{AtomicU64, Ordering};
use sop_core::{Handle, LogicalId, Registry, Result};

use crate::handles::HandleCache;

/// Finished publishes count in the low 48 bits, in-flight ones above.
const IN_FLIGHT: u64 = 1 << 48;

/// A reading of the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp(u64);

impl Stamp {
    /// Whether no publish was in flight when this was read.
    pub(crate) fn is_quiet(self) -> bool {
        self.0 < IN_FLIGHT
    }
}

/// See the module documentation.
#[derive(Debug, Default)]
pub(crate) struct PublishClock {
    word: AtomicU64,
}

impl PublishClock {
    /// The clock now.
    pub(crate) fn now(&self) -> Stamp {
        Stamp(self.word.load(Ordering::SeqCst))
    }

    /// Whether `since` was quiet and no publish started or finished after it.
    pub(crate) fn quiet_since(&self, since: Stamp) -> bool {
        since.is_quiet() && self.now() == since
    }

    /// Marks a publish that writes `ids` in flight until the bracket ends.
    pub(crate) fn start<'a>(&'a self, handles: &'a HandleCache, ids: Vec<LogicalId>) -> Bracket<'a> {
        self.word.fetch_add(IN_FLIGHT, Ordering::SeqCst);
        Bracket { clock: self, handles, ids }
    }
}

/// One publish in flight; see [`PublishClock::start`]. Dropped without
/// [`Bracket::applied`], it forgets every id it names from the handle
/// cache (the outcome is unknown) before it counts the publish finished.
#[derive(Debug)]
pub(crate) struct Bracket<'a> {
    clock: &'a PublishClock,
    handles: &'a HandleCache,
    ids: Vec<LogicalId>,
}

impl Bracket<'_> {
    /// The publish applied and the cache holds its handles: nothing to
    /// forget.
    pub(crate) fn applied(mut self) {
        self.ids.clear();
    }
}

impl Drop for Bracket<'_> {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            self.handles.forget(id);
        }
        // One more finished publish, one fewer in flight.
        self.clock.word.fetch_sub(IN_FLIGHT - 1, Ordering::SeqCst);
    }
}

/// The current handle of `id`: from `cache`, else the registry (and then
/// cached, unless a publish of this process started meanwhile: the handle
/// read may already be older than the one that publish wrote through, and
/// a quiet clock promises a coherent cache: the module documentation).
pub(crate) async fn resolve(
    cache: &HandleCache,
    clock: &PublishClock,
    registry: &dyn Registry,
    id: LogicalId,
) -> Result<Option<Handle>> {
    if let Some(h) = cache.get(id) {
        return Ok(Some(h));
    }
    let stamp = clock.now();
    let got = registry.get_handles(&[id]).await?.into_iter().next().flatten();
    if let Some(h) = got {
        cache.observe_if(h, || clock.quiet_since(stamp));
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_is_quiet_only_with_nothing_in_flight_and_moves_with_every_publish() {
        let clock = PublishClock::default();
        let handles = HandleCache::new();
        let s0 = clock.now();
        assert!(s0.is_quiet() && clock.quiet_since(s0));
        let b = clock.start(&handles, Vec::new());
        let during = clock.now();
        assert!(!during.is_quiet() && !clock.quiet_since(s0) && !clock.quiet_since(during));
        b.applied();
        let after = clock.now();
        assert!(after.is_quiet() && after != s0 && !clock.quiet_since(s0) && clock.quiet_since(after));
    }

    #[test]
    fn a_dropped_bracket_forgets_its_ids() {
        let clock = PublishClock::default();
        let handles = HandleCache::new();
        let id = LogicalId::from_u128(5);
        handles.observe(sop_core::Handle::new(id, sop_core::PhysicalId::from_u128(1)));
        drop(clock.start(&handles, vec![id]));
        assert_eq!(handles.get(id), None, "an unknown outcome left a handle cached");
        assert!(clock.now().is_quiet());
        handles.observe(sop_core::Handle::new(id, sop_core::PhysicalId::from_u128(1)));
        clock.start(&handles, vec![id]).applied();
        assert!(handles.get(id).is_some(), "an applied publish forgot its handle");
    }
}

#[cfg(all(test, sop_loom))]
mod loom_tests {
    use super::*;
    use crate::handles::loom_tests::h;
    use sop_core::sync::atomic::AtomicU64;
    use sop_core::sync::{Arc, thread};

    /// A publisher moves node `id` from version 1 to 2 in a "registry" (an
    /// atomic) and writes the new handle through, bracketed; a reader
    /// resolves `id` from the registry on a cache miss at the same time.
    /// Afterwards, whenever the clock is quiet, the cache holds version 2
    /// or nothing: never the stale version 1.
    #[test]
    fn loom_a_concurrent_resolve_never_leaves_a_stale_handle_behind_a_quiet_clock() {
        loom::model(|| {
            let id = LogicalId::from_u128(3);
            let clock = Arc::new(PublishClock::default());
            let handles = Arc::new(HandleCache::with_shards(1, 4));
            let registry = Arc::new(AtomicU64::new(1));
            let (c1, h1, r1) = (clock.clone(), handles.clone(), registry.clone());
            let publisher = thread::spawn(move || {
                let bracket = c1.start(&h1, vec![id]);
                r1.store(2, Ordering::SeqCst);
                h1.observe(h(id, 2));
                bracket.applied();
            });
            let (c2, h2, r2) = (clock.clone(), handles.clone(), registry.clone());
            let reader = thread::spawn(move || {
                let stamp = c2.now();
                let version = r2.load(Ordering::SeqCst);
                h2.observe_if(h(id, version), || c2.quiet_since(stamp));
            });
            publisher.join().unwrap();
            reader.join().unwrap();
            assert!(clock.now().is_quiet());
            assert!(matches!(handles.get(id).map(|h| h.version), None | Some(2)));
        });
    }

    /// The same with a publish whose outcome is unknown (the bracket drops
    /// without `applied`, as when the commit future is dropped, after the
    /// registry applied it): the cache never keeps the replaced version,
    /// even when the reader's insert lands between the bracket's forget
    /// and its end.
    #[test]
    fn loom_an_unknown_outcome_leaves_no_stale_handle() {
        loom::model(|| {
            let id = LogicalId::from_u128(4);
            let clock = Arc::new(PublishClock::default());
            let handles = Arc::new(HandleCache::with_shards(1, 4));
            let registry = Arc::new(AtomicU64::new(1));
            let (c1, h1, r1) = (clock.clone(), handles.clone(), registry.clone());
            let publisher = thread::spawn(move || {
                let bracket = c1.start(&h1, vec![id]);
                r1.store(2, Ordering::SeqCst);
                drop(bracket);
            });
            let (c2, h2, r2) = (clock.clone(), handles.clone(), registry.clone());
            let reader = thread::spawn(move || {
                let stamp = c2.now();
                let version = r2.load(Ordering::SeqCst);
                h2.observe_if(h(id, version), || c2.quiet_since(stamp));
            });
            publisher.join().unwrap();
            reader.join().unwrap();
            assert!(matches!(handles.get(id).map(|h| h.version), None | Some(2)));
        });
    }
}
