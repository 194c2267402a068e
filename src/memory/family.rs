//! A family's lock and bookkeeping, as its refresh entry holds them: a
//! one-byte raw lock in what would be the entry's padding and, four bytes
//! further, the count it guards, reached only through a [`FamilyGuard`]
//! (a `parking_lot::Mutex` of the count would take eight bytes in a place
//! of its own, and the entry would not fit in 64).

use std::cell::UnsafeCell;
use std::marker::PhantomData;

use parking_lot::lock_api::RawMutex as _;
use parking_lot::RawMutex;

/// A family's bookkeeping in its refresh entry, under the family's lock:
/// how many of its access tokens memory holds (what the cap counts).
/// Which ones, oldest first, the backend's access records tell (read
/// when the cap evicts or a purge removes the family); the client of the
/// last exchange is in memory's own map of clients. Four bytes, beside
/// the family's one-byte lock in the refresh entry (see [`FamilyCell`]).
#[derive(Default)]
pub(crate) struct FamilyBook {
    held: u32,
}

impl FamilyBook {
    /// How many of the family's access tokens memory holds.
    #[inline]
    pub(crate) fn live_count(&self) -> usize {
        self.held as usize
    }
    /// One more held.
    pub(super) fn add_one(&mut self) {
        self.held = self.held.saturating_add(1);
    }
    /// One fewer held.
    pub(super) fn remove_one(&mut self) {
        self.held = self.held.saturating_sub(1);
    }
}

/// A family's bookkeeping as its refresh entry holds it: reached only
/// through a [`FamilyGuard`], which holds the entry's family lock.
#[repr(transparent)]
pub(crate) struct FamilyCell(UnsafeCell<FamilyBook>);

impl FamilyCell {
    /// A family's bookkeeping as a new refresh entry starts it.
    pub(super) fn new() -> FamilyCell {
        FamilyCell(UnsafeCell::new(FamilyBook::default()))
    }
}

// SAFETY: the book is read and written only through a `FamilyGuard` (its
// field is private to this module), which holds the family's lock: shared
// as `parking_lot::Mutex` shares its value.
#[allow(unsafe_code)]
unsafe impl Sync for FamilyCell {}

/// A family's lock, not held: what a new refresh entry starts with.
pub(super) fn unlocked() -> RawMutex {
    RawMutex::INIT
}

/// A family's lock, held (see `RefreshHot::lock_family`): its
/// bookkeeping to read and change, the lock let go when this is dropped,
/// on the thread that took it (a guard is not `Send`, as a
/// `parking_lot::MutexGuard` is not).
pub(crate) struct FamilyGuard<'a> {
    lock: &'a RawMutex,
    cell: &'a FamilyCell,
    _not_send: PhantomData<*const ()>,
}

impl<'a> FamilyGuard<'a> {
    /// Takes `lock`, the one that guards `cell` (the two fields of one
    /// refresh entry). Blocks while another holds it.
    #[inline]
    pub(super) fn lock(lock: &'a RawMutex, cell: &'a FamilyCell) -> FamilyGuard<'a> {
        lock.lock();
        FamilyGuard {
            lock,
            cell,
            _not_send: PhantomData,
        }
    }
}

// SAFETY: shared, a guard only reads the book (as a `MutexGuard` may be
// shared when its value may).
#[allow(unsafe_code)]
unsafe impl Sync for FamilyGuard<'_> {}

#[allow(unsafe_code)]
impl std::ops::Deref for FamilyGuard<'_> {
    type Target = FamilyBook;
    fn deref(&self) -> &FamilyBook {
        // SAFETY: this guard holds the family's lock, so nothing else
        // reaches the book until it is dropped.
        unsafe { &*self.cell.0.get() }
    }
}

#[allow(unsafe_code)]
impl std::ops::DerefMut for FamilyGuard<'_> {
    fn deref_mut(&mut self) -> &mut FamilyBook {
        // SAFETY: as above, and the guard is borrowed mutably.
        unsafe { &mut *self.cell.0.get() }
    }
}

#[allow(unsafe_code)]
impl Drop for FamilyGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: the guard was made by locking this lock, once.
        unsafe { self.lock.unlock() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A family's lock excludes: threads counting under it lose no count,
    /// and each sees the book as the last holder left it.
    #[test]
    fn a_family_lock_lets_one_writer_in_at_a_time() {
        let (lock, cell) = (unlocked(), FamilyCell::new());
        let per = 20_000;
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    for _ in 0..per {
                        let mut book = FamilyGuard::lock(&lock, &cell);
                        let before = book.live_count();
                        // A write the others would overwrite, unlocked.
                        std::hint::black_box(&mut *book).held = before as u32 + 1;
                    }
                });
            }
        });
        assert_eq!(FamilyGuard::lock(&lock, &cell).live_count(), 3 * per);
        let mut book = FamilyGuard::lock(&lock, &cell);
        book.remove_one();
        drop(book);
        assert_eq!(FamilyGuard::lock(&lock, &cell).live_count(), 3 * per - 1);
    }
}
