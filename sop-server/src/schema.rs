//! Schemas whose limits come from the code: the engine's constants and the
//! server's own, so that the document cannot drift from what is enforced.
//! The wire types name these with `#[schema(schema_with = ...)]`.

use serde_json::json;
use sop_btree::{MAX_KEY_LEN, StoreInfo, StoreOptions};
use utoipa::openapi::schema::{
    AdditionalProperties, ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type,
};
use utoipa::openapi::{Ref, RefOr};

/// Items per range page when `limit` is not given.
pub(crate) const DEFAULT_LIMIT: usize = 1000;
/// The largest `limit` accepted.
pub(crate) const MAX_LIMIT: usize = 100_000;
/// Operations per batch at most.
pub(crate) const MAX_BATCH_OPS: usize = 100_000;

/// A store name, as `StoreInfo::new` checks it: no control character
/// (Unicode category Cc, as `char::is_control`) and no `/`.
const STORE_NAME_PATTERN: &str = r"^[^\u0000-\u001F\u007F-\u009F/]+$";

fn nullable(t: Type) -> SchemaType {
    SchemaType::from_iter([t, Type::Null])
}

/// `"ok"`.
pub(crate) fn health_status() -> Schema {
    ObjectBuilder::new().schema_type(Type::String).enum_values(Some(["ok"])).build().into()
}

/// `slot_length`: `StoreOptions::MIN_SLOT_LENGTH..=MAX_SLOT_LENGTH`.
pub(crate) fn slot_length() -> Schema {
    ObjectBuilder::new()
        .schema_type(nullable(Type::Integer))
        .minimum(Some(StoreOptions::MIN_SLOT_LENGTH))
        .maximum(Some(StoreOptions::MAX_SLOT_LENGTH))
        .default(Some(json!(StoreOptions::default().slot_length)))
        .description(Some("Items per leaf and children per internal node, at most."))
        .build()
        .into()
}

/// `unique`.
pub(crate) fn unique() -> Schema {
    ObjectBuilder::new()
        .schema_type(nullable(Type::Boolean))
        .default(Some(json!(StoreOptions::default().unique)))
        .description(Some("Whether keys are unique (`false` keeps duplicates in insertion order)."))
        .build()
        .into()
}

/// `value_in_node_threshold`: `0..=StoreOptions::MAX_INLINE_VALUE`.
pub(crate) fn value_in_node_threshold() -> Schema {
    ObjectBuilder::new()
        .schema_type(nullable(Type::Integer))
        .minimum(Some(0))
        .maximum(Some(StoreOptions::MAX_INLINE_VALUE))
        .default(Some(json!(StoreOptions::default().value_in_node_threshold)))
        .description(Some("Values longer than this many bytes get a blob of their own."))
        .build()
        .into()
}

/// `timeout_ms`: at least 1; its maximum and default are the server's
/// settings, filled in when the document is served.
pub(crate) fn timeout_ms() -> Schema {
    ObjectBuilder::new()
        .schema_type(nullable(Type::Integer))
        .minimum(Some(1))
        .description(Some(
            "Milliseconds from now until the server rolls the transaction back (absent or null: the server's default).",
        ))
        .build()
        .into()
}

/// A store name: 1 to `StoreInfo::MAX_NAME_LEN` bytes of UTF-8.
pub(crate) fn store_name() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(StoreInfo::MAX_NAME_LEN))
        .pattern(Some(STORE_NAME_PATTERN))
        .description(Some(format!(
            "A store name: 1 to {} bytes of UTF-8 (maxLength counts characters, so a name of \
             multi-byte characters may be refused with 400 below it), without control \
             characters or '/'.",
            StoreInfo::MAX_NAME_LEN
        )))
        .build()
        .into()
}

/// A key: at most `MAX_KEY_LEN` bytes of UTF-8.
pub(crate) fn key() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .max_length(Some(MAX_KEY_LEN))
        .description(Some(format!(
            "A key: any UTF-8 string of at most {MAX_KEY_LEN} bytes (413 `too_large` above)."
        )))
        .build()
        .into()
}

