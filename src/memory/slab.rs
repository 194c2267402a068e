//! Refresh entries packed in large chunks instead of one heap block each.
//!
//! Every refresh token memory holds used to be an `Arc` of its own: two
//! reference counts (16 bytes) and the allocator's header (8 bytes) on top
//! of the entry, rounded up to the allocator's 16-byte steps, one
//! allocation per token while a store loads, placed between the load's own
//! short-lived buffers. A [`Slab`] hands out fixed-size slots of 2 MiB
//! chunks instead: a slot is the entry and a 4-byte reference count,
//! nothing else (a free slot links to the next free one in its entry's
//! place). A refresh entry's slot is 68 bytes, and the slots start at a
//! cache line: of every sixteen entries, ten have what verification reads
//! (their first 25 bytes) in one line, the other six in two, which the
//! processor asks for at once.
//!
//! [`SlabArc`] is the reference: it behaves as an `Arc` (clone, deref,
//! the entry dropped with its last reference), in four bytes: the number
//! of its chunk and its slot's place in it, not an address. Chunks are
//! numbered for the whole process (every slab's), and a table of their
//! addresses by number, 1 MiB of address space touched only where chunks
//! are, turns a reference into its slot with one read of a line that
//! stays in the cache (a store of ten million tokens has a few hundred
//! chunks). Four bytes instead of eight let an access entry, a refresh
//! entry and a refresh table's slot be smaller by that much (see
//! `entries.rs`).
//!
//! A chunk lives while any of its slots does or its slab does: it counts
//! both, so a reference may outlive its slab (as an entry of a memory
//! replaced after a storage fault may). A slot freed while its slab lives goes on its chunk's free
//! list and is handed out again before the slab takes a new slot. A slab
//! does not give its chunks back before it goes: after a purge, their
//! freed slots wait for the next entries.

#![allow(unsafe_code)]

use std::alloc::Layout;
use std::marker::PhantomData;
use std::mem::{align_of, size_of, MaybeUninit};
use std::num::NonZeroU32;
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicPtr, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam_utils::CachePadded;
use parking_lot::Mutex;

/// The size of a chunk, and its alignment: a slot's chunk is found by
/// clearing the low bits of the slot's address.
const CHUNK_BYTES: usize = 2 << 20;

/// No slot (the end of a free list).
const NONE: u32 = u32::MAX;

/// How many of a reference's low bits name its slot within its chunk;
/// the bits above, its chunk's number.
const SLOT_BITS: u32 = 15;

/// How many chunks the process's slabs can hold at once: as many numbers
/// as the bits above [`SLOT_BITS`] count (0 is never a chunk's, so that no
/// reference is 0). 131,071 chunks of 2 MiB: 256 GiB of entries.
const MAX_CHUNKS: usize = 1 << (32 - SLOT_BITS);

/// Every chunk's address, by its number (null: no such chunk). Written when
/// a chunk is made and when it is freed; read by every reference that
/// reaches its slot. Zeroed, it takes no memory until chunks are numbered.
static CHUNKS: [AtomicPtr<u8>; MAX_CHUNKS] =
    [const { AtomicPtr::new(std::ptr::null_mut()) }; MAX_CHUNKS];

/// Chunk numbers: the next never used, and those given back.
struct Numbers {
    next: u32,
    free: Vec<u32>,
}

static NUMBERS: std::sync::Mutex<Numbers> = std::sync::Mutex::new(Numbers {
    next: 1,
    free: Vec::new(),
});

/// A number for a new chunk at `base`, its address put in [`CHUNKS`];
/// `None` when every number is taken.
fn number_chunk(base: NonNull<u8>) -> Option<u32> {
    let mut n = NUMBERS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let number = match n.free.pop() {
        Some(k) => k,
        None if (n.next as usize) < MAX_CHUNKS => {
            n.next += 1;
            n.next - 1
        }
        None => return None,
    };
    CHUNKS[number as usize].store(base.as_ptr(), Ordering::Release);
    Some(number)
}

