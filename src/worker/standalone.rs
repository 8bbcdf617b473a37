//! `iotconnect standalone`: Kafka Connect's standalone worker (kafka-connect.md §1, §10).
//!
//! Exit codes as Connect's (decided in [`process`](super::process)): 1 usage, 2 error before start (invalid worker file, Kafka unreachable),
//! 3 a connector could not be created or the offsets file is unreadable, damaged or locked by
//! another process. 0 after a clean stop; 4 ([`EXIT_STOP_FAILED`]) when the stop was not clean (a
//! task's final run failed, or the final offset commit did not reach the offsets file).
//!
//! The offset store is opened here, once, and handed to the worker (which hands it to tasks).

use super::connector::Plugins;
use super::process::{self, Step};
use crate::config::{self, LoadError};
use crate::offsets::{FileOffsetBackingStore, OffsetBackingStore};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;
use tracing::{error, info, warn};

pub use super::process::EXIT_STOP_FAILED;

pub fn main(worker: PathBuf, connectors: Vec<PathBuf>, plugins: Plugins) -> ExitCode {
    process::block_on(async move {
        match run(worker, connectors, plugins).await {
            Ok(code) | Err(code) => code,
        }
    })
}

async fn run(
    worker_path: PathBuf,
    connector_paths: Vec<PathBuf>,
    plugins: Plugins,
) -> Result<ExitCode, ExitCode> {
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
                return Err(Step::Init.stop());
            }
            let mut files: Vec<&str> = problems.0.iter().map(|p| p.file.as_str()).collect();
            files.dedup();
            for f in files {
                error!("Failed to create connector for {f}");
            }
            return Err(Step::Connector.stop());
        }
    };
    for w in &loaded.warnings {
        warn!("{w}");
    }
    process::log_values("StandaloneConfig", loaded.worker.file.masked());
    info!("Creating Kafka admin client");
    let cluster_id = Step::Init.check(super::kafka::cluster_id(&loaded.worker).await)?;
    info!("Kafka cluster ID: {cluster_id}");
    info!(
        "Kafka Connect standalone worker initialization took {}ms",
        t0.elapsed().as_millis()
    );
    let listeners = Step::Init.check(crate::rest::bind(&loaded.worker).await)?;
    info!("Kafka Connect starting");
    // Load the offsets file before any connector exists (Connect's FileOffsetBackingStore start):
    // a corrupt, truncated or locked file stops the worker with exit 3 instead of replaying.
    let offsets: Arc<dyn OffsetBackingStore> =
        Step::Connector.check(FileOffsetBackingStore::open(&loaded.worker.offset_file))?;
    let runtime = Step::Connector
        .check(super::runtime::Worker::start(loaded, cluster_id, &plugins, offsets).await)?;
    crate::rest::serve(listeners, runtime.clone());
    let status = runtime.clone();
    process::run_until_signal(move || super::systemd::summary(&status)).await;
    let stopped = runtime.stop().await;
    info!("Kafka Connect stopped");
    Ok(match stopped {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::from(EXIT_STOP_FAILED),
    })
}
