//! The workloads: each opens, loads and measures one engine.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::engines::{self, Engine, Result};
use crate::probe::{self, Counters};
use crate::report::{Measure, Recorder, peak_rss_reset};

/// Workload sizes.
#[derive(Debug, Clone)]
pub(crate) struct Sizes {
    /// Items loaded (bulk and sequential insert, reads, delete).
    pub(crate) n: usize,
    /// Items per write transaction in loads and deletes.
    pub(crate) batch: usize,
    /// Gets per read transaction.
    pub(crate) read_batch: usize,
    /// Short scans, and their length.
    pub(crate) short_scans: usize,
    pub(crate) short_len: usize,
    /// Single-key read-modify-write transactions.
    pub(crate) updates: usize,
    /// How long each contention configuration runs.
    pub(crate) contention: Duration,
    /// Writer counts and key-space sizes of the contention workload.
    pub(crate) threads: Vec<usize>,
    pub(crate) key_spaces: Vec<usize>,
}

impl Sizes {
    /// The defaults of the issue, divided by `div`.
    pub(crate) fn scaled(div: usize, contention: Duration) -> Self {
        Self {
            n: 1_000_000 / div,
            batch: 1_000,
            read_batch: 100,
            short_scans: 10_000 / div,
            short_len: 100,
            updates: 100_000 / div,
            contention,
            threads: vec![1, 2, 8, 32],
            key_spaces: vec![100, 100_000],
        }
    }
}

/// A seeded xorshift generator (the same data for every engine).
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub(crate) fn key(&mut self) -> Vec<u8> {
        let mut k = self.next().to_be_bytes().to_vec();
        k.extend_from_slice(&self.next().to_be_bytes());
        k
    }

    pub(crate) fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}

fn value(i: usize) -> Vec<u8> {
    let mut v = vec![b'v'; 100];
    v[..8].copy_from_slice(&(i as u64).to_le_bytes());
    v
}

/// Runs `f` once per chunk, timing each call as one transaction.
fn timed<T>(chunks: impl Iterator<Item = T>, mut f: impl FnMut(T) -> Result<u64>) -> Result<Measure> {
    peak_rss_reset();
    let start = Instant::now();
    let (mut ops, mut lat) = (0u64, Vec::new());
    for c in chunks {
        let t = Instant::now();
        ops += f(c)?;
        lat.push(t.elapsed().as_nanos() as u64);
    }
    Ok(Measure::new(ops, start.elapsed(), lat))
}

fn load(e: &mut dyn Engine, keys: &[Vec<u8>], batch: usize) -> Result<Measure> {
    let items: Vec<(Vec<u8>, Vec<u8>)> =
        keys.iter().enumerate().map(|(i, k)| (k.clone(), value(i))).collect();
    timed(items.chunks(batch), |c| e.put_batch(c).map(|()| c.len() as u64))
}

/// User bytes of one item: a 16-byte key and a 100-byte value.
const ITEM_BYTES: f64 = 116.0;

/// Cold read transactions measured, each after a reopen with the engine's
/// files evicted from the page cache.
const COLD_TXS: usize = 40;

/// Runs `phase`, lets the engine and its background I/O finish, and
/// records the bytes written per item (and per user byte) under `what`.
fn written_per_item<T>(
    e: &mut dyn Engine,
    rec: &mut Recorder,
    (name, what, items): (&str, &str, usize),
    phase: impl FnOnce(&mut dyn Engine) -> Result<T>,
) -> Result<T> {
    let before = Counters::now();
    let out = phase(e)?;
    e.quiesce()?;
    probe::settle();
    let per_item = before.since().written as f64 / items.max(1) as f64;
    rec.extra(name, &format!("{what}_bytes_written_per_item"), per_item);
    rec.extra(name, &format!("{what}_write_amplification"), per_item / ITEM_BYTES);
    Ok(out)
}

