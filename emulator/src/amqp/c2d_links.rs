//! The IoT Hub service nodes: C2D messages received on `/messages/devicebound` (accepted, or
//! rejected with IoT Hub's conditions) and feedback sent on `/messages/servicebound/feedback`.

use super::*;

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
pub(super) async fn c2d_loop(mut rx: Receiver, hub: Arc<Hub>) {
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
pub(super) async fn feedback_loop(mut tx: Sender, hub: Arc<Hub>) {
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
