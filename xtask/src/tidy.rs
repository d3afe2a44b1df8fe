//! Tidy tests: invariants of the code base that a machine can check, run by
//! plain `cargo test`. Each states an absence, as ARCHITECTURE.md does.

use std::fs;
use std::path::{Path, PathBuf};

use crate::ci::project_root;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') && !name.starts_with("target-") {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

fn all_rust_files() -> Vec<PathBuf> {
    let root = project_root();
    let mut files = Vec::new();
    rust_files(&root.join("crates"), &mut files);
    rust_files(&root.join("xtask"), &mut files);
    files.sort();
    files
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

#[test]
fn every_rust_file_says_what_it_is_for() {
    let missing: Vec<_> = all_rust_files()
        .into_iter()
        .filter(|p| !read(p).trim_start().starts_with("//!"))
        .collect();
    assert!(
        missing.is_empty(),
        "files without a leading //! comment: {missing:#?}"
    );
}

#[test]
fn no_grab_bag_modules() {
    let bad: Vec<_> = all_rust_files()
        .into_iter()
        .filter(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
            matches!(
                name.as_deref(),
                Some("utils.rs" | "util.rs" | "helpers.rs" | "misc.rs")
            )
        })
        .collect();
    assert!(bad.is_empty(), "name modules by concept: {bad:#?}");
}

/// The workspace's dependency graph as cargo resolved it (`cargo
/// metadata`), so a crate that gains a forbidden dependency through
/// another is caught as surely as one that names it.
struct Graph {
    /// Package id to name.
    names: std::collections::HashMap<String, String>,
    /// Package id to the ids of its normal and build dependencies (not
    /// dev: tests may use anything).
    deps: std::collections::HashMap<String, Vec<String>>,
}

impl Graph {
    fn load() -> Graph {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
        let out = std::process::Command::new(cargo)
            .current_dir(project_root())
            .args(["metadata", "--format-version", "1", "--locked"])
            .output()
            .unwrap_or_else(|e| panic!("cannot run cargo metadata: {e}"));
        assert!(out.status.success(), "cargo metadata failed");
        let meta: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("cargo metadata: {e}"));
        let mut names = std::collections::HashMap::new();
        for p in meta["packages"].as_array().into_iter().flatten() {
            let (Some(id), Some(name)) = (p["id"].as_str(), p["name"].as_str()) else {
                continue;
            };
            names.insert(id.to_string(), name.to_string());
        }
        let mut deps = std::collections::HashMap::new();
        for node in meta["resolve"]["nodes"].as_array().into_iter().flatten() {
            let Some(id) = node["id"].as_str() else {
                continue;
            };
            let used: Vec<String> = node["deps"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|d| {
                    d["dep_kinds"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|k| k["kind"].as_str() != Some("dev"))
                })
                .filter_map(|d| d["pkg"].as_str().map(str::to_string))
                .collect();
            deps.insert(id.to_string(), used);
        }
        Graph { names, deps }
    }

    /// Every crate `name` depends on, directly or not, by name.
    fn closure(&self, name: &str) -> std::collections::BTreeSet<String> {
        let mut todo: Vec<&String> = self
            .names
            .iter()
            .filter(|(_, n)| n.as_str() == name)
            .map(|(id, _)| id)
            .collect();
        assert!(!todo.is_empty(), "no crate {name} in the workspace");
        let mut seen = std::collections::HashSet::new();
        let mut out = std::collections::BTreeSet::new();
        while let Some(id) = todo.pop() {
            for dep in self.deps.get(id).into_iter().flatten() {
                if seen.insert(dep) {
                    out.insert(self.names[dep].clone());
                    todo.push(dep);
                }
            }
        }
        out
    }

    /// Fails if crate `name` reaches any of `forbidden`, saying why it
    /// must not.
    fn assert_avoids(&self, name: &str, forbidden: &[&str], why: &str) {
        let reached = self.closure(name);
        let bad: Vec<_> = forbidden.iter().filter(|f| reached.contains(**f)).collect();
        assert!(
            bad.is_empty(),
            "{name} depends (maybe through another crate) on {bad:?}: {why}"
        );
    }
}

fn graph() -> &'static Graph {
    static GRAPH: std::sync::OnceLock<Graph> = std::sync::OnceLock::new();
    GRAPH.get_or_init(Graph::load)
}

/// Crates that do IO or run a runtime: no sans-IO crate reaches one.
const DOES_IO: &[&str] = &[
    "tokio",
    "mio",
    "socket2",
    "hyper",
    "axum",
    "rustls",
    "tokio-rustls",
    "async-trait",
];