/// Bulk insert, reads (warm and cold), scans, updates, delete and space,
/// on one database of `sizes.n` random keys. After each write phase the
/// engine finishes its deferred work and its background I/O before the
/// next phase is timed.
pub(crate) fn main_suite(name: &str, dir: &Path, sync: bool, s: &Sizes, rec: &mut Recorder) -> Result<()> {
    let mut rng = Rng::new(0x5eed);
    let keys: Vec<Vec<u8>> = (0..s.n).map(|_| rng.key()).collect();
    let mut e = engines::open(name, dir, sync)?;
    let m = written_per_item(e.as_mut(), rec, (name, "bulk_insert", s.n), |e| load(e, &keys, s.batch))?;
    rec.add("bulk_insert", name, m);
    rec.space(name, "after_load", dir_bytes(dir));

    let mut sample = keys.clone();
    rng.shuffle(&mut sample);
    let found = |c: &[Vec<u8>], got: usize| {
        if got == c.len() {
            Ok(c.len() as u64)
        } else {
            Err(format!("{name}: {got} of {} keys found", c.len()))
        }
    };
    let before = Counters::now();
    let warm = timed(sample.chunks(s.read_batch), |c| found(c, e.get_batch(c)?))?;
    let spent = before.since();
    let txs = sample.len().div_ceil(s.read_batch).max(1) as f64;
    rec.extra(name, "point_read_switches_per_tx", spent.switches as f64 / txs);
    rec.extra(name, "point_read_allocs_per_get", spent.allocs as f64 / sample.len().max(1) as f64);
    rec.add("point_read", name, warm);
    let cold = cold_reads(e.as_mut(), dir, &sample, s.read_batch, &found)?;
    rec.add("point_read_cold", name, cold);
    // The scans measure an engine at work, not a cold start: one untimed
    // pass warms every engine's caches alike after the cold reads.
    e.scan(None, usize::MAX)?;

    let full = timed(std::iter::once(()), |()| e.scan(None, usize::MAX).map(|n| n as u64))?;
    if full.ops != s.n as u64 {
        return Err(format!("{name}: full scan saw {} of {} items", full.ops, s.n));
    }
    rec.add("scan_full", name, full);
    let starts: Vec<&Vec<u8>> = (0..s.short_scans).map(|_| &keys[rng.below(keys.len())]).collect();
    rec.add(
        "scan_short",
        name,
        timed(starts.into_iter(), |k| e.scan(Some(k), s.short_len).map(|n| n as u64))?,
    );

    let targets: Vec<&Vec<u8>> = (0..s.updates).map(|_| &keys[rng.below(keys.len())]).collect();
    let m = written_per_item(e.as_mut(), rec, (name, "update", s.updates), |e| {
        timed(targets.into_iter(), |k| match e.increment(k)? {
            true => Ok(1),
            false => Err(format!("{name}: a lone update conflicted")),
        })
    })?;
    rec.add("update", name, m);

    rng.shuffle(&mut sample);
    let m = written_per_item(e.as_mut(), rec, (name, "delete", s.n), |e| {
        timed(sample.chunks(s.batch), |c| e.delete_batch(c).map(|()| c.len() as u64))
    })?;
    rec.add("delete", name, m);
    if e.scan(None, 1)? != 0 {
        return Err(format!("{name}: items left after deleting all"));
    }
    e.cleanup()?;
    probe::settle();
    rec.space(name, "after_delete", dir_bytes(dir));
    Ok(())
}

/// Checks that a read transaction found all of its keys; their number.
type Found<'a> = dyn Fn(&[Vec<u8>], usize) -> Result<u64> + 'a;

/// Cold point reads: up to `COLD_TXS` read transactions of `batch` gets,
/// each timed right after the engine was closed, its files dropped from the
/// page cache and the engine opened again (untimed), so that every read
/// transaction starts with nothing cached.
fn cold_reads(
    e: &mut dyn Engine,
    dir: &Path,
    sample: &[Vec<u8>],
    batch: usize,
    found: &Found<'_>,
) -> Result<Measure> {
    peak_rss_reset();
    let (mut ops, mut busy, mut lat) = (0u64, Duration::ZERO, Vec::new());
    for c in sample.chunks(batch).take(COLD_TXS) {
        e.close()?;
        probe::evict(dir);
        e.open_again()?;
        let t = Instant::now();
        ops += found(c, e.get_batch(c)?)?;
        let spent = t.elapsed();
        busy += spent;
        lat.push(spent.as_nanos() as u64);
    }
    Ok(Measure::new(ops, busy, lat))
}

