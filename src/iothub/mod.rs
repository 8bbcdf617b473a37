//! IoT Hub service side: SAS tokens, connection strings, AMQP CBS, cloud-to-device client,
//! delivery feedback.
//!
//! Typical use by the sink task (one client per task):
//!
//! ```text
//! let cs = IotHubConnectionString::parse(&secret)?;            // IotHub.ConnectionString
//! let mut opts = C2dOptions::new(cs);
//! opts.endpoint = custom_endpoint;                             // IotHub.CustomEndpoint
//! opts.max_in_flight = 64;                                     // IotHub.C2D.MaxInFlight
//! opts.max_sends_per_second = 0;                               // IotHub.C2D.MaxSendsPerSecond
//! opts.feedback = feedback_topic.is_some();                    // IotHub.FeedbackTopic
//! let client = C2dClient::connect(opts).await?;                // fails fast on bad endpoint/credentials
//! let handle = client.send(C2dMessage { .. }).await?;          // waits only when max_queued are pending
//! // keep (topic, partition, offset) beside the handle; commit once it resolves:
//! match handle.await?.outcome { Outcome::Accepted => commit, o if o.is_record_error() => errors.tolerance, _ => … }
//! let mut feedback = client.take_feedback().unwrap();          // FeedbackBatch { records, ack }
//! // produce each record to Kafka (key = device id), then batch.ack.accept()
//! ```
//!
//! Every other outcome (throttling, queue full, unknown errors, connection loss) is retried inside
//! the client; with `retry_timeout` set such a message completes with its last outcome instead.

pub mod c2d;
pub mod cbs;
pub mod connstr;
pub mod feedback;
pub mod ratelimit;
pub mod sas;
