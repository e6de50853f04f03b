//! Checks the layering the crate's header states: no module uses one above
//! it (in `use crate::…` or a `crate::…` path), so there is no import circle
//! and no import that runs back up. Inside `ws/` and `protocol/`, the
//! submodules' order (from the `//!` header of their `mod.rs`) is checked the
//! same way for `super::…` paths.

use std::path::{Path, PathBuf};

/// The backticked names after `marker` in a file's `//!` header, up to the
/// sentence's full stop.
fn order(file: &Path, marker: &str) -> Vec<String> {
    let text = std::fs::read_to_string(file).unwrap();
    let header: Vec<&str> =
        text.lines().take_while(|l| l.starts_with("//!")).map(|l| l.trim_start_matches("//!").trim()).collect();
    let header = header.join(" ");
    let start = header.find(marker).unwrap_or_else(|| panic!("{} states no {marker:?}", file.display()));
    let stated = &header[start + marker.len()..];
    let stated = stated.split(". ").next().unwrap_or_default();
    stated.split('`').skip(1).step_by(2).map(str::to_owned).collect()
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// The names that follow `prefix` in the file's code (comments left out).
fn uses(file: &Path, prefix: &str) -> Vec<String> {
    let text = std::fs::read_to_string(file).unwrap();
    let mut names = Vec::new();
    for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
        for (i, _) in line.match_indices(prefix) {
            let rest = &line[i + prefix.len()..];
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                names.push(name);
            }
        }
    }
    names
}

/// Each `(user, used)` pair in `files` where `used` is above `user` in `order`.
fn upward(order: &[String], files: &[(String, PathBuf)], prefix: &str) -> Vec<String> {
    let rank = |name: &str| order.iter().position(|m| m == name);
    let mut found = Vec::new();
    for (module, file) in files {
        let Some(own) = rank(module) else { continue };
        for used in uses(file, prefix) {
            if rank(&used).is_some_and(|theirs| theirs > own) {
                found.push(format!("{} uses {prefix}{used}", file.display()));
            }
        }
    }
    found
}

#[test]
fn no_module_uses_one_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let order = order(&src.join("lib.rs"), "Layers, lowest first:");
    assert!(order.len() > 10, "the stated layers were not found: {order:?}");
    let mut files = Vec::new();
    for file in rust_files(&src) {
        let relative = file.strip_prefix(&src).unwrap();
        let top = relative.components().next().unwrap().as_os_str().to_string_lossy();
        let module = top.trim_end_matches(".rs").to_owned();
        assert!(
            ["lib", "main", "layers"].contains(&module.as_str()) || order.contains(&module),
            "module {module} is missing from the layers in lib.rs"
        );
        files.push((module, file));
    }
    let found = upward(&order, &files, "crate::");
    assert!(found.is_empty(), "imports that run back up: {found:#?}");
}

#[test]
fn no_submodule_uses_one_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for dir in ["ws", "protocol"] {
        let order = order(&src.join(dir).join("mod.rs"), "lowest first:");
        assert!(order.len() > 2, "the stated order of {dir} was not found: {order:?}");
        let files: Vec<(String, PathBuf)> = rust_files(&src.join(dir))
            .into_iter()
            .map(|f| (f.file_stem().unwrap().to_string_lossy().into_owned(), f))
            .collect();
        let found = upward(&order, &files, "super::");
        assert!(found.is_empty(), "imports that run back up in {dir}: {found:#?}");
    }
}
