//! Regression (issue 11, item 1): a forward scan whose upper bound was
//! `Included(k)`, with `k` equal to a separator key of an internal node,
//! stopped at the leaf left of `k` and dropped `k` (the upper-bound test
//! treated the leaf's exclusive fence as reaching an inclusive bound).
//! Fixed in `tree/scan.rs` (`upper_reaches` compares bound kinds). This
//! test compares every bound form (included, excluded, unbounded at both
//! ends), both directions, over bounds on and between keys, with a
//! `BTreeMap`.

mod common;

use std::collections::BTreeMap;

use common::{bound, memory_db, model_range, small};

fn k(n: u32) -> Vec<u8> {
    format!("key{n:05}").into_bytes()
}

#[tokio::test]
async fn every_bound_form_matches_the_model_in_both_directions() {
    let db = memory_db().await;
    db.create_store("m", small(4)).await.unwrap();
    let mut model = BTreeMap::new();
    let tx = db.begin_write().await.unwrap();
    let s = tx.bytes_store("m").await.unwrap();
    // 120 keys: the even numbers, so odd numbers are bounds between keys.
    for i in 0..120 {
        s.insert(&k(i * 2), b"v").await.unwrap();
        model.insert(k(i * 2), b"v".to_vec());
    }
    tx.commit().await.unwrap();

    let tx = db.begin_read().await.unwrap();
    let s = tx.bytes_store("m").await.unwrap();
    let (mut tried, mut short) = (0, Vec::new());
    // Lower bounds every 13th point, upper bounds every point (every
    // separator among them), 9 bound kinds, both directions.
    for a in (0..242).step_by(13) {
        for b in a..242 {
            let (ka, kb) = (k(a), k(b));
            for (lk, hk) in (0..3).flat_map(|l| (0..3).map(move |h| (l, h))) {
                let (lo, hi) = (bound(lk, &ka), bound(hk, &kb));
                let expected: Vec<Vec<u8>> =
                    model_range(&model, lo, hi).into_iter().map(|(k, _)| k).collect();
                for reverse in [false, true] {
                    let mut cur = if reverse { s.range_rev(lo, hi) } else { s.range(lo, hi) };
                    let mut got: Vec<Vec<u8>> =
                        cur.take(usize::MAX).await.unwrap().into_iter().map(|(k, _)| k.to_vec()).collect();
                    if reverse {
                        got.reverse();
                    }
                    tried += 1;
                    if got != expected {
                        short.push(format!(
                            "{lo:?}..{hi:?} reverse={reverse}: {} of {}",
                            got.len(),
                            expected.len()
                        ));
                    }
                }
            }
        }
    }
    assert!(
        short.is_empty(),
        "{} of {tried} range forms wrong, e.g. {:?}",
        short.len(),
        &short[..short.len().min(5)]
    );
}

#[tokio::test]
async fn typed_inclusive_range_returns_its_upper_key() {
    let db = memory_db().await;
    db.create_store("t", small(4)).await.unwrap();
    db.run_write(|tx| async move {
        let s = tx.store::<u32, u32>("t").await?;
        for i in 0..64 {
            s.insert(&i, &i).await?;
        }
        Ok(())
    })
    .await
    .unwrap();
    let tx = db.begin_read().await.unwrap();
    let s = tx.store::<u32, u32>("t").await.unwrap();
    for a in 0..64u32 {
        for b in a..64u32 {
            let got: Vec<u32> =
                s.range(a..=b, false, usize::MAX).await.unwrap().into_iter().map(|(k, _)| k).collect();
            assert_eq!(got, (a..=b).collect::<Vec<_>>(), "{a}..={b}");
        }
    }
}
