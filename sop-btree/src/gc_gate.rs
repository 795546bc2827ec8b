//! [`GcGate`]: the hand-off between deferred deletions and flushes.
//!
//! A commit deletes its obsolete blobs after a grace period, from a task it
//! leaves behind. A flush (`Database::flush_gc`, and `close`) must make
//! every such task run *now* rather than at the end of its grace period, and
//! return only once all of them are done, including any registered while it
//! waits. The gate is that whole protocol: two counters and two waker sets
//! under one mutex, so a change of state and the wake-up it owes are never
//! split (no lost wake-up), and a task that panics or is dropped still
//! counts itself out (no flush waits forever). `cargo xtask loom` checks it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use rustc_hash::FxHashMap as HashMap;

use sop_core::sync::{Arc, Mutex, lock};

/// Counts deferred deletions and flushes, and wakes each side for the
/// other. Cheap to clone; clones share one gate.
#[derive(Debug, Clone, Default)]
pub(crate) struct GcGate {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Registered deletions not yet dropped.
    pending: usize,
    /// Flushes in progress.
    flushers: usize,
    next_key: u64,
    /// Deletions waiting for a flush to start, by waiter key.
    sleepers: HashMap<u64, Waker>,
    /// Flushes waiting for `pending` to reach zero, by waiter key.
    drains: HashMap<u64, Waker>,
}

/// What a [`Wait`] waits for.
#[derive(Debug, Clone, Copy)]
enum Until {
    /// A flush is in progress.
    FlushStarted,
    /// No deletion is pending.
    Drained,
}

impl State {
    fn ready(&self, until: Until) -> bool {
        match until {
            Until::FlushStarted => self.flushers > 0,
            Until::Drained => self.pending == 0,
        }
    }

    fn waiters(&mut self, until: Until) -> &mut HashMap<u64, Waker> {
        match until {
            Until::FlushStarted => &mut self.sleepers,
            Until::Drained => &mut self.drains,
        }
    }
}

/// Wakes every waker taken out of the gate (called after unlocking).
fn wake_all(wakers: HashMap<u64, Waker>) {
    for (_, w) in wakers {
        w.wake();
    }
}

impl GcGate {
    /// A gate with nothing pending and no flush in progress.
    #[must_use]
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Registers a deferred deletion; it counts as pending until the
    /// returned [`Deferred`] is dropped. Call it before the commit returns,
    /// so that a flush started after the commit always waits for it.
    #[must_use]
    pub(crate) fn register(&self) -> Deferred {
        lock(&self.inner.state).pending += 1;
        Deferred { gate: self.inner.clone() }
    }

    /// Whether a flush is in progress.
    #[must_use]
    pub(crate) fn flushing(&self) -> bool {
        lock(&self.inner.state).flushers > 0
    }

    /// Returns once a flush is in progress (at once if one is): deferred
    /// deletions should run now. The collector races this against the
    /// grace period.
    pub(crate) fn flush_started(&self) -> impl Future<Output = ()> + '_ {
        Wait::new(&self.inner, Until::FlushStarted)
    }

    /// Deletions registered and not yet finished.
    #[must_use]
    #[cfg(test)]
    pub(crate) fn pending(&self) -> usize {
        lock(&self.inner.state).pending
    }

    /// Wakes every pending deletion (they stop waiting for their grace
    /// period) and waits until none is pending, including deletions
    /// registered while it waits: under a steady stream of commits it waits
    /// for those too. Dropping the future ends the flush.
    pub(crate) async fn flush(&self) {
        let _flushing = Flushing::begin(&self.inner);
        Wait::new(&self.inner, Until::Drained).await;
    }
}

/// A flush in progress, ended when dropped (also on cancellation).
struct Flushing<'a>(&'a Inner);

impl<'a> Flushing<'a> {
    fn begin(gate: &'a Inner) -> Self {
        let sleepers = {
            let mut s = lock(&gate.state);
            s.flushers += 1;
            std::mem::take(&mut s.sleepers)
        };
        wake_all(sleepers);
        Self(gate)
    }
}

impl Drop for Flushing<'_> {
    fn drop(&mut self) {
        lock(&self.0.state).flushers -= 1;
    }
}

/// One registered deferred deletion; dropping it marks it finished.
///
/// Drop it last, after everything else the deletion's task holds (the
/// database above all): a flush returns as soon as the count reaches zero,
/// and its caller may then expect those to be released (`close`, then
/// reopening the directory).
#[derive(Debug)]
pub(crate) struct Deferred {
    gate: Arc<Inner>,
}

impl Drop for Deferred {
    fn drop(&mut self) {
        let drains = {
            let mut s = lock(&self.gate.state);
            s.pending -= 1;
            if s.pending == 0 { std::mem::take(&mut s.drains) } else { HashMap::default() }
        };
        wake_all(drains);
    }
}

/// A future that is ready when the gate's state satisfies `until`. Its
/// check and its waker's registration happen under the gate's lock, the
/// same lock under which the state changes and waiters are taken to be
/// woken, so a wake-up cannot fall between them.
struct Wait<'a> {
    gate: &'a Inner,
    until: Until,
    /// The key of this future's registered waker, if it has one.
    key: Option<u64>,
}

impl<'a> Wait<'a> {
    fn new(gate: &'a Inner, until: Until) -> Self {
        Self { gate, until, key: None }
    }
}

