//! `sop-bench`: SOP-rs against redb, RocksDB (`OptimisticTransactionDB`),
//! LMDB (`heed`), SQLite (WAL) and a locked `BTreeMap` (the in-memory
//! ceiling), on the same
//! workloads and data in one process run. Run it with `cargo xtask bench`.
//!
//! Every engine makes each commit durable (fsync or WAL sync) unless
//! `--no-sync`. Prints one Markdown table per workload (median of
//! `--runs`, default 3) and, with `--json FILE`, writes every figure.

mod cluster;
mod engines;
mod probe;
mod report;
mod workloads;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::json;

use crate::report::Recorder;
use crate::workloads::Sizes;

const USAGE: &str = "usage: sop-bench [--quick] [--smoke] [--no-sync] [--runs N] [--json FILE] \
[--engines sop,redb,rocksdb,lmdb,sqlite,btreemap] [--dir DIR] [--n ITEMS] [--contention-ms MS]\n\
       [--phases main,seq,contention,reads] [--threads 1,2,8,32] [--keys 100,100000]\n\
       sop-bench --cluster [--secs N] [--json FILE]";

#[derive(Debug)]
struct Args {
    sizes: Sizes,
    sync: bool,
    runs: usize,
    json: Option<PathBuf>,
    engines: Vec<String>,
    /// The phases to run (`main`, `seq`, `contention`): all by default.
    phases: Vec<String>,
    dir: PathBuf,
    /// Set in the child processes: run one engine once, report JSON lines.
    child: Option<usize>,
    raw: Vec<String>,
}

fn parse() -> Result<Args, String> {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let mut child = None;
    let mut it = raw.clone().into_iter();
    let (mut div, mut smoke, mut sync, mut runs, mut json, mut engines, mut dir, mut n, mut cms) =
        (1, false, true, None, None, engines::ALL.map(String::from).to_vec(), None, None, None);
    let (mut phases, mut threads, mut keys) =
        (PHASES[..3].iter().map(|p| p.to_string()).collect::<Vec<String>>(), None, None);
    while let Some(a) = it.next() {
        let mut val = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value\n{USAGE}"));
        let num =
            |s: String, name: &str| s.parse::<usize>().map_err(|_| format!("{name}: not a number: {s}"));
        match a.as_str() {
            "--quick" => div = 10,
            "--smoke" => smoke = true,
            "--no-sync" => sync = false,
            "--runs" => runs = Some(num(val("--runs")?, "--runs")?.max(1)),
            "--json" => json = Some(PathBuf::from(val("--json")?)),
            "--dir" => dir = Some(PathBuf::from(val("--dir")?)),
            "--n" => n = Some(num(val("--n")?, "--n")?.max(1)),
            "--contention-ms" => cms = Some(num(val("--contention-ms")?, "--contention-ms")?),
            "--child-run" => child = Some(num(val("--child-run")?, "--child-run")?),
            "--engines" => {
                engines = val("--engines")?.split(',').map(str::to_owned).collect();
                if let Some(bad) = engines.iter().find(|e| !engines::ALL.contains(&e.as_str())) {
                    return Err(format!("unknown engine {bad:?}; known: {}", engines::ALL.join(", ")));
                }
            }
            "--phases" => {
                phases = val("--phases")?.split(',').map(str::to_owned).collect();
                if let Some(bad) = phases.iter().find(|p| !PHASES.contains(&p.as_str())) {
                    return Err(format!("unknown phase {bad:?}; known: {}", PHASES.join(", ")));
                }
            }
            "--threads" => threads = Some(numbers(&val("--threads")?, "--threads")?),
            "--keys" => keys = Some(numbers(&val("--keys")?, "--keys")?),
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let mut sizes = Sizes::scaled(div, Duration::from_millis(if div == 1 { 3000 } else { 1000 }));
    if smoke {
        sizes = Sizes {
            n: 2_000,
            short_scans: 50,
            updates: 100,
            threads: vec![1, 8],
            key_spaces: vec![100, 1000],
            ..sizes
        };
        sizes.contention = Duration::from_millis(150);
    }
    if let Some(n) = n {
        sizes.n = n;
    }
    if let Some(t) = threads {
        sizes.threads = t;
    }
    if let Some(k) = keys {
        sizes.key_spaces = k;
    }
    if let Some(ms) = cms {
        sizes.contention = Duration::from_millis(ms as u64);
    }
    let dir = dir.unwrap_or_else(|| {
        let target =
            std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from);
        target.join("sop-bench-data")
    });
    Ok(Args {
        sizes,
        sync,
        runs: runs.unwrap_or(if smoke { 1 } else { 3 }),
        json,
        engines,
        phases,
        dir,
        child,
        raw,
    })
}

/// The phases of a run, in order: the first three by default; `reads`
/// (warm point reads for `--contention-ms`, to profile) on request.
const PHASES: [&str; 4] = ["main", "seq", "contention", "reads"];

/// A comma-separated list of positive numbers.
fn numbers(list: &str, name: &str) -> Result<Vec<usize>, String> {
    list.split(',')
        .map(|x| match x.parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("{name}: not a positive number: {x:?}")),
        })
        .collect()
}

