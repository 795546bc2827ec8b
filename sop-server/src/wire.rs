//! The JSON bodies of the HTTP API, shared by the server and the client.
//! Their OpenAPI schemas are derived here; limits come from the engine's
//! constants through `crate::schema`.
//!
//! In requests, a `null` optional field means the same as an absent one
//! (the schemas say so with `"type": [.., "null"]`).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use sop_btree::StoreOptions;
use utoipa::ToSchema;

use crate::schema;

/// `{"status":"ok"}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct Health {
    #[schema(schema_with = schema::health_status)]
    pub(crate) status: String,
}

/// A store's options. Every field is optional in requests (absent or
/// `null`: the default); answers give every field.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = StoreOptions)]
pub(crate) struct StoreOptionsJson {
    /// Items per leaf and children per internal node, at most.
    #[serde(default, deserialize_with = "integer", skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = schema::slot_length)]
    pub(crate) slot_length: Option<u32>,
    /// Whether keys are unique (`false` keeps duplicates in insertion order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = schema::unique)]
    pub(crate) unique: Option<bool>,
    /// Values longer than this many bytes get a blob of their own.
    #[serde(default, deserialize_with = "integer", skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = schema::value_in_node_threshold)]
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

/// One store: its name, committed item count and options.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[schema(as = Store)]
pub(crate) struct StoreEntry {
    #[schema(schema_with = schema::store_name)]
    pub(crate) name: String,
    pub(crate) count: u64,
    pub(crate) options: StoreOptionsJson,
}

/// `GET /v1/stores`: every store, sorted by name.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct StoreList {
    pub(crate) stores: Vec<StoreEntry>,
}

/// Transaction mode.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Mode {
    /// Reads and writes.
    #[default]
    Write,
    /// Reads only.
    Read,
}

/// `POST /v1/tx` body (the body is optional: absent, it is `{}`).
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BeginTx {
    #[serde(default)]
    #[schema(default = "write")]
    pub(crate) mode: Mode,
    /// Milliseconds from now until the server rolls the transaction back
    /// (absent or `null`: the server's default).
    #[serde(default, deserialize_with = "integer", skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = schema::timeout_ms)]
    pub(crate) timeout_ms: Option<u64>,
}

/// `POST /v1/tx` response.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct TxCreated {
    /// The transaction's id, for the `{tx}` of later requests.
    pub(crate) tx: String,
}

/// One item.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Item {
    #[schema(schema_with = schema::key)]
    pub(crate) key: String,
    /// Any JSON value.
    #[schema(schema_with = schema::any_value)]
    pub(crate) value: Value,
}

/// A page of a range read.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct ItemsPage {
    pub(crate) items: Vec<Item>,
    /// Forward: the first key not returned (pass it as `from`); reverse:
    /// the last key returned (pass it as `to`). `null` at the end.
    pub(crate) next: Option<String>,
}

/// `POST /v1/tx/{tx}/commit` response.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct Committed {
    pub(crate) committed: bool,
}

/// `POST /v1/tx/{tx}/rollback` response.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct RolledBack {
    pub(crate) rolled_back: bool,
}

/// One operation of a batch: a put has a `value` (any JSON, `null`
/// included); a get or a delete has none. Its schema is
/// `crate::schema::op`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct Op {
    pub(crate) op: OpKind,
    pub(crate) store: String,
    pub(crate) key: String,
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub(crate) value: Option<Value>,
}

/// `value` as `T`, if it is a JSON object: serde would also take an array
/// for a struct (its fields in order), which the API does not.
pub(crate) fn from_object<T: DeserializeOwned>(value: Value) -> Result<T, serde_json::Error> {
    if !value.is_object() {
        return Err(serde::de::Error::custom(format!("expected a JSON object, found {}", kind(&value))));
    }
    serde_json::from_value(value)
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A list of JSON objects, each as `T` (see [`from_object`]).
fn objects<'de, D: Deserializer<'de>, T: DeserializeOwned>(d: D) -> Result<Vec<T>, D::Error> {
    let values = Vec::<Value>::deserialize(d)?;
    values.into_iter().map(|v| from_object(v).map_err(serde::de::Error::custom)).collect()
}

/// An optional whole number, as JSON Schema's `integer` has it: `3` and
/// `3.0` alike (and, in a query string, `"3"` and `"3.0"`); `null` is
/// `None`.
pub(crate) fn integer<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64>,
{
    struct Whole;

    impl serde::de::Visitor<'_> for Whole {
        type Value = u64;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a non-negative whole number")
        }

        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }

        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v).map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
        }

        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<u64, E> {
            // Exact below 2^53; above, a float names no single integer.
            let whole = v.fract() == 0.0 && (0.0..9_007_199_254_740_992.0).contains(&v);
            #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "checked above")]
            let n = v as u64;
            if whole { Ok(n) } else { Err(E::invalid_value(serde::de::Unexpected::Float(v), &self)) }
        }

        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<u64, E> {
            match (v.parse::<u64>(), v.parse::<f64>()) {
                (Ok(n), _) => Ok(n),
                (_, Ok(f)) if f.is_finite() => self.visit_f64(f),
                _ => Err(E::invalid_value(serde::de::Unexpected::Str(v), &self)),
            }
        }
    }

    struct Maybe;

    impl<'de> serde::de::Visitor<'de> for Maybe {
        type Value = Option<u64>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a non-negative whole number or null")
        }

        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_any(Whole).map(Some)
        }
    }

    let Some(n) = d.deserialize_option(Maybe)? else { return Ok(None) };
    T::try_from(n).map(Some).map_err(|_| serde::de::Error::custom(format!("{n} is out of range")))
}

/// A field that is present, even as `null`, is `Some`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

impl utoipa::PartialSchema for Op {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        schema::op()
    }
}

impl ToSchema for Op {}

/// What a batch operation does.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
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
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Batch {
    #[serde(deserialize_with = "objects")]
    #[schema(schema_with = schema::ops)]
    pub(crate) ops: Vec<Op>,
}

/// The result of one batch operation: a get gives the item (`null` in
/// the results when absent); a put or a delete gives `{"ok":true}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(untagged)]
pub(crate) enum BatchResult {
    /// A get's item.
    Got(Item),
    /// A put or delete done.
    Done(Done),
}

/// `{"ok":true}`: a put or delete of a batch done.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Done {
    pub(crate) ok: bool,
}

/// `POST /v1/batch` response: one result per op, in op order; `null` for
/// a get of an absent key.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct BatchResults {
    pub(crate) results: Vec<Option<BatchResult>>,
}

/// Every error body: `error` is one of the codes, `message` says what
/// happened in words.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = Error)]
pub(crate) struct ErrorBody {
    #[schema(value_type = crate::code::ErrorCode)]
    pub(crate) error: String,
    pub(crate) message: String,
}
