//! `sop`: the SOP-rs command-line tool.
//!
//! Until the engine and the server land, `sop` runs a quick-start over the
//! embedded default layers: it opens a RocksDB registry and a local blob
//! directory under `--data DIR` (default `./sop-data`), writes a node blob,
//! publishes its handle, reads it back through the node cache, and prints
//! what it did. Run it twice: the second run finds the first run's data.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use sop_cache::{CacheConfig, NodeCache};
use sop_core::{
    BlobStore, Handle, HandleWrite, Item, LogicalId, Node, PhysicalId, PublishRequest, Registry, RegistryExt,
    StoreInfo, StoreOptions, TxId, Value,
};
use sop_registry::{RocksConfig, RocksRegistry};
use sop_store::ObjectBlobStore;

const STORE: &str = "quickstart";

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let data = match parse_data_dir(&args) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("sop: {e}");
            eprintln!("usage: sop [--data DIR]");
            return ExitCode::from(2);
        }
    };
    match quickstart(data).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sop: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_data_dir(args: &[String]) -> Result<PathBuf, String> {
    match args {
        [] => Ok(PathBuf::from("./sop-data")),
        [flag, dir] if flag == "--data" => Ok(PathBuf::from(dir)),
        [flag] if flag == "--help" || flag == "-h" => Err("prints this help".into()),
        other => Err(format!("unexpected arguments {other:?}")),
    }
}

async fn quickstart(data: PathBuf) -> sop_core::Result<()> {
    let registry = RocksRegistry::open(data.join("registry"), &RocksConfig::default())?;
    let blobs: Arc<dyn BlobStore> = Arc::new(ObjectBlobStore::local(data.join("blobs"), true)?);
    let cache = NodeCache::new(&CacheConfig::default()).await?;
    println!("opened {} (registry: RocksDB, blobs: local directory)", data.display());

    let info = match registry.get_store(STORE).await? {
        Some(info) => info,
        None => create_store(&registry, &blobs).await?,
    };
    let root =
        registry.get_handle(info.root).await?.ok_or_else(|| sop_core::Error::NotFound("root".into()))?;
    let node = cache.node(root.physical_id, &blobs).await?;
    let runs = match node.as_ref() {
        Node::Leaf { items } => items.len(),
        Node::Internal { .. } => 0,
    };
    println!("store {STORE:?}: root {} at version {}, {runs} earlier run(s)", root.logical_id, root.version);

    // Append one item for this run: write a new blob, then publish it.
    let mut items = match node.as_ref() {
        Node::Leaf { items } => items.clone(),
        Node::Internal { .. } => Vec::new(),
    };
    let tx = TxId::new();
    let key = format!("run-{:04}", runs + 1);
    items.push(Item { key: key.clone().into(), version: tx, value: Value::Inline(tx.to_string().into()) });
    let new_blob = PhysicalId::new();
    blobs.put(new_blob, Node::Leaf { items }.encode().into()).await?;
    let write = HandleWrite::Update { id: root.logical_id, expected: root.version, physical_id: new_blob };
    let req = PublishRequest {
        tx_id: tx,
        writes: vec![write],
        count_deltas: vec![(STORE.into(), 1)],
        ..Default::default()
    };
    registry.publish(&req).await?;
    blobs.delete(root.physical_id).await?;
    let count = registry.get_store(STORE).await?.map_or(0, |s| s.count);
    println!("committed {key:?} in transaction {tx}; the store now counts {count} item(s)");
    Ok(())
}

async fn create_store(registry: &RocksRegistry, blobs: &Arc<dyn BlobStore>) -> sop_core::Result<StoreInfo> {
    let root_blob = PhysicalId::new();
    blobs.put(root_blob, Node::empty_leaf().encode().into()).await?;
    let root = Handle::new(LogicalId::new(), root_blob);
    let info = StoreInfo::new(STORE, StoreOptions::default(), root.logical_id)?;
    registry.create_store(&info, &root).await?;
    println!("created store {STORE:?}");
    Ok(info)
}