/// rsq-codec does no IO: nothing it depends on, however far down, is a
/// runtime or a networking crate; and its own code touches no file,
/// socket or clock.
#[test]
fn codec_does_no_io() {
    graph().assert_avoids("rsq-codec", DOES_IO, "rsq-codec does no IO");
    for file in all_rust_files()
        .into_iter()
        .filter(|p| p.starts_with(project_root().join("crates/rsq-codec/src")))
    {
        let text = read(&file);
        for forbidden in [
            "std::fs",
            "std::net",
            "std::io::Read",
            "Instant::now",
            "SystemTime::now",
        ] {
            assert!(
                !text.contains(forbidden),
                "{} uses {forbidden}: rsq-codec does no IO and never reads the clock",
                file.display()
            );
        }
    }
}

/// The sans-IO state machines (ARCHITECTURE.md names each) do no IO and
/// never read the clock: time comes in as `now`.
#[test]
fn state_machines_do_no_io() {
    for file in [
        "crates/rsq-protocol/src/connection.rs",
        "crates/rsq-protocol/src/identify.rs",
        "crates/rsq-protocol/src/auth.rs",
        "crates/rsq-channel/src/state.rs",
        "crates/rsq-channel/src/in_flight.rs",
        "crates/rsq-channel/src/deferred.rs",
        "crates/rsq-channel/src/consumer.rs",
        "crates/rsq-channel/src/e2e_latency.rs",
        "crates/rsq-diskqueue/src/ledger.rs",
        "crates/rsq-lookupd/src/registry.rs",
        "crates/rsq-replica/src/replica.rs",
        "crates/rsq-replica/src/journal.rs",
        "crates/rsq-replica/src/wire.rs",
    ] {
        let text = read(&project_root().join(file));
        for forbidden in [
            "tokio",
            "std::fs",
            "std::net",
            "Instant::now",
            "SystemTime::now",
        ] {
            assert!(
                !text.contains(forbidden),
                "{file} uses {forbidden}: a state machine does no IO and never reads the clock"
            );
        }
    }
}

/// The V2 connection machine's crate cannot do IO: nothing it depends
/// on, however far down, is a runtime, network, TLS or HTTP crate or a
/// crate of the daemon, so the compiler, not a text search, keeps it
/// sans-IO.
#[test]
fn protocol_depends_on_nothing_that_does_io() {
    let mut forbidden = DOES_IO.to_vec();
    forbidden.extend([
        "rsqd",
        "rsq-service",
        "rsq-diskqueue",
        "rsq-channel",
        "rsq-topic",
    ]);
    graph().assert_avoids("rsq-protocol", &forbidden, "it must stay free of IO");
}

/// The replication core is driven, never drives: no runtime, no sockets,
/// no daemon crate, so one thread can run a whole group from a seed.
#[test]
fn replica_core_has_no_runtime_of_its_own() {
    graph().assert_avoids(
        "rsq-replica",
        &[
            "rsqd",
            "rsq-service",
            "rsq-topic",
            "rsq-channel",
            "hyper",
            "axum",
            "tokio-util",
        ],
        "the replication core is sans-IO",
    );
}

/// rsq-topic reaches channels only through its sink trait: no path in
/// the graph leads from it to rsq-channel.
#[test]
fn topic_does_not_know_channel() {
    graph().assert_avoids(
        "rsq-topic",
        &["rsq-channel"],
        "the topic knows channels only as sinks",
    );
}

/// Every `[workspace.dependencies]` entry is used by a member: a
/// declaration nobody uses (bincode, once) says the workspace depends on
/// something it does not.
#[test]
fn every_workspace_dependency_is_used() {
    let root = project_root();
    let manifest = read(&root.join("Cargo.toml"));
    let declared: Vec<&str> = manifest
        .split("[workspace.dependencies]")
        .nth(1)
        .and_then(|rest| rest.split("\n[").next())
        .unwrap_or("")
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim()))
        .filter(|k| !k.is_empty())
        .collect();
    assert!(!declared.is_empty(), "no [workspace.dependencies] found");
    let mut members = Vec::new();
    for dir in ["crates", "xtask"] {
        let path = root.join(dir);
        if path.join("Cargo.toml").exists() {
            members.push(read(&path.join("Cargo.toml")));
        }
        for entry in fs::read_dir(&path).into_iter().flatten().flatten() {
            let m = entry.path().join("Cargo.toml");
            if m.exists() {
                members.push(read(&m));
            }
        }
    }
    let unused: Vec<_> = declared
        .iter()
        .filter(|dep| {
            !members.iter().any(|m| {
                m.lines().any(|l| {
                    let l = l.trim_start();
                    l.starts_with(&format!("{dep}.workspace"))
                        || (l.starts_with(&format!("{dep} ")) && l.contains("workspace = true"))
                })
            })
        })
        .collect();
    assert!(
        unused.is_empty(),
        "workspace dependencies no crate uses: {unused:?}"
    );
}

