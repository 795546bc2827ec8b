//! Tidy checks: source-tree conventions and the crate dependency graph, run
//! by `cargo xtask ci` and as `#[test]`s.
//!
//! The dependency rules are the tables below ([`LAYERS`], [`FORBIDDEN`],
//! [`CONFINED`]), checked against `cargo metadata --no-deps`, which lists each
//! workspace member's direct dependencies.

use std::collections::BTreeSet;
use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// Rows of `(crate, workspace crates it may depend on)`.
type Table = [(&'static str, &'static [&'static str])];

/// The dependency graph the architecture allows (a DAG): each workspace
/// crate and the workspace crates its normal and build dependencies may
/// name. Dev-dependencies are not checked. A row may name a crate that is
/// not in the workspace (yet); every workspace member needs a row.
const LAYERS: &Table = &[
    ("sop-core", &[]),
    ("sop-registry", &["sop-core"]),
    ("sop-store", &["sop-core"]),
    ("sop-cache", &["sop-core"]),
    ("sop-backends", &["sop-core", "sop-registry", "sop-store"]),
    ("sop-btree", &["sop-core", "sop-cache", "sop-registry", "sop-store", "sop-backends"]),
    ("sop-server", &["sop-core", "sop-btree", "sop-backends", "sop-registry", "sop-store", "sop-cache"]),
    ("sop-bench", &["sop-core", "sop-btree", "sop-backends", "sop-registry", "sop-store", "sop-cache"]),
    ("xtask", &[]),
];

/// How firmly an external crate is kept out of a workspace crate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ban {
    /// Not as a normal dependency, optional or not.
    Always,
    /// Only as an optional normal dependency (behind a feature).
    UnlessOptional,
}

/// External crates a workspace crate must not have as normal dependencies.
const FORBIDDEN: &[(&str, &[(&str, Ban)])] = &[(
    // sop-core does no I/O; tokio only for its `testkit` feature.
    "sop-core",
    &[
        ("rocksdb", Ban::Always),
        ("librocksdb-sys", Ban::Always),
        ("object_store", Ban::Always),
        ("foyer", Ban::Always),
        ("reqwest", Ban::Always),
        ("axum", Ban::Always),
        ("hyper", Ban::Always),
        ("tokio", Ban::UnlessOptional),
    ],
)];

/// External crates that only the listed workspace crates may have as normal
/// dependencies (optional or not).
const CONFINED: &[(&str, &[&str])] = &[("rocksdb", &["sop-backends", "sop-bench"])];

/// Runs every tidy check over the tree at `root`.
pub(crate) fn run_all(root: &Path) -> Result<(), String> {
    let packages = parse_metadata(&cargo_metadata(root)?)?;
    let dirs: Vec<&Path> = packages.iter().map(|p| p.dir.as_path()).collect();
    let mut problems = check_sources(root, &dirs);
    problems.extend(check_graph(&packages));
    if problems.is_empty() {
        println!("tidy: ok");
        Ok(())
    } else {
        Err(format!("tidy found {} problem(s):\n  {}", problems.len(), problems.join("\n  ")))
    }
}

/// Appends the `.rs` files under `dir` to `out`, skipping `target` and
/// hidden directories.
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

/// The per-file conventions, over the `.rs` files under each of `dirs`.
fn check_sources(root: &Path, dirs: &[&Path]) -> Vec<String> {
    let mut files = Vec::new();
    for dir in dirs {
        rust_files(dir, &mut files);
    }
    let canonical_root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    let mut problems = Vec::new();
    for file in files {
        let Ok(text) = fs::read_to_string(&file) else { continue };
        let relative = file.strip_prefix(root).or_else(|_| file.strip_prefix(&canonical_root));
        let shown = relative.unwrap_or(&file).display().to_string();
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

/// A workspace member, as `cargo metadata` describes it.
#[derive(Debug)]
struct Package {
    /// The package name.
    name: String,
    /// The directory holding its `Cargo.toml`.
    dir: PathBuf,
    /// Its direct dependencies, every kind and target.
    deps: Vec<Dep>,
}

/// One dependency declaration of a package.
#[derive(Debug, PartialEq, Eq)]
struct Dep {
    /// The package depended on (its real name, not a `rename`).
    name: String,
    /// The table it is declared in.
    kind: DepKind,
    /// Declared `optional = true`.
    optional: bool,
}

/// The dependency table a declaration sits in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DepKind {
    /// `[dependencies]`.
    Normal,
    /// `[build-dependencies]`.
    Build,
    /// `[dev-dependencies]`.
    Dev,
}

/// The JSON of `cargo metadata --format-version 1 --no-deps`, run in `root`
/// with the cargo in `$CARGO` (else `cargo`).
fn cargo_metadata(root: &Path) -> Result<String, String> {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let shown = format!("{cargo} metadata --format-version 1 --no-deps");
    let out = Command::new(&cargo)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(root)
        .output()
        .map_err(|e| format!("{shown}: {e}"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(format!("{shown} exited with {}: {}", out.status, stderr.trim()));
    }
    String::from_utf8(out.stdout).map_err(|e| format!("{shown}: output is not UTF-8: {e}"))
}

/// The workspace members described by `cargo metadata` JSON.
fn parse_metadata(json: &str) -> Result<Vec<Package>, String> {
    let meta: Value = serde_json::from_str(json).map_err(|e| format!("cargo metadata: {e}"))?;
    let members: BTreeSet<&str> = meta["workspace_members"]
        .as_array()
        .ok_or("cargo metadata: no `workspace_members` array")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let packages = meta["packages"].as_array().ok_or("cargo metadata: no `packages` array")?;
    packages
        .iter()
        .filter(|p| p["id"].as_str().is_some_and(|id| members.contains(id)))
        .map(parse_package)
        .collect()
}

/// One entry of the metadata's `packages`.
fn parse_package(p: &Value) -> Result<Package, String> {
    let name = str_field(p, "name")?;
    let manifest = Path::new(str_field(p, "manifest_path")?);
    let dir = manifest.parent().map_or_else(PathBuf::new, Path::to_path_buf);
    let deps = p["dependencies"]
        .as_array()
        .ok_or_else(|| format!("cargo metadata: {name}: no `dependencies` array"))?
        .iter()
        .map(|d| parse_dep(d).map_err(|e| format!("cargo metadata: {name}: {e}")))
        .collect::<Result<_, _>>()?;
    Ok(Package { name: name.to_owned(), dir, deps })
}

/// One entry of a package's `dependencies`.
fn parse_dep(d: &Value) -> Result<Dep, String> {
    let kind = match d["kind"].as_str() {
        None => DepKind::Normal,
        Some("build") => DepKind::Build,
        Some("dev") => DepKind::Dev,
        Some(other) => return Err(format!("unknown dependency kind {other:?}")),
    };
    Ok(Dep {
        name: str_field(d, "name")?.to_owned(),
        kind,
        optional: d["optional"].as_bool().unwrap_or(false),
    })
}

/// The string field `key` of the JSON object `v`.
fn str_field<'v>(v: &'v Value, key: &str) -> Result<&'v str, String> {
    v[key].as_str().ok_or_else(|| format!("cargo metadata: missing string field `{key}`"))
}

/// Every dependency rule over `packages`, and the soundness of [`LAYERS`].
fn check_graph(packages: &[Package]) -> Vec<String> {
    let mut problems = check_table(LAYERS);
    let table_names = LAYERS.iter().map(|(krate, _)| *krate);
    let workspace: BTreeSet<&str> = packages.iter().map(|p| p.name.as_str()).chain(table_names).collect();
    for package in packages {
        problems.extend(check_package(package, &workspace));
    }
    problems
}

/// The rules for one package; `workspace` names every workspace crate (the
/// members and the table's rows).
fn check_package(package: &Package, workspace: &BTreeSet<&str>) -> Vec<String> {
    let krate = package.name.as_str();
    let allowed = LAYERS.iter().find(|(k, _)| *k == krate).map(|(_, deps)| *deps);
    let mut problems = Vec::new();
    if allowed.is_none() {
        problems.push(format!(
            "{krate}: workspace member missing from the layer table (`LAYERS` in xtask/src/tidy.rs); \
             add it to the layer table"
        ));
    }
    for dep in package.deps.iter().filter(|d| d.kind != DepKind::Dev) {
        let name = dep.name.as_str();
        if !workspace.contains(name) {
            if dep.kind == DepKind::Normal {
                problems.extend(check_external(krate, dep));
            }
        } else if let Some(allowed) = allowed
            && !allowed.contains(&name)
        {
            let kind = if dep.kind == DepKind::Build { "build-" } else { "" };
            problems.push(format!(
                "{krate} {kind}depends on {name}, which the layer table does not allow (allowed: {})",
                if allowed.is_empty() { "none".to_owned() } else { allowed.join(", ") }
            ));
        }
    }
    problems
}

/// The [`FORBIDDEN`] and [`CONFINED`] rules for `krate`'s normal dependency
/// `dep` on an external crate.
fn check_external(krate: &str, dep: &Dep) -> Vec<String> {
    let name = dep.name.as_str();
    let mut problems = Vec::new();
    let ban = FORBIDDEN
        .iter()
        .filter(|(k, _)| *k == krate)
        .flat_map(|(_, bans)| bans.iter())
        .find(|(banned, _)| *banned == name)
        .map(|(_, ban)| *ban);
    match ban {
        Some(Ban::Always) => problems.push(format!("{krate} must not depend on {name}")),
        Some(Ban::UnlessOptional) if !dep.optional => {
            problems.push(format!("{krate} may depend on {name} only as an optional dependency"));
        }
        _ => {}
    }
    if let Some((_, owners)) = CONFINED.iter().find(|(confined, _)| *confined == name)
        && !owners.contains(&krate)
    {
        problems.push(format!("{krate} must not depend on {name}: only {} may", owners.join(", ")));
    }
    problems
}

/// The table's own soundness: one row per crate, every allowed crate has a
/// row, and the allowed edges form no cycle.
fn check_table(table: &Table) -> Vec<String> {
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for (krate, deps) in table {
        if !seen.insert(*krate) {
            problems.push(format!("layer table: {krate} has more than one row"));
        }
        for dep in deps.iter().filter(|d| !table.iter().any(|(k, _)| k == *d)) {
            problems.push(format!("layer table: {krate} may depend on {dep}, which has no row"));
        }
    }
    if let Some(cycle) = find_cycle(table) {
        problems.push(format!("layer table: cycle {}", cycle.join(" -> ")));
    }
    problems
}

/// The first cycle among `table`'s allowed edges, as a path that ends where
/// it starts.
fn find_cycle(table: &Table) -> Option<Vec<&'static str>> {
    let mut done = BTreeSet::new();
    table.iter().find_map(|(krate, _)| visit(table, krate, &mut Vec::new(), &mut done))
}

/// Depth-first search from `krate`, with `path` the crates on the way to it
/// and `done` the crates already known to reach no cycle.
fn visit(
    table: &Table,
    krate: &'static str,
    path: &mut Vec<&'static str>,
    done: &mut BTreeSet<&'static str>,
) -> Option<Vec<&'static str>> {
    if let Some(start) = path.iter().position(|k| *k == krate) {
        let mut cycle = path.split_off(start);
        cycle.push(krate);
        return Some(cycle);
    }
    if done.contains(krate) {
        return None;
    }
    path.push(krate);
    let deps = table.iter().find(|(k, _)| *k == krate).map_or(&[][..], |(_, deps)| *deps);
    if let Some(cycle) = deps.iter().find_map(|dep| visit(table, dep, path, done)) {
        return Some(cycle);
    }
    path.pop();
    done.insert(krate);
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A dependency in a fake package: (name, kind as cargo writes it, optional).
    type FakeDep = (&'static str, Option<&'static str>, bool);

    /// `cargo metadata` JSON for the given workspace members.
    fn metadata(packages: &[(&str, &[FakeDep])]) -> String {
        let packages: Vec<Value> = packages
            .iter()
            .map(|(name, deps)| {
                let deps: Vec<Value> = deps
                    .iter()
                    .map(|(dep, kind, optional)| {
                        json!({"name": dep, "kind": kind, "optional": optional, "rename": null, "target": null})
                    })
                    .collect();
                json!({
                    "name": name,
                    "id": format!("path+file:///w/{name}#0.1.0"),
                    "manifest_path": format!("/w/{name}/Cargo.toml"),
                    "dependencies": deps,
                })
            })
            .collect();
        let members: Vec<Value> = packages.iter().map(|p| p["id"].clone()).collect();
        json!({"packages": packages, "workspace_members": members, "version": 1}).to_string()
    }

    const NORMAL: Option<&str> = None;
    const BUILD: Option<&str> = Some("build");
    const DEV: Option<&str> = Some("dev");

    /// Today's workspace (no sop-backends yet), dev-dependencies included.
    fn healthy() -> Vec<(&'static str, &'static [FakeDep])> {
        vec![
            (
                "sop-core",
                &[
                    ("tokio", NORMAL, true),
                    ("loom", NORMAL, false),
                    ("tokio", DEV, false),
                    ("sop-btree", DEV, false),
                ],
            ),
            ("sop-registry", &[("sop-core", NORMAL, false)]),
            ("sop-store", &[("object_store", NORMAL, false), ("sop-core", NORMAL, false)]),
            (
                "sop-cache",
                &[("foyer", NORMAL, false), ("sop-core", NORMAL, false), ("sop-store", DEV, false)],
            ),
            (
                "sop-btree",
                &[("sop-cache", NORMAL, false), ("sop-registry", NORMAL, false), ("sop-btree", DEV, false)],
            ),
            (
                "sop-server",
                &[("axum", NORMAL, false), ("sop-btree", NORMAL, false), ("sop-store", NORMAL, false)],
            ),
            ("sop-bench", &[("rocksdb", NORMAL, false), ("sop-btree", NORMAL, false)]),
            ("xtask", &[("serde_json", NORMAL, false)]),
        ]
    }

    /// The graph problems of `packages`, through the JSON parser.
    fn problems(packages: &[(&str, &[FakeDep])]) -> Result<Vec<String>, String> {
        Ok(check_graph(&parse_metadata(&metadata(packages))?))
    }

    /// [`healthy`] with `krate`'s dependencies replaced by `deps`.
    fn problems_with(krate: &str, deps: &'static [FakeDep]) -> Result<Vec<String>, String> {
        let mut packages = healthy();
        let row = packages.iter_mut().find(|(k, _)| *k == krate).ok_or("no such fake package")?;
        row.1 = deps;
        problems(&packages)
    }

    #[test]
    fn tidy_tree() {
        let root = crate::project_root();
        if let Err(e) = run_all(&root) {
            panic!("{e}");
        }
    }

    #[test]
    fn parser_reads_cargo_metadata_output() -> Result<(), String> {
        let json = r#"{
          "packages": [{
            "name": "sop-cache", "version": "0.1.0", "id": "path+file:///w/sop-cache#0.1.0",
            "manifest_path": "/w/sop-cache/Cargo.toml",
            "dependencies": [
              {"name": "foyer", "source": "registry+https://github.com/rust-lang/crates.io-index",
               "req": "^0.22.6", "kind": null, "rename": null, "optional": false,
               "uses_default_features": true, "features": [], "target": null, "registry": null},
              {"name": "loom", "req": "^0.7.2", "kind": null, "rename": "loom-crate", "optional": true,
               "target": "cfg(sop_loom)"},
              {"name": "cc", "req": "^1", "kind": "build", "rename": null, "optional": false, "target": null},
              {"name": "sop-store", "req": "^0.1.0", "kind": "dev", "rename": null, "optional": false,
               "target": null, "path": "/w/sop-store"}
            ]
          }, {
            "name": "not-a-member", "id": "registry+x#not-a-member@1.0.0",
            "manifest_path": "/elsewhere/Cargo.toml", "dependencies": []
          }],
          "workspace_members": ["path+file:///w/sop-cache#0.1.0"],
          "workspace_root": "/w", "version": 1
        }"#;
        let packages = parse_metadata(json)?;
        assert_eq!(packages.len(), 1);
        let cache = &packages[0];
        assert_eq!((cache.name.as_str(), cache.dir.as_path()), ("sop-cache", Path::new("/w/sop-cache")));
        let dep = |name: &str, kind, optional| Dep { name: name.to_owned(), kind, optional };
        let expected = vec![
            dep("foyer", DepKind::Normal, false),
            dep("loom", DepKind::Normal, true),
            dep("cc", DepKind::Build, false),
            dep("sop-store", DepKind::Dev, false),
        ];
        assert_eq!(cache.deps, expected);
        assert!(parse_metadata(r#"{"packages": []}"#).is_err(), "workspace_members is required");
        Ok(())
    }

    #[test]
    fn healthy_graph_passes_and_dev_dependencies_are_free() -> Result<(), String> {
        assert_eq!(problems(&healthy())?, Vec::<String>::new());
        Ok(())
    }

    #[test]
    fn disallowed_workspace_edge_is_reported() -> Result<(), String> {
        let found = problems_with("sop-cache", &[("sop-core", NORMAL, false), ("sop-btree", NORMAL, true)])?;
        assert_eq!(
            found,
            ["sop-cache depends on sop-btree, which the layer table does not allow (allowed: sop-core)"]
        );
        let found = problems_with("sop-core", &[("sop-registry", BUILD, false)])?;
        assert_eq!(
            found,
            ["sop-core build-depends on sop-registry, which the layer table does not allow (allowed: none)"]
        );
        Ok(())
    }

    #[test]
    fn store_must_not_depend_on_registry() -> Result<(), String> {
        let found =
            problems_with("sop-store", &[("sop-core", NORMAL, false), ("sop-registry", NORMAL, false)])?;
        assert_eq!(
            found,
            ["sop-store depends on sop-registry, which the layer table does not allow (allowed: sop-core)"]
        );
        Ok(())
    }

    #[test]
    fn edges_to_a_table_crate_outside_the_workspace_are_checked() -> Result<(), String> {
        assert_eq!(problems_with("sop-btree", &[("sop-backends", NORMAL, false)])?, Vec::<String>::new());
        let found = problems_with("sop-cache", &[("sop-backends", NORMAL, false)])?;
        assert_eq!(
            found,
            ["sop-cache depends on sop-backends, which the layer table does not allow (allowed: sop-core)"]
        );
        Ok(())
    }

    #[test]
    fn forbidden_external_crate_is_reported() -> Result<(), String> {
        let found = problems_with("sop-core", &[("object_store", NORMAL, true), ("hyper", DEV, false)])?;
        assert_eq!(found, ["sop-core must not depend on object_store"]);
        let found = problems_with("sop-core", &[("rocksdb", NORMAL, true)])?;
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0], "sop-core must not depend on rocksdb");
        assert!(found[1].starts_with("sop-core must not depend on rocksdb: only "), "{found:?}");
        Ok(())
    }

    #[test]
    fn tokio_in_core_only_optional() -> Result<(), String> {
        assert_eq!(problems_with("sop-core", &[("tokio", NORMAL, true)])?, Vec::<String>::new());
        let found = problems_with("sop-core", &[("tokio", NORMAL, false)])?;
        assert_eq!(found, ["sop-core may depend on tokio only as an optional dependency"]);
        Ok(())
    }

    #[test]
    fn rocksdb_is_confined() -> Result<(), String> {
        let found = problems_with("sop-btree", &[("rocksdb", NORMAL, true), ("rocksdb", DEV, false)])?;
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("sop-btree must not depend on rocksdb: only "), "{found:?}");
        let mut packages = healthy();
        packages.push(("sop-backends", &[("rocksdb", NORMAL, false), ("sop-store", NORMAL, false)]));
        assert_eq!(problems(&packages)?, Vec::<String>::new(), "sop-backends and sop-bench may use rocksdb");
        Ok(())
    }

    #[test]
    fn member_missing_from_the_table_is_reported() -> Result<(), String> {
        let mut packages = healthy();
        packages.push(("sop-extra", &[("sop-core", NORMAL, false)]));
        let found = problems(&packages)?;
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("sop-extra: workspace member missing from the layer table"),
            "{found:?}"
        );
        assert!(found[0].ends_with("add it to the layer table"), "{found:?}");
        Ok(())
    }

    #[test]
    fn layer_table_is_a_dag_and_the_check_sees_loops() {
        assert_eq!(check_table(LAYERS), Vec::<String>::new());
        let looped: &Table = &[("a", &[]), ("b", &["a", "c"]), ("c", &["d"]), ("d", &["b"])];
        assert_eq!(check_table(looped), ["layer table: cycle b -> c -> d -> b"]);
        let self_loop: &Table = &[("a", &["a"])];
        assert_eq!(check_table(self_loop), ["layer table: cycle a -> a"]);
        let open: &Table = &[("a", &["b"]), ("a", &[])];
        let expected =
            ["layer table: a may depend on b, which has no row", "layer table: a has more than one row"];
        assert_eq!(check_table(open), expected);
    }
}
