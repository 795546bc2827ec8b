//! The crash campaign (`cargo xtask crash [--kills N]`).
//!
//! The parent sets up an embedded database (accounts with a fixed total, a
//! ledger, a bulk store), then, `--kills` times: starts itself as a child
//! that runs transfers (two accounts plus a ledger entry) and bulk inserts
//! and deletes of 40-key groups (which split and merge nodes); kills the
//! child with SIGKILL at a random moment, or lets a failpoint abort it at a
//! chosen commit step; reopens the database and checks that every
//! acknowledged transaction is there, none is partly visible, the total is
//! exact, and `Database::check` finds no problem (no orphan blob, no
//! dangling handle) after recovery and GC.
//!
//! One transfer in four also writes a 1 MiB ballast value (one of four
//! keys, naming its transfer), so that the RocksDB log outgrows its bound
//! within a few children: kills land across log switches and memtable
//! flushes too. The parent checks every ballast value whole and named by
//! a transfer in the ledger.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sop_btree::{CommitStep, Config, Database, ErrorKind, StoreOptions};

const ACCOUNTS: u64 = 50;
const INITIAL: u64 = 1_000_000;
const GROUP: u64 = 40;
const STEPS: [CommitStep; 4] =
    [CommitStep::IntentWritten, CommitStep::BlobsStaged, CommitStep::Published, CommitStep::ObsoleteDeleted];

type Res<T> = Result<T, String>;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn acct(i: u64) -> Vec<u8> {
    format!("a{i:03}").into_bytes()
}

fn small() -> StoreOptions {
    StoreOptions { slot_length: 8, ..StoreOptions::default() }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let outcome = if args.first().map(String::as_str) == Some("--child") {
        rt.block_on(child(&args[1..]))
    } else {
        rt.block_on(parent(&args))
    };
    if let Err(e) = outcome {
        eprintln!("crash_campaign: {e}");
        std::process::exit(1);
    }
}

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

async fn open(dir: &Path, failpoint: Option<(CommitStep, u64)>) -> Res<Database> {
    let mut config = Config::embedded(dir);
    if let Some((step, nth)) = failpoint {
        let seen = Arc::new(AtomicU64::new(0));
        config.failpoint = Some(Arc::new(move |s| {
            if s == step && seen.fetch_add(1, Ordering::Relaxed) + 1 == nth {
                // A crash at this exact step: no cleanup, no unwinding.
                std::process::abort();
            }
            Ok(())
        }));
    }
    Database::open(config).await.map_err(err)
}

/// The child: transfers and bulk groups until killed. Prints `TRY <op>`
/// before each commit and `ACK <op>` after it succeeds.
async fn child(args: &[String]) -> Res<()> {
    let dir = PathBuf::from(flag(args, "--dir").ok_or("--dir")?);
    let run: u64 = flag(args, "--run").ok_or("--run")?.parse().map_err(err)?;
    let failpoint = flag(args, "--fail-at").map(|s| {
        let (step, nth) = s.split_once(':').unwrap_or(("0", "1"));
        (STEPS[step.parse::<usize>().unwrap_or(0) % 4], nth.parse().unwrap_or(1))
    });
    let db = open(&dir, failpoint).await?;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ run.wrapping_mul(0x2545_f491));
    let out = std::io::stdout();
    for n in 0.. {
        let (name, tx) = match rng.below(10) {
            0..=5 => transfer(&db, &mut rng, run, n).await?,
            6..=8 => bulk_insert(&db, run, n).await?,
            _ => bulk_delete(&db, &mut rng).await?,
        };
        let Some(tx) = tx else { continue };
        writeln!(out.lock(), "TRY {name}").map_err(err)?;
        match tx.commit().await {
            Ok(_) => writeln!(out.lock(), "ACK {name}").map_err(err)?,
            Err(e) if e.kind() == ErrorKind::Conflict => writeln!(out.lock(), "NAK {name}").map_err(err)?,
            Err(e) => return Err(err(e)),
        }
    }
    Ok(())
}

async fn transfer(
    db: &Database,
    rng: &mut Rng,
    run: u64,
    n: u64,
) -> Res<(String, Option<sop_btree::Transaction>)> {
    let (a, b) = (rng.below(ACCOUNTS), rng.below(ACCOUNTS));
    if a == b {
        return Ok((String::new(), None));
    }
    let amount = 1 + rng.below(100);
    let tx = db.begin_write().await.map_err(err)?;
    let accounts = tx.store::<Vec<u8>, u64>("accounts").await.map_err(err)?;
    let (ka, kb) = (acct(a), acct(b));
    let va = accounts.get(&ka).await.map_err(err)?.ok_or("account missing")?;
    let vb = accounts.get(&kb).await.map_err(err)?.ok_or("account missing")?;
    let amount = amount.min(va);
    accounts.update(&ka, &(va - amount)).await.map_err(err)?;
    accounts.update(&kb, &(vb + amount)).await.map_err(err)?;
    let id = format!("t{run:04}-{n:06}");
    tx.store::<String, (u64, u64, u64)>("ledger")
        .await
        .map_err(err)?
        .insert(&id, &(a, b, amount))
        .await
        .map_err(err)?;
    if n.is_multiple_of(4) {
        let ballast = tx.store::<u64, Vec<u8>>("ballast").await.map_err(err)?;
        ballast.upsert(&(n / 4 % 4), &ballast_value(&id)).await.map_err(err)?;
    }
    Ok((id, Some(tx)))
}

