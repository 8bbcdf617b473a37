//! The command line of `iotconnect-emulator`: flags, and running until SIGTERM/SIGINT with one JSON
//! line of connection info on stdout.

use super::{tutorial, Emulator, EmulatorOptions, Secret, DEFAULT_RETENTION_EVENTS};
use anyhow::Context;
use std::net::SocketAddr;
use std::path::PathBuf;

fn parse_secret(s: &str) -> Result<Secret, String> {
    Ok(Secret::new(s))
}

/// `iotconnect-emulator` arguments (`Debug` hides the service key).
#[derive(clap::Args, Debug, Clone)]
pub struct EmulatorArgs {
    /// IoT Hub name (also the Event Hub-compatible name).
    #[arg(long, default_value = "myhub")]
    pub hub_name: String,
    /// Number of partitions.
    #[arg(long, default_value_t = 4)]
    pub partitions: u32,
    /// Consumer groups besides $Default (comma separated).
    #[arg(long, value_delimiter = ',')]
    pub consumer_groups: Vec<String>,
    /// AMQP listen address (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:5672")]
    pub amqp_listen: SocketAddr,
    /// HTTP listen address (device API and /emulator control endpoints).
    #[arg(long, default_value = "127.0.0.1:8089")]
    pub http_listen: SocketAddr,
    /// AMQP over WebSockets listen address (path /$servicebus/websocket, subprotocol AMQPWSB10;
    /// wss with --tls-cert/--tls-key). Off when omitted.
    #[arg(long)]
    pub ws_listen: Option<SocketAddr>,
    /// Write the tutorial's connect-standalone.properties, connect-iothub-source.properties and
    /// connect-iothub-sink.properties, filled in for this emulator, into DIR (then keep running).
    #[arg(long, value_name = "DIR")]
    pub write_config: Option<PathBuf>,
    /// bootstrap.servers for the worker file of --write-config.
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub kafka_bootstrap: String,
    /// PEM certificate chain: the AMQP listener then speaks amqps (TLS first, as Azure does).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The `service` policy key, base64 (random when omitted).
    #[arg(long, env = "IOTCONNECT_EMULATOR_SERVICE_KEY", hide_env_values = true, value_parser = parse_secret)]
    pub service_key: Option<Secret>,
    /// Events kept per partition.
    #[arg(long, default_value_t = DEFAULT_RETENTION_EVENTS)]
    pub retention_events: usize,
    /// Hub-wide cloud-to-device messages per second (0 = unlimited).
    #[arg(long, default_value_t = 0)]
    pub c2d_rate_limit: u32,
    /// Registered device ids (comma separated); unknown devices get DeviceNotFound. Default: any.
    #[arg(long, value_delimiter = ',')]
    pub devices: Option<Vec<String>>,
    /// Accept any token and any (or no) Authorization header.
    #[arg(long)]
    pub no_auth: bool,
}

impl EmulatorArgs {
    pub fn to_options(&self) -> EmulatorOptions {
        let d = EmulatorOptions::default();
        EmulatorOptions {
            hub_name: self.hub_name.clone(),
            partitions: self.partitions,
            consumer_groups: self.consumer_groups.clone(),
            amqp_listen: self.amqp_listen,
            http_listen: self.http_listen,
            ws_listen: self.ws_listen,
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            service_key: self.service_key.clone().unwrap_or(d.service_key),
            retention_events: self.retention_events,
            c2d_rate_limit: (self.c2d_rate_limit > 0).then_some(self.c2d_rate_limit),
            devices: self.devices.clone(),
            no_auth: self.no_auth,
        }
    }
}

/// Runs the emulator until SIGTERM/SIGINT: prints exactly one JSON line ([`ConnectionInfo`]) on
/// stdout; logs go to stderr through `tracing` (the caller installs the subscriber).
pub async fn run_cli(args: EmulatorArgs) -> anyhow::Result<()> {
    use std::io::Write;
    let emu = Emulator::start(args.to_options()).await?;
    if let Some(dir) = &args.write_config {
        let paths = tutorial::write(dir, emu.info(), &args.kafka_bootstrap)?;
        for p in paths {
            tracing::info!(file = %p.display(), "tutorial file written");
        }
    }
    {
        let line = serde_json::to_string(emu.info())?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")?;
        out.flush()?;
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot install the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("emulator stopping");
    emu.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_hide_the_key() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: EmulatorArgs,
        }
        let cli = Cli::parse_from([
            "x",
            "--service-key",
            "c2VjcmV0a2V5",
            "--consumer-groups",
            "a,b",
            "--devices",
            "d1,d2",
            "--c2d-rate-limit",
            "5",
        ]);
        assert!(!format!("{:?}", cli.args).contains("c2VjcmV0a2V5"));
        let o = cli.args.to_options();
        assert_eq!(o.service_key.expose(), "c2VjcmV0a2V5");
        assert_eq!(o.consumer_groups, vec!["a", "b"]);
        assert_eq!(o.devices, Some(vec!["d1".to_string(), "d2".to_string()]));
        assert_eq!(o.c2d_rate_limit, Some(5));
        assert_eq!(o.retention_events, DEFAULT_RETENTION_EVENTS);
    }
}