/// The key of an item route: a path segment, so never empty.
pub(crate) fn path_key() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(MAX_KEY_LEN))
        .description(Some(format!(
            "The key, percent-encoded: at most {MAX_KEY_LEN} bytes of UTF-8 (413 `too_large` above)."
        )))
        .build()
        .into()
}

/// `from` or `to` of a range read: any string.
pub(crate) fn bound() -> Schema {
    ObjectBuilder::new().schema_type(Type::String).build().into()
}

/// Any JSON value.
pub(crate) fn any_value() -> Schema {
    ObjectBuilder::new().schema_type(SchemaType::AnyValue).build().into()
}

/// `limit` of a range read: `1..=MAX_LIMIT`, default `DEFAULT_LIMIT`.
pub(crate) fn limit() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(1))
        .maximum(Some(MAX_LIMIT))
        .default(Some(json!(DEFAULT_LIMIT)))
        .build()
        .into()
}

/// `reverse` of a range read.
pub(crate) fn reverse() -> Schema {
    ObjectBuilder::new().schema_type(Type::Boolean).default(Some(json!(false))).build().into()
}

/// `ops` of a batch: at most `MAX_BATCH_OPS` (413 above).
pub(crate) fn ops() -> Schema {
    ArrayBuilder::new().items(Ref::from_schema_name("Op")).max_items(Some(MAX_BATCH_OPS)).build().into()
}

/// One batch operation: a put takes a `value`, a get or a delete none.
pub(crate) fn op() -> RefOr<Schema> {
    let object = |kinds: &[&str], value: bool| {
        let mut b = ObjectBuilder::new()
            .property("op", ObjectBuilder::new().schema_type(Type::String).enum_values(Some(kinds.to_vec())))
            .property("store", store_name())
            .property("key", key())
            .required("op")
            .required("store")
            .required("key")
            .additional_properties(Some(AdditionalProperties::FreeForm(false)));
        if value {
            b = b.property("value", any_value()).required("value");
        }
        b.build()
    };
    let one_of = OneOfBuilder::new()
        .item(object(&["put"], true))
        .item(object(&["get", "delete"], false))
        .description(Some("A put takes a `value` (any JSON, null included); a get or a delete takes none."))
        .build();
    RefOr::T(Schema::OneOf(one_of))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pattern's class is `char::is_control` (U+0000-001F, U+007F-009F)
    /// plus '/': the engine refuses exactly the characters at and inside
    /// its bounds, and accepts those just outside.
    #[tokio::test]
    async fn store_name_pattern_is_the_engine_rule() {
        assert_eq!(STORE_NAME_PATTERN, r"^[^\u0000-\u001F\u007F-\u009F/]+$");
        let cc = (0..=0x10_FFFF_u32).filter_map(char::from_u32).filter(|c| c.is_control()).count();
        assert_eq!(cc, 0x20 + 0x21, "Cc is U+0000-001F and U+007F-009F");
        let db = sop_btree::Database::open(sop_btree::Config::memory()).await.expect("memory database");
        for bad in ["a\u{0}", "a\u{1f}", "a\u{7f}", "a\u{9f}", "a/b", ""] {
            let err = db.create_store(bad, StoreOptions::default()).await.expect_err(bad);
            assert_eq!(err.kind(), sop_btree::ErrorKind::InvalidInput, "{bad:?}");
        }
        for good in ["a\u{20}", "a\u{7e}", "a\u{a0}", "\u{10FFFF}"] {
            db.create_store(good, StoreOptions::default()).await.expect(good);
        }
        let longest = "x".repeat(StoreInfo::MAX_NAME_LEN);
        db.create_store(&longest, StoreOptions::default()).await.expect("the longest name");
        let over = "x".repeat(StoreInfo::MAX_NAME_LEN + 1);
        assert!(db.create_store(&over, StoreOptions::default()).await.is_err());
    }
}