impl Future for Wait<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let mut s = lock(&this.gate.state);
        if s.ready(this.until) {
            if let Some(k) = this.key.take() {
                s.waiters(this.until).remove(&k);
            }
            return Poll::Ready(());
        }
        let key = *this.key.get_or_insert_with(|| {
            s.next_key += 1;
            s.next_key
        });
        s.waiters(this.until).insert(key, cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        if let Some(k) = self.key {
            lock(&self.gate.state).waiters(self.until).remove(&k);
        }
    }
}

#[cfg(all(test, not(sop_loom)))]
mod tests {
    use std::task::Poll;

    use futures::FutureExt;

    use super::GcGate;

    #[tokio::test]
    async fn flush_with_nothing_pending_returns_at_once() {
        let gate = GcGate::new();
        gate.flush().await;
        assert_eq!(gate.pending(), 0);
    }

    #[tokio::test]
    async fn a_deletion_waits_until_a_flush_starts() {
        let gate = GcGate::new();
        let d = gate.register();
        assert_eq!(gate.pending(), 1);
        let mut asleep = Box::pin(gate.flush_started());
        assert_eq!(futures::poll!(asleep.as_mut()), Poll::Pending);
        let mut flush = Box::pin(gate.flush());
        assert_eq!(futures::poll!(flush.as_mut()), Poll::Pending, "a deletion is pending");
        assert_eq!(futures::poll!(asleep.as_mut()), Poll::Ready(()));
        drop(asleep);
        drop(d);
        assert_eq!(futures::poll!(flush.as_mut()), Poll::Ready(()));
    }

    #[tokio::test]
    async fn dropped_waiters_leave_no_waker_behind() {
        let gate = GcGate::new();
        let d = gate.register();
        for _ in 0..100 {
            // A deletion whose grace period won the race drops its wait.
            assert!(gate.flush_started().now_or_never().is_none());
        }
        assert!(super::lock(&gate.inner.state).sleepers.is_empty());
        drop(d);
        gate.flush().await;
    }

    #[tokio::test]
    async fn a_cancelled_flush_is_no_longer_in_progress() {
        let gate = GcGate::new();
        let d = gate.register();
        assert!(gate.flush().now_or_never().is_none());
        assert!(gate.flush_started().now_or_never().is_none(), "the cancelled flush ended");
        drop(d);
    }
}

#[cfg(all(test, sop_loom))]
mod loom_tests {
    use std::future::Future;
    use std::task::Context;

    use super::GcGate;
    use sop_core::sync::atomic::{AtomicBool, Ordering};
    use sop_core::sync::{Arc, thread};

    /// A deletion that sleeps until a flush (its grace period never ends)
    /// and a flush started concurrently: the flush wakes it, waits for it,
    /// and sees its work. A lost wake-up shows as a loom deadlock.
    #[test]
    fn loom_flush_wakes_and_waits_for_a_sleeping_deletion() {
        loom::model(|| {
            let gate = GcGate::new();
            let done = Arc::new(AtomicBool::new(false));
            let d = gate.register();
            let (g, done2) = (gate.clone(), done.clone());
            let t = thread::spawn(move || {
                loom::future::block_on(g.flush_started());
                done2.store(true, Ordering::Relaxed);
                drop(d);
            });
            loom::future::block_on(gate.flush());
            assert!(done.load(Ordering::Relaxed), "flush returned before the deletion ran");
            t.join().unwrap();
        });
    }

    /// Two flushes at once and a deletion registered concurrently with
    /// them: nobody hangs, and the deletion is finished by the time the
    /// flush that started after its registration returns.
    #[test]
    fn loom_concurrent_flushes_and_a_late_registration() {
        loom::model(|| {
            let gate = GcGate::new();
            let registered = Arc::new(AtomicBool::new(false));
            let done = Arc::new(AtomicBool::new(false));
            let (g1, r1, d1) = (gate.clone(), registered.clone(), done.clone());
            let committer = thread::spawn(move || {
                let d = g1.register();
                r1.store(true, Ordering::SeqCst);
                loom::future::block_on(g1.flush_started());
                d1.store(true, Ordering::SeqCst);
                drop(d);
            });
            let g2 = gate.clone();
            let other = thread::spawn(move || loom::future::block_on(g2.flush()));
            // The committer sleeps until a flush; make sure one comes after
            // its registration, as `close` would.
            while !registered.load(Ordering::SeqCst) {
                thread::yield_now();
            }
            loom::future::block_on(gate.flush());
            assert!(done.load(Ordering::SeqCst), "a flush after the registration missed it");
            committer.join().unwrap();
            other.join().unwrap();
            assert_eq!(gate.pending(), 0);
        });
    }

    /// A deletion whose grace period wins the race (it polls the flush
    /// future once and drops it) against a flush: the flush still waits
    /// for it, and no stale waker stays registered.
    #[test]
    fn loom_a_deletion_that_stops_waiting_still_counts() {
        loom::model(|| {
            let gate = GcGate::new();
            let done = Arc::new(AtomicBool::new(false));
            let d = gate.register();
            let (g1, done2) = (gate.clone(), done.clone());
            let t = thread::spawn(move || {
                let waker = futures::task::noop_waker();
                let mut wait = Box::pin(g1.flush_started());
                let _ = wait.as_mut().poll(&mut Context::from_waker(&waker));
                drop(wait); // the grace period ended first
                done2.store(true, Ordering::Relaxed);
                drop(d);
                assert!(super::lock(&g1.inner.state).sleepers.is_empty());
            });
            loom::future::block_on(gate.flush());
            assert!(done.load(Ordering::Relaxed));
            t.join().unwrap();
        });
    }
}
