//! The layering of the broker crate, checked from its `crate::` paths (docs/architecture.md,
//! "Layers"). Every top-level module has a layer; a module may use modules of its own
//! layer or below. The test fails on an import that runs upward and is not in
//! [`KNOWN_UPWARD`], and on an import cycle between modules that is not one of
//! [`KNOWN_CYCLES`]. Both lists are debts (issue 15 asks for no cycle and at most three
//! upward imports); they may only shrink: the test also fails when an entry is no longer
//! needed, so a fix removes its entry.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level modules, bottom layer first.
const LAYERS: &[&[&str]] = &[
    &["sys", "ratelimit", "supervise", "protocol", "cost"],
    &["config"],
    &["log"],
    &["topic_config", "telemetry"],
    &["cluster"],
    &["security"],
    &["partition"],
    &["replication", "tier"],
    &["diskless"],
    &["registry"],
    &["group", "txn"],
    &["broker"],
    &["handlers", "admin"],
    &["server"],
];

/// Imports that run upward today (from, to).
const KNOWN_UPWARD: &[(&str, &str)] = &[];

/// Cycles between modules today, as the modules of each strongly connected set.
const KNOWN_CYCLES: &[&[&str]] = &[];

fn layer_of(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|layer| layer.contains(&module))
        .unwrap_or_else(|| {
            panic!("module `{module}` has no layer: add it to LAYERS and to docs/architecture.md")
        })
}

/// module -> modules it names with a `crate::` path (tests excluded: `tests.rs` files and
/// `*_tests.rs` files are test code).
fn imports(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let modules: Vec<&str> = LAYERS.iter().flat_map(|l| l.iter().copied()).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if !name.ends_with(".rs") || name == "tests.rs" || name.ends_with("_tests.rs") {
                continue;
            }
            let relative = path.strip_prefix(src).expect("under src");
            let first = relative
                .iter()
                .next()
                .and_then(|c| c.to_str())
                .unwrap_or_default();
            let module = first.trim_end_matches(".rs");
            if module == "lib" || module == "main" || module == "cli" {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read file");
            // Line comments out (doc links name modules without importing them).
            let code: String = text
                .lines()
                .map(|line| line.split("//").next().unwrap_or_default())
                .collect::<Vec<_>>()
                .join("\n");
            let mut named = BTreeSet::new();
            // `crate::x::...` anywhere, and the top-level names of `crate::{x, y::{z}}`.
            for (i, _) in code.match_indices("crate::") {
                let rest = &code[i + "crate::".len()..];
                if let Some(list) = rest.strip_prefix('{') {
                    named.extend(top_level_names(list));
                } else {
                    named.insert(ident(rest));
                }
            }
            let entry = graph.entry(module.to_string()).or_default();
            for target in named {
                if target != module && modules.contains(&target.as_str()) {
                    entry.insert(target);
                }
            }
        }
    }
    graph
}

/// The first path segment of each item of a brace list (the text after its `{`), at
/// depth one only: `a::{b, c}, d` gives `a` and `d`.
fn top_level_names(list: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut depth = 0;
    let mut start = true;
    for (i, c) in list.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => start = true,
            c if start && depth == 0 && !c.is_whitespace() => {
                names.push(ident(&list[i..]));
                start = false;
            }
            _ => {}
        }
    }
    names
}

fn ident(text: &str) -> String {
    text.chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

/// Strongly connected sets of more than one module (Tarjan).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<BTreeSet<String>> {
    struct State<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        next: usize,
        found: Vec<BTreeSet<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        if let Some(targets) = s.graph.get(v) {
            for w in targets {
                let w = w.as_str();
                if !s.index.contains_key(w) {
                    visit(s, w);
                    let low = s.low[v].min(s.low[w]);
                    s.low.insert(v, low);
                } else if s.stack.contains(&w) {
                    let low = s.low[v].min(s.index[w]);
                    s.low.insert(v, low);
                }
            }
        }
        if s.low[v] == s.index[v] {
            let mut set = BTreeSet::new();
            while let Some(w) = s.stack.pop() {
                set.insert(w.to_string());
                if w == v {
                    break;
                }
            }
            if set.len() > 1 {
                s.found.push(set);
            }
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        next: 0,
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !state.index.contains_key(v.as_str()) {
            visit(&mut state, v);
        }
    }
    state.found
}

#[test]
fn every_module_has_a_layer() {
    let lib = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs"))
        .expect("read lib.rs");
    for line in lib.lines() {
        if let Some(module) = line.strip_prefix("pub mod ") {
            layer_of(module.trim_end_matches(';'));
        }
    }
    assert_eq!(
        top_level_names("log::{self, format}, tier::X }, y"),
        ["log", "tier"]
    );
}

#[test]
fn imports_follow_the_layers() {
    let graph = imports(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(graph.len() > 10, "read too few modules: {graph:?}");
    let mut upward = BTreeSet::new();
    for (from, targets) in &graph {
        for to in targets {
            if layer_of(to) > layer_of(from) {
                upward.insert((from.as_str(), to.as_str()));
            }
        }
    }
    let known: BTreeSet<_> = KNOWN_UPWARD.iter().copied().collect();
    let new: Vec<_> = upward.difference(&known).collect();
    assert!(
        new.is_empty(),
        "imports against the layering (docs/architecture.md, \"Layers\"): {new:?}"
    );
    let gone: Vec<_> = known.difference(&upward).collect();
    assert!(
        gone.is_empty(),
        "no longer upward, remove from KNOWN_UPWARD: {gone:?}"
    );
}

#[test]
fn no_new_import_cycles() {
    let graph = imports(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    let found = cycles(&graph);
    let known: Vec<BTreeSet<String>> = KNOWN_CYCLES
        .iter()
        .map(|c| c.iter().map(|m| m.to_string()).collect())
        .collect();
    for cycle in &found {
        assert!(
            known.iter().any(|k| cycle.is_subset(k)),
            "a new import cycle between modules: {cycle:?}"
        );
    }
    for k in &known {
        assert!(
            found.iter().any(|cycle| cycle == k),
            "the known cycle {k:?} shrank or went: update KNOWN_CYCLES (found {found:?})"
        );
    }
}
