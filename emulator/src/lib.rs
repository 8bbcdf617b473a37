//! A loopback Azure IoT Hub: the `iotconnect-emulator` binary and this library (tests run it
//! in-process). It shares no code with iotconnect: it checks tokens with its own [`sas`] module.
//!
//! # What it emulates
//! * **The built-in Event Hub-compatible endpoint** (AMQP 1.0): CBS `$cbs` put-token with Event
//!   Hubs SAS tokens (HMAC-SHA256 keyed with the key *string's* bytes; the token's audience must cover
//!   the entity; expiry checked; answers 202, or 401 and later link attaches are refused),
//!   `$management` READ of `com.microsoft:eventhub` and `com.microsoft:partition` (every key that
//!   Microsoft's Rust and Python Event Hubs clients read), partition receivers
//!   `<hub>/ConsumerGroups/<group>/Partitions/<n>` with selector filters on `x-opt-offset`,
//!   `x-opt-sequence-number` and `x-opt-enqueued-time` (`>`/`>=`, spaces optional, `'-1'`,
//!   `'@latest'`), owner-level receivers (`com.microsoft:epoch`: an equal or higher epoch takes the
//!   partition and the older links are detached with `amqp:link:stolen`; a lower epoch or a non-epoch
//!   receiver next to an epoch receiver is refused with `amqp:link:stolen`), and events carrying the
//!   annotations IoT Hub adds (`iothub-connection-device-id`, `iothub-connection-auth-method`,
//!   `iothub-connection-auth-generation-id`, `iothub-enqueuedtime`, `iothub-message-source`,
//!   `x-opt-sequence-number`, `x-opt-offset`, `x-opt-enqueued-time`), the device's message-id,
//!   correlation-id, content-type and content-encoding, its application properties and the body as one
//!   data section, byte for byte.
//! * **Event Hubs producers** (same listener, see `producer.rs`): links to `<hub>` (partition by
//!   `x-opt-partition-key`, else round robin) and `<hub>/Partitions/<n>`, single events and batches
//!   (format `0x80013700`), stored as plain Event Hub events (no `iothub-*` annotations).
//! * **AMQP over WebSockets** (`--ws-listen`, see `ws.rs`): the same endpoints behind an HTTP upgrade
//!   on `/$servicebus/websocket`, subprotocol `AMQPWSB10` or `amqp`, `wss` with the TLS files.
//! * **The service endpoint for cloud-to-device messages** (AMQP 1.0, same listener): CBS put-token
//!   with the IoT Hub service SAS (`sr` = hub host name, HMAC keyed with the base64-*decoded* key),
//!   answering 200, or SASL PLAIN `service@sas.root.<hub>` with the token as password; a receiver on
//!   `/messages/devicebound` and a feedback sender on `/messages/servicebound/feedback` (content type
//!   `application/vnd.microsoft.iothub.feedback.json`, a JSON array of records) honouring
//!   `iothub-ack` (`none`, `positive`, `negative`, `full`, and the Java spellings `positiveonly`,
//!   `negativeonly`).
//! * **The device HTTP API** on IoT Hub's paths (`POST /devices/{id}/messages/events`,
//!   `GET /devices/{id}/messages/deviceBound`, `DELETE …/{etag}` to complete, `DELETE …/{etag}?reject`,
//!   `POST …/{etag}/abandon`), plus control endpoints `POST /emulator/generate`, `GET /emulator/stats`,
//!   `GET /emulator/c2d` (a service token when auth is on), `POST /emulator/faults`.
//!
//! # Fault injection
//! `POST /emulator/faults` (or [`Faults`]): drop connections, refuse tokens, server busy, throttle
//! C2D, freeze a partition (deliveries held while the links stay attached, no error: scope `links`
//! holds the links attached at request time, `partition` every link incl. new ones) and delay each
//! delivery of a partition. A partition sender asks [`hub::Hub::hold`] before every delivery, so a
//! freeze never loses or repeats an event: the held event is the next one delivered. Durations are
//! checked (finite, >= 0, at most 7 days) before anything is applied; a bad request is a 400.
//!
//! # Devices → partitions, offsets, retention
//! A device's partition is the 32-bit FNV-1a hash of its id's UTF-8 bytes modulo the partition count.
//! Offsets are byte-position-like strings (running total of body sizes + 64 per event); sequence
//! numbers start at 0 per partition. Only the last `retention_events` events per partition are kept
//! (default 500,000); sequence numbers and offsets keep growing. Memory: about 100 bytes per event plus
//! its body; events made by `generate` share one payload pool (each is a distinct window into it), so
//! 1,000,000 generated 1 KB events take roughly 150 MB.
//!
//! # Error conditions and where they come from
//! C2D refusals are rejected dispositions with these AMQP conditions, as Microsoft's Node service SDK
//! maps them (`azure-iot-amqp-base` `translateError`, `azure-iothub` `translateError`, in
//! Azure/azure-iot-sdk-node): DeviceNotFound (404001) → `amqp:not-found`;
//! DeviceMaximumQueueDepthExceeded (403004, more than 50 queued) → `amqp:resource-limit-exceeded`;
//! throttled (429) → `com.microsoft:device-container-throttled`; body over 64 KB →
//! `amqp:link:message-size-exceeded`; a bad `to` → `com.microsoft:argument-error`. Descriptions follow
//! IoT Hub's `ErrorCode:<Name>;<text>` form (the queue depth text is the C# SDK's
//! `DeviceMaximumQueueDepthExceededException` message). Event Hubs side: `amqp:unauthorized-access`
//! (no valid token for the link), `amqp:not-found` (unknown hub or consumer group, Azure's
//! "messaging entity … could not be found"), `com.microsoft:argument-out-of-range` (bad partition),
//! `amqp:link:stolen` (epochs), `com.microsoft:server-busy` (fault injection),
//! `amqp:connection:forced` (fault injection: drop connections).
//!
//! # Throughput
//! `tests/emulator_throughput.rs` (release, `--ignored`) drains 4 partitions of 1 KB events with a
//! bare `azure_messaging_eventhubs` reader in the same process. Measured on the shared 2-core box
//! (load average ~8.5 from other builds, the test got 66% of one core): 22,600–29,600 events/s, at
//! about 23 µs of CPU per event for reader and emulator together. 1,000,000 generated 1 KB events
//! took 134 MB RSS.
//!
//! # Limits
//! 50 queued C2D messages per device, 64 KB per C2D message, 1 minute lock, 10 deliveries; no
//! device twins, direct methods, MQTT, device-side AMQP, or `amqp:link:redirect`; one shared access
//! policy (`service`), whose key also signs device HTTP requests (there are no per-device keys).
//!
//! # How clients connect
//! * `eventHubCompatibleEndpoint` is `sb://127.0.0.1:PORT/` (the AMQP listener).
//! * **Rust** `azure_messaging_eventhubs`: `ConsumerClient::builder().with_custom_endpoint(amqpEndpoint)
//!   .open_with_connection_string(eventHubConnectionString, None)` (the SDK drops the port of the
//!   `sb://` host, so the custom endpoint is required).
//! * **Python** `azure-eventhub`: `eventHubConnectionString + ";UseDevelopmentEmulator=true"`, which
//!   turns TLS off and honours `host:port`.
//! * **IoT Hub service clients**: `serviceConnectionString` has `HostName=127.0.0.1:PORT`; the service
//!   SAS audience may be that host name or `<hub>.azure-devices.net`. With `--tls-cert/--tls-key` the
//!   listener speaks amqps as Azure does (TLS first, no AMQP TLS header).
//! * **Python `azure-iot-hub`** (uamqp) works against the TLS listener, with two constraints of that
//!   client: it always dials port 5671 (it drops the port of `HostName`), so run
//!   `--amqp-listen 127.0.0.1:5671 --tls-cert … --tls-key …`; and it trusts only `certifi`'s bundle,
//!   so the test CA must be added there (see `tests/python/test_emulator_iothub_c2d.py`).
//!
//! # Wire details that clients depend on
//! * Open, Begin and Attach carry `properties` (and a non-default channel-max / handle-max), so
//!   every field of those performatives is on the wire: fe2o3 omits trailing null fields (valid AMQP)
//!   but Microsoft's Python client indexes them unconditionally.
//! * The listener advertises an MSS of 16 KB: on loopback the Python client otherwise re-sets an MSS
//!   over 32767 with `setsockopt`, which Linux refuses.
//! * SASL offers MSSBCBS (uamqp's mechanism; authorisation follows on `$cbs`), PLAIN and ANONYMOUS.
//! * Links settle in `first` mode only (as Azure): uamqp asks for `second` and then waits for a
//!   settled disposition.
//! * Events are sent pre-settled when the receiver's sender-settle-mode allows it (the Rust and
//!   Python Event Hubs clients ask for `mixed`), so readers send no dispositions; delivery is bounded
//!   by link credit only.

