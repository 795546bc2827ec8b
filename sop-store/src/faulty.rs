//! [`FaultyStore`]: a blob store wrapper that injects failures and delays.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream};
use sop_core::{BlobStore, Error, ErrorKind, PhysicalId, Result};

/// Which calls a [`FaultyStore`] disturbs, and how.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultConfig {
    /// Seeds the decisions: the same seed and call order give the same faults.
    pub seed: u64,
    /// Fraction of calls that fail with an `Io` error before reaching the
    /// inner store (0.0..=1.0).
    pub fail_ratio: f64,
    /// Fraction of calls that fail with a `Timeout` error.
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

/// Counts of what a [`FaultyStore`] injected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Calls seen.
    pub calls: u64,
    /// `Io` failures injected.
    pub failures: u64,
    /// `Timeout` failures injected.
    pub timeouts: u64,
    /// Delays injected.
    pub delays: u64,
}

/// Wraps a [`BlobStore`] and disturbs a seeded fraction of its calls.
///
/// Call `n` (counting from 0 across all methods; batch calls count each
/// blob) is decided by a hash of `(seed, n)` alone, so a run with the same
/// seed and the same call order meets the same faults.
#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn BlobStore>,
    config: FaultConfig,
    enabled: AtomicBool,
    calls: AtomicU64,
    failures: AtomicU64,
    timeouts: AtomicU64,
    delays: AtomicU64,
}

enum Fault {
    None,
    Fail,
    Timeout,
}

impl FaultyStore {
    /// Wraps `inner` with faults as configured, enabled.
    #[must_use]
    pub fn new(inner: Arc<dyn BlobStore>, config: FaultConfig) -> Self {
        Self {
            inner,
            config,
            enabled: AtomicBool::new(true),
            calls: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            delays: AtomicU64::new(0),
        }
    }

    /// Turns fault injection on or off (calls still count).
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

    async fn disturb(&self, what: &str, id: PhysicalId) -> Result<()> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        if !self.enabled.load(Ordering::SeqCst) {
            return Ok(());
        }
        let (fault, delay) = self.decide(n);
        if delay {
            self.delays.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(self.config.delay).await;
        }
        match fault {
            Fault::None => Ok(()),
            Fault::Fail => {
                self.failures.fetch_add(1, Ordering::SeqCst);
                let e = std::io::Error::other(format!("injected fault #{n} on {what} {id}"));
                Err(Error::backend("faulty", ErrorKind::Io, e))
            }
            Fault::Timeout => {
                self.timeouts.fetch_add(1, Ordering::SeqCst);
                Err(Error::Timeout { what: format!("{what} {id} (injected #{n})"), after: self.config.delay })
            }
        }
    }

    fn decide(&self, n: u64) -> (Fault, bool) {
        let a = unit(splitmix(self.config.seed ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15)));
        let b = unit(splitmix(self.config.seed.rotate_left(32) ^ n));
        let fault = if a < self.config.fail_ratio {
            Fault::Fail
        } else if a < self.config.fail_ratio + self.config.timeout_ratio {
            Fault::Timeout
        } else {
            Fault::None
        };
        (fault, b < self.config.delay_ratio)
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

#[async_trait]
impl BlobStore for FaultyStore {
    async fn put(&self, id: PhysicalId, data: Bytes) -> Result<()> {
        self.disturb("put", id).await?;
        self.inner.put(id, data).await
    }

    async fn get(&self, id: PhysicalId) -> Result<Bytes> {
        self.disturb("get", id).await?;
        self.inner.get(id).await
    }

    async fn delete(&self, id: PhysicalId) -> Result<()> {
        self.disturb("delete", id).await?;
        self.inner.delete(id).await
    }

    async fn put_many(&self, blobs: Vec<(PhysicalId, Bytes)>) -> Result<()> {
        stream::iter(blobs).map(|(id, b)| self.put(id, b)).buffer_unordered(8).try_collect().await
    }

    async fn delete_many(&self, ids: &[PhysicalId]) -> Result<()> {
        stream::iter(ids.iter().copied()).map(|id| self.delete(id)).buffer_unordered(8).try_collect().await
    }

    async fn list(&self) -> Result<Vec<PhysicalId>> {
        self.disturb("list", PhysicalId::default()).await?;
        self.inner.list().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ObjectBlobStore;

    async fn run(seed: u64) -> (Vec<bool>, FaultStats) {
        let cfg = FaultConfig { seed, fail_ratio: 0.2, timeout_ratio: 0.1, ..FaultConfig::default() };
        let store = FaultyStore::new(Arc::new(ObjectBlobStore::memory()), cfg);
        let mut outcomes = Vec::new();
        for i in 0..500u32 {
            outcomes.push(store.put(PhysicalId::new(), Bytes::from(i.to_le_bytes().to_vec())).await.is_ok());
        }
        (outcomes, store.stats())
    }

    #[tokio::test]
    async fn faults_are_seeded_and_near_the_ratio() {
        let (a, stats) = run(42).await;
        let (b, _) = run(42).await;
        let (c, _) = run(43).await;
        assert_eq!(a, b, "same seed, same faults");
        assert_ne!(a, c, "another seed, other faults");
        assert_eq!(stats.calls, 500);
        assert!((70..=130).contains(&stats.failures), "{stats:?}");
        assert!((25..=75).contains(&stats.timeouts), "{stats:?}");
        assert_eq!(a.iter().filter(|ok| !**ok).count() as u64, stats.failures + stats.timeouts);
    }

    #[tokio::test]
    async fn disabled_store_passes_everything_through_and_conforms() {
        let cfg = FaultConfig { fail_ratio: 1.0, ..FaultConfig::default() };
        let store = FaultyStore::new(Arc::new(ObjectBlobStore::memory()), cfg);
        let id = PhysicalId::new();
        let err = store.put(id, Bytes::new()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Io);
        assert_eq!(
            store.inner.get(id).await.unwrap_err().kind(),
            ErrorKind::NotFound,
            "failed before the inner put"
        );
        store.set_enabled(false);
        sop_core::testkit::run_blob_store_suite(&store).await;
    }

    #[tokio::test(start_paused = true)]
    async fn delays_are_injected() {
        let cfg = FaultConfig { delay_ratio: 1.0, delay: Duration::from_secs(5), ..FaultConfig::default() };
        let store = FaultyStore::new(Arc::new(ObjectBlobStore::memory()), cfg);
        let start = tokio::time::Instant::now();
        store.put(PhysicalId::new(), Bytes::new()).await.unwrap();
        assert!(start.elapsed() >= Duration::from_secs(5));
        assert_eq!(store.stats().delays, 1);
    }
}
