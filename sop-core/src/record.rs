//! Records: one stored object holding many blobs ("parts"), so that a
//! commit on object storage costs one PUT, not one per node it wrote.
//!
//! A part's [`PhysicalId`] is its address: a UUIDv8 (version nibble 8,
//! where a plain blob id is a UUIDv7) whose other 124 bits are the
//! record's random 68-bit id, the part's byte offset in the record (28
//! bits) and its length (28 bits). A reader fetches a part with one ranged
//! read and no lookup; caches keyed by physical id work unchanged, since a
//! part's id, like any blob id, is never reused.
//!
//! A record is a header frame (tag `R`, the part lengths, a checksum)
//! followed by its parts back to back; the parts carry their own checksums
//! (node and delta frames). A part is deleted by listing it in a dead-list
//! frame (tag `X`); a record is reclaimed once its dead parts tile it
//! ([`tiles_record`]). The byte layouts are in `docs/format.md`.

use crate::codec::{FRAME_OVERHEAD, begin_frame, open_frame, tag};
use crate::{Error, PhysicalId, Result};

/// The largest record, and so the largest part: offsets and lengths are 28
/// bits.
pub const MAX_RECORD_BYTES: usize = (1 << 28) - 1;
/// The most parts one record holds (its header stays under 64 KiB).
pub const MAX_PARTS: usize = 16_000;

const VERSION_SHIFT: u32 = 76;
const PART_VERSION: u128 = 8;
const FIELD_BITS: u32 = 28;
const FIELD_MASK: u128 = (1 << FIELD_BITS) - 1;
/// Bits of a record id: 48 above the version nibble, 20 below.
const RECORD_BITS: u32 = 68;
const RECORD_FORMAT: u8 = 1;
const DEAD_FORMAT: u8 = 1;

/// A record's identity: 68 random bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordId(u128);

impl RecordId {
    /// A fresh random record id.
    #[must_use]
    pub fn random() -> Self {
        Self(uuid::Uuid::new_v4().as_u128() & ((1 << RECORD_BITS) - 1))
    }

    /// The id as 17 hex digits (the record's object name).
    #[must_use]
    pub fn to_hex(self) -> String {
        format!("{:017x}", self.0)
    }

    /// Parses [`RecordId::to_hex`]'s output.
    #[must_use]
    pub fn from_hex(s: &str) -> Option<Self> {
        (s.len() == 17).then(|| u128::from_str_radix(s, 16).ok()).flatten().map(Self)
    }

    /// The id's low byte, random: spreads records over folders.
    #[must_use]
    pub fn low_byte(self) -> u8 {
        (self.0 & 0xff) as u8
    }
}

/// Where a part lives: its record, offset and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PartRef {
    /// The record holding the part.
    pub record: RecordId,
    /// The part's first byte in the record.
    pub offset: u32,
    /// The part's length in bytes (never 0).
    pub len: u32,
}

impl PartRef {
    /// The byte range of the part in its record.
    #[must_use]
    pub fn range(&self) -> std::ops::Range<u64> {
        u64::from(self.offset)..u64::from(self.offset) + u64::from(self.len)
    }

    /// The part's physical id.
    #[must_use]
    pub fn id(&self) -> PhysicalId {
        let r = self.record.0;
        let hi = r >> 20; // 48 bits
        let lo = r & 0xf_ffff; // 20 bits
        PhysicalId::from_u128(
            (hi << 80)
                | (PART_VERSION << VERSION_SHIFT)
                | (lo << 56)
                | ((u128::from(self.offset) & FIELD_MASK) << FIELD_BITS)
                | (u128::from(self.len) & FIELD_MASK),
        )
    }
}

impl PhysicalId {
    /// The part this id addresses, or `None` for a plain blob id.
    #[must_use]
    pub fn part(self) -> Option<PartRef> {
        let v = self.as_u128();
        if (v >> VERSION_SHIFT) & 0xf != PART_VERSION {
            return None;
        }
        let record = ((v >> 80) << 20) | ((v >> 56) & 0xf_ffff);
        let offset = ((v >> FIELD_BITS) & FIELD_MASK) as u32;
        let len = (v & FIELD_MASK) as u32;
        (len > 0).then_some(PartRef { record: RecordId(record), offset, len })
    }
}

/// The header's length for `parts` parts: where the first part starts.
#[must_use]
pub fn header_len(parts: usize) -> usize {
    FRAME_OVERHEAD + 4 + 4 * parts
}

