//! [`Intent`]: the registry record that makes every commit recoverable.

use crate::codec::{Reader, Writer, begin_frame, open_frame, tag};
use crate::{Error, LogicalId, PhysicalId, Result, TxId};

/// Where a transaction's commit stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntentState {
    /// Blobs may be staged; nothing is published. Recovery deletes the
    /// staged blobs.
    Pending,
    /// Published. Recovery deletes the obsolete blobs.
    Committed,
    /// Given up by recovery ([`crate::Registry::abort_intent`]): it can no
    /// longer be published; its staged blobs are garbage.
    Aborted,
}

/// A commit intent: written before any blob is staged, marked committed by
/// the same atomic publish that makes the transaction visible, removed after
/// cleanup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intent {
    /// The transaction.
    pub tx_id: TxId,
    /// When the intent was written, milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// Pending or committed.
    pub state: IntentState,
    /// Blobs the commit writes (node and value blobs).
    pub staged: Vec<PhysicalId>,
    /// Blobs the commit makes unreachable, to delete after publish.
    pub obsolete: Vec<PhysicalId>,
    /// Roots of subtrees the commit detached (a removed store's tree,
    /// moved under a fresh id): after publish, clean-up removes every
    /// node handle under them and deletes their blobs, a few at a time.
    pub detached: Vec<LogicalId>,
}

/// Version 2 adds `detached`; an intent without detached roots is still
/// written as version 1, which older builds read.
const FORMAT_VERSION: u8 = 2;
const WHAT: &str = "intent";

impl Intent {
    /// A pending intent for `staged` blobs, stamped now.
    #[must_use]
    pub fn pending(tx_id: TxId, staged: Vec<PhysicalId>) -> Self {
        Self {
            tx_id,
            created_at_ms: crate::now_millis(),
            state: IntentState::Pending,
            staged,
            obsolete: Vec::new(),
            detached: Vec::new(),
        }
    }

    /// The versioned, checksummed encoding.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let n = self.staged.len() + self.obsolete.len();
        let version = if self.detached.is_empty() { 1 } else { FORMAT_VERSION };
        let mut w = begin_frame(tag::INTENT, version, 32 + 16 * (n + self.detached.len()));
        w.u128(self.tx_id.as_u128());
        w.u64(self.created_at_ms);
        w.u8(match self.state {
            IntentState::Pending => 0,
            IntentState::Committed => 1,
            IntentState::Aborted => 2,
        });
        write_ids(&mut w, &self.staged);
        write_ids(&mut w, &self.obsolete);
        if version >= 2 {
            w.varint(self.detached.len() as u64);
            self.detached.iter().for_each(|id| w.u128(id.as_u128()));
        }
        w.finish_frame()
    }

    /// Decodes [`Intent::encode`]'s output.
    ///
    /// # Errors
    /// `Corruption` for malformed bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let (version, mut r) = open_frame(bytes, tag::INTENT, FORMAT_VERSION, WHAT)?;
        let tx_id = TxId::from_u128(r.u128()?);
        let created_at_ms = r.u64()?;
        let state = match r.u8()? {
            0 => IntentState::Pending,
            1 => IntentState::Committed,
            2 => IntentState::Aborted,
            s => return Err(Error::corruption(WHAT, format!("unknown state {s}"))),
        };
        let staged = read_ids(&mut r)?;
        let obsolete = read_ids(&mut r)?;
        let detached = if version >= 2 {
            let n = r.count(16)?;
            (0..n).map(|_| r.u128().map(LogicalId::from_u128)).collect::<Result<_>>()?
        } else {
            Vec::new()
        };
        r.finish()?;
        Ok(Self { tx_id, created_at_ms, state, staged, obsolete, detached })
    }
}

fn write_ids(w: &mut Writer, ids: &[PhysicalId]) {
    w.varint(ids.len() as u64);
    ids.iter().for_each(|id| w.u128(id.as_u128()));
}

fn read_ids(r: &mut Reader<'_>) -> Result<Vec<PhysicalId>> {
    let n = r.count(16)?;
    (0..n).map(|_| r.u128().map(PhysicalId::from_u128)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn intent_round_trips_and_rejects_corruption() {
        let mut i = Intent::pending(TxId::new(), vec![PhysicalId::new(), PhysicalId::new()]);
        i.state = IntentState::Committed;
        i.obsolete.push(PhysicalId::new());
        let bytes = i.encode();
        assert_eq!(bytes[1], 1, "no detached roots: version 1, which older builds read");
        assert_eq!(Intent::decode(&bytes).unwrap(), i);
        for n in 0..bytes.len() {
            assert_eq!(Intent::decode(&bytes[..n]).unwrap_err().kind(), ErrorKind::Corruption);
        }
        i.detached = vec![LogicalId::new(), LogicalId::new()];
        let bytes = i.encode();
        assert_eq!(bytes[1], 2);
        assert_eq!(Intent::decode(&bytes).unwrap(), i);
        for n in 0..bytes.len() {
            assert_eq!(Intent::decode(&bytes[..n]).unwrap_err().kind(), ErrorKind::Corruption);
        }
    }
}
