//! The SOP-rs reference server and `sop` command-line tool.
//!
//! `sop serve` serves a database over HTTP/JSON (its OpenAPI document,
//! generated from the handlers, is served at `GET /v1/openapi.json`);
//! the other subcommands work on a data directory directly, or through a
//! server with `--server URL`. Errors print one line and exit non-zero.
//! The binary is [`main_entry`]; the rest is private.
#![deny(clippy::unwrap_used)]

mod api;
mod cli;
mod client;
mod code;
mod commands;
mod config;
mod metrics;
mod page;
mod schema;
mod serve;
mod target;
mod wire;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command};
use crate::config::{DbSettings, Global, ServeSettings, open_database, read_token};
use crate::target::Target;

/// The `sop` binary: parses the command line and runs it.
#[must_use]
pub fn main_entry() -> ExitCode {
    let cli = Cli::parse();
    let serving = matches!(cli.command, Command::Serve(_));
    let default_level = if serving { "info,foyer=warn" } else { "warn" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sop: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sop: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    let Cli { data, server, token_file, registry, blobs, command } = cli;
    let global = Global { data, token_file, registry, blobs };
    if let Command::Serve(args) = command {
        if server.is_some() {
            return Err("`serve` takes --data or --registry/--blobs, not --server".into());
        }
        return serve::serve(ServeSettings::resolve(global, *args)?).await;
    }
    if server.is_some() && (global.registry.is_some() || global.blobs.is_some()) {
        return Err("--server works through a running server: it takes no --registry or --blobs".into());
    }
    let mut settings = DbSettings::embedded(global.data);
    settings.registry = global.registry;
    settings.blobs = global.blobs;
    let token_file = global.token_file;
    let target = match &server {
        Some(url) => {
            let token = token_file.as_deref().map(read_token).transpose()?;
            Target::Remote(client::Client::new(url, token)?)
        }
        None => Target::Local(open_database(&settings).await?),
    };
    let outcome = match command {
        Command::Compact => commands::compact(&target, &settings.data).await,
        command => dispatch(&target, command).await,
    };
    let closed = target.close().await;
    outcome.and(closed)
}

async fn dispatch(t: &Target, command: Command) -> Result<(), String> {
    match command {
        Command::Serve(_) => Err("unreachable: serve is handled first".into()),
        Command::Stores => commands::stores(t).await,
        Command::CreateStore { name, slot_length, non_unique } => {
            commands::create_store(t, &name, slot_length, non_unique).await
        }
        Command::DropStore { name } => t.drop_store(&name).await,
        Command::Get { store, key } => commands::get(t, &store, &key).await,
        Command::Put { store, key, value } => commands::put(t, &store, &key, &value).await,
        Command::Del { store, key } => commands::del(t, &store, &key).await,
        Command::Scan(a) => commands::scan(t, &a).await,
        Command::Load { store, file, batch, create } => commands::load(t, &store, &file, batch, create).await,
        Command::Dump { store, output } => commands::dump(t, &store, output.as_deref()).await,
        Command::Check => commands::check(t).await,
        Command::Compact => Err("unreachable: compact is handled first".into()),
    }
}

/// The API over a fresh in-memory database holding an empty store `s`
/// (unique, slot length 4), without authentication: the HTTP fuzz target's
/// system under test.
///
/// # Panics
/// When the in-memory database cannot be opened (it always can).
#[doc(hidden)]
pub async fn fuzz_router() -> axum::Router {
    let mut config = sop_btree::Config::memory();
    config.cache.memory_bytes = 8 << 20;
    config.gc_grace = std::time::Duration::ZERO;
    #[allow(clippy::unwrap_used)]
    let db = sop_btree::Database::open(config).await.unwrap();
    let options = sop_btree::StoreOptions { slot_length: 4, ..sop_btree::StoreOptions::default() };
    #[allow(clippy::unwrap_used)]
    db.create_store("s", options).await.unwrap();
    let limits = api::TxLimits {
        default_timeout: std::time::Duration::from_secs(30),
        max_timeout: std::time::Duration::from_secs(60),
        max_open: 64,
    };
    let txs = std::sync::Arc::new(api::TxTable::new(limits));
    api::router(api::AppState { db, txs, metrics: None, token: None })
}
