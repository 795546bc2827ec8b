//! The data commands: each prints its result to standard output and
//! returns `Err(one line)` on failure.

use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use crate::cli::ScanArgs;
use crate::target::Target;
use crate::wire::{Item, StoreOptionsJson};

/// Items fetched per page by `scan` and `dump`.
const PAGE: usize = 10_000;

/// `sop stores`: one JSON line per store.
pub(crate) async fn stores(t: &Target) -> Result<(), String> {
    for s in t.stores().await? {
        println!("{}", serde_json::to_string(&s).map_err(|e| e.to_string())?);
    }
    Ok(())
}

/// `sop create-store`.
pub(crate) async fn create_store(
    t: &Target,
    name: &str,
    slot_length: Option<u32>,
    non_unique: bool,
) -> Result<(), String> {
    let opts = StoreOptionsJson { slot_length, unique: Some(!non_unique), value_in_node_threshold: None };
    t.create_store(name, &opts).await?;
    eprintln!("created store {name:?}");
    Ok(())
}

/// `sop get`: the value as JSON, or an error when absent.
pub(crate) async fn get(t: &Target, store: &str, key: &str) -> Result<(), String> {
    match t.get(store, key).await? {
        Some(v) => {
            println!("{v}");
            Ok(())
        }
        None => Err(format!("no key {key:?} in store {store:?}")),
    }
}

/// `sop put`.
pub(crate) async fn put(t: &Target, store: &str, key: &str, value: &str) -> Result<(), String> {
    let value: Value = serde_json::from_str(value)
        .map_err(|e| format!("the value is not JSON ({e}); quote strings, e.g. '\"text\"'"))?;
    t.put_many(store, &[Item { key: key.into(), value }]).await
}

/// `sop del`.
pub(crate) async fn del(t: &Target, store: &str, key: &str) -> Result<(), String> {
    if t.del(store, key).await? { Ok(()) } else { Err(format!("no key {key:?} in store {store:?}")) }
}

/// `sop scan`: NDJSON lines in key order.
pub(crate) async fn scan(t: &Target, a: &ScanArgs) -> Result<(), String> {
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut left = a.limit.unwrap_or(usize::MAX);
    let (mut from, mut to) = (a.from.clone(), a.to.clone());
    while left > 0 {
        let page = t.page(&a.store, from.as_deref(), to.as_deref(), left.min(PAGE), a.reverse).await?;
        left -= page.items.len();
        for item in &page.items {
            write_line(&mut out, item)?;
        }
        match page.next {
            Some(next) if a.reverse => to = Some(next),
            Some(next) => from = Some(next),
            None => break,
        }
    }
    out.flush().map_err(|e| e.to_string())
}

fn write_line(out: &mut impl Write, item: &Item) -> Result<(), String> {
    serde_json::to_writer(&mut *out, item).map_err(|e| e.to_string())?;
    out.write_all(b"\n").map_err(|e| format!("writing: {e}"))
}

