//! Locking the process-wide caches (pages, code objects, type names): a poisoned mutex only
//! means some other thread panicked; the cached data is still valid, so keep using it.

use std::sync::{Mutex, MutexGuard};

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