fn main() -> ExitCode {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    if let Some(mode) = raw.first().filter(|a| a.starts_with("--cluster")) {
        let outcome = match mode.as_str() {
            "--cluster-child" => cluster::child(&raw[1..]),
            _ => cluster_main(&raw[1..]),
        };
        return match outcome {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sop-bench: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("sop-bench: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sop-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--cluster [--secs N] [--json FILE]`: cluster mode with 1, 2 and 3
/// processes (`cluster.rs`).
fn cluster_main(args: &[String]) -> Result<(), String> {
    let (mut secs, mut json_path) = (10u64, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--secs" => secs = it.next().and_then(|v| v.parse().ok()).ok_or("--secs needs a number")?,
            "--json" => json_path = Some(PathBuf::from(it.next().ok_or("--json needs a file")?)),
            other => return Err(format!("--cluster takes --secs N and --json FILE, not {other:?}")),
        }
    }
    let doc = cluster::run(secs)?;
    if let Some(path) = json_path {
        let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

fn run(a: &Args) -> Result<(), String> {
    if let Some(run) = a.child {
        let mut rec = Recorder::default();
        rec.child = true;
        return suite(a, run, &mut rec);
    }
    let _ = std::fs::remove_dir_all(&a.dir);
    std::fs::create_dir_all(&a.dir).map_err(|e| format!("{}: {e}", a.dir.display()))?;
    let fsync = report::fsync_us(&a.dir);
    let machine = report::machine(&a.dir, fsync);
    let s = &a.sizes;
    eprintln!(
        "sop-bench: {} items, {} per write tx, {} run(s), durability: {}, data in {} (fsync {fsync:.0} µs)",
        s.n,
        s.batch,
        a.runs,
        if a.sync { "every commit synced" } else { "none (--no-sync)" },
        a.dir.display()
    );
    let mut rec = Recorder::default();
    for run in 0..a.runs {
        eprintln!("run {}/{}", run + 1, a.runs);
        for e in &a.engines {
            child(a, e, run, &mut rec)?;
        }
    }
    let settings = json!({
        "items": s.n, "batch": s.batch, "read_batch": s.read_batch, "short_scans": s.short_scans,
        "short_len": s.short_len, "updates": s.updates, "contention_ms": s.contention.as_millis() as u64,
        "runs": a.runs, "sync": a.sync, "engines": a.engines, "phases": a.phases, "threads": s.threads, "key_spaces": s.key_spaces,
    });
    println!("# sop-bench\n");
    println!(
        "Machine: {machine}\n\nSettings: {settings}\n\nfsync of the data directory's disk: {fsync:.0} µs (the floor of a durable commit)."
    );
    print!("{}", rec.markdown());
    if let Some(path) = &a.json {
        let doc = rec.json(machine, settings);
        let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    let _ = std::fs::remove_dir_all(&a.dir);
    Ok(())
}

/// Runs engine `e` once in a child process of its own, so that its peak
/// RSS is its own, and takes its measurements.
fn child(a: &Args, e: &str, run: usize, rec: &mut Recorder) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut args: Vec<String> = Vec::new();
    let mut it = a.raw.iter();
    while let Some(x) = it.next() {
        match x.as_str() {
            "--engines" | "--json" | "--runs" | "--dir" => {
                it.next();
            }
            _ => args.push(x.clone()),
        }
    }
    let out = std::process::Command::new(exe)
        .args(&args)
        .args(["--engines", e, "--child-run", &run.to_string(), "--dir"])
        .arg(&a.dir)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("the {e} run failed ({})", out.status));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let taken = text.lines().filter(|l| rec.take_line(l)).count();
    if taken == 0 {
        return Err(format!("the {e} run reported nothing"));
    }
    Ok(())
}

/// One run of every workload for the engine(s) of `a` (a child process).
fn suite(a: &Args, run: usize, rec: &mut Recorder) -> Result<(), String> {
    let s = &a.sizes;
    for e in &a.engines {
        let d = a.dir.join(format!("{e}-{run}"));
        let on = |p: &str| a.phases.iter().any(|x| x == p);
        if on("main") {
            workloads::main_suite(e, &d.join("main"), a.sync, s, rec)?;
        }
        if on("seq") {
            workloads::seq_insert(e, &d.join("seq"), a.sync, s, rec)?;
        }
        if on("reads") {
            workloads::read_loop(e, &d.join("reads"), a.sync, s, rec)?;
        }
        for &t in s.threads.iter().filter(|_| on("contention")) {
            for &k in &s.key_spaces {
                let m = workloads::contention(e, &d.join(format!("c{t}-{k}")), a.sync, s, t, k)?;
                rec.add(&format!("contention_t{t}_k{k}"), e, m);
            }
        }
        let _ = std::fs::remove_dir_all(&d);
    }
    Ok(())
}
