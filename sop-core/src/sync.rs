//! The one place that chooses std or loom synchronization primitives.
//!
//! Code whose interleavings matter imports `Arc`, `Mutex` and atomics from
//! here, so that `cargo xtask loom` (which builds with `--cfg sop_loom`) can
//! model-check it.

#[cfg(sop_loom)]
pub use loom::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard, atomic};
#[cfg(sop_loom)]
pub use loom::thread;
#[cfg(sop_loom)]
pub use std::sync::TryLockError;
#[cfg(not(sop_loom))]
pub use std::sync::{
    Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard, TryLockError, atomic,
};
#[cfg(not(sop_loom))]
pub use std::thread;

/// Locks `m`, ignoring poisoning: every critical section in SOP-rs leaves
/// its data consistent before anything can panic.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
