//! The IoT Hub sink connector's keys (toketi.md §3.2 plus iotconnect's own): which topics, which
//! hub, the acknowledgement mode, the C2D window and rate, the feedback topic.
//!
//! `read_sink` reports every problem on the key it concerns and returns `None` if there was any.

use super::connector::{filled, ErrorsConfig, PLACEHOLDER};
use super::reader::Reader;
use super::transport::{read_hub_transport, HubTransport};
use super::Secret;

/// `IotHub.MessageDeliveryAcknowledgement`: the one ack enum, defined with the C2D message.
pub use crate::iothub::c2d::AckMode as Ack;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Topics {
    List(Vec<String>),
    Regex(String),
}

#[derive(Clone, Debug)]
pub struct SinkConfig {
    pub topics: Topics,
    /// IoT Hub service connection string (`HostName=…;SharedAccessKeyName=…;SharedAccessKey=…`).
    pub connection_string: Secret,
    pub ack: Ack,
    /// `IotHub.CustomEndpoint`, `IotHub.TransportType`, `IotHub.AllowPlaintext`,
    /// `IotHub.TrustedCaFile`, `IotHub.Proxy`.
    pub hub: HubTransport,
    pub max_in_flight: usize,
    pub max_sends_per_second: u32,
    pub feedback_topic: Option<String>,
}

pub(super) fn read_sink(r: &mut Reader, errors: &ErrorsConfig) -> Option<SinkConfig> {
    let before = r.problems.len();
    let list = filled(r.string("topics"));
    let regex = filled(r.string("topics.regex"));
    let topics = match (list, regex) {
        (Some(l), None) => {
            let t: Vec<String> = l
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            Some(Topics::List(t))
        }
        (None, Some(re)) => match regex::Regex::new(&re) {
            Ok(_) => Some(Topics::Regex(re)),
            Err(e) => {
                r.problem("topics.regex", format!("Invalid regular expression: {e}"));
                None
            }
        },
        (Some(_), Some(_)) => {
            r.problem(
                "topics",
                "Must configure one of topics or topics.regex, not both",
            );
            None
        }
        (None, None) => {
            r.problem(
                "topics",
                "Must configure one of topics or topics.regex (e.g. topics=iotout)",
            );
            None
        }
    };
    if let (Some(Topics::List(t)), Some(dlq)) = (&topics, &errors.dlq_topic) {
        if t.contains(dlq) {
            r.problem(
                "errors.deadletterqueue.topic.name",
                format!("The DLQ topic '{dlq}' may not be included in the list of topics ('topics') to consume"),
            );
        }
    }
    let connection_string = match r.secret("IotHub.ConnectionString") {
        Some(cs) if cs.expose() == PLACEHOLDER => {
            r.problem(
                "IotHub.ConnectionString",
                "still PLACEHOLDER: set the service policy's connection string (IoT Hub > Shared access policies > service)",
            );
            None
        }
        None => {
            let hint = r
                .misspelling_of("IotHub.ConnectionString")
                .map_or(String::new(), |k| {
                    format!(" The file has \"{k}\": did you mean \"IotHub.ConnectionString\"?")
                });
            r.problem(
                "IotHub.ConnectionString",
                format!("Missing required configuration \"IotHub.ConnectionString\" (HostName=<hub>.azure-devices.net;SharedAccessKeyName=service;SharedAccessKey=…).{hint}"),
            );
            None
        }
        Some(cs) => match crate::iothub::connstr::IotHubConnectionString::parse(&cs) {
            Ok(_) => Some(cs),
            Err(e) => {
                r.problem(
                    "IotHub.ConnectionString",
                    format!("not an IoT Hub service connection string: {e} (expected HostName=<hub>.azure-devices.net;SharedAccessKeyName=service;SharedAccessKey=…)"),
                );
                None
            }
        },
    };
    let ack = match r
        .one_of(
            "IotHub.MessageDeliveryAcknowledgement",
            "None",
            &["None", "Full", "PositiveOnly", "NegativeOnly"],
        )
        .as_str()
    {
        "Full" => Ack::Full,
        "PositiveOnly" => Ack::Positive,
        "NegativeOnly" => Ack::Negative,
        _ => Ack::None,
    };
    let hub = read_hub_transport(r);
    let max_in_flight = r.int("IotHub.C2D.MaxInFlight", 64, 1, 10_000) as usize;
    let max_sends_per_second = r.int("IotHub.C2D.MaxSendsPerSecond", 0, 0, 1_000_000) as u32;
    let feedback_topic = filled(r.string("IotHub.FeedbackTopic"));
    if feedback_topic.is_some() && ack == Ack::None {
        r.problem(
            "IotHub.FeedbackTopic",
            "feedback only exists when IotHub.MessageDeliveryAcknowledgement is Full, PositiveOnly or NegativeOnly",
        );
    }
    if r.problems.len() > before {
        return None;
    }
    Some(SinkConfig {
        topics: topics?,
        connection_string: connection_string?,
        ack,
        hub: hub?,
        max_in_flight,
        max_sends_per_second,
        feedback_topic,
    })
}
