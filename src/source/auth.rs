//! Refused credentials and the address actually dialled (issue 9.5): a key the hub refuses (CBS
//! put-token status 401/403, or `amqp:unauthorized-access`) is not a transient error, so the source
//! fails at once with the cause instead of retrying while the reason sits only in SDK WARN lines.

use crate::config::SourceConfig;
use azure_core_amqp::error::{AmqpErrorCondition, AmqpErrorKind};
use azure_core_amqp::AmqpError;
use azure_messaging_eventhubs::error::ErrorKind;
use azure_messaging_eventhubs::EventHubsError;

fn amqp_unauthorized(e: &AmqpError) -> bool {
    match e.kind() {
        AmqpErrorKind::ManagementStatusCode(status, _) => matches!(u16::from(*status), 401 | 403),
        AmqpErrorKind::AmqpDescribedError(d) => {
            d.condition == AmqpErrorCondition::UnauthorizedAccess
        }
        AmqpErrorKind::AzureCore(e) => core_unauthorized(e),
        _ => false,
    }
}

fn core_unauthorized(e: &azure_core::Error) -> bool {
    if e.http_status()
        .is_some_and(|s| matches!(u16::from(s), 401 | 403))
    {
        return true;
    }
    e.get_ref().is_some_and(|inner| chain_unauthorized(inner))
}

/// Walks an error chain looking for a refusal of the credentials.
fn chain_unauthorized(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(e) = cur {
        if let Some(a) = e.downcast_ref::<AmqpError>() {
            if amqp_unauthorized(a) {
                return true;
            }
        }
        if let Some(c) = e.downcast_ref::<azure_core::Error>() {
            if c.http_status()
                .is_some_and(|s| matches!(u16::from(s), 401 | 403))
            {
                return true;
            }
        }
        cur = e.source();
    }
    false
}

/// True when the hub refused the credentials (decided by status codes and AMQP conditions).
pub fn is_unauthorized(e: &EventHubsError) -> bool {
    match &e.kind {
        ErrorKind::AmqpError(a) if amqp_unauthorized(a) => true,
        ErrorKind::AzureCore(c) if core_unauthorized(c) => true,
        _ => chain_unauthorized(e),
    }
}

/// The address the Event Hubs client dials: the custom endpoint, else the namespace host on the
/// transport's port (the SDK drops any port in the `sb://` endpoint).
pub fn dialled(source: &SourceConfig) -> String {
    if source.transport.kind == super::transport::TransportType::AmqpWebSockets {
        // The library keeps only host[:port] of the custom endpoint (or the hub's host, port 443).
        let target = source
            .custom_endpoint
            .clone()
            .unwrap_or_else(|| source.connection.endpoint.clone());
        let rest = target.split_once("://").map_or(target.as_str(), |(_, r)| r);
        let authority = rest.split('/').next().unwrap_or(rest);
        let authority = if source.custom_endpoint.is_some() {
            authority.to_string()
        } else {
            authority.split(':').next().unwrap_or(authority).to_string()
        };
        return format!("wss://{authority}/$servicebus/websocket/");
    }
    match &source.custom_endpoint {
        Some(e) => e.clone(),
        None => {
            let host = source.connection.host();
            // `host` may carry a port (`127.0.0.1:5672`); the SDK drops it.
            let name = match host.rsplit_once(':') {
                Some((h, p)) if p.parse::<u16>().is_ok() => h,
                _ => host,
            };
            format!("amqps://{name}:5671")
        }
    }
}

/// The task's final error for refused credentials (no secret in it).
pub fn refused(source: &SourceConfig, e: &EventHubsError) -> anyhow::Error {
    anyhow::anyhow!(
        "IoT Hub refused the access key: the shared access policy '{}' was not accepted for event hub {} at {} (401 amqp:unauthorized-access: {e}). \
         Check IotHub.AccessKeyName/IotHub.AccessKeyValue (or the key in IotHub.ConnectionString) against the hub's Built-in endpoints page; \
         a refused key is not retried",
        source.connection.key_name,
        source.connection.event_hub_name,
        dialled(source)
    )
}