/// Gives a freed chunk's number back.
fn unnumber_chunk(number: u32) {
    CHUNKS[number as usize].store(std::ptr::null_mut(), Ordering::Release);
    NUMBERS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .free
        .push(number);
}

/// A chunk's bookkeeping, at its start.
struct Header {
    /// Slots in use or not yet handed out, plus one while the slab that
    /// made the chunk lives: the chunk is freed when this falls to zero.
    /// (Counting the slots not yet handed out from the start spares each
    /// new slot a write to this shared word.)
    live: AtomicUsize,
    /// The first free slot (freed by its last reference), the rest linked
    /// through their `next`.
    free: Mutex<u32>,
    /// Slots freed and not yet handed out again, in every chunk of the
    /// slab's part that made this one (shared with it): the part is
    /// searched for a free slot only when it has one.
    part_free: Arc<AtomicUsize>,
    /// The chunk's number (see [`CHUNKS`]).
    number: u32,
}

/// One slot: while its reference count is above zero, a value. The value
/// comes first, at the slot's start (the first slot's a cache line's, see
/// [`first_slot`]); the count after it. A free slot has no value: its
/// first four bytes link it to the next free slot of its chunk (see
/// [`next_free`]).
#[repr(C)]
struct Slot<T> {
    val: MaybeUninit<T>,
    refs: AtomicU32,
}

/// Where a free slot keeps the number of the next free slot of its chunk:
/// the first four bytes of its value's place (read and written unaligned,
/// under the chunk's free-list lock, while no reference to the slot
/// exists).
///
/// # Safety
///
/// `slot` points to a slot of a live chunk.
unsafe fn next_free<T>(slot: *mut Slot<T>) -> *mut u32 {
    // SAFETY: the caller's slot lies within a live chunk; the value's
    // place is at least four bytes (`Slab::new` checks it).
    unsafe { std::ptr::addr_of_mut!((*slot).val).cast::<u32>() }
}

/// Where a chunk's first slot begins: on a cache line of its own (so that
/// with slots of a multiple of 64 bytes, each slot would start a line;
/// with a refresh entry's 68, every sixteenth one does).
const fn first_slot<T>() -> usize {
    let a = if align_of::<Slot<T>>() > 64 {
        align_of::<Slot<T>>()
    } else {
        64
    };
    size_of::<Header>().div_ceil(a) * a
}

/// How many slots a chunk holds.
const fn slots_per_chunk<T>() -> usize {
    (CHUNK_BYTES - first_slot::<T>()) / size_of::<Slot<T>>()
}

fn chunk_layout() -> Layout {
    // A power of two no larger than isize::MAX: always valid.
    Layout::from_size_align(CHUNK_BYTES, CHUNK_BYTES).expect("a valid chunk layout")
}

/// A chunk: its header, then its slots.
struct Chunk<T> {
    base: NonNull<u8>,
    number: u32,
    _t: PhantomData<T>,
}

impl<T> Chunk<T> {
    /// A new chunk whose `live` counts its slab and all its slots, and
    /// whose freed slots are counted in `part_free`.
    fn new(part_free: &Arc<AtomicUsize>) -> Chunk<T> {
        let layout = chunk_layout();
        // SAFETY: the layout has a non-zero size.
        let base = unsafe { std::alloc::alloc(layout) };
        let Some(base) = NonNull::new(base) else {
            std::alloc::handle_alloc_error(layout);
        };
        let Some(number) = number_chunk(base) else {
            // Every chunk number is taken: as out of memory (256 GiB of
            // entries are held).
            // SAFETY: allocated above with this layout, never used.
            unsafe { std::alloc::dealloc(base.as_ptr(), layout) };
            std::alloc::handle_alloc_error(layout);
        };
        // SAFETY: `base` is a fresh allocation of CHUNK_BYTES aligned to
        // CHUNK_BYTES, which holds a `Header` at its start (the first slot
        // begins past it, see `first_slot`) and is aligned enough for it.
        unsafe {
            base.as_ptr().cast::<Header>().write(Header {
                live: AtomicUsize::new(1 + slots_per_chunk::<T>()),
                free: Mutex::new(NONE),
                part_free: part_free.clone(),
                number,
            });
        }
        Chunk {
            base,
            number,
            _t: PhantomData,
        }
    }

