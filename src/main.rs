//! `iotconnect`: the command line. Everything else lives in the library.

use clap::{Args, Parser, Subcommand};
use iotconnect::worker::logging::{self, LogFormat};
use std::path::PathBuf;
use std::process::ExitCode;

const EXAMPLES: &str = "\
Examples:
  # Run the IoT Hub source and sink, as connect-standalone.sh would:
  iotconnect standalone config/connect-standalone.properties \\
      config/connect-iothub-source.properties config/connect-iothub-sink.properties

  # Check every file offline (exit 0 valid, 78 invalid; one problem per line as FILE:KEY: message):
  iotconnect validate config/connect-standalone.properties config/connect-iothub-source.properties

  # Inspect or reset stored source offsets (the worker must be stopped for reset):
  iotconnect offsets show /tmp/connect.offsets
  iotconnect offsets reset /tmp/connect.offsets --connector AzureIotHubConnector --partition 2

  # A running worker at a glance (exit 1 when a task FAILED, 2 when the worker does not answer):
  iotconnect status --url http://127.0.0.1:8083 [--user admin]

Logging: IOTCONNECT_LOG=debug (RUST_LOG syntax), --log-format json.";

#[derive(Parser)]
#[command(name = "iotconnect", version, about = "Azure IoT Hub <-> Apache Kafka: a drop-in replacement for Kafka Connect standalone running the IoT Hub connectors", after_help = EXAMPLES)]
struct Cli {
    /// Log layout: Kafka Connect's text layout, or JSON lines.
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run connectors, as connect-standalone.sh WORKER.properties CONNECTOR.properties...
    Standalone(Files),
    /// Check the worker and connector files offline and print the effective configuration.
    Validate(Files),
    /// [dist] Run connectors on several workers sharing the hub partitions (Kafka Connect's distributed mode).
    Distributed(DistributedFiles),
    /// Read or edit the source offsets file (offset.storage.file.filename).
    Offsets(iotconnect::offsets::OffsetsArgs),
    /// Show a running worker: connectors, tasks, partitions, lag, commits, C2D (exit 1 FAILED, 2 unreachable).
    Status(iotconnect::rest::status::StatusArgs),
}

#[derive(Args)]
struct Files {
    /// The worker file (connect-standalone.properties).
    worker: PathBuf,
    /// Connector files (connect-iothub-source.properties, connect-iothub-sink.properties).
    connectors: Vec<PathBuf>,
}

// [dist]
#[derive(Args)]
struct DistributedFiles {
    /// The worker file (connect-distributed.properties).
    worker: PathBuf,
    /// Connector files: the same on every worker of the group.
    connectors: Vec<PathBuf>,
    /// Publish this worker's connector configurations to config.storage.topic even when the group's differ.
    #[arg(long)]
    replace_config: bool,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    logging::init(cli.log_format);
    iotconnect::init_tls();
    match cli.command {
        Command::Validate(f) => iotconnect::worker::validate::run(&f.worker, &f.connectors),
        Command::Standalone(f) => {
            iotconnect::worker::standalone::main(f.worker, f.connectors, iotconnect::plugins())
        }
        Command::Status(args) => ExitCode::from(iotconnect::rest::status::run(
            &args,
            &mut std::io::stdout().lock(),
            &mut std::io::stderr().lock(),
        )),
        Command::Distributed(f) => {
            iotconnect::distributed::main(f.worker, f.connectors, f.replace_config)
        }
        Command::Offsets(args) => {
            let mut out = std::io::stdout().lock();
            match iotconnect::offsets::cli::run(&args, &mut out) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
