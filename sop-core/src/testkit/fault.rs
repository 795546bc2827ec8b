//! Seeded fault injection shared by the fault-injecting wrappers
//! (`sop_store::FaultyStore`, `sop_registry::FaultyRegistry`; both behind
//! their crate's `testkit` feature).
//!
//! A [`FaultPlan`] numbers the calls it sees and decides each one from a
//! hash of `(seed, call number)` alone, so a run with the same seed and the
//! same call order meets the same faults. [`FaultPlan::step`] is the one
//! fault step both wrappers run around every call: it sleeps an injected
//! delay, then fails the call, withholds its answer or loses its reply, or
//! lets it through.

use std::fmt::Display;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::{Error, ErrorKind, Result};

/// Which calls a wrapper disturbs, and how.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultConfig {
    /// Seeds the decisions: the same seed and call order give the same faults.
    pub seed: u64,
    /// Fraction of calls that fail with an `Io` error before reaching the
    /// inner backend (0.0..=1.0).
    pub fail_ratio: f64,
    /// Fraction of calls that time out (what that means depends on the
    /// call: see [`OnTimeout`]).
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

/// What an injected timeout does to a call, which depends on the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnTimeout {
    /// The call is not made and fails with [`Error::Timeout`]: a read, or
    /// any blob-store call.
    NoAnswer,
    /// The call is made; if it succeeds, its reply is lost and the caller
    /// gets [`Error::Indeterminate`], the worst case of a write to a remote
    /// registry that timed out. An error from the call is reported as is.
    LoseReply,
}

/// The fault chosen for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
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
struct Decision {
    /// The call's number, counting from 0 across all methods.
    call: u64,
    /// The fault to inject.
    fault: Fault,
    /// Sleep for [`FaultConfig::delay`] before running the call.
    delay: bool,
}

/// What the fault step does with one call.
#[derive(Debug)]
enum Action {
    /// Make the call and return its answer.
    Run,
    /// Do not make the call; fail with this error.
    Refuse(Error),
    /// Make the call; if it succeeds, fail with this error instead.
    LoseReply(Error),
}

/// Numbers calls, decides each one's fault and injects it; counts what it
/// injected.
#[derive(Debug)]
pub struct FaultPlan {
    backend: &'static str,
    config: FaultConfig,
    enabled: AtomicBool,
    calls: AtomicU64,
    failures: AtomicU64,
    timeouts: AtomicU64,
    delays: AtomicU64,
}