    fn header(&self) -> &Header {
        // SAFETY: written in `Chunk::new`, dropped only with the chunk.
        unsafe { &*self.base.as_ptr().cast::<Header>() }
    }

    fn slot(&self, i: usize) -> NonNull<Slot<T>> {
        debug_assert!(i < slots_per_chunk::<T>());
        // SAFETY: slot `i` lies within the chunk (`i` below the number of
        // slots), at a multiple of the slot's alignment from an address
        // aligned to CHUNK_BYTES.
        unsafe {
            NonNull::new_unchecked(
                self.base
                    .as_ptr()
                    .add(first_slot::<T>() + i * size_of::<Slot<T>>())
                    .cast::<Slot<T>>(),
            )
        }
    }

    /// The reference to slot `i` (see [`SlabArc`]).
    fn reference(&self, i: usize) -> NonZeroU32 {
        let r = (self.number << SLOT_BITS) | i as u32;
        NonZeroU32::new(r).expect("chunk numbers start at 1")
    }

    /// Takes a slot off the free list, if there is one.
    fn pop_free(&self) -> Option<(NonNull<Slot<T>>, NonZeroU32)> {
        let mut head = self.header().free.lock();
        if *head == NONE {
            return None;
        }
        let i = *head as usize;
        let slot = self.slot(i);
        // SAFETY: a slot on the free list has no reference, so nothing
        // else reads or writes its link; the list's lock is held.
        *head = unsafe { next_free(slot.as_ptr()).read_unaligned() };
        Some((slot, self.reference(i)))
    }
}

/// Drops `n` counts of a chunk's `live`, freeing the chunk at zero.
///
/// # Safety
///
/// `header` is the header of a live chunk whose `live` the caller counts
/// `n` for.
unsafe fn release_chunk(header: *mut Header, n: usize) {
    // SAFETY: the caller's counts keep the chunk alive until here.
    if unsafe { (*header).live.fetch_sub(n, Ordering::Release) } != n {
        return;
    }
    fence(Ordering::Acquire);
    // SAFETY: nothing counts on the chunk any more: no slot is in use and
    // its slab is gone, so nothing else reads it (no reference names its
    // number). Its header is dropped (its share of the free count) and the
    // chunk freed as it was made.
    let number = unsafe {
        let number = (*header).number;
        std::ptr::drop_in_place(header);
        std::alloc::dealloc(header.cast::<u8>(), chunk_layout());
        number
    };
    unnumber_chunk(number);
}

/// A part of a slab: its own chunks, the last of them handing out new
/// slots in order.
struct Inner<T> {
    chunks: Vec<Chunk<T>>,
    /// Slots of the last chunk handed out so far.
    bump: usize,
    /// Where the search for a free slot resumes.
    cursor: usize,
}

impl<T> Inner<T> {
    /// A slot off the free list of one of the part's chunks, counted in
    /// its chunk's `live` again.
    fn pop_free(&mut self) -> Option<(NonNull<Slot<T>>, NonZeroU32)> {
        let n = self.chunks.len();
        for k in 0..n {
            let c = (self.cursor + k) % n;
            if let Some(found) = self.chunks[c].pop_free() {
                self.cursor = c;
                self.chunks[c].header().live.fetch_add(1, Ordering::Relaxed);
                return Some(found);
            }
        }
        None
    }
}

