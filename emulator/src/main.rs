//! `iotconnect-emulator`: the loopback IoT Hub. Prints one JSON line with its connection strings on
//! stdout, logs on stderr (`IOTCONNECT_LOG`, RUST_LOG syntax; default `info`), runs until
//! SIGTERM/SIGINT.

use clap::Parser;
use iotconnect_emulator::{run_cli, EmulatorArgs};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "iotconnect-emulator",
    version,
    about = "Loopback Azure IoT Hub for tests, demos and the by-hand tutorial"
)]
struct Cli {
    /// Log layout on stderr.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(flatten)]
    args: EmulatorArgs,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("IOTCONNECT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => fmt.init(),
        LogFormat::Json => fmt.json().init(),
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run_cli(cli.args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("iotconnect-emulator: {e:#}");
            ExitCode::from(1)
        }
    }
}
