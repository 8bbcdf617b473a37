//! The AMQP 1.0 listener: Event Hub-compatible endpoint (`$cbs`, `$management`, partition
//! receivers) and IoT Hub service endpoint (`/messages/devicebound`, feedback), on fe2o3-amqp's
//! acceptor.

use super::auth::{EmulatorSasl, SharedConnAuth};
use super::c2d::{C2dRefusal, IncomingC2d};
use super::hub::{Eviction, Hold, Hub};
use super::producer::{producer_loop, producer_target, MAX_PRODUCER_MESSAGE};
use super::store::{parse_selector, Event, PropValue, StartFilter};
use fe2o3_amqp::acceptor::SupportedReceiverSettleModes;
use fe2o3_amqp::acceptor::{
    ConnectionAcceptor, LinkAcceptor, LinkEndpoint, ListenerConnectionHandle,
    ListenerSessionHandle, SessionAcceptor,
};
use fe2o3_amqp::link::{Receiver, Sender};
use fe2o3_amqp::types::definitions::{
    self, ErrorCondition, ReceiverSettleMode, Role, SenderSettleMode,
};
use fe2o3_amqp::types::messaging::{
    AmqpValue, ApplicationProperties, Body, Data, Message, MessageAnnotations, MessageId, Outcome,
    Properties,
};
use fe2o3_amqp::types::primitives::{Binary, OrderedMap, SimpleValue, Symbol, Timestamp, Value};
use fe2o3_amqp::Sendable;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Notify};

/// Events read from a partition log per lock (the sender then waits for credit per event).
const READ_BATCH: usize = 256;

/// How long a request may wait for its reply link to attach.
const REPLY_LINK_WAIT: Duration = Duration::from_secs(10);

pub(crate) fn amqp_error(condition: &str, description: impl Into<String>) -> definitions::Error {
    definitions::Error::new(
        ErrorCondition::Custom(Symbol::from(condition)),
        Some(description.into()),
        None,
    )
}

/// Advertises an internet-sized MSS on the listener. On loopback the kernel otherwise reports an
/// MSS of 32768 or more, which Microsoft's Python AMQP client reads back and re-sets with
/// `setsockopt(TCP_MAXSEG)`, which Linux refuses (EINVAL above 32767), failing the connection.
pub(crate) fn limit_mss(listener: &TcpListener) {
    use std::os::fd::AsRawFd;
    let mss: libc::c_int = 16_384;
    // SAFETY: plain setsockopt on a socket we own, with a correctly sized int option.
    let rc = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MAXSEG,
            &mss as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "TCP_MAXSEG not set on the AMQP listener");
    }
}

/// Properties put on Open, Begin and Attach. Besides naming the peer, they make fe2o3 write every
/// field of those performatives: it omits trailing null fields (valid AMQP), but Microsoft's Python
/// client indexes the last field of each (`properties`) unconditionally, as Azure always sends them.
fn emulator_fields() -> definitions::Fields {
    let mut f = definitions::Fields::new();
    f.insert(
        Symbol::from("com.microsoft:emulator"),
        Value::String("iotconnect".into()),
    );
    f
}

