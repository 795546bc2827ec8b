//! Regression (issue 11, item 3): `RocksRegistry` compared `count_checks`
//! under a shared lock while other publishes applied count deltas under
//! disjoint stripe locks, so "if count(A) == 0, add one to B" and its
//! mirror could both be published (write skew). A count check now holds
//! its store's count lock exclusive, and a delta holds it shared.

use std::sync::Arc;

use sop_backends::{RocksConfig, RocksRegistry};
use sop_core::{Handle, LogicalId, PhysicalId, PublishRequest, Registry, StoreInfo, StoreOptions};

async fn reset(reg: &RocksRegistry, name: &str) {
    let _ = reg.remove_store(name).await;
    let root = Handle::new(LogicalId::new(), PhysicalId::new());
    let info = StoreInfo::new(name, StoreOptions::default(), root.logical_id).unwrap();
    reg.create_store(&info, &root).await.unwrap();
}

/// "If count(`check`) == 0, add one to `delta`", as one publish.
fn if_empty_add(check: &str, delta: &str) -> PublishRequest {
    PublishRequest {
        count_checks: vec![(check.to_owned(), 0)],
        count_deltas: vec![(delta.to_owned(), 1)],
        ..PublishRequest::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrored_count_checks_are_never_both_published() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Arc::new(RocksRegistry::open(dir.path(), &RocksConfig::default()).unwrap());
    let mut both = 0;
    for _ in 0..300 {
        reset(&reg, "a").await;
        reset(&reg, "b").await;
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let publish = |check: &'static str, delta: &'static str| {
            let (reg, barrier) = (reg.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                reg.publish(&if_empty_add(check, delta)).await
            })
        };
        let (ja, jb) = (publish("a", "b"), publish("b", "a"));
        let (ra, rb) = (ja.await.unwrap(), jb.await.unwrap());
        for r in [&ra, &rb] {
            if let Err(e) = r {
                assert!(e.is_conflict(), "unexpected error: {e}");
            }
        }
        let counts = (
            reg.get_store("a").await.unwrap().unwrap().count,
            reg.get_store("b").await.unwrap().unwrap().count,
        );
        assert_eq!(counts, (u64::from(rb.is_ok()), u64::from(ra.is_ok())));
        if ra.is_ok() && rb.is_ok() {
            both += 1;
        }
    }
    assert_eq!(both, 0, "write skew: both published in {both} of 300 rounds");
}
