//! Seeded fault decisions shared by the fault-injecting wrappers
//! (`sop_store::FaultyStore`, `sop_registry::FaultyRegistry`).
//!
//! A [`FaultPlan`] numbers the calls it sees and decides each one from a
//! hash of `(seed, call number)` alone, so a run with the same seed and the
//! same call order meets the same faults. It only decides and counts; the
//! wrapper sleeps and builds the error.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Which calls a wrapper disturbs, and how.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultConfig {
    /// Seeds the decisions: the same seed and call order give the same faults.
    pub seed: u64,
    /// Fraction of calls that fail with an `Io` error before reaching the
    /// inner backend (0.0..=1.0).
    pub fail_ratio: f64,
    /// Fraction of calls that time out (what that means is the wrapper's:
    /// see its documentation).
    pub timeout_ratio: f64,
    /// Fraction of calls delayed by `delay` before running.
    pub delay_ratio: f64,
    /// The injected latency.
    pub delay: Duration,
}

impl Default for FaultConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            fail_ratio: 0.0,
            timeout_ratio: 0.0,
            delay_ratio: 0.0,
            delay: Duration::from_millis(5),
        }
    }
}

/// Counts of what a plan injected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Calls seen.
    pub calls: u64,
    /// `Io` failures injected.
    pub failures: u64,
    /// Timeouts injected.
    pub timeouts: u64,
    /// Delays injected.
    pub delays: u64,
}

/// The fault chosen for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Run the call normally.
    None,
    /// Fail it with `Io` before it reaches the backend.
    Fail,
    /// Make it time out.
    Timeout,
}

/// The decision for one call: its number, its fault, and whether to delay
/// it first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// The call's number, counting from 0 across all methods.
    pub call: u64,
    /// The fault to inject.
    pub fault: Fault,
    /// Sleep for [`FaultConfig::delay`] before running the call.
    pub delay: bool,
}

/// Numbers calls and decides each one's fault; counts what it injected.
#[derive(Debug)]
pub struct FaultPlan {
    config: FaultConfig,
    enabled: AtomicBool,
    calls: AtomicU64,
    failures: AtomicU64,
    timeouts: AtomicU64,
    delays: AtomicU64,
}

impl FaultPlan {
    /// A plan deciding by `config`, enabled.
    #[must_use]
    pub fn new(config: FaultConfig) -> Self {
        Self {
            config,
            enabled: AtomicBool::new(true),
            calls: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            delays: AtomicU64::new(0),
        }
    }

    /// The configuration it decides by.
    #[must_use]
    pub fn config(&self) -> &FaultConfig {
        &self.config
    }

    /// Turns injection on or off (calls still count).
    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::SeqCst);
    }

    /// What has been injected so far.
    #[must_use]
    pub fn stats(&self) -> FaultStats {
        FaultStats {
            calls: self.calls.load(Ordering::SeqCst),
            failures: self.failures.load(Ordering::SeqCst),
            timeouts: self.timeouts.load(Ordering::SeqCst),
            delays: self.delays.load(Ordering::SeqCst),
        }
    }

    /// Numbers the next call and decides (and counts) its fault; a disabled
    /// plan decides no fault.
    pub fn next(&self) -> Decision {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        if !self.enabled.load(Ordering::SeqCst) {
            return Decision { call, fault: Fault::None, delay: false };
        }
        let c = &self.config;
        let a = unit(splitmix(c.seed ^ call.wrapping_mul(0x9e37_79b9_7f4a_7c15)));
        let b = unit(splitmix(c.seed.rotate_left(32) ^ call));
        let fault = if a < c.fail_ratio {
            self.failures.fetch_add(1, Ordering::SeqCst);
            Fault::Fail
        } else if a < c.fail_ratio + c.timeout_ratio {
            self.timeouts.fetch_add(1, Ordering::SeqCst);
            Fault::Timeout
        } else {
            Fault::None
        };
        let delay = b < c.delay_ratio;
        if delay {
            self.delays.fetch_add(1, Ordering::SeqCst);
        }
        Decision { call, fault, delay }
    }
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A uniform value in `[0, 1)` from 53 random bits.
fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::{Fault, FaultConfig, FaultPlan};

    fn run(seed: u64) -> (Vec<Fault>, super::FaultStats) {
        let plan = FaultPlan::new(FaultConfig {
            seed,
            fail_ratio: 0.2,
            timeout_ratio: 0.1,
            delay_ratio: 0.3,
            ..FaultConfig::default()
        });
        let faults = (0..500).map(|_| plan.next().fault).collect();
        (faults, plan.stats())
    }

    #[test]
    fn decisions_are_seeded_and_near_the_ratios() {
        let (a, stats) = run(42);
        assert_eq!(a, run(42).0, "same seed, same faults");
        assert_ne!(a, run(43).0, "another seed, other faults");
        assert_eq!(stats.calls, 500);
        assert!((70..=130).contains(&stats.failures), "{stats:?}");
        assert!((25..=75).contains(&stats.timeouts), "{stats:?}");
        assert!((110..=190).contains(&stats.delays), "{stats:?}");
        assert_eq!(a.iter().filter(|f| **f == Fault::Fail).count() as u64, stats.failures);
    }

    #[test]
    fn a_disabled_plan_injects_nothing_but_counts_calls() {
        let plan =
            FaultPlan::new(FaultConfig { fail_ratio: 1.0, delay_ratio: 1.0, ..FaultConfig::default() });
        assert_eq!(plan.next().fault, Fault::Fail);
        plan.set_enabled(false);
        let d = plan.next();
        assert_eq!((d.call, d.fault, d.delay), (1, Fault::None, false));
        assert_eq!(plan.stats().failures, 1);
    }
}
