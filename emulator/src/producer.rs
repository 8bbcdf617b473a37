//! Event Hubs producer links, as a real Event Hub accepts them from Microsoft's producer clients
//! (Python `EventHubProducerClient`, Rust `ProducerClient`):
//!
//! * target `<hub>`: the hub picks the partition: by the `x-opt-partition-key` message annotation
//!   (FNV-1a of the key, modulo the partition count, as for device ids), otherwise round robin;
//! * target `<hub>/Partitions/<n>`: that partition.
//!
//! A delivery is one event, or an Event Hubs batch (message format `0x80013700`: each data section
//! is one encoded AMQP message). Each event is stored as a plain Event Hub event (no `iothub-*`
//! annotations): body, message id, correlation id, content type/encoding and the application
//! properties (integers of any width become longs, floats doubles). Every event of a delivery lands
//! on one partition, and the delivery is accepted only once stored. The link needs an Event Hubs
//! token covering its target (`Send` claims are not modelled: the hub has one policy).

use super::amqp::amqp_error;
use super::hub::Hub;
use super::store::{partition_for, PropValue, TelemetryProps};
use bytes::Bytes;
use fe2o3_amqp::link::Receiver;
use fe2o3_amqp::types::definitions;
use fe2o3_amqp::types::messaging::annotations::OwnedKey;
use fe2o3_amqp::types::messaging::message::__private::Deserializable;
use fe2o3_amqp::types::messaging::{Body, Message, MessageId};
use fe2o3_amqp::types::primitives::{SimpleValue, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Message format of an Event Hubs batch (Microsoft's `BatchMessage`).
pub const BATCH_FORMAT: u32 = 0x8001_3700;

/// Largest delivery accepted on a producer link (Event Hubs Standard: 1 MB).
pub const MAX_PRODUCER_MESSAGE: u64 = 1024 * 1024;

/// Where a producer link's events go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProducerTarget {
    /// The hub assigns a partition.
    Entity,
    Partition(u32),
}

/// Whether `path` (an entity path without scheme and host) names a producer target of this hub:
/// `None` when it is not a producer address at all, `Some(Err)` for a bad partition.
pub fn producer_target(
    hub: &Hub,
    path: &str,
) -> Option<Result<ProducerTarget, definitions::Error>> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        [name] if name.eq_ignore_ascii_case(&hub.hub_name) => Some(Ok(ProducerTarget::Entity)),
        [name, p, n] if name.eq_ignore_ascii_case(&hub.hub_name) && p.eq_ignore_ascii_case("partitions") => {
            Some(
                n.parse::<u32>()
                    .ok()
                    .filter(|n| (*n as usize) < hub.partitions.len())
                    .map(ProducerTarget::Partition)
                    .ok_or_else(|| {
                        amqp_error(
                            "com.microsoft:argument-out-of-range",
                            format!(
                                "The specified partition is invalid for an EventHub partition sender or receiver. It should be between 0 and {}. Parameter name: PartitionId",
                                hub.partitions.len() - 1
                            ),
                        )
                    }),
            )
        }
        _ => None,
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
        SimpleValue::Byte(n) => PropValue::Long(i64::from(*n)),
        SimpleValue::Uint(n) => PropValue::Long(i64::from(*n)),
        SimpleValue::Ushort(n) => PropValue::Long(i64::from(*n)),
        SimpleValue::Ubyte(n) => PropValue::Long(i64::from(*n)),
        SimpleValue::Ulong(n) => PropValue::Long(i64::try_from(*n).ok()?),
        SimpleValue::Double(d) => PropValue::Double(d.into_inner()),
        SimpleValue::Float(d) => PropValue::Double(f64::from(d.into_inner())),
        SimpleValue::Timestamp(t) => PropValue::Long(t.milliseconds()),
        SimpleValue::Uuid(u) => PropValue::String(
            uuid::Uuid::from_bytes(*u.as_inner())
                .hyphenated()
                .to_string(),
        ),
        _ => return None,
    })
}

