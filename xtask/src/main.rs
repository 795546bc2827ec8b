//! `cargo xtask`: the project's automation, in Rust (see matklad/cargo-xtask).
//!
//! - `cargo xtask serve [ARGS]`: the main job on a fresh machine —
//!   installs what the build needs, builds `sop` in release (RocksDB from
//!   the shared prebuilt archive) and runs `sop serve ARGS`.
//! - `cargo xtask ci` (the default): everything CI checks, in order —
//!   fmt, clippy, tests (nextest when installed), doc tests, rustdoc, loom.
//! - `cargo xtask schemathesis`: Schemathesis against `sop serve` (with and
//!   without a token).
//! - `cargo xtask loom`: the loom models (`--cfg sop_loom`), without RocksDB.
//! - `cargo xtask tidy`: the tidy checks alone (they also run as tests).
//! - `cargo xtask bench | crash | faults | serial | fuzz`: the benchmark and
//!   the long reliability campaigns (`docs/RELIABILITY.md`); `ci` runs a
//!   short variant of each.
//!
//! Each step echoes its command and the first failure stops the run.

mod moto;
mod rocksdb;
mod schemathesis;
mod tidy;

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let task = args.first().map_or("ci", String::as_str);
    let result = match task {
        "ci" => ci(),
        "serve" => serve(&args[1..]),
        "loom" => loom(),
        "schemathesis" => schemathesis::run(),
        "bench" => bench(&args[1..]),
        "crash" => crash(&args[1..], false),
        "fuzz" => fuzz(&args[1..]),
        "faults" => faults(&args[1..]),
        "serial" => serial(&args[1..]),
        "tidy" => tidy::run_all(&project_root()),
        "help" | "--help" | "-h" => {
            print_help();
            Ok(())
        }
        other => Err(format!("unknown task {other:?}; try `cargo xtask help`")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask {task}: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

fn print_help() {
    println!("cargo xtask [serve|ci|loom|tidy|bench|crash|faults|serial|fuzz|help]");
    println!("  serve [ARGS]  installs what the build needs, then runs `sop serve ARGS` (release)");
    println!("  ci    fmt, clippy, tidy, tests, doc tests, rustdoc, loom (the default)");
    println!("  loom  loom models of the concurrency-critical code");
    println!("  schemathesis  the OpenAPI fuzzer against `sop serve`, without and with a token (~1 min)");
    println!(
        "  bench [ARGS]             SOP-rs vs redb, RocksDB, SQLite, BTreeMap (release; --quick, --smoke, --no-sync, --json FILE)"
    );
    println!(
        "  crash [--kills N] [--seed S]  the crash campaign: SIGKILL and failpoint aborts (release; default 500 kills)"
    );
    println!(
        "  faults [--rounds N]  the fault campaign: blob-store and registry faults, 5 seeds (default 3000 rounds)"
    );
    println!(
        "  serial [--rounds N]  the serializability checker over N fresh databases of 16, 8 and 32 clients (default 300)"
    );
    println!(
        "  fuzz [--secs N] [--dev]  every cargo-fuzz target for N seconds each (default 300; CI: 20, --dev)"
    );
    println!("  tidy  source-tree conventions");
}

/// The workspace root (the parent of this crate's directory).
fn project_root() -> PathBuf {
    let manifest = env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    Path::new(&manifest).parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn cargo() -> Command {
    let mut cmd = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(project_root());
    if let Some(lib_dir) = rocksdb::PREBUILT.get() {
        cmd.env("ROCKSDB_LIB_DIR", lib_dir).env("ROCKSDB_STATIC", "1");
    }
    cmd
}

/// The cargo target directory (`CARGO_TARGET_DIR`, else `<root>/target`).
fn target_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR").map_or_else(|| project_root().join("target"), PathBuf::from)
}

/// Runs `cmd`, echoing it first; an error names it on failure.
fn run(mut cmd: Command) -> Result<(), String> {
    let shown = format!("{cmd:?}").replace('"', "");
    println!("\n$ {shown}");
    let start = Instant::now();
    let status = cmd.status().map_err(|e| format!("{shown}: {e}"))?;
    println!("  ({:.1}s)", start.elapsed().as_secs_f64());
    if status.success() { Ok(()) } else { Err(format!("{shown} exited with {status}")) }
}

fn cargo_with(args: &[&str]) -> Command {
    let mut cmd = cargo();
    cmd.args(args);
    cmd
}

fn has_nextest() -> bool {
    cargo().args(["nextest", "--version"]).output().is_ok_and(|o| o.status.success())
}

/// The engine's embedded backend and cluster mode's etcd registry, named
/// so that the engine's tests on them run even should no other crate turn
/// them on.
const ENGINE_FEATURES: &str = "sop-btree/embedded,sop-btree/cluster";

/// What the build needs from Debian: libclang for RocksDB's bindings,
/// protoc for etcd's gRPC code.
const BUILD_PACKAGES: [&str; 2] = ["libclang-dev", "protobuf-compiler"];

fn ci() -> Result<(), String> {
    let start = Instant::now();
    // etcd-server: the cluster-mode tests start local etcd members.
    ensure_system_packages(&[&BUILD_PACKAGES[..], &["curl", "etcd-server"]].concat())?;
    // The Python venvs (moto, Schemathesis: ~2.5 minutes of downloads on a
    // fresh machine) install beside the builds, which use the CPU.
    let venvs = std::thread::spawn(|| moto::install().and_then(|m| schemathesis::install().map(|_| m)));
    rocksdb::prebuild()?;
    run(cargo_with(&["fmt", "--all", "--", "--check"]))?;
    run(cargo_with(&["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))?;
    // The engine and the backends without RocksDB (and without cloud
    // stores): what `cargo test -p sop-btree` builds.
    let lean = [
        "clippy",
        "-p",
        "sop-registry",
        "-p",
        "sop-store",
        "-p",
        "sop-backends",
        "-p",
        "sop-btree",
        "--no-default-features",
        "--all-targets",
    ];
    run(cargo_with(&[&lean[..], &["--", "-D", "warnings"]].concat()))?;
    tidy::run_all(&project_root())?;
    // The S3 tests start moto's server themselves (on 127.0.0.1).
    let moto = venvs.join().map_err(|_| "installing the Python venvs panicked".to_owned())??;
    let mut tests = if has_nextest() {
        cargo_with(&["nextest", "run", "--workspace", "--features", ENGINE_FEATURES, "--no-fail-fast"])
    } else {
        cargo_with(&["test", "--workspace", "--features", ENGINE_FEATURES, "--lib", "--bins", "--tests"])
    };
    tests.env("SOP_MOTO_SERVER", &moto);
    run(tests)?;
    run(cargo_with(&["test", "--workspace", "--doc"]))?;
    let mut doc = cargo_with(&["doc", "--workspace", "--no-deps"]);
    doc.env("RUSTDOCFLAGS", "-D warnings");
    run(doc)?;
    let lean_doc = ["doc", "-p", "sop-backends", "-p", "sop-btree", "--no-deps", "--no-default-features"];
    let mut doc = cargo_with(&lean_doc);
    doc.env("RUSTDOCFLAGS", "-D warnings");
    run(doc)?;
    schemathesis::run()?;
    loom()?;
    crash(&[], true)?;
    fuzz(&["--secs".to_owned(), "20".to_owned(), "--dev".to_owned()])?;
    bench(&["--quick".to_owned(), "--smoke".to_owned(), "--dev".to_owned()])?;
    bench(&["--cluster".to_owned(), "--secs".to_owned(), "2".to_owned(), "--dev".to_owned()])?;
    run(cargo_with(&["run", "-p", "sop-btree", "--features", "embedded", "--example", "bank"]))?;
    println!("\nxtask ci: all green in {:.0}s", start.elapsed().as_secs_f64());
    Ok(())
}

/// The main job on a fresh machine: installs the system packages the build
/// needs (libclang for RocksDB's bindings, protoc for etcd's), builds RocksDB's C++ once into
/// the shared archive (about 19 minutes on 2 cores the first time), then
/// builds `sop` in release and becomes `sop serve ARGS` (same process, so
/// signals reach the server directly).
fn serve(args: &[String]) -> Result<(), String> {
    prepare_build()?;
    let mut cmd = cargo_with(&["run", "--release", "-p", "sop-server", "--bin", "sop", "--", "serve"]);
    cmd.args(args);
    println!("\n$ {}", format!("{cmd:?}").replace('"', ""));
    become_command(cmd)
}

#[cfg(unix)]
fn become_command(mut cmd: Command) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    Err(format!("could not run cargo: {}", cmd.exec()))
}

#[cfg(not(unix))]
fn become_command(cmd: Command) -> Result<(), String> {
    run(cmd)
}

/// Command `bin` of the virtualenv `dir` in the target directory, made
/// and given `package` from PyPI on first use.
fn venv_tool(dir: &str, package: &str, bin: &str) -> Result<PathBuf, String> {
    let venv = target_dir().join(dir);
    let tool = venv.join("bin").join(bin);
    if tool.exists() {
        return Ok(tool);
    }
    let mut make = Command::new("python3");
    make.args(["-m", "venv"]).arg(&venv);
    run(make).map_err(|e| format!("{e} (is python3-venv installed?)"))?;
    let mut pip = Command::new(venv.join("bin").join("pip"));
    pip.args(["install", "--quiet", package]);
    run(pip)?;
    Ok(tool)
}

/// What every build command needs first: the Debian packages of
/// [`BUILD_PACKAGES`] and RocksDB's C++ built once.
fn prepare_build() -> Result<(), String> {
    ensure_system_packages(&BUILD_PACKAGES)?;
    rocksdb::prebuild()
}

/// Installs missing Debian packages (as root, or through sudo).
fn ensure_system_packages(packages: &[&str]) -> Result<(), String> {
    if Command::new("dpkg").arg("--version").output().is_err() {
        return Ok(()); // not Debian: the README names the packages to install
    }
    // Installed means the status "install ok installed": a package removed
    // with its configuration files left (`apt-get remove etcd-server`)
    // still answers `dpkg -s` successfully.
    let installed = |p: &&str| {
        Command::new("dpkg-query")
            .args(["-W", "-f=${Status}", p])
            .output()
            .is_ok_and(|o| o.status.success() && o.stdout == b"install ok installed")
    };
    let missing: Vec<&str> = packages.iter().filter(|p| !installed(p)).copied().collect();
    if missing.is_empty() {
        return Ok(());
    }
    let as_root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0"));
    let apt = |args: &[&str]| {
        let mut cmd = if as_root { Command::new("apt-get") } else { Command::new("sudo") };
        if !as_root {
            cmd.arg("apt-get");
        }
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    };
    run(apt(&["update", "-qq"]))?;
    run(apt(&[&["install", "-y", "-qq"][..], &missing].concat()))
        .map_err(|e| format!("{e}; install {} by hand", missing.join(" ")))
}

/// The peer benchmark (`sop-bench`): SOP-rs, redb, RocksDB, SQLite and a
/// `BTreeMap` on the same workloads. `--dev` builds it in the dev profile
/// (CI's smoke run reuses the test build); otherwise release. The other
/// arguments go to `sop-bench` (`--quick`, `--smoke`, `--no-sync`,
/// `--json FILE`, `--runs N`, `--engines a,b`; `--cluster [--secs N]`:
/// cluster mode with 1, 2 and 3 processes on a local etcd and moto S3).
fn bench(args: &[String]) -> Result<(), String> {
    prepare_build()?;
    let dev = args.iter().any(|a| a == "--dev");
    let mut cmd = cargo_with(&["run", "-p", "sop-bench"]);
    if !dev {
        cmd.arg("--release");
    }
    cmd.arg("--").args(args.iter().filter(|a| *a != "--dev"));
    if args.iter().any(|a| a == "--cluster") {
        // Cluster mode starts etcd members and moto's S3 server itself.
        ensure_system_packages(&["etcd-server"])?;
        cmd.env("SOP_MOTO_SERVER", moto::install()?);
    }
    run(cmd)
}

/// The crash campaign (`sop-btree/examples/crash_campaign.rs`): a child
/// killed at random moments and at commit steps, verified after each kill.
/// The release check runs 500 kills; CI (`smoke`) 20 in the dev profile.
fn crash(args: &[String], smoke: bool) -> Result<(), String> {
    prepare_build()?;
    let mut cmd =
        cargo_with(&["run", "-p", "sop-btree", "--features", "embedded", "--example", "crash_campaign"]);
    if !smoke {
        cmd.arg("--release");
    }
    cmd.arg("--");
    if !args.iter().any(|a| a == "--kills") {
        cmd.args(["--kills", if smoke { "20" } else { "500" }]);
    }
    cmd.args(args);
    run(cmd)
}

/// The fuzz targets (`fuzz/`, cargo-fuzz and libFuzzer), each for
/// `--secs` seconds (default 300) from its committed corpus. cargo-fuzz is
/// installed when missing. libFuzzer's instrumentation needs `-Z` flags, so
/// the stable toolchain runs with `RUSTC_BOOTSTRAP=1` and no sanitizer.
/// `--dev` builds the targets unoptimized (with debug assertions): CI's
/// smoke run, whose instrumented build of the server and every backend
/// takes ~5 minutes from scratch on 2 cores, against ~9 optimized.
fn fuzz(args: &[String]) -> Result<(), String> {
    const TARGETS: [&str; 3] = ["decode", "store_ops", "http"];
    let secs = number_flag(args, "--secs", 300)?;
    let profile = if args.iter().any(|a| a == "--dev") { "--dev" } else { "-O" };
    prepare_build()?;
    if !cargo().args(["fuzz", "--version"]).output().is_ok_and(|o| o.status.success()) {
        run(cargo_with(&["install", "cargo-fuzz", "--locked"]))?;
    }
    let dir = project_root().join("fuzz");
    for t in TARGETS {
        // New inputs go to a scratch corpus; the committed one is only read.
        let scratch = target_dir().join("fuzz-corpus").join(t);
        std::fs::create_dir_all(&scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
        let scratch = scratch.to_string_lossy().into_owned();
        let mut cmd =
            cargo_with(&["fuzz", "run", "-s", "none", profile, t, &scratch, &format!("corpus/{t}")]);
        cmd.args(["--", &format!("-max_total_time={secs}"), "-max_len=4096", "-rss_limit_mb=2048"]);
        cmd.current_dir(&dir).env("RUSTC_BOOTSTRAP", "1");
        // Its own target directory: instrumented builds never mix with ours.
        cmd.env("CARGO_TARGET_DIR", target_dir().join("fuzz"));
        run(cmd)?;
    }
    Ok(())
}

/// The fault campaign's long run: the blob-store and registry fault tests
/// (which CI runs with 150 and 120 rounds) with `--rounds` rounds
/// (default 3000) and blob-fault seeds 1 to 5, in release.
fn faults(args: &[String]) -> Result<(), String> {
    let rounds = number_flag(args, "--rounds", 3000)?.to_string();
    prepare_build()?;
    for seed in 1..=5 {
        let mut cmd = btree_tests(&["blob_faults", "registry_faults"], None);
        cmd.env("SOP_FAULT_ROUNDS", &rounds).env("SOP_FAULT_SEED", seed.to_string());
        run(cmd)?;
    }
    Ok(())
}

/// The positive number after `name` in `args`, else `default`.
fn number_flag(args: &[String], name: &str, default: u64) -> Result<u64, String> {
    let Some(i) = args.iter().position(|a| a == name) else { return Ok(default) };
    let value = args.get(i + 1).ok_or_else(|| format!("{name} needs a number"))?;
    match value.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{name}: {value:?} is not a positive whole number")),
    }
}

/// The serializability campaign: the history checker over many rounds.
fn serial(args: &[String]) -> Result<(), String> {
    let rounds = number_flag(args, "--rounds", 300)?;
    prepare_build()?;
    let mut cmd = btree_tests(&["serializability"], Some("histories_of_the_engine_are_serializable"));
    cmd.env("SOP_SERIAL_ROUNDS", rounds.to_string());
    run(cmd)
}

/// `cargo test --release -p sop-btree` of the given test files, with their
/// output shown; `filter` picks tests by name.
fn btree_tests(files: &[&str], filter: Option<&str>) -> Command {
    let mut cmd = cargo_with(&["test", "--release", "-p", "sop-btree", "--features", "embedded"]);
    for f in files {
        cmd.args(["--test", f]);
    }
    cmd.args(["--", "--nocapture"]).args(filter);
    cmd
}

/// The loom models. RocksDB stays out: RUSTFLAGS reach build scripts, so a
/// loom build of it would compile its C++ a second time.
fn loom() -> Result<(), String> {
    let mut cmd = cargo_with(&[
        "test",
        "--release",
        "-p",
        "sop-core",
        "-p",
        "sop-registry",
        "-p",
        "sop-cache",
        "-p",
        "sop-btree",
        "--no-default-features",
        "--lib",
        "loom_",
    ]);
    cmd.env("RUSTFLAGS", "--cfg sop_loom -C debug-assertions");
    cmd.env("LOOM_MAX_PREEMPTIONS", env::var("LOOM_MAX_PREEMPTIONS").unwrap_or_else(|_| "2".into()));
    run(cmd)
}