/// Libraries log through tracing; only binaries (`src/main.rs`, `src/bin/`)
/// and xtask may print.
#[test]
fn libraries_do_not_print() {
    let root = project_root();
    for file in all_rust_files() {
        let rel = file.strip_prefix(&root).unwrap_or(&file);
        let rel_s = rel.to_string_lossy();
        let is_binary = rel_s.ends_with("/src/main.rs") || rel_s.contains("/src/bin/");
        let is_library_src = rel_s.starts_with("crates/") && rel_s.contains("/src/") && !is_binary;
        if !is_library_src {
            continue;
        }
        let text = read(&file);
        for forbidden in ["println!", "eprintln!", "dbg!"] {
            assert!(
                !text.contains(forbidden),
                "{} uses {forbidden}; log through tracing",
                rel.display()
            );
        }
    }
}

/// Every `unsafe` block carries a `SAFETY:` comment that argues it is sound.
#[test]
fn unsafe_is_justified() {
    for file in all_rust_files() {
        if file.ends_with("xtask/src/tidy.rs") {
            continue;
        }
        let text = read(&file);
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if line.contains("unsafe {") || line.contains("unsafe impl") {
                let start = i.saturating_sub(5);
                let justified = lines[start..i].iter().any(|l| l.contains("SAFETY:"));
                assert!(
                    justified,
                    "{}:{} has unsafe without a SAFETY: comment",
                    file.display(),
                    i + 1
                );
            }
        }
    }
}

/// Longest non-test source file, in lines (a `#[cfg(test)]` module inside
/// it does not count): past it, a file holds more than one concept.
const FILE_LINES_MAX: usize = 800;

/// Longest function, in lines from `fn` to its closing brace: past it, a
/// function is a table or several cases waiting to be named.
const FN_LINES_MAX: usize = 100;

/// Whether `path` holds only tests (a `tests.rs` module, a crate's
/// `tests/` or `benches/` directory).
fn is_test_file(path: &Path) -> bool {
    let rel = path.strip_prefix(project_root()).unwrap_or(path);
    rel.file_name().is_some_and(|n| n == "tests.rs")
        || rel
            .components()
            .any(|c| c.as_os_str() == "tests" || c.as_os_str() == "benches")
}

/// Whether the attributes mark test-only code (`#[test]`, `#[cfg(test)]`,
/// `#[tokio::test]`, proptest's generated tests).
fn is_test_attr(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        let path = a.path();
        let last = path.segments.last().map(|s| s.ident.to_string());
        if last.as_deref() == Some("test") {
            return true;
        }
        match &a.meta {
            syn::Meta::List(list) if path.is_ident("cfg") => cfg_needs_test(list.tokens.clone()),
            _ => false,
        }
    })
}

/// Whether a `cfg(...)` predicate holds only under `test`: `test` itself,
/// or an `all(..)` with `test` among its terms (not `not(test)`, nor a
/// feature whose name holds the word).
fn cfg_needs_test(tokens: proc_macro2::TokenStream) -> bool {
    let mut tokens = tokens.into_iter().peekable();
    // `test` as a term; a key's value (`feature = "test"`) is a literal.
    while let Some(token) = tokens.next() {
        if let proc_macro2::TokenTree::Ident(ident) = &token {
            if ident == "test" {
                return true;
            }
            if ident == "all"
                && let Some(proc_macro2::TokenTree::Group(group)) = tokens.peek()
                && cfg_needs_test(group.stream())
            {
                return true;
            }
        }
    }
    false
}

/// One non-test source file, walked once for every test that reads it.
struct Walked {
    /// Its path from the project root.
    rel: String,
    /// Its lines, less those of its `#[cfg(test)]` modules.
    lines: usize,
    walk: ItemWalk,
}

/// Every non-test source file of the workspace's crates, parsed and walked
/// once per test run.
fn walked_sources() -> &'static [Walked] {
    static WALKED: std::sync::OnceLock<Vec<Walked>> = std::sync::OnceLock::new();
    WALKED.get_or_init(|| {
        let root = project_root();
        all_rust_files()
            .into_iter()
            .filter(|p| !is_test_file(p))
            .map(|p| {
                let text = read(&p);
                let file = syn::parse_file(&text)
                    .unwrap_or_else(|e| panic!("cannot parse {}: {e}", p.display()));
                let walk = walk(&file);
                Walked {
                    rel: p.strip_prefix(&root).unwrap_or(&p).display().to_string(),
                    lines: text.lines().count() - walk.test_lines,
                    walk,
                }
            })
            .collect()
    })
}

