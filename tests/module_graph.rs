//! The layer check: the crate's top-level modules depend on each other one
//! way, down the tiers of `docs/architecture.md` ("Layer rules").
//!
//! `src/` is parsed with `syn`, starting at `src/lib.rs` and following its
//! `mod` declarations, so the check reads exactly the files the crate is
//! built from (every feature on), each one whole except its
//! `#[cfg(test)]` modules, inline or in files of their own. A dependency is
//! any path that names the crate: `use` trees (grouped, renamed, globbed),
//! paths in expressions, types, patterns and attributes, and the tokens of
//! macro calls; `crate::`, `$crate::`, `self::` and `super::` are resolved
//! against the module path of the code they are in, and a name of the crate
//! root (`crate::TokenStore`) against `src/lib.rs`'s `use` block, to the
//! module that defines it. A crate path that cannot be resolved fails the
//! check rather than being skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use proc_macro2::{TokenStream, TokenTree};
use syn::visit::Visit;

// ---------------------------------------------------------------------------
// The rules (kept in step with "Layer rules" in docs/architecture.md)
// ---------------------------------------------------------------------------

/// The tiers, lowest first. A module may use any module of a lower tier;
/// within a tier only along an edge of [`SIDEWAYS`]; never a module of a
/// higher tier.
const TIERS: &[(&str, &[&str])] = &[
    (
        "leaves",
        &[
            "error",
            "clock",
            "policy",
            "token",
            "types",
            "config",
            "observe",
            "idmap",
            "member_index",
        ],
    ),
    // `serde_impls` (with the async face and serde branch): the serde
    // feature's impls for the public value types.
    ("encoding", &["codec", "serde_impls"]),
    ("intent", &["change"]),
    ("engines and state", &["storage", "memory", "commit"]),
    ("coherence", &["replica"]),
    ("the store", &["store"]),
    // `async_store` (with the async face): `AsyncTokenStore`, the store's
    // calls as futures; the HTTP front uses it.
    ("faces", &["async_store"]),
    ("fronts", &["janitor", "http"]),
    // `admin` (feature `admin`): the operator's commands on an open store
    // and the admin socket; its `serve` command runs the HTTP front.
    ("operator", &["admin"]),
];

/// The edges allowed inside a tier. Among the leaves: the value types are
/// made of tokens, roles and times; tokens, policy and the clock report
/// through `Error`; the configuration holds a clock and a policy and draws
/// a new store key from the token module's randomness; no other leaf uses
/// the configuration. Nothing else in a tier uses a sibling: `memory`, `storage` and `commit` are
/// independent (memory is filled by the store from what storage reports),
/// and the two fronts do not use each other.
const SIDEWAYS: &[(&str, &str)] = &[
    ("types", "token"),
    ("types", "policy"),
    ("types", "error"),
    ("types", "clock"),
    ("token", "error"),
    ("policy", "error"),
    ("clock", "error"),
    ("config", "error"),
    ("config", "clock"),
    ("config", "policy"),
    ("config", "token"),
    // The metrics hooks label an outcome by its error kind.
    ("observe", "error"),
];

/// Edges that break the rules in today's tree and are being removed. Each
/// is allowed here so that the check stays green meanwhile; the check fails
/// once an edge listed here is gone, so that the list only shrinks. Add
/// nothing to it: fix the edge instead.
const KNOWN_EXCEPTIONS: &[(&str, &str)] = &[];

fn tier(module: &str) -> Option<usize> {
    TIERS.iter().position(|(_, ms)| ms.contains(&module))
}

/// Why the edge `from -> to` breaks the rules, if it does.
fn broken_rule(from: &str, to: &str) -> Option<String> {
    let (Some(f), Some(t)) = (tier(from), tier(to)) else {
        let missing = if tier(from).is_none() { from } else { to };
        return Some(format!(
            "module `{missing}` has no tier in tests/module_graph.rs (and docs/architecture.md)"
        ));
    };
    if t > f {
        Some(format!(
            "points up: {from} ({}) -> {to} ({})",
            TIERS[f].0, TIERS[t].0
        ))
    } else if t == f && !SIDEWAYS.contains(&(from, to)) {
        Some(format!(
            "sideways in tier \"{}\" and not in SIDEWAYS: {from} -> {to}",
            TIERS[f].0
        ))
    } else {
        None
    }
}

// ---------------------------------------------------------------------------
// Reading the source
// ---------------------------------------------------------------------------

