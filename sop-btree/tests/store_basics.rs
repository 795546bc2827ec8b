//! Store lifecycle and the single-transaction API: CRUD, cursors, limits,
//! duplicates, large values, on memory and on the embedded default.

mod common;

use std::ops::Bound;

use common::{assert_healthy, memory_db, small};
#[cfg(feature = "embedded")]
use sop_btree::EmbeddedBlobs;
use sop_btree::{Database, ErrorKind, StoreOptions};

async fn crud_and_cursors(db: &Database) {
    db.create_store("s", small(4)).await.unwrap();
    let tx = db.begin_write().await.unwrap();
    let s = tx.bytes_store("s").await.unwrap();
    for i in 0..100u32 {
        s.insert(format!("k{i:03}").as_bytes(), &i.to_le_bytes()).await.unwrap();
    }
    assert_eq!(s.insert(b"k005", b"x").await.unwrap_err().kind(), ErrorKind::AlreadyExists);
    s.update(b"k005", b"five").await.unwrap();
    assert_eq!(s.update(b"zzz", b"x").await.unwrap_err().kind(), ErrorKind::NotFound);
    s.upsert(b"k200", b"new").await.unwrap();
    assert!(s.remove(b"k010").await.unwrap());
    assert!(!s.remove(b"k010").await.unwrap());
    assert_eq!(s.count().await.unwrap(), 100);
    tx.commit().await.unwrap();

    let tx = db.begin_read().await.unwrap();
    let s = tx.bytes_store("s").await.unwrap();
    assert_eq!(s.get(b"k005").await.unwrap().as_deref(), Some(&b"five"[..]));
    assert!(s.get(b"k010").await.unwrap().is_none());
    assert_eq!(s.first().await.unwrap().unwrap().0.as_ref(), b"k000");
    assert_eq!(s.last().await.unwrap().unwrap().0.as_ref(), b"k200");
    let mid = s.range(Bound::Included(b"k020"), Bound::Excluded(b"k030")).take(100).await.unwrap();
    let keys: Vec<String> = mid.iter().map(|(k, _)| String::from_utf8(k.to_vec()).unwrap()).collect();
    assert_eq!(keys, (20..30).map(|i| format!("k{i:03}")).collect::<Vec<_>>());
    let rev = s.range_rev(Bound::Excluded(b"k090"), Bound::Unbounded).take(100).await.unwrap();
    let keys: Vec<&[u8]> = rev.iter().map(|(k, _)| k.as_ref()).collect();
    assert_eq!(
        keys,
        vec![&b"k200"[..], b"k099", b"k098", b"k097", b"k096", b"k095", b"k094", b"k093", b"k092", b"k091"]
    );
    let mut cur = s.range(Bound::Unbounded, Bound::Unbounded);
    cur.seek(b"k0505");
    assert_eq!(cur.next().await.unwrap().unwrap().0.as_ref(), b"k051");
    tx.commit().await.unwrap();
    assert_eq!(db.store_info("s").await.unwrap().count, 100);
    assert_healthy(db).await;
}

#[tokio::test]
async fn crud_and_cursors_in_memory() {
    crud_and_cursors(&memory_db().await).await;
}

#[cfg(feature = "embedded")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crud_and_cursors_embedded_and_durable_across_reopen() {
    for blobs in [EmbeddedBlobs::Registry, EmbeddedBlobs::Directory] {
        embedded_round_trip(blobs).await;
    }
}

#[cfg(feature = "embedded")]
async fn embedded_round_trip(blobs: EmbeddedBlobs) {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = common::embedded_db_with(dir.path(), blobs).await;
        crud_and_cursors(&db).await;
        db.close().await.unwrap();
    }
    let db = common::embedded_db_with(dir.path(), blobs).await;
    let tx = db.begin_read().await.unwrap();
    let s = tx.bytes_store("s").await.unwrap();
    assert_eq!(s.count().await.unwrap(), 100);
    assert_eq!(s.get(b"k200").await.unwrap().as_deref(), Some(&b"new"[..]));
    assert_healthy(&db).await;
}

