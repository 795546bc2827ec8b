//! [`Handle`]: the registry's pointer from a logical node id to its blob.

use crate::codec::{open_frame, tag};
use crate::{LogicalId, PhysicalId, Result};

/// Where a node currently lives: the "pheromone" of the design.
///
/// A handle maps a node's stable [`LogicalId`] to the [`PhysicalId`] of its
/// current immutable blob. Every publish that changes the node writes a new
/// blob and bumps `version` by one; validation compares versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Handle {
    /// The node's stable identity.
    pub logical_id: LogicalId,
    /// The blob holding the node's current contents.
    pub physical_id: PhysicalId,
    /// Bumped by one at every publish of a new blob; starts at 1.
    pub version: u64,
}

const FORMAT_VERSION: u8 = 1;
const WHAT: &str = "handle";

impl Handle {
    /// A handle at version 1, as created for a new node.
    #[must_use]
    pub fn new(logical_id: LogicalId, physical_id: PhysicalId) -> Self {
        Self { logical_id, physical_id, version: 1 }
    }

    /// The handle after publishing `physical_id`: same id, version + 1.
    #[must_use]
    pub fn next(self, physical_id: PhysicalId) -> Self {
        Self { physical_id, version: self.version.wrapping_add(1), ..self }
    }

    /// The length of [`Handle::encode`]'s output.
    pub const ENCODED_LEN: usize = 46;

    /// The versioned, checksummed encoding (46 bytes).
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        self.encoded().to_vec()
    }

    /// [`Handle::encode`]'s bytes in an array: no allocation (a commit
    /// writes one per node it changes).
    #[must_use]
    pub fn encoded(&self) -> [u8; Self::ENCODED_LEN] {
        let mut out = [0; Self::ENCODED_LEN];
        let (body, crc) = out.split_at_mut(Self::ENCODED_LEN - 4);
        let fields = [tag::HANDLE, FORMAT_VERSION]
            .into_iter()
            .chain(self.logical_id.as_u128().to_le_bytes())
            .chain(self.physical_id.as_u128().to_le_bytes())
            .chain(self.version.to_le_bytes());
        for (slot, byte) in body.iter_mut().zip(fields) {
            *slot = byte;
        }
        crc.copy_from_slice(&crc32fast::hash(body).to_le_bytes());
        out
    }

    /// Decodes [`Handle::encode`]'s output.
    ///
    /// # Errors
    /// `Corruption` for truncated, altered or foreign bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let (_, mut r) = open_frame(bytes, tag::HANDLE, FORMAT_VERSION, WHAT)?;
        let h = Self {
            logical_id: LogicalId::from_u128(r.u128()?),
            physical_id: PhysicalId::from_u128(r.u128()?),
            version: r.u64()?,
        };
        r.finish()?;
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn round_trip_and_every_corruption_is_detected() {
        let h = Handle::new(LogicalId::new(), PhysicalId::new()).next(PhysicalId::new());
        assert_eq!(h.version, 2);
        let bytes = h.encode();
        assert_eq!(bytes.len(), 46);
        assert_eq!(Handle::decode(&bytes).unwrap(), h);
        for n in 0..bytes.len() {
            assert_eq!(Handle::decode(&bytes[..n]).unwrap_err().kind(), ErrorKind::Corruption);
        }
        for i in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert_eq!(Handle::decode(&b).unwrap_err().kind(), ErrorKind::Corruption, "bit {i}");
        }
    }

    #[test]
    fn the_array_is_the_framed_encoding() {
        for version in [1, 2, u64::MAX] {
            let h = Handle { version, ..Handle::new(LogicalId::new(), PhysicalId::new()) };
            let mut w = crate::codec::begin_frame(tag::HANDLE, FORMAT_VERSION, 40);
            w.u128(h.logical_id.as_u128());
            w.u128(h.physical_id.as_u128());
            w.u64(h.version);
            assert_eq!(h.encoded().as_slice(), w.finish_frame().as_slice());
            assert_eq!(Handle::decode(&h.encoded()).unwrap(), h);
        }
    }
}
