//! Measurements, medians, the Markdown tables and the JSON file; the
//! machine description and the fsync probe.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::engines::ALL;

/// One workload on one engine in one run.
#[derive(Debug, Clone)]
pub(crate) struct Measure {
    pub(crate) ops: u64,
    pub(crate) secs: f64,
    pub(crate) p50_us: Option<f64>,
    pub(crate) p99_us: Option<f64>,
    pub(crate) peak_rss: u64,
    pub(crate) abort_rate: Option<f64>,
}

impl Measure {
    /// `ops` in `elapsed`, with per-transaction latencies in nanoseconds.
    pub(crate) fn new(ops: u64, elapsed: Duration, mut lat: Vec<u64>) -> Self {
        lat.sort_unstable();
        let pct = |p: f64| -> Option<f64> {
            if lat.len() < 2 {
                return None;
            }
            let i = ((lat.len() - 1) as f64 * p).round() as usize;
            Some(lat[i] as f64 / 1000.0)
        };
        Self {
            ops,
            secs: elapsed.as_secs_f64(),
            p50_us: pct(0.5),
            p99_us: pct(0.99),
            peak_rss: peak_rss(),
            abort_rate: None,
        }
    }

    pub(crate) fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.secs.max(1e-9)
    }

    fn json(&self) -> Value {
        let mut v = json!({
            "ops_per_sec": self.ops_per_sec().round(),
            "p50_us": self.p50_us,
            "p99_us": self.p99_us,
            "peak_rss_bytes": self.peak_rss,
        });
        if let Some(a) = self.abort_rate {
            v["abort_rate"] = json!(a);
        }
        v
    }
}

/// Every measurement of a benchmark run.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    /// In a child process: also print every measurement as a JSON line.
    pub(crate) child: bool,
    runs: BTreeMap<String, BTreeMap<String, Vec<Measure>>>,
    order: Vec<String>,
    space: BTreeMap<String, BTreeMap<&'static str, Vec<u64>>>,
    /// Per engine, per measure (bytes written per item, switches per read
    /// transaction, allocations per get...): one value per run.
    extras: BTreeMap<String, BTreeMap<String, Vec<f64>>>,
}

impl Recorder {
    pub(crate) fn add(&mut self, workload: &str, engine: &str, m: Measure) {
        if self.child {
            // A child process reports each measurement to its parent.
            println!(
                "{}",
                json!({ "w": workload, "e": engine, "ops": m.ops, "secs": m.secs, "p50": m.p50_us,
                "p99": m.p99_us, "rss": m.peak_rss, "abort": m.abort_rate })
            );
        }
        eprintln!(
            "  {workload:<24} {engine:<9} {:>12.0} ops/s{}",
            m.ops_per_sec(),
            m.abort_rate.map(|a| format!("  aborts {:.1}%", a * 100.0)).unwrap_or_default()
        );
        self.add_quiet(workload, engine, m);
    }

    pub(crate) fn space(&mut self, engine: &str, when: &'static str, bytes: u64) {
        if self.child {
            println!("{}", json!({ "space": when, "e": engine, "bytes": bytes }));
        }
        self.space.entry(engine.to_owned()).or_default().entry(when).or_default().push(bytes);
    }

    /// One value of a per-engine measure (see [`Recorder::extras_markdown`]).
    pub(crate) fn extra(&mut self, engine: &str, what: &str, value: f64) {
        if self.child {
            println!("{}", json!({ "x": what, "e": engine, "v": value }));
        }
        self.extras.entry(engine.to_owned()).or_default().entry(what.to_owned()).or_default().push(value);
    }

    /// Takes a child's JSON line; `false` when it is not one.
    pub(crate) fn take_line(&mut self, line: &str) -> bool {
        let Ok(v) = serde_json::from_str::<Value>(line) else { return false };
        let e = v["e"].as_str().unwrap_or_default().to_owned();
        if let (Some(what), Some(value)) = (v["x"].as_str(), v["v"].as_f64()) {
            self.extra(&e, what, value);
            return true;
        }
        if let Some(when) = v["space"].as_str() {
            let when = if when == "after_load" { "after_load" } else { "after_delete" };
            self.space(&e, when, v["bytes"].as_u64().unwrap_or(0));
            return true;
        }
        let Some(w) = v["w"].as_str() else { return false };
        let m = Measure {
            ops: v["ops"].as_u64().unwrap_or(0),
            secs: v["secs"].as_f64().unwrap_or(0.0),
            p50_us: v["p50"].as_f64(),
            p99_us: v["p99"].as_f64(),
            peak_rss: v["rss"].as_u64().unwrap_or(0),
            abort_rate: v["abort"].as_f64(),
        };
        self.add_quiet(w, &e, m);
        true
    }

