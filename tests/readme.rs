//! The README's library example is the crate documentation's example (which
//! rustdoc runs), line for line, so the README never shows code that does not
//! compile.

/// The first code block of the doc comments (lines starting with `marker`,
/// `//!` or `///`) in `src`, without its hidden (`# `) lines.
fn first_doc_block(src: &str, marker: &str) -> Vec<String> {
    let doc: Vec<&str> = src
        .lines()
        .filter_map(|l| l.strip_prefix(marker))
        .map(|l| l.strip_prefix(' ').unwrap_or(l))
        .collect();
    let start = doc.iter().position(|l| *l == "```").expect("doc example") + 1;
    let end = start + doc[start..].iter().position(|l| *l == "```").unwrap();
    doc[start..end]
        .iter()
        .filter(|l| !l.starts_with("# "))
        .map(|l| l.to_string())
        .collect()
}

/// The first ```` ```rust ```` block of the README after the line `heading`.
fn readme_block(heading: &str) -> Vec<String> {
    let readme = include_str!("../README.md");
    let lines: Vec<&str> = readme.lines().collect();
    let section = lines
        .iter()
        .position(|l| *l == heading)
        .unwrap_or_else(|| panic!("no section {heading:?}"));
    let lines = &lines[section..];
    let start = lines
        .iter()
        .position(|l| *l == "```rust")
        .expect("rust block")
        + 1;
    let end = start + lines[start..].iter().position(|l| *l == "```").unwrap();
    lines[start..end].iter().map(|l| l.to_string()).collect()
}

fn doc_example() -> Vec<String> {
    first_doc_block(include_str!("../src/lib.rs"), "//!")
}

fn readme_example() -> Vec<String> {
    readme_block("## Using the library")
}

#[test]
fn readme_example_matches_crate_docs() {
    let doc = doc_example();
    assert!(doc.len() > 10, "doc example too short: {doc:?}");
    assert_eq!(readme_example(), doc);
}

/// The first example of `AsyncTokenStore`'s documentation, without its
/// hidden lines.
fn async_doc_example() -> Vec<String> {
    let src = include_str!("../src/async_store/mod.rs");
    let head = &src[..src.find("pub struct AsyncTokenStore").expect("the struct")];
    first_doc_block(head, "///")
}

#[test]
fn readme_async_example_matches_the_async_face_docs() {
    let example = readme_block("## In an async service");
    let doc = async_doc_example();
    assert!(doc.len() > 5, "async doc example too short: {doc:?}");
    assert_eq!(example, doc);
}
