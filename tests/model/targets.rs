//! The bodies of the fuzz targets as plain functions, so that the fuzz crate
//! (`fuzz/fuzz_targets/*.rs`) and `cargo test` (`tests/fuzz_corpus.rs`, which
//! replays the committed corpus) run the very same code.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokenvault::codec::{decode_any, RecordType};
use tokenvault::token::{decode_raw, encode_raw, inspect};
use tokenvault::{TokenId, TokenKind};

/// The largest single allocation a record decode may ask for. Records are
/// capped at 64 KiB; serde's own pre-allocation cap is 1 MiB.
pub const MAX_DECODE_ALLOC: usize = 1 << 20;

/// A global allocator that, while armed, remembers the largest single
/// request. A binary that installs it (`#[global_allocator]`) gets the
/// allocation check of [`record_decode`]; others skip it.
pub struct PeakAlloc;

static ARMED: AtomicBool = AtomicBool::new(false);
static INSTALLED: AtomicBool = AtomicBool::new(false);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the
// only addition is an atomic update that neither allocates nor panics.
unsafe impl GlobalAlloc for PeakAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

fn note(size: usize) {
    INSTALLED.store(true, Ordering::Relaxed);
    if ARMED.load(Ordering::Relaxed) {
        PEAK.fetch_max(size, Ordering::Relaxed);
    }
}

/// Whether [`PeakAlloc`] is this binary's global allocator (so that
/// [`record_decode`] checks allocation sizes).
pub fn alloc_check_active() -> bool {
    drop(Vec::<u8>::with_capacity(1));
    INSTALLED.load(Ordering::SeqCst)
}

/// Runs `f` and returns the largest single allocation it asked for, or
/// `None` when [`PeakAlloc`] is not the global allocator. Callers must not
/// run other allocating work concurrently (the fuzz_corpus tests hold a lock).
fn peak_of<R>(f: impl FnOnce() -> R) -> (R, Option<usize>) {
    PEAK.store(0, Ordering::SeqCst);
    ARMED.store(true, Ordering::SeqCst);
    let r = f();
    ARMED.store(false, Ordering::SeqCst);
    let installed = INSTALLED.load(Ordering::SeqCst);
    (r, installed.then(|| PEAK.load(Ordering::SeqCst)))
}

/// `token_parse`: arbitrary bytes as a token string. Nothing panics, every
/// rejection is `Malformed`, every accepted token round-trips to the same
/// text, and every id/secret pair encodes to a token that parses back.
pub fn token_parse(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for prefix in ["tv", "sq", "x"] {
        match inspect(prefix, &text) {
            Ok((kind, id)) => {
                let (raw_id, secret) =
                    decode_raw(prefix, kind, &text).expect("an accepted token decodes");
                assert_eq!(&raw_id, id.as_bytes(), "inspect and decode_raw disagree");
                assert_eq!(
                    encode_raw(prefix, kind, raw_id, secret),
                    text,
                    "a valid token has exactly one spelling"
                );
            }
            Err(e) => assert_eq!(e.kind(), "malformed", "rejection is not Malformed: {e}"),
        }
    }
    // Any prefix, even one a store would refuse: still no panic.
    if let Some((&n, rest)) = data.split_first() {
        let k = (n as usize % 20).min(rest.len());
        if let (Ok(p), Ok(t)) = (
            std::str::from_utf8(&rest[..k]),
            std::str::from_utf8(&rest[k..]),
        ) {
            let _ = inspect(p, t);
        }
    }
    // The other direction: raw parts make a token that parses back.
    if data.len() >= 49 {
        let kind = if data[0] & 1 == 0 {
            TokenKind::Refresh
        } else {
            TokenKind::Access
        };
        let mut id = [0u8; 16];
        id.copy_from_slice(&data[1..17]);
        let mut secret = [0u8; 32];
        secret.copy_from_slice(&data[17..49]);
        let t = encode_raw("tv", kind, id, secret);
        assert_eq!(
            inspect("tv", &t).ok(),
            Some((kind, TokenId::from_bytes(id)))
        );
        assert_eq!(decode_raw("tv", kind, &t).ok(), Some((id, secret)));
        let other = match kind {
            TokenKind::Refresh => TokenKind::Access,
            TokenKind::Access => TokenKind::Refresh,
        };
        assert!(
            decode_raw("tv", other, &t).is_err(),
            "a token parsed as the other kind"
        );
    }
    // Token ids (32 hex digits) round-trip too.
    if let Ok(id) = text.parse::<TokenId>() {
        assert_eq!(id.to_string(), text.to_ascii_lowercase());
        assert_eq!(id.to_string().parse::<TokenId>().ok(), Some(id));
    }
}

/// `record_decode`: arbitrary bytes as each stored record type. An error
/// (`Corrupt`), never a panic, never a single allocation above
/// [`MAX_DECODE_ALLOC`]; a record that decodes re-encodes to bytes that
/// decode to the same bytes again.
pub fn record_decode(data: &[u8]) {
    for kind in [
        RecordType::Member,
        RecordType::Refresh,
        RecordType::Access,
        RecordType::Event,
    ] {
        let (res, peak) = peak_of(|| decode_any(kind, data));
        if let Some(peak) = peak {
            assert!(
                peak <= MAX_DECODE_ALLOC,
                "decoding {} bytes as {kind:?} asked for {peak} bytes at once",
                data.len()
            );
        }
        match res {
            Ok(bytes) => {
                let again = decode_any(kind, &bytes).expect("a re-encoded record decodes");
                assert_eq!(again, bytes, "{kind:?} does not re-encode stably");
            }
            Err(e) => assert_eq!(e.kind(), "corrupt", "rejection is not Corrupt: {e}"),
        }
    }
}

/// `ops`: arbitrary bytes → an operation sequence run against the store
/// and the model (see `tests/model/harness.rs`); any disagreement panics with
/// the sequence.
pub fn ops(data: &[u8]) {
    let ops = super::decode_ops(data);
    if let Err(e) = super::run_ops(&ops) {
        panic!("{e}\noperations: {ops:#?}");
    }
}