/// Accepts connections until `shutdown` flips to true.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    hub: Arc<Hub>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => break,
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "AMQP accept failed");
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let hub = hub.clone();
                let tls = tls.clone();
                conns.spawn(async move {
                    tracing::debug!(%peer, "AMQP connection");
                    match tls {
                        Some(tls) => match tls.accept(tcp).await {
                            Ok(s) => handle_connection(s, hub).await,
                            Err(e) => tracing::info!(%peer, error = %e, "TLS handshake failed"),
                        },
                        None => handle_connection(tcp, hub).await,
                    }
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.abort_all();
}

pub(crate) async fn handle_connection<Io>(io: Io, hub: Arc<Hub>)
where
    Io: AsyncRead + AsyncWrite + std::fmt::Debug + Send + Unpin + 'static,
{
    let auth: SharedConnAuth = Default::default();
    let acceptor = ConnectionAcceptor::builder()
        .container_id(format!("iotconnect-emulator-{}", hub.hub_name))
        .max_frame_size(65_536u32)
        .channel_max(4_095u16)
        // Azure sends idle-time-out; the Python client indexes that Open field unconditionally, so it
        // must be on the wire (fe2o3 omits trailing null fields).
        .idle_time_out(240_000u32)
        .properties(emulator_fields())
        .sasl_acceptor(EmulatorSasl {
            verifier: hub.verifier.clone(),
            hub_name: hub.hub_name.clone(),
            auth: auth.clone(),
            open: hub.no_auth,
        })
        .build();
    let mut conn: ListenerConnectionHandle = match acceptor.accept(io).await {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(error = %e, "AMQP connection open failed");
            return;
        }
    };
    hub.counters
        .connections_opened
        .fetch_add(1, Ordering::Relaxed);
    hub.counters
        .connections_open
        .fetch_add(1, Ordering::Relaxed);
    let mut drop_rx = hub.drop_connections.subscribe();
    drop_rx.mark_unchanged();
    let mut sessions = tokio::task::JoinSet::new();
    let session_acceptor = SessionAcceptor::builder()
        .incoming_window(100_000u32)
        .outgoing_window(100_000u32)
        .handle_max(65_535u32)
        .properties(emulator_fields())
        .build();
    loop {
        tokio::select! {
            s = session_acceptor.accept(&mut conn) => match s {
                Ok(session) => {
                    sessions.spawn(handle_session(session, hub.clone(), auth.clone()));
                }
                Err(e) => {
                    tracing::debug!(error = %e, "AMQP connection ended");
                    break;
                }
            },
            _ = drop_rx.changed() => {
                tracing::info!("fault injection: dropping AMQP connection");
                sessions.abort_all();
                let err = amqp_error("amqp:connection:forced", "The connection was closed by the emulator (fault injection: dropConnections).");
                let _ = tokio::time::timeout(Duration::from_secs(2), conn.close_with_error(err)).await;
                break;
            }
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
    sessions.abort_all();
    let _ = tokio::time::timeout(Duration::from_secs(2), conn.close()).await;
    hub.counters
        .connections_open
        .fetch_sub(1, Ordering::Relaxed);
}

type ReplyQueue = mpsc::UnboundedSender<Message<AmqpValue<Value>>>;

/// Reply links of one session: node (`$cbs`/`$management`) → (target address, queue).
#[derive(Default)]
struct ReplyLinks {
    links: Mutex<Vec<(String, String, ReplyQueue)>>,
    added: Notify,
}

impl ReplyLinks {
    /// The reply queue for `reply_to` on `node`, waiting for the link to attach if needed.
    async fn find(
        &self,
        node: &str,
        reply_to: Option<&str>,
    ) -> Option<mpsc::UnboundedSender<Message<AmqpValue<Value>>>> {
        let deadline = tokio::time::Instant::now() + REPLY_LINK_WAIT;
        loop {
            let added = self.added.notified();
            {
                let links = self.links.lock().unwrap_or_else(|e| e.into_inner());
                let live = links
                    .iter()
                    .filter(|(n, _, tx)| n == node && !tx.is_closed());
                let mut fallback = None;
                for (_, target, tx) in live {
                    if Some(target.as_str()) == reply_to {
                        return Some(tx.clone());
                    }
                    fallback = Some(tx.clone());
                }
                if fallback.is_some() {
                    return fallback;
                }
            }
            if tokio::time::timeout_at(deadline, added).await.is_err() {
                return None;
            }
        }
    }
}

fn attach_source(a: &fe2o3_amqp::types::performatives::Attach) -> Option<String> {
    a.source.as_ref().and_then(|s| s.address.clone())
}

fn attach_target(a: &fe2o3_amqp::types::performatives::Attach) -> Option<String> {
    use fe2o3_amqp::types::messaging::TargetArchetype;
    match a.target.as_deref() {
        Some(TargetArchetype::Target(t)) => t.address.clone(),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// Strips `amqp[s]://host`/`sb://host` from an address, leaving the entity path.
fn entity_path(address: &str) -> &str {
    match address.split_once("://") {
        Some((_, rest)) => rest.split_once('/').map_or("", |(_, p)| p),
        None => address,
    }
    .trim_start_matches('/')
}

/// Parses `<hub>/ConsumerGroups/<group>/Partitions/<n>`.
fn partition_address(path: &str) -> Option<(&str, &str, &str)> {
    let parts: Vec<&str> = path.split('/').collect();
    match parts.as_slice() {
        [hub, cg, group, p, n]
            if cg.eq_ignore_ascii_case("consumergroups")
                && p.eq_ignore_ascii_case("partitions") =>
        {
            Some((hub, group, n))
        }
        _ => None,
    }
}

/// Accepts a link and at once detaches it with `error`: how Azure refuses an attach.
async fn refuse(
    links: &Links,
    attach: fe2o3_amqp::types::performatives::Attach,
    session: &mut ListenerSessionHandle,
    error: definitions::Error,
) {
    tracing::info!(link = %attach.name, error = ?error.description, condition = ?error.condition, "refusing link");
    match links.accept_incoming_attach(attach, session).await {
        Ok(LinkEndpoint::Sender(s)) => {
            tokio::spawn(async move {
                let _ =
                    tokio::time::timeout(Duration::from_secs(5), s.close_with_error(error)).await;
            });
        }
        Ok(LinkEndpoint::Receiver(r)) => {
            tokio::spawn(async move {
                let _ =
                    tokio::time::timeout(Duration::from_secs(5), r.close_with_error(error)).await;
            });
        }
        Err(e) => tracing::debug!(error = %e, "attach failed while refusing"),
    }
}

type Links = LinkAcceptor<
    fn(fe2o3_amqp::types::messaging::Source) -> Option<fe2o3_amqp::types::messaging::Source>,
    fn(fe2o3_amqp::types::messaging::Target) -> Option<fe2o3_amqp::types::messaging::Target>,
>;

/// Whether this connection may use the IoT Hub service nodes (C2D send, feedback) at `now`.
fn iothub_authorized(hub: &Hub, auth: &SharedConnAuth, now: u64) -> bool {
    hub.no_auth
        || auth
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iothub_allows(now)
}

fn unauthorized(path: &str) -> definitions::Error {
    amqp_error(
        "amqp:unauthorized-access",
        format!("Unauthorized access. 'Listen' claim(s) are required to perform this operation. Resource: '{path}'. No valid token was put on $cbs for it."),
    )
}

fn unauthorized_send(path: &str) -> definitions::Error {
    amqp_error(
        "amqp:unauthorized-access",
        format!("Unauthorized access. 'Send' claim(s) are required to perform this operation. Resource: '{path}'. No valid token was put on $cbs for it."),
    )
}

fn server_busy() -> definitions::Error {
    amqp_error(
        "com.microsoft:server-busy",
        "The server is busy. Please try again later. (fault injection: serverBusy)",
    )
}

async fn handle_session(mut session: ListenerSessionHandle, hub: Arc<Hub>, auth: SharedConnAuth) {
    // Like Azure, settle in "first" mode only: uamqp-based service clients ask for "second" but then
    // wait for a settled disposition, which a "second"-mode receiver never sends first.
    let links: Links = LinkAcceptor::builder()
        .supported_receiver_settle_modes(SupportedReceiverSettleModes::First)
        .fallback_receiver_settle_mode(ReceiverSettleMode::First)
        .properties(emulator_fields())
        .build();
    let producer_links: Links = LinkAcceptor::builder()
        .supported_receiver_settle_modes(SupportedReceiverSettleModes::First)
        .fallback_receiver_settle_mode(ReceiverSettleMode::First)
        .max_message_size(MAX_PRODUCER_MESSAGE)
        .properties(emulator_fields())
        .build();
    let replies = Arc::new(ReplyLinks::default());
    let mut tasks = tokio::task::JoinSet::new();
    while let Some(attach) = session.next_incoming_attach().await {
        let now = crate::sas::now();
        match attach.role {
            // The client sends: we receive.
            Role::Sender => {
                let target = attach_target(&attach).unwrap_or_default();
                let node = entity_path(&target).to_string();
                if node.eq_ignore_ascii_case("$cbs") || node.eq_ignore_ascii_case("$management") {
                    match links.accept_incoming_attach(attach, &mut session).await {
                        Ok(LinkEndpoint::Receiver(r)) => {
                            let node = if node.eq_ignore_ascii_case("$cbs") {
                                "$cbs"
                            } else {
                                "$management"
                            };
                            tasks.spawn(request_loop(
                                r,
                                node,
                                hub.clone(),
                                auth.clone(),
                                replies.clone(),
                            ));
                        }
                        Ok(_) => {}
                        Err(e) => tracing::debug!(error = %e, "request link attach failed"),
                    }
                } else if node.eq_ignore_ascii_case("messages/devicebound") {
                    if !iothub_authorized(&hub, &auth, now) {
                        refuse(&links, attach, &mut session, amqp_error("amqp:unauthorized-access", "Unauthorized: put an IoT Hub service token on $cbs (or use SASL PLAIN) before attaching to /messages/devicebound.")).await;
                        continue;
                    }
                    match links.accept_incoming_attach(attach, &mut session).await {
                        Ok(LinkEndpoint::Receiver(r)) => {
                            tasks.spawn(c2d_loop(r, hub.clone()));
                        }
                        Ok(_) => {}
                        Err(e) => tracing::debug!(error = %e, "devicebound attach failed"),
                    }
                } else if let Some(t) = producer_target(&hub, &node) {
                    let target = match t {
                        Ok(t) => t,
                        Err(e) => {
                            refuse(&links, attach, &mut session, e).await;
                            continue;
                        }
                    };
                    if !hub.no_auth
                        && !auth
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .eventhub_allows(&node, now)
                    {
                        refuse(&links, attach, &mut session, unauthorized_send(&node)).await;
                        continue;
                    }
                    if hub.server_busy() {
                        refuse(&links, attach, &mut session, server_busy()).await;
                        continue;
                    }
                    match producer_links
                        .accept_incoming_attach(attach, &mut session)
                        .await
                    {
                        Ok(LinkEndpoint::Receiver(r)) => {
                            tasks.spawn(producer_loop(r, hub.clone(), target));
                        }
                        Ok(_) => {}
                        Err(e) => tracing::debug!(error = %e, "producer attach failed"),
                    }
                } else {
                    refuse(
                        &links,
                        attach,
                        &mut session,
                        amqp_error(
                            "amqp:not-found",
                            format!("The messaging entity '{target}' could not be found."),
                        ),
                    )
                    .await;
                }
            }
            // The client receives: we send.
            Role::Receiver => {
                let source = attach_source(&attach).unwrap_or_default();
                let path = entity_path(&source).to_string();
                if path.eq_ignore_ascii_case("$cbs") || path.eq_ignore_ascii_case("$management") {
                    let reply_to = attach_target(&attach).unwrap_or_default();
                    match links.accept_incoming_attach(attach, &mut session).await {
                        Ok(LinkEndpoint::Sender(s)) => {
                            let node = if path.eq_ignore_ascii_case("$cbs") {
                                "$cbs"
                            } else {
                                "$management"
                            };
                            let (tx, rx) = mpsc::unbounded_channel();
                            replies
                                .links
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push((node.to_string(), reply_to, tx));
                            replies.added.notify_waiters();
                            tasks.spawn(reply_loop(s, rx));
                        }
                        Ok(_) => {}
                        Err(e) => tracing::debug!(error = %e, "reply link attach failed"),
                    }
                } else if path.eq_ignore_ascii_case("messages/servicebound/feedback") {
                    if !iothub_authorized(&hub, &auth, now) {
                        refuse(&links, attach, &mut session, amqp_error("amqp:unauthorized-access", "Unauthorized: put an IoT Hub service token on $cbs (or use SASL PLAIN) before attaching to /messages/servicebound/feedback.")).await;
                        continue;
                    }
                    match links.accept_incoming_attach(attach, &mut session).await {
                        Ok(LinkEndpoint::Sender(s)) => {
                            tasks.spawn(feedback_loop(s, hub.clone()));
                        }
                        Ok(_) => {}
                        Err(e) => tracing::debug!(error = %e, "feedback attach failed"),
                    }
                } else if let Some((hub_name, group, n)) = partition_address(&path) {
                    let group = group.to_string();
                    let hub_name = hub_name.to_string();
                    let n = n.to_string();
                    if !hub.no_auth
                        && !auth
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .eventhub_allows(&path, now)
                    {
                        refuse(&links, attach, &mut session, unauthorized(&path)).await;
                        continue;
                    }
                    if hub.server_busy() {
                        refuse(&links, attach, &mut session, server_busy()).await;
                        continue;
                    }
                    let pid = n
                        .parse::<u32>()
                        .ok()
                        .filter(|p| (*p as usize) < hub.partitions.len());
                    let known_group = hub.consumer_group(&group).is_some();
                    let (true, Some(pid), true) = (
                        hub_name.eq_ignore_ascii_case(&hub.hub_name),
                        pid,
                        known_group,
                    ) else {
                        let desc = if !hub_name.eq_ignore_ascii_case(&hub.hub_name) {
                            format!(
                                "The messaging entity '{}:eventhub:{hub_name}' could not be found.",
                                hub.eh_host
                            )
                        } else if !known_group {
                            format!("The messaging entity '{}:eventhub:{}~0|{group}' could not be found. (consumer group '{group}' does not exist)", hub.eh_host, hub.hub_name)
                        } else {
                            format!("The specified partition is invalid for an EventHub partition sender or receiver. It should be between 0 and {}. Parameter name: PartitionId", hub.partitions.len() - 1)
                        };
                        let cond = if known_group && hub_name.eq_ignore_ascii_case(&hub.hub_name) {
                            "com.microsoft:argument-out-of-range"
                        } else {
                            "amqp:not-found"
                        };
                        refuse(&links, attach, &mut session, amqp_error(cond, desc)).await;
                        continue;
                    };
                    let filter = match selector_of(&attach) {
                        Ok(f) => f,
                        Err(e) => {
                            refuse(
                                &links,
                                attach,
                                &mut session,
                                amqp_error("amqp:invalid-field", e),
                            )
                            .await;
                            continue;
                        }
                    };
                    let epoch = epoch_of(&attach);
                    let claim = match hub.claim(&group, pid, epoch) {
                        Ok(c) => c,
                        Err(ev) => {
                            refuse(
                                &links,
                                attach,
                                &mut session,
                                amqp_error(ev.condition, ev.description),
                            )
                            .await;
                            continue;
                        }
                    };
                    let presettle = attach.snd_settle_mode != SenderSettleMode::Unsettled;
                    let start = hub.partitions[pid as usize].resolve_start(&filter);
                    tracing::debug!(partition = pid, %group, ?filter, start, ?epoch, "partition receiver attached");
                    match links.accept_incoming_attach(attach, &mut session).await {
                        Ok(LinkEndpoint::Sender(s)) => {
                            hub.receivers_attached.send_modify(|n| *n += 1);
                            tasks.spawn(partition_loop(
                                s,
                                hub.clone(),
                                pid,
                                start,
                                presettle,
                                claim,
                            ));
                        }
                        Ok(_) => {}
                        Err(e) => tracing::debug!(error = %e, "partition attach failed"),
                    }
                } else {
                    refuse(
                        &links,
                        attach,
                        &mut session,
                        amqp_error(
                            "amqp:not-found",
                            format!("The messaging entity '{source}' could not be found."),
                        ),
                    )
                    .await;
                }
            }
        }
    }
    tasks.abort_all();
}

fn selector_of(attach: &fe2o3_amqp::types::performatives::Attach) -> Result<StartFilter, String> {
    let Some(filter) = attach.source.as_ref().and_then(|s| s.filter.as_ref()) else {
        return Ok(StartFilter::Earliest);
    };
    for (k, v) in filter.iter() {
        if k.as_str() != "apache.org:selector-filter:string" {
            continue;
        }
        let expr = match v {
            Value::Described(d) => match &d.value {
                Value::String(s) => s.clone(),
                other => return Err(format!("selector filter value is not a string: {other:?}")),
            },
            Value::String(s) => s.clone(),
            other => return Err(format!("selector filter value is not a string: {other:?}")),
        };
        return parse_selector(&expr);
    }
    Ok(StartFilter::Earliest)
}

fn epoch_of(attach: &fe2o3_amqp::types::performatives::Attach) -> Option<i64> {
    let props = attach.properties.as_ref()?;
    let v = props.get(&Symbol::from("com.microsoft:epoch"))?;
    match v {
        Value::Long(x) => Some(*x),
        Value::Int(x) => Some(i64::from(*x)),
        Value::Uint(x) => Some(i64::from(*x)),
        Value::Ulong(x) => i64::try_from(*x).ok(),
        _ => None,
    }
}

fn simple_to_string(v: &SimpleValue) -> Option<String> {
    match v {
        SimpleValue::String(s) => Some(s.clone()),
        SimpleValue::Symbol(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

fn message_id_string(id: &MessageId) -> String {
    match id {
        MessageId::String(s) => s.clone(),
        MessageId::Ulong(n) => n.to_string(),
        MessageId::Uuid(u) => uuid::Uuid::from_bytes(*u.as_inner()).to_string(),
        MessageId::Binary(b) => String::from_utf8_lossy(b).into_owned(),
    }
}

/// Handles put-token (`$cbs`) and READ (`$management`) requests.
async fn request_loop(
    mut rx: Receiver,
    node: &'static str,
    hub: Arc<Hub>,
    auth: SharedConnAuth,
    replies: Arc<ReplyLinks>,
) {
    loop {
        let delivery = match rx.recv::<Body<Value>>().await {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(node, error = %e, "request link ended");
                return;
            }
        };
        let _ = rx.accept(&delivery).await;
        let msg = delivery.message();
        let app: HashMap<String, SimpleValue> = msg
            .application_properties
            .as_ref()
            .map(|a| a.0.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        let get = |k: &str| app.get(k).and_then(simple_to_string);
        let (status, description, body) = if node == "$cbs" {
            put_token(&hub, &auth, get("operation"), get("type"), get("name"), msg)
        } else {
            management(
                &hub,
                &auth,
                get("operation"),
                get("type"),
                get("name"),
                get("partition"),
                get("security_token"),
            )
        };
        let props = msg.properties.as_ref();
        let reply_to = props.and_then(|p| p.reply_to.clone());
        let reply_props = Properties {
            correlation_id: props.and_then(|p| p.message_id.clone()),
            message_id: Some(MessageId::String(uuid::Uuid::new_v4().to_string())),
            to: reply_to.clone(),
            ..Default::default()
        };
        let reply = Message::builder()
            .properties(reply_props)
            .application_properties(
                ApplicationProperties::builder()
                    .insert("status-code", SimpleValue::Int(status))
                    .insert("status-description", SimpleValue::String(description))
                    .build(),
            )
            .value(body)
            .build();
        match replies.find(node, reply_to.as_deref()).await {
            Some(tx) => {
                let _ = tx.send(reply);
            }
            None => tracing::info!(node, ?reply_to, "no reply link for request; reply dropped"),
        }
    }
}

fn put_token(
    hub: &Hub,
    auth: &SharedConnAuth,
    operation: Option<String>,
    token_type: Option<String>,
    name: Option<String>,
    msg: &Message<Body<Value>>,
) -> (i32, String, Value) {
    if operation.as_deref() != Some("put-token") {
        return (
            400,
            format!("unsupported $cbs operation {operation:?}"),
            Value::Null,
        );
    }
    let token = match &msg.body {
        Body::Value(v) => match &v.0 {
            Value::String(s) => s.clone(),
            _ => String::new(),
        },
        _ => String::new(),
    };
    let audience = name.unwrap_or_default();
    tracing::debug!(%audience, ?token_type, "put-token");
    let refused = |hub: &Hub, why: String| {
        hub.counters.tokens_refused.fetch_add(1, Ordering::Relaxed);
        tracing::info!(%why, "put-token refused");
        (401, format!("Unauthorized: {why}"), Value::Null)
    };
    if hub.refusing_tokens() {
        return refused(hub, "token refused (fault injection: refuseTokens)".into());
    }
    let mut a = auth.lock().unwrap_or_else(|e| e.into_inner());
    // IoT Hub service audience: the hub host name (200, as IoT Hub answers).
    let (aud_host, aud_path) = super::auth::split_resource(&audience);
    let is_iothub = aud_path.is_empty() && hub.verifier.iothub_hosts.contains(&aud_host);
    if hub.no_auth {
        if is_iothub {
            a.iothub_service = Some(u64::MAX);
        } else {
            a.eventhub.push(super::auth::Grant {
                path: String::new(),
                expiry: u64::MAX,
            });
        }
        return (
            if is_iothub { 200 } else { 202 },
            "Accepted".into(),
            Value::Null,
        );
    }
    if is_iothub {
        match hub.verifier.verify_iothub_service(&token) {
            Ok(exp) => {
                a.iothub_service = Some(exp);
                hub.counters.tokens_accepted.fetch_add(1, Ordering::Relaxed);
                (200, "OK".into(), Value::Null)
            }
            Err(e) => {
                drop(a);
                refused(hub, e)
            }
        }
    } else {
        match hub.verifier.verify_eventhub(&token) {
            Ok(grant) => {
                if !super::auth::covers(&grant.path, &aud_path) {
                    drop(a);
                    return refused(
                        hub,
                        format!("the token's audience does not cover '{audience}'"),
                    );
                }
                a.eventhub.push(grant);
                hub.counters.tokens_accepted.fetch_add(1, Ordering::Relaxed);
                (202, "Accepted".into(), Value::Null)
            }
            Err(e) => {
                drop(a);
                refused(hub, e)
            }
        }
    }
}

fn map(entries: Vec<(&str, Value)>) -> Value {
    let mut m = OrderedMap::new();
    for (k, v) in entries {
        m.insert(Value::String(k.to_string()), v);
    }
    Value::Map(m)
}

fn management(
    hub: &Hub,
    auth: &SharedConnAuth,
    operation: Option<String>,
    entity_type: Option<String>,
    name: Option<String>,
    partition: Option<String>,
    security_token: Option<String>,
) -> (i32, String, Value) {
    if hub.server_busy() {
        return (
            503,
            "The server is busy. Please try again later. (fault injection: serverBusy)".into(),
            Value::Null,
        );
    }
    let name = name.unwrap_or_default();
    if !hub.no_auth {
        let now = crate::sas::now();
        let ok = match &security_token {
            Some(t) => hub
                .verifier
                .verify_eventhub(t)
                .map(|g| super::auth::covers(&g.path, &name))
                .unwrap_or(false),
            None => auth
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .eventhub_allows(&name, now),
        };
        if !ok {
            return (401, format!("Unauthorized access. 'Manage','EntityRead' claim(s) are required to perform this operation. Resource: '{name}'."), Value::Null);
        }
    }
    if operation.as_deref() != Some("READ") {
        return (
            400,
            format!("unsupported $management operation {operation:?}"),
            Value::Null,
        );
    }
    if !name.eq_ignore_ascii_case(&hub.hub_name) {
        return (
            404,
            format!(
                "The messaging entity '{}:eventhub:{name}' could not be found.",
                hub.eh_host
            ),
            Value::Null,
        );
    }
    match entity_type.as_deref() {
        Some("com.microsoft:eventhub") => {
            let ids: Vec<Value> = (0..hub.partitions.len())
                .map(|i| Value::String(i.to_string()))
                .collect();
            let body = map(vec![
                ("name", Value::String(hub.hub_name.clone())),
                ("type", Value::String("com.microsoft:eventhub".into())),
                (
                    "created_at",
                    Value::Timestamp(Timestamp::from_milliseconds(hub.created_ms)),
                ),
                ("partition_count", Value::Int(hub.partitions.len() as i32)),
                ("partition_ids", Value::Array(ids.into())),
            ]);
            (200, "OK".into(), body)
        }
        Some("com.microsoft:partition") => {
            let Some(p) = partition
                .as_deref()
                .and_then(|p| p.parse::<usize>().ok())
                .and_then(|p| hub.partitions.get(p))
            else {
                return (
                    404,
                    format!(
                        "The specified partition '{}' is invalid. It should be between 0 and {}.",
                        partition.unwrap_or_default(),
                        hub.partitions.len() - 1
                    ),
                    Value::Null,
                );
            };
            let i = p.info();
            let body = map(vec![
                ("name", Value::String(hub.hub_name.clone())),
                ("type", Value::String("com.microsoft:partition".into())),
                ("partition", Value::String(p.id.to_string())),
                (
                    "begin_sequence_number",
                    Value::Long(i.beginning_sequence_number),
                ),
                (
                    "last_enqueued_sequence_number",
                    Value::Long(i.last_enqueued_sequence_number),
                ),
                (
                    "last_enqueued_offset",
                    Value::String(i.last_enqueued_offset.clone()),
                ),
                (
                    "last_enqueued_time_utc",
                    Value::Timestamp(Timestamp::from_milliseconds(i.last_enqueued_time_ms)),
                ),
                ("is_partition_empty", Value::Bool(i.is_empty)),
                ("last_enqueued_sequence_number_epoch", Value::Long(0)),
            ]);
            (200, "OK".into(), body)
        }
        other => (
            400,
            format!("unsupported entity type {other:?}"),
            Value::Null,
        ),
    }
}

/// Sends queued replies on one reply link.
async fn reply_loop(mut tx: Sender, mut rx: mpsc::UnboundedReceiver<Message<AmqpValue<Value>>>) {
    loop {
        tokio::select! {
            m = rx.recv() => {
                let Some(m) = m else { return };
                match tx.send_batchable(m).await {
                    Ok(fut) => drop(fut),
                    Err(e) => {
                        tracing::debug!(error = %e, "reply link send failed");
                        return;
                    }
                }
            }
            _ = tx.on_detach() => return,
        }
    }
}

fn auth_method_json() -> &'static str {
    r#"{"scope":"device","type":"sas","issuer":"iothub","acceptingIpFilterRule":null}"#
}

fn prop_to_simple(v: &PropValue) -> SimpleValue {
    match v {
        PropValue::Bool(b) => SimpleValue::Bool(*b),
        PropValue::Long(n) => SimpleValue::Long(*n),
        PropValue::Double(d) => SimpleValue::Double((*d).into()),
        PropValue::String(s) => SimpleValue::String(s.clone()),
    }
}

/// Builds the AMQP message IoT Hub's built-in endpoint delivers for `ev`.
pub(crate) fn event_message(ev: &Event) -> Message<Data> {
    let mut ann = MessageAnnotations::builder();
    if let Some(dev) = &ev.device_id {
        ann = ann
            .insert(
                Symbol::from("iothub-connection-device-id"),
                Value::String(dev.to_string()),
            )
            .insert(
                Symbol::from("iothub-connection-auth-method"),
                Value::String(auth_method_json().to_string()),
            )
            .insert(
                Symbol::from("iothub-connection-auth-generation-id"),
                Value::String(super::c2d::generation_id(dev)),
            )
            .insert(
                Symbol::from("iothub-enqueuedtime"),
                Value::Timestamp(Timestamp::from_milliseconds(ev.enqueued_ms)),
            )
            .insert(
                Symbol::from("iothub-message-source"),
                Value::String("Telemetry".into()),
            );
    }
    ann = ann
        .insert(
            Symbol::from("x-opt-sequence-number"),
            Value::Long(ev.sequence_number),
        )
        .insert(
            Symbol::from("x-opt-offset"),
            Value::String(ev.offset.to_string()),
        )
        .insert(
            Symbol::from("x-opt-enqueued-time"),
            Value::Timestamp(Timestamp::from_milliseconds(ev.enqueued_ms)),
        );
    let mut builder = Message::builder().message_annotations(ann.build());
    if let Some(p) = &ev.props {
        let props = Properties {
            message_id: p.message_id.clone().map(MessageId::String),
            correlation_id: p.correlation_id.clone().map(MessageId::String),
            content_type: p.content_type.clone().map(Symbol::from),
            content_encoding: p.content_encoding.clone().map(Symbol::from),
            ..Default::default()
        };
        if props != Properties::default() {
            builder = builder.properties(props);
        }
        if !p.app.is_empty() {
            let mut app = ApplicationProperties::builder();
            for (k, v) in &p.app {
                app = app.insert(k.clone(), prop_to_simple(v));
            }
            builder = builder.application_properties(app.build());
        }
    }
    builder.data(Binary::from(ev.body.to_vec())).build()
}

/// Why a partition sender stopped waiting.
enum Wake {
    Go,
    Leave,
    Evicted(Eviction),
}

/// Waits until fault injection lets link `link` deliver on `pid` (a freeze holds the delivery
/// without detaching; a delay holds it once), or until the link must go.
async fn wait_for_turn(
    tx: &mut Sender,
    hub: &Hub,
    pid: u32,
    link: u64,
    evict: &mut tokio::sync::oneshot::Receiver<Eviction>,
) -> Wake {
    let mut changed = hub.fault_changed.subscribe();
    loop {
        let (wait, delayed) = match hub.hold(pid, link) {
            Hold::Deliver => return Wake::Go,
            Hold::FrozenUntil(t) => (tokio::time::Instant::from_std(t), false),
            Hold::Delay(d) => (tokio::time::Instant::now() + d, true),
        };
        changed.mark_unchanged();
        tokio::select! {
            biased;
            ev = &mut *evict => return ev.map_or(Wake::Leave, Wake::Evicted),
            _ = tx.on_detach() => return Wake::Leave,
            _ = tokio::time::sleep_until(wait) => if delayed { return Wake::Go },
            _ = changed.changed() => {}
        }
    }
}

/// Serves one partition receiver: events from `start` on, strictly within link credit, waking on
/// new events; leaves when the client detaches or a newer owner evicts it. Before each delivery it
/// asks the hub whether a fault holds it ([`Hub::hold`]).
async fn partition_loop(
    mut tx: Sender,
    hub: Arc<Hub>,
    pid: u32,
    start: i64,
    presettle: bool,
    claim: (
        super::hub::OwnerGuard,
        tokio::sync::oneshot::Receiver<Eviction>,
    ),
) {
    let (guard, mut evict) = claim;
    let link = guard.id;
    let partition = &hub.partitions[pid as usize];
    let mut head = partition.subscribe();
    let mut cursor = start;
    loop {
        let batch = partition.read(cursor, READ_BATCH);
        if batch.is_empty() {
            tokio::select! {
                biased;
                ev = &mut evict => {
                    if let Ok(ev) = ev {
                        let _ = tokio::time::timeout(Duration::from_secs(5), tx.close_with_error(amqp_error(ev.condition, ev.description))).await;
                    }
                    return;
                }
                _ = tx.on_detach() => return,
                ok = async { head.wait_for(|h| *h > cursor).await.is_ok() } => if !ok { return },
            }
            continue;
        }
        for ev in batch {
            if !matches!(hub.hold(pid, link), Hold::Deliver) {
                match wait_for_turn(&mut tx, &hub, pid, link, &mut evict).await {
                    Wake::Go => {}
                    Wake::Leave => return,
                    Wake::Evicted(ev) => {
                        let _ = tokio::time::timeout(
                            Duration::from_secs(5),
                            tx.close_with_error(amqp_error(ev.condition, ev.description)),
                        )
                        .await;
                        return;
                    }
                }
            }
            cursor = ev.sequence_number + 1;
            let sendable = Sendable::builder()
                .message(event_message(&ev))
                .settled(presettle)
                .build();
            tokio::select! {
                biased;
                ev = &mut evict => {
                    if let Ok(ev) = ev {
                        let _ = tokio::time::timeout(Duration::from_secs(5), tx.close_with_error(amqp_error(ev.condition, ev.description))).await;
                    }
                    return;
                }
                r = tx.send_batchable(sendable) => match r {
                    Ok(fut) => {
                        drop(fut);
                        hub.counters.events_delivered.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        tracing::debug!(partition = pid, error = %e, "partition receiver gone");
                        return;
                    }
                },
            }
        }
    }
}

fn c2d_refusal_error(r: &C2dRefusal) -> definitions::Error {
    let tracking = uuid::Uuid::new_v4().simple().to_string();
    match r {
        C2dRefusal::BadAddress(to) => amqp_error(
            "com.microsoft:argument-error",
            format!("ErrorCode:ArgumentInvalid;The 'to' property '{to}' is not a valid device-bound address; expected '/devices/{{deviceId}}/messages/devicebound'. TrackingId:{tracking}"),
        ),
        C2dRefusal::TooLarge(n) => amqp_error(
            "amqp:link:message-size-exceeded",
            format!("ErrorCode:MessageTooLarge;Message size {n} bytes exceeds the maximum of 65536 bytes for cloud-to-device messages. TrackingId:{tracking}"),
        ),
        C2dRefusal::DeviceNotFound(d) => amqp_error(
            "amqp:not-found",
            format!("ErrorCode:DeviceNotFound;404001 Device '{d}' was not found on this hub. TrackingId:{tracking}"),
        ),
        C2dRefusal::QueueDepthExceeded(d) => amqp_error(
            "amqp:resource-limit-exceeded",
            format!("ErrorCode:DeviceMaximumQueueDepthExceeded;403004 Device Queue depth cannot exceed 50 messages (device '{d}'). TrackingId:{tracking}"),
        ),
        C2dRefusal::Throttled => amqp_error(
            "com.microsoft:device-container-throttled",
            format!("ErrorCode:ThrottlingException;429 Cloud-to-device messages are being throttled; retry later. TrackingId:{tracking}"),
        ),
    }
}

fn body_bytes(body: &Body<Value>) -> Vec<u8> {
    match body {
        Body::Data(batch) => batch.iter().flat_map(|d| d.0.iter().copied()).collect(),
        Body::Value(v) => match &v.0 {
            Value::Binary(b) => b.to_vec(),
            Value::String(s) => s.as_bytes().to_vec(),
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

fn simple_to_prop(v: &SimpleValue) -> Option<PropValue> {
    Some(match v {
        SimpleValue::String(s) => PropValue::String(s.clone()),
        SimpleValue::Symbol(s) => PropValue::String(s.as_str().to_string()),
        SimpleValue::Bool(b) => PropValue::Bool(*b),
        SimpleValue::Long(n) => PropValue::Long(*n),
        SimpleValue::Int(n) => PropValue::Long(i64::from(*n)),
        SimpleValue::Short(n) => PropValue::Long(i64::from(*n)),
        SimpleValue::Uint(n) => PropValue::Long(i64::from(*n)),
        SimpleValue::Double(d) => PropValue::Double(d.into_inner()),
        SimpleValue::Float(d) => PropValue::Double(f64::from(d.into_inner())),
        _ => return None,
    })
}

/// Receives C2D messages on `/messages/devicebound`, accepting or rejecting each.
async fn c2d_loop(mut rx: Receiver, hub: Arc<Hub>) {
    loop {
        let d = match rx.recv::<Body<Value>>().await {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(error = %e, "devicebound link ended");
                return;
            }
        };
        let m = d.message();
        let p = m.properties.as_ref();
        let mut props = Vec::new();
        let mut ack = None;
        if let Some(app) = &m.application_properties {
            for (k, v) in app.0.iter() {
                if k == "iothub-ack" {
                    ack = simple_to_string(v);
                } else if let Some(pv) = simple_to_prop(v) {
                    props.push((k.clone(), pv));
                }
            }
        }
        let incoming = IncomingC2d {
            to: p.and_then(|p| p.to.clone()),
            message_id: p.and_then(|p| p.message_id.as_ref()).map(message_id_string),
            correlation_id: p
                .and_then(|p| p.correlation_id.as_ref())
                .map(message_id_string),
            user_id: p
                .and_then(|p| p.user_id.as_ref())
                .map(|b| String::from_utf8_lossy(b).into_owned()),
            content_type: p
                .and_then(|p| p.content_type.as_ref())
                .map(|s| s.as_str().to_string()),
            content_encoding: p
                .and_then(|p| p.content_encoding.as_ref())
                .map(|s| s.as_str().to_string()),
            absolute_expiry_ms: p
                .and_then(|p| p.absolute_expiry_time.as_ref())
                .map(|t| t.milliseconds()),
            ack,
            properties: props,
            body: body_bytes(&m.body),
        };
        let outcome = hub.c2d.enqueue(incoming);
        let r = match outcome {
            Ok(seq) => {
                hub.counters.c2d_accepted.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(seq, "C2D message accepted");
                rx.accept(&d).await
            }
            Err(refusal) => {
                hub.counters.c2d_refused.fetch_add(1, Ordering::Relaxed);
                let err = c2d_refusal_error(&refusal);
                tracing::info!(?refusal, "C2D message rejected");
                rx.reject(&d, err).await
            }
        };
        if let Err(e) = r {
            tracing::debug!(error = %e, "C2D disposition failed");
            return;
        }
    }
}

/// Sends feedback batches on `/messages/servicebound/feedback` as records arrive.
async fn feedback_loop(mut tx: Sender, hub: Arc<Hub>) {
    loop {
        let records = loop {
            let ready = hub.c2d.feedback_ready.notified();
            let r = hub.c2d.take_feedback();
            if !r.is_empty() {
                break r;
            }
            tokio::select! {
                _ = ready => {}
                _ = tx.on_detach() => return,
            }
        };
        let body = match serde_json::to_vec(&records) {
            Ok(b) => b,
            Err(_) => continue,
        };
        let props = Properties {
            message_id: Some(MessageId::String(uuid::Uuid::new_v4().to_string())),
            content_type: Some(Symbol::from(
                "application/vnd.microsoft.iothub.feedback.json",
            )),
            content_encoding: Some(Symbol::from("utf-8")),
            to: Some("/messages/servicebound/feedback".to_string()),
            ..Default::default()
        };
        let msg = Message::builder()
            .properties(props)
            .data(Binary::from(body))
            .build();
        match tx.send(msg).await {
            Ok(Outcome::Accepted(_)) => {
                hub.counters
                    .feedback_messages_sent
                    .fetch_add(1, Ordering::Relaxed);
            }
            Ok(other) => {
                tracing::info!(outcome = ?other, "feedback message not accepted; will resend");
                hub.c2d.return_feedback(records);
            }
            Err(e) => {
                tracing::debug!(error = %e, "feedback link ended");
                hub.c2d.return_feedback(records);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            entity_path("amqps://127.0.0.1:5671/myhub/ConsumerGroups/$Default/Partitions/0"),
            "myhub/ConsumerGroups/$Default/Partitions/0"
        );
        assert_eq!(entity_path("/messages/devicebound"), "messages/devicebound");
        assert_eq!(entity_path("$cbs"), "$cbs");
        assert_eq!(
            partition_address("myhub/ConsumerGroups/$Default/Partitions/3"),
            Some(("myhub", "$Default", "3"))
        );
        assert_eq!(
            partition_address("myhub/consumergroups/x/partitions/0"),
            Some(("myhub", "x", "0"))
        );
        assert_eq!(partition_address("myhub/Partitions/0"), None);
    }
}
