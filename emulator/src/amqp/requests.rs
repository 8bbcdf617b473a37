//! `$cbs` put-token and `$management` READ requests, and the reply links their answers go out on
//! (matched by `reply_to`, waiting a while for a reply link that attaches after its request).

use super::*;

type ReplyQueue = mpsc::UnboundedSender<Message<AmqpValue<Value>>>;

/// Reply links of one session: node (`$cbs`/`$management`) → (target address, queue).
#[derive(Default)]
pub(super) struct ReplyLinks {
    pub(super) links: Mutex<Vec<(String, String, ReplyQueue)>>,
    pub(super) added: Notify,
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

/// Handles put-token (`$cbs`) and READ (`$management`) requests.
pub(super) async fn request_loop(
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
    let (aud_host, aud_path) = crate::auth::split_resource(&audience);
    let is_iothub = aud_path.is_empty() && hub.verifier.iothub_hosts.contains(&aud_host);
    if hub.no_auth {
        if is_iothub {
            a.iothub_service = Some(u64::MAX);
        } else {
            a.eventhub.push(crate::auth::Grant {
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
                if !crate::auth::covers(&grant.path, &aud_path) {
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
                .map(|g| crate::auth::covers(&g.path, &name))
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
pub(super) async fn reply_loop(
    mut tx: Sender,
    mut rx: mpsc::UnboundedReceiver<Message<AmqpValue<Value>>>,
) {
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
