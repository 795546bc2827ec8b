//! The blob store conformance suite.

use bytes::Bytes;

use crate::{BlobStore, ErrorKind, PhysicalId};

/// Runs every blob store test.
pub async fn run_blob_store_suite(store: &dyn BlobStore) {
    put_get_delete(store).await;
    never_overwrites(store).await;
    batches(store).await;
    allocated_blobs(store).await;
}

/// Put then get returns the bytes; missing ids are `NotFound`; delete is
/// idempotent.
pub async fn put_get_delete(store: &dyn BlobStore) {
    let id = PhysicalId::new();
    let data = Bytes::from((0..=255u8).cycle().take(70_000).collect::<Vec<u8>>());
    store.put(id, data.clone()).await.expect("put");
    assert_eq!(store.get(id).await.expect("get"), data);
    assert!(store.list().await.expect("list").contains(&id));
    store.delete(id).await.expect("delete");
    assert_eq!(store.get(id).await.unwrap_err().kind(), ErrorKind::NotFound);
    store.delete(id).await.expect("deleting an absent blob is fine");
    assert_eq!(store.get(PhysicalId::new()).await.unwrap_err().kind(), ErrorKind::NotFound);
    let empty = PhysicalId::new();
    store.put(empty, Bytes::new()).await.expect("empty blob");
    assert!(store.get(empty).await.expect("get empty").is_empty());
    store.delete(empty).await.expect("delete");
}

/// A second put of an id fails with `AlreadyExists` and keeps the first.
pub async fn never_overwrites(store: &dyn BlobStore) {
    let id = PhysicalId::new();
    store.put(id, Bytes::from_static(b"first")).await.expect("put");
    let err = store.put(id, Bytes::from_static(b"second")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    assert_eq!(store.get(id).await.expect("get"), Bytes::from_static(b"first"));
    store.delete(id).await.expect("delete");
    // In a batch too: the existing blob keeps its bytes.
    let id = PhysicalId::new();
    store.put(id, Bytes::from_static(b"first")).await.expect("put");
    let other = PhysicalId::new();
    let batch = vec![(other, Bytes::from_static(b"other")), (id, Bytes::from_static(b"second"))];
    let err = store.put_many(batch).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    assert_eq!(store.get(id).await.expect("get"), Bytes::from_static(b"first"));
    // A failed batch may have stored some of its other blobs (the caller's
    // intent names them): clean up either way.
    store.delete_many(&[id, other]).await.expect("delete");
}

/// Batch put and delete of many blobs.
pub async fn batches(store: &dyn BlobStore) {
    let blobs: Vec<(PhysicalId, Bytes)> =
        (0..100u32).map(|i| (PhysicalId::new(), Bytes::from(i.to_le_bytes().to_vec()))).collect();
    store.put_many(blobs.clone()).await.expect("put_many");
    for (id, data) in &blobs {
        assert_eq!(&store.get(*id).await.expect("get"), data);
    }
    let mut ids: Vec<PhysicalId> = blobs.iter().map(|b| b.0).collect();
    ids.push(PhysicalId::new()); // absent: skipped
    store.delete_many(&ids).await.expect("delete_many");
    for id in &ids {
        assert_eq!(store.get(*id).await.unwrap_err().kind(), ErrorKind::NotFound);
    }
}

/// Blobs under ids from [`BlobStore::allocate`], put together: each reads
/// back; a deleted one reads back its own bytes or `NotFound`, never
/// another's, and leaves the listing; after deleting all and
/// [`BlobStore::reclaim`], none is found.
pub async fn allocated_blobs(store: &dyn BlobStore) {
    let lens = [3usize, 70_000, 1, 500, 0];
    let ids = store.allocate(&lens);
    assert_eq!(ids.len(), lens.len());
    let distinct: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "allocated ids are distinct");
    let blobs: Vec<(PhysicalId, Bytes)> = ids
        .iter()
        .zip(lens)
        .enumerate()
        .map(|(i, (id, len))| (*id, Bytes::from(vec![i as u8 + 1; len])))
        .collect();
    store.put_many(blobs.clone()).await.expect("put_many");
    for (id, data) in &blobs {
        assert_eq!(&store.get(*id).await.expect("get"), data);
    }
    let listed = store.list().await.expect("list");
    assert!(ids.iter().all(|id| listed.contains(id)), "every blob is listed");
    store.delete_many(&ids[..2]).await.expect("delete_many");
    for (id, data) in &blobs[..2] {
        match store.get(*id).await {
            Ok(got) => assert_eq!(&got, data, "a deleted blob reads back only its own bytes"),
            Err(e) => assert_eq!(e.kind(), ErrorKind::NotFound, "{e}"),
        }
    }
    let listed = store.list().await.expect("list");
    assert!(!listed.contains(&ids[0]) && !listed.contains(&ids[1]), "deleted blobs are not listed");
    assert!(ids[2..].iter().all(|id| listed.contains(id)), "live blobs stay listed");
    for (id, data) in &blobs[2..] {
        assert_eq!(&store.get(*id).await.expect("get"), data);
    }
    store.delete_many(&ids[2..]).await.expect("delete_many");
    store.reclaim().await.expect("reclaim");
    for id in &ids {
        assert_eq!(store.get(*id).await.unwrap_err().kind(), ErrorKind::NotFound);
    }
    let listed = store.list().await.expect("list");
    assert!(ids.iter().all(|id| !listed.contains(id)));
}
