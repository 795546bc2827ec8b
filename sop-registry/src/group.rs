//! [`GroupSync`]: group commit. Writers apply their batches to the log
//! unsynced (under their locks), let the locks go, and then wait here
//! until a sync covers their write; one leader syncs for every writer
//! waiting, so concurrent commits share fsyncs instead of queueing one
//! fsync each behind a lock. Model-checked by `cargo xtask loom`.
//!
//! The log is sequential: a sync makes durable everything written before
//! it began. A writer whose write carries sequence number `s` returns from
//! [`GroupSync::wait_durable`] only once a sync that began after its write
//! has completed, so `synced >= s` then holds.

use sop_core::Result;
use sop_core::sync::atomic::{AtomicU64, Ordering};
use sop_core::sync::{Mutex, lock};

/// See the module documentation.
#[derive(Debug, Default)]
pub struct GroupSync {
    /// The highest sequence number known durable.
    synced: AtomicU64,
    /// The highest sequence number written (durable or not).
    written: AtomicU64,
    /// Held by the one leader syncing; waiting writers queue on it.
    leader: Mutex<()>,
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

    /// Returns once the log is durable up to `seq`. When no sync covers it
    /// yet, the first waiter becomes the leader: it reads how far the log
    /// is written (`latest`, which covers every write that returned before
    /// it), calls `sync`, and publishes that point as durable for all.
    ///
    /// # Errors
    /// The error of the `sync` this call made (later waiters try again).
    pub fn wait_durable(
        &self,
        seq: u64,
        latest: impl Fn() -> u64,
        sync: impl Fn() -> Result<()>,
    ) -> Result<()> {
        if self.synced.load(Ordering::SeqCst) >= seq {
            return Ok(());
        }
        let _leader = lock(&self.leader);
        if self.synced.load(Ordering::SeqCst) >= seq {
            return Ok(()); // a leader synced for us while we queued
        }
        let target = latest().max(seq);
        sync()?;
        self.synced.fetch_max(target, Ordering::SeqCst);
        Ok(())
    }
}

#[cfg(all(test, sop_loom))]
mod loom_tests {
    use super::GroupSync;
    use sop_core::sync::atomic::{AtomicU64, Ordering};
    use sop_core::sync::{Arc, thread};

    /// A log: `appended` counts writes (the sequence number), `durable`
    /// how many a sync has covered. Two writers append, then wait; each
    /// must find its own write durable when its wait returns (a leader
    /// that claimed what was appended after its sync began would fail it).
    #[test]
    fn loom_every_write_is_durable_when_its_wait_returns() {
        loom::model(|| {
            let group = Arc::new(GroupSync::default());
            let appended = Arc::new(AtomicU64::new(0));
            let durable = Arc::new(AtomicU64::new(0));
            let syncs = Arc::new(AtomicU64::new(0));
            let writer = || {
                let (group, appended, durable, syncs) =
                    (group.clone(), appended.clone(), durable.clone(), syncs.clone());
                thread::spawn(move || {
                    let seq = appended.fetch_add(1, Ordering::SeqCst) + 1;
                    group.written(seq);
                    let (a, d, n) = (appended.clone(), durable.clone(), syncs.clone());
                    group
                        .wait_durable(
                            seq,
                            || a.load(Ordering::SeqCst),
                            || {
                                // The sync covers what was appended when it began.
                                d.fetch_max(a.load(Ordering::SeqCst), Ordering::SeqCst);
                                n.fetch_add(1, Ordering::SeqCst);
                                Ok(())
                            },
                        )
                        .unwrap();
                    assert!(durable.load(Ordering::SeqCst) >= seq, "acknowledged before its sync");
                })
            };
            let (t1, t2) = (writer(), writer());
            t1.join().unwrap();
            t2.join().unwrap();
            assert!(syncs.load(Ordering::SeqCst) >= 1);
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
        let failed = group.wait_durable(3, || 3, || Err(Error::invalid("sync", "injected")));
        assert!(failed.is_err());
        assert!(!group.all_durable(), "a failed sync counted as durable");
        group.wait_durable(3, || 3, || Ok(())).unwrap();
        assert!(group.all_durable() && group.is_durable(3));
        group.written(2); // an older sequence number never lowers the mark
        assert!(group.all_durable());
    }
}