    fn add_quiet(&mut self, workload: &str, engine: &str, m: Measure) {
        if !self.order.iter().any(|x| x == workload) {
            self.order.push(workload.to_owned());
        }
        self.runs.entry(workload.to_owned()).or_default().entry(engine.to_owned()).or_default().push(m);
    }

    /// The run with the median throughput.
    fn median(ms: &[Measure]) -> Option<&Measure> {
        let mut v: Vec<&Measure> = ms.iter().collect();
        v.sort_by(|a, b| a.ops_per_sec().total_cmp(&b.ops_per_sec()));
        v.get(v.len() / 2).copied()
    }

    fn medians(&self, workload: &str) -> Vec<(&'static str, &Measure)> {
        let Some(by) = self.runs.get(workload) else { return Vec::new() };
        ALL.iter().filter_map(|e| by.get(*e).and_then(|ms| Self::median(ms)).map(|m| (*e, m))).collect()
    }

    /// The Markdown report.
    pub(crate) fn markdown(&self) -> String {
        let mut out = String::new();
        for w in &self.order {
            let rows = self.medians(w);
            let sop = rows.iter().find(|(e, _)| *e == "sop").map(|(_, m)| m.ops_per_sec());
            let ceiling = rows.iter().find(|(e, _)| *e == "btreemap").map(|(_, m)| m.ops_per_sec());
            let contention = w.starts_with("contention");
            let _ = writeln!(out, "\n### {w}\n");
            let _ = writeln!(
                out,
                "| engine | ops/s | p50 µs | p99 µs | peak RSS MiB | vs sop | of btreemap |{}",
                if contention { " aborts |" } else { "" }
            );
            let _ =
                writeln!(out, "|---|---:|---:|---:|---:|---:|---:|{}", if contention { "---:|" } else { "" });
            for (e, m) in rows {
                let r = m.ops_per_sec();
                let opt = |v: Option<f64>| v.map_or("–".to_owned(), |x| format!("{x:.0}"));
                let _ = write!(
                    out,
                    "| {e} | {r:.0} | {} | {} | {:.0} | {} | {} |",
                    opt(m.p50_us),
                    opt(m.p99_us),
                    m.peak_rss as f64 / 1048576.0,
                    sop.map_or("–".into(), |s| format!("{:.2}×", r / s)),
                    ceiling.map_or("–".into(), |c| format!("{:.1}%", 100.0 * r / c)),
                );
                if contention {
                    let _ = write!(out, " {:.1}% |", m.abort_rate.unwrap_or(0.0) * 100.0);
                }
                out.push('\n');
            }
        }
        if !self.space.is_empty() {
            let _ = writeln!(
                out,
                "\n### space\n\n| engine | MiB after load | MiB after delete-all + cleanup |\n|---|---:|---:|"
            );
            for e in ALL {
                if let Some(s) = self.space.get(e) {
                    let mib =
                        |k: &str| s.get(k).and_then(|v| v.last()).map_or(0.0, |b| *b as f64 / 1048576.0);
                    let _ = writeln!(out, "| {e} | {:.1} | {:.1} |", mib("after_load"), mib("after_delete"));
                }
            }
        }
        out.push_str(&self.extras_markdown());
        out
    }

    /// The median of each per-engine measure over the runs.
    fn extra_medians(&self) -> BTreeMap<&str, BTreeMap<&str, f64>> {
        self.extras
            .iter()
            .map(|(e, by)| {
                let medians = by
                    .iter()
                    .map(|(what, vs)| {
                        let mut v = vs.clone();
                        v.sort_by(f64::total_cmp);
                        (what.as_str(), v.get(v.len() / 2).copied().unwrap_or(f64::NAN))
                    })
                    .collect();
                (e.as_str(), medians)
            })
            .collect()
    }

