//! How IoT Hub answered one C2D send, classified once, here.
//!
//! Classification uses only exact protocol values, never substrings of free text:
//! 1. the AMQP error condition symbol of the `rejected` outcome, when it is one IoT Hub uses for
//!    a single meaning;
//! 2. otherwise the IoT Hub error code the hub puts at the start of the description,
//!    `ErrorCode:<Name>;<numeric code> <text>` (e.g. `ErrorCode:DeviceNotFound;404001 Device …`):
//!    the `<Name>` token and the numeric code are compared exactly;
//! 3. otherwise [`Outcome::Unknown`] (retried with backoff).
//!
//! Sources: the Azure IoT SDKs' AMQP error mapping (azure-iot-sdk-csharp `AmqpClientHelper` /
//! `IotHubAmqpErrorCode`, azure-iot-sdk-node `amqp_service_errors`, azure-iot-sdk-java
//! `AmqpSendHandler`) and IoT Hub's documented error codes.
//!
//! | condition | IoT Hub code | Outcome | class |
//! |---|---|---|---|
//! | `amqp:not-found` | 404001 DeviceNotFound | `DeviceNotFound` | Record |
//! | `amqp:resource-limit-exceeded` | 403004 DeviceMaximumQueueDepthExceeded | `DeviceQueueFull` | Retriable (per device) |
//! | `com.microsoft:device-container-throttled`, `com.microsoft:server-busy` | 429 ThrottlingException | `Throttled` | Retriable (whole sender slows down) |
//! | `amqp:link:message-size-exceeded` | 413 MessageTooLarge | `TooLarge` | Record |
//! | `com.microsoft:argument-error`, `com.microsoft:argument-out-of-range`, `amqp:decode-error`, `amqp:invalid-field` | 400 ArgumentInvalid / ArgumentNull | `Malformed` | Record |
//! | `amqp:unauthorized-access` | 401 IotHubUnauthorizedAccess | `Unauthorized` | Fatal (after re-authenticating did not help) |
//! | anything else | | `Unknown` | Retriable |
//!
//! Expired records never reach the hub: the sink refuses an expiry in the past as a record error
//! before sending (see `sink::message`).

use fe2o3_amqp::types::definitions::ErrorCondition;
use fe2o3_amqp::types::primitives::Symbol;
use serde::Serialize;

pub use crate::worker::errors::ErrorClass;

/// How IoT Hub (or the link) answered one send attempt, classified.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Outcome {
    Accepted,
    Throttled,
    DeviceQueueFull,
    DeviceNotFound,
    TooLarge,
    Malformed,
    Unauthorized,
    Unknown {
        condition: String,
        description: String,
    },
}

/// The IoT Hub error code at the start of a rejection's description:
/// `ErrorCode:<name>;<number> <text>`. Both parts are optional.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HubErrorCode<'a> {
    pub name: Option<&'a str>,
    pub number: Option<u32>,
}

impl<'a> HubErrorCode<'a> {
    /// Reads the structured prefix; free text after it is not looked at.
    pub fn parse(description: &'a str) -> HubErrorCode<'a> {
        let Some(rest) = description.trim_start().strip_prefix("ErrorCode:") else {
            return HubErrorCode::default();
        };
        let (name, after) = match rest.split_once(';') {
            Some((n, a)) => (n.trim(), a),
            None => (rest.trim(), ""),
        };
        let name =
            (!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric())).then_some(name);
        let first = after.split_whitespace().next().unwrap_or_default();
        let number =
            (first.len() >= 3 && first.len() <= 6 && first.bytes().all(|b| b.is_ascii_digit()))
                .then(|| first.parse().ok())
                .flatten();
        HubErrorCode { name, number }
    }

    fn outcome(&self) -> Option<Outcome> {
        let by_name = match self.name {
            Some("DeviceNotFound") => Some(Outcome::DeviceNotFound),
            Some("DeviceMaximumQueueDepthExceeded") => Some(Outcome::DeviceQueueFull),
            Some("ThrottlingException") | Some("ThrottleBacklogLimitExceeded") => {
                Some(Outcome::Throttled)
            }
            Some("MessageTooLarge") => Some(Outcome::TooLarge),
            Some("IotHubUnauthorizedAccess") | Some("IotHubUnauthorized") => {
                Some(Outcome::Unauthorized)
            }
            Some("ArgumentInvalid") | Some("ArgumentNull") => Some(Outcome::Malformed),
            _ => None,
        };
        by_name.or_else(|| match self.number? {
            404001 => Some(Outcome::DeviceNotFound),
            403004 => Some(Outcome::DeviceQueueFull),
            429 | 429000..=429999 => Some(Outcome::Throttled),
            413 | 413000..=413999 => Some(Outcome::TooLarge),
            401 | 401000..=401999 => Some(Outcome::Unauthorized),
            400 | 400000..=400999 => Some(Outcome::Malformed),
            _ => None,
        })
    }
}