/// What a name at the crate root stands for.
#[derive(Clone, Debug, PartialEq)]
enum RootName {
    /// A top-level module of the crate, or an item one re-exports.
    Module(String),
    /// Another crate (`pub use serde;`), not an edge of this graph.
    External,
}

/// The crate root as the check sees it: its top-level modules, and what
/// each name of its `use` block resolves to.
#[derive(Debug, Default)]
struct Root {
    modules: BTreeSet<String>,
    names: BTreeMap<String, RootName>,
    /// `pub use module::*` at the root: a name it brings in cannot be told.
    globs: Vec<String>,
}

/// One use of a crate path, as read.
#[derive(Clone, Debug, PartialEq)]
struct Reference {
    /// The top-level module of the code that holds the path.
    from: String,
    /// `file:line`.
    at: String,
    /// The path as written, segments joined by `::`.
    path: String,
    /// The top-level module it resolves to, or why it does not resolve.
    to: Result<String, String>,
}

/// Every segment of a path and its line, as the visitor meets it (for the
/// engine-name check, which looks at every path, not only the crate's).
#[derive(Clone, Debug)]
struct AnyPath {
    at: String,
    segments: Vec<String>,
}

/// What one module file holds for the checks.
#[derive(Debug, Default)]
struct FileFacts {
    references: Vec<Reference>,
    paths: Vec<AnyPath>,
    /// `mod name;` declarations (not under `#[cfg(test)]`), with the module
    /// path each declares.
    children: Vec<Vec<String>>,
    /// `#[cfg(test)] mod name;` declarations: files left out.
    test_children: Vec<Vec<String>>,
}

/// True for `#[cfg(test)]` and `#[cfg(all(test, …))]`: code compiled only
/// into the crate's own unit tests.
fn is_test_only(attrs: &[syn::Attribute]) -> bool {
    fn needs_test(meta: &syn::Meta) -> bool {
        match meta {
            syn::Meta::Path(p) => p.is_ident("test"),
            syn::Meta::List(l) if l.path.is_ident("all") => l
                .parse_args_with(
                    syn::punctuated::Punctuated::<syn::Meta, syn::Token![,]>::parse_terminated,
                )
                .map(|items| items.iter().any(needs_test))
                .unwrap_or(false),
            _ => false,
        }
    }
    attrs.iter().any(|a| {
        a.path().is_ident("cfg") && a.parse_args::<syn::Meta>().is_ok_and(|m| needs_test(&m))
    })
}

/// The paths a `use` tree names, each as its segments (`*` for a glob).
fn flatten_use(tree: &syn::UseTree, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match tree {
        syn::UseTree::Path(p) => {
            prefix.push(p.ident.to_string());
            flatten_use(&p.tree, prefix, out);
            prefix.pop();
        }
        syn::UseTree::Name(n) => out.push(with(prefix, n.ident.to_string())),
        syn::UseTree::Rename(r) => out.push(with(prefix, r.ident.to_string())),
        syn::UseTree::Glob(_) => out.push(with(prefix, "*".to_string())),
        syn::UseTree::Group(g) => {
            for t in &g.items {
                flatten_use(t, prefix, out);
            }
        }
    }
}

fn with(prefix: &[String], last: String) -> Vec<String> {
    let mut v = prefix.to_vec();
    v.push(last);
    v
}

/// The top-level module that `segments`, written in module `module`, names;
/// `None` when the path does not start at the crate (`crate`, `$crate`,
/// `self`, `super`).
fn resolve(segments: &[String], module: &[String], root: &Root) -> Option<Result<String, String>> {
    let mut base: Vec<String> = match segments.first().map(String::as_str) {
        Some("crate" | "$crate") => Vec::new(),
        Some("self" | "super") => module.to_vec(),
        _ => return None,
    };
    let mut rest =
        &segments[usize::from(matches!(segments[0].as_str(), "crate" | "$crate" | "self"))..];
    while rest.first().is_some_and(|s| s == "super") {
        if base.pop().is_none() {
            return Some(Err("`super` above the crate root".into()));
        }
        rest = &rest[1..];
    }
    if let Some(top) = base.first() {
        return Some(Ok(top.clone()));
    }
    // At the crate root: a module, or a name of lib.rs's `use` block.
    let Some(name) = rest.first() else {
        return Some(Err("names the crate root itself".into()));
    };
    if root.modules.contains(name) {
        return Some(Ok(name.clone()));
    }
    match root.names.get(name) {
        Some(RootName::Module(m)) => Some(Ok(m.clone())),
        Some(RootName::External) => None,
        None if name == "*" => Some(Err("a glob of the crate root".into())),
        None if !root.globs.is_empty() => Some(Err(format!(
            "`{name}` is not named by src/lib.rs's `use` block, which has globs ({:?})",
            root.globs
        ))),
        None => Some(Err(format!(
            "`{name}` is neither a module nor a name of src/lib.rs's `use` block"
        ))),
    }
}

