//! Arbitrary bytes as each stored record type: an error, never a panic,
//! never a huge allocation (body in `tests/model/targets.rs`, replayed by
//! `tests/fuzz_corpus.rs`).
#![no_main]

#[path = "../../tests/model/mod.rs"]
mod model;

#[global_allocator]
static ALLOC: model::targets::PeakAlloc = model::targets::PeakAlloc;

libfuzzer_sys::fuzz_target!(|data: &[u8]| model::targets::record_decode(data));
