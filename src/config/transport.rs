//! How to reach the hub: `IotHub.CustomEndpoint`, `IotHub.TransportType`, `IotHub.AllowPlaintext`,
//! `IotHub.TrustedCaFile`, `IotHub.Proxy` (the same keys for source and sink).
//!
//! Invariant: credentials never go unencrypted to a non-loopback host unless `IotHub.AllowPlaintext`
//! says so; a refused endpoint is a problem on `IotHub.CustomEndpoint`, never a silent downgrade.

use super::connector::filled;
use super::reader::Reader;

/// `IotHub.TransportType`: AMQP over TCP (port 5671) or over WebSockets (port 443).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TransportType {
    #[default]
    Amqp,
    AmqpWebSockets,
}

/// How to reach the hub (source and sink use the same keys).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HubTransport {
    /// `IotHub.CustomEndpoint`: `amqp(s)://host:port` or `ws(s)://host[:port][/path]`.
    pub custom_endpoint: Option<String>,
    /// `IotHub.TransportType` (`Amqp` default, `AmqpWebSockets`).
    pub transport: TransportType,
    /// `IotHub.AllowPlaintext`: allow an unencrypted custom endpoint on a non-loopback host.
    pub allow_plaintext: bool,
    /// `IotHub.TrustedCaFile`: PEM CA bundle trusted instead of the public roots.
    pub trusted_ca_file: Option<std::path::PathBuf>,
    /// `IotHub.Proxy`: `http://[user:pass@]host:port` for WebSockets (else `HTTPS_PROXY`).
    pub proxy: Option<String>,
}

/// True for `localhost`, 127.0.0.0/8 and ::1 (with or without brackets).
pub fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Reads the transport keys; problems are reported on the key they concern.
pub fn read_hub_transport(r: &mut Reader) -> Option<HubTransport> {
    let before = r.problems.len();
    let transport = match r
        .one_of("IotHub.TransportType", "Amqp", &["Amqp", "AmqpWebSockets"])
        .as_str()
    {
        "AmqpWebSockets" => TransportType::AmqpWebSockets,
        _ => TransportType::Amqp,
    };
    let allow_plaintext = r.boolean("IotHub.AllowPlaintext", false);
    let custom_endpoint = filled(r.string("IotHub.CustomEndpoint")).and_then(|v| {
        let v = v.trim_end_matches('/').to_string();
        let (scheme, rest) = v.split_once("://").unwrap_or_default();
        let scheme = scheme.to_ascii_lowercase();
        let authority = rest.split('/').next().unwrap_or_default();
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (h, Some(p)),
            _ => (authority, None),
        };
        let port_ok = port.is_some_and(|p| p.parse::<u16>().is_ok());
        let ok = match scheme.as_str() {
            "amqp" | "amqps" => !host.is_empty() && port_ok,
            "ws" | "wss" => !host.is_empty() && (port.is_none() || port_ok),
            _ => false,
        };
        if !ok {
            r.problem(
                "IotHub.CustomEndpoint",
                "Invalid value: expected amqp://host:port, amqps://host:port, ws://host:port[/path] or wss://host[:port][/path]",
            );
            return None;
        }
        if (scheme == "amqp" || scheme == "ws") && !allow_plaintext && !is_loopback_host(host) {
            r.problem(
                "IotHub.CustomEndpoint",
                format!("{scheme}:// to {host} would send the IoT Hub credentials unencrypted; use {scheme}s:// or set IotHub.AllowPlaintext=true"),
            );
            return None;
        }
        Some(v)
    });
    let trusted_ca_file = filled(r.string("IotHub.TrustedCaFile")).map(std::path::PathBuf::from);
    if let Some(p) = &trusted_ca_file {
        if let Err(e) = std::fs::metadata(p) {
            r.problem(
                "IotHub.TrustedCaFile",
                format!("cannot read {}: {e}", p.display()),
            );
        }
    }
    let proxy = filled(r.string("IotHub.Proxy"));
    if let Some(p) = &proxy {
        if !p.to_ascii_lowercase().starts_with("http://") {
            r.problem(
                "IotHub.Proxy",
                "Invalid value: expected http://[user:password@]host:port",
            );
        }
    }
    if r.problems.len() > before {
        return None;
    }
    Some(HubTransport {
        custom_endpoint,
        transport,
        allow_plaintext,
        trusted_ca_file,
        proxy,
    })
}
