//! `iotconnect validate`: every file checked offline, every problem reported.

use crate::config::{self, LoadError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// sysexits.h EX_CONFIG: the configuration is invalid.
pub const EX_CONFIG: u8 = 78;

pub fn run(worker: &Path, connectors: &[PathBuf]) -> ExitCode {
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    match config::load_all(worker, connectors) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                let _ = writeln!(err, "warning: {w}");
            }
            let _ = writeln!(out, "# worker {}", loaded.worker.file.display_name());
            for (k, v) in loaded.worker.file.masked() {
                let _ = writeln!(out, "{k}={v}");
            }
            for c in &loaded.connectors {
                let _ = writeln!(
                    out,
                    "# connector {} ({}) {}",
                    c.name,
                    c.kind.as_str(),
                    c.file.display_name()
                );
                for (k, v) in c.file.masked() {
                    let _ = writeln!(out, "{k}={v}");
                }
            }
            let _ = writeln!(
                err,
                "configuration valid: 1 worker file, {} connector file(s)",
                loaded.connectors.len()
            );
            ExitCode::SUCCESS
        }
        Err(LoadError {
            problems, warnings, ..
        }) => {
            for w in &warnings {
                let _ = writeln!(err, "warning: {w}");
            }
            for p in &problems.0 {
                let _ = writeln!(out, "{p}");
            }
            let _ = writeln!(err, "configuration invalid: {} problem(s)", problems.len());
            ExitCode::from(EX_CONFIG)
        }
    }
}
