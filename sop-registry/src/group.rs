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
        let leader = match self.leader.try_lock() {
            Ok(guard) => guard,
            Err(sop_core::sync::TryLockError::WouldBlock) => return None,
            Err(sop_core::sync::TryLockError::Poisoned(p)) => p.into_inner(),
        };
        let outcome = if self.is_durable(seq) {
            Ok(()) // a leader synced for us between the two checks
        } else {
            let target = latest().max(seq);
            sync().map(|()| {
                self.synced.fetch_max(target, Ordering::SeqCst);
            })
        };
        drop(leader);
        #[cfg(not(sop_loom))]
        self.ended.notify_waiters();
        Some(outcome)
    }

    /// Returns once the log is durable up to `seq`. With no sync under
    /// way this call leads one on its own thread: it reads how far the log
    /// is written (`latest`, which covers every write that returned before
    /// it), calls `sync`, and publishes that point as durable for all;
    /// while another leader syncs, it awaits
    /// the end of that sync, holding no thread, and tries again.
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

#[cfg(all(test, sop_loom))]
mod loom_tests {
    use super::GroupSync;
    use sop_core::sync::atomic::{AtomicU64, Ordering};
    use sop_core::sync::{Arc, thread};

    /// The async form's steps: two writers append, then call `try_lead`
    /// until it answers (yielding while the other leads, as the async
    /// waiter awaits the leader's end). Neither may be answered before a
    /// sync covers its write, and a leader that finds its write already
    /// covered must not sync again.
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn async_waiters_share_one_leaders_sync_and_retry_after_its_failure() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicU64, Ordering};
        let group = Arc::new(GroupSync::default());
        let syncs = Arc::new(AtomicU64::new(0));
        group.written(1);
        // A leader that holds the sync until released.
        let (entered, release) = (Arc::new(std::sync::Barrier::new(2)), Arc::new(std::sync::Barrier::new(2)));
        let leader = {
            let (group, syncs, entered, release) =
                (group.clone(), syncs.clone(), entered.clone(), release.clone());
            std::thread::spawn(move || {
                group.try_lead(
                    1,
                    || 1,
                    || {
                        entered.wait();
                        release.wait();
                        syncs.fetch_add(1, Ordering::SeqCst);
                        Ok(())
                    },
                )
            })
        };
        entered.wait();
        assert!(group.try_lead(1, || 1, || Ok(())).is_none(), "a second leader while one syncs");
        let waiter = {
            let group = group.clone();
            tokio::spawn(async move {
                group.durable(1, || 1, || panic!("synced again for a covered write")).await
            })
        };
        release.wait();
        waiter.await.unwrap().unwrap();
        assert!(leader.join().unwrap().unwrap().is_ok());
        assert_eq!(syncs.load(Ordering::SeqCst), 1);
        // A write after it: its own sync; a failed one is retried by the next waiter.
        group.written(2);
        let failed = group.durable(2, || 2, || Err(Error::invalid("sync", "injected"))).await;
        assert!(failed.is_err() && !group.is_durable(2));
        group.durable(2, || 2, || Ok(())).await.unwrap();
        assert!(group.all_durable());
    }
}
