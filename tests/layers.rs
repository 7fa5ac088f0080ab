//! The gate's module layering (docs/development.md, "Layout"): a module imports only from modules below it.

use std::path::Path;

/// Bottom to top, as docs/development.md lists them; `main.rs` sits above all of them.
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
    "supervise",
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

#[test]
fn every_module_imports_only_from_modules_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut listed: Vec<String> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|n| n.strip_suffix(".rs").map(str::to_string))
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
        let source = std::fs::read_to_string(src.join(format!("{module}.rs"))).unwrap();
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
fn the_import_reader_sees_groups_and_paths() {
    let names = imports("use crate::{config::{A, B}, exec::E};\nlet x = crate::http::client();");
    assert_eq!(names, ["config", "exec", "http"]);
}
