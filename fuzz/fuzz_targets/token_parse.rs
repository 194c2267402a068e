//! Arbitrary bytes as a token string: no panic, every rejection is
//! `Malformed`, every valid token round-trips (body in
//! `tests/model/targets.rs`, replayed by `tests/fuzz_corpus.rs`).
#![no_main]

#[path = "../../tests/model/mod.rs"]
mod model;

libfuzzer_sys::fuzz_target!(|data: &[u8]| model::targets::token_parse(data));
