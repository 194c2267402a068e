//! Arbitrary bytes → an operation sequence run on a real store and on the
//! model, as `tests/model_ops.rs` does (body in `tests/model/targets.rs`,
//! replayed by `tests/fuzz_corpus.rs`).
#![no_main]

#[path = "../../tests/model/mod.rs"]
mod model;

libfuzzer_sys::fuzz_target!(|data: &[u8]| model::targets::ops(data));