/// A part of a slab, with its count of freed slots (which its chunks
/// raise) readable without its lock.
struct Part<T> {
    inner: Mutex<Inner<T>>,
    free: Arc<AtomicUsize>,
}

impl<T> Part<T> {
    /// A freed slot of the part's, if it has one.
    fn take_free(&self) -> Option<(NonNull<Slot<T>>, NonZeroU32)> {
        if self.free.load(Ordering::Acquire) == 0 {
            return None;
        }
        let slot = self.inner.lock().pop_free()?;
        self.free.fetch_sub(1, Ordering::AcqRel);
        Some(slot)
    }
}

/// How many parts a slab has: threads putting entries in at once (a
/// store's loader threads) each take new slots from a part of their own,
/// so that they do not pass its lock and its chunk back and forth between
/// their cores.
const PARTS: usize = 8;

static NEXT_PART: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's part of every slab.
    static PART: usize = NEXT_PART.fetch_add(1, Ordering::Relaxed) % PARTS;
}

/// Fixed-size slots for values of `T`, in 2 MiB chunks (see the module
/// doc).
pub(crate) struct Slab<T> {
    parts: Box<[CachePadded<Part<T>>]>,
}

// SAFETY: a slab hands values of `T` to whichever thread holds a
// reference; it is shared as `Arc<T>` would be.
unsafe impl<T: Send + Sync> Send for Slab<T> {}
// SAFETY: as above; its own state is behind locks and atomics.
unsafe impl<T: Send + Sync> Sync for Slab<T> {}

impl<T> Slab<T> {
    pub(crate) fn new() -> Slab<T> {
        const {
            assert!(
                size_of::<T>() >= 4
                    && slots_per_chunk::<T>() > 0
                    && slots_per_chunk::<T>() <= 1 << SLOT_BITS,
                "a slab holds values of four bytes or more, several to a chunk, \
                 and no more to a chunk than a reference can name"
            )
        };
        Slab {
            parts: (0..PARTS)
                .map(|_| {
                    CachePadded::new(Part {
                        inner: Mutex::new(Inner {
                            chunks: Vec::new(),
                            bump: 0,
                            cursor: 0,
                        }),
                        free: Arc::default(),
                    })
                })
                .collect(),
        }
    }

    /// Puts `val` in a slot and answers its first reference: a slot freed
    /// earlier (of this thread's part first, then of any other), else a
    /// new one of this thread's part. Does not block beyond the parts'
    /// locks (and, once per chunk, allocating one).
    pub(crate) fn alloc(&self, val: T) -> SlabArc<T> {
        let own = PART.try_with(|p| *p).unwrap_or(0);
        let (slot, r) = (0..PARTS)
            .find_map(|k| self.parts[(own + k) % PARTS].take_free())
            .unwrap_or_else(|| self.new_slot(&self.parts[own]));
        // SAFETY: the slot is ours alone (fresh, or off a free list: no
        // reference to it exists), within its chunk and aligned for it,
        // and its chunk counts it in `live` (from the start, or
        // `Inner::pop_free`). Written whole: a fresh slot holds nothing.
        unsafe {
            slot.as_ptr().write(Slot {
                val: MaybeUninit::new(val),
                refs: AtomicU32::new(1),
            });
        }
        SlabArc { r, _t: PhantomData }
    }

    /// The next slot never handed out of `part`'s last chunk, a chunk
    /// made for it when that one is used up.
    fn new_slot(&self, part: &Part<T>) -> (NonNull<Slot<T>>, NonZeroU32) {
        let mut inner = part.inner.lock();
        if inner.chunks.is_empty() || inner.bump == slots_per_chunk::<T>() {
            inner.chunks.push(Chunk::new(&part.free));
            inner.bump = 0;
        }
        let last = inner.chunks.last().expect("a chunk was just made");
        let found = (last.slot(inner.bump), last.reference(inner.bump));
        inner.bump += 1;
        found
    }