mod amqp;
pub mod auth;
pub mod c2d;
mod cli;
mod http;
pub mod hub;
mod producer;
pub mod sas;
mod secret;
pub mod store;
mod tutorial;
mod ws;

pub use c2d::{Ack, C2dMessage, C2dState, FeedbackRecord, FeedbackStatus};
pub use cli::{run_cli, EmulatorArgs};
pub use hub::{FreezeScope, Stats};
pub use store::{partition_for, PartitionInfo, PropValue, TelemetryProps};

use anyhow::Context;
use base64::Engine;
use bytes::Bytes;
use hub::{Hub, HubConfig};
pub use secret::Secret;
use serde::{Serialize, Serializer};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Default number of events kept per partition.
pub const DEFAULT_RETENTION_EVENTS: usize = 500_000;

/// Options of [`Emulator::start`].
#[derive(Clone, Debug)]
pub struct EmulatorOptions {
    pub hub_name: String,
    pub partitions: u32,
    /// Consumer groups besides `$Default` (always present).
    pub consumer_groups: Vec<String>,
    pub amqp_listen: SocketAddr,
    pub http_listen: SocketAddr,
    /// AMQP over WebSockets (`/$servicebus/websocket`, `AMQPWSB10`; wss with the TLS files).
    pub ws_listen: Option<SocketAddr>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// The `service` policy key (base64).
    pub service_key: Secret,
    pub retention_events: usize,
    /// Hub-wide C2D messages per second (None: unlimited).
    pub c2d_rate_limit: Option<u32>,
    /// Registered devices; `None` accepts every device id.
    pub devices: Option<Vec<String>>,
    /// Skip every token / Authorization check.
    pub no_auth: bool,
}

