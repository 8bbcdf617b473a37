//! One cloud-to-device message and its AMQP form.
//!
//! Invariants: the AMQP message always carries `to = /devices/{id}/messages/devicebound` (device id
//! unescaped, as the Java service SDK sent it), `message-id`, the `iothub-ack` application property
//! and exactly one `data` body section. `Debug` never prints the body (it is user data and may hold
//! secrets); it prints its length.

use fe2o3_amqp::types::messaging::{ApplicationProperties, Data, Message, Properties};
use fe2o3_amqp::types::primitives::{Binary, Timestamp};
use serde::Serialize;
use std::time::{SystemTime, UNIX_EPOCH};

/// The `iothub-ack` application property: which delivery feedback the hub should produce. This
/// is also the connector setting `IotHub.MessageDeliveryAcknowledgement` (`None`, `Full`,
/// `PositiveOnly`, `NegativeOnly`); there is no second enum for it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum AckMode {
    #[default]
    None,
    Positive,
    Negative,
    Full,
}

impl AckMode {
    /// The wire value (`none`, `positive`, `negative`, `full`) as the IoT Hub docs list it.
    pub fn as_str(&self) -> &'static str {
        match self {
            AckMode::None => "none",
            AckMode::Positive => "positive",
            AckMode::Negative => "negative",
            AckMode::Full => "full",
        }
    }

    /// Same as [`AckMode::as_str`] (the name the configuration code uses).
    pub fn wire_value(self) -> &'static str {
        self.as_str()
    }

    /// The connector setting's spelling (`None`, `Full`, `PositiveOnly`, `NegativeOnly`).
    pub fn setting_name(self) -> &'static str {
        match self {
            AckMode::None => "None",
            AckMode::Positive => "PositiveOnly",
            AckMode::Negative => "NegativeOnly",
            AckMode::Full => "Full",
        }
    }

    /// Parses the connector setting (`None`, `Full`, `PositiveOnly`, `NegativeOnly`) and the wire
    /// spellings (`positive`, `negative`), case-insensitively.
    pub fn parse(s: &str) -> Option<AckMode> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" => Some(AckMode::None),
            "full" => Some(AckMode::Full),
            "positive" | "positiveonly" => Some(AckMode::Positive),
            "negative" | "negativeonly" => Some(AckMode::Negative),
            _ => None,
        }
    }
}

/// One cloud-to-device message.
#[derive(Clone, PartialEq, Eq)]
pub struct C2dMessage {
    pub device_id: String,
    pub message_id: String,
    pub body: Vec<u8>,
    /// `absolute-expiry-time`.
    pub expiry: Option<SystemTime>,
    pub correlation_id: Option<String>,
    pub ack: AckMode,
}

impl std::fmt::Debug for C2dMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("C2dMessage")
            .field("device_id", &self.device_id)
            .field("message_id", &self.message_id)
            .field("body_len", &self.body.len())
            .field("expiry", &self.expiry)
            .field("correlation_id", &self.correlation_id)
            .field("ack", &self.ack)
            .finish()
    }
}

impl C2dMessage {
    pub fn new(
        device_id: impl Into<String>,
        message_id: impl Into<String>,
        body: impl Into<Vec<u8>>,
    ) -> Self {
        C2dMessage {
            device_id: device_id.into(),
            message_id: message_id.into(),
            body: body.into(),
            expiry: None,
            correlation_id: None,
            ack: AckMode::None,
        }
    }

    /// The AMQP message as sent on `/messages/devicebound`.
    pub fn to_amqp(&self) -> Message<Data> {
        self.clone().into_amqp()
    }

    /// Like [`C2dMessage::to_amqp`], without copying the body.
    pub fn into_amqp(self) -> Message<Data> {
        let mut props = Properties::builder()
            .to(format!("/devices/{}/messages/devicebound", self.device_id))
            .message_id(self.message_id);
        if let Some(c) = self.correlation_id {
            props = props.correlation_id(c);
        }
        if let Some(t) = self.expiry {
            let ms = t
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0);
            props = props.absolute_expiry_time(Timestamp::from_milliseconds(ms));
        }
        Message::builder()
            .properties(props.build())
            .application_properties(
                ApplicationProperties::builder()
                    .insert("iothub-ack", self.ack.as_str())
                    .build(),
            )
            .data(Binary::from(self.body))
            .build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ack_mode_spellings() {
        assert_eq!(AckMode::parse("None"), Some(AckMode::None));
        assert_eq!(AckMode::parse("Full"), Some(AckMode::Full));
        assert_eq!(AckMode::parse("PositiveOnly"), Some(AckMode::Positive));
        assert_eq!(AckMode::parse("negativeonly"), Some(AckMode::Negative));
        assert_eq!(AckMode::parse("positive"), Some(AckMode::Positive));
        assert_eq!(AckMode::parse("sometimes"), None);
        assert_eq!(AckMode::Negative.as_str(), "negative");
        for a in [
            AckMode::None,
            AckMode::Full,
            AckMode::Positive,
            AckMode::Negative,
        ] {
            assert_eq!(AckMode::parse(a.setting_name()), Some(a));
            assert_eq!(AckMode::parse(a.wire_value()), Some(a));
        }
    }

    #[test]
    fn debug_hides_the_body() {
        let m = C2dMessage::new("dev-1", "msg1", b"open sesame: hunter2".to_vec());
        let d = format!("{m:?}");
        assert!(!d.contains("hunter2"), "{d}");
        assert!(!d.contains("104, 117"), "no byte list either: {d}");
        assert!(d.contains("body_len: 20"), "{d}");
        assert!(d.contains("dev-1"));
    }

    #[test]
    fn message_carries_iothub_properties() {
        let mut m = C2dMessage::new("dev-1", "msg1", b"Turn On".to_vec());
        m.ack = AckMode::Full;
        m.correlation_id = Some("corr".into());
        m.expiry = Some(UNIX_EPOCH + Duration::from_millis(1_800_000_000_123));
        let a = m.to_amqp();
        let p = a.properties.as_ref().unwrap();
        assert_eq!(p.to.as_deref(), Some("/devices/dev-1/messages/devicebound"));
        assert_eq!(
            p.message_id,
            Some(fe2o3_amqp::types::messaging::MessageId::String(
                "msg1".into()
            ))
        );
        assert_eq!(
            p.correlation_id,
            Some(fe2o3_amqp::types::messaging::MessageId::String(
                "corr".into()
            ))
        );
        assert_eq!(
            p.absolute_expiry_time.as_ref().map(|t| t.milliseconds()),
            Some(1_800_000_000_123)
        );
        let ap = a.application_properties.as_ref().unwrap();
        assert_eq!(
            ap.0.get("iothub-ack"),
            Some(&fe2o3_amqp::types::primitives::SimpleValue::String(
                "full".into()
            ))
        );
        assert_eq!(a.body.0, b"Turn On".to_vec());
    }
}
