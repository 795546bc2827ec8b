//! [`GroupSync`]: group commit. Writers apply their batches to the log
//! unsynced (under their locks), let the locks go, and then wait here
//! until a sync covers their write; one leader syncs for every writer
//! waiting, so concurrent commits share fsyncs instead of queueing one
//! fsync each behind a lock. Model-checked by `cargo xtask loom`.
//!
//! The log is sequential: a sync makes durable everything written before
//! it began. A writer whose write carries sequence number `s` returns from
//! [`GroupSync::durable`] only once a sync that began after its write has
//! completed, so `synced >= s` then holds.
//!
//! The leader syncs on its own thread, as a synchronous write's caller
//! would, and the writers that find a sync under way await its end
//! instead of holding a thread: no hand-off to a blocking thread and back
//! on a lone commit's path.

use sop_core::Result;
use sop_core::sync::Mutex;
use sop_core::sync::atomic::{AtomicU64, Ordering};

/// See the module documentation.
#[derive(Debug, Default)]
pub struct GroupSync {
    /// The highest sequence number known durable.
    synced: AtomicU64,
    /// The highest sequence number written (durable or not).
    written: AtomicU64,
    /// Held by the one leader syncing.
    leader: Mutex<()>,
    /// Wakes the async waiters when a leader's sync ends.
    #[cfg(not(sop_loom))]
    ended: tokio::sync::Notify,
}

impl GroupSync {
    /// Records that the log now holds writes up to `seq` (not yet durable).
    pub fn written(&self, seq: u64) {
        self.written.fetch_max(seq, Ordering::SeqCst);
    }

    /// The highest sequence number written so far.
    #[must_use]
    pub fn written_so_far(&self) -> u64 {
        self.written.load(Ordering::SeqCst)
    }

    /// Whether a sync already covers `seq`.
    #[must_use]
    pub fn is_durable(&self, seq: u64) -> bool {
        self.synced.load(Ordering::SeqCst) >= seq
    }

    /// Whether a sync covers everything written so far: false after a
    /// write whose sync failed, until a later sync succeeds.
    #[must_use]
    pub fn all_durable(&self) -> bool {
        self.is_durable(self.written_so_far())
    }

    /// One step of [`GroupSync::durable`]: `Some(Ok)` once the log is
    /// durable up to `seq`, syncing it here if no sync is under way;
    /// `Some(Err)` when the sync this call made failed; `None` while
    /// another leader syncs (try again once it has ended).
    pub fn try_lead(
        &self,
        seq: u64,
        latest: impl Fn() -> u64,
        sync: impl Fn() -> Result<()>,
    ) -> Option<Result<()>> {
        if self.is_durable(seq) {
            return Some(Ok(()));
        }
        let guard = match self.leader.try_lock() {
            Ok(guard) => guard,
            Err(sop_core::sync::TryLockError::WouldBlock) => return None,
            Err(sop_core::sync::TryLockError::Poisoned(p)) => p.into_inner(),
        };
        // Released, and the waiters woken, however the sync ends (a panic
        // in `latest` or `sync` included): none sleeps on a leader gone.
        let _leading = Leading { group: self, guard: Some(guard) };
        if self.is_durable(seq) {
            return Some(Ok(())); // a leader synced for us between the two checks
        }
        let target = latest().max(seq);
        Some(sync().map(|()| {
            self.synced.fetch_max(target, Ordering::SeqCst);
        }))
    }

    /// Returns once the log is durable up to `seq`. With no sync under
    /// way this call leads one on its own thread: it reads how far the log
    /// is written (`latest`, which covers every write that returned before
    /// it), calls `sync`, and publishes that point as durable for all;
    /// while another leader syncs, it awaits the end of that sync, holding
    /// no thread, and tries again.
    ///
    /// # Errors
    /// The error of the `sync` this call made (later waiters try again).
    #[cfg(not(sop_loom))]
    pub async fn durable(
        &self,
        seq: u64,
        latest: impl Fn() -> u64,
        sync: impl Fn() -> Result<()>,
    ) -> Result<()> {
        loop {
            // Registered before the attempt: a sync that ends after the
            // attempt found it under way wakes this waiter.
            let ended = self.ended.notified();
            let mut ended = std::pin::pin!(ended);
            ended.as_mut().enable();
            match self.try_lead(seq, &latest, &sync) {
                Some(outcome) => return outcome,
                None => ended.await,
            }
        }
    }
}

/// The leader's hold on the sync: dropping it lets the lock go, then wakes
/// every waiter of [`GroupSync::durable`].
struct Leading<'a> {
    group: &'a GroupSync,
    guard: Option<sop_core::sync::MutexGuard<'a, ()>>,
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        #[cfg(not(sop_loom))]
        self.group.ended.notify_waiters();
        #[cfg(sop_loom)]
        let _ = self.group;
    }
}

#[cfg(all(test, sop_loom))]
mod loom_tests {
    use super::GroupSync;
    use sop_core::sync::atomic::{AtomicU64, Ordering};
    use sop_core::sync::{Arc, thread};

