//! `iotconnect offsets show|reset`: clap arguments and the runner the binary calls.

use std::io::Write;
use std::path::PathBuf;

use super::store::{self, OffsetsCommandError};

#[derive(Debug, clap::Args)]
pub struct OffsetsArgs {
    #[command(subcommand)]
    pub command: OffsetsCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum OffsetsCommand {
    /// Print every entry of an offsets file as one JSON line: {"key":…,"value":…|null}.
    Show {
        /// The file named by offset.storage.file.filename.
        file: PathBuf,
    },
    /// Remove a connector's stored offsets so its partitions start again from IotHub.StartTime /
    /// IotHub.Offsets. Stop the worker first: a running worker writes its own offsets back.
    Reset {
        /// The file named by offset.storage.file.filename.
        file: PathBuf,
        /// The connector's `name`.
        #[arg(long)]
        connector: String,
        /// Only this Event Hub partition (EventHubPartition), e.g. 0.
        #[arg(long)]
        partition: Option<String>,
    },
    /// [dist] Print every entry of a distributed worker's offset.storage.topic (read_committed), as `show`.
    ShowTopic {
        /// The offset.storage.topic.
        #[arg(long)]
        topic: String,
        /// bootstrap.servers
        #[arg(long, default_value = "localhost:9092")]
        bootstrap: String,
    },
}

/// Runs the subcommand, writing its output to `out`.
pub fn run(args: &OffsetsArgs, out: &mut dyn Write) -> Result<(), OffsetsCommandError> {
    match &args.command {
        OffsetsCommand::Show { file } => store::show(file, out),
        // [dist] the Kafka-topic offset store
        OffsetsCommand::ShowTopic { topic, bootstrap } => {
            super::kafka::show_topic(bootstrap, topic, out)
                .map_err(|e| OffsetsCommandError::Output(std::io::Error::other(format!("{e:#}"))))
        }
        OffsetsCommand::Reset {
            file,
            connector,
            partition,
        } => {
            let removed = store::reset(file, connector, partition.as_deref())?;
            let scope = match partition {
                Some(p) => format!("connector {connector}, partition {p}"),
                None => format!("connector {connector}"),
            };
            writeln!(
                out,
                "removed {removed} offset entries of {scope} from {}",
                file.display()
            )?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: Top,
    }

    #[derive(Debug, clap::Subcommand)]
    enum Top {
        Offsets(OffsetsArgs),
    }

    #[test]
    fn parses_and_runs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o");
        let mut s = store::OffsetStore::new();
        s.put(
            "c",
            &[("EventHubName", "h"), ("EventHubPartition", "2")],
            None,
        );
        s.flush(&path).unwrap();
        let p = path.to_str().unwrap();

        let Top::Offsets(args) = Cli::parse_from(["x", "offsets", "show", p]).cmd;
        let mut out = Vec::new();
        run(&args, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"key\":[\"c\",{\"EventHubName\":\"h\",\"EventHubPartition\":\"2\"}],\"value\":null}\n"
        );

        let Top::Offsets(args) = Cli::parse_from([
            "x",
            "offsets",
            "reset",
            p,
            "--connector",
            "c",
            "--partition",
            "2",
        ])
        .cmd;
        let mut out = Vec::new();
        run(&args, &mut out).unwrap();
        assert!(String::from_utf8(out)
            .unwrap()
            .starts_with("removed 1 offset entries of connector c, partition 2"));
        assert!(
            Cli::try_parse_from(["x", "offsets", "reset", p]).is_err(),
            "--connector is required"
        );
    }
}
