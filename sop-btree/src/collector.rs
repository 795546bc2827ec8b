//! [`Collector`]: the queue of deferred clean-ups, which one task per
//! database (`crate::gc`) runs in batches, instead of one task (and one
//! timer) per commit.
//!
//! A commit's clean-up deletes the blobs it made obsolete, then its intent.
//! It waits out `Config::gc_grace` (which a flush skips) and, on shared
//! backends, `Config::tx_timeout` (the *floor*: a transaction of another
//! process may still read the blobs; nothing skips it). Both waits are the
//! same for every commit of a database, so clean-ups queue in the order
//! they fall due. One task sleeps until the first is due plus
//! [`BATCH_WINDOW`], takes every clean-up due by then, and runs them as one
//! (`crate::gc::cleanup`: one deletion of all their blobs, one removal of
//! all their intents). Each queued clean-up holds its `Deferred` until it
//! has run, so a flush still waits for every one whose floor has passed.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use sop_core::Intent;
use tokio::time::Instant;

use crate::claims::Claim;
use crate::gc_gate::Deferred;

/// How long past the first clean-up due the task waits, so that the ones
/// falling due meanwhile go in the same batch (a clean-up's grace period
/// is a lower bound). Measured: under a stream of small commits, one
/// batch per ~10 ms instead of one task, one timer and two registry
/// writes per commit.
pub(crate) const BATCH_WINDOW: Duration = Duration::from_millis(10);

/// One commit's clean-up, waiting for its turn.
#[derive(Debug)]
pub(crate) struct Due {
    /// When its grace period ends (a flush does not wait for it).
    grace_ends: Instant,
    /// When the floor ends (nothing runs it sooner).
    floor: Instant,
    /// Its place among this process's live transactions (`crate::epoch`).
    pub(crate) mark: u64,
    pub(crate) intent: Intent,
    pub(crate) claim: Claim,
    /// Counts it as pending for flushes; released when it has run, or
    /// early when a flush meets it still under its floor.
    pub(crate) deferred: Option<Deferred>,
}

/// The queue of clean-ups, and whether a task is running it.
#[derive(Debug, Default)]
pub(crate) struct Collector {
    queue: Mutex<Queue>,
}

#[derive(Debug, Default)]
struct Queue {
    due: VecDeque<Due>,
    /// Whether the task is running; it ends when the queue is empty.
    running: bool,
}

impl Collector {
    /// Queues a clean-up; `true` when no task runs the queue (the caller
    /// starts one: `crate::gc`).
    pub(crate) fn push(
        &self,
        (grace_ends, floor): (Instant, Instant),
        mark: u64,
        job: (Intent, Claim),
        deferred: Deferred,
    ) -> bool {
        let (intent, claim) = job;
        let due = Due { grace_ends, floor, mark, intent, claim, deferred: Some(deferred) };
        let mut q = self.queue();
        q.due.push_back(due);
        !std::mem::replace(&mut q.running, true)
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// When the first queued clean-up's grace and floor end; `None` (and
    /// the task counted out, under the same lock) when the queue is empty.
    pub(crate) fn front(&self) -> Option<(Instant, Instant)> {
        let mut q = self.queue();
        let front = q.due.front().map(|d| (d.grace_ends, d.floor));
        if front.is_none() {
            q.running = false;
        }
        front
    }

    /// Takes the clean-ups at the front of the queue that may run now.
    pub(crate) fn take_due(&self, now: Instant, flushing: bool) -> Vec<Due> {
        let mut q = self.queue();
        let ready = |d: &Due| d.floor <= now && (flushing || d.grace_ends <= now);
        let n = q.due.iter().take_while(|d| ready(d)).count();
        q.due.drain(..n).collect()
    }

    /// A flush does not wait out a floor: clean-ups still under theirs
    /// stop counting as pending (they run when it ends, flush or not).
    pub(crate) fn release_under_floor(&self, now: Instant) {
        let mut q = self.queue();
        for d in q.due.iter_mut().filter(|d| d.floor > now) {
            d.deferred = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Collector, Due};
    use crate::claims::Claims;
    use crate::gc_gate::GcGate;
    use sop_core::{Intent, TxId};
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::time::Instant;

    /// Queues clean-ups whose grace ends at `graces` and floors at
    /// `floors` (seconds from `t0`).
    fn queued(t0: Instant, gate: &GcGate, graces: &[u64], floors: &[u64]) -> Collector {
        let claims = Arc::new(Claims::default());
        let collector = Collector::default();
        for (&g, &f) in graces.iter().zip(floors) {
            let tx = TxId::new();
            collector.queue().due.push_back(Due {
                grace_ends: t0 + Duration::from_secs(g),
                floor: t0 + Duration::from_secs(f),
                mark: 0,
                intent: Intent::pending(tx, Vec::new()),
                claim: claims.claim(tx),
                deferred: Some(gate.register()),
            });
        }
        collector
    }

    #[test]
    fn only_the_due_front_is_taken_and_a_flush_skips_the_grace_never_the_floor() {
        let (t0, gate) = (Instant::now(), GcGate::new());
        let c = queued(t0, &gate, &[1, 2, 3, 4], &[0, 0, 9, 9]);
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!(c.take_due(at(0), false).is_empty(), "taken before its grace ended");
        assert_eq!(c.take_due(at(2), false).len(), 2, "the two whose grace ended");
        assert!(c.take_due(at(5), true).is_empty(), "a flush ran one under its floor");
        assert_eq!(c.take_due(at(9), false).len(), 2);
        assert!(c.front().is_none() && !c.queue().running);
    }

    #[test]
    fn a_flush_stops_counting_clean_ups_still_under_their_floor() {
        let (t0, gate) = (Instant::now(), GcGate::new());
        let c = queued(t0, &gate, &[1, 1, 1], &[0, 5, 5]);
        assert_eq!(gate.pending(), 3);
        c.release_under_floor(t0 + Duration::from_secs(2));
        assert_eq!(gate.pending(), 1, "the two under their floor still counted");
        assert_eq!(c.take_due(t0 + Duration::from_secs(2), true).len(), 1);
        assert_eq!(c.queue().due.len(), 2, "released from the count, not from the queue");
    }
}