fn id_string(id: &MessageId) -> String {
    match id {
        MessageId::String(s) => s.clone(),
        MessageId::Ulong(n) => n.to_string(),
        MessageId::Uuid(u) => uuid::Uuid::from_bytes(*u.as_inner()).to_string(),
        MessageId::Binary(b) => String::from_utf8_lossy(b).into_owned(),
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

/// One stored event's parts.
type NewEvent = (Option<Box<TelemetryProps>>, Bytes);

fn to_event(m: &Message<Body<Value>>) -> NewEvent {
    let p = m.properties.as_ref();
    let props = TelemetryProps {
        message_id: p.and_then(|p| p.message_id.as_ref()).map(id_string),
        correlation_id: p.and_then(|p| p.correlation_id.as_ref()).map(id_string),
        content_type: p
            .and_then(|p| p.content_type.as_ref())
            .map(|s| s.as_str().to_string()),
        content_encoding: p
            .and_then(|p| p.content_encoding.as_ref())
            .map(|s| s.as_str().to_string()),
        app: m
            .application_properties
            .as_ref()
            .map(|a| {
                a.0.iter()
                    .filter_map(|(k, v)| simple_to_prop(v).map(|v| (k.clone(), v)))
                    .collect()
            })
            .unwrap_or_default(),
    };
    let props = (props != TelemetryProps::default()).then(|| Box::new(props));
    (props, Bytes::from(body_bytes(&m.body)))
}

fn partition_key(m: &Message<Body<Value>>) -> Option<String> {
    let ann = m.message_annotations.as_ref()?;
    ann.0.iter().find_map(|(k, v)| {
        match k {
            OwnedKey::Symbol(s) if s.as_str() == "x-opt-partition-key" => {}
            _ => return None,
        }
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Symbol(s) => Some(s.as_str().to_string()),
            _ => None,
        }
    })
}

/// The events of one delivery (a batch is unpacked) and the partition key, if any.
fn unpack(
    format: Option<u32>,
    m: &Message<Body<Value>>,
) -> Result<(Vec<NewEvent>, Option<String>), String> {
    let key = partition_key(m);
    if format != Some(BATCH_FORMAT) {
        return Ok((vec![to_event(m)], key));
    }
    let Body::Data(sections) = &m.body else {
        return Err("a batch message (format 0x80013700) carries data sections".into());
    };
    let mut events = Vec::with_capacity(sections.len());
    let mut key = key;
    for d in sections.iter() {
        let inner: Deserializable<Message<Body<Value>>> = serde_amqp::from_slice(&d.0)
            .map_err(|e| format!("a batched event is not an AMQP message: {e}"))?;
        if key.is_none() {
            key = partition_key(&inner.0);
        }
        events.push(to_event(&inner.0));
    }
    Ok((events, key))
}

/// Round-robin cursor for events sent to the entity without a partition key.
static NEXT_PARTITION: AtomicU64 = AtomicU64::new(0);

/// Receives events on a producer link until the client detaches.
pub async fn producer_loop(mut rx: Receiver, hub: Arc<Hub>, target: ProducerTarget) {
    loop {
        let d = match rx.recv::<Body<Value>>().await {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(error = %e, "producer link ended");
                return;
            }
        };
        let r = match unpack(*d.message_format(), d.message()) {
            Ok((events, key)) => {
                let n = hub.partitions.len() as u32;
                let pid = match (target, key) {
                    (ProducerTarget::Partition(p), _) => p,
                    (ProducerTarget::Entity, Some(k)) => partition_for(&k, n),
                    (ProducerTarget::Entity, None) => {
                        (NEXT_PARTITION.fetch_add(1, Ordering::Relaxed) % u64::from(n)) as u32
                    }
                };
                let count = events.len();
                if count > 0 {
                    hub.partitions[pid as usize]
                        .append(events.into_iter().map(|(p, b)| (None, p, b)));
                }
                tracing::debug!(partition = pid, count, "events from a producer");
                rx.accept(&d).await
            }
            Err(e) => {
                tracing::info!(error = %e, "producer delivery rejected");
                rx.reject(&d, amqp_error("amqp:decode-error", e)).await
            }
        };
        if let Err(e) = r {
            tracing::debug!(error = %e, "producer disposition failed");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fe2o3_amqp::types::messaging::message::__private::Serializable;
    use fe2o3_amqp::types::messaging::{
        ApplicationProperties, Data, MessageAnnotations, Properties,
    };
    use fe2o3_amqp::types::primitives::{Binary, Symbol};

    fn event(body: &[u8], app: &[(&str, SimpleValue)]) -> Message<Body<Value>> {
        let mut a = ApplicationProperties::builder();
        for (k, v) in app {
            a = a.insert(k.to_string(), v.clone());
        }
        Message::builder()
            .properties(Properties {
                message_id: Some(MessageId::String("m1".into())),
                content_type: Some(Symbol::from("application/json")),
                ..Default::default()
            })
            .application_properties(a.build())
            .body(Body::Data(vec![Data(Binary::from(body.to_vec()))].into()))
            .build()
    }

    #[test]
    fn single_events_keep_their_properties() {
        let m = event(
            b"{}",
            &[
                ("cloudEvents:type", SimpleValue::String("t".into())),
                ("n", SimpleValue::Int(3)),
            ],
        );
        let (events, key) = unpack(None, &m).unwrap();
        assert_eq!(key, None);
        let (props, body) = &events[0];
        assert_eq!(&body[..], b"{}");
        let props = props.as_ref().unwrap();
        assert_eq!(props.message_id.as_deref(), Some("m1"));
        assert_eq!(props.content_type.as_deref(), Some("application/json"));
        assert_eq!(
            props.app,
            vec![
                (
                    "cloudEvents:type".to_string(),
                    PropValue::String("t".into())
                ),
                ("n".to_string(), PropValue::Long(3))
            ]
        );
    }

    #[test]
    fn batches_are_unpacked_and_keep_the_partition_key() {
        let mut sections = Vec::new();
        for i in 0..3u8 {
            let mut m = event(&[b'a' + i], &[]);
            m.message_annotations = Some(
                MessageAnnotations::builder()
                    .insert(
                        Symbol::from("x-opt-partition-key"),
                        Value::String("k".into()),
                    )
                    .build(),
            );
            let bytes = serde_amqp::to_vec(&Serializable(m)).unwrap();
            sections.push(Data(Binary::from(bytes)));
        }
        let outer: Message<Body<Value>> =
            Message::builder().body(Body::Data(sections.into())).build();
        let (events, key) = unpack(Some(BATCH_FORMAT), &outer).unwrap();
        assert_eq!(key.as_deref(), Some("k"));
        let bodies: Vec<&[u8]> = events.iter().map(|(_, b)| &b[..]).collect();
        assert_eq!(bodies, vec![b"a", b"b", b"c"]);
        let garbage: Message<Body<Value>> = Message::builder()
            .body(Body::Data(
                vec![Data(Binary::from(vec![0xff, 0x00]))].into(),
            ))
            .build();
        assert!(unpack(Some(BATCH_FORMAT), &garbage).is_err());
    }
}