/// The paths inside a macro call's tokens: a name followed by `::` and a
/// name at least once (`crate::a`, `$crate::a`, `super::a`, `sled::Db`),
/// each with its line.
fn paths_in_tokens(tokens: TokenStream, out: &mut Vec<(usize, Vec<String>)>) {
    let flat: Vec<TokenTree> = tokens.into_iter().collect();
    let colons_at = |j: usize| {
        matches!(
            (flat.get(j), flat.get(j + 1)),
            (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b)))
                if a.as_char() == ':' && b.as_char() == ':'
        )
    };
    let mut i = 0;
    while i < flat.len() {
        match &flat[i] {
            TokenTree::Group(g) => paths_in_tokens(g.stream(), out),
            TokenTree::Ident(id) => {
                let dollar =
                    i > 0 && matches!(&flat[i - 1], TokenTree::Punct(p) if p.as_char() == '$');
                let name = id.to_string();
                let mut segs = vec![if dollar && name == "crate" {
                    "$crate".to_string()
                } else {
                    name
                }];
                let mut j = i + 1;
                while colons_at(j) {
                    let Some(TokenTree::Ident(next)) = flat.get(j + 2) else {
                        break;
                    };
                    segs.push(next.to_string());
                    j += 3;
                }
                if segs.len() > 1 {
                    out.push((id.span().start().line, segs));
                }
                i = j;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
}

/// Walks one file's syntax tree, keeping the module path of the code it is
/// in (inline modules included) and skipping `#[cfg(test)]` modules.
struct Walker<'a> {
    root: &'a Root,
    file: String,
    module: Vec<String>,
    facts: FileFacts,
}

impl Walker<'_> {
    fn top(&self) -> String {
        self.module[0].clone()
    }

    fn record(&mut self, line: usize, segments: Vec<String>) {
        if let Some(to) = resolve(&segments, &self.module, self.root) {
            self.facts.references.push(Reference {
                from: self.top(),
                at: format!("{}:{line}", self.file),
                path: segments.join("::"),
                to,
            });
        }
        self.facts.paths.push(AnyPath {
            at: format!("{}:{line}", self.file),
            segments,
        });
    }

    fn tokens(&mut self, tokens: TokenStream) {
        let mut found = Vec::new();
        paths_in_tokens(tokens, &mut found);
        for (line, segs) in found {
            self.record(line, segs);
        }
    }
}

impl<'ast> Visit<'ast> for Walker<'_> {
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        let mut path = self.module.clone();
        path.push(m.ident.to_string());
        if is_test_only(&m.attrs) {
            if m.content.is_none() {
                self.facts.test_children.push(path);
            }
            return;
        }
        match &m.content {
            None => self.facts.children.push(path),
            Some((_, items)) => {
                for a in &m.attrs {
                    self.visit_attribute(a);
                }
                self.module.push(m.ident.to_string());
                for item in items {
                    self.visit_item(item);
                }
                self.module.pop();
            }
        }
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        for a in &u.attrs {
            self.visit_attribute(a);
        }
        let line = u.use_token.span.start().line;
        let mut out = Vec::new();
        flatten_use(&u.tree, &mut Vec::new(), &mut out);
        for segs in out {
            self.record(line, segs);
        }
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        let line = p
            .segments
            .first()
            .map_or(0, |s| s.ident.span().start().line);
        let segs = p.segments.iter().map(|s| s.ident.to_string()).collect();
        self.record(line, segs);
        syn::visit::visit_path(self, p);
    }

    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        self.visit_path(&m.path);
        self.tokens(m.tokens.clone());
    }

    fn visit_meta_list(&mut self, l: &'ast syn::MetaList) {
        self.visit_path(&l.path);
        self.tokens(l.tokens.clone());
    }

    // `pub(in crate::x)` says who may see an item, not what it uses.
    fn visit_visibility(&mut self, _: &'ast syn::Visibility) {}
}