/// A ballast value: its transfer's id, then 1 MiB of a byte the id sets.
fn ballast_value(id: &str) -> Vec<u8> {
    let fill = id.bytes().fold(7u8, |h, b| h.wrapping_mul(31).wrapping_add(b));
    let mut v = id.as_bytes().to_vec();
    v.resize(id.len() + (1 << 20), fill);
    v
}

async fn bulk_insert(db: &Database, run: u64, n: u64) -> Res<(String, Option<sop_btree::Transaction>)> {
    let group = format!("g{run:04}-{n:06}");
    let tx = db.begin_write().await.map_err(err)?;
    let bulk = tx.store::<String, u64>("bulk").await.map_err(err)?;
    for i in 0..GROUP {
        // Spread over the key space, so that many leaves split.
        bulk.insert(&format!("{:02}/{group}/{i:02}", (i * 7 + n) % 97), &i).await.map_err(err)?;
    }
    Ok((format!("ins {group}"), Some(tx)))
}

async fn bulk_delete(db: &Database, rng: &mut Rng) -> Res<(String, Option<sop_btree::Transaction>)> {
    let tx = db.begin_write().await.map_err(err)?;
    let bulk = tx.store::<String, u64>("bulk").await.map_err(err)?;
    let some = bulk.range(.., false, 200).await.map_err(err)?;
    if some.is_empty() {
        return Ok((String::new(), None));
    }
    let (k, _) = &some[rng.below(some.len() as u64) as usize];
    let group = k.split('/').nth(1).unwrap_or_default().to_owned();
    let all = bulk.range(.., false, usize::MAX).await.map_err(err)?;
    for (k, _) in all.iter().filter(|(k, _)| k.split('/').nth(1) == Some(group.as_str())) {
        bulk.remove(k).await.map_err(err)?;
    }
    Ok((format!("del {group}"), Some(tx)))
}

/// What the parent learned from one child.
#[derive(Default)]
struct Acks {
    acked: Vec<String>,
    in_flight: Option<String>,
}