impl Default for EmulatorOptions {
    fn default() -> Self {
        let mut key = [0u8; 32];
        rand::fill(&mut key);
        EmulatorOptions {
            hub_name: "myhub".into(),
            partitions: 4,
            consumer_groups: Vec::new(),
            amqp_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ws_listen: None,
            tls_cert: None,
            tls_key: None,
            service_key: Secret::new(base64::engine::general_purpose::STANDARD.encode(key)),
            retention_events: DEFAULT_RETENTION_EVENTS,
            c2d_rate_limit: None,
            devices: None,
            no_auth: false,
        }
    }
}

fn expose<S: Serializer>(s: &Secret, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(s.expose())
}

/// Everything a client needs, printed as one JSON line by the CLI. `Debug` hides the secrets.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionInfo {
    pub hub_name: String,
    pub event_hub_compatible_name: String,
    /// `sb://127.0.0.1:PORT/`
    pub event_hub_compatible_endpoint: String,
    #[serde(serialize_with = "expose")]
    pub event_hub_connection_string: Secret,
    pub access_key_name: String,
    #[serde(serialize_with = "expose")]
    pub access_key_value: Secret,
    pub partitions: u32,
    #[serde(serialize_with = "expose")]
    pub service_connection_string: Secret,
    /// The IoT Hub host name used in `serviceConnectionString` (`127.0.0.1:PORT`).
    pub iot_hub_host_name: String,
    /// `amqp://127.0.0.1:PORT` or `amqps://…`
    pub amqp_endpoint: String,
    /// `http://127.0.0.1:PORT`
    pub http_endpoint: String,
    /// `wss://127.0.0.1:PORT/$servicebus/websocket` (or `ws://`), with `--ws-listen` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ws_endpoint: Option<String>,
    /// `127.0.0.1:PORT` of the WebSocket listener: what a WebSocket client's custom endpoint needs
    /// (Microsoft's Rust SDK keeps only host and port of it), with `--ws-listen` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ws_host_port: Option<String>,
    /// `eventHubConnectionString` + `;UseDevelopmentEmulator=true`: Python azure-eventhub producer
    /// and consumer clients take it as it is (plain AMQP, host:port honoured).
    #[serde(serialize_with = "expose")]
    pub producer_connection_string: Secret,
    /// An IoT Hub SAS token (`sr` = the hub host, so any device; 7 days) for the `Authorization`
    /// header of the device HTTP API.
    #[serde(serialize_with = "expose")]
    pub device_sas_token: Secret,
}

