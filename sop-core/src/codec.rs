//! The framing shared by every on-disk and on-wire record, and bounded
//! primitives to write and read record bodies.
//!
//! A frame is `tag: u8 | format version: u8 | body | crc32: u32 LE`, the
//! checksum (CRC-32/ISO-HDLC) covering tag, version and body. Integers are
//! little-endian or LEB128 varints. Decoding checks the checksum first, then
//! the tag and version, then parses the body with [`Reader`], whose every
//! read is bounds-checked: untrusted bytes give [`Error`] (kind
//! `Corruption`), never a panic and never an allocation larger than the
//! input. The byte layouts are in `docs/format.md`.

use crate::{Error, Result};

/// Record tags: the first byte of every frame.
pub mod tag {
    /// A registry [`crate::Handle`].
    pub const HANDLE: u8 = 0x48;
    /// A B-tree [`crate::Node`].
    pub const NODE: u8 = 0x4e;
    /// A [`crate::StoreInfo`].
    pub const STORE_INFO: u8 = 0x53;
    /// An [`crate::Intent`].
    pub const INTENT: u8 = 0x49;
    /// A [`crate::LeafDelta`]: a leaf's changes since its base node.
    pub const DELTA: u8 = 0x44;
    /// A record's header: the lengths of the parts it holds
    /// ([`crate::record`]).
    pub const RECORD: u8 = 0x52;
    /// A dead list: record parts deleted, awaiting reclamation.
    pub const DEAD: u8 = 0x58;
}

/// Bytes a frame adds around its body: tag, version and checksum.
pub const FRAME_OVERHEAD: usize = 6;

/// Starts a frame: a [`Writer`] holding the tag and format version.
#[must_use]
pub fn begin_frame(tag: u8, version: u8, body_hint: usize) -> Writer {
    let mut w = Writer(Vec::with_capacity(body_hint + FRAME_OVERHEAD));
    w.u8(tag);
    w.u8(version);
    w
}

/// Checks a frame's checksum, tag and version; returns the version and a
/// [`Reader`] over the body.
///
/// # Errors
/// `Corruption` (checksum mismatch, wrong tag, truncated frame) or
/// `UnsupportedVersion` when the version is above `max_version`.
pub fn open_frame<'a>(
    bytes: &'a [u8],
    tag: u8,
    max_version: u8,
    what: &'static str,
) -> Result<(u8, Reader<'a>)> {
    let Some(split) = bytes.len().checked_sub(4).filter(|&n| n >= 2) else {
        return Err(Error::corruption(what, format!("frame of {} bytes is too short", bytes.len())));
    };
    let (covered, crc) = bytes.split_at(split);
    let expected = u32::from_le_bytes(crc.try_into().map_err(|_| Error::corruption(what, "crc"))?);
    let got = crc32fast::hash(covered);
    if got != expected {
        return Err(Error::ChecksumMismatch { what, got, expected });
    }
    let mut r = Reader::new(covered, what);
    let found = r.u8()?;
    if found != tag {
        return Err(Error::corruption(what, format!("tag {found:#04x}, expected {tag:#04x}")));
    }
    let version = r.u8()?;
    if version == 0 || version > max_version {
        return Err(Error::UnsupportedVersion { what, version });
    }
    Ok((version, r))
}

/// Appends little-endian integers, varints and length-prefixed bytes.
#[derive(Debug, Default)]
pub struct Writer(Vec<u8>);

impl Writer {
    /// Appends one byte.
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }

    /// Appends a `u32`, little-endian.
    pub fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    /// Appends a `u64`, little-endian.
    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    /// Appends a `u128`, little-endian.
    pub fn u128(&mut self, v: u128) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    /// Appends an unsigned LEB128 varint.
    pub fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    /// Appends a signed varint (zig-zag, then LEB128).
    pub fn varint_i64(&mut self, v: i64) {
        self.varint(((v << 1) ^ (v >> 63)) as u64);
    }

    /// Appends a varint length, then the bytes.
    pub fn bytes(&mut self, b: &[u8]) {
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }

    /// Appends a varint length, then a UTF-8 string.
    pub fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }

    /// Ends the frame: appends the checksum and returns the bytes.
    #[must_use]
    pub fn finish_frame(mut self) -> Vec<u8> {
        let crc = crc32fast::hash(&self.0);
        self.u32(crc);
        self.0
    }
}

