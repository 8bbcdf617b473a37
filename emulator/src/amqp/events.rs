//! Partition senders: the messages IoT Hub's built-in endpoint delivers, within link credit, held
//! by fault injection (freeze, delay) without detaching.

use super::*;

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
                Value::String(crate::c2d::generation_id(dev)),
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
pub(super) async fn partition_loop(
    mut tx: Sender,
    hub: Arc<Hub>,
    pid: u32,
    start: i64,
    presettle: bool,
    claim: (
        crate::hub::OwnerGuard,
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
