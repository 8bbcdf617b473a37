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

mod c2d_links;
mod events;
mod requests;

use c2d_links::{c2d_loop, feedback_loop};
use events::partition_loop;
use requests::{reply_loop, request_loop, ReplyLinks};

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

/// A plain TCP or a TLS stream, whichever the listener gives.
pub(crate) trait Io:
    AsyncRead + AsyncWrite + std::fmt::Debug + Send + Unpin + 'static
{
}
impl<T: AsyncRead + AsyncWrite + std::fmt::Debug + Send + Unpin + 'static> Io for T {}

/// Accepts AMQP connections until `shutdown` flips to true.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    hub: Arc<Hub>,
    shutdown: watch::Receiver<bool>,
) {
    accept_loop(listener, tls, hub, shutdown, "AMQP", handle_connection).await
}

/// The accept loop of every listener (AMQP, WebSocket): TLS handshake when configured, one task per
/// connection running `serve`, all of them ended when `shutdown` flips to true.
pub(crate) async fn accept_loop<F, Fut>(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    hub: Arc<Hub>,
    mut shutdown: watch::Receiver<bool>,
    what: &'static str,
    serve: F,
) where
    F: Fn(Box<dyn Io>, Arc<Hub>) -> Fut + Copy + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => break,
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "{what} accept failed");
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let hub = hub.clone();
                let tls = tls.clone();
                conns.spawn(async move {
                    tracing::debug!(%peer, "{what} connection");
                    match tls {
                        Some(tls) => match tls.accept(tcp).await {
                            Ok(s) => serve(Box::new(s), hub).await,
                            Err(e) => tracing::info!(%peer, error = %e, "TLS handshake failed"),
                        },
                        None => serve(Box::new(tcp), hub).await,
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