    /// The chunks' bytes (what the slab holds, used or not).
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.parts
            .iter()
            .map(|p| p.inner.lock().chunks.len())
            .sum::<usize>()
            * CHUNK_BYTES
    }
}

impl<T> Drop for Slab<T> {
    fn drop(&mut self) {
        for part in self.parts.iter_mut() {
            let inner = part.inner.get_mut();
            let unused = slots_per_chunk::<T>() - inner.bump;
            let last = inner.chunks.len().saturating_sub(1);
            for (i, c) in inner.chunks.drain(..).enumerate() {
                // The slab's own count, and the slots of the last chunk it
                // never handed out.
                let n = 1 + if i == last { unused } else { 0 };
                // SAFETY: counts of the slab's, given up once.
                unsafe { release_chunk(c.base.as_ptr().cast::<Header>(), n) };
            }
        }
    }
}

/// A reference to a value in a [`Slab`]: as `Arc<T>`, without its two
/// words of counts and its heap block, and in four bytes: its chunk's
/// number (see [`CHUNKS`]) above [`SLOT_BITS`], its slot's place in the
/// chunk below. Never 0, so that an `Option` of it takes four bytes too.
pub(crate) struct SlabArc<T> {
    r: NonZeroU32,
    _t: PhantomData<T>,
}

// SAFETY: shared as `Arc<T>` is: the value is reached from any thread
// holding a reference, and dropped by whichever drops the last.
unsafe impl<T: Send + Sync> Send for SlabArc<T> {}
// SAFETY: as above.
unsafe impl<T: Send + Sync> Sync for SlabArc<T> {}

impl<T> SlabArc<T> {
    /// The address of the value (as `Arc::as_ptr`).
    #[inline]
    pub(crate) fn as_ptr(this: &SlabArc<T>) -> *const T {
        this.slot().val.as_ptr()
    }

    /// Whether both refer to the same slot.
    pub(crate) fn ptr_eq(a: &SlabArc<T>, b: &SlabArc<T>) -> bool {
        a.r == b.r
    }

    /// The chunk's address and the slot's place in it.
    #[inline(always)]
    fn place(&self) -> (*mut u8, usize) {
        let r = self.r.get();
        // Relaxed: whoever handed this reference over made its chunk's
        // address visible first (the chunk was numbered before any of its
        // references existed, and a reference travels between threads
        // only through what orders memory: a lock, or an atomic count),
        // and the number is not given to another chunk while this
        // reference keeps the chunk. `r >> SLOT_BITS` is below
        // `MAX_CHUNKS` for any `u32`.
        let base = CHUNKS[(r >> SLOT_BITS) as usize].load(Ordering::Relaxed);
        (base, (r & ((1 << SLOT_BITS) - 1)) as usize)
    }

    #[inline(always)]
    fn slot_ptr(&self) -> *mut Slot<T> {
        let (base, i) = self.place();
        // SAFETY: the reference keeps its chunk alive, so `base` is that
        // chunk's address, and slot `i` lies within it (see `Chunk::slot`).
        unsafe {
            base.add(first_slot::<T>() + i * size_of::<Slot<T>>())
                .cast::<Slot<T>>()
        }
    }

    #[inline(always)]
    fn slot(&self) -> &Slot<T> {
        // SAFETY: this reference keeps the slot (and so its chunk) alive.
        unsafe { &*self.slot_ptr() }
    }
}

impl<T> std::ops::Deref for SlabArc<T> {
    type Target = T;
    #[inline(always)]
    fn deref(&self) -> &T {
        // SAFETY: the value was written before the first reference was
        // made, and is dropped only after the last is gone.
        unsafe { self.slot().val.assume_init_ref() }
    }
}

