//! The command line: global options, `serve` and the data commands.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// `sop`: the SOP-rs server and command-line tool.
///
/// Without `--server`, every data command opens the database in `--data`
/// directly (stop the server first: the embedded database is locked by
/// the process that has it open). With `--server URL`, the commands go
/// through that server's HTTP API.
#[derive(Debug, Parser)]
#[command(name = "sop", version, about, long_about = None, propagate_version = true)]
pub(crate) struct Cli {
    /// Data directory of the embedded database [default: ./sop-data].
    #[arg(long, global = true, env = "SOP_DATA", value_name = "DIR")]
    pub(crate) data: Option<PathBuf>,
    /// Work through a running server instead of a data directory.
    #[arg(long, global = true, env = "SOP_SERVER", value_name = "URL")]
    pub(crate) server: Option<String>,
    /// File holding the bearer token (the server's, or one to send to it).
    #[arg(long, global = true, env = "SOP_TOKEN_FILE", value_name = "FILE")]
    pub(crate) token_file: Option<PathBuf>,
    /// Registry: `rocksdb://PATH`, `memory://`, or the shared registry of
    /// cluster mode, `etcd://HOST:PORT[,HOST:PORT...]/PREFIX` (needs
    /// --blobs) [default: DIR/registry].
    #[arg(long, global = true, env = "SOP_REGISTRY", value_name = "URL")]
    pub(crate) registry: Option<String>,
    /// Blob store: `file://`, `memory://`, `s3://`, `gs://`, `az://`
    /// [default: inside the RocksDB registry].
    #[arg(long, global = true, env = "SOP_BLOBS", value_name = "URL")]
    pub(crate) blobs: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Serve the database over HTTP/JSON (default 127.0.0.1:7070).
    Serve(Box<ServeArgs>),
    /// List stores with their item counts and options.
    Stores,
    /// Create a store.
    CreateStore {
        /// Store name (1..=128 bytes).
        name: String,
        /// Items per node (4..=10000).
        #[arg(long)]
        slot_length: Option<u32>,
        /// Allow duplicate keys.
        #[arg(long)]
        non_unique: bool,
    },
    /// Remove a store and everything in it.
    DropStore {
        /// Store name.
        name: String,
    },
    /// Print one item's value as JSON.
    Get {
        /// Store name.
        store: String,
        /// Key.
        key: String,
    },
    /// Put (upsert) one item; VALUE is JSON (quote strings: '"text"').
    Put {
        /// Store name.
        store: String,
        /// Key.
        key: String,
        /// Value, as JSON.
        value: String,
    },
    /// Delete one item (an error if it is absent).
    Del {
        /// Store name.
        store: String,
        /// Key.
        key: String,
    },
    /// Print items in key order as NDJSON `{"key","value"}` lines.
    Scan(ScanArgs),
    /// Bulk-load NDJSON `{"key","value"}` lines into a store.
    Load {
        /// Store name.
        store: String,
        /// The NDJSON file (`-` for standard input).
        file: PathBuf,
        /// Items per transaction.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        /// Create the store first if it does not exist.
        #[arg(long)]
        create: bool,
    },
    /// Write every item of a store as NDJSON (the input of `load`).
    Dump {
        /// Store name.
        store: String,
        /// Output file [default: standard output].
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Check the database's structure; exits 1 on any problem.
    Check,
    /// Give the space of deleted data back (runs pending deletions, then a
    /// full compaction of the embedded store; on object storage, deletes
    /// the objects whose every node was deleted).
    Compact,
}

/// `sop scan`.
#[derive(Debug, Args)]
pub(crate) struct ScanArgs {
    /// Store name.
    pub(crate) store: String,
    /// First key (inclusive).
    #[arg(long)]
    pub(crate) from: Option<String>,
    /// End key (exclusive).
    #[arg(long)]
    pub(crate) to: Option<String>,
    /// Items at most [default: all].
    #[arg(long)]
    pub(crate) limit: Option<usize>,
    /// Descending key order.
    #[arg(long)]
    pub(crate) reverse: bool,
}

/// `sop serve`. Each option can also come from a `SOP_*` variable or the
/// `--config` TOML file (same names, `_` for `-`); flags win, then
/// variables, then the file.
#[derive(Debug, Args, Default)]
pub(crate) struct ServeArgs {
    /// TOML file with any of these settings.
    #[arg(long, env = "SOP_CONFIG", value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:7070; port 0 picks one].
    #[arg(long, env = "SOP_LISTEN", value_name = "ADDR")]
    pub(crate) listen: Option<SocketAddr>,
    /// Memory cache size in MiB [default: 256].
    #[arg(long, env = "SOP_CACHE_MB", value_name = "MIB")]
    pub(crate) cache_mb: Option<usize>,
    /// Directory of an on-disk cache tier [default: none].
    #[arg(long, env = "SOP_DISK_CACHE_DIR", value_name = "DIR")]
    pub(crate) disk_cache_dir: Option<PathBuf>,
    /// Size of the on-disk cache tier in MiB [default: 1024].
    #[arg(long, env = "SOP_DISK_CACHE_MB", value_name = "MIB")]
    pub(crate) disk_cache_mb: Option<usize>,
    /// The longest transaction timeout, in seconds [default: 60].
    #[arg(long, env = "SOP_MAX_TX_TIMEOUT_SECS", value_name = "SECS")]
    pub(crate) max_tx_timeout_secs: Option<u64>,
    /// Open transactions at most [default: 10000].
    #[arg(long, env = "SOP_MAX_OPEN_TX", value_name = "N")]
    pub(crate) max_open_tx: Option<usize>,
    /// TLS certificate chain (PEM); needs --tls-key.
    #[arg(long, env = "SOP_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// TLS private key (PEM); needs --tls-cert.
    #[arg(long, env = "SOP_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
}
