//! A model of the store's semantics in plain maps, the operations that drive
//! the store and the model side by side, and the runner that compares them.
//!
//! Shared by `tests/model_ops.rs` (proptest), `tests/fuzz_corpus.rs` (replay
//! of the committed fuzz corpus) and the `ops` target of the fuzz crate,
//! which includes this file with `#[path]`. Operations are decoded from
//! bytes (eight bytes each, see [`decode_op`]) so that proptest and the
//! fuzzer share one generator. The universe is small on purpose: two
//! organizations, four users, a handful of tokens, so that sequences keep
//! coming back to the same members and tokens.
//!
//! After every operation the runner compares the call's result with the
//! model's and then checks the store as a whole ([`Harness::check`]):
//! DESIGN.md's invariants 2 (revoked stays revoked), 3 (scopes within the
//! current role), 4 (a failed call changes nothing), 6 (`check_integrity` is
//! clean, and a reopened store equals the model) and 7 (orgs are isolated).
//!
//! Three parts: [`ops`] (the operations and their byte decoder),
//! [`model`] (the reference model in plain maps) and [`harness`] (the
//! runner that applies operations to both and compares); this file only
//! declares them and re-exports their items, so that users keep writing
//! `model::Op`, `model::run_ops` and so on.

#![allow(dead_code)]

pub mod targets;

pub mod harness;
#[allow(clippy::module_inception)]
pub mod model;
pub mod ops;

// Not every file that includes this module uses every item.
#[allow(unused_imports)]
pub use harness::*;
#[allow(unused_imports)]
pub use model::*;
#[allow(unused_imports)]
pub use ops::*;
