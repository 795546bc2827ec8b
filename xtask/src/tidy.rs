//! Tidy checks: source-tree conventions, run by `cargo xtask ci` and as
//! `#[test]`s.

use std::fs;
use std::path::{Path, PathBuf};

/// The crates in layer order: each may depend only on crates before it.
const LAYERS: [&str; 6] = ["sop-core", "sop-registry", "sop-store", "sop-cache", "sop-btree", "sop-server"];

/// Runs every tidy check over the tree at `root`.
pub(crate) fn run_all(root: &Path) -> Result<(), String> {
    let mut problems = Vec::new();
    problems.extend(check_sources(root));
    problems.extend(check_layers(root));
    if problems.is_empty() {
        println!("tidy: ok");
        Ok(())
    } else {
        Err(format!("tidy found {} problem(s):\n  {}", problems.len(), problems.join("\n  ")))
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if name == "target" || name.to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn check_sources(root: &Path) -> Vec<String> {
    let mut files = Vec::new();
    for krate in LAYERS.iter().chain(&["xtask"]) {
        rust_files(&root.join(krate), &mut files);
    }
    let mut problems = Vec::new();
    for file in files {
        let Ok(text) = fs::read_to_string(&file) else { continue };
        let shown = file.strip_prefix(root).unwrap_or(&file).display().to_string();
        if !text.starts_with("//!") {
            problems.push(format!("{shown}: must start with a `//!` line saying why it exists"));
        }
        for (n, line) in text.lines().enumerate() {
            if line.ends_with(' ') || line.ends_with('\t') {
                problems.push(format!("{shown}:{}: trailing whitespace", n + 1));
            }
            let t = line.trim_start();
            if t.starts_with("#[should_panic") || t.starts_with("#[ignore") {
                problems
                    .push(format!("{shown}:{}: no #[should_panic]/#[ignore]; assert the error kind", n + 1));
            }
        }
    }
    problems
}

/// The layer rule: a crate's `sop-*` dependencies all come before it.
fn check_layers(root: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, krate) in LAYERS.iter().enumerate() {
        let Ok(manifest) = fs::read_to_string(root.join(krate).join("Cargo.toml")) else {
            problems.push(format!("{krate}/Cargo.toml is missing"));
            continue;
        };
        for dep in sop_dependencies(&manifest) {
            match LAYERS.iter().position(|l| *l == dep) {
                Some(j) if j < i => {}
                _ => problems.push(format!("{krate} depends on {dep}, which is not below it in the layers")),
            }
        }
    }
    problems
}

/// Names of `sop-*` crates under `[dependencies]` (not dev-dependencies).
fn sop_dependencies(manifest: &str) -> Vec<String> {
    let mut in_deps = false;
    let mut deps = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_deps = line == "[dependencies]";
            continue;
        }
        if in_deps && line.starts_with("sop-") {
            let name: String = line.chars().take_while(|c| c.is_alphanumeric() || *c == '-').collect();
            deps.push(name);
        }
    }
    deps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tidy_tree() {
        let root = crate::project_root();
        if let Err(e) = run_all(&root) {
            panic!("{e}");
        }
    }

    #[test]
    fn layer_parser_reads_only_normal_dependencies() {
        let manifest = "[dependencies]\nsop-core.workspace = true\nsop-store = { workspace = true }\n\n[dev-dependencies]\nsop-btree.workspace = true\n";
        assert_eq!(sop_dependencies(manifest), vec!["sop-core", "sop-store"]);
        let bad = check_layers_of("sop-core", "[dependencies]\nsop-btree.workspace = true\n");
        assert_eq!(bad.len(), 1);
    }

    fn check_layers_of(krate: &str, manifest: &str) -> Vec<String> {
        let i = LAYERS.iter().position(|l| *l == krate).unwrap_or(0);
        sop_dependencies(manifest)
            .into_iter()
            .filter(|d| LAYERS.iter().position(|l| l == d).is_none_or(|j| j >= i))
            .collect()
    }
}
