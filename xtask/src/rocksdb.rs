//! Builds RocksDB's C++ once per target directory and points every later
//! cargo call at the archive.
//!
//! librocksdb-sys compiles ~340 C++ files (13–19 minutes on 2 cores) in its
//! build script, and cargo runs that script again whenever the unit's hash
//! changes — which it does between `check` (clippy, rustdoc) and `build`
//! (tests) and with every change of the workspace's feature set. With
//! `ROCKSDB_LIB_DIR` set, the script only links the given `librocksdb.a`
//! (and regenerates bindings, seconds), so each CI run compiles the C++ at
//! most once, and not at all when the target directory already holds it.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::{cargo_with, run, target_dir};

/// The directory holding the prebuilt `librocksdb.a`, once known.
pub(crate) static PREBUILT: OnceLock<PathBuf> = OnceLock::new();

const ARCHIVE: &str = "librocksdb.a";

/// Makes sure a prebuilt archive exists and records its directory.
///
/// On an x86-64 machine with SSE4.2 and carry-less multiplication (every
/// one since about 2011), the C++ is compiled with them: librocksdb-sys
/// only turns them on when Rust's own target features include them, and
/// without them RocksDB checksums every WAL record and blob file with a
/// table-driven CRC32C, 16 % of SOP-rs's profile in the issue-13 bulk
/// load. The archive is built in a target directory of its own, so that
/// the flags always reach a fresh build-script run.
pub(crate) fn prebuild() -> Result<(), String> {
    let version = librocksdb_sys_version()?;
    let (cxxflags, suffix) = cpu_flags();
    let prebuilt = target_dir().join("sop-prebuilt");
    let lib_dir = prebuilt.join(format!("librocksdb-sys-{version}{suffix}"));
    if !lib_dir.join(ARCHIVE).exists() {
        let build_dir = prebuilt.join(format!("build{suffix}"));
        let archive = match find_archive(&build_dir, &version) {
            Some(a) => a,
            None => {
                println!(
                    "\nbuilding RocksDB's C++ once (librocksdb-sys {version}, flags {cxxflags:?}); this takes a while"
                );
                let mut cmd = cargo_with(&["build", "-p", "librocksdb-sys", "--target-dir"]);
                cmd.arg(&build_dir);
                for var in ["CXXFLAGS", "CFLAGS"] {
                    let old = std::env::var(var).unwrap_or_default();
                    cmd.env(var, format!("{old} {cxxflags}").trim());
                }
                run(cmd)?;
                find_archive(&build_dir, &version)
                    .ok_or("librocksdb-sys built, but no librocksdb.a was found in its output")?
            }
        };
        fs::create_dir_all(&lib_dir).map_err(|e| format!("creating {}: {e}", lib_dir.display()))?;
        let tmp = lib_dir.join("librocksdb.a.tmp");
        fs::copy(&archive, &tmp).map_err(|e| format!("copying {}: {e}", archive.display()))?;
        fs::rename(&tmp, lib_dir.join(ARCHIVE)).map_err(|e| format!("renaming {}: {e}", tmp.display()))?;
    }
    println!("RocksDB: linking the prebuilt {}", lib_dir.join(ARCHIVE).display());
    let _ = PREBUILT.set(lib_dir);
    Ok(())
}

/// Extra C/C++ flags for this machine's CPU, and the suffix that names
/// archives built with them.
fn cpu_flags() -> (&'static str, &'static str) {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags: Vec<&str> = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    if cfg!(target_arch = "x86_64") && flags.contains(&"sse4_2") && flags.contains(&"pclmulqdq") {
        ("-msse4.2 -mpclmul", "-sse42")
    } else {
        ("", "")
    }
}

/// The librocksdb-sys version pinned in `Cargo.lock`.
fn librocksdb_sys_version() -> Result<String, String> {
    let lock = fs::read_to_string(crate::project_root().join("Cargo.lock"))
        .map_err(|e| format!("reading Cargo.lock: {e}"))?;
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line == "name = \"librocksdb-sys\"" {
            let version = lines.next().and_then(|l| l.strip_prefix("version = \"")?.strip_suffix('"'));
            return version.map(str::to_owned).ok_or_else(|| "no version after librocksdb-sys".into());
        }
    }
    Err("librocksdb-sys is not in Cargo.lock".into())
}

/// A finished archive of this version from an earlier build-script run: its
/// `output` file is written only when the script completed.
fn find_archive(target: &Path, version: &str) -> Option<PathBuf> {
    let build = target.join("debug").join("build");
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = fs::read_dir(build)
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("librocksdb-sys-"))
        .filter(|e| e.path().join("output").exists())
        .filter(|e| e.path().join("root-output").exists())
        .map(|e| e.path().join("out").join(ARCHIVE))
        .filter(|a| a.exists() && archive_matches(a, version))
        .filter_map(|a| Some((fs::metadata(&a).ok()?.modified().ok()?, a)))
        .collect();
    found.sort();
    found.pop().map(|(_, a)| a)
}

/// Whether the build script that made `archive` came from `version`.
fn archive_matches(archive: &Path, version: &str) -> bool {
    let Some(dir) = archive.parent().and_then(Path::parent) else { return false };
    fs::read_to_string(dir.join("output")).is_ok_and(|o| o.contains(&format!("librocksdb-sys-{version}")))
}
