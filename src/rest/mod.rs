//! Kafka Connect's REST API, Prometheus metrics and health endpoints.

pub mod client;
pub mod metrics;
pub mod offsets;
#[cfg(test)]
mod proptests;
pub mod security;
pub mod server;
pub mod status;

use crate::config::WorkerConfig;
use crate::worker::runtime::Worker;
use anyhow::Context;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tracing::info;

/// Binds every listener (before any connector starts, as Connect does, so a taken port fails fast).
pub async fn bind(config: &WorkerConfig) -> anyhow::Result<Vec<TcpListener>> {
    let mut out = Vec::new();
    for l in &config.listeners {
        let listener = TcpListener::bind((l.host.as_str(), l.port))
            .await
            .with_context(|| {
                format!("cannot bind the REST listener http://{}:{}", l.host, l.port)
            })?;
        out.push(listener);
    }
    Ok(out)
}

/// The whole API: Connect's routes behind the guard (origin, authentication, body size).
pub fn app(worker: Arc<Worker>) -> axum::Router {
    let guard = security::Guard::new(worker.config.rest.clone());
    server::router(worker).layer(axum::middleware::from_fn_with_state(guard, security::guard))
}

/// Serves the API on bound listeners. Returns their addresses.
pub fn serve(listeners: Vec<TcpListener>, worker: Arc<Worker>) -> Vec<SocketAddr> {
    let mut bound = Vec::new();
    for listener in listeners {
        let Ok(addr) = listener.local_addr() else {
            continue;
        };
        info!(
            "REST server listening at http://{addr}/, advertising URL http://{}/",
            worker.config.worker_id
        );
        bound.push(addr);
        let app = app(worker.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!("REST server on {addr} stopped: {e}");
            }
        });
    }
    info!("REST resources initialized; server is started and ready to handle requests");
    bound
}