/// Reads one file's source, written as module `module` (e.g. `["store",
/// "verify"]`), with the crate root `root`.
fn read_source(file: &str, module: &[String], source: &str, root: &Root) -> FileFacts {
    let ast = syn::parse_file(source).unwrap_or_else(|e| panic!("{file}: does not parse: {e}"));
    let mut w = Walker {
        root,
        file: file.to_string(),
        module: module.to_vec(),
        facts: FileFacts::default(),
    };
    w.visit_file(&ast);
    w.facts
}

/// The crate root from `src/lib.rs`'s source: its modules and the names
/// of its `use` block.
fn read_root(source: &str) -> Root {
    let ast = syn::parse_file(source).expect("src/lib.rs parses");
    let mut root = Root::default();
    for item in &ast.items {
        if let syn::Item::Mod(m) = item {
            if !is_test_only(&m.attrs) {
                root.modules.insert(m.ident.to_string());
            }
        }
    }
    for item in &ast.items {
        let syn::Item::Use(u) = item else { continue };
        if is_test_only(&u.attrs) {
            continue;
        }
        let mut named = Vec::new();
        let mut renamed = BTreeMap::new();
        collect_root_use(&u.tree, &mut Vec::new(), &mut named, &mut renamed);
        for segs in named {
            let mut s = segs.as_slice();
            if s.first().is_some_and(|f| f == "crate" || f == "self") {
                s = &s[1..];
            }
            let (Some(first), Some(last)) = (s.first(), s.last()) else {
                continue;
            };
            let target = if root.modules.contains(first) {
                RootName::Module(first.clone())
            } else {
                RootName::External
            };
            if last == "*" {
                root.globs.push(s.join("::"));
                continue;
            }
            let name = renamed.get(&segs).cloned().unwrap_or_else(|| last.clone());
            root.names.insert(name, target);
        }
    }
    root
}

/// Like [`flatten_use`], remembering the name a `use … as name` binds.
fn collect_root_use(
    tree: &syn::UseTree,
    prefix: &mut Vec<String>,
    out: &mut Vec<Vec<String>>,
    renamed: &mut BTreeMap<Vec<String>, String>,
) {
    match tree {
        syn::UseTree::Path(p) => {
            prefix.push(p.ident.to_string());
            collect_root_use(&p.tree, prefix, out, renamed);
            prefix.pop();
        }
        syn::UseTree::Rename(r) => {
            let segs = with(prefix, r.ident.to_string());
            renamed.insert(segs.clone(), r.rename.to_string());
            out.push(segs);
        }
        syn::UseTree::Group(g) => {
            for t in &g.items {
                collect_root_use(t, prefix, out, renamed);
            }
        }
        other => flatten_use(other, prefix, out),
    }
}

/// A source tree: paths relative to its `src/` and their text.
type Sources = BTreeMap<String, String>;

/// The file a module path is written in: `a/b.rs` or `a/b/mod.rs`, read
/// from the parent's directory (a module of `a.rs` lives in `a/`).
fn module_file(sources: &Sources, module: &[String]) -> Option<String> {
    let joined = module.join("/");
    [format!("{joined}.rs"), format!("{joined}/mod.rs")]
        .into_iter()
        .find(|f| sources.contains_key(f))
}

/// Everything the checks know of one source tree.
#[derive(Debug, Default)]
struct Crate {
    references: Vec<Reference>,
    paths: Vec<(String, AnyPath)>,
    /// Files reached from lib.rs, and `#[cfg(test)]` module files.
    read: BTreeSet<String>,
    tests: BTreeSet<String>,
    problems: Vec<String>,
}

