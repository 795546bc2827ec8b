//! Store metadata: [`StoreOptions`] chosen at creation, [`StoreInfo`] as kept
//! in the registry.

use crate::codec::{begin_frame, open_frame, tag};
use crate::{Error, LogicalId, Result};

/// The options of one store (B-tree), fixed when it is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// Items per leaf and children per internal node, at most.
    /// [`StoreOptions::MIN_SLOT_LENGTH`]`..=`[`StoreOptions::MAX_SLOT_LENGTH`].
    pub slot_length: u32,
    /// Whether keys are unique (`true`) or duplicates are kept in insertion
    /// order (`false`).
    pub unique: bool,
    /// Values longer than this many bytes are stored in a blob of their own
    /// instead of inside the node. At most [`StoreOptions::MAX_INLINE_VALUE`].
    pub value_in_node_threshold: u32,
}

impl Default for StoreOptions {
    /// A slot length of 512: a commit of random keys touches about half as
    /// many leaves as at 256, so it writes half as many deltas and
    /// handles. Measured (`sop-bench --quick --phases main --engines sop`,
    /// 100 000 items of 116 bytes, callgrind, 2026-12-04), 256 -> 512 ->
    /// 1 024: inserts 16.5 K -> 14.3 K -> 13.0 K instructions an item,
    /// deletes 17.5 K -> 14.6 K -> 13.5 K, a single-key update 59.0 K ->
    /// 60.8 K -> 68.7 K (its leaf's consolidations grow with it), a warm
    /// get 2 195 -> 2 067 -> 2 005; cold point reads 9 % slower at 512.
    fn default() -> Self {
        Self { slot_length: 512, unique: true, value_in_node_threshold: 1024 }
    }
}

impl StoreOptions {
    /// The smallest slot length.
    pub const MIN_SLOT_LENGTH: u32 = 4;
    /// The largest slot length.
    pub const MAX_SLOT_LENGTH: u32 = 10_000;
    /// The largest value kept inside a node.
    pub const MAX_INLINE_VALUE: u32 = 64 * 1024;

    /// Checks every field against its documented range.
    ///
    /// # Errors
    /// `InvalidInput` naming the field and its allowed range.
    pub fn validate(&self) -> Result<()> {
        if !(Self::MIN_SLOT_LENGTH..=Self::MAX_SLOT_LENGTH).contains(&self.slot_length) {
            return Err(Error::invalid(
                "options",
                format!(
                    "slot_length {} is outside {}..={}",
                    self.slot_length,
                    Self::MIN_SLOT_LENGTH,
                    Self::MAX_SLOT_LENGTH
                ),
            ));
        }
        if self.value_in_node_threshold > Self::MAX_INLINE_VALUE {
            return Err(Error::invalid(
                "options",
                format!(
                    "value_in_node_threshold {} is above {}",
                    self.value_in_node_threshold,
                    Self::MAX_INLINE_VALUE
                ),
            ));
        }
        Ok(())
    }
}

/// A store's metadata as the registry keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreInfo {
    /// The store's name, unique in the database.
    pub name: String,
    /// The options fixed at creation.
    pub options: StoreOptions,
    /// The root node's logical id; it never changes (root splits push the
    /// items down into new children).
    pub root: LogicalId,
    /// The committed item count (maintained by commutative deltas).
    pub count: u64,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at_ms: u64,
}

const FORMAT_VERSION: u8 = 1;
/// The byte that once held per-store cache flags (never read): written as
/// their old default, so that any build reads the record, and ignored.
const RESERVED_CACHE_FLAGS: u8 = 3;
const WHAT: &str = "store info";

impl StoreInfo {
    /// The longest store name, in bytes.
    pub const MAX_NAME_LEN: usize = 128;

    /// Metadata for a new, empty store.
    ///
    /// # Errors
    /// `InvalidInput` for a bad name (empty, longer than
    /// [`StoreInfo::MAX_NAME_LEN`] bytes, or with control characters or `/`)
    /// or bad options.
    pub fn new(name: &str, options: StoreOptions, root: LogicalId) -> Result<Self> {
        validate_name(name)?;
        options.validate()?;
        Ok(Self { name: name.to_owned(), options, root, count: 0, created_at_ms: crate::now_millis() })
    }

    /// Applies a count delta, saturating at zero and `u64::MAX`.
    pub fn apply_delta(&mut self, delta: i64) {
        self.count = self.count.saturating_add_signed(delta);
    }

