//! `cargo run --example emulator -- <args>`: the same as `iotconnect emulator <args>`. Prints one
//! JSON line (the connection info) on stdout; logs go to stderr (`RUST_LOG`, default `info`).

use clap::Parser;
use iotconnect::emulator::{run_cli, EmulatorArgs};

#[derive(Parser)]
#[command(name = "emulator", about = "Loopback Azure IoT Hub emulator")]
struct Cli {
    #[command(flatten)]
    args: EmulatorArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    run_cli(Cli::parse().args).await
}
