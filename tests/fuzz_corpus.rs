//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/*`: the seeds
//! and every input a fuzz run once found interesting or crashing) through the
//! fuzz targets' own bodies (`tests/model/targets.rs`), so that `cargo test`
//! re-checks on every machine what the fuzzer checks: token parsing never
//! panics and round-trips (invariant 5), record decoding fails cleanly and
//! never allocates hugely (invariant 5), and operation sequences agree with
//! the model (invariants 2, 3, 4, 6, 7).

mod model;

use std::path::PathBuf;
use std::sync::Mutex;

use tokenvault::codec::{decode_any, RecordType};

#[global_allocator]
static ALLOC: model::targets::PeakAlloc = model::targets::PeakAlloc;

/// The allocation check measures the whole process: replay one target at a
/// time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir: PathBuf = [env!("CARGO_MANIFEST_DIR"), "fuzz", "corpus", target]
        .iter()
        .collect();
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p
                .file_name()
                .expect("file name")
                .to_string_lossy()
                .into_owned();
            let bytes =
                std::fs::read(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
            (name, bytes)
        })
        .collect();
    files.sort();
    assert!(files.len() >= 3, "the {target} corpus is missing or tiny");
    files
}

fn replay(target: &str, body: fn(&[u8])) -> usize {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let files = corpus(target);
    for (name, bytes) in &files {
        let r = std::panic::catch_unwind(|| body(bytes));
        assert!(r.is_ok(), "{target} corpus file {name} fails");
    }
    files.len()
}

#[test]
fn invariant_5_token_parse_corpus_replays() {
    assert!(replay("token_parse", model::targets::token_parse) >= 3);
}

#[test]
fn invariant_5_record_decode_corpus_replays_without_huge_allocations() {
    assert!(
        model::targets::alloc_check_active(),
        "the allocation-measuring allocator is not installed"
    );
    assert!(replay("record_decode", model::targets::record_decode) >= 3);
}

#[test]
fn record_decode_seeds_named_valid_are_valid_records() {
    // Guards the seeds against a format change that would leave the fuzzer
    // starting from garbage only.
    let mut checked = 0;
    for (name, bytes) in corpus("record_decode") {
        let kind = match name.split('-').nth(1) {
            Some("member") if name.starts_with("valid-") => RecordType::Member,
            Some("refresh") if name.starts_with("valid-") => RecordType::Refresh,
            Some("access") if name.starts_with("valid-") => RecordType::Access,
            Some("event") if name.starts_with("valid-") => RecordType::Event,
            _ => continue,
        };
        if let Err(e) = decode_any(kind, &bytes) {
            panic!("seed {name} no longer decodes as {kind:?}: {e}");
        }
        checked += 1;
    }
    assert_eq!(checked, 5, "expected five valid record seeds");
}

#[test]
fn invariants_2_3_4_6_7_ops_corpus_replays_against_the_model() {
    assert!(replay("ops", model::targets::ops) >= 3);
}