    /// The steps of `durable`: two writers append, then call `try_lead`
    /// until it answers (yielding while the other leads, where `durable`
    /// awaits the leader's end; the wake-up itself is tokio's `Notify`,
    /// outside the model, and is tested below on a real runtime). Neither
    /// may be answered before a sync covers its write.
    #[test]
    fn loom_try_lead_acknowledges_only_covered_writes() {
        loom::model(|| {
            let group = Arc::new(GroupSync::default());
            let appended = Arc::new(AtomicU64::new(0));
            let durable = Arc::new(AtomicU64::new(0));
            let writer = || {
                let (group, appended, durable) = (group.clone(), appended.clone(), durable.clone());
                thread::spawn(move || {
                    let seq = appended.fetch_add(1, Ordering::SeqCst) + 1;
                    group.written(seq);
                    let (a, d) = (appended.clone(), durable.clone());
                    let latest = || a.load(Ordering::SeqCst);
                    let sync = || {
                        d.fetch_max(a.load(Ordering::SeqCst), Ordering::SeqCst);
                        Ok(())
                    };
                    loop {
                        match group.try_lead(seq, latest, sync) {
                            Some(outcome) => break outcome.unwrap(),
                            None => thread::yield_now(),
                        }
                    }
                    assert!(durable.load(Ordering::SeqCst) >= seq, "acknowledged before its sync");
                })
            };
            let (t1, t2) = (writer(), writer());
            t1.join().unwrap();
            t2.join().unwrap();
        });
    }
}

#[cfg(all(test, not(sop_loom)))]
mod tests {
    use super::GroupSync;
    use sop_core::Error;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Barrier};
    use std::time::Duration;

    #[test]
    fn a_failed_sync_leaves_the_write_not_durable_until_a_later_sync() {
        let group = GroupSync::default();
        assert!(group.all_durable());
        group.written(3);
        assert!(!group.all_durable() && !group.is_durable(3));
        let failed = group.try_lead(3, || 3, || Err(Error::invalid("sync", "injected")));
        assert!(failed.is_some_and(|r| r.is_err()));
        assert!(!group.all_durable(), "a failed sync counted as durable");
        assert!(group.try_lead(3, || 3, || Ok(())).is_some_and(|r| r.is_ok()));
        assert!(group.all_durable() && group.is_durable(3));
        group.written(2); // an older sequence number never lowers the mark
        assert!(group.all_durable());
    }

    /// A leader on a thread of its own, inside its sync until released;
    /// its sync then ends as `ends` says.
    fn leader(
        group: &Arc<GroupSync>,
        seq: u64,
        ends: fn() -> sop_core::Result<()>,
    ) -> (std::thread::JoinHandle<Option<sop_core::Result<()>>>, Arc<Barrier>) {
        let (entered, release) = (Arc::new(Barrier::new(2)), Arc::new(Barrier::new(2)));
        let (g, e, r) = (group.clone(), entered.clone(), release.clone());
        let handle = std::thread::spawn(move || {
            g.try_lead(
                seq,
                || seq,
                || {
                    e.wait();
                    r.wait();
                    ends()
                },
            )
        });
        entered.wait();
        (handle, release)
    }

    /// Waits in `durable` for `seq` while `ends`'s leader syncs (polled
    /// once before the leader is released, so it sleeps on the leader's
    /// end); its own sync, if it leads one, is counted in `syncs`.
    async fn wait_behind_leader(group: &Arc<GroupSync>, seq: u64, ends: fn() -> sop_core::Result<()>) -> u64 {
        let (leader, release) = leader(group, seq, ends);
        assert!(group.try_lead(seq, || seq, || Ok(())).is_none(), "a second leader while one syncs");
        let syncs = AtomicU64::new(0);
        let sync = || {
            syncs.fetch_add(1, Ordering::SeqCst);
            Ok(())
        };
        let mut waiter = std::pin::pin!(group.durable(seq, || seq, sync));
        tokio::select! {
            biased;
            _ = &mut waiter => panic!("answered while the leader still syncs"),
            () = std::future::ready(()) => {}
        }
        release.wait();
        let woken = tokio::time::timeout(Duration::from_secs(30), waiter).await;
        woken.expect("the waiter slept on after the leader's sync ended").unwrap();
        let _ = leader.join(); // its own outcome (or panic) is not the waiter's
        assert!(group.is_durable(seq));
        syncs.load(Ordering::SeqCst)
    }

    #[tokio::test]
    async fn a_waiter_is_answered_by_the_leaders_sync() {
        let group = Arc::new(GroupSync::default());
        group.written(1);
        assert_eq!(wait_behind_leader(&group, 1, || Ok(())).await, 0, "synced again for a covered write");
    }

    #[tokio::test]
    async fn a_waiter_leads_its_own_sync_after_the_leaders_failed() {
        let group = Arc::new(GroupSync::default());
        group.written(1);
        let failed = || Err(Error::invalid("sync", "injected"));
        assert_eq!(wait_behind_leader(&group, 1, failed).await, 1);
    }

    #[tokio::test]
    async fn a_waiter_is_woken_when_the_leaders_sync_panics() {
        let group = Arc::new(GroupSync::default());
        group.written(1);
        assert_eq!(wait_behind_leader(&group, 1, || panic!("injected")).await, 1);
    }
}