/// Ids for blobs of these lengths, packed into as few records as fit:
/// parts in order, each record at most [`MAX_RECORD_BYTES`] and
/// [`MAX_PARTS`]. An empty blob, or one too large for a record, gets a
/// plain id (stored on its own).
#[must_use]
pub fn layout(lens: &[usize]) -> Vec<PhysicalId> {
    let mut ids = Vec::with_capacity(lens.len());
    let mut group: Vec<usize> = Vec::new();
    let mut bytes = 0usize;
    for &len in lens {
        if len == 0 || len > MAX_RECORD_BYTES - header_len(1) {
            ids.push(Some(PhysicalId::new()));
            continue;
        }
        if group.len() == MAX_PARTS || header_len(group.len() + 1) + bytes + len > MAX_RECORD_BYTES {
            assign(&mut group, &mut ids);
            bytes = 0;
        }
        ids.push(None);
        group.push(len);
        bytes += len;
    }
    assign(&mut group, &mut ids);
    ids.into_iter().map(Option::unwrap_or_default).collect()
}

/// Gives the parts of `group` (the lengths of the last `None`s of `ids`,
/// in order) their ids in one new record.
fn assign(group: &mut Vec<usize>, ids: &mut [Option<PhysicalId>]) {
    let record = RecordId::random();
    let mut offset = header_len(group.len());
    let mut lens = group.drain(..);
    for slot in ids.iter_mut().filter(|s| s.is_none()) {
        let Some(len) = lens.next() else { break };
        // Both fit 28 bits: `layout` bounds the record.
        *slot = Some(PartRef { record, offset: offset as u32, len: len as u32 }.id());
        offset += len;
    }
}

/// A record's header: its parts' lengths, in order.
///
/// # Errors
/// `InvalidInput` when there are no parts, too many, or they overflow a
/// record.
pub fn encode_header(lens: &[u32]) -> Result<Vec<u8>> {
    let total: u64 = lens.iter().map(|&l| u64::from(l)).sum::<u64>() + header_len(lens.len()) as u64;
    if lens.is_empty() || lens.len() > MAX_PARTS || total > MAX_RECORD_BYTES as u64 {
        return Err(Error::invalid("record", format!("{} parts of {total} bytes", lens.len())));
    }
    let mut w = begin_frame(tag::RECORD, RECORD_FORMAT, 4 + 4 * lens.len());
    w.u32(lens.len() as u32);
    for &l in lens {
        w.u32(l);
    }
    Ok(w.finish_frame())
}

/// The part count a header announces, from its first six bytes (before the
/// whole header, and its checksum, can be read).
///
/// # Errors
/// `Corruption` for a foreign or truncated prefix or an impossible count.
pub fn header_parts(prefix: &[u8]) -> Result<usize> {
    match prefix {
        [t, v, a, b, c, d, ..] if *t == tag::RECORD && *v == RECORD_FORMAT => {
            let n = u32::from_le_bytes([*a, *b, *c, *d]) as usize;
            if (1..=MAX_PARTS).contains(&n) {
                Ok(n)
            } else {
                Err(Error::corruption("record header", format!("{n} parts")))
            }
        }
        _ => Err(Error::corruption("record header", "not a record header")),
    }
}

/// The ids of a record's parts, from its whole header.
///
/// # Errors
/// `Corruption` for altered or truncated bytes.
pub fn decode_header(record: RecordId, bytes: &[u8]) -> Result<Vec<PhysicalId>> {
    let (_, mut r) = open_frame(bytes, tag::RECORD, RECORD_FORMAT, "record header")?;
    let n = r.u32()? as usize;
    if !(1..=MAX_PARTS).contains(&n) || r.remaining() < 4 * n {
        return Err(Error::corruption("record header", format!("{n} parts")));
    }
    let mut offset = header_len(n) as u64;
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        let len = r.u32()?;
        if len == 0 || offset + u64::from(len) > MAX_RECORD_BYTES as u64 {
            return Err(Error::corruption("record header", "a part outside the record"));
        }
        ids.push(PartRef { record, offset: offset as u32, len }.id());
        offset += u64::from(len);
    }
    r.finish()?;
    Ok(ids)
}

/// Where a record would end if `dead`, the parts of one record known to
/// be deleted, were all of it: they start right after a header for
/// exactly that many parts and follow each other. Parts of a record start
/// after its header, so a strict subset of them gives `None` (it would
/// start after a shorter header's end, or leave a gap).
#[must_use]
pub fn tiling_end(dead: &[PartRef]) -> Option<u64> {
    let mut parts: Vec<&PartRef> = dead.iter().collect();
    parts.sort_by_key(|p| p.offset);
    parts.dedup_by_key(|p| p.offset);
    let mut at = header_len(parts.len()) as u64;
    for p in &parts {
        if u64::from(p.offset) != at {
            return None;
        }
        at += u64::from(p.len);
    }
    (!parts.is_empty()).then_some(at)
}

/// Whether `dead` tiles a `size`-byte record ([`tiling_end`]).
#[must_use]
pub fn tiles_record(dead: &[PartRef], size: u64) -> bool {
    tiling_end(dead) == Some(size)
}

