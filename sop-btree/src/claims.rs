//! [`Claims`]: the intents this process is still working on (a commit in
//! progress, or a clean-up not yet done), which periodic recovery leaves
//! alone.

use std::sync::{Arc, Mutex, PoisonError, Weak};

use rustc_hash::FxHashSet;
use sop_core::TxId;

/// The set of claimed intents, by transaction id.
#[derive(Debug, Default)]
pub(crate) struct Claims {
    owned: Mutex<FxHashSet<TxId>>,
}

/// One claimed intent; the claim ends when this drops (the commit failed,
/// or its clean-up is done).
#[derive(Debug)]
pub(crate) struct Claim {
    claims: Weak<Claims>,
    tx_id: TxId,
}

impl Claims {
    /// Claims `tx_id`'s intent until the returned [`Claim`] drops.
    pub(crate) fn claim(self: &Arc<Self>, tx_id: TxId) -> Claim {
        self.owned.lock().unwrap_or_else(PoisonError::into_inner).insert(tx_id);
        Claim { claims: Arc::downgrade(self), tx_id }
    }

    /// Whether `tx_id`'s intent is claimed.
    pub(crate) fn holds(&self, tx_id: TxId) -> bool {
        self.owned.lock().unwrap_or_else(PoisonError::into_inner).contains(&tx_id)
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(claims) = self.claims.upgrade() {
            claims.owned.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.tx_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_holds_until_dropped_and_claims_are_independent() {
        let claims = Arc::new(Claims::default());
        let (a, b) = (TxId::new(), TxId::new());
        let ca = claims.claim(a);
        let cb = claims.claim(b);
        assert!(claims.holds(a) && claims.holds(b));
        drop(ca);
        assert!(!claims.holds(a) && claims.holds(b));
        drop(claims);
        drop(cb); // outliving the set is harmless
    }
}
