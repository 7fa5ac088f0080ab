//! The gate's module layering (docs/development.md, "Layout"): a module imports only from modules below it.

use std::path::Path;

/// Bottom to top, as docs/development.md lists them; `main.rs` sits above all of them. A
/// folder (`src/NAME/`) is one module: its files may import each other.
const LAYERS: &[&str] = &[
    "cli",
    "settings",
    "nonce",
    "http",
    "exec",
    "report",
    "pinned",
    "keyring",
    "entitlement",
    "config",
    "logging",
    "call",
    "metering",
    "license",
    "exit",
    "supervisor",
    "lease",
    "gate",
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
const SUPERVISOR_IMPORTS: &[&str] = &["exec"];

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
                // `$crate::call::…` in a macro of call.rs names the module itself.
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

#[test]
fn the_import_reader_sees_groups_and_paths() {
    let names = imports("use crate::{config::{A, B}, exec::E};\nlet x = crate::http::client();");
    assert_eq!(names, ["config", "exec", "http"]);
}
