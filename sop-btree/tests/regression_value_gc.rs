//! Regression (issue 11, item 5): values above `value_in_node_threshold`
//! live in blobs of their own, which clean-up deleted after `gc_grace`
//! (or at once on `flush_gc`) while a transaction that had loaded the
//! leaf before could still read them: it got `NotFound` for a key that
//! existed. Deletion now waits until every transaction of the process
//! that began before the publish has ended (a low-water mark), for nodes
//! and values alike, and a flush never skips that wait.

mod common;

use std::time::Duration;

use sop_btree::{Config, Database, StoreOptions};

async fn db_with_grace(grace: Duration) -> Database {
    let mut config = Config::memory();
    config.gc_grace = grace;
    Database::open(config).await.unwrap()
}

fn big(n: u8) -> Vec<u8> {
    vec![n; 4000]
}

async fn setup(db: &Database) {
    let opts = StoreOptions { value_in_node_threshold: 64, ..StoreOptions::default() };
    db.create_store("s", opts).await.unwrap();
    db.run_write(|tx| async move {
        let s = tx.bytes_store("s").await?;
        s.insert(b"big", &big(1)).await?;
        s.insert(b"small", b"x").await
    })
    .await
    .unwrap();
}

async fn replace_and_collect(db: &Database, remove: bool) {
    db.run_write(move |tx| async move {
        let s = tx.bytes_store("s").await?;
        if remove { s.remove(b"big").await.map(|_| ()) } else { s.upsert(b"big", &big(2)).await }
    })
    .await
    .unwrap();
    // A flush must not wait for the live reader, nor delete what it may read.
    tokio::time::timeout(Duration::from_secs(10), db.flush_gc()).await.expect("flush_gc hangs").unwrap();
}

#[tokio::test]
async fn a_live_reader_still_reads_a_replaced_value_after_a_flush() {
    for remove in [false, true] {
        let db = db_with_grace(Duration::ZERO).await;
        setup(&db).await;
        let reader = db.begin_read().await.unwrap();
        let s = reader.bytes_store("s").await.unwrap();
        assert_eq!(s.get(b"small").await.unwrap().as_deref(), Some(&b"x"[..])); // loads the leaf
        replace_and_collect(&db, remove).await;
        let got = s.get(b"big").await.unwrap();
        assert_eq!(got.as_deref(), Some(&big(1)[..]), "remove={remove}");
        // The reader saw the old state: its commit conflicts, never lies.
        assert!(reader.commit().await.unwrap_err().is_conflict());
        // Once it ended, the old blob goes.
        db.flush_gc().await.unwrap();
        common::assert_healthy(&db).await;
    }
}

#[tokio::test]
async fn a_live_reader_outlasts_the_grace_period() {
    let db = db_with_grace(Duration::from_millis(20)).await;
    setup(&db).await;
    let reader = db.begin_read().await.unwrap();
    let s = reader.bytes_store("s").await.unwrap();
    s.get(b"small").await.unwrap();
    replace_and_collect(&db, false).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(s.get(b"big").await.unwrap().as_deref(), Some(&big(1)[..]));
    drop((s, reader));
    db.flush_gc().await.unwrap();
    common::assert_healthy(&db).await;
    let blobs_before = db.check().await.unwrap().blobs;
    assert!(blobs_before <= 2, "old blobs were never collected: {blobs_before}");
}

#[tokio::test]
async fn a_forgotten_transaction_holds_back_collection_only_until_past_its_deadline() {
    let mut config = Config::memory();
    config.gc_grace = Duration::ZERO;
    config.tx_timeout = Duration::from_millis(200);
    let db = Database::open(config).await.unwrap();
    setup(&db).await;
    let forgotten = db.begin_read().await.unwrap();
    let s = forgotten.bytes_store("s").await.unwrap();
    s.get(b"small").await.unwrap();
    let before = db.check().await.unwrap().blobs;
    replace_and_collect(&db, false).await;
    assert!(db.check().await.unwrap().blobs > before, "the old value blob is kept for the reader");
    // Its deadline (200 ms) and margin (200 ms) pass; the periodic task
    // (every second here) stops counting it and the deletion runs.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while db.check().await.unwrap().blobs > before {
        assert!(tokio::time::Instant::now() < deadline, "a forgotten reader held back GC for ever");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The forgotten reader itself reads nothing more: a timeout, never a lie.
    assert_eq!(s.get(b"big").await.unwrap_err().kind(), sop_btree::ErrorKind::Timeout);
    common::assert_healthy(&db).await;
    drop((s, forgotten));
}
