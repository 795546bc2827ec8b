//! 128-bit identifiers: logical node ids, physical blob ids, transaction ids.

use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(u128);

        impl $name {
            /// A fresh id: a UUIDv7, so ids sort by creation time.
            #[must_use]
            pub fn new() -> Self {
                Self(uuid::Uuid::now_v7().as_u128())
            }

            /// The id with this exact 128-bit value.
            #[must_use]
            pub const fn from_u128(v: u128) -> Self {
                Self(v)
            }

            /// The 128-bit value.
            #[must_use]
            pub const fn as_u128(self) -> u128 {
                self.0
            }

            /// The 16 bytes, most significant first (sorts like the value).
            #[must_use]
            pub const fn to_bytes(self) -> [u8; 16] {
                self.0.to_be_bytes()
            }

            /// The id from 16 bytes, most significant first.
            #[must_use]
            pub const fn from_bytes(b: [u8; 16]) -> Self {
                Self(u128::from_be_bytes(b))
            }

            /// The creation time in milliseconds since the Unix epoch, for
            /// ids made by [`Self::new`] (the UUIDv7 timestamp field).
            #[must_use]
            pub const fn timestamp_millis(self) -> u64 {
                (self.0 >> 80) as u64
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&uuid::Uuid::from_u128(self.0).hyphenated(), f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self)
            }
        }

        impl std::str::FromStr for $name {
            type Err = crate::Error;

            fn from_str(s: &str) -> crate::Result<Self> {
                uuid::Uuid::parse_str(s).map(|u| Self(u.as_u128())).map_err(|e| {
                    crate::Error::invalid(
                        "id",
                        format!(
                        "{s:?} is not a valid {}: {e}",
                        stringify!($name)
                    ))
                })
            }
        }
    };
}

id_type!(
    /// The stable identity of a B-tree node. Parents point at children by
    /// logical id; the registry maps it to the node's current blob.
    LogicalId
);
id_type!(
    /// The name of one immutable blob in the blob store. A blob under a
    /// physical id never changes; an update writes a new physical id.
    PhysicalId
);
id_type!(
    /// The id of one transaction; also the version stamp of items it wrote.
    TxId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn physical_ids_are_time_ordered_and_unique() {
        let ids: Vec<PhysicalId> = (0..1000).map(|_| PhysicalId::new()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "UUIDv7 ids must increase");
        let now = crate::now_millis();
        let ts = ids[0].timestamp_millis();
        assert!(now.abs_diff(ts) < 60_000, "timestamp {ts} far from now {now}");
    }

    #[test]
    fn text_round_trip_and_bad_input() {
        let id = LogicalId::new();
        assert_eq!(id.to_string().parse::<LogicalId>().unwrap(), id);
        assert_eq!(LogicalId::from_bytes(id.to_bytes()), id);
        let err = "nope".parse::<LogicalId>().unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::InvalidInput);
    }
}
