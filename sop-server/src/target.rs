//! [`Target`]: what the data commands act on — a database opened in this
//! process, or a server through its HTTP API. Both store keys as UTF-8
//! bytes and values as JSON text, so data written one way reads the other.

use serde_json::Value;
use sop_btree::{Database, MAX_KEY_LEN, MAX_VALUE_LEN};

use crate::client::{CallError, Client};
use crate::wire::{BatchResult, Item, ItemsPage, Op, OpKind, StoreEntry, StoreOptionsJson};

/// A local database or a server.
#[derive(Debug)]
pub(crate) enum Target {
    /// Opened in this process.
    Local(Database),
    /// Reached over HTTP.
    Remote(Client),
}

fn remote(e: CallError) -> String {
    e.to_string()
}

fn local(e: sop_btree::Error) -> String {
    e.to_string()
}

/// Rejects a key or value the engine would refuse, with a clear message.
pub(crate) fn check_item(key: &str, value: &[u8]) -> Result<(), String> {
    if key.len() > MAX_KEY_LEN {
        return Err(format!("key of {} bytes exceeds the limit of {MAX_KEY_LEN}", key.len()));
    }
    if value.len() > MAX_VALUE_LEN {
        return Err(format!("value of {} bytes exceeds the limit of {MAX_VALUE_LEN}", value.len()));
    }
    Ok(())
}

fn json_bytes(v: &Value) -> Result<Vec<u8>, String> {
    serde_json::to_vec(v).map_err(|e| e.to_string())
}

impl Target {
    /// Every store.
    pub(crate) async fn stores(&self) -> Result<Vec<StoreEntry>, String> {
        match self {
            Self::Local(db) => Ok(db
                .list_stores()
                .await
                .map_err(local)?
                .into_iter()
                .map(|i| StoreEntry {
                    name: i.name,
                    count: i.count,
                    options: StoreOptionsJson::from_options(&i.options),
                })
                .collect()),
            Self::Remote(c) => c.stores().await.map_err(remote),
        }
    }

    /// Creates a store.
    pub(crate) async fn create_store(&self, name: &str, opts: &StoreOptionsJson) -> Result<(), String> {
        match self {
            Self::Local(db) => db.create_store(name, opts.to_options()).await.map(drop).map_err(local),
            Self::Remote(c) => c.create_store(name, opts).await.map_err(remote),
        }
    }

    /// Whether store `name` exists.
    pub(crate) async fn has_store(&self, name: &str) -> Result<bool, String> {
        Ok(self.stores().await?.iter().any(|s| s.name == name))
    }

    /// Removes a store.
    pub(crate) async fn drop_store(&self, name: &str) -> Result<(), String> {
        match self {
            Self::Local(db) => db.remove_store(name).await.map_err(local),
            Self::Remote(c) => c.drop_store(name).await.map_err(remote),
        }
    }

    /// One item's value.
    pub(crate) async fn get(&self, store: &str, key: &str) -> Result<Option<Value>, String> {
        check_item(key, &[])?;
        match self {
            Self::Local(db) => {
                let got = db
                    .run_read(|tx| async move { tx.bytes_store(store).await?.get(key.as_bytes()).await })
                    .await
                    .map_err(local)?;
                got.map(|v| crate::page::decode_value(key, &v).map_err(|e| e.to_string())).transpose()
            }
            Self::Remote(c) => {
                let op = Op { op: OpKind::Get, store: store.into(), key: key.into(), value: None };
                let mut r = c.batch(vec![op]).await.map_err(remote)?;
                match r.pop() {
                    Some(Some(BatchResult::Got(item))) => Ok(Some(item.value)),
                    _ => Ok(None),
                }
            }
        }
    }

    /// Puts items in one transaction (retried on conflict).
    pub(crate) async fn put_many(&self, store: &str, items: &[Item]) -> Result<(), String> {
        let mut encoded = Vec::with_capacity(items.len());
        for i in items {
            let v = json_bytes(&i.value)?;
            check_item(&i.key, &v)?;
            encoded.push((i.key.as_bytes(), v));
        }
        match self {
            Self::Local(db) => {
                let encoded = &encoded;
                db.run_write(|tx| async move {
                    let st = tx.bytes_store(store).await?;
                    for (k, v) in encoded {
                        st.upsert(k, v).await?;
                    }
                    Ok(())
                })
                .await
                .map_err(local)
            }
            Self::Remote(c) => {
                let ops = items
                    .iter()
                    .map(|i| Op {
                        op: OpKind::Put,
                        store: store.into(),
                        key: i.key.clone(),
                        value: Some(i.value.clone()),
                    })
                    .collect();
                c.batch(ops).await.map(drop).map_err(remote)
            }
        }
    }

    /// Deletes one item; `false` when it was absent.
    pub(crate) async fn del(&self, store: &str, key: &str) -> Result<bool, String> {
        check_item(key, &[])?;
        match self {
            Self::Local(db) => db
                .run_write(|tx| async move { tx.bytes_store(store).await?.remove(key.as_bytes()).await })
                .await
                .map_err(local),
            Self::Remote(c) => {
                // A get and a delete in one transaction tell absent from removed.
                let get = Op { op: OpKind::Get, store: store.into(), key: key.into(), value: None };
                let del = Op { op: OpKind::Delete, store: store.into(), key: key.into(), value: None };
                let r = c.batch(vec![get, del]).await.map_err(remote)?;
                Ok(r.first().is_some_and(Option::is_some))
            }
        }
    }

    /// One page of a range read (its own read transaction).
    pub(crate) async fn page(
        &self,
        store: &str,
        from: Option<&str>,
        to: Option<&str>,
        limit: usize,
        reverse: bool,
    ) -> Result<ItemsPage, String> {
        match self {
            Self::Local(db) => db
                .run_read(|tx| async move {
                    let st = tx.bytes_store(store).await?;
                    crate::page::read(&st, from, to, limit, reverse).await
                })
                .await
                .map_err(local)?
                .map_err(|e| e.to_string()),
            Self::Remote(c) => c.page(store, from, to, limit, reverse).await.map_err(remote),
        }
    }

    /// Finishes background work (local databases).
    pub(crate) async fn close(&self) -> Result<(), String> {
        match self {
            Self::Local(db) => db.close().await.map_err(local),
            Self::Remote(_) => Ok(()),
        }
    }
}
