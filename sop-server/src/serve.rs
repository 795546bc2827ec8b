//! `sop serve`: open the database, serve the API, shut down gracefully.

use std::sync::Arc;
use std::time::Duration;

use axum_server::Handle;
use axum_server::tls_rustls::RustlsConfig;

use crate::api::{self, AppState, TxLimits, TxTable};
use crate::config::{ServeSettings, open_database, read_token};

/// How long in-flight requests get to finish after a shutdown signal.
const DRAIN: Duration = Duration::from_secs(20);

/// Serves until SIGINT or SIGTERM; in-flight requests (commits among
/// them) finish, open transactions are rolled back, the database is
/// closed, and the call returns `Ok`.
pub(crate) async fn serve(s: ServeSettings) -> Result<(), String> {
    let token = s.token_file.as_deref().map(read_token).transpose()?;
    let metrics = crate::metrics::install()?;
    let db = open_database(&s.db).await?;
    let limits = TxLimits {
        default_timeout: s.db.max_tx_timeout.min(Duration::from_secs(30)),
        max_timeout: s.db.max_tx_timeout,
        max_open: s.max_open_tx,
    };
    let txs = Arc::new(TxTable::new(limits));
    txs.spawn_reaper(Duration::from_millis(100));
    let state =
        AppState { db: db.clone(), txs: txs.clone(), metrics: Some(metrics), token: token.map(Into::into) };
    let app = api::router(state).into_make_service();

    let tls = match &s.tls {
        Some((cert, key)) => {
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
            let config = RustlsConfig::from_pem_file(cert, key)
                .await
                .map_err(|e| format!("TLS certificate {} / key {}: {e}", cert.display(), key.display()))?;
            Some(config)
        }
        None => None,
    };
    let listener =
        std::net::TcpListener::bind(s.listen).map_err(|e| format!("cannot listen on {}: {e}", s.listen))?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let handle = Handle::new();
    tokio::spawn(shutdown_on_signal(handle.clone()));
    let scheme = if tls.is_some() { "https" } else { "http" };
    // The first line of standard output, for scripts and tests.
    println!("sop: listening on {scheme}://{addr} (data: {})", s.db.data.display());
    tracing::info!(%addr, auth = s.token_file.is_some(), tls = tls.is_some(), "serving");
    let served = match tls {
        Some(tls) => {
            axum_server::from_tcp_rustls(listener, tls)
                .map_err(|e| e.to_string())?
                .handle(handle)
                .serve(app)
                .await
        }
        None => axum_server::from_tcp(listener).map_err(|e| e.to_string())?.handle(handle).serve(app).await,
    };
    served.map_err(|e| format!("server error: {e}"))?;
    txs.rollback_all().await;
    db.close().await.map_err(|e| format!("closing the database: {e}"))?;
    tracing::info!("shut down cleanly");
    Ok(())
}

async fn shutdown_on_signal(handle: Handle<std::net::SocketAddr>) {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!("cannot watch SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
    tracing::info!("shutdown signal: draining in-flight requests");
    handle.graceful_shutdown(Some(DRAIN));
}