/// Where an injected event landed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SentEvent {
    pub partition: u32,
    pub offset: String,
    pub sequence_number: i64,
}

/// A running emulator. Stop it with [`Emulator::shutdown`] (dropping it stops it as well).
pub struct Emulator {
    hub: Arc<Hub>,
    info: ConnectionInfo,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    pool: Bytes,
}

/// Fault injection handle.
#[derive(Clone)]
pub struct Faults {
    hub: Arc<Hub>,
}

/// Fault durations are at most [`hub::MAX_FAULT_DURATION`]: the first three clamp longer ones, the
/// partition faults refuse them (and an unknown partition) with the reason.
impl Faults {
    /// Closes every AMQP connection now (`amqp:connection:forced`).
    pub fn drop_connections(&self) {
        self.hub.drop_connections.send_modify(|n| *n += 1);
    }
    /// Answers every put-token with 401 for `d`.
    pub fn refuse_tokens(&self, d: Duration) {
        let _ = self.hub.refuse_tokens_for(d.min(hub::MAX_FAULT_DURATION));
    }
    /// Refuses partition attaches (`com.microsoft:server-busy`) and `$management` (503) for `d`.
    pub fn server_busy(&self, d: Duration) {
        let _ = self.hub.server_busy_for(d.min(hub::MAX_FAULT_DURATION));
    }
    /// Rejects every C2D message as throttled for `d`.
    pub fn throttle_c2d(&self, d: Duration) {
        let _ = self.hub.c2d.throttle_for(d.min(hub::MAX_FAULT_DURATION));
    }
    /// Stops deliveries on `partition` for `d` while its links stay attached (no error, no
    /// detach); events are still accepted and `$management` reports them.
    pub fn freeze_partition(
        &self,
        partition: u32,
        d: Duration,
        scope: FreezeScope,
    ) -> Result<(), String> {
        self.hub.freeze_partition(partition, d, scope)
    }
    /// Delays every delivery on `partition` by `delay`, for `d`.
    pub fn delay_partition(
        &self,
        partition: u32,
        delay: Duration,
        d: Duration,
    ) -> Result<(), String> {
        self.hub.delay_partition(partition, delay, d)
    }
}