#[tokio::test]
async fn store_lifecycle_and_errors() {
    let db = memory_db().await;
    let opts = StoreOptions { slot_length: 16, unique: false, value_in_node_threshold: 8 };
    db.create_store("b", opts).await.unwrap();
    db.create_store("a", StoreOptions::default()).await.unwrap();
    assert_eq!(
        db.create_store("a", StoreOptions::default()).await.unwrap_err().kind(),
        ErrorKind::AlreadyExists
    );
    let bad = StoreOptions { slot_length: 3, ..Default::default() };
    assert_eq!(db.create_store("c", bad).await.unwrap_err().kind(), ErrorKind::InvalidInput);
    let names: Vec<String> = db.list_stores().await.unwrap().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(db.store_info("b").await.unwrap().options, opts);

    let tx = db.begin_write().await.unwrap();
    assert_eq!(tx.bytes_store("nope").await.unwrap_err().kind(), ErrorKind::NotFound);
    let a = tx.bytes_store("a").await.unwrap();
    let big_key = vec![1u8; sop_btree::MAX_KEY_LEN + 1];
    assert_eq!(a.insert(&big_key, b"v").await.unwrap_err().kind(), ErrorKind::InvalidInput);
    tx.commit().await.unwrap();

    let ro = db.begin_read().await.unwrap();
    let a = ro.bytes_store("a").await.unwrap();
    assert_eq!(a.insert(b"k", b"v").await.unwrap_err().kind(), ErrorKind::InvalidInput, "read-only");
    ro.commit().await.unwrap();
    assert_eq!(a.get(b"k").await.unwrap_err().kind(), ErrorKind::Closed, "transaction over");

    // Duplicates in insertion order, large values in their own blobs.
    let tx = db.begin_write().await.unwrap();
    let b = tx.bytes_store("b").await.unwrap();
    for v in ["first value, long enough for a blob", "second", "third value also long"] {
        b.insert(b"dup", v.as_bytes()).await.unwrap();
    }
    b.insert(b"du", b"x").await.unwrap();
    b.insert(b"dupe", b"y").await.unwrap();
    tx.commit().await.unwrap();
    let tx = db.begin_write().await.unwrap();
    let b = tx.bytes_store("b").await.unwrap();
    let all = b.get_all(b"dup").await.unwrap();
    let values: Vec<&[u8]> = all.iter().map(|(_, v)| v.as_ref()).collect();
    assert_eq!(values, [&b"first value, long enough for a blob"[..], b"second", b"third value also long"]);
    assert_eq!(b.get(b"dup").await.unwrap().unwrap().as_ref(), b"first value, long enough for a blob");
    assert!(b.remove_item(b"dup", all[1].0).await.unwrap());
    let keys: Vec<_> = b.range(Bound::Unbounded, Bound::Unbounded).take(10).await.unwrap();
    let keys: Vec<&[u8]> = keys.iter().map(|(k, _)| k.as_ref()).collect();
    assert_eq!(keys, [&b"du"[..], b"dup", b"dup", b"dupe"]);
    assert_eq!(b.count().await.unwrap(), 4);
    tx.commit().await.unwrap();
    assert_healthy(&db).await;

    db.remove_store("b").await.unwrap();
    assert_eq!(db.remove_store("b").await.unwrap_err().kind(), ErrorKind::NotFound);
    assert_healthy(&db).await;
}

#[tokio::test]
async fn typed_stores_keep_natural_order() {
    let db = memory_db().await;
    db.create_store("t", small(5)).await.unwrap();
    db.run_write(|tx| async move {
        let t = tx.store::<(String, i64), Vec<u32>>("t").await?;
        for (i, name) in ["bob", "al", "carol"].iter().enumerate() {
            for n in [-5i64, 3, -1] {
                t.insert(&((*name).to_owned(), n), &vec![i as u32; 3]).await?;
            }
        }
        Ok(())
    })
    .await
    .unwrap();
    let tx = db.begin_read().await.unwrap();
    let t = tx.store::<(String, i64), Vec<u32>>("t").await.unwrap();
    let all = t.range(.., false, 100).await.unwrap();
    let keys: Vec<(String, i64)> = all.iter().map(|(k, _)| k.clone()).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    assert_eq!(keys.first().unwrap(), &("al".to_owned(), -5));
    let bobs = t.range(("bob".to_owned(), i64::MIN)..("bob".to_owned(), i64::MAX), true, 10).await.unwrap();
    assert_eq!(bobs.iter().map(|(k, _)| k.1).collect::<Vec<_>>(), vec![3, -1, -5]);
    assert_eq!(t.get(&("carol".into(), 3)).await.unwrap(), Some(vec![2, 2, 2]));
}

/// `Cursor::next_ref` hands out what `Cursor::next` does, in both
/// directions, for inline values and values in blobs of their own, in
/// unique and non-unique stores (whose stored keys are escaped); it fails
/// once the transaction is over, even inside a leaf already read.
#[tokio::test]
async fn borrowed_cursor_steps_match_owned_ones() {
    let db = memory_db().await;
    for unique in [true, false] {
        let name = if unique { "u" } else { "d" };
        let opts = StoreOptions { unique, slot_length: 4, value_in_node_threshold: 8 };
        db.create_store(name, opts).await.unwrap();
        let tx = db.begin_write().await.unwrap();
        let s = tx.bytes_store(name).await.unwrap();
        for i in 0..40u32 {
            // Every third value is over the threshold: a blob of its own.
            let v = if i % 3 == 0 { vec![i as u8; 100] } else { i.to_be_bytes().to_vec() };
            s.insert(&[0, i as u8, 0xff], &v).await.unwrap();
        }
        tx.commit().await.unwrap();

        let tx = db.begin_read().await.unwrap();
        let s = tx.bytes_store(name).await.unwrap();
        for reverse in [false, true] {
            let cursor = || match reverse {
                false => s.range(Bound::Unbounded, Bound::Unbounded),
                true => s.range_rev(Bound::Unbounded, Bound::Unbounded),
            };
            let owned = cursor().take(usize::MAX).await.unwrap();
            assert_eq!(owned.len(), 40, "{name} reverse={reverse}");
            let mut borrowed = Vec::new();
            let mut cur = cursor();
            while let Some((k, v)) = cur.next_ref().await.unwrap() {
                borrowed.push((k.to_vec(), v.to_vec()));
            }
            let owned: Vec<(Vec<u8>, Vec<u8>)> =
                owned.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
            assert_eq!(borrowed, owned, "{name} reverse={reverse}");
            assert!(borrowed.iter().any(|(_, v)| v.len() == 100), "blob values were read");
        }
        let mut cur = s.range(Bound::Unbounded, Bound::Unbounded);
        assert!(cur.next_ref().await.unwrap().is_some());
        tx.commit().await.unwrap();
        assert_eq!(cur.next_ref().await.unwrap_err().kind(), ErrorKind::Closed, "{name}");
    }
}
