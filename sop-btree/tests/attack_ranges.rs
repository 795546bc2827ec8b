//! Review attacks on the guarantees of commit d7419f1 ("Issue 11
//! correctness"), on range bounds and seeks, against a model. Each test
//! states the invariant it attacks, from a user's side. Tests marked `BROKE`
//! failed on d7419f1 and pass since the fix named in their doc; tests marked
//! `HOLDS` passed from the start. (Split from one file by theme; the shared
//! helpers are `common/attack.rs`.)

mod common;

use std::collections::BTreeMap;
use std::ops::Bound;

use sop_btree::StoreOptions;

use common::attack::*;

/// Keys that stress escaping and prefixes: every string of 0..=3 bytes
/// over {0x00, 0x01, 0x7f, 0xff}.
fn nasty_keys() -> Vec<Vec<u8>> {
    let alphabet = [0x00u8, 0x01, 0x7f, 0xff];
    let mut keys = vec![Vec::new()];
    let mut frontier = vec![Vec::new()];
    for _ in 0..3 {
        let mut next = Vec::new();
        for k in &frontier {
            for &b in &alphabet {
                let mut k2: Vec<u8> = k.clone();
                k2.push(b);
                next.push(k2);
            }
        }
        keys.extend(next.iter().cloned());
        frontier = next;
    }
    keys
}

async fn collect(mut cur: sop_btree::Cursor, rng: &mut Rng) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    loop {
        // Mix `take` batches, single steps and borrowed single steps.
        if rng.below(3) == 0 {
            match cur.next_ref().await.unwrap() {
                Some((k, v)) => out.push((k.to_vec(), v.to_vec())),
                None => return out,
            }
            continue;
        }
        let n = 1 + rng.below(5) as usize;
        let batch = cur.take(n).await.unwrap();
        let done = batch.len() < n;
        out.extend(batch.into_iter().map(|(k, v)| (k.to_vec(), v.to_vec())));
        if done {
            return out;
        }
    }
}