impl<T> Clone for SlabArc<T> {
    fn clone(&self) -> Self {
        let old = self.slot().refs.fetch_add(1, Ordering::Relaxed);
        if old > u32::MAX / 2 {
            // As `Arc`: a count this high is a leak of references.
            std::process::abort();
        }
        SlabArc {
            r: self.r,
            _t: PhantomData,
        }
    }
}

impl<T> Drop for SlabArc<T> {
    fn drop(&mut self) {
        if self.slot().refs.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        fence(Ordering::Acquire);
        let (base, index) = self.place();
        let slot = self.slot_ptr();
        let chunk = base.cast::<Header>();
        // SAFETY: the last reference is gone: the value is dropped once,
        // then the slot goes on its chunk's free list (under its lock) and
        // the chunk's count of it is given up. The chunk lives until then:
        // this slot was counted in its `live`.
        unsafe {
            (*slot).val.assume_init_drop();
            {
                let header = &*chunk;
                let mut head = header.free.lock();
                next_free(slot).write_unaligned(*head);
                *head = index as u32;
                header.part_free.fetch_add(1, Ordering::AcqRel);
            }
            release_chunk(chunk, 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts its drops.
    struct Counted(Arc<AtomicUsize>, [u64; 14]);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A slot is the value and its count (no heap block of its own), and
    /// a chunk holds thousands.
    #[test]
    fn a_slot_is_the_value_and_a_count() {
        assert_eq!(size_of::<SlabArc<[u64; 15]>>(), 4);
        assert_eq!(size_of::<Option<SlabArc<[u64; 15]>>>(), 4);
        assert_eq!(size_of::<Slot<[u64; 15]>>(), 128);
        assert_eq!(size_of::<Slot<super::super::entries::RefreshHot>>(), 68);
        // The value at the slot's start; the first slot starts a cache line.
        assert_eq!(std::mem::offset_of!(Slot<[u64; 15]>, val), 0);
        assert_eq!(first_slot::<[u64; 15]>() % 64, 0);
        assert_eq!(first_slot::<super::super::entries::RefreshHot>() % 64, 0);
        assert!(slots_per_chunk::<super::super::entries::RefreshHot>() > 21_000);
        assert!(slots_per_chunk::<super::super::entries::RefreshHot>() <= 1 << SLOT_BITS);
        assert!(slots_per_chunk::<super::super::entries::MemberHot>() <= 1 << SLOT_BITS);
    }

    /// Every value is dropped once, with its last reference, whichever
    /// thread drops it and whether or not the slab is gone by then; freed
    /// slots are handed out again before new ones.
    #[test]
    fn values_drop_once_and_slots_are_reused() {
        let drops = Arc::new(AtomicUsize::new(0));
        let slab: Slab<Counted> = Slab::new();
        let n = slots_per_chunk::<Counted>() + 10;
        let mut refs: Vec<SlabArc<Counted>> = (0..n)
            .map(|i| slab.alloc(Counted(drops.clone(), [i as u64; 14])))
            .collect();
        assert_eq!(slab.bytes(), 2 * CHUNK_BYTES);
        for (i, r) in refs.iter().enumerate() {
            assert_eq!(r.1[13], i as u64);
        }
        let copies: Vec<SlabArc<Counted>> = refs.iter().step_by(2).cloned().collect();
        std::thread::scope(|s| {
            let half = refs.split_off(n / 2);
            s.spawn(move || drop(half));
        });
        refs.clear();
        // The odd ones are gone; the even ones live on in `copies`.
        assert_eq!(drops.load(Ordering::Relaxed), n / 2);
        for (k, c) in copies.iter().enumerate() {
            assert_eq!(c.1[0], 2 * k as u64);
        }
        // As many new values as freed slots: no new chunk.
        let again: Vec<SlabArc<Counted>> = (0..n / 2)
            .map(|i| slab.alloc(Counted(drops.clone(), [1_000_000 + i as u64; 14])))
            .collect();
        assert_eq!(slab.bytes(), 2 * CHUNK_BYTES);
        assert!(copies
            .iter()
            .all(|c| !again.iter().any(|a| SlabArc::ptr_eq(a, c))));
        // References outlive their slab.
        drop(slab);
        assert_eq!(again[3].1[0], 1_000_003);
        drop(copies);
        drop(again);
        assert_eq!(drops.load(Ordering::Relaxed), n + n / 2);
    }

    /// Chunk numbers are the process's: two slabs' references never name
    /// the same slot, a reference keeps its chunk's number past its slab,
    /// and a freed chunk gives its number back (more slabs come and go
    /// here than there are numbers: were one kept, the last would find
    /// none and end the process).
    #[test]
    fn chunk_numbers_are_given_back() {
        let drops = Arc::new(AtomicUsize::new(0));
        let a: Slab<Counted> = Slab::new();
        let b: Slab<Counted> = Slab::new();
        let ra = a.alloc(Counted(drops.clone(), [1; 14]));
        let rb = b.alloc(Counted(drops.clone(), [2; 14]));
        assert!(!SlabArc::ptr_eq(&ra, &rb));
        assert_ne!(ra.r.get() >> SLOT_BITS, rb.r.get() >> SLOT_BITS);
        drop(a);
        drop(b);
        assert_eq!((ra.1[0], rb.1[0]), (1, 2));
        drop((ra, rb));
        for i in 0..MAX_CHUNKS as u64 + 10 {
            let slab: Slab<Counted> = Slab::new();
            let r = slab.alloc(Counted(drops.clone(), [i; 14]));
            assert_eq!(r.1[13], i);
        }
        assert_eq!(drops.load(Ordering::Relaxed), MAX_CHUNKS + 12);
    }

    /// A slot freed by one thread's values is handed to another thread
    /// (which takes new slots from another part of the slab) rather than
    /// a new chunk made for it.
    #[test]
    fn freed_slots_serve_every_thread() {
        let drops = Arc::new(AtomicUsize::new(0));
        let slab: Slab<Counted> = Slab::new();
        let make = |base: u64| {
            (0..1_000u64)
                .map(|i| slab.alloc(Counted(drops.clone(), [base + i; 14])))
                .collect::<Vec<_>>()
        };
        std::thread::scope(|s| {
            s.spawn(|| drop(make(0)));
        });
        assert_eq!(drops.load(Ordering::Relaxed), 1_000);
        let kept = std::thread::scope(|s| s.spawn(|| make(5_000)).join().expect("no panic"));
        assert_eq!(slab.bytes(), CHUNK_BYTES, "one chunk served both threads");
        assert!(kept
            .iter()
            .enumerate()
            .all(|(i, k)| k.1[0] == 5_000 + i as u64));
    }

    /// Threads allocating, cloning and dropping at once keep every value
    /// whole and drop each once.
    #[test]
    fn threads_share_a_slab() {
        let drops = Arc::new(AtomicUsize::new(0));
        let slab: Slab<Counted> = Slab::new();
        let per = 20_000;
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let (slab, drops) = (&slab, drops.clone());
                s.spawn(move || {
                    let mut kept = Vec::new();
                    for i in 0..per as u64 {
                        let r = slab.alloc(Counted(drops.clone(), [t << 32 | i; 14]));
                        let c = r.clone();
                        assert_eq!(c.1[7], t << 32 | i);
                        if i % 3 == 0 {
                            kept.push(c);
                        }
                    }
                    for k in &kept {
                        assert_eq!(k.1[0] >> 32, t);
                    }
                });
            }
        });
        assert_eq!(drops.load(Ordering::Relaxed), 4 * per);
        // Most slots were freed and reused as they went: a chunk per
        // thread at most (each takes slots from its part of the slab), far
        // fewer than 80,000 values would take.
        assert!(slab.bytes() <= 4 * CHUNK_BYTES, "{}", slab.bytes());
    }
}