/// Walks one file's non-test items, recording long functions and the
/// names of the types it declares.
#[derive(Default)]
struct ItemWalk {
    /// `(name, first line, lines)` of every function over [`FN_LINES_MAX`].
    long_fns: Vec<(String, usize, usize)>,
    /// Lines inside `#[cfg(test)]` modules.
    test_lines: usize,
    /// Types declared `pub` or `pub(...)`, by name.
    types: Vec<String>,
}

impl ItemWalk {
    /// Records a function's length, from `fn` to its body's closing brace.
    fn function(&mut self, sig: &syn::Signature, body: &syn::Block) {
        use syn::spanned::Spanned;
        let span = sig.fn_token.span.join(body.span()).unwrap_or(body.span());
        let (start, end) = (span.start().line, span.end().line);
        let lines = end + 1 - start;
        if lines > FN_LINES_MAX {
            self.long_fns.push((sig.ident.to_string(), start, lines));
        }
    }

    fn named_type(&mut self, vis: &syn::Visibility, name: &syn::Ident) {
        if !matches!(vis, syn::Visibility::Inherited) {
            self.types.push(name.to_string());
        }
    }
}

impl<'ast> syn::visit::Visit<'ast> for ItemWalk {
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        if is_test_attr(&m.attrs) {
            use syn::spanned::Spanned;
            let span = m.span();
            self.test_lines += span.end().line + 1 - span.start().line;
            return;
        }
        syn::visit::visit_item_mod(self, m);
    }

    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        if is_test_attr(&f.attrs) {
            return;
        }
        self.function(&f.sig, &f.block);
        syn::visit::visit_item_fn(self, f);
    }

    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        if is_test_attr(&f.attrs) {
            return;
        }
        self.function(&f.sig, &f.block);
        syn::visit::visit_impl_item_fn(self, f);
    }

    fn visit_trait_item_fn(&mut self, f: &'ast syn::TraitItemFn) {
        if let Some(block) = &f.default {
            self.function(&f.sig, block);
        }
        syn::visit::visit_trait_item_fn(self, f);
    }

    fn visit_item_struct(&mut self, s: &'ast syn::ItemStruct) {
        self.named_type(&s.vis, &s.ident);
    }

    fn visit_item_enum(&mut self, e: &'ast syn::ItemEnum) {
        self.named_type(&e.vis, &e.ident);
    }

    fn visit_item_trait(&mut self, t: &'ast syn::ItemTrait) {
        self.named_type(&t.vis, &t.ident);
        syn::visit::visit_item_trait(self, t);
    }
}

fn walk(file: &syn::File) -> ItemWalk {
    let mut walk = ItemWalk::default();
    syn::visit::Visit::visit_file(&mut walk, file);
    walk
}

#[test]
fn no_file_or_function_is_too_long() {
    let mut long = Vec::new();
    for Walked { rel, lines, walk } in walked_sources() {
        if *lines > FILE_LINES_MAX {
            long.push(format!("{rel}: {lines} lines (at most {FILE_LINES_MAX})"));
        }
        for (name, line, lines) in &walk.long_fns {
            long.push(format!(
                "{rel}:{line}: fn {name} is {lines} lines (at most {FN_LINES_MAX})"
            ));
        }
    }
    assert!(long.is_empty(), "cut these by concept: {long:#?}");
}

/// Names that are one concept per binary, each defined once in it: a
/// daemon's or tool's flags are its own.
const NAMES_PER_BINARY: &[&str] = &["Options"];

/// One name per concept: no two crates (nor two modules of one) declare a
/// visible type, enum or trait of the same name, so a name found in a log,
/// a doc or a review means one thing.
#[test]
fn type_names_are_unique() {
    let mut seen: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for Walked { rel, walk, .. } in walked_sources() {
        for name in &walk.types {
            seen.entry(name).or_default().push(rel);
        }
    }
    let repeated: Vec<_> = seen
        .into_iter()
        .filter(|(name, places)| places.len() > 1 && !NAMES_PER_BINARY.contains(name))
        .collect();
    assert!(repeated.is_empty(), "one name per concept: {repeated:#?}");
}

#[test]
fn cfg_test_is_told_apart_from_its_look_alikes() {
    let needs = |src: &str| cfg_needs_test(src.parse().expect("tokens"));
    assert!(needs("test"));
    assert!(needs("all(test, feature = \"x\")"));
    assert!(!needs("not(test)"));
    assert!(!needs("feature = \"latest\""));
    assert!(!needs("any(test, unix)"));
}
