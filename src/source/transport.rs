//! How the source reaches the Event Hub: `IotHub.TransportType`, and the transport safety keys shared
//! with the sink (`IotHub.AllowPlaintext`, `IotHub.TrustedCaFile`, `IotHub.Proxy`; names agreed in
//! INTERFACES.md).
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

use crate::config::Reader;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportType {
    Amqp,
    AmqpWebSockets,
}

/// The source's transport settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceTransport {
    pub kind: TransportType,
    pub allow_plaintext: bool,
}

impl Default for SourceTransport {
    fn default() -> Self {
        SourceTransport {
            kind: TransportType::Amqp,
            allow_plaintext: false,
        }
    }
}

/// The host of `scheme://host:port[/…]`.
fn endpoint_host(endpoint: &str) -> &str {
    let rest = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, r)| r)
        .trim_end_matches('/');
    let authority = rest.split('/').next().unwrap_or(rest);
    match authority.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => h,
        _ => authority,
    }
}

/// Loopback hosts: `localhost`, 127.0.0.0/8, `::1`.
pub fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Reads the transport keys of a source connector; problems go to `r`.
pub fn read(r: &mut Reader, custom_endpoint: Option<&str>) -> SourceTransport {
    let kind = match r
        .one_of("IotHub.TransportType", "Amqp", &["Amqp", "AmqpWebSockets"])
        .as_str()
    {
        "AmqpWebSockets" => TransportType::AmqpWebSockets,
        _ => TransportType::Amqp,
    };
    let allow_plaintext = r.boolean("IotHub.AllowPlaintext", false);
    if let Some(ep) = custom_endpoint {
        if ep.starts_with("amqp://") {
            if kind == TransportType::AmqpWebSockets {
                r.problem(
                    "IotHub.CustomEndpoint",
                    format!("{ep}: IotHub.TransportType=AmqpWebSockets always uses TLS (wss://) in the Event Hubs client library; give amqps://host:port (the WebSocket port)"),
                );
            } else if !allow_plaintext && !is_loopback(endpoint_host(ep)) {
                r.problem(
                    "IotHub.CustomEndpoint",
                    format!("{ep} is plain AMQP (no TLS) to a host that is not loopback: the access key and every event would cross the network in clear. Use amqps://, or set IotHub.AllowPlaintext=true if this network is trusted"),
                );
            }
        }
    }
    if let Some(proxy) = r.non_empty("IotHub.Proxy") {
        let _ = proxy;
        r.problem(
            "IotHub.Proxy",
            "the Event Hubs client library used by the source (azure_messaging_eventhubs 0.16) cannot connect through an HTTP(S) proxy (it ignores HTTPS_PROXY too); \
             reach the hub directly, or run a TCP forwarder and point IotHub.CustomEndpoint at it",
        );
    }
    if let Some(ca) = r.non_empty("IotHub.TrustedCaFile") {
        let env = std::env::var("SSL_CERT_FILE").ok();
        if env.as_deref() != Some(ca.as_str()) {
            r.problem(
                "IotHub.TrustedCaFile",
                format!("the Event Hubs client library used by the source takes no TLS settings; it trusts a private CA only through the environment: \
                         start iotconnect with SSL_CERT_FILE={ca} (systemd: Environment=SSL_CERT_FILE={ca}; the bundle replaces the system roots, so include the public roots if the hub is on Azure)"),
            );
        } else if !std::path::Path::new(&ca).is_file() {
            r.problem(
                "IotHub.TrustedCaFile",
                format!("{ca} does not exist or is not a file"),
            );
        }
    }
    SourceTransport {
        kind,
        allow_plaintext,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in [
            "127.0.0.1",
            "127.1.2.3",
            "localhost",
            "LOCALHOST",
            "[::1]",
            "::1",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in ["10.0.0.1", "myhub.servicebus.windows.net", "[2001:db8::1]"] {
            assert!(!is_loopback(h), "{h}");
        }
        assert_eq!(endpoint_host("amqp://10.1.2.3:5672/"), "10.1.2.3");
        assert_eq!(endpoint_host("amqp://[::1]:5672"), "[::1]");
    }

    fn problems(keys: &[(&str, &str)], ep: Option<&str>) -> (SourceTransport, Vec<String>) {
        let props: crate::config::properties::Properties = keys
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut r = Reader::new("source.properties", &props);
        let t = read(&mut r, ep);
        (t, r.problems.0.iter().map(|p| p.to_string()).collect())
    }

    #[test]
    fn plaintext_to_a_remote_host_needs_the_opt_in() {
        let (_, p) = problems(&[], Some("amqp://10.1.2.3:5672"));
        assert!(
            p.len() == 1 && p[0].contains("IotHub.AllowPlaintext=true"),
            "{p:?}"
        );
        let (t, p) = problems(
            &[("IotHub.AllowPlaintext", "true")],
            Some("amqp://10.1.2.3:5672"),
        );
        assert!(p.is_empty() && t.allow_plaintext, "{p:?}");
        let (_, p) = problems(&[], Some("amqp://127.0.0.1:5672"));
        assert!(p.is_empty(), "loopback is fine: {p:?}");
        let (_, p) = problems(&[], Some("amqps://10.1.2.3:5671"));
        assert!(p.is_empty(), "TLS is fine: {p:?}");
    }

    #[test]
    fn websockets_proxy_and_ca_keys() {
        let (t, p) = problems(&[("IotHub.TransportType", "AmqpWebSockets")], None);
        assert_eq!(t.kind, TransportType::AmqpWebSockets);
        assert!(p.is_empty(), "{p:?}");
        let (_, p) = problems(
            &[("IotHub.TransportType", "AmqpWebSockets")],
            Some("amqp://127.0.0.1:1"),
        );
        assert!(p.len() == 1 && p[0].contains("wss://"), "{p:?}");
        let (_, p) = problems(&[("IotHub.TransportType", "Tcp")], None);
        assert_eq!(p.len(), 1, "{p:?}");
        let (_, p) = problems(&[("IotHub.Proxy", "http://127.0.0.1:3128")], None);
        assert!(p.len() == 1 && p[0].contains("proxy"), "{p:?}");
        let (_, p) = problems(&[("IotHub.TrustedCaFile", "/nonexistent/ca.pem")], None);
        assert!(
            p.len() == 1 && p[0].contains("SSL_CERT_FILE=/nonexistent/ca.pem"),
            "{p:?}"
        );
    }
}
