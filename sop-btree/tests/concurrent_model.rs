//! Concurrent writers on disjoint key sets that share leaves, with a small
//! slot length: splits, borrows, merges and root changes race each other,
//! and every node-level clash must be merged or retried without losing or
//! duplicating a write. Each task keeps its own model; the final store
//! must equal their union.
#![cfg(feature = "embedded")]

mod common;

use std::collections::BTreeMap;
use std::ops::Bound;

use common::{assert_healthy, embedded_db, small};
use sop_btree::ErrorKind;

const TASKS: u64 = 6;
const ROUNDS: u64 = 30;

/// xorshift64*, seeded per task.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_splits_and_merges_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = embedded_db(dir.path()).await;
    db.create_store("c", small(4)).await.unwrap();
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let db = db.clone();
        handles.push(tokio::spawn(async move {
            let mut seed = 0x9e37_79b9 ^ (t + 1);
            let mut model: BTreeMap<u64, u64> = BTreeMap::new();
            for round in 0..ROUNDS {
                // Keys interleave across tasks (k * TASKS + t), so tasks share leaves.
                let ops: Vec<(u64, bool)> = (0..8)
                    .map(|_| ((next(&mut seed) % 40) * TASKS + t, !next(&mut seed).is_multiple_of(3)))
                    .collect();
                let result = db
                    .run_write(|tx| {
                        let ops = ops.clone();
                        async move {
                            let s = tx.store::<u64, u64>("c").await?;
                            for (key, put) in ops {
                                if put {
                                    s.upsert(&key, &round).await?;
                                } else {
                                    s.remove(&key).await?;
                                }
                            }
                            Ok(())
                        }
                    })
                    .await;
                match result {
                    Ok(()) => {
                        for (key, put) in ops {
                            if put {
                                model.insert(key, round);
                            } else {
                                model.remove(&key);
                            }
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::Conflict => {} // gave up: nothing applied
                    Err(e) => panic!("task {t}: {e}"),
                }
            }
            model
        }));
    }
    let mut expected = BTreeMap::new();
    for h in handles {
        expected.extend(h.await.unwrap());
    }
    let tx = db.begin_read().await.unwrap();
    let s = tx.bytes_store("c").await.unwrap();
    let all = s.range(Bound::Unbounded, Bound::Unbounded).take(usize::MAX).await.unwrap();
    let got: BTreeMap<u64, u64> = all
        .iter()
        .map(|(k, v)| (u64::from_be_bytes(k[..].try_into().unwrap()), postcard::from_bytes(v).unwrap()))
        .collect();
    assert_eq!(got, expected);
    assert_eq!(s.count().await.unwrap(), expected.len() as u64);
    tx.commit().await.unwrap();
    println!("stats: {:?}", db.stats());
    assert!(db.stats().merges > 0, "the tasks did clash at node level: {:?}", db.stats());
    assert_healthy(&db).await;
}
