//! Shared by test files (each has `mod common;`): store fixtures
//! ([`store`]), command lines for the binary written on one line
//! ([`args`]), helpers for tests that run this test binary again as a
//! child process ([`child`]) and, with the `http` feature, a loopback HTTP
//! server and a log capture ([`http`]); with `postgres`, a scratch database
//! ([`pg`]). Not every file uses every helper.
#![allow(dead_code)]

pub mod args;
pub mod child;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "postgres")]
pub mod pg;
pub mod store;
#[cfg(feature = "cli")]
pub mod vault;

#[allow(unused_imports)]
pub use store::raw_sled;
