//! Claims-based security (CBS) put-token over the `$cbs` node, our own implementation.
//!
//! `fe2o3-amqp-cbs` (used by azure_core_amqp) requires the reply status to be exactly 202, the Event
//! Hubs answer; IoT Hub answers **200** (crates.md §2). This client accepts any 2xx status and turns
//! anything else into [`CbsError::Refused`] with the status code and description the peer sent.
//!
//! Request: a message to `$cbs` with `message-id`, `reply-to`, application properties
//! `operation=put-token`, `type=<token type>`, `name=<audience>` and the token as an AmqpValue string
//! body. Reply (on the receiver attached with source `$cbs`): application properties `status-code`
//! (int) and `status-description` (string), `correlation-id` = our `message-id`.

use crate::config::Secret;
use fe2o3_amqp::link::{Receiver, Sender};
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::messaging::{
    ApplicationProperties, Body, Message, MessageId, Outcome, Properties,
};
use fe2o3_amqp::types::primitives::{SimpleValue, Value};
use std::time::Duration;

/// Token type for SAS tokens (Event Hubs and IoT Hub alike).
pub const SAS_TOKEN_TYPE: &str = "servicebus.windows.net:sastoken";

#[derive(Debug, thiserror::Error)]
pub enum CbsError {
    #[error("could not attach the $cbs links: {0}")]
    Attach(String),
    #[error("could not send the put-token request: {0}")]
    Send(String),
    #[error("the put-token request was not accepted by the peer: {0}")]
    NotAccepted(String),
    #[error("could not receive the put-token reply: {0}")]
    Receive(String),
    #[error("no put-token reply within {0:?}")]
    Timeout(Duration),
    #[error("the put-token reply has no status-code")]
    NoStatus,
    #[error("token refused: status {status}: {description}")]
    Refused { status: i64, description: String },
}

impl CbsError {
    /// True when the peer answered and refused the token (an authentication problem, not a network one).
    pub fn is_refused(&self) -> bool {
        matches!(self, CbsError::Refused { .. })
    }
}

/// The two `$cbs` links on one session.
pub struct CbsClient {
    sender: Sender,
    receiver: Receiver,
    next_id: u64,
}

impl std::fmt::Debug for CbsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CbsClient")
            .field("next_id", &self.next_id)
            .finish()
    }
}