    /// The versioned, checksummed encoding.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut w = begin_frame(tag::STORE_INFO, FORMAT_VERSION, 64 + self.name.len());
        w.str(&self.name);
        w.u32(self.options.slot_length);
        w.u8(u8::from(self.options.unique));
        w.u32(self.options.value_in_node_threshold);
        w.u8(RESERVED_CACHE_FLAGS);
        w.u128(self.root.as_u128());
        w.u64(self.count);
        w.u64(self.created_at_ms);
        w.finish_frame()
    }

    /// Decodes [`StoreInfo::encode`]'s output.
    ///
    /// # Errors
    /// `Corruption` for malformed bytes or out-of-range fields.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let (_, mut r) = open_frame(bytes, tag::STORE_INFO, FORMAT_VERSION, WHAT)?;
        let name = r.str()?.to_owned();
        let slot_length = r.u32()?;
        let unique = r.u8()? != 0;
        let value_in_node_threshold = r.u32()?;
        r.u8()?; // RESERVED_CACHE_FLAGS, whatever an older build wrote
        let options = StoreOptions { slot_length, unique, value_in_node_threshold };
        options.validate().map_err(|e| Error::corruption(WHAT, e.to_string()))?;
        let info = Self {
            name,
            options,
            root: LogicalId::from_u128(r.u128()?),
            count: r.u64()?,
            created_at_ms: r.u64()?,
        };
        r.finish()?;
        Ok(info)
    }
}

fn validate_name(name: &str) -> Result<()> {
    let bad = name.is_empty()
        || name.len() > StoreInfo::MAX_NAME_LEN
        || name.chars().any(|c| c.is_control() || c == '/');
    if bad {
        return Err(Error::invalid(
            "store name",
            format!(
                "store name {name:?} must be 1..={} bytes without control characters or '/'",
                StoreInfo::MAX_NAME_LEN
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn options_are_validated() {
        assert!(StoreOptions::default().validate().is_ok());
        for slot_length in [0, 3, 10_001] {
            let o = StoreOptions { slot_length, ..StoreOptions::default() };
            assert_eq!(o.validate().unwrap_err().kind(), ErrorKind::InvalidInput);
        }
        let too_big = StoreOptions { value_in_node_threshold: 1 << 20, ..Default::default() };
        assert!(too_big.validate().is_err());
        for name in ["", "a/b", "tab\t", &"x".repeat(129)] {
            let err = StoreInfo::new(name, StoreOptions::default(), LogicalId::new()).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{name:?}");
        }
    }

    #[test]
    fn the_reserved_cache_byte_is_ignored_and_written_as_before() {
        let info = StoreInfo::new("v1", StoreOptions::default(), LogicalId::from_u128(9)).unwrap();
        let mut w = begin_frame(tag::STORE_INFO, 1, 64);
        w.str(&info.name);
        w.u32(info.options.slot_length);
        w.u8(1);
        w.u32(info.options.value_in_node_threshold);
        w.u8(0); // cache flags an older build may have written
        w.u128(info.root.as_u128());
        w.u64(42);
        w.u64(info.created_at_ms);
        let old = w.finish_frame();
        let got = StoreInfo::decode(&old).unwrap();
        assert_eq!(
            (got.name.as_str(), got.options, got.root, got.count),
            ("v1", info.options, info.root, 42)
        );
        let again = got.encode();
        assert_eq!(StoreInfo::decode(&again).unwrap(), got);
        assert_eq!(again.get(1), Some(&1), "still format version 1, so older builds read it");
        let flags_at = 2 + 1 + 2 + 4 + 1 + 4; // tag and version, name length and "v1", slot, unique, threshold
        assert_eq!(
            again.get(flags_at),
            Some(&RESERVED_CACHE_FLAGS),
            "the old default, as older builds wrote"
        );
    }

    #[test]
    fn store_info_round_trips_and_rejects_corruption() {
        let opts = StoreOptions { slot_length: 5, unique: false, ..Default::default() };
        let mut info = StoreInfo::new("orders", opts, LogicalId::new()).unwrap();
        info.apply_delta(7);
        info.apply_delta(-2);
        assert_eq!(info.count, 5);
        info.apply_delta(-100);
        assert_eq!(info.count, 0);
        let bytes = info.encode();
        assert_eq!(StoreInfo::decode(&bytes).unwrap(), info);
        for n in 0..bytes.len() {
            assert_eq!(StoreInfo::decode(&bytes[..n]).unwrap_err().kind(), ErrorKind::Corruption);
        }
    }
}
