//! The distributed worker's life: load and check the files, make sure the worker's topics exist,
//! agree on connector configurations, import standalone offsets once, join one group per source
//! connector, serve REST, and on SIGTERM leave the groups (finishing every transaction) and stop.
//!
//! Exit codes as Connect's (decided in `worker::process`): 2 invalid worker file / Kafka unreachable /
//! REST port taken, 3 a connector cannot be created, 0 after a clean stop, 4 when a sink connector's
//! stop was not clean. systemd READY=1 is sent once REST serves, with a status line naming the owned
//! hub partitions.

use super::group::{self, Owned};
use super::pipeline::SourceJob;
use super::rest::{Api, SourceView};
use super::{configs, status};
use crate::config::distributed::{self, DistributedConfig};
use crate::config::{kafka, ConnectorConfig, ConnectorKind, Loaded};
use crate::offsets::kafka::{ensure_compacted_topic, has_connector, load_store, TopicSpec};
use crate::offsets::OffsetStore;
use crate::worker::process::{self, Step};
use anyhow::Context;
use rdkafka::producer::FutureRecord;
use rdkafka::ClientConfig;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

pub fn main(worker: PathBuf, connectors: Vec<PathBuf>, replace_config: bool) -> ExitCode {
    process::block_on(async move {
        match run(worker, connectors, replace_config).await {
            Ok(code) | Err(code) => code,
        }
    })
}

async fn run(
    worker_path: PathBuf,
    connector_paths: Vec<PathBuf>,
    replace: bool,
) -> Result<ExitCode, ExitCode> {
    let t0 = Instant::now();
    info!("Kafka Connect distributed worker initializing ...");
    let loaded = match distributed::load(&worker_path, &connector_paths) {
        Ok(l) => l,
        Err((worker_failed, problems)) => {
            for p in &problems.0 {
                error!("{p}");
            }
            return Err(if worker_failed {
                Step::Init.stop()
            } else {
                Step::Connector.stop()
            });
        }
    };
    for w in &loaded.warnings {
        warn!("{w}");
    }
    let cfg = Arc::new(loaded.config);
    process::log_values("DistributedConfig", cfg.worker.file.masked());
    let cluster_id = Step::Init.check(crate::worker::kafka::cluster_id(&cfg.worker).await)?;
    info!("Kafka cluster ID: {cluster_id}");
    let base = Step::Init.check(kafka::admin_settings(&cfg.worker))?.config;
    for spec in [&cfg.config_topic, &cfg.offset_topic, &cfg.status_topic] {
        Step::Init.check(ensure_compacted_topic(&base, spec).await)?;
    }
    let listeners = Step::Init.check(crate::rest::bind(&cfg.worker).await)?;
    info!(
        "Kafka Connect distributed worker initialization took {}ms",
        t0.elapsed().as_millis()
    );
    info!("Kafka Connect starting");
    let stop = CancellationToken::new();
    let (sources, sinks): (Vec<ConnectorConfig>, Vec<ConnectorConfig>) = loaded
        .connectors
        .into_iter()
        .partition(|c| c.kind == ConnectorKind::Source);
    let mut views = Vec::new();
    let mut groups = Vec::new();
    let mut refused = Vec::new();
    for c in sources {
        match prepare(&cfg, &base, c, replace).await {
            Ok(Prepared::Run(job)) => {
                let owned = Arc::new(Owned::default());
                views.push(SourceView {
                    name: job.connector.name.clone(),
                    config: job.connector.file.masked(),
                    partitions: job.partitions.len(),
                    owned: owned.clone(),
                });
                groups.push(tokio::spawn(group::run(
                    job,
                    base.clone(),
                    owned,
                    stop.clone(),
                )));
            }
            Ok(Prepared::Refused(view, why)) => {
                refused.push(format!("{}: {why}", view.name));
                // Its status (the group's) stays readable here.
                views.push(view);
            }
            Err(e) => {
                stop.cancel();
                return Err(Step::Connector.fail(e));
            }
        }
    }
    let sink_runtime = if sinks.is_empty() {
        None
    } else {
        let l = Loaded {
            worker: cfg.worker.clone(),
            connectors: sinks,
            warnings: Vec::new(),
        };
        let store = Arc::new(Step::Init.check(
            crate::offsets::kafka::KafkaOffsetBackingStore::new(
                &base,
                &cfg.offset_topic.name,
                cfg.worker.kafka_check_timeout,
            ),
        )?);
        let plugins = crate::plugins();
        let started = crate::worker::runtime::Worker::start(l, cluster_id.clone(), &plugins, store);
        Some(Step::Connector.check(started.await)?)
    };
    let api = Arc::new(Api {
        worker_id: cfg.worker.worker_id.clone(),
        cluster_id,
        consumer_base: base.clone(),
        status_topic: cfg.status_topic.name.clone(),
        sources: views,
        sinks: sink_runtime.clone(),
        not_ready: Mutex::new(if refused.is_empty() {
            None
        } else {
            Some(format!("configuration refused: {}", refused.join("; ")))
        }),
    });
    for l in listeners {
        if let Ok(addr) = l.local_addr() {
            info!(
                "REST server listening at http://{addr}/, advertising URL http://{}/",
                cfg.worker.worker_id
            );
        }
        let app = super::rest::router(api.clone());
        tokio::spawn(async move {
            let _ = axum::serve(l, app).await;
        });
    }
    let status = api.clone();
    process::run_until_signal(move || status.summary()).await;
    stop.cancel();
    for g in groups {
        match g.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!("leaving the group: {e:#}"),
            Err(e) => warn!("group task: {e}"),
        }
    }
    let mut code = ExitCode::SUCCESS;
    if let Some(w) = sink_runtime {
        if let Err(e) = w.stop().await {
            warn!("stopping the sink connectors: {}", e.join("; "));
            code = ExitCode::from(process::EXIT_STOP_FAILED);
        }
    }
    info!("Kafka Connect stopped");
    Ok(code)
}

