//! `sop`: the SOP-rs command-line tool.
//!
//! Until the server lands, `sop` runs a quick-start on the embedded
//! default: it opens (or creates) the database in `--data DIR` (default
//! `./sop-data`: a RocksDB registry that also holds the blobs), records
//! this run in a transaction, reads every earlier run back in a read
//! transaction, and checks the database. Run it twice: the second run finds
//! the first.

use std::path::PathBuf;
use std::process::ExitCode;

use sop_btree::{Config, Database, ErrorKind, StoreOptions};

const STORE: &str = "runs";

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let data = match parse_data_dir(&args) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{e}");
            eprintln!("usage: sop [--data DIR]");
            return ExitCode::from(2);
        }
    };
    match quickstart(data).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sop: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_data_dir(args: &[String]) -> Result<PathBuf, String> {
    match args {
        [] => Ok(PathBuf::from("./sop-data")),
        [flag, dir] if flag == "--data" => Ok(PathBuf::from(dir)),
        [flag] if flag == "--help" || flag == "-h" => Err("sop: the SOP-rs quick-start".into()),
        other => Err(format!("sop: unexpected arguments {other:?}")),
    }
}

async fn quickstart(data: PathBuf) -> sop_btree::Result<()> {
    let db = Database::open(Config::embedded(&data)).await?;
    println!("opened {} (registry and blobs: RocksDB, cache: foyer)", data.display());
    match db.create_store(STORE, StoreOptions::default()).await {
        Ok(_) => println!("created store {STORE:?}"),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let run = db
        .run_write(|tx| async move {
            let runs = tx.store::<u64, String>(STORE).await?;
            let n = runs.count().await? + 1;
            runs.insert(&n, &format!("transaction {}", tx.id())).await?;
            Ok(n)
        })
        .await?;
    println!("committed run #{run}");
    let earlier = db
        .run_read(
            |tx| async move { tx.store::<u64, String>(STORE).await?.range(.., false, usize::MAX).await },
        )
        .await?;
    for (n, what) in &earlier {
        println!("  run #{n}: {what}");
    }
    let report = db.check().await?;
    println!(
        "check: {} store(s), {} node(s), {} item(s), {} blob(s), {} problem(s)",
        report.stores,
        report.nodes,
        report.items,
        report.blobs,
        report.problems.len()
    );
    db.close().await?;
    if report.is_ok() {
        Ok(())
    } else {
        Err(sop_btree::Error::corruption("database", report.problems.join("; ")))
    }
}