fn as_i64(v: &SimpleValue) -> Option<i64> {
    match v {
        SimpleValue::Byte(x) => Some(*x as i64),
        SimpleValue::Short(x) => Some(*x as i64),
        SimpleValue::Int(x) => Some(*x as i64),
        SimpleValue::Long(x) => Some(*x),
        SimpleValue::Ubyte(x) => Some(*x as i64),
        SimpleValue::Ushort(x) => Some(*x as i64),
        SimpleValue::Uint(x) => Some(*x as i64),
        SimpleValue::Ulong(x) => i64::try_from(*x).ok(),
        SimpleValue::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Reads `status-code` / `status-description` of a put-token reply and decides.
pub fn check_reply(props: Option<&ApplicationProperties>) -> Result<i64, CbsError> {
    let props = props.ok_or(CbsError::NoStatus)?;
    let status = props
        .0
        .get("status-code")
        .or_else(|| props.0.get("statusCode"))
        .and_then(as_i64)
        .ok_or(CbsError::NoStatus)?;
    if (200..300).contains(&status) {
        return Ok(status);
    }
    let description = props
        .0
        .get("status-description")
        .or_else(|| props.0.get("statusDescription"))
        .and_then(|v| match v {
            SimpleValue::String(s) => Some(s.clone()),
            _ => None,
        })
        .unwrap_or_default();
    Err(CbsError::Refused {
        status,
        description,
    })
}

impl CbsClient {
    /// Attaches a sender to `$cbs` and a receiver with source `$cbs`, target `cbs`.
    pub async fn attach(session: &mut SessionHandle<()>, tag: &str) -> Result<Self, CbsError> {
        let sender = Sender::attach(session, format!("cbs-sender-{tag}"), "$cbs")
            .await
            .map_err(|e| CbsError::Attach(e.to_string()))?;
        let receiver = Receiver::builder()
            .name(format!("cbs-receiver-{tag}"))
            .source("$cbs")
            .target("cbs")
            .attach(session)
            .await
            .map_err(|e| CbsError::Attach(e.to_string()))?;
        Ok(CbsClient {
            sender,
            receiver,
            next_id: 1,
        })
    }

    /// Puts `token` for `audience`; returns the 2xx status. The token never appears in errors.
    pub async fn put_token(
        &mut self,
        audience: &str,
        token: &Secret,
        token_type: &str,
        timeout: Duration,
    ) -> Result<i64, CbsError> {
        let id = format!("put-token-{}", self.next_id);
        self.next_id += 1;
        let msg = Message::builder()
            .properties(
                Properties::builder()
                    .message_id(id.clone())
                    .reply_to("cbs")
                    .to("$cbs")
                    .build(),
            )
            .application_properties(
                ApplicationProperties::builder()
                    .insert("operation", "put-token")
                    .insert("type", token_type)
                    .insert("name", audience)
                    .build(),
            )
            .value(token.expose().to_string())
            .build();
        let fut = async {
            let outcome = self
                .sender
                .send(msg)
                .await
                .map_err(|e| CbsError::Send(e.to_string()))?;
            if !matches!(outcome, Outcome::Accepted(_)) {
                return Err(CbsError::NotAccepted(format!("{outcome:?}")));
            }
            loop {
                let reply = self
                    .receiver
                    .recv::<Body<Value>>()
                    .await
                    .map_err(|e| CbsError::Receive(e.to_string()))?;
                let _ = self.receiver.accept(&reply).await;
                let msg = reply.message();
                let correlates = match msg
                    .properties
                    .as_ref()
                    .and_then(|p| p.correlation_id.as_ref())
                {
                    Some(MessageId::String(s)) => *s == id,
                    // Peers that do not set correlation-id: the reply is for the only request in flight.
                    None => true,
                    Some(_) => true,
                };
                if !correlates {
                    // A late reply to an earlier request that timed out: skip it.
                    continue;
                }
                return check_reply(msg.application_properties.as_ref());
            }
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(CbsError::Timeout(timeout)),
        }
    }

    /// Detaches both links (best effort).
    pub async fn close(self) {
        let _ = self.sender.close().await;
        let _ = self.receiver.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(status: SimpleValue, desc: Option<&str>) -> ApplicationProperties {
        let mut b = ApplicationProperties::builder().insert("status-code", status);
        if let Some(d) = desc {
            b = b.insert("status-description", d);
        }
        b.build()
    }

    #[test]
    fn any_2xx_is_success() {
        assert_eq!(
            check_reply(Some(&props(SimpleValue::Int(200), None))).unwrap(),
            200
        );
        assert_eq!(
            check_reply(Some(&props(SimpleValue::Int(202), Some("Accepted")))).unwrap(),
            202
        );
        assert_eq!(
            check_reply(Some(&props(SimpleValue::Long(204), None))).unwrap(),
            204
        );
    }

    #[test]
    fn non_2xx_is_a_typed_refusal() {
        match check_reply(Some(&props(SimpleValue::Int(401), Some("Unauthorized")))) {
            Err(CbsError::Refused {
                status,
                description,
            }) => {
                assert_eq!(status, 401);
                assert_eq!(description, "Unauthorized");
            }
            other => panic!("{other:?}"),
        }
        let e = check_reply(Some(&props(SimpleValue::Int(500), None))).unwrap_err();
        assert!(e.is_refused());
        assert_eq!(e.to_string(), "token refused: status 500: ");
        assert!(matches!(check_reply(None), Err(CbsError::NoStatus)));
        assert!(matches!(
            check_reply(Some(&ApplicationProperties::builder().build())),
            Err(CbsError::NoStatus)
        ));
    }
}