impl Outcome {
    /// Classifies an AMQP error condition and the hub's description (see the module table).
    pub fn from_error(condition: &str, description: Option<&str>) -> Outcome {
        match condition {
            "amqp:not-found" => Outcome::DeviceNotFound,
            "amqp:resource-limit-exceeded" => Outcome::DeviceQueueFull,
            "com.microsoft:device-container-throttled" | "com.microsoft:server-busy" => {
                Outcome::Throttled
            }
            "amqp:link:message-size-exceeded" => Outcome::TooLarge,
            "amqp:unauthorized-access" => Outcome::Unauthorized,
            "com.microsoft:argument-error"
            | "com.microsoft:argument-out-of-range"
            | "amqp:decode-error"
            | "amqp:invalid-field" => Outcome::Malformed,
            _ => {
                let d = description.unwrap_or_default();
                HubErrorCode::parse(d)
                    .outcome()
                    .unwrap_or_else(|| Outcome::Unknown {
                        condition: condition.to_string(),
                        description: d.to_string(),
                    })
            }
        }
    }

    /// The error class of a failed send (`None` for `Accepted`).
    pub fn class(&self) -> Option<ErrorClass> {
        match self {
            Outcome::Accepted => None,
            Outcome::Throttled | Outcome::DeviceQueueFull | Outcome::Unknown { .. } => {
                Some(ErrorClass::Retriable)
            }
            Outcome::DeviceNotFound | Outcome::TooLarge | Outcome::Malformed => {
                Some(ErrorClass::Record)
            }
            Outcome::Unauthorized => Some(ErrorClass::Fatal),
        }
    }

    /// A final failure caused by the message itself (for `errors.tolerance`).
    pub fn is_record_error(&self) -> bool {
        self.class() == Some(ErrorClass::Record)
    }

    /// Final outcomes are never retried as such (accepted or a record error).
    pub fn is_final(&self) -> bool {
        matches!(self, Outcome::Accepted) || self.is_record_error()
    }

    /// Short label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Throttled => "throttled",
            Outcome::DeviceQueueFull => "device_queue_full",
            Outcome::DeviceNotFound => "device_not_found",
            Outcome::TooLarge => "too_large",
            Outcome::Malformed => "malformed",
            Outcome::Unauthorized => "unauthorized",
            Outcome::Unknown { .. } => "unknown",
        }
    }
}

/// The text of an AMQP error condition (its symbol).
pub fn condition_str(c: &ErrorCondition) -> String {
    match c {
        ErrorCondition::AmqpError(e) => Symbol::from(e).to_string(),
        ErrorCondition::ConnectionError(e) => Symbol::from(e).to_string(),
        ErrorCondition::SessionError(e) => Symbol::from(e).to_string(),
        ErrorCondition::LinkError(e) => Symbol::from(e).to_string(),
        ErrorCondition::Custom(s) => s.to_string(),
        #[allow(unreachable_patterns)]
        _ => format!("{c:?}"),
    }
}

