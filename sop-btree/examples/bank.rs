//! A user-facing example: accounts in a store, transfers in serializable
//! transactions that `run_write` retries on conflict, run concurrently,
//! with the total checked at the end. Run it with
//! `cargo run -p sop-btree --example bank [DIR]` (a directory for an
//! embedded database; in memory without one).

use std::time::Duration;

use sop_btree::{Config, Database, Error, Result, StoreOptions};

const ACCOUNTS: u32 = 20;
const TRANSFERS_PER_CLIENT: u32 = 50;
const CLIENTS: u32 = 4;

/// Moves `amount` from `from` to `to`, refusing to overdraw.
async fn transfer(db: &Database, from: u32, to: u32, amount: i64) -> Result<()> {
    db.run_write(|tx| async move {
        let accounts = tx.store::<u32, i64>("accounts").await?;
        let balance = accounts.get(&from).await?.unwrap_or(0);
        if balance < amount {
            return Err(Error::invalid("amount", format!("account {from} holds {balance}, not {amount}")));
        }
        let other = accounts.get(&to).await?.unwrap_or(0);
        accounts.update(&from, &(balance - amount)).await?;
        accounts.update(&to, &(other + amount)).await
    })
    .await
}

#[tokio::main]
async fn main() -> Result<()> {
    let config = match std::env::args().nth(1) {
        Some(dir) => Config::embedded(dir),
        None => Config::memory(),
    };
    let db = Database::open(config).await?;
    if db.store_info("accounts").await.is_err() {
        db.create_store("accounts", StoreOptions::default()).await?;
        db.run_write(|tx| async move {
            let accounts = tx.store::<u32, i64>("accounts").await?;
            for a in 0..ACCOUNTS {
                accounts.insert(&a, &100).await?;
            }
            Ok(())
        })
        .await?;
    }
    let clients = (0..CLIENTS).map(|c| {
        let db = db.clone();
        tokio::spawn(async move {
            let mut refused = 0;
            for i in 0..TRANSFERS_PER_CLIENT {
                let (from, to) = ((c * 7 + i) % ACCOUNTS, (c * 3 + i * 5 + 1) % ACCOUNTS);
                if from == to {
                    continue;
                }
                match transfer(&db, from, to, i64::from(i % 30)).await {
                    Ok(()) => {}
                    Err(e) if e.kind() == sop_btree::ErrorKind::InvalidInput => refused += 1,
                    Err(e) => return Err(e),
                }
            }
            Ok::<u32, Error>(refused)
        })
    });
    let mut refused = 0;
    for client in clients {
        refused += client.await.map_err(|e| Error::Indeterminate(e.to_string()))??;
    }
    let total = db
        .run_read(|tx| async move {
            let accounts = tx.store::<u32, i64>("accounts").await?;
            let all = accounts.range(.., false, usize::MAX).await?;
            Ok(all.into_iter().map(|(_, b)| b).sum::<i64>())
        })
        .await?;
    let stats = db.stats();
    println!(
        "{} transfers ({refused} refused for lack of funds), total {total}, {} commits, {} merges, {} retries",
        CLIENTS * TRANSFERS_PER_CLIENT,
        stats.commits,
        stats.merges,
        stats.retries
    );
    assert_eq!(total, i64::from(ACCOUNTS) * 100, "money was created or lost");
    tokio::time::timeout(Duration::from_secs(10), db.close())
        .await
        .map_err(|_| Error::Closed("close timed out".into()))??;
    Ok(())
}
