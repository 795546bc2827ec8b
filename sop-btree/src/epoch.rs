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

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

/// A parked deletion: run when its mark is clear.
pub(crate) type Job = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct State {
    /// The next sequence number to hand out.
    next: u64,
    /// Live sequence numbers, with multiplicity.
    live: BTreeMap<u64, usize>,
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

    /// Registers a transaction that begins now.
    pub(crate) fn begin(self: &Arc<Self>) -> EpochGuard {
        let mut st = self.lock();
        let seq = st.next;
        st.next += 1;
        *st.live.entry(seq).or_default() += 1;
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
        let ready: Vec<Job> = {
            let mut st = self.lock();
            if let Some(n) = st.live.get_mut(&seq) {
                *n -= 1;
                if *n == 0 {
                    st.live.remove(&seq);
                }
            }
            let low = st.low();
            let (ready, still): (Vec<_>, Vec<_>) =
                std::mem::take(&mut st.parked).into_iter().partition(|(m, _)| *m <= low);
            st.parked = still;
            ready.into_iter().map(|(_, job)| job).collect()
        };
        // Outside the lock: a job may register work or spawn a task.
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
        let (old1, old2) = (epochs.begin(), epochs.begin());
        let mark = epochs.mark();
        let young = epochs.begin();
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
        let before = epochs.begin();
        drop(before);
        let mark = epochs.mark();
        let _young = epochs.begin();
        let ran = Arc::new(AtomicUsize::new(0));
        assert!(epochs.park_unless_clear(mark, counter_job(&ran)).is_err());
        assert_eq!(epochs.parked(), 0);
    }

    #[test]
    fn jobs_run_in_any_order_of_their_marks_once_clear() {
        let epochs = Arc::new(Epochs::default());
        let ran = Arc::new(AtomicUsize::new(0));
        let a = epochs.begin();
        let m1 = epochs.mark();
        let b = epochs.begin();
        let m2 = epochs.mark();
        assert!(epochs.park_unless_clear(m2, counter_job(&ran)).is_ok());
        assert!(epochs.park_unless_clear(m1, counter_job(&ran)).is_ok());
        drop(a);
        assert_eq!(ran.load(Ordering::SeqCst), 1, "m1 is clear, m2 waits for b");
        drop(b);
        assert_eq!(ran.load(Ordering::SeqCst), 2);
    }
}
