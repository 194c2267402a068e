//! The crate's top-level modules depend on each other one way: this reads
//! the `crate::…` paths of `src/` (outside `#[cfg(test)]` modules, which sit
//! at the end of their files) and fails on an import cycle among top-level
//! modules, or on an edge that points up the layering below.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each top-level module's layer: a module may use modules of its own
/// layer or below, never above. Leaves first, fronts last.
const LAYERS: &[&[&str]] = &[
    &["error", "clock"],
    &["policy", "token"],
    &["codec", "types"],
    &["change", "serde_impls"],
    &["storage", "memory", "commit"],
    &["config"],
    &["replica"],
    &["store"],
    &["janitor", "async_store"],
    &["http"],
];

fn layer(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|l| l.contains(&module))
        .unwrap_or_else(|| panic!("module `{module}` has no layer in tests/module_graph.rs"))
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a path `crate::name…` names, when `name` is a
/// module (lower case) rather than a re-exported item of the crate root.
fn targets(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        if i > 0
            && matches!(code.as_bytes()[i - 1], b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b':')
        {
            continue; // `my_crate::` or `x::crate::`, not ours
        }
        let rest = &code[i + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if name.chars().next().is_some_and(|c| c.is_ascii_lowercase()) {
            out.insert(name);
        }
    }
    out
}

/// The edges between top-level modules of `src/` (binaries left out: they
/// use the public API only).
fn edges() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let first = rel.components().next().unwrap().as_os_str();
        let top = first.to_string_lossy().trim_end_matches(".rs").to_string();
        if top == "lib" || top == "bin" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let code = match text.find("#[cfg(test)]") {
            Some(i) => &text[..i],
            None => &text[..],
        };
        let entry = edges.entry(top.clone()).or_default();
        for t in targets(code) {
            if t != top {
                entry.insert(t);
            }
        }
    }
    edges
}

type Edges = BTreeMap<String, BTreeSet<String>>;

/// The edges from a module to one of a higher layer.
fn upward(edges: &Edges) -> Vec<String> {
    let mut up = Vec::new();
    for (from, tos) in edges {
        for to in tos {
            if layer(to) > layer(from) {
                up.push(format!("{from} -> {to}"));
            }
        }
    }
    up
}

/// A cycle, if there is one (depth-first, grey on the stack, black done).
fn find_cycle(edges: &Edges) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        edges: &Edges,
        colour: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        colour.insert(n.to_string(), 1);
        stack.push(n.to_string());
        for m in edges.get(n).into_iter().flatten() {
            match colour.get(m.as_str()).copied().unwrap_or(0) {
                1 => {
                    let at = stack.iter().position(|s| s == m).unwrap();
                    let mut cycle = stack[at..].to_vec();
                    cycle.push(m.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(m, edges, colour, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        colour.insert(n.to_string(), 2);
        None
    }
    let mut colour = BTreeMap::new();
    for n in edges.keys() {
        if colour.get(n.as_str()).copied().unwrap_or(0) == 0 {
            if let Some(c) = visit(n, edges, &mut colour, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

#[test]
fn module_edges_point_down() {
    let edges = edges();
    assert!(edges.len() >= 10, "too few modules read: {edges:?}");
    let up = upward(&edges);
    assert!(up.is_empty(), "edges that point up: {up:?}");
}

#[test]
fn no_import_cycles_among_top_level_modules() {
    let cycle = find_cycle(&edges());
    assert!(cycle.is_none(), "import cycle: {cycle:?}");
}

#[test]
fn the_checks_see_a_cycle_and_an_upward_edge() {
    let t = targets("use crate::store::TokenStore; use crate::Error; x::crate::y my_crate::z");
    assert_eq!(t.into_iter().collect::<Vec<_>>(), vec!["store".to_string()]);
    // The two edges the layout once had: config <-> store, error <-> storage.
    let mut g = Edges::new();
    g.entry("config".into()).or_default().insert("store".into());
    g.entry("store".into()).or_default().insert("config".into());
    assert_eq!(find_cycle(&g).map(|c| c.len()), Some(3));
    assert_eq!(upward(&g), vec!["config -> store".to_string()]);
    let mut g = Edges::new();
    g.entry("error".into())
        .or_default()
        .insert("storage".into());
    assert_eq!(find_cycle(&g), None);
    assert_eq!(upward(&g), vec!["error -> storage".to_string()]);
}

/// The code lines of `text` outside its `#[cfg(test)]` tail, comments
/// left out.
fn code_lines(text: &str) -> impl Iterator<Item = &str> {
    let code = match text.find("#[cfg(test)]") {
        Some(i) => &text[..i],
        None => text,
    };
    code.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .filter(|l| !l.trim().is_empty())
}

/// Where a storage engine's paths or types appear outside `src/storage/`.
fn engine_names_outside_storage(files: &[(String, String)]) -> Vec<String> {
    const PATHS: &[&str] = &["sled::", "postgres::"];
    const TYPES: &[&str] = &["PgBackend", "ConnSpec", "Conn"];
    let named = |line: &str, name: &str| {
        line.match_indices(name).any(|(i, _)| {
            let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
            let before = line[..i].chars().next_back().is_some_and(word);
            let after = line[i + name.len()..].chars().next().is_some_and(word);
            !before && (name.ends_with("::") || !after)
        })
    };
    let mut hits = Vec::new();
    for (rel, text) in files {
        if rel.starts_with("storage/") {
            continue;
        }
        for line in code_lines(text) {
            if let Some(name) = PATHS.iter().chain(TYPES).find(|n| named(line, n)) {
                hits.push(format!("{rel}: `{name}` in {}", line.trim()));
            }
        }
    }
    hits
}

#[test]
fn storage_engines_are_named_only_under_storage() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    rust_files(&src, &mut paths);
    let files: Vec<(String, String)> = paths
        .iter()
        .map(|p| {
            let rel = p
                .strip_prefix(&src)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            (rel, std::fs::read_to_string(p).unwrap())
        })
        .collect();
    assert!(files.len() >= 40, "too few files read: {}", files.len());
    let hits = engine_names_outside_storage(&files);
    assert!(
        hits.is_empty(),
        "storage engines named outside src/storage/: {hits:#?}"
    );
    // The check sees the kind of line the replica once had, and lets the
    // same line through inside the storage module or in a comment.
    let probe = |rel: &str, text: &str| {
        engine_names_outside_storage(&[(rel.to_string(), text.to_string())]).len()
    };
    assert_eq!(
        probe(
            "replica.rs",
            "use crate::storage::postgres::{Conn, ConnSpec};"
        ),
        1
    );
    assert_eq!(probe("store/x.rs", "fn f(c: &mut Conn) {}"), 1);
    assert_eq!(
        probe("store/x.rs", "fn f(c: &mut Connection, s: &ConnSpec) {}"),
        1
    );
    assert_eq!(probe("store/x.rs", "fn f(c: &mut Connection) {}"), 0);
    assert_eq!(probe("config.rs", "Config::postgres_with(opts)"), 0);
    assert_eq!(probe("storage/postgres/mod.rs", "use postgres::Client;"), 0);
    assert_eq!(probe("store/x.rs", "// sled:: is only a word here"), 0);
}
