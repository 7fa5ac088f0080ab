//! The gate's module layering (docs/development.md, "Layout"): a module imports only from modules below it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Bottom to top, as docs/development.md lists them; `main.rs` sits above all of them. A
/// folder (`src/NAME/`) is one module: its files may import each other.
const LAYERS: &[&str] = &[
    "cli",
    "settings",
    "nonce",
    "outcome",
    "http",
    "exec",
    "report",
    "pinned",
    "keyring",
    "entitlement",
    "config",
    "logging",
    "ledger",
    "aws",
    "anywhere",
    "metering",
    "license",
    "exit",
    "supervisor",
    "watch",
    "lease",
    "agent",
    "check",
    "gate",
    "handover",
    "verify",
];

/// The crate modules a source file names through `crate::` paths.
fn imports(source: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (at, _) in source.match_indices("crate::") {
        let rest = &source[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `use crate::{a, b::c, d::{e, f}}`: the first name of each top-level item.
            let (mut depth, mut item_start) = (0, true);
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && (c.is_ascii_alphabetic() || c == '_') => {
                        let name: String = group[i..]
                            .chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                            .collect();
                        found.push(name);
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            found.push(
                rest.chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect(),
            );
        }
    }
    found
}

/// What the supervisor (tini's and catatonit's job) may import: no AWS call, check or meter.
/// `outcome` is names only (a duty's loss carries one as data), and imports nothing.
const SUPERVISOR_IMPORTS: &[&str] = &["exec", "outcome"];

/// The source of a module: `src/NAME.rs`, or every file under `src/NAME/`.
fn source_of(src: &Path, module: &str) -> String {
    let file = src.join(format!("{module}.rs"));
    if file.is_file() {
        return std::fs::read_to_string(file).unwrap();
    }
    let mut text = String::new();
    let mut folders = vec![src.join(module)];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                text += &std::fs::read_to_string(path).unwrap();
            }
        }
    }
    text
}

#[test]
fn every_module_imports_only_from_modules_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut listed: Vec<String> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|path| {
            let name = path.file_name()?.to_string_lossy().into_owned();
            match name.strip_suffix(".rs") {
                Some(module) => Some(module.to_string()),
                None if path.is_dir() => Some(name),
                None => None,
            }
        })
        .filter(|n| n != "main" && n != "lib")
        .collect();
    listed.sort();
    let mut layers: Vec<String> = LAYERS.iter().map(|s| s.to_string()).collect();
    layers.sort();
    assert_eq!(
        listed, layers,
        "src/ and LAYERS (and docs/development.md's layout) must name the same modules"
    );

    let mut violations = Vec::new();
    for (level, module) in LAYERS.iter().enumerate() {
        let source = source_of(&src, module);
        for name in imports(&source) {
            match LAYERS.iter().position(|m| *m == name) {
                // `$crate::aws::…` in a macro of aws/ names the module itself.
                Some(other) if other < level || name == *module => {}
                Some(_) => {
                    violations.push(format!("{module} imports {name}, which is not below it"))
                }
                None => violations.push(format!("{module} imports crate::{name}, not a module")),
            }
        }
    }
    assert!(violations.is_empty(), "{violations:#?}");
}

#[test]
fn the_supervisor_knows_no_aws_check_or_meter() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let source = source_of(&src, "supervisor");
    let foreign: Vec<String> = imports(&source)
        .into_iter()
        .filter(|name| name != "supervisor" && !SUPERVISOR_IMPORTS.contains(&name.as_str()))
        .collect();
    assert!(foreign.is_empty(), "the supervisor imports {foreign:?}");
    for word in ["aws_", "License", "Metering"] {
        assert!(
            !source.contains(word),
            "the supervisor's source names {word:?}"
        );
    }
}

/// The files directly in each folder of `src/`, by submodule (`mod` for `mod.rs`).
fn folders(src: &Path) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut found = BTreeMap::new();
    for entry in std::fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        if !path.is_dir() {
            continue;
        }
        let files = std::fs::read_dir(&path)
            .unwrap()
            .map(|file| file.unwrap().path())
            .filter(|file| file.extension().is_some_and(|e| e == "rs"))
            .map(|file| {
                let stem = file.file_stem().unwrap().to_string_lossy().into_owned();
                (stem, std::fs::read_to_string(&file).unwrap())
            })
            .collect();
        found.insert(
            path.file_name().unwrap().to_string_lossy().into_owned(),
            files,
        );
    }
    found
}

/// Inside a folder, which files a file imports: `crate::folder::file::…` names that file,
/// any other `crate::folder::…` path the folder's `mod.rs`, and `mod.rs` imports each file it
/// re-exports from (`pub use file::…`).
fn folder_imports(
    folder: &str,
    files: &BTreeMap<String, String>,
) -> BTreeMap<String, BTreeSet<String>> {
    let prefix = format!("crate::{folder}::");
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (file, source) in files {
        let named = edges.entry(file.clone()).or_default();
        for (at, _) in source.match_indices(&prefix) {
            let rest = &source[at + prefix.len()..];
            let first: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // `crate::x::file::Item` or `crate::x::file;`, not an item `file` of `mod.rs`.
            let after = rest[first.len()..].chars().next();
            let target =
                if files.contains_key(&first) && after.is_some_and(|c| c == ':' || c == ';') {
                    first
                } else {
                    "mod".to_string()
                };
            if target != *file {
                named.insert(target);
            }
        }
        if file == "mod" {
            for line in source.lines() {
                let line = line.trim_start();
                let used = line
                    .strip_prefix("pub use ")
                    .or_else(|| line.strip_prefix("pub(crate) use "))
                    .or_else(|| line.strip_prefix("use "));
                if let Some(path) = used {
                    let first: String = path
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if files.contains_key(&first) {
                        named.insert(first);
                    }
                }
            }
        }
    }
    edges
}

/// A cycle in `edges`, if there is one, as the files along it.
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
        if !done.insert(node.to_string()) {
            return None;
        }
        path.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, done, path) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|node| visit(node, edges, &mut done, &mut Vec::new()))
}

#[test]
fn no_file_in_a_folder_imports_one_that_imports_it_back() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for (folder, files) in folders(&src) {
        let edges = folder_imports(&folder, &files);
        assert_eq!(find_cycle(&edges), None, "an import cycle in src/{folder}/");
    }
}

#[test]
fn the_folder_reader_sees_a_file_importing_the_folder_that_re_exports_it() {
    let files: BTreeMap<String, String> = [
        ("mod", "mod a;\nmod b;\npub use a::A;\n"),
        ("a", "use crate::x::b::B;\n"),
        ("b", "use crate::x::A;\n"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let edges = folder_imports("x", &files);
    assert_eq!(
        find_cycle(&edges),
        Some(vec!["a".into(), "b".into(), "mod".into(), "a".into()])
    );
}

#[test]
fn the_import_reader_sees_groups_and_paths() {
    let names = imports("use crate::{config::{A, B}, exec::E};\nlet x = crate::http::client();");
    assert_eq!(names, ["config", "exec", "http"]);
}