    /// One table: an engine per row, a measure per column (medians).
    fn extras_markdown(&self) -> String {
        let medians = self.extra_medians();
        let mut columns: Vec<&str> = medians.values().flat_map(|m| m.keys().copied()).collect();
        columns.sort_unstable();
        columns.dedup();
        if columns.is_empty() {
            return String::new();
        }
        let mut out = format!(
            "\n### per-engine measures (medians)\n\nBytes written are the file system's count for the process \
             (`/proc/self/io` write_bytes) over the phase and its background I/O; write amplification divides \
             them by the user bytes (16-byte key + 100-byte value per item).\n\n| engine | {} |\n|---|{}\n",
            columns.join(" | "),
            "---:|".repeat(columns.len())
        );
        for e in ALL {
            let Some(m) = medians.get(e) else { continue };
            let cells: Vec<String> =
                columns.iter().map(|c| m.get(c).map_or("–".to_owned(), |v| format!("{v:.2}"))).collect();
            let _ = writeln!(out, "| {e} | {} |", cells.join(" | "));
        }
        out
    }

    /// The machine-readable report.
    pub(crate) fn json(&self, machine: Value, settings: Value) -> Value {
        let mut workloads = serde_json::Map::new();
        for w in &self.order {
            let engines: serde_json::Map<String, Value> =
                self.medians(w).into_iter().map(|(e, m)| (e.to_owned(), m.json())).collect();
            workloads.insert(w.clone(), Value::Object(engines));
        }
        let space: serde_json::Map<String, Value> = self
            .space
            .iter()
            .map(|(e, s)| {
                let last = |k: &str| s.get(k).and_then(|v| v.last()).copied();
                (e.clone(), json!({ "bytes_after_load": last("after_load"), "bytes_after_delete": last("after_delete") }))
            })
            .collect();
        workloads.insert("space".into(), Value::Object(space));
        let measures: serde_json::Map<String, Value> =
            self.extra_medians().into_iter().map(|(e, m)| (e.to_owned(), json!(m))).collect();
        json!({ "machine": machine, "settings": settings, "workloads": workloads, "measures": measures })
    }
}

/// Resets the process's peak RSS (Linux `clear_refs` 5); best effort.
pub(crate) fn peak_rss_reset() {
    if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open("/proc/self/clear_refs") {
        let _ = f.write_all(b"5");
    }
}

/// The process's peak RSS in bytes since the last reset (`VmHWM`).
pub(crate) fn peak_rss() -> u64 {
    proc_kib("/proc/self/status", "VmHWM:") * 1024
}

fn proc_kib(file: &str, field: &str) -> u64 {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

/// Median latency of a 4 KiB write + fsync in `dir`, in microseconds.
pub(crate) fn fsync_us(dir: &Path) -> f64 {
    let path = dir.join("fsync-probe");
    let Ok(mut f) = std::fs::File::create(&path) else { return f64::NAN };
    let mut lat: Vec<f64> = (0..64)
        .filter_map(|_| {
            let t = Instant::now();
            f.write_all(&[7u8; 4096]).ok()?;
            f.sync_data().ok()?;
            Some(t.elapsed().as_secs_f64() * 1e6)
        })
        .collect();
    let _ = std::fs::remove_file(&path);
    lat.sort_by(f64::total_cmp);
    lat.get(lat.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Cores, memory, CPU, the data directory's file system, kernel, date.
pub(crate) fn machine(dir: &Path, fsync: f64) -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned();
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "memory_bytes": proc_kib("/proc/meminfo", "MemTotal:") * 1024,
        "cpu": cpu,
        "disk": mount_of(dir),
        "fsync_us": (fsync * 10.0).round() / 10.0,
        "kernel": kernel,
        "date": date,
    })
}

/// The device and file system type holding `dir` (from /proc/mounts).
fn mount_of(dir: &Path) -> String {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mut best = ("", "", "");
    for l in mounts.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if let [dev, mnt, fs, ..] = f[..]
            && dir.starts_with(mnt)
            && mnt.len() >= best.1.len()
        {
            best = (dev, mnt, fs);
        }
    }
    format!("{} on {} ({})", best.0, best.1, best.2)
}