impl FaultPlan {
    /// A plan deciding by `config`, enabled. `backend` names the wrapper in
    /// the `Io` errors it injects ([`Error::Backend`]).
    #[must_use]
    pub fn new(backend: &'static str, config: FaultConfig) -> Self {
        Self {
            backend,
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

    /// The fault step around one call of a wrapper: numbers the call,
    /// decides its fault and returns a future that sleeps
    /// [`FaultConfig::delay`] if the call is delayed, then
    /// - on a failure, returns an `Io` [`Error::Backend`] ("injected fault
    ///   #n on `what`") without making the call;
    /// - on a timeout, does what `on_timeout` says: [`Error::Timeout`]
    ///   ("`what` (injected #n)", its `after` being [`FaultConfig::delay`])
    ///   without making the call, or makes it and answers
    ///   [`Error::Indeterminate`] ("`what`: reply lost (injected #n)") if it
    ///   succeeded;
    /// - otherwise makes the call and returns its answer.
    ///
    /// The call is numbered and decided (and `what` formatted, only if a
    /// fault is injected) when `step` is called, so the future holds no
    /// `what` and is `Send` whenever `call` is.
    ///
    /// # Errors
    ///
    /// The injected error (kind `Io`, `Timeout` or `Indeterminate`), or the
    /// call's own.
    pub fn step<T, F>(
        &self,
        what: &dyn Display,
        on_timeout: OnTimeout,
        call: F,
    ) -> impl Future<Output = Result<T>> + use<T, F>
    where
        F: Future<Output = Result<T>>,
    {
        let d = self.next();
        let delay = d.delay.then_some(self.config.delay);
        let action = self.action(d, what, on_timeout);
        async move {
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            match action {
                Action::Run => call.await,
                Action::Refuse(e) => Err(e),
                Action::LoseReply(e) => {
                    call.await?;
                    Err(e)
                }
            }
        }
    }

    /// What [`step`](Self::step) does with the call decided as `d`.
    fn action(&self, d: Decision, what: &dyn Display, on_timeout: OnTimeout) -> Action {
        let n = d.call;
        match (d.fault, on_timeout) {
            (Fault::None, _) => Action::Run,
            (Fault::Fail, _) => {
                let e = std::io::Error::other(format!("injected fault #{n} on {what}"));
                Action::Refuse(Error::backend(self.backend, ErrorKind::Io, e))
            }
            (Fault::Timeout, OnTimeout::NoAnswer) => {
                let what = format!("{what} (injected #{n})");
                Action::Refuse(Error::Timeout { what, after: self.config.delay })
            }
            (Fault::Timeout, OnTimeout::LoseReply) => {
                Action::LoseReply(Error::Indeterminate(format!("{what}: reply lost (injected #{n})")))
            }
        }
    }

    /// Numbers the next call and decides (and counts) its fault; a disabled
    /// plan decides no fault.
    fn next(&self) -> Decision {
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
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::{Duration, Instant};

    use super::{Fault, FaultConfig, FaultPlan, FaultStats, OnTimeout};
    use crate::{Error, ErrorKind, Result};

    fn plan(config: FaultConfig) -> FaultPlan {
        FaultPlan::new("faulty-test", config)
    }

    fn run(seed: u64) -> (Vec<Fault>, FaultStats) {
        let config =
            FaultConfig { fail_ratio: 0.2, timeout_ratio: 0.1, delay_ratio: 0.3, ..FaultConfig::default() };
        let plan = plan(FaultConfig { seed, ..config });
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
        let plan = plan(FaultConfig { fail_ratio: 1.0, delay_ratio: 1.0, ..FaultConfig::default() });
        assert_eq!(plan.next().fault, Fault::Fail);
        plan.set_enabled(false);
        let d = plan.next();
        assert_eq!((d.call, d.fault, d.delay), (1, Fault::None, false));
        assert_eq!(plan.stats().failures, 1);
    }

    /// Runs one step over a call that counts its runs and answers `answer`.
    async fn step(plan: &FaultPlan, on_timeout: OnTimeout, answer: Result<u32>) -> (Result<u32>, u32) {
        let runs = AtomicU32::new(0);
        let call = async {
            runs.fetch_add(1, Ordering::SeqCst);
            answer
        };
        let out = plan.step(&format_args!("put {}", 7), on_timeout, call).await;
        (out, runs.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn a_failure_never_makes_the_call() {
        let plan = plan(FaultConfig { fail_ratio: 1.0, ..FaultConfig::default() });
        for on_timeout in [OnTimeout::NoAnswer, OnTimeout::LoseReply] {
            let (out, runs) = step(&plan, on_timeout, Ok(1)).await;
            let e = out.unwrap_err();
            assert_eq!((e.kind(), runs), (ErrorKind::Io, 0));
            let n = plan.stats().calls - 1;
            assert_eq!(e.to_string(), format!("faulty-test error: injected fault #{n} on put 7"));
        }
    }

    #[tokio::test]
    async fn a_timeout_withholds_the_answer_or_loses_the_reply() {
        let plan = plan(FaultConfig { timeout_ratio: 1.0, ..FaultConfig::default() });
        let (out, runs) = step(&plan, OnTimeout::NoAnswer, Ok(1)).await;
        let e = out.unwrap_err();
        assert_eq!((e.kind(), runs), (ErrorKind::Timeout, 0));
        assert_eq!(e.to_string(), format!("put 7 (injected #0) timed out after {:?}", plan.config().delay));

        let (out, runs) = step(&plan, OnTimeout::LoseReply, Ok(1)).await;
        let e = out.unwrap_err();
        assert_eq!((e.kind(), runs), (ErrorKind::Indeterminate, 1), "the call was made");
        assert_eq!(e.to_string(), "outcome unknown: put 7: reply lost (injected #1)");

        let refused = Error::invalid("test", "no");
        let (out, runs) = step(&plan, OnTimeout::LoseReply, Err(refused)).await;
        assert_eq!((out.unwrap_err().kind(), runs), (ErrorKind::InvalidInput, 1), "the call's error, as is");
        assert_eq!(plan.stats().timeouts, 3);
    }

    #[tokio::test]
    async fn no_fault_answers_and_a_delay_sleeps_first() {
        let delay = Duration::from_millis(20);
        let plan = plan(FaultConfig { delay_ratio: 1.0, delay, ..FaultConfig::default() });
        let start = Instant::now();
        let (out, runs) = step(&plan, OnTimeout::NoAnswer, Ok(5)).await;
        assert_eq!((out.unwrap(), runs), (5, 1));
        assert!(start.elapsed() >= delay);
        assert_eq!(plan.stats().delays, 1);
    }
}
