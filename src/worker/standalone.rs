//! `iotconnect standalone`: Kafka Connect's standalone worker (kafka-connect.md §1, §10).
//!
//! Exit codes as Connect's: 1 usage, 2 error before start (invalid worker file, Kafka unreachable),
//! 3 a connector could not be created or the offsets file is unreadable, damaged or locked by
//! another process. 0 after a clean stop; 4 ([`EXIT_STOP_FAILED`]) when the stop was not clean (a
//! task's final run failed, or the final offset commit did not reach the offsets file).
//!
//! The offset store is opened here, once, and handed to the worker (which hands it to tasks).

use super::connector::Plugins;
use crate::config::{self, LoadError};
use crate::offsets::{FileOffsetBackingStore, OffsetBackingStore};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;
use tracing::{error, info, warn};

pub const EXIT_INIT: u8 = 2;
pub const EXIT_CONNECTOR: u8 = 3;
pub const EXIT_STOP_FAILED: u8 = 4;

pub fn main(worker: PathBuf, connectors: Vec<PathBuf>, plugins: Plugins) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!("cannot start the runtime: {e}");
            return ExitCode::from(EXIT_INIT);
        }
    };
    let code = rt.block_on(run(worker, connectors, plugins));
    // Do not wait for blocking librdkafka threads that are still draining.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    code
}

async fn run(worker_path: PathBuf, connector_paths: Vec<PathBuf>, plugins: Plugins) -> ExitCode {
    let t0 = Instant::now();
    info!("Kafka Connect standalone worker initializing ...");
    let loaded = match config::load_all(&worker_path, &connector_paths) {
        Ok(l) => l,
        Err(LoadError {
            worker_failed,
            problems,
            warnings,
        }) => {
            for w in warnings {
                warn!("{w}");
            }
            for p in &problems.0 {
                error!("{p}");
            }
            if worker_failed {
                error!("Stopping due to error");
                return ExitCode::from(EXIT_INIT);
            }
            let mut files: Vec<&str> = problems.0.iter().map(|p| p.file.as_str()).collect();
            files.dedup();
            for f in files {
                error!("Failed to create connector for {f}");
            }
            error!("Stopping after connector error");
            return ExitCode::from(EXIT_CONNECTOR);
        }
    };
    for w in &loaded.warnings {
        warn!("{w}");
    }
    let mut values = String::from("StandaloneConfig values: ");
    for (k, v) in loaded.worker.file.masked() {
        values.push_str(&format!("\n\t{k} = {v}"));
    }
    info!("{values}");
    info!("Creating Kafka admin client");
    let cluster_id = match super::kafka::cluster_id(&loaded.worker).await {
        Ok(id) => id,
        Err(e) => {
            error!("{e:#}");
            error!("Stopping due to error");
            return ExitCode::from(EXIT_INIT);
        }
    };
    info!("Kafka cluster ID: {cluster_id}");
    info!(
        "Kafka Connect standalone worker initialization took {}ms",
        t0.elapsed().as_millis()
    );
    let listeners = match crate::rest::bind(&loaded.worker).await {
        Ok(l) => l,
        Err(e) => {
            error!("{e:#}");
            error!("Stopping due to error");
            return ExitCode::from(EXIT_INIT);
        }
    };
    info!("Kafka Connect starting");
    // Load the offsets file before any connector exists (Connect's FileOffsetBackingStore start):
    // a corrupt, truncated or locked file stops the worker with exit 3 instead of replaying.
    let offsets: Arc<dyn OffsetBackingStore> =
        match FileOffsetBackingStore::open(&loaded.worker.offset_file) {
            Ok(s) => s,
            Err(e) => {
                error!("{e}");
                error!("Stopping after connector error");
                return ExitCode::from(EXIT_CONNECTOR);
            }
        };
    let runtime = match super::runtime::Worker::start(loaded, cluster_id, &plugins, offsets).await {
        Ok(w) => w,
        Err(e) => {
            error!("{e:#}");
            error!("Stopping after connector error");
            return ExitCode::from(EXIT_CONNECTOR);
        }
    };
    crate::rest::serve(listeners, runtime.clone());
    info!("Kafka Connect started");
    super::systemd::ready(runtime.clone());
    super::signals::wait_for_shutdown().await;
    super::systemd::stopping();
    info!("Kafka Connect stopping");
    let stopped = runtime.stop().await;
    info!("Kafka Connect stopped");
    match stopped {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::from(EXIT_STOP_FAILED),
    }
}
