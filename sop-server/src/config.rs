//! Settings: flags, `SOP_*` variables and the TOML file, merged; and
//! opening the database they describe.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sop_btree::{CacheConfig, Config, Database, ErrorKind};

use crate::cli::ServeArgs;

/// The default listen address.
pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:7070";
/// The default data directory.
pub(crate) const DEFAULT_DATA: &str = "./sop-data";

/// The `--config` file: the same settings as the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data: Option<PathBuf>,
    token_file: Option<PathBuf>,
    listen: Option<SocketAddr>,
    registry: Option<String>,
    blobs: Option<String>,
    cache_mb: Option<usize>,
    disk_cache_dir: Option<PathBuf>,
    disk_cache_mb: Option<usize>,
    max_tx_timeout_secs: Option<u64>,
    max_open_tx: Option<usize>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
}

/// The options every subcommand takes (`sop --data ... --registry ...`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Global {
    pub(crate) data: Option<PathBuf>,
    pub(crate) token_file: Option<PathBuf>,
    pub(crate) registry: Option<String>,
    pub(crate) blobs: Option<String>,
}

/// Where the database lives and how it is cached.
#[derive(Debug, Clone)]
pub(crate) struct DbSettings {
    pub(crate) data: PathBuf,
    pub(crate) registry: Option<String>,
    pub(crate) blobs: Option<String>,
    pub(crate) cache: CacheConfig,
    pub(crate) max_tx_timeout: Duration,
}

impl DbSettings {
    /// The embedded default in `data`.
    pub(crate) fn embedded(data: Option<PathBuf>) -> Self {
        Self {
            data: data.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA)),
            registry: None,
            blobs: None,
            cache: CacheConfig::default(),
            max_tx_timeout: Duration::from_secs(60),
        }
    }
}

/// Everything `sop serve` needs.
#[derive(Debug, Clone)]
pub(crate) struct ServeSettings {
    pub(crate) db: DbSettings,
    pub(crate) listen: SocketAddr,
    pub(crate) token_file: Option<PathBuf>,
    pub(crate) tls: Option<(PathBuf, PathBuf)>,
    pub(crate) max_open_tx: usize,
}

impl ServeSettings {
    /// Flags (and variables, which clap already merged) over the file.
    pub(crate) fn resolve(global: Global, a: ServeArgs) -> Result<Self, String> {
        let f = match &a.config {
            Some(path) => read_file_config(path)?,
            None => FileConfig::default(),
        };
        let mut db = DbSettings::embedded(global.data.or(f.data));
        db.registry = global.registry.or(f.registry);
        db.blobs = global.blobs.or(f.blobs);
        if let Some(mb) = a.cache_mb.or(f.cache_mb) {
            if mb == 0 {
                return Err("cache_mb must be at least 1".into());
            }
            db.cache.memory_bytes = mb << 20;
        }
        if let Some(dir) = a.disk_cache_dir.or(f.disk_cache_dir) {
            let mb = a.disk_cache_mb.or(f.disk_cache_mb).unwrap_or(1024);
            db.cache.disk = Some(sop_btree::DiskTier { dir, capacity_bytes: mb << 20 });
        }
        if let Some(secs) = a.max_tx_timeout_secs.or(f.max_tx_timeout_secs) {
            if secs == 0 {
                return Err("max_tx_timeout_secs must be at least 1".into());
            }
            db.max_tx_timeout = Duration::from_secs(secs);
        }
        let tls = match (a.tls_cert.or(f.tls_cert), a.tls_key.or(f.tls_key)) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => return Err("TLS needs both a certificate and a key (--tls-cert and --tls-key)".into()),
        };
        let listen = match a.listen.or(f.listen) {
            Some(l) => l,
            None => DEFAULT_LISTEN.parse().map_err(|e| format!("{e}"))?,
        };
        let max_open_tx = a.max_open_tx.or(f.max_open_tx).unwrap_or(10_000);
        if max_open_tx == 0 {
            return Err("max_open_tx must be at least 1".into());
        }
        Ok(Self { db, listen, token_file: global.token_file.or(f.token_file), tls, max_open_tx })
    }
}

fn read_file_config(path: &Path) -> Result<FileConfig, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Reads a token file: its first line, trimmed; an empty token is an error.
pub(crate) fn read_token(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read token file {}: {e}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim().to_owned();
    if token.is_empty() {
        return Err(format!("token file {} is empty", path.display()));
    }
    Ok(token)
}

/// Opens the database `s` describes.
pub(crate) async fn open_database(s: &DbSettings) -> Result<Database, String> {
    let mut config = match (&s.registry, &s.blobs) {
        (None, None) => Config::embedded(&s.data),
        (registry, blobs) => {
            let b = sop_backends::from_urls(&s.data, registry.as_deref(), blobs.as_deref())
                .await
                .map_err(|e| format!("cannot open the backends: {e}"))?;
            Config::from_parts(b.registry, b.blobs, b.exclusive)
        }
    };
    config.cache = s.cache.clone();
    config.tx_timeout = s.max_tx_timeout;
    Database::open(config).await.map_err(|e| {
        if e.kind() == ErrorKind::Locked {
            format!(
                "the database in {} is in use by another process (a running `sop serve`? then use --server URL): {e}",
                s.data.display()
            )
        } else {
            format!("cannot open the database in {}: {e}", s.data.display())
        }
    })
}