enum Prepared {
    Run(Arc<SourceJob>),
    Refused(SourceView, String),
}

/// Everything a source connector needs before it joins its group.
async fn prepare(
    cfg: &Arc<DistributedConfig>,
    base: &ClientConfig,
    c: ConnectorConfig,
    replace: bool,
) -> anyhow::Result<Prepared> {
    let c = Arc::new(c);
    info!("Creating connector {} of type {}", c.name, c.class);
    let source = c.source.clone().context("no source settings")?;
    let records = crate::source::record::RecordBuilder::new(&cfg.worker, &c)
        .with_context(|| format!("connector {}", c.name))?;
    let producer_base = kafka::producer_settings(&cfg.worker, &c, 0)?.config;
    let partitions = crate::source::discover_partitions(&c.name, &source).await?;

    // The configuration must be the group's.
    let producer = configs::worker_producer(base)?;
    let timeout = cfg.worker.kafka_check_timeout;
    let published = {
        let (b, t, n) = (base.clone(), cfg.config_topic.name.clone(), c.name.clone());
        tokio::task::spawn_blocking(move || configs::published(&b, &t, &n, timeout)).await??
    };
    match published
        .as_deref()
        .and_then(|p| configs::difference(&c, p))
    {
        Some(why) if !replace => {
            error!(
                "Connector {}: the configuration in {} differs from the one in {} for group {} ({why}); \
                 this worker refuses to take work for it. Use the same connector file on every worker \
                 (or start one worker with --replace-config to publish this one)",
                c.name,
                c.file.display_name(),
                cfg.config_topic.name,
                cfg.group_id
            );
            let view = SourceView {
                name: c.name.clone(),
                config: c.file.masked(),
                partitions: partitions.len(),
                owned: Arc::new(Owned::default()),
            };
            return Ok(Prepared::Refused(view, why));
        }
        None if published.is_some() && !replace => {
            info!(
                "Connector {}: configuration agrees with {}",
                c.name, cfg.config_topic.name
            )
        }
        _ => {
            configs::publish(&producer, &cfg.config_topic.name, &c).await?;
            info!(
                "Connector {}: configuration published to {}",
                c.name, cfg.config_topic.name
            );
        }
    }

    // The coordination topic: one Kafka partition per hub partition.
    let coord = TopicSpec {
        name: group::coordination_topic(&cfg.group_id, &c.name),
        partitions: partitions.len() as i32,
        replication_factor: cfg.offset_topic.replication_factor,
    };
    ensure_compacted_topic(base, &coord).await?;
    check_partition_count(base, &coord.name, partitions.len())?;

    import_standalone_offsets(cfg, base, &producer, &c).await?;
    let status = status::StatusWriter::new(base, &cfg.status_topic.name, &cfg.worker.worker_id)?;
    status
        .put(&status::connector_key(&c.name), "RUNNING", None, 0)
        .await;
    info!("Created connector {}", c.name);
    Ok(Prepared::Run(Arc::new(SourceJob {
        cfg: cfg.clone(),
        connector: c.clone(),
        source,
        records: Arc::new(records),
        producer_base,
        consumer_base: base.clone(),
        status,
        partitions,
    })))
}

fn check_partition_count(base: &ClientConfig, topic: &str, want: usize) -> anyhow::Result<()> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = base.create()?;
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(30))?;
    let have = md.topics().first().map_or(0, |t| t.partitions().len());
    anyhow::ensure!(
        have == want,
        "the coordination topic {topic} has {have} partitions but the hub has {want}: \
         delete the topic (with every worker stopped) so it is created again"
    );
    Ok(())
}

/// The standalone → distributed upgrade: when the offsets topic holds nothing for this connector and
/// `offset.storage.file.filename` names a file, its entries of this connector are copied as they are.
async fn import_standalone_offsets(
    cfg: &Arc<DistributedConfig>,
    base: &ClientConfig,
    producer: &rdkafka::producer::FutureProducer,
    c: &ConnectorConfig,
) -> anyhow::Result<()> {
    let Some(file) = cfg.import_file.clone() else {
        return Ok(());
    };
    let (b, t, timeout) = (
        base.clone(),
        cfg.offset_topic.name.clone(),
        cfg.worker.kafka_check_timeout,
    );
    let topic_store = tokio::task::spawn_blocking(move || load_store(&b, &t, timeout)).await??;
    if has_connector(&topic_store, &c.name) {
        return Ok(());
    }
    if !file.exists() {
        info!("No standalone offsets file {} to import", file.display());
        return Ok(());
    }
    let store = OffsetStore::load(&file)?;
    let mut n = 0;
    for (k, v) in store.entries() {
        let Some(v) = v else { continue };
        let ours = serde_json::from_slice::<serde_json::Value>(k)
            .ok()
            .and_then(|j| j.get(0).and_then(|x| x.as_str()).map(|s| s == c.name))
            .unwrap_or(false);
        if !ours {
            continue;
        }
        producer
            .send(
                FutureRecord::to(&cfg.offset_topic.name).key(k).payload(v),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| anyhow::Error::new(e).context("writing imported offsets"))?;
        n += 1;
    }
    info!(
        "Imported {n} offsets of connector {} from the standalone file {} into {}",
        c.name,
        file.display(),
        cfg.offset_topic.name
    );
    Ok(())
}