/// The final result of one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    /// The id [`super::C2dClient::send`] assigned.
    pub id: u64,
    pub outcome: Outcome,
    /// The hub's error description, if any.
    pub description: Option<String>,
    /// Transfers made (1 when accepted at once).
    pub attempts: u32,
    /// When the last transfer was written to the link (`None` if it never was).
    pub sent_at: Option<std::time::Instant>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use ErrorClass::*;

    /// The whole table: (condition, description, outcome, class).
    #[test]
    fn classification_table() {
        let unknown = |c: &str, d: &str| Outcome::Unknown {
            condition: c.into(),
            description: d.into(),
        };
        let table: Vec<(&str, &str, Outcome, ErrorClass)> = vec![
            (
                "amqp:not-found",
                "Device not found",
                Outcome::DeviceNotFound,
                Record,
            ),
            (
                "amqp:resource-limit-exceeded",
                "",
                Outcome::DeviceQueueFull,
                Retriable,
            ),
            (
                "com.microsoft:device-container-throttled",
                "",
                Outcome::Throttled,
                Retriable,
            ),
            (
                "com.microsoft:server-busy",
                "",
                Outcome::Throttled,
                Retriable,
            ),
            (
                "amqp:link:message-size-exceeded",
                "",
                Outcome::TooLarge,
                Record,
            ),
            ("amqp:unauthorized-access", "", Outcome::Unauthorized, Fatal),
            (
                "com.microsoft:argument-error",
                "",
                Outcome::Malformed,
                Record,
            ),
            (
                "com.microsoft:argument-out-of-range",
                "",
                Outcome::Malformed,
                Record,
            ),
            ("amqp:decode-error", "", Outcome::Malformed, Record),
            ("amqp:invalid-field", "", Outcome::Malformed, Record),
            // The hub's error code when the condition is generic.
            (
                "amqp:internal-error",
                "ErrorCode:DeviceNotFound;404001 Device 'd' was not found",
                Outcome::DeviceNotFound,
                Record,
            ),
            (
                "x:y",
                "ErrorCode:DeviceMaximumQueueDepthExceeded;403004 queue full",
                Outcome::DeviceQueueFull,
                Retriable,
            ),
            (
                "x:y",
                "ErrorCode:ThrottlingException;429 throttled",
                Outcome::Throttled,
                Retriable,
            ),
            (
                "x:y",
                "ErrorCode:Other;429001 throttled",
                Outcome::Throttled,
                Retriable,
            ),
            (
                "x:y",
                "ErrorCode:MessageTooLarge;413001 too big",
                Outcome::TooLarge,
                Record,
            ),
            (
                "x:y",
                "ErrorCode:IotHubUnauthorizedAccess;401002 no",
                Outcome::Unauthorized,
                Fatal,
            ),
            (
                "x:y",
                "ErrorCode:ArgumentInvalid;400004 bad",
                Outcome::Malformed,
                Record,
            ),
            (
                "x:y",
                "ErrorCode:Whatever;404001",
                Outcome::DeviceNotFound,
                Record,
            ),
            // Never by substring: codes or names inside free text do not count.
            (
                "com.microsoft:timeout",
                "try later",
                unknown("com.microsoft:timeout", "try later"),
                Retriable,
            ),
            (
                "x:y",
                "device 404001 DeviceNotFound",
                unknown("x:y", "device 404001 DeviceNotFound"),
                Retriable,
            ),
            (
                "x:y",
                "ErrorCode:Foo;see 403004",
                unknown("x:y", "ErrorCode:Foo;see 403004"),
                Retriable,
            ),
            (
                "x:y",
                "ErrorCode:Foo;4290011 x",
                unknown("x:y", "ErrorCode:Foo;4290011 x"),
                Retriable,
            ),
            (
                "amqp:internal-error",
                "",
                unknown("amqp:internal-error", ""),
                Retriable,
            ),
        ];
        for (cond, desc, outcome, class) in table {
            let got = Outcome::from_error(cond, Some(desc));
            assert_eq!(got, outcome, "{cond} / {desc}");
            assert_eq!(got.class(), Some(class), "{cond} / {desc}");
            assert_eq!(got.is_record_error(), class == Record);
        }
        assert_eq!(Outcome::Accepted.class(), None);
        assert!(Outcome::Accepted.is_final());
        assert!(!Outcome::Unauthorized.is_final());
        assert!(!Outcome::Throttled.is_final());
    }

    #[test]
    fn hub_error_code_parsing() {
        assert_eq!(
            HubErrorCode::parse("ErrorCode:DeviceNotFound;404001 Device x"),
            HubErrorCode {
                name: Some("DeviceNotFound"),
                number: Some(404001)
            }
        );
        assert_eq!(
            HubErrorCode::parse("ErrorCode:ThrottlingException"),
            HubErrorCode {
                name: Some("ThrottlingException"),
                number: None
            }
        );
        assert_eq!(HubErrorCode::parse("404001"), HubErrorCode::default());
        assert_eq!(
            HubErrorCode::parse("ErrorCode:a b;x"),
            HubErrorCode::default()
        );
    }
}