/// HOLDS. Unique and non-unique stores (slot 4, so many leaves and fence
/// keys), random inserts and removes over escaping-heavy keys, every
/// combination of included / excluded / unbounded bounds, forward and
/// reverse, against a `BTreeMap` model; non-unique duplicates in insertion
/// order (reversed by a reverse scan).
#[tokio::test]
async fn attack_range_bounds_against_a_model() {
    let db = common::memory_db().await;
    let keys = nasty_keys();
    for unique in [true, false] {
        let name = if unique { "u" } else { "d" };
        db.create_store(name, StoreOptions { unique, slot_length: 4, ..StoreOptions::default() })
            .await
            .unwrap();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ u64::from(unique));
        let mut model: BTreeMap<Vec<u8>, Vec<Vec<u8>>> = BTreeMap::new();
        let mut counter = 0u32;
        for round in 0..12 {
            // A batch of writes.
            let mut ops = Vec::new();
            for _ in 0..25 {
                let k = keys[rng.below(keys.len() as u64) as usize].clone();
                counter += 1;
                let remove = rng.below(3) == 0;
                ops.push((k, if remove { None } else { Some(counter.to_be_bytes().to_vec()) }));
            }
            let ops2 = ops.clone();
            db.run_write(move |tx| {
                let ops = ops2.clone();
                async move {
                    let s = tx.bytes_store(name).await?;
                    for (k, v) in ops {
                        match v {
                            Some(v) if unique => s.upsert(&k, &v).await?,
                            Some(v) => s.insert(&k, &v).await?,
                            None => {
                                s.remove(&k).await?;
                            }
                        }
                    }
                    Ok(())
                }
            })
            .await
            .unwrap();
            for (k, v) in ops {
                match v {
                    Some(v) if unique => {
                        model.insert(k, vec![v]);
                    }
                    Some(v) => model.entry(k).or_default().push(v),
                    None => {
                        if let Some(vs) = model.get_mut(&k) {
                            vs.remove(0);
                            if vs.is_empty() {
                                model.remove(&k);
                            }
                        }
                    }
                }
            }
            // Queries.
            let tx = db.begin_read().await.unwrap();
            let s = tx.bytes_store(name).await.unwrap();
            let total: u64 = model.values().map(|v| v.len() as u64).sum();
            assert_eq!(s.count().await.unwrap(), total, "round {round} count");
            for _ in 0..60 {
                let (a, b) = (
                    keys[rng.below(keys.len() as u64) as usize].clone(),
                    keys[rng.below(keys.len() as u64) as usize].clone(),
                );
                let (ka, kb) = (rng.below(3) as u8, rng.below(3) as u8);
                let (lo, hi) = (common::bound(ka, &a), common::bound(kb, &b));
                let mut expected: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
                let empty = match (lo, hi) {
                    (Bound::Included(x) | Bound::Excluded(x), Bound::Included(y) | Bound::Excluded(y)) => {
                        x > y || (x == y && !matches!((lo, hi), (Bound::Included(_), Bound::Included(_))))
                    }
                    _ => false,
                };
                if !empty {
                    let r = (lo.map(<[u8]>::to_vec), hi.map(<[u8]>::to_vec));
                    for (k, vs) in model.range(r) {
                        for v in vs {
                            expected.push((k.clone(), v.clone()));
                        }
                    }
                }
                let fwd = collect(s.range(lo, hi), &mut rng).await;
                assert_eq!(fwd, expected, "{name} forward {lo:?}..{hi:?} round {round}");
                let rev = collect(s.range_rev(lo, hi), &mut rng).await;
                let mut exp_rev = expected.clone();
                exp_rev.reverse();
                assert_eq!(rev, exp_rev, "{name} reverse {lo:?}..{hi:?} round {round}");
                // Point reads and duplicates.
                let got_all: Vec<Vec<u8>> =
                    s.get_all(&a).await.unwrap().into_iter().map(|(_, v)| v.to_vec()).collect();
                assert_eq!(got_all, model.get(&a).cloned().unwrap_or_default(), "{name} get_all {a:?}");
                // Seek inside a forward and a reverse cursor, to a key
                // within the range (out-of-range seeks: see
                // `attack_seek_outside_the_range`).
                let within = |k: &[u8]| {
                    let lo_ok = match lo {
                        Bound::Included(x) => k >= x,
                        Bound::Excluded(x) => k > x,
                        Bound::Unbounded => true,
                    };
                    let hi_ok = match hi {
                        Bound::Included(x) => k <= x,
                        Bound::Excluded(x) => k < x,
                        Bound::Unbounded => true,
                    };
                    lo_ok && hi_ok
                };
                if within(&b) {
                    let mut cur = s.range(lo, hi);
                    cur.seek(&b);
                    let after: Vec<_> = collect(cur, &mut rng).await;
                    let exp_after: Vec<_> =
                        expected.iter().filter(|(k, _)| k.as_slice() >= b.as_slice()).cloned().collect();
                    assert_eq!(after, exp_after, "{name} seek {b:?} in {lo:?}..{hi:?}");
                }
                if within(&a) {
                    let mut cur = s.range_rev(lo, hi);
                    cur.seek(&a);
                    let before: Vec<_> = collect(cur, &mut rng).await;
                    let exp_before: Vec<_> =
                        exp_rev.iter().filter(|(k, _)| k.as_slice() <= a.as_slice()).cloned().collect();
                    assert_eq!(before, exp_before, "{name} reverse seek {a:?} in {lo:?}..{hi:?}");
                }
            }
            tx.commit().await.unwrap();
        }
    }
    common::assert_healthy(&db).await;
}

/// BROKE (fixed). `Cursor::seek` is documented as "the next item is the first at
/// or after `key` ..., within the range", but it replaces the cursor's next
/// batch bound with `key` unclamped: a forward cursor sought below its
/// `lo` returns items below `lo` (scan_forward filters by `from` = the
/// seek key, and only `hi` is the cursor's), a reverse cursor sought above
/// its `hi` returns items above `hi`.
#[tokio::test]
async fn attack_seek_outside_the_range() {
    for unique in [true, false] {
        let db = common::memory_db().await;
        db.create_store("s", StoreOptions { unique, slot_length: 4, ..StoreOptions::default() })
            .await
            .unwrap();
        db.run_write(|tx| async move {
            let s = tx.bytes_store("s").await?;
            for i in 0..20u8 {
                s.insert(&[i], &[i]).await?;
            }
            Ok(())
        })
        .await
        .unwrap();
        let tx = db.begin_read().await.unwrap();
        let s = tx.bytes_store("s").await.unwrap();
        let mut fwd = s.range(Bound::Included(&[5u8][..]), Bound::Excluded(&[10u8][..]));
        fwd.seek(&[2]);
        let fwd_keys: Vec<u8> = fwd.take(100).await.unwrap().iter().map(|(k, _)| k[0]).collect();
        let mut rev = s.range_rev(Bound::Included(&[5u8][..]), Bound::Excluded(&[10u8][..]));
        rev.seek(&[15]);
        let rev_keys: Vec<u8> = rev.take(100).await.unwrap().iter().map(|(k, _)| k[0]).collect();
        assert_eq!(
            (fwd_keys, rev_keys),
            (vec![5, 6, 7, 8, 9], vec![9, 8, 7, 6, 5]),
            "(forward seek below lo, reverse seek above hi), unique={unique}"
        );
    }
}

// ---------------------------------------------------------------------------
// 4. Counts
// ---------------------------------------------------------------------------