async fn parent(args: &[String]) -> Res<()> {
    let kills: u64 = flag(args, "--kills").map_or(Ok(20), |s| s.parse()).map_err(err)?;
    let seed: u64 = flag(args, "--seed").map_or(Ok(1), |s| s.parse()).map_err(err)?;
    let base = flag(args, "--dir").map_or_else(
        || std::env::temp_dir().join(format!("sop-crash-{}", std::process::id())),
        PathBuf::from,
    );
    let _ = std::fs::remove_dir_all(&base);
    let dir = base.join("db");
    setup(&dir).await?;
    let mut rng = Rng(seed.max(1));
    let (mut expect_present, mut expect_absent) = (HashSet::new(), HashSet::new());
    let mut ledger_acked: Vec<String> = Vec::new();
    let (mut total_acks, mut failpoint_deaths, started) = (0usize, 0u64, Instant::now());
    for run in 0..kills {
        let use_failpoint = rng.below(3) == 0;
        let mut cmd = Command::new(std::env::current_exe().map_err(err)?);
        cmd.args(["--child", "--dir"]).arg(&dir).args(["--run", &run.to_string()]);
        if use_failpoint {
            cmd.args(["--fail-at", &format!("{}:{}", rng.below(4), 1 + rng.below(20))]);
        }
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().map_err(err)?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let reader = std::thread::spawn(move || {
            let mut acks = Acks::default();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(op) = line.strip_prefix("TRY ") {
                    acks.in_flight = Some(op.to_owned());
                } else if let Some(op) = line.strip_prefix("ACK ") {
                    acks.acked.push(op.to_owned());
                    acks.in_flight = None;
                } else if line.starts_with("NAK ") {
                    acks.in_flight = None;
                }
            }
            acks
        });
        let life = Duration::from_millis(100 + rng.below(600));
        let deadline = Instant::now() + life;
        while Instant::now() < deadline && child.try_wait().map_err(err)?.is_none() {
            std::thread::sleep(Duration::from_millis(5));
        }
        if child.try_wait().map_err(err)?.is_some() {
            failpoint_deaths += 1;
        } else {
            child.kill().map_err(err)?;
        }
        child.wait().map_err(err)?;
        let acks = reader.join().map_err(|_| "reader thread panicked")?;
        total_acks += acks.acked.len();
        for op in &acks.acked {
            if let Some(g) = op.strip_prefix("ins ") {
                expect_present.insert(g.to_owned());
            } else if let Some(g) = op.strip_prefix("del ") {
                expect_present.remove(g);
                expect_absent.insert(g.to_owned());
            } else {
                ledger_acked.push(op.clone());
            }
        }
        if let Some(g) = acks.in_flight.as_deref().and_then(|op| op.strip_prefix("del ")) {
            expect_present.remove(g); // may or may not have applied
        }
        verify(&dir, &ledger_acked, &expect_present, &expect_absent)
            .await
            .map_err(|e| format!("after kill {run}: {e}"))?;
    }
    let _ = std::fs::remove_dir_all(&base);
    println!(
        "crash campaign: {kills} kills ({failpoint_deaths} at failpoints), {total_acks} acknowledged transactions, \
         {} transfers verified, every check passed in {:.1} s",
        ledger_acked.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn setup(dir: &Path) -> Res<()> {
    let db = open(dir, None).await?;
    for s in ["accounts", "ledger", "bulk", "ballast"] {
        db.create_store(s, small()).await.map_err(err)?;
    }
    db.run_write(|tx| async move {
        let accounts = tx.store::<Vec<u8>, u64>("accounts").await?;
        for i in 0..ACCOUNTS {
            accounts.insert(&acct(i), &INITIAL).await?;
        }
        Ok(())
    })
    .await
    .map_err(err)?;
    db.close().await.map_err(err)
}

async fn verify(
    dir: &Path,
    acked: &[String],
    present: &HashSet<String>,
    absent: &HashSet<String>,
) -> Res<()> {
    let db = open(dir, None).await?;
    let (accounts, ledger, bulk, ballast) = db
        .run_read(|tx| async move {
            let a = tx.store::<Vec<u8>, u64>("accounts").await?.range(.., false, usize::MAX).await?;
            let l = tx.store::<String, (u64, u64, u64)>("ledger").await?.range(.., false, usize::MAX).await?;
            let b = tx.store::<String, u64>("bulk").await?.range(.., false, usize::MAX).await?;
            let ballast = tx.store::<u64, Vec<u8>>("ballast").await?.range(.., false, usize::MAX).await?;
            Ok((a, l, b, ballast))
        })
        .await
        .map_err(err)?;
    let total: u64 = accounts.iter().map(|(_, v)| v).sum();
    if total != ACCOUNTS * INITIAL {
        return Err(format!("total {total} != {}", ACCOUNTS * INITIAL));
    }
    let mut expected: BTreeMap<Vec<u8>, u64> = (0..ACCOUNTS).map(|i| (acct(i), INITIAL)).collect();
    for (_, (a, b, amount)) in &ledger {
        *expected.get_mut(&acct(*a)).ok_or("bad ledger account")? -= amount;
        *expected.get_mut(&acct(*b)).ok_or("bad ledger account")? += amount;
    }
    if expected != accounts.into_iter().collect() {
        return Err("balances disagree with the ledger: a transfer is partly visible".into());
    }
    let in_ledger: HashSet<&str> = ledger.iter().map(|(k, _)| k.as_str()).collect();
    if let Some(missing) = acked.iter().find(|t| !in_ledger.contains(t.as_str())) {
        return Err(format!("acknowledged transfer {missing} is missing"));
    }
    for (k, v) in &ballast {
        let id = String::from_utf8_lossy(v.get(..12).unwrap_or_default()).into_owned();
        if !in_ledger.contains(id.as_str()) || *v != ballast_value(&id) {
            return Err(format!("ballast {k} is torn or names no transfer in the ledger ({id})"));
        }
    }
    let mut groups: BTreeMap<&str, u64> = BTreeMap::new();
    for (k, _) in &bulk {
        *groups.entry(k.split('/').nth(1).unwrap_or_default()).or_default() += 1;
    }
    if let Some((g, n)) = groups.iter().find(|(_, n)| **n != GROUP) {
        return Err(format!("bulk group {g} is partly visible: {n} of {GROUP} keys"));
    }
    if let Some(g) = present.iter().find(|g| !groups.contains_key(g.as_str())) {
        return Err(format!("acknowledged bulk group {g} is missing"));
    }
    if let Some(g) = absent.iter().find(|g| groups.contains_key(g.as_str())) {
        return Err(format!("acknowledged deletion of group {g} was undone"));
    }
    db.flush_gc().await.map_err(err)?;
    let report = db.check().await.map_err(err)?;
    if !report.is_ok() {
        return Err(format!("check: {}", report.problems.join("; ")));
    }
    db.close().await.map_err(err)
}
