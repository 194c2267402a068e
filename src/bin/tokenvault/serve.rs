//! What `serve` runs beside the API: the metrics listener
//! (`--metrics-listen`), TLS (`--tls-cert`, `--tls-key`, reloaded on
//! SIGHUP) and the log format (`--log-format`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokenvault::http::{HttpConfig, TlsFiles};
use tokenvault::TokenStore;
use tokio::net::TcpListener;

use crate::error::CliError;

/// `serve`'s flags beyond the API's own.
pub struct Extras {
    pub metrics_listen: Option<SocketAddr>,
    pub log_format: String,
    pub tls: Option<(PathBuf, PathBuf)>,
}

impl Extras {
    /// The certificate and key, read and checked.
    pub fn load_tls(&self) -> Result<Option<TlsFiles>, CliError> {
        let Some((cert, key)) = &self.tls else {
            return Ok(None);
        };
        TlsFiles::load(cert, key)
            .map(Some)
            .map_err(|e| CliError::new("io", format!("cannot serve TLS: {e}")))
    }
}

static RECORDER: OnceLock<PrometheusHandle> = OnceLock::new();

/// Buckets of the latency histograms (seconds): 50 µs to 10 s.
const SECONDS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 10.0,
];
/// Buckets of the group-commit batch size.
const BATCH: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// Installs the Prometheus recorder (once), before the store is opened.
pub fn install_metrics() -> Result<(), CliError> {
    if RECORDER.get().is_some() {
        return Ok(());
    }
    let failed = |e: &dyn std::fmt::Display| {
        CliError::new("io", format!("cannot set up the metrics recorder: {e}"))
    };
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS)
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full("tokenvault_group_commit_batch_size".into()),
                BATCH,
            )
        })
        .and_then(|b| b.install_recorder())
        .map_err(|e| failed(&e))?;
    tokenvault::describe_metrics();
    let _ = RECORDER.set(handle);
    Ok(())
}

/// Binds the API's listener (and the metrics one), then serves until
/// Ctrl-C or SIGTERM.
pub async fn run(
    store: &TokenStore,
    listen: SocketAddr,
    cfg: &HttpConfig,
    extras: &Extras,
    tls: Option<TlsFiles>,
) -> Result<(), CliError> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| CliError::new("io", format!("cannot serve on {listen}: {e}")))?;
    if let Some(addr) = extras.metrics_listen {
        let metrics = TcpListener::bind(addr)
            .await
            .map_err(|e| CliError::new("io", format!("cannot serve metrics on {addr}: {e}")))?;
        let handle = RECORDER
            .get()
            .cloned()
            .ok_or_else(|| CliError::new("io", "the metrics recorder is not installed"))?;
        let render: tokenvault::http::Render = Arc::new(move || {
            handle.run_upkeep();
            handle.render()
        });
        let app = tokenvault::http::metrics_router(store.clone(), render);
        let bound = metrics.local_addr().unwrap_or(addr);
        tracing::info!(target: "tokenvault::http", addr = %bound, "metrics at GET /metrics");
        tokio::spawn(async move {
            if let Err(e) = axum::serve(metrics, app).await {
                tracing::warn!(target: "tokenvault::http", error = %e, "metrics listener stopped");
            }
        });
    }
    let local = listener.local_addr().unwrap_or(listen);
    let app = tokenvault::http::app(store.clone(), cfg);
    let served = match tls {
        Some(tls) => {
            let reloads = tokenvault::http::reload_on_sighup(tls.clone())
                .map_err(|e| CliError::new("io", format!("cannot watch for SIGHUP: {e}")))?;
            tokio::spawn(reloads);
            tracing::info!(target: "tokenvault::http", addr = %local, "listening (TLS)");
            tokenvault::http::serve_tls_on(listener, app, cfg, &tls, shutdown_signal()).await
        }
        None => {
            tracing::info!(target: "tokenvault::http", addr = %local, "listening");
            tokenvault::http::serve_on(listener, app, cfg, shutdown_signal()).await
        }
    };
    served.map_err(|e| CliError::new("io", format!("cannot serve on {listen}: {e}")))
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