/// A dead list: parts deleted, awaiting their record's reclamation.
#[must_use]
pub fn encode_dead(parts: &[PhysicalId]) -> Vec<u8> {
    let mut w = begin_frame(tag::DEAD, DEAD_FORMAT, 4 + 16 * parts.len());
    w.varint(parts.len() as u64);
    for p in parts {
        w.u128(p.as_u128());
    }
    w.finish_frame()
}

/// Decodes [`encode_dead`]'s output; ids that are not parts are dropped.
///
/// # Errors
/// `Corruption` for altered or truncated bytes.
pub fn decode_dead(bytes: &[u8]) -> Result<Vec<PartRef>> {
    let (_, mut r) = open_frame(bytes, tag::DEAD, DEAD_FORMAT, "dead list")?;
    let n = r.count(16)?;
    let mut parts = Vec::with_capacity(n);
    for _ in 0..n {
        if let Some(p) = PhysicalId::from_u128(r.u128()?).part() {
            parts.push(p);
        }
    }
    r.finish()?;
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn part_ids_round_trip_and_plain_ids_are_not_parts() {
        for _ in 0..1000 {
            let p = PartRef { record: RecordId::random(), offset: 123_456, len: (1 << 28) - 1 };
            assert_eq!(p.id().part(), Some(p));
            assert_eq!(RecordId::from_hex(&p.record.to_hex()), Some(p.record));
            assert_eq!(PhysicalId::new().part(), None);
        }
        let s = PartRef { record: RecordId(1), offset: 10, len: 5 }.id().to_string();
        assert_eq!(&s[14..15], "8", "a UUIDv8: {s}");
    }

    #[test]
    fn layout_tiles_records_and_headers_decode_to_the_same_ids() {
        let lens = [5usize, 0, 70_000, 1, MAX_RECORD_BYTES, 300];
        let ids = layout(&lens);
        assert!(ids[1].part().is_none() && ids[4].part().is_none(), "empty and oversized are plain");
        let parts: Vec<PartRef> = ids.iter().filter_map(|id| id.part()).collect();
        assert_eq!(parts.len(), 4);
        assert!(parts.iter().all(|p| p.record == parts[0].record));
        let header = encode_header(&parts.iter().map(|p| p.len).collect::<Vec<_>>()).unwrap();
        assert_eq!(header.len(), header_len(4));
        assert_eq!(header_parts(&header[..6]).unwrap(), 4);
        let decoded = decode_header(parts[0].record, &header).unwrap();
        let mut expected: Vec<PhysicalId> = parts.iter().map(PartRef::id).collect();
        expected.sort_by_key(|id| id.part().unwrap().offset);
        assert_eq!(decoded, expected);
        let size = header.len() as u64 + parts.iter().map(|p| u64::from(p.len)).sum::<u64>();
        assert!(tiles_record(&parts, size));
        for skip in 0..parts.len() {
            let mut some = parts.clone();
            some.remove(skip);
            assert!(!tiles_record(&some, size), "all but part {skip}");
        }
        assert!(!tiles_record(&[], size));
    }

    #[test]
    fn layout_splits_at_the_part_limit() {
        let ids = layout(&vec![10; MAX_PARTS + 1]);
        let first = ids[0].part().unwrap().record;
        assert!(ids[..MAX_PARTS].iter().all(|id| id.part().unwrap().record == first));
        assert_ne!(ids[MAX_PARTS].part().unwrap().record, first);
    }

    #[test]
    fn headers_and_dead_lists_detect_every_corruption() {
        let header = encode_header(&[3, 4]).unwrap();
        let dead = encode_dead(&layout(&[3, 4]));
        assert_eq!(decode_dead(&dead).unwrap().len(), 2);
        for n in 0..header.len() {
            assert_eq!(decode_header(RecordId(7), &header[..n]).unwrap_err().kind(), ErrorKind::Corruption);
        }
        for n in 0..dead.len() {
            assert_eq!(decode_dead(&dead[..n]).unwrap_err().kind(), ErrorKind::Corruption);
        }
        for i in 0..header.len() * 8 {
            let mut b = header.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert_eq!(decode_header(RecordId(7), &b).unwrap_err().kind(), ErrorKind::Corruption, "bit {i}");
        }
        for i in 0..dead.len() * 8 {
            let mut b = dead.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert_eq!(decode_dead(&b).unwrap_err().kind(), ErrorKind::Corruption, "bit {i}");
        }
        assert_eq!(header_parts(b"nope!!").unwrap_err().kind(), ErrorKind::Corruption);
        assert_eq!(encode_header(&[]).unwrap_err().kind(), ErrorKind::InvalidInput);
    }
}
