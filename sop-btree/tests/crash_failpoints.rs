//! A crash at each step of the commit protocol leaves the whole
//! transaction or none of it; recovery on reopen finishes or undoes the
//! intent, and the leak check finds no orphan blob and no dangling handle.
#![cfg(feature = "embedded")]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{assert_healthy, small};
use sop_btree::{CommitStep, Config, Database, EmbeddedBlobs, Error};

async fn open(
    dir: &std::path::Path,
    blobs: EmbeddedBlobs,
    crash_at: Option<(CommitStep, Arc<AtomicBool>)>,
) -> Database {
    let mut config = Config::embedded(dir);
    config.embedded_blobs = blobs;
    config.gc_grace = Duration::ZERO;
    if let Some((step, armed)) = crash_at {
        config.failpoint = Some(Arc::new(move |s| {
            if s == step && armed.swap(false, Ordering::SeqCst) {
                Err(Error::Indeterminate(format!("simulated crash at {s:?}")))
            } else {
                Ok(())
            }
        }));
    }
    Database::open(config).await.unwrap()
}

async fn baseline(db: &Database) {
    load(db, 4).await;
}

/// Store `s` with nodes of `slot` entries, holding 50 items.
async fn load(db: &Database, slot: u32) {
    db.create_store("s", small(slot)).await.unwrap();
    db.run_write(|tx| async move {
        let s = tx.store::<u32, String>("s").await?;
        for i in 0..50 {
            s.insert(&i, &format!("v{i}")).await?;
        }
        Ok(())
    })
    .await
    .unwrap();
}

/// The transaction under test: splits (inserts), merges (removes), updates
/// and a value large enough for its own blob.
async fn victim(db: &Database) -> sop_btree::Result<sop_btree::CommitInfo> {
    let tx = db.begin_write().await?;
    let s = tx.store::<u32, String>("s").await?;
    for i in 100..160 {
        s.insert(&i, &format!("new{i}")).await?;
    }
    for i in 0..30 {
        s.remove(&i).await?;
    }
    s.update(&40, &"x".repeat(5000)).await?;
    tx.commit().await
}

async fn state(db: &Database) -> (u64, Option<String>, Option<String>) {
    db.run_read(|tx| async move {
        let s = tx.store::<u32, String>("s").await?;
        Ok((s.count().await?, s.get(&120).await?, s.get(&5).await?))
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_at_every_commit_step_is_all_or_nothing() {
    for blobs in [EmbeddedBlobs::Registry, EmbeddedBlobs::Directory] {
        crash_at_every_step(blobs).await;
    }
}

async fn crash_at_every_step(blobs: EmbeddedBlobs) {
    let steps = [
        CommitStep::IntentWritten,
        CommitStep::BlobsStaged,
        CommitStep::Published,
        CommitStep::ObsoleteDeleted,
    ];
    for step in steps {
        let dir = tempfile::tempdir().unwrap();
        {
            let armed = Arc::new(AtomicBool::new(false));
            let db = open(dir.path(), blobs, Some((step, armed.clone()))).await;
            baseline(&db).await;
            armed.store(true, Ordering::SeqCst);
            let err = victim(&db).await.unwrap_err();
            assert!(err.to_string().contains("simulated crash"), "{step:?}: {err}");
            db.close().await.unwrap();
        }
        let db = open(dir.path(), blobs, None).await;
        let published = matches!(step, CommitStep::Published | CommitStep::ObsoleteDeleted);
        let (count, new, old) = state(&db).await;
        if published {
            assert_eq!((count, new.as_deref(), old), (80, Some("new120"), None), "{step:?}: all of it");
        } else {
            assert_eq!((count, new, old.as_deref()), (50, None, Some("v5")), "{step:?}: none of it");
        }
        assert_healthy(&db).await;
    }
}

/// A commit that makes nothing obsolete (one small update, written as a
/// delta on the leaf's base) needs no intent on the embedded default: its
/// blobs and handles are one write. A crash at any step leaves all of it
/// or none, and the registry holds no intent afterwards, crashed or not
/// (a committed intent would be left by a crash after the publish).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_frees_nothing_leaves_no_intent_at_any_step() {
    use sop_core::Registry;
    let steps = [
        None,
        Some(CommitStep::IntentWritten),
        Some(CommitStep::BlobsStaged),
        Some(CommitStep::Published),
        Some(CommitStep::ObsoleteDeleted),
    ];
    for step in steps {
        let dir = tempfile::tempdir().unwrap();
        {
            let armed = Arc::new(AtomicBool::new(false));
            let db = open(dir.path(), EmbeddedBlobs::Registry, step.map(|s| (s, armed.clone()))).await;
            // One leaf of 50 items: a one-item change is a delta on it.
            load(&db, 64).await;
            armed.store(true, Ordering::SeqCst);
            let outcome = async {
                let tx = db.begin_write().await?;
                tx.store::<u32, String>("s").await?.update(&40, &"small".to_owned()).await?;
                tx.commit().await
            }
            .await;
            // ObsoleteDeleted is never reached: there is nothing to delete.
            let crashed = matches!(
                step,
                Some(CommitStep::IntentWritten | CommitStep::BlobsStaged | CommitStep::Published)
            );
            assert_eq!(outcome.is_err(), crashed, "{step:?}: {outcome:?}");
            db.close().await.unwrap();
        }
        {
            let registry = sop_backends::RocksRegistry::open(
                dir.path().join("registry"),
                &sop_backends::RocksConfig::default(),
            )
            .unwrap();
            let left = registry.list_intents(u64::MAX).await.unwrap();
            assert!(left.is_empty(), "{step:?}: intents left: {left:?}");
        }
        let db = open(dir.path(), EmbeddedBlobs::Registry, None).await;
        let published = !matches!(step, Some(CommitStep::IntentWritten | CommitStep::BlobsStaged));
        let value = db
            .run_read(|tx| async move { tx.store::<u32, String>("s").await?.get(&40).await })
            .await
            .unwrap();
        let expected = if published { "small" } else { "v40" };
        assert_eq!(value.as_deref(), Some(expected), "{step:?}");
        assert_healthy(&db).await;
    }
}
