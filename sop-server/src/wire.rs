//! The JSON bodies of the HTTP API, shared by the server and the client.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sop_btree::StoreOptions;

/// `{"status":"ok"}`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Health {
    pub(crate) status: String,
}

/// A store's options as JSON. Every field is optional in requests.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct StoreOptionsJson {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) slot_length: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) unique: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) value_in_node_threshold: Option<u32>,
}

impl StoreOptionsJson {
    /// The engine options: defaults where a field is absent.
    pub(crate) fn to_options(&self) -> StoreOptions {
        let mut o = StoreOptions::default();
        if let Some(n) = self.slot_length {
            o.slot_length = n;
        }
        if let Some(u) = self.unique {
            o.unique = u;
        }
        if let Some(t) = self.value_in_node_threshold {
            o.value_in_node_threshold = t;
        }
        o
    }

    /// Every field of `o`.
    pub(crate) fn from_options(o: &StoreOptions) -> Self {
        Self {
            slot_length: Some(o.slot_length),
            unique: Some(o.unique),
            value_in_node_threshold: Some(o.value_in_node_threshold),
        }
    }
}

/// One entry of `GET /v1/stores`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct StoreEntry {
    pub(crate) name: String,
    pub(crate) count: u64,
    pub(crate) options: StoreOptionsJson,
}

/// `GET /v1/stores`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct StoreList {
    pub(crate) stores: Vec<StoreEntry>,
}

/// Transaction mode.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Mode {
    /// Reads and writes.
    #[default]
    Write,
    /// Reads only.
    Read,
}

/// `POST /v1/tx` body.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BeginTx {
    #[serde(default)]
    pub(crate) mode: Mode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) timeout_ms: Option<u64>,
}

/// `POST /v1/tx` response.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct TxCreated {
    pub(crate) tx: String,
}

/// One item.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct Item {
    pub(crate) key: String,
    pub(crate) value: Value,
}

/// A page of a range read.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ItemsPage {
    pub(crate) items: Vec<Item>,
    /// Forward: the first key not returned (pass it as `from`); reverse:
    /// the last key returned (pass it as `to`). `null` at the end.
    pub(crate) next: Option<String>,
}

/// `POST /v1/tx/{tx}/commit` response.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Committed {
    pub(crate) committed: bool,
}

/// One operation of a batch.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct Op {
    pub(crate) op: OpKind,
    pub(crate) store: String,
    pub(crate) key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) value: Option<Value>,
}

/// What a batch operation does.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum OpKind {
    /// Read the key.
    Get,
    /// Upsert the key.
    Put,
    /// Remove the key (absent is fine).
    Delete,
}

/// `POST /v1/batch` body.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Batch {
    pub(crate) ops: Vec<Op>,
}

/// `POST /v1/batch` response: per op, `{"key","value"}` or `null` for a
/// get, `{"ok":true}` for a put or delete.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct BatchResults {
    pub(crate) results: Vec<Value>,
}

/// Every error body.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ErrorBody {
    pub(crate) error: String,
    pub(crate) message: String,
}