/// Warm point reads for `s.contention` (read transactions of
/// `s.read_batch` random keys) over `s.n` loaded items, then short scans
/// (`s.short_len` items from a random key) for as long: steady loops to
/// profile the read paths (`--phases reads`).
pub(crate) fn read_loop(name: &str, dir: &Path, sync: bool, s: &Sizes, rec: &mut Recorder) -> Result<()> {
    let mut rng = Rng::new(0x5eed);
    let keys: Vec<Vec<u8>> = (0..s.n).map(|_| rng.key()).collect();
    let mut e = engines::open(name, dir, sync)?;
    load(e.as_mut(), &keys, s.batch)?;
    e.quiesce()?;
    let mut sample = keys.clone();
    rng.shuffle(&mut sample);
    let deadline = Instant::now() + s.contention;
    let chunks = sample.chunks(s.read_batch).cycle().take_while(|_| Instant::now() < deadline);
    let m = timed(chunks, |c| match e.get_batch(c)? {
        n if n == c.len() => Ok(n as u64),
        n => Err(format!("{name}: {n} of {} keys found", c.len())),
    })?;
    rec.add("point_read_loop", name, m);
    let deadline = Instant::now() + s.contention;
    let starts = (0..).map(|_| &keys[rng.below(keys.len())]).take_while(|_| Instant::now() < deadline);
    let m = timed(starts, |k| e.scan(Some(k), s.short_len).map(|n| n as u64))?;
    rec.add("scan_short_loop", name, m);
    Ok(())
}

/// Sequential insert: increasing keys.
pub(crate) fn seq_insert(name: &str, dir: &Path, sync: bool, s: &Sizes, rec: &mut Recorder) -> Result<()> {
    let keys: Vec<Vec<u8>> = (0..s.n as u128).map(|i| i.to_be_bytes().to_vec()).collect();
    let mut e = engines::open(name, dir, sync)?;
    let m = written_per_item(e.as_mut(), rec, (name, "seq_insert", s.n), |e| load(e, &keys, s.batch))?;
    rec.add("seq_insert", name, m);
    Ok(())
}

/// `threads` writers moving 1 between two random keys of `k`, for
/// `s.contention`; the sum of all balances must not change.
pub(crate) fn contention(
    name: &str,
    dir: &Path,
    sync: bool,
    s: &Sizes,
    threads: usize,
    k: usize,
) -> Result<Measure> {
    const START: u64 = 1 << 40;
    let keys: Vec<Vec<u8>> = (0..k as u64).map(|i| i.to_be_bytes().to_vec()).collect();
    let e: Arc<dyn Engine> = Arc::from(engines::open(name, dir, sync)?);
    let items: Vec<_> = keys.iter().map(|k| (k.clone(), START.to_le_bytes().to_vec())).collect();
    for c in items.chunks(s.batch) {
        e.put_batch(c)?;
    }
    peak_rss_reset();
    let aborts = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + s.contention;
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (e, keys, aborts) = (e.clone(), keys.clone(), aborts.clone());
            std::thread::spawn(move || -> Result<(u64, Vec<u64>)> {
                let mut rng = Rng::new(0xc0ffee + t as u64);
                let (mut done, mut lat) = (0u64, Vec::new());
                while Instant::now() < deadline {
                    let (a, b) = (rng.below(keys.len()), rng.below(keys.len()));
                    if a == b {
                        continue;
                    }
                    let t0 = Instant::now();
                    if e.transfer(&keys[a], &keys[b])? {
                        done += 1;
                        lat.push(t0.elapsed().as_nanos() as u64);
                    } else {
                        aborts.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok((done, lat))
            })
        })
        .collect();
    let (mut done, mut lat) = (0, Vec::new());
    for w in workers {
        let (d, l) = w.join().map_err(|_| "a contention worker panicked".to_owned())??;
        done += d;
        lat.extend(l);
    }
    let elapsed = start.elapsed();
    let mut total = 0u64;
    for c in keys.chunks(s.read_batch) {
        let mut sum = 0u64;
        for k in c {
            sum = sum.wrapping_add(engines::counter(&e.get(k)?.unwrap_or_default()));
        }
        total = total.wrapping_add(sum);
    }
    if total != START.wrapping_mul(k as u64) {
        return Err(format!("{name}: contention broke the invariant: total {total} != {}", START * k as u64));
    }
    let mut m = Measure::new(done, elapsed, lat);
    let aborted = aborts.load(Ordering::Relaxed);
    m.abort_rate = Some(aborted as f64 / (aborted + done).max(1) as f64);
    Ok(m)
}

/// Bytes the files under `dir` occupy on disk.
pub(crate) fn dir_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    for e in entries.flatten() {
        match e.metadata() {
            Ok(m) if m.is_dir() => total += dir_bytes(&e.path()),
            Ok(m) => total += m.blocks() * 512,
            Err(_) => {}
        }
    }
    total
}