fn load_tls(cert: &PathBuf, key: &PathBuf) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(cert)
            .with_context(|| format!("cannot open TLS certificate {}", cert.display()))?,
    ))
    .collect::<Result<Vec<_>, _>>()
    .with_context(|| format!("cannot read TLS certificate {}", cert.display()))?;
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(
        std::fs::File::open(key)
            .with_context(|| format!("cannot open TLS key {}", key.display()))?,
    ))
    .with_context(|| format!("cannot read TLS key {}", key.display()))?
    .with_context(|| format!("no private key in {}", key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS protocol versions")?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .context("invalid TLS certificate/key pair")?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Fills `n` events of `size` bytes from `devices` devices (`device-0`…), round robin, as fast as
/// possible. Bodies are distinct windows into the shared `pool`.
fn generate_into(hub: &Hub, pool: &Bytes, n: u64, size: usize, devices: u32) -> u64 {
    let devices = devices.max(1);
    let ids: Vec<Arc<str>> = (0..devices)
        .map(|d| Arc::<str>::from(format!("device-{d}")))
        .collect();
    let parts: Vec<u32> = ids.iter().map(|d| hub.partition_of(d)).collect();
    let size = size.min(pool.len() / 2);
    let span = pool.len() - size;
    let mut batches: Vec<Vec<_>> = vec![Vec::new(); hub.partitions.len()];
    let flush = |batches: &mut Vec<Vec<_>>| {
        for (p, b) in batches.iter_mut().enumerate() {
            if !b.is_empty() {
                hub.partitions[p].append(std::mem::take(b));
            }
        }
    };
    for i in 0..n {
        let d = (i % u64::from(devices)) as usize;
        let start = ((i.wrapping_mul(7919)) % span.max(1) as u64) as usize;
        let body = pool.slice(start..start + size);
        batches[parts[d] as usize].push((Some(ids[d].clone()), None, body));
        if i % 4096 == 4095 {
            flush(&mut batches);
        }
    }
    flush(&mut batches);
    n
}

impl Emulator {
    /// Binds the listeners and starts serving.
    pub async fn start(opts: EmulatorOptions) -> anyhow::Result<Emulator> {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        anyhow::ensure!(opts.partitions >= 1, "partitions must be at least 1");
        anyhow::ensure!(!opts.hub_name.is_empty(), "hub name must not be empty");
        base64::engine::general_purpose::STANDARD
            .decode(opts.service_key.expose().trim())
            .map_err(|_| anyhow::anyhow!("the service key must be base64"))?;
        let tls = match (&opts.tls_cert, &opts.tls_key) {
            (Some(c), Some(k)) => Some(load_tls(c, k)?),
            (None, None) => None,
            _ => anyhow::bail!("--tls-cert and --tls-key go together"),
        };
        let amqp = tokio::net::TcpListener::bind(opts.amqp_listen)
            .await
            .with_context(|| format!("cannot listen on {} (AMQP)", opts.amqp_listen))?;
        let http = tokio::net::TcpListener::bind(opts.http_listen)
            .await
            .with_context(|| format!("cannot listen on {} (HTTP)", opts.http_listen))?;
        amqp::limit_mss(&amqp);
        let ws = match opts.ws_listen {
            Some(a) => Some(
                tokio::net::TcpListener::bind(a)
                    .await
                    .with_context(|| format!("cannot listen on {a} (AMQP over WebSockets)"))?,
            ),
            None => None,
        };
        let amqp_addr = amqp.local_addr()?;
        let http_addr = http.local_addr()?;
        let ws_addr = ws.as_ref().map(|w| w.local_addr()).transpose()?;
        let host = amqp_addr.to_string();
        let mut groups = vec!["$Default".to_string()];
        for g in &opts.consumer_groups {
            let g = g.trim();
            if !g.is_empty() && !groups.iter().any(|x| x.eq_ignore_ascii_case(g)) {
                groups.push(g.to_string());
            }
        }
        let key_name = "service".to_string();
        let hub = Arc::new(Hub::new(HubConfig {
            hub_name: opts.hub_name.clone(),
            eh_host: host.clone(),
            iothub_host: host.clone(),
            consumer_groups: groups,
            partitions: opts.partitions,
            retention: opts.retention_events.max(1),
            verifier: auth::Verifier {
                key_name: key_name.clone(),
                key: opts.service_key.clone(),
                iothub_hosts: vec![
                    host.to_ascii_lowercase(),
                    format!("{}.azure-devices.net", opts.hub_name.to_ascii_lowercase()),
                ],
            },
            no_auth: opts.no_auth,
            devices: opts.devices.clone(),
            c2d_rate_limit: opts.c2d_rate_limit,
        }));
        let key = opts.service_key.expose();
        let scheme = if tls.is_some() { "amqps" } else { "amqp" };
        let ws_scheme = if tls.is_some() { "wss" } else { "ws" };
        let event_hub_connection_string = format!(
            "Endpoint=sb://{host}/;SharedAccessKeyName={key_name};SharedAccessKey={key};EntityPath={}",
            opts.hub_name
        );
        let info = ConnectionInfo {
            hub_name: opts.hub_name.clone(),
            event_hub_compatible_name: opts.hub_name.clone(),
            event_hub_compatible_endpoint: format!("sb://{host}/"),
            producer_connection_string: Secret::new(format!(
                "{event_hub_connection_string};UseDevelopmentEmulator=true"
            )),
            event_hub_connection_string: Secret::new(event_hub_connection_string),
            access_key_name: key_name.clone(),
            access_key_value: opts.service_key.clone(),
            partitions: opts.partitions,
            service_connection_string: Secret::new(format!(
                "HostName={host};SharedAccessKeyName={key_name};SharedAccessKey={key}"
            )),
            iot_hub_host_name: host.clone(),
            amqp_endpoint: format!("{scheme}://{amqp_addr}"),
            http_endpoint: format!("http://{http_addr}"),
            ws_endpoint: ws_addr.map(|a| format!("{ws_scheme}://{a}{}", ws::WS_PATH)),
            ws_host_port: ws_addr.map(|a| a.to_string()),
            device_sas_token: Secret::new(
                hub.verifier
                    .device_token(&host, Duration::from_secs(7 * 24 * 3600)),
            ),
        };
        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        if let Some(ws) = ws {
            tasks.push(tokio::spawn(ws::serve(
                ws,
                tls.clone(),
                hub.clone(),
                shutdown_rx.clone(),
            )));
        }
        tasks.push(tokio::spawn(amqp::serve(
            amqp,
            tls,
            hub.clone(),
            shutdown_rx.clone(),
        )));
        // Payload pool for `generate`: printable bytes, distinct windows per event.
        let pool = {
            let mut v = vec![0u8; (1 << 20) + 64 * 1024];
            rand::fill(&mut v[..]);
            const ALPHABET: &[u8] =
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            for b in v.iter_mut() {
                *b = ALPHABET[(*b & 63) as usize];
            }
            Bytes::from(v)
        };
        let gen_hub = hub.clone();
        let gen_pool = pool.clone();
        let state = http::HttpState {
            hub: hub.clone(),
            generate: Arc::new(move |n, size, devices| {
                generate_into(&gen_hub, &gen_pool, n, size, devices)
            }),
        };
        let app = http::router(state);
        let mut http_shutdown = shutdown_rx.clone();
        tasks.push(tokio::spawn(async move {
            let r = axum::serve(http, app)
                .with_graceful_shutdown(async move {
                    let _ = http_shutdown.wait_for(|s| *s).await;
                })
                .await;
            if let Err(e) = r {
                tracing::error!(error = %e, "HTTP server failed");
            }
        }));
        let exp_hub = hub.clone();
        let mut exp_shutdown = shutdown_rx;
        tasks.push(tokio::spawn(async move {
            loop {
                let changed = exp_hub.c2d.expiry_changed.notified();
                let next = exp_hub.c2d.expire_due();
                let wait = next.map(|ms| {
                    Duration::from_millis((ms - store::now_ms()).max(1) as u64)
                });
                tokio::select! {
                    _ = changed => {}
                    _ = async { match wait { Some(w) => tokio::time::sleep(w).await, None => std::future::pending().await } } => {}
                    _ = exp_shutdown.wait_for(|s| *s) => return,
                }
            }
        }));
        tracing::info!(amqp = %info.amqp_endpoint, http = %info.http_endpoint, hub = %info.hub_name, partitions = info.partitions, "IoT Hub emulator listening");
        Ok(Emulator {
            hub,
            info,
            shutdown,
            tasks,
            pool,
        })
    }

    pub fn info(&self) -> &ConnectionInfo {
        &self.info
    }

    /// Enqueues device telemetry (with the `iothub-*` annotations) on the device's partition.
    pub fn send_telemetry(
        &self,
        device_id: &str,
        body: impl Into<Bytes>,
        props: Option<TelemetryProps>,
    ) -> SentEvent {
        let (partition, offset, sequence_number) =
            self.hub.send_telemetry(device_id, props, body.into());
        SentEvent {
            partition,
            offset,
            sequence_number,
        }
    }

    /// Enqueues a plain Event Hub event (no `iothub-*` annotations) on `partition`.
    pub fn send_event(
        &self,
        partition: u32,
        body: impl Into<Bytes>,
        props: Option<TelemetryProps>,
    ) -> anyhow::Result<SentEvent> {
        let p = self
            .hub
            .partitions
            .get(partition as usize)
            .with_context(|| format!("no partition {partition}"))?;
        let (seq, off) = p.append([(None, props.map(Box::new), body.into())])[0];
        Ok(SentEvent {
            partition,
            offset: off.to_string(),
            sequence_number: seq,
        })
    }

    /// Fills the partitions with `n` events of `size` bytes from `devices` devices (`device-0`…).
    pub fn generate(&self, n: u64, size: usize, devices: u32) -> u64 {
        generate_into(&self.hub, &self.pool, n, size, devices)
    }

    /// Every C2D message received so far, with its properties and state.
    pub fn c2d_messages(&self) -> Vec<C2dMessage> {
        self.hub.c2d.messages()
    }

    pub fn stats(&self) -> Stats {
        self.hub.stats()
    }

    pub fn faults(&self) -> Faults {
        Faults {
            hub: self.hub.clone(),
        }
    }

    /// The partition a device's telemetry goes to.
    pub fn partition_of(&self, device_id: &str) -> u32 {
        self.hub.partition_of(device_id)
    }

    /// Device HTTP API: receive (lock) the next C2D message for a device, as a device would.
    pub fn device_receive(&self, device_id: &str) -> Option<C2dMessage> {
        self.hub.c2d.receive(device_id)
    }

    /// Device side: complete (`reject = false`) or reject a locked message by its lock token.
    pub fn device_settle(&self, device_id: &str, etag: &str, reject: bool) -> bool {
        self.hub.c2d.settle(device_id, etag, reject)
    }

    /// Waits until at least `n` partition receivers have been accepted since start (counting every
    /// attach ever accepted). False on timeout.
    pub async fn wait_receivers_attached(&self, n: u64, timeout: Duration) -> bool {
        let mut rx = self.hub.receivers_attached.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|c| *c >= n))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Stops the listeners and closes every connection.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        for t in &self.tasks {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_info_debug_hides_secrets() {
        let info = ConnectionInfo {
            hub_name: "h".into(),
            event_hub_compatible_name: "h".into(),
            event_hub_compatible_endpoint: "sb://127.0.0.1:1/".into(),
            event_hub_connection_string: Secret::new("Endpoint=x;SharedAccessKey=SECRETKEY"),
            access_key_name: "service".into(),
            access_key_value: Secret::new("SECRETKEY"),
            partitions: 1,
            service_connection_string: Secret::new("HostName=x;SharedAccessKey=SECRETKEY"),
            iot_hub_host_name: "127.0.0.1:1".into(),
            amqp_endpoint: "amqp://127.0.0.1:1".into(),
            http_endpoint: "http://127.0.0.1:2".into(),
            ws_endpoint: None,
            ws_host_port: None,
            producer_connection_string: Secret::new("Endpoint=x;SharedAccessKey=SECRETKEY"),
            device_sas_token: Secret::new("SharedAccessSignature sig=SECRETKEY"),
        };
        assert!(!format!("{info:?}").contains("SECRETKEY"));
        let json = serde_json::to_value(&info).unwrap();
        assert_eq!(json["accessKeyValue"], "SECRETKEY");
        assert!(json["eventHubConnectionString"]
            .as_str()
            .unwrap()
            .ends_with("SECRETKEY"));
        assert_eq!(json["eventHubCompatibleEndpoint"], "sb://127.0.0.1:1/");
        assert!(json.get("wsEndpoint").is_none());
    }

    #[tokio::test]
    async fn generate_fills_partitions() {
        let emu = Emulator::start(EmulatorOptions::default()).await.unwrap();
        assert_eq!(emu.generate(10_000, 1024, 8), 10_000);
        let s = emu.stats();
        assert_eq!(s.events_enqueued, 10_000);
        assert_eq!(s.partitions.len(), 4);
        let sent = emu.send_telemetry("dev-x", &b"hello"[..], None);
        assert_eq!(sent.partition, emu.partition_of("dev-x"));
        emu.shutdown().await;
    }
}