/// Reads a source tree from `lib.rs` down its `mod` declarations.
fn read_crate(sources: &Sources) -> Crate {
    let root = read_root(sources.get("lib.rs").expect("lib.rs in the source tree"));
    let mut krate = Crate::default();
    let mut todo: Vec<Vec<String>> = root.modules.iter().map(|m| vec![m.clone()]).collect();
    while let Some(module) = todo.pop() {
        let Some(file) = module_file(sources, &module) else {
            krate
                .problems
                .push(format!("no file for module {}", module.join("::")));
            continue;
        };
        let facts = read_source(&file, &module, &sources[&file], &root);
        krate.read.insert(file.clone());
        for t in &facts.test_children {
            if let Some(f) = module_file(sources, t) {
                krate.tests.insert(f);
            }
        }
        todo.extend(facts.children);
        krate.references.extend(facts.references);
        krate
            .paths
            .extend(facts.paths.into_iter().map(|p| (file.clone(), p)));
    }
    krate.read.insert("lib.rs".into());
    // A file neither read nor a test module would be a blind spot.
    for f in sources.keys() {
        if !f.starts_with("bin/") && !krate.read.contains(f) && !krate.tests.contains(f) {
            krate.problems.push(format!(
                "{f} is neither reached from lib.rs nor a test module"
            ));
        }
    }
    krate
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src/") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The crate's own `src/`.
fn real_sources() -> Sources {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    rust_files(&src, &mut paths);
    paths
        .iter()
        .map(|p| {
            let rel = p.strip_prefix(&src).unwrap().to_string_lossy();
            (rel.replace('\\', "/"), std::fs::read_to_string(p).unwrap())
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The graph and its checks
// ---------------------------------------------------------------------------

type Edges = BTreeMap<String, BTreeSet<String>>;

/// The module graph, where each edge was seen first, and any path that
/// would not resolve.
fn graph(krate: &Crate) -> (Edges, BTreeMap<(String, String), String>, Vec<String>) {
    let mut edges = Edges::new();
    let mut seen = BTreeMap::new();
    let mut unresolved = Vec::new();
    for r in &krate.references {
        edges.entry(r.from.clone()).or_default();
        match &r.to {
            Ok(to) if *to != r.from => {
                edges.entry(r.from.clone()).or_default().insert(to.clone());
                seen.entry((r.from.clone(), to.clone()))
                    .or_insert_with(|| format!("{} `{}`", r.at, r.path));
            }
            Ok(_) => {}
            Err(why) => unresolved.push(format!("{} `{}`: {why}", r.at, r.path)),
        }
    }
    (edges, seen, unresolved)
}

/// Every edge that breaks a rule and is not a known exception, with where
/// it was seen.
fn violations(edges: &Edges, seen: &BTreeMap<(String, String), String>) -> Vec<String> {
    let mut out = Vec::new();
    for (from, tos) in edges {
        for to in tos {
            if KNOWN_EXCEPTIONS.contains(&(from.as_str(), to.as_str())) {
                continue;
            }
            if let Some(rule) = broken_rule(from, to) {
                let at = &seen[&(from.clone(), to.clone())];
                out.push(format!("{rule} (first at {at})"));
            }
        }
    }
    out
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

/// Everything wrong with a source tree's layering: unread files, crate
/// paths that do not resolve, broken rules, a cycle.
fn layer_problems(sources: &Sources) -> Vec<String> {
    let krate = read_crate(sources);
    let (edges, seen, unresolved) = graph(&krate);
    let mut out = krate.problems.clone();
    out.extend(unresolved);
    out.extend(violations(&edges, &seen));
    if let Some(c) = find_cycle(&edges) {
        out.push(format!("import cycle: {}", c.join(" -> ")));
    }
    out
}

// ---------------------------------------------------------------------------
// The checks on the real tree
// ---------------------------------------------------------------------------

#[test]
fn the_real_tree_keeps_the_layer_rules() {
    let sources = real_sources();
    let krate = read_crate(&sources);
    assert!(
        krate.read.len() >= 40,
        "too few files read: {:?}",
        krate.read
    );
    let (edges, _, _) = graph(&krate);
    assert!(edges.len() >= 12, "too few modules seen: {edges:?}");
    let problems = layer_problems(&sources);
    assert!(
        problems.is_empty(),
        "the layer rules of docs/architecture.md are broken:\n{}",
        problems.join("\n")
    );
}

#[test]
fn every_known_exception_is_still_needed() {
    let (edges, _, _) = graph(&read_crate(&real_sources()));
    for (from, to) in KNOWN_EXCEPTIONS {
        assert!(
            broken_rule(from, to).is_some(),
            "KNOWN_EXCEPTIONS lists {from} -> {to}, which the rules allow: remove it"
        );
        assert!(
            edges.get(*from).is_some_and(|t| t.contains(*to)),
            "{from} -> {to} is gone from src/: remove it from KNOWN_EXCEPTIONS in tests/module_graph.rs"
        );
    }
}

#[test]
fn every_module_of_the_crate_has_a_tier() {
    let root = read_root(&real_sources()["lib.rs"]);
    let listed: BTreeSet<&str> = TIERS
        .iter()
        .flat_map(|(_, ms)| ms.iter().copied())
        .collect();
    let missing: Vec<&String> = root
        .modules
        .iter()
        .filter(|m| !listed.contains(m.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "modules with no tier in TIERS (tests/module_graph.rs) and docs/architecture.md: {missing:?}"
    );
    assert!(
        root.modules.len() >= 14,
        "too few modules read: {:?}",
        root.modules
    );
}

// ---------------------------------------------------------------------------
// Self-tests: each blind spot of the old text search is now seen
// ---------------------------------------------------------------------------

/// A small crate root like the real one.
const LIB: &str = "
    mod change; mod clock; pub mod codec; mod commit; mod config; mod error;
    #[cfg(feature = \"http\")] pub mod http; mod janitor; mod memory; mod policy;
    mod replica; mod storage; mod store; pub mod token; mod types;
    pub use clock::{Clock, SystemClock};
    pub use config::{Config as Settings, StoreKey};
    pub use error::{Error, Result};
    pub use store::TokenStore;
    pub use serde;
";

/// The modules a synthetic file at `file` (module `module`) resolves to.
fn targets_of(file: &str, source: &str) -> Vec<Result<String, String>> {
    let root = read_root(LIB);
    let module: Vec<String> = file
        .trim_end_matches(".rs")
        .split('/')
        .filter(|s| *s != "mod")
        .map(String::from)
        .collect();
    read_source(file, &module, source, &root)
        .references
        .into_iter()
        .map(|r| r.to)
        .collect()
}

fn ok(modules: &[&str]) -> Vec<Result<String, String>> {
    modules.iter().map(|m| Ok(m.to_string())).collect()
}

#[test]
fn a_name_re_exported_by_the_root_resolves_to_its_module() {
    assert_eq!(
        targets_of("config.rs", "use crate::TokenStore;"),
        ok(&["store"])
    );
    assert_eq!(
        targets_of("memory/mod.rs", "use crate::{Error, Settings};"),
        ok(&["error", "config"])
    );
    // Another crate re-exported by the root is not an edge.
    assert_eq!(
        targets_of("types.rs", "use crate::serde::Serialize;"),
        ok(&[])
    );
    // A name the root does not have fails rather than passes.
    let t = targets_of("types.rs", "use crate::Nowhere;");
    assert!(
        matches!(t.as_slice(), [Err(why)] if why.contains("Nowhere")),
        "{t:?}"
    );
}

#[test]
fn grouped_and_nested_use_trees_are_seen_branch_by_branch() {
    assert_eq!(
        targets_of(
            "store/issue.rs",
            "use crate::{memory::Memory, storage::{Backend, feed::{self, Feed as F}}, TokenStore};"
        ),
        ok(&["memory", "storage", "storage", "storage", "store"])
    );
    assert_eq!(
        targets_of("http/mod.rs", "use crate::change::*;"),
        ok(&["change"])
    );
}

#[test]
fn super_and_self_resolve_against_the_module_path() {
    // `super::` from a top-level file is the crate root.
    assert_eq!(
        targets_of("config.rs", "use super::TokenStore;"),
        ok(&["store"])
    );
    assert_eq!(
        targets_of("config.rs", "use super::storage::Backend;"),
        ok(&["storage"])
    );
    // From a nested file, one `super` is the parent, two reach the root.
    assert_eq!(
        targets_of("store/verify.rs", "use super::Inner;"),
        ok(&["store"])
    );
    assert_eq!(
        targets_of("memory/apply.rs", "use super::super::storage::Backend;"),
        ok(&["storage"])
    );
    assert_eq!(
        targets_of("memory/apply.rs", "use self::inner::X;"),
        ok(&["memory"])
    );
    // Inside an inline module, `super` is that module's parent.
    assert_eq!(
        targets_of("config.rs", "mod inner { use super::super::TokenStore; }"),
        ok(&["store"])
    );
    let t = targets_of("config.rs", "use super::super::X;");
    assert!(matches!(t.as_slice(), [Err(_)]), "{t:?}");
}

#[test]
fn crate_paths_in_expressions_types_and_macros_are_seen() {
    let source = "
        fn open(c: &crate::config::Config) -> crate::Result<()> {
            let _ = crate::storage::sled::open(c);
            if let Err(crate::Error::Io(_)) = g() {}
            tracing::warn!(\"{}\", crate::memory::SHARDS);
            matches!(x, $crate::commit::Ticket);
            Ok(())
        }
        #[derive(Debug)]
        struct S { f: Vec<super::replica::State> }
    ";
    let mut t = targets_of("janitor.rs", source);
    t.sort_by_key(|r| format!("{r:?}"));
    let mut want = ok(&[
        "config", "error", "storage", "error", "memory", "commit", "replica",
    ]);
    want.sort_by_key(|r| format!("{r:?}"));
    assert_eq!(t, want);
    // Visibility is not a use, and a comment or a string is not code.
    assert_eq!(
        targets_of(
            "memory/mod.rs",
            "pub(in crate::memory) fn f() {} // crate::store::X\nconst S: &str = \"crate::store\";"
        ),
        ok(&[])
    );
}

#[test]
fn a_cfg_test_item_early_in_a_file_hides_nothing_after_it() {
    let source = "
        #[cfg(test)]
        use crate::store::ForTests;
        #[cfg(test)]
        fn helper() {}
        use crate::storage::Backend;
        #[cfg(test)]
        mod tests { use crate::http::Router; }
        #[cfg(all(test, unix))]
        mod unix_tests { use crate::janitor::Janitor; }
        #[cfg(not(test))]
        mod live { use crate::commit::Ticket; }
        fn after() -> crate::TokenStore { todo!() }
    ";
    let t = targets_of("memory/mod.rs", source);
    // The test modules are left out; everything else is read, the
    // `#[cfg(test)]` import and the code after it included.
    assert_eq!(t, ok(&["store", "storage", "commit", "store"]));
}

#[test]
fn test_module_files_are_left_out_and_every_other_file_is_read() {
    let mut sources = Sources::new();
    sources.insert(
        "lib.rs".into(),
        "mod config; mod store; pub use store::TokenStore;".into(),
    );
    sources.insert(
        "config.rs".into(),
        "#[cfg(test)] mod tests; mod key;".into(),
    );
    sources.insert("config/tests.rs".into(), "use crate::TokenStore;".into());
    sources.insert(
        "config/key.rs".into(),
        "use super::super::TokenStore;".into(),
    );
    sources.insert("store/mod.rs".into(), "use crate::config::Config;".into());
    sources.insert("store/stray.rs".into(), "".into());
    let krate = read_crate(&sources);
    assert_eq!(
        krate.read.iter().map(String::as_str).collect::<Vec<_>>(),
        ["config.rs", "config/key.rs", "lib.rs", "store/mod.rs"]
    );
    assert_eq!(
        krate.tests.iter().map(String::as_str).collect::<Vec<_>>(),
        ["config/tests.rs"]
    );
    // The nested file's edge is seen (and is a cycle and an edge up), and
    // the file nothing declares is reported.
    let problems = layer_problems(&sources);
    assert!(
        problems.iter().any(|p| p.contains("store/stray.rs")),
        "{problems:#?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("points up: config (leaves) -> store")),
        "{problems:#?}"
    );
    assert!(
        problems.iter().any(|p| p.contains("import cycle")),
        "{problems:#?}"
    );
}

#[test]
fn the_rules_match_the_design() {
    // Down is allowed, up is not.
    assert_eq!(broken_rule("store", "memory"), None);
    assert_eq!(broken_rule("http", "store"), None);
    assert_eq!(broken_rule("admin", "http"), None);
    assert!(broken_rule("http", "admin").is_some());
    assert_eq!(broken_rule("replica", "storage"), None);
    assert!(broken_rule("storage", "store").is_some());
    assert!(broken_rule("memory", "replica").is_some());
    // Sideways in "engines and state": memory does not use storage.
    assert!(broken_rule("memory", "storage").is_some());
    assert!(broken_rule("storage", "memory").is_some());
    // The configuration is a leaf: it uses only its listed neighbours.
    assert!(broken_rule("config", "storage").is_some());
    assert!(broken_rule("config", "memory").is_some());
    assert!(broken_rule("config", "codec").is_some());
    assert_eq!(broken_rule("config", "error"), None);
    assert_eq!(broken_rule("config", "token"), None);
    // Leaves use the configuration never; higher tiers may.
    assert!(broken_rule("token", "config").is_some());
    assert!(broken_rule("error", "config").is_some());
    assert_eq!(broken_rule("replica", "config"), None);
    // A module nobody placed is an error, not a pass.
    assert!(broken_rule("newthing", "error").is_some());
    // Cycles are found.
    let mut g = Edges::new();
    g.entry("config".into()).or_default().insert("store".into());
    g.entry("store".into()).or_default().insert("config".into());
    assert_eq!(find_cycle(&g).map(|c| c.len()), Some(3));
    g.remove("store");
    assert_eq!(find_cycle(&g), None);
}

/// The real `src/`, with `config.rs` given one more line.
fn real_sources_with_config_line(line: &str) -> Sources {
    let mut sources = real_sources();
    let config = sources.get_mut("config.rs").expect("src/config.rs");
    config.push_str(line);
    sources
}

#[test]
fn a_planted_use_of_the_store_in_config_fails_the_check() {
    let planted = real_sources_with_config_line("\nuse crate::TokenStore;\n");
    let problems = layer_problems(&planted);
    assert!(
        problems
            .iter()
            .any(|p| p.contains("points up: config (leaves) -> store") && p.contains("config.rs:")),
        "{problems:#?}"
    );
    assert!(
        problems.iter().any(|p| p.starts_with("import cycle")),
        "{problems:#?}"
    );
    // The same through `super::` and behind an early `#[cfg(test)]` item.
    let planted = real_sources_with_config_line(
        "\n#[cfg(test)]\nfn early() {}\nfn late() -> Option<super::TokenStore> { None }\n",
    );
    assert!(layer_problems(&planted)
        .iter()
        .any(|p| p.contains("config (leaves) -> store")),);
    // The configuration is a leaf with no exception left: reaching into
    // storage (as the key file's directory sync once did) fails too.
    let planted = real_sources_with_config_line("\nuse crate::storage::Backend;\n");
    assert!(
        layer_problems(&planted)
            .iter()
            .any(|p| p.contains("points up: config (leaves) -> storage")),
        "{:#?}",
        layer_problems(&planted)
    );
}

// ---------------------------------------------------------------------------
// Storage engines are named only under src/storage/
// ---------------------------------------------------------------------------

/// Where a storage engine's paths or types appear outside `src/storage/`:
/// a path through `sled` or `postgres` (`sled::Db`, `crate::storage::
/// postgres::Conn`), or one of the PostgreSQL backend's types.
fn engine_names_outside_storage(krate: &Crate) -> Vec<String> {
    const ENGINES: &[&str] = &["sled", "postgres"];
    const TYPES: &[&str] = &["PgBackend", "ConnSpec", "Conn"];
    let mut hits = Vec::new();
    for (file, p) in &krate.paths {
        if file.split('/').next() == Some("storage") || file == "storage.rs" {
            continue;
        }
        let through_engine = p.segments[..p.segments.len().saturating_sub(1)]
            .iter()
            .any(|s| ENGINES.contains(&s.as_str()));
        let names_type = p.segments.iter().any(|s| TYPES.contains(&s.as_str()));
        if through_engine || names_type {
            hits.push(format!("{}: `{}`", p.at, p.segments.join("::")));
        }
    }
    hits
}

#[test]
fn storage_engines_are_named_only_under_storage() {
    let krate = read_crate(&real_sources());
    assert!(
        krate.read.len() >= 40,
        "too few files read: {}",
        krate.read.len()
    );
    let hits = engine_names_outside_storage(&krate);
    assert!(
        hits.is_empty(),
        "storage engines named outside src/storage/: {hits:#?}"
    );
    // The check sees the kind of line the replica once had, and lets the
    // same names through inside the storage module or in a comment.
    let probe = |file: &str, text: &str| {
        let mut sources = Sources::new();
        sources.insert(
            "lib.rs".into(),
            "mod store; mod storage; mod replica; mod config;".into(),
        );
        sources.insert(file.to_string(), text.to_string());
        engine_names_outside_storage(&read_crate(&sources)).len()
    };
    assert_eq!(
        probe(
            "replica.rs",
            "use crate::storage::postgres::{Conn, ConnSpec};"
        ),
        2
    );
    assert_eq!(probe("store.rs", "fn f(c: &mut Conn) {}"), 1);
    assert_eq!(
        probe("store.rs", "fn f(c: &mut Connection, s: &ConnSpec) {}"),
        1
    );
    assert_eq!(probe("store.rs", "fn f() { let _ = sled::open(p); }"), 1);
    assert_eq!(
        probe(
            "store.rs",
            "fn f() { tracing::info!(\"{}\", sled::VERSION); }"
        ),
        1
    );
    assert_eq!(probe("store.rs", "fn f(c: &mut Connection) {}"), 0);
    assert_eq!(
        probe(
            "config.rs",
            "fn f() { Config::postgres_with(o); Config::postgres(o); }"
        ),
        0
    );
    assert_eq!(probe("storage.rs", "use postgres::Client;"), 0);
    assert_eq!(
        probe("store.rs", "// sled:: is only a word here\nfn f() {}"),
        0
    );
    // A test module may name an engine.
    assert_eq!(
        probe("store.rs", "#[cfg(test)] mod tests { use sled::Db; }"),
        0
    );
}
