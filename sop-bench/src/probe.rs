//! What the operating system and the allocator say about this process:
//! bytes written to storage, context switches, allocations; waiting for
//! background I/O to end; evicting a directory's files from the page cache.

use std::path::Path;
use std::time::{Duration, Instant};

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

/// Every allocation of the process goes through this counter.
#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

/// A snapshot of the process's counters.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Counters {
    /// Bytes this process caused to be written to storage (`write_bytes`
    /// of `/proc/self/io`: the file system's count, after the page cache).
    pub(crate) written: u64,
    /// Voluntary plus involuntary context switches of all its threads.
    pub(crate) switches: u64,
    /// Allocations (`alloc` and `realloc` calls) so far.
    pub(crate) allocs: u64,
}

impl Counters {
    pub(crate) fn now() -> Self {
        Self { written: written(), switches: switches(), allocs: allocs() }
    }

    /// The growth of each counter since `self`.
    pub(crate) fn since(self) -> Self {
        let n = Self::now();
        Self {
            written: n.written.saturating_sub(self.written),
            switches: n.switches.saturating_sub(self.switches),
            allocs: n.allocs.saturating_sub(self.allocs),
        }
    }
}

fn allocs() -> u64 {
    let s = Region::new(GLOBAL).initial();
    (s.allocations + s.reallocations) as u64
}

fn written() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    field(&io, "write_bytes:")
}

fn switches() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0 };
    tasks
        .flatten()
        .map(|t| {
            let s = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
            field(&s, "voluntary_ctxt_switches:") + field(&s, "nonvoluntary_ctxt_switches:")
        })
        .sum()
}

fn field(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l[name.len()..].split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Waits until the process writes nothing to storage for two polls in a
/// row (background flushes and compactions have ended), at most 60 s.
pub(crate) fn settle() {
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut last, mut quiet) = (written(), 0);
    while quiet < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(300));
        let now = written();
        quiet = if now == last { quiet + 1 } else { 0 };
        last = now;
    }
}

/// Drops the clean page-cache pages of every file under `dir`, so that the
/// next reads come from the disk (`posix_fadvise(DONTNEED)`; the files
/// must be closed or unmapped for their pages to go).
pub(crate) fn evict(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            evict(&path);
        } else if let Ok(f) = std::fs::File::open(&path) {
            let _ = f.sync_all();
            let _ = rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed);
        }
    }
}
