//! The package metadata keeps up with the crate: docs.rs builds exactly the
//! public cargo features (every feature but `default` and the internal ones
//! whose names start with `_`), so that a feature added later is documented
//! with its badge and the benchmark back door never is.

use std::collections::BTreeSet;
use std::process::Command;

/// The public features and docs.rs's feature list, from `cargo metadata`.
fn features() -> (BTreeSet<String>, BTreeSet<String>) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata is JSON");
    let package = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .find(|p| p["name"] == "tokenvault")
        .expect("the tokenvault package");
    let public = package["features"]
        .as_object()
        .expect("features")
        .keys()
        .filter(|f| *f != "default" && !f.starts_with('_'))
        .cloned()
        .collect();
    let docs_rs = package["metadata"]["docs"]["rs"]["features"]
        .as_array()
        .expect("[package.metadata.docs.rs] features")
        .iter()
        .map(|f| f.as_str().expect("a feature name").to_string())
        .collect();
    (public, docs_rs)
}

#[test]
fn docs_rs_builds_every_public_feature_and_no_internal_one() {
    let (public, docs_rs) = features();
    assert!(public.contains("http"), "features read: {public:?}");
    assert_eq!(
        docs_rs, public,
        "[package.metadata.docs.rs] features in Cargo.toml must list the public features"
    );
}

#[test]
fn docs_rs_passes_the_docsrs_cfg_that_lib_rs_reads() {
    let manifest = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .expect("Cargo.toml");
    let section = manifest
        .split("[package.metadata.docs.rs]")
        .nth(1)
        .expect("a [package.metadata.docs.rs] section");
    let section = section.split("\n[").next().unwrap_or(section);
    assert!(
        section.contains(r#"rustdoc-args = ["--cfg", "docsrs"]"#),
        "{section}"
    );
    let lib = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/lib.rs"))
        .expect("src/lib.rs");
    assert!(lib.contains("#![cfg_attr(docsrs, feature(doc_cfg))]"));
}