fn bar(len: Option<u64>, what: &str) -> ProgressBar {
    let pb = match len {
        Some(n) => ProgressBar::new(n).with_style(
            ProgressStyle::with_template("{spinner} {msg} [{bar:40}] {percent}% {per_sec} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner(),
    };
    pb.set_message(what.to_owned());
    pb
}

/// `sop dump`: every item as NDJSON, in pages (each page its own read
/// transaction: for a consistent snapshot, stop writers first).
pub(crate) async fn dump(t: &Target, store: &str, output: Option<&Path>) -> Result<(), String> {
    let total = t.stores().await?.into_iter().find(|s| s.name == store).map(|s| s.count);
    let Some(total) = total else { return Err(format!("no store {store:?}")) };
    let sink: Box<dyn Write> = match output {
        Some(p) => {
            Box::new(std::fs::File::create(p).map_err(|e| format!("cannot create {}: {e}", p.display()))?)
        }
        None => Box::new(std::io::stdout().lock()),
    };
    let mut out = BufWriter::new(sink);
    let pb = bar(Some(total), "dumping");
    let (started, mut n, mut from) = (Instant::now(), 0u64, None::<String>);
    loop {
        let page = t.page(store, from.as_deref(), None, PAGE, false).await?;
        for item in &page.items {
            write_line(&mut out, item)?;
        }
        n += page.items.len() as u64;
        pb.set_position(n);
        match page.next {
            Some(next) => from = Some(next),
            None => break,
        }
    }
    out.flush().map_err(|e| format!("writing: {e}"))?;
    pb.finish_and_clear();
    eprintln!("dumped {n} items from {store:?} in {:.2} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// `sop load`: NDJSON `{"key","value"}` lines, `batch` per transaction.
pub(crate) async fn load(
    t: &Target,
    store: &str,
    file: &Path,
    batch: usize,
    create: bool,
) -> Result<(), String> {
    if batch == 0 {
        return Err("--batch must be at least 1".into());
    }
    if !t.has_store(store).await? {
        if !create {
            return Err(format!("no store {store:?} (pass --create to create it)"));
        }
        t.create_store(store, &StoreOptionsJson::default()).await?;
    }
    let (reader, len): (Box<dyn Read>, Option<u64>) = if file.as_os_str() == "-" {
        (Box::new(std::io::stdin().lock()), None)
    } else {
        let f = std::fs::File::open(file).map_err(|e| format!("cannot open {}: {e}", file.display()))?;
        let len = f.metadata().map(|m| m.len()).ok();
        (Box::new(f), len)
    };
    let pb = bar(len, "loading");
    let started = Instant::now();
    let (mut loaded, mut chunk, mut bytes) = (0u64, Vec::with_capacity(batch), 0u64);
    for (i, line) in BufReader::new(reader).lines().enumerate() {
        let line = line.map_err(|e| format!("line {}: {e} ({loaded} items loaded before it)", i + 1))?;
        bytes += line.len() as u64 + 1;
        if line.trim().is_empty() {
            continue;
        }
        let item: Item = serde_json::from_str(&line).map_err(|e| {
            format!(
                "line {}: not a {{\"key\",\"value\"}} object: {e} ({loaded} items loaded before it)",
                i + 1
            )
        })?;
        chunk.push(item);
        if chunk.len() == batch {
            t.put_many(store, &chunk).await.map_err(|e| format!("{e} ({loaded} items loaded before it)"))?;
            loaded += chunk.len() as u64;
            chunk.clear();
            pb.set_position(bytes);
        }
    }
    if !chunk.is_empty() {
        t.put_many(store, &chunk).await.map_err(|e| format!("{e} ({loaded} items loaded before it)"))?;
        loaded += chunk.len() as u64;
    }
    pb.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    let rate = loaded as f64 / secs.max(1e-9);
    eprintln!("loaded {loaded} items into {store:?} in {secs:.2} s ({rate:.0} items/s)");
    Ok(())
}

/// `sop check` (local only): prints the report; `Err` on any problem.
pub(crate) async fn check(t: &Target) -> Result<(), String> {
    let Target::Local(db) = t else {
        return Err("check runs on a data directory (--data); stop the server and run it there".into());
    };
    db.flush_gc().await.map_err(|e| e.to_string())?;
    let r = db.check().await.map_err(|e| e.to_string())?;
    println!(
        "check: {} store(s), {} node(s), {} item(s), {} blob(s), {} problem(s)",
        r.stores,
        r.nodes,
        r.items,
        r.blobs,
        r.problems.len()
    );
    for p in &r.problems {
        println!("  problem: {p}");
    }
    if r.is_ok() { Ok(()) } else { Err(format!("{} problem(s) found", r.problems.len())) }
}

/// `sop compact` (local only): compacts with a spinner; prints the data
/// directory's size before and after.
pub(crate) async fn compact(t: &Target, dir: &Path) -> Result<(), String> {
    let Target::Local(db) = t else {
        return Err("compact runs on a data directory (--data); stop the server and run it there".into());
    };
    let before = dir_bytes(dir);
    let spinner = bar(None, "compacting");
    spinner.enable_steady_tick(std::time::Duration::from_millis(100));
    let done = db.compact().await.map_err(|e| e.to_string());
    spinner.finish_and_clear();
    done?;
    println!("compact: {} → {} on disk", human(before), human(dir_bytes(dir)));
    Ok(())
}

/// Bytes the files under `dir` occupy on disk.
fn dir_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

#[allow(clippy::cast_precision_loss)]
fn human(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1_048_576.0)
}
