//! The emulator's modules import one another without a cycle, file by file and folder by folder.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every module of `src/` (`a`, `a::b`; `main.rs` is `crate`) and its source.
fn modules() -> BTreeMap<String, String> {
    fn walk(dir: &Path, prefix: &[String], out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                let mut inner = prefix.to_vec();
                inner.push(name);
                walk(&path, &inner, out);
            } else if let Some(stem) = name.strip_suffix(".rs") {
                let mut segments = prefix.to_vec();
                if stem != "mod" && stem != "main" {
                    segments.push(stem.to_string());
                }
                let module = if segments.is_empty() {
                    "crate".to_string()
                } else {
                    segments.join("::")
                };
                out.insert(module, std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &[],
        &mut out,
    );
    out
}

/// The paths a source names through `crate::`, use-groups expanded:
/// `use crate::{a::{b, c}, d};` names `a::b`, `a::c` and `d`.
fn crate_paths(source: &str) -> Vec<String> {
    fn expand(tree: &str, prefix: &str, out: &mut Vec<String>) {
        let tree = tree.trim();
        match tree.find('{') {
            None => {
                let path = tree.split(" as ").next().unwrap_or("").trim();
                if !path.is_empty() && path != "self" {
                    out.push(format!("{prefix}{path}"));
                } else if path == "self" {
                    out.push(prefix.trim_end_matches("::").to_string());
                }
            }
            Some(open) => {
                let head = &tree[..open];
                let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
                let prefix = format!("{prefix}{head}");
                let (mut depth, mut start) = (0, 0);
                for (i, c) in inner.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            expand(&inner[start..i], &prefix, out);
                            start = i + 1;
                        }
                        _ => {}
                    }
                }
                expand(&inner[start..], &prefix, out);
            }
        }
    }
    let mut found = Vec::new();
    for (at, _) in source.match_indices("crate::") {
        let rest = &source[at + "crate::".len()..];
        let path = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(rest.len());
        // A use-group runs to its closing brace.
        let mut depth = 0;
        let end = if rest[path..].starts_with('{') {
            rest[path..]
                .char_indices()
                .find(|(_, c)| {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                })
                .map_or(rest.len(), |(i, _)| path + i + 1)
        } else {
            path
        };
        expand(&rest[..end], "", &mut found);
    }
    found
}

/// The module a path lies in: its longest prefix that is a module (`crate` if none is).
fn module_of(path: &str, modules: &BTreeMap<String, String>) -> String {
    let segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
    (1..=segments.len())
        .rev()
        .map(|n| segments[..n].join("::"))
        .find(|m| modules.contains_key(m))
        .unwrap_or_else(|| "crate".to_string())
}

/// A cycle in `edges`, if there is one, as the modules along it.
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        done: &mut BTreeSet<String>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, done, path) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|node| visit(node, edges, &mut done, &mut Vec::new()))
}

/// Who imports whom, module by module.
fn imports(modules: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    modules
        .iter()
        .map(|(module, source)| {
            let named = crate_paths(source)
                .iter()
                .map(|p| module_of(p, modules))
                .filter(|m| m != module)
                .collect();
            (module.clone(), named)
        })
        .collect()
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let modules = modules();
    assert!(modules.contains_key("protocol") && modules.contains_key("ops::license"));
    // `super::` would hide an import from this reader: every import is a `crate::` path
    // (a test module's `use super::*;` excepted).
    let hidden: Vec<&String> = modules
        .iter()
        .filter(|(_, source)| source.replace("use super::*;", "").contains("super::"))
        .map(|(module, _)| module)
        .collect();
    assert!(
        hidden.is_empty(),
        "use crate:: paths, not super::, in {hidden:?}"
    );

    let by_file = imports(&modules);
    assert_eq!(
        find_cycle(&by_file),
        None,
        "an import cycle between modules"
    );

    // Folder by folder: `ops` (with everything under it) and `protocol` may not import each
    // other either, whichever files do it.
    let top = |m: &str| m.split("::").next().unwrap_or(m).to_string();
    let mut by_folder: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, named) in &by_file {
        let entry = by_folder.entry(top(module)).or_default();
        entry.extend(named.iter().map(|m| top(m)).filter(|m| *m != top(module)));
    }
    assert_eq!(
        find_cycle(&by_folder),
        None,
        "an import cycle between folders"
    );
}

#[test]
fn the_reader_sees_groups_paths_and_cycles() {
    let paths = crate_paths(
        "use crate::{ops::{license::{self, Op}, Operation}, state::State as S};\n\
         use crate::answer::{error_answer, Outcome};\n\
         let x = crate::clock::shift(y);",
    );
    assert_eq!(
        paths,
        [
            "ops::license",
            "ops::license::Op",
            "ops::Operation",
            "state::State",
            "answer::error_answer",
            "answer::Outcome",
            "clock::shift"
        ]
    );
    let modules: BTreeMap<String, String> = ["crate", "ops", "ops::license", "clock"]
        .iter()
        .map(|m| (m.to_string(), String::new()))
        .collect();
    assert_eq!(module_of("ops::license::Op", &modules), "ops::license");
    assert_eq!(module_of("ops::Operation", &modules), "ops");
    assert_eq!(module_of("random_bytes", &modules), "crate");
    let edges = |pairs: &[(&str, &str)]| {
        let mut e: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (a, b) in pairs {
            e.entry(a.to_string()).or_default().insert(b.to_string());
        }
        e
    };
    assert_eq!(
        find_cycle(&edges(&[("a", "b"), ("b", "c"), ("a", "c")])),
        None
    );
    assert_eq!(
        find_cycle(&edges(&[("a", "b"), ("b", "c"), ("c", "a")])),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
}
