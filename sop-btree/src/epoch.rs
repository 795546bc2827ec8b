//! [`Epochs`]: the low-water mark of this process's live transactions, so
//! that garbage collection never deletes a blob that a live transaction may
//! still reach.
//!
//! Every transaction takes a sequence number when it begins and gives it
//! back when it ends ([`EpochGuard`]). A commit that makes blobs obsolete
//! takes a [`Epochs::mark`] after its new handles are visible: any
//! transaction numbered below the mark may have seen the old handles (and
//! may still load the old nodes or values); any numbered at or above it
//! cannot. The deletion runs once no transaction below its mark is live —
//! at once when none is, otherwise when the last one ends, from that
//! transaction's drop (the job is parked here until then).
//!
//! A transaction past its deadline reads nothing more from storage or the
//! caches (every point read, every leaf a cursor reads and every value
//! kept in a blob of its own checks it; a cursor may still hand out the
//! inline items of a leaf it holds in memory), so one that is never ended (a forgotten handle) stops counting a
//! while after its deadline: [`Epochs::sweep`], which the database's
//! periodic task calls, forgets places whose expiry (the deadline plus the
//! transaction's own time limit, a margin for a read in progress) passed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

/// A parked deletion: run when its mark is clear.
pub(crate) type Job = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct State {
    /// The next sequence number to hand out.
    next: u64,
    /// Live sequence numbers (each handed out once), with their expiry.
    live: BTreeMap<u64, Instant>,
    /// Parked jobs by mark, in mark order.
    parked: Vec<(u64, Job)>,
}

impl State {
    /// The lowest live sequence number, or `next` when none is live.
    fn low(&self) -> u64 {
        self.live.keys().next().copied().unwrap_or(self.next)
    }
}

/// The live transactions of this process, by begin sequence number.
#[derive(Default)]
pub(crate) struct Epochs {
    state: Mutex<State>,
}

impl std::fmt::Debug for Epochs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.lock();
        f.debug_struct("Epochs")
            .field("next", &st.next)
            .field("live", &st.live.len())
            .field("parked", &st.parked.len())
            .finish()
    }
}

/// One live transaction's place; ends it on drop.
#[derive(Debug)]
pub(crate) struct EpochGuard {
    epochs: Arc<Epochs>,
    seq: u64,
}

impl Epochs {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a transaction that begins now and stops counting after
    /// `expiry` even if it is never ended.
    pub(crate) fn begin(self: &Arc<Self>, expiry: Instant) -> EpochGuard {
        let mut st = self.lock();
        let seq = st.next;
        st.next += 1;
        st.live.insert(seq, expiry);
        EpochGuard { epochs: self.clone(), seq }
    }

    /// The mark of a change made visible before this call: transactions
    /// that began before it may have seen the state it replaced.
    pub(crate) fn mark(&self) -> u64 {
        self.lock().next
    }

    /// Parks `job` until no transaction below `mark` is live; when none is
    /// now, hands it back (`Err`) for the caller to run.
    pub(crate) fn park_unless_clear(&self, mark: u64, job: Job) -> Result<(), Job> {
        let mut st = self.lock();
        if st.low() >= mark {
            return Err(job);
        }
        st.parked.push((mark, job));
        Ok(())
    }

    /// Parked jobs (for tests and reports).
    #[cfg(test)]
    fn parked(&self) -> usize {
        self.lock().parked.len()
    }

    fn end(&self, seq: u64) {
        self.release(|live| {
            live.remove(&seq);
        });
    }

    /// Forgets transactions whose expiry passed (never ended, and past
    /// their deadline, so they read nothing more), running what that frees.
    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        self.release(|live| live.retain(|_, expiry| *expiry > now));
    }

    /// Applies `change` to the live set, then runs the parked jobs whose
    /// marks are clear, outside the lock (a job may register work or spawn
    /// a task).
    fn release(&self, change: impl FnOnce(&mut BTreeMap<u64, Instant>)) {
        let ready: Vec<Job> = {
            let mut st = self.lock();
            change(&mut st.live);
            let low = st.low();
            let (ready, still): (Vec<_>, Vec<_>) =
                std::mem::take(&mut st.parked).into_iter().partition(|(m, _)| *m <= low);
            st.parked = still;
            ready.into_iter().map(|(_, job)| job).collect()
        };
        for job in ready {
            job();
        }
    }
}

impl Drop for EpochGuard {
    fn drop(&mut self) {
        self.epochs.end(self.seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn far() -> Instant {
        Instant::now() + std::time::Duration::from_secs(3600)
    }

    #[test]
    fn a_forgotten_transaction_stops_counting_after_its_expiry() {
        let epochs = Arc::new(Epochs::default());
        let ran = Arc::new(AtomicUsize::new(0));
        let forgotten = epochs.begin(Instant::now());
        let live = epochs.begin(far());
        let mark = epochs.mark();
        assert!(epochs.park_unless_clear(mark, counter_job(&ran)).is_ok());
        epochs.sweep();
        assert_eq!(ran.load(Ordering::SeqCst), 0, "`live` still counts");
        drop(live);
        assert_eq!(ran.load(Ordering::SeqCst), 1, "the expired one no longer holds it back");
        drop(forgotten); // ending an expired place is harmless
        assert_eq!(epochs.parked(), 0);
    }

    fn counter_job(n: &Arc<AtomicUsize>) -> Job {
        let n = n.clone();
        Box::new(move || {
            n.fetch_add(1, Ordering::SeqCst);
        })
    }

    #[test]
    fn a_job_waits_for_every_transaction_that_began_before_its_mark() {
        let epochs = Arc::new(Epochs::default());
        let ran = Arc::new(AtomicUsize::new(0));
        let (old1, old2) = (epochs.begin(far()), epochs.begin(far()));
        let mark = epochs.mark();
        let young = epochs.begin(far());
        assert!(epochs.park_unless_clear(mark, counter_job(&ran)).is_ok(), "pinned, so parked");
        drop(old2);
        assert_eq!(ran.load(Ordering::SeqCst), 0, "old1 is still live");
        drop(old1);
        assert_eq!(ran.load(Ordering::SeqCst), 1, "runs when the last older one ends");
        assert_eq!(epochs.parked(), 0);
        drop(young);
    }

    #[test]
    fn a_job_with_no_older_transaction_is_handed_back() {
        let epochs = Arc::new(Epochs::default());
        let before = epochs.begin(far());
        drop(before);
        let mark = epochs.mark();
        let _young = epochs.begin(far());
        let ran = Arc::new(AtomicUsize::new(0));
        assert!(epochs.park_unless_clear(mark, counter_job(&ran)).is_err());
        assert_eq!(epochs.parked(), 0);
    }

    #[test]
    fn jobs_run_in_any_order_of_their_marks_once_clear() {
        let epochs = Arc::new(Epochs::default());
        let ran = Arc::new(AtomicUsize::new(0));
        let a = epochs.begin(far());
        let m1 = epochs.mark();
        let b = epochs.begin(far());
        let m2 = epochs.mark();
        assert!(epochs.park_unless_clear(m2, counter_job(&ran)).is_ok());
        assert!(epochs.park_unless_clear(m1, counter_job(&ran)).is_ok());
        drop(a);
        assert_eq!(ran.load(Ordering::SeqCst), 1, "m1 is clear, m2 waits for b");
        drop(b);
        assert_eq!(ran.load(Ordering::SeqCst), 2);
    }
}
