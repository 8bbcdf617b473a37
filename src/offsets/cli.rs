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

/// Why `iotconnect offsets` failed (the binary prints it and exits 1).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Command(#[from] OffsetsCommandError),
    /// `reset` found nothing to remove: a typo in the connector name or partition must not look
    /// like success.
    #[error("{file} holds no offsets of {what}; connectors with offsets there: {known}")]
    NothingToReset {
        file: String,
        what: String,
        known: String,
    },
}

impl From<super::OffsetsError> for CliError {
    fn from(e: super::OffsetsError) -> Self {
        CliError::Command(e.into())
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError::Command(e.into())
    }
}

/// The connector names found in the keys of an offsets file (`["<name>",{…}]`, or a 2.x envelope).
fn connector_names(path: &std::path::Path) -> Result<Vec<String>, CliError> {
    let mut names: Vec<String> = store::OffsetStore::load(path)?
        .entries()
        .iter()
        .filter_map(|(k, _)| {
            let mut v: serde_json::Value = serde_json::from_slice(k).ok()?;
            if let Some(p) = v.get_mut("payload") {
                v = p.take();
            }
            v.get(0)?.as_str().map(str::to_string)
        })
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}

/// Runs the subcommand, writing its output to `out`.
pub fn run(args: &OffsetsArgs, out: &mut dyn Write) -> Result<(), CliError> {
    match &args.command {
        OffsetsCommand::Show { file } => Ok(store::show(file, out)?),
        // [dist] the Kafka-topic offset store
        OffsetsCommand::ShowTopic { topic, bootstrap } => {
            super::kafka::show_topic(bootstrap, topic, out).map_err(|e| {
                CliError::Command(OffsetsCommandError::Output(std::io::Error::other(format!(
                    "{e:#}"
                ))))
            })
        }
        OffsetsCommand::Reset {
            file,
            connector,
            partition,
        } => {
            // `reset` takes the offsets file's lock first: a running worker makes it fail.
            let removed = store::reset(file, connector, partition.as_deref())?;
            if removed == 0 && !file.exists() {
                return Err(CliError::NothingToReset {
                    file: file.display().to_string(),
                    what: format!("connector {connector} (the file does not exist)"),
                    known: "none".into(),
                });
            }
            if removed == 0 {
                let known = connector_names(file)?;
                let what = match (partition, known.contains(connector)) {
                    (Some(p), true) => format!("connector {connector}, partition {p}"),
                    _ => format!("connector {connector}"),
                };
                return Err(CliError::NothingToReset {
                    file: file.display().to_string(),
                    what,
                    known: if known.is_empty() {
                        "none".into()
                    } else {
                        known.join(", ")
                    },
                });
            }
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

    #[test]
    fn reset_of_an_unknown_connector_or_partition_fails_and_names_the_known_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o");
        let mut s = store::OffsetStore::new();
        s.put(
            "AzureIotHubConnector",
            &[("EventHubName", "h"), ("EventHubPartition", "0")],
            None,
        );
        s.flush(&path).unwrap();
        let p = path.to_str().unwrap();
        let run_reset = |extra: &[&str]| {
            let mut argv = vec!["x", "offsets", "reset", p];
            argv.extend_from_slice(extra);
            let Top::Offsets(args) = Cli::parse_from(argv).cmd;
            run(&args, &mut Vec::new()).map_err(|e| e.to_string())
        };
        let e = run_reset(&["--connector", "AzureIotHubConector"]).unwrap_err();
        assert_eq!(
            e,
            format!("{p} holds no offsets of connector AzureIotHubConector; connectors with offsets there: AzureIotHubConnector")
        );
        let e =
            run_reset(&["--connector", "AzureIotHubConnector", "--partition", "7"]).unwrap_err();
        assert!(
            e.contains("no offsets of connector AzureIotHubConnector, partition 7"),
            "{e}"
        );
        let missing = dir.path().join("absent");
        let Top::Offsets(args) = Cli::parse_from([
            "x",
            "offsets",
            "reset",
            missing.to_str().unwrap(),
            "--connector",
            "c",
        ])
        .cmd;
        assert!(run(&args, &mut Vec::new())
            .unwrap_err()
            .to_string()
            .contains("does not exist"));
        assert!(run_reset(&["--connector", "AzureIotHubConnector"]).is_ok());
    }
}