/// Bounds-checked reads over an untrusted byte slice.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// A reader over `buf`; errors name `what`.
    #[must_use]
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Self { buf, what }
    }

    /// Bytes not read yet.
    #[must_use]
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.buf.len() {
            return Err(self.truncated(n));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn take_array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let s = self.take(N)?;
        s.try_into().map_err(|_| self.truncated(N))
    }

    fn truncated(&self, wanted: usize) -> Error {
        Error::corruption(self.what, format!("truncated: wanted {wanted} bytes, {} left", self.buf.len()))
    }

    /// Reads one byte.
    ///
    /// # Errors
    /// `Corruption` when the input is exhausted (so for every read below).
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take_array::<1>()?[0])
    }

    /// Reads a little-endian `u32`.
    ///
    /// # Errors
    /// `Corruption` on truncation.
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take_array()?))
    }

    /// Reads a little-endian `u64`.
    ///
    /// # Errors
    /// `Corruption` on truncation.
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take_array()?))
    }

    /// Reads a little-endian `u128`.
    ///
    /// # Errors
    /// `Corruption` on truncation.
    pub fn u128(&mut self) -> Result<u128> {
        Ok(u128::from_le_bytes(self.take_array()?))
    }

    /// Reads an unsigned LEB128 varint (at most 10 bytes).
    ///
    /// # Errors
    /// `Corruption` on truncation or an overlong encoding.
    pub fn varint(&mut self) -> Result<u64> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            if shift == 63 && b > 1 {
                break;
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(Error::corruption(self.what, "varint longer than 64 bits"))
    }

    /// Reads a zig-zag signed varint.
    ///
    /// # Errors
    /// `Corruption` on truncation or an overlong encoding.
    pub fn varint_i64(&mut self) -> Result<i64> {
        let z = self.varint()?;
        Ok(((z >> 1) as i64) ^ -((z & 1) as i64))
    }

    /// Reads a varint that counts elements of at least `min_size` bytes
    /// each; rejects counts the remaining input cannot hold, so a forged
    /// count never causes a large allocation.
    ///
    /// # Errors
    /// `Corruption` when the count is impossible.
    pub fn count(&mut self, min_size: usize) -> Result<usize> {
        let n = self.varint()?;
        let max = self.buf.len() / min_size.max(1);
        match usize::try_from(n) {
            Ok(n) if n <= max => Ok(n),
            _ => Err(Error::corruption(
                self.what,
                format!("count {n} exceeds what {} remaining bytes can hold", self.buf.len()),
            )),
        }
    }

    /// Reads a varint length, then that many bytes.
    ///
    /// # Errors
    /// `Corruption` on truncation.
    pub fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.count(1)?;
        self.take(n)
    }

    /// Reads a varint length, then a UTF-8 string.
    ///
    /// # Errors
    /// `Corruption` on truncation or invalid UTF-8.
    pub fn str(&mut self) -> Result<&'a str> {
        let b = self.bytes()?;
        std::str::from_utf8(b).map_err(|e| Error::corruption(self.what, format!("bad UTF-8: {e}")))
    }

    /// Checks that the whole input was consumed.
    ///
    /// # Errors
    /// `Corruption` when bytes are left over.
    pub fn finish(self) -> Result<()> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(Error::corruption(self.what, format!("{} trailing bytes", self.buf.len())))
        }
    }
}

/// A small deterministic fuzz for a decoder's tests: 20 000 xorshift byte
/// strings from `seed`, every other one framed with a valid header and
/// checksum for `tag` and `version` so that the body parser is exercised.
/// `decode` must return (an error or a value) and never panic.
#[cfg(test)]
pub(crate) fn fuzz_frames(tag: u8, version: u8, seed: u64, mut decode: impl FnMut(bytes::Bytes)) {
    let mut s = seed;
    for round in 0..20_000 {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        let len = (s % 96) as usize;
        let mut body: Vec<u8> = (0..len).map(|i| (s >> (i % 57)) as u8).collect();
        if round % 2 == 0 {
            let mut w = begin_frame(tag, version, len);
            body.iter().for_each(|b| w.u8(*b));
            body = w.finish_frame();
        }
        decode(bytes::Bytes::from(body));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_at_the_edges() {
        for v in [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX - 1, u64::MAX] {
            let mut w = Writer::default();
            w.varint(v);
            let buf = w.0;
            let mut r = Reader::new(&buf, "test");
            assert_eq!(r.varint().unwrap(), v);
            r.finish().unwrap();
        }
        for v in [0i64, -1, 1, i64::MIN, i64::MAX] {
            let mut w = Writer::default();
            w.varint_i64(v);
            let buf = w.0;
            assert_eq!(Reader::new(&buf, "t").varint_i64().unwrap(), v);
        }
    }

    #[test]
    fn overlong_varint_and_forged_count_are_corruption() {
        let buf = [0xffu8; 11];
        assert!(Reader::new(&buf, "t").varint().is_err());
        let mut w = Writer::default();
        w.varint(1 << 40);
        let buf = w.0;
        let err = Reader::new(&buf, "t").count(1).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Corruption);
    }

    #[test]
    fn frame_checks_checksum_tag_and_version() {
        let mut w = begin_frame(7, 1, 0);
        w.u64(42);
        let bytes = w.finish_frame();
        let (v, mut r) = open_frame(&bytes, 7, 1, "t").unwrap();
        assert_eq!((v, r.u64().unwrap()), (1, 42));
        assert!(matches!(open_frame(&bytes, 8, 1, "t"), Err(Error::Corruption { .. })));
        let mut w = begin_frame(7, 2, 0);
        w.u8(0);
        let newer = w.finish_frame();
        assert!(matches!(open_frame(&newer, 7, 1, "t"), Err(Error::UnsupportedVersion { .. })));
        let mut flipped = bytes.clone();
        flipped[3] ^= 0x10;
        assert!(matches!(open_frame(&flipped, 7, 1, "t"), Err(Error::ChecksumMismatch { .. })));
        for n in 0..bytes.len() {
            assert!(open_frame(&bytes[..n], 7, 1, "t").is_err(), "prefix {n} accepted");
        }
    }
}
