//! How the source reaches the Event Hub: the transport keys shared with the sink (`IotHub.TransportType`,
//! `IotHub.CustomEndpoint`, `IotHub.AllowPlaintext`, `IotHub.TrustedCaFile`, `IotHub.Proxy`; read by
//! `config::connector::read_hub_transport`), restricted to what the source's library can do.
//!
//! What the Event Hubs client library (`azure_messaging_eventhubs` 0.16 / `azure_core_amqp`
//! 1.2.0-beta.1) allows, and therefore what the source does:
//! * `Amqp` (default): AMQP over TCP; `amqps://` (TLS, rustls with the platform's roots) or, with
//!   `IotHub.CustomEndpoint=amqp://…`, plain TCP.
//! * `AmqpWebSockets`: AMQP over a secure WebSocket, always TLS: `wss://<host[:port]>/$servicebus/websocket/`
//!   where host and port come from `IotHub.CustomEndpoint` when set (its port is then the WebSocket
//!   port) else from the hub (port 443). There is no plain `ws://` in the library.
//! * The library takes no TLS settings: a private CA is trusted only through the standard
//!   `SSL_CERT_FILE` environment variable (which replaces the system roots for this process).
//!   `IotHub.TrustedCaFile` is therefore accepted on a source only when `SSL_CERT_FILE` names the same
//!   file, else it is a configuration problem saying so.
//! * The library has no HTTP(S) proxy support (neither a setting nor `HTTPS_PROXY`): `IotHub.Proxy`
//!   on a source is a configuration problem saying so.
//! * `IotHub.CustomEndpoint=amqp://` (no TLS: the SAS key and every event in clear) to a host other
//!   than loopback is refused unless `IotHub.AllowPlaintext=true`.

use crate::config::connector::HubTransport;
pub use crate::config::connector::TransportType;
use crate::config::Reader;

/// The source's transport settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceTransport {
    pub kind: TransportType,
    pub allow_plaintext: bool,
}

/// The scheme of `scheme://…`, lower case.
fn scheme(endpoint: &str) -> String {
    endpoint
        .split_once("://")
        .map_or("", |(s, _)| s)
        .to_ascii_lowercase()
}

/// Applies what the Event Hubs library cannot do to the shared transport keys (read by
/// `config::connector::read_hub_transport`, which also refuses plaintext to remote hosts); problems
/// go to `r`.
pub fn for_source(r: &mut Reader, hub: Option<&HubTransport>) -> SourceTransport {
    let Some(hub) = hub else {
        return SourceTransport::default();
    };
    if let Some(ep) = &hub.custom_endpoint {
        let scheme = scheme(ep);
        match hub.transport {
            TransportType::AmqpWebSockets if scheme == "amqp" || scheme == "ws" => r.problem(
                "IotHub.CustomEndpoint",
                format!("{ep}: IotHub.TransportType=AmqpWebSockets always uses TLS (wss://) in the Event Hubs client library used by the source; give amqps://host:port or wss://host:port (the WebSocket port)"),
            ),
            TransportType::Amqp if scheme == "ws" || scheme == "wss" => r.problem(
                "IotHub.CustomEndpoint",
                format!("{ep} is a WebSocket endpoint: set IotHub.TransportType=AmqpWebSockets"),
            ),
            _ => {}
        }
    }
    if hub.proxy.is_some() {
        r.problem(
            "IotHub.Proxy",
            "the Event Hubs client library used by the source (azure_messaging_eventhubs 0.16) cannot connect through an HTTP(S) proxy (it ignores HTTPS_PROXY too); \
             reach the hub directly, or run a TCP forwarder and point IotHub.CustomEndpoint at it",
        );
    }
    if let Some(ca) = &hub.trusted_ca_file {
        let env = std::env::var_os("SSL_CERT_FILE");
        if env.as_deref() != Some(ca.as_os_str()) {
            let ca = ca.display();
            r.problem(
                "IotHub.TrustedCaFile",
                format!("the Event Hubs client library used by the source takes no TLS settings; it trusts a private CA only through the environment: \
                         start iotconnect with SSL_CERT_FILE={ca} (systemd: Environment=SSL_CERT_FILE={ca}; the bundle replaces the system roots, so include the public roots if the hub is on Azure)"),
            );
        }
    }
    SourceTransport {
        kind: hub.transport,
        allow_plaintext: hub.allow_plaintext,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(keys: &[(&str, &str)]) -> (SourceTransport, Vec<String>) {
        let props: crate::config::properties::Properties = keys
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut r = Reader::new("source.properties", &props);
        let hub = crate::config::connector::read_hub_transport(&mut r);
        let t = for_source(&mut r, hub.as_ref());
        (t, r.problems.0.iter().map(|p| p.to_string()).collect())
    }

    #[test]
    fn plaintext_to_a_remote_host_needs_the_opt_in() {
        let ep = ("IotHub.CustomEndpoint", "amqp://10.1.2.3:5672");
        let (_, p) = problems(&[ep]);
        assert!(
            p.len() == 1 && p[0].contains("IotHub.AllowPlaintext=true"),
            "{p:?}"
        );
        let (t, p) = problems(&[ep, ("IotHub.AllowPlaintext", "true")]);
        assert!(p.is_empty() && t.allow_plaintext, "{p:?}");
        let (_, p) = problems(&[("IotHub.CustomEndpoint", "amqp://127.0.0.1:5672")]);
        assert!(p.is_empty(), "loopback is fine: {p:?}");
        let (_, p) = problems(&[("IotHub.CustomEndpoint", "amqps://10.1.2.3:5671")]);
        assert!(p.is_empty(), "TLS is fine: {p:?}");
    }

    #[test]
    fn websockets_proxy_and_ca_keys() {
        let ws = ("IotHub.TransportType", "AmqpWebSockets");
        let (t, p) = problems(&[ws]);
        assert_eq!(t.kind, TransportType::AmqpWebSockets);
        assert!(p.is_empty(), "{p:?}");
        let (_, p) = problems(&[ws, ("IotHub.CustomEndpoint", "amqp://127.0.0.1:1")]);
        assert!(p.len() == 1 && p[0].contains("wss://"), "{p:?}");
        let (_, p) = problems(&[("IotHub.CustomEndpoint", "wss://127.0.0.1:8443")]);
        assert!(p.len() == 1 && p[0].contains("AmqpWebSockets"), "{p:?}");
        let (_, p) = problems(&[ws, ("IotHub.CustomEndpoint", "wss://127.0.0.1:8443")]);
        assert!(p.is_empty(), "{p:?}");
        let (_, p) = problems(&[("IotHub.TransportType", "Tcp")]);
        assert_eq!(p.len(), 1, "{p:?}");
        let (_, p) = problems(&[("IotHub.Proxy", "http://127.0.0.1:3128")]);
        assert!(p.len() == 1 && p[0].contains("proxy"), "{p:?}");
        let ca = tempfile::NamedTempFile::new().unwrap();
        let path = ca.path().to_str().unwrap().to_string();
        let (_, p) = problems(&[("IotHub.TrustedCaFile", &path)]);
        assert!(
            p.len() == 1 && p[0].contains(&format!("SSL_CERT_FILE={path}")),
            "{p:?}"
        );
    }
}
