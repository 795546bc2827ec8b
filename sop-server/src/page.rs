//! One page of a range read, and decoding stored items: shared by the
//! server's `GET .../items` and the command line on a local database, so
//! that both page and decode the same way.

use std::ops::Bound;

use sop_btree::Store;

use crate::wire::{Item, ItemsPage};

/// Why a stored item is not one the JSON API can show.
#[derive(Debug)]
pub(crate) enum Undecodable {
    /// The key is not UTF-8.
    Key(String),
    /// The value is not JSON.
    Value(String),
}

impl std::fmt::Display for Undecodable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Key(m) | Self::Value(m) => f.write_str(m),
        }
    }
}

/// A stored key as a string.
pub(crate) fn decode_key(bytes: &[u8]) -> Result<String, Undecodable> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| Undecodable::Key("a key is not UTF-8 (written through another API)".into()))
}

/// A stored value as JSON.
pub(crate) fn decode_value(key: &str, bytes: &[u8]) -> Result<serde_json::Value, Undecodable> {
    serde_json::from_slice(bytes).map_err(|_| {
        Undecodable::Value(format!("the value of {key:?} is not JSON (written through another API)"))
    })
}

/// Reads up to `limit` items of `[from, to)` (descending when `reverse`).
/// `next` is `None` at the end; otherwise, forward, the first key not
/// returned (the next `from`) and, reverse, the last key returned (the
/// next `to`).
///
/// # Errors
/// The engine's read errors (outer); an undecodable item (inner).
pub(crate) async fn read(
    st: &Store,
    from: Option<&str>,
    to: Option<&str>,
    limit: usize,
    reverse: bool,
) -> sop_btree::Result<Result<ItemsPage, Undecodable>> {
    let lo = from.map_or(Bound::Unbounded, |k| Bound::Included(k.as_bytes()));
    let hi = to.map_or(Bound::Unbounded, |k| Bound::Excluded(k.as_bytes()));
    let mut cursor = if reverse { st.range_rev(lo, hi) } else { st.range(lo, hi) };
    let mut rows = cursor.take(limit.saturating_add(1)).await?;
    let extra = if rows.len() > limit { rows.pop() } else { None };
    Ok(decode_page(rows, extra, reverse))
}

fn decode_page(
    rows: Vec<(bytes::Bytes, bytes::Bytes)>,
    extra: Option<(bytes::Bytes, bytes::Bytes)>,
    reverse: bool,
) -> Result<ItemsPage, Undecodable> {
    let mut items = Vec::with_capacity(rows.len());
    for (k, v) in &rows {
        let key = decode_key(k)?;
        let value = decode_value(&key, v)?;
        items.push(Item { key, value });
    }
    let next = match (extra, reverse) {
        (None, _) => None,
        (Some((k, _)), false) => Some(decode_key(&k)?),
        (Some(_), true) => items.last().map(|i| i.key.clone()),
    };
    Ok(ItemsPage { items, next })
}
