//! Training output: `metrics.jsonl`, progress on stderr (a bar on a terminal, plain lines
//! otherwise).

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::Path;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

/// Appends one JSON object per line; flushed per line so a crash loses nothing logged.
pub struct MetricsLog {
    out: BufWriter<File>,
    path: std::path::PathBuf,
}

impl MetricsLog {
    /// Opens `path`; `append` keeps earlier lines (resume), else the file starts empty.
    pub fn open(path: &Path, append: bool) -> Result<MetricsLog> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(append)
            .write(true)
            .truncate(!append)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(MetricsLog {
            out: BufWriter::new(f),
            path: path.to_path_buf(),
        })
    }

    pub fn log(&mut self, record: &serde_json::Value) -> Result<()> {
        (|| -> Result<()> {
            serde_json::to_writer(&mut self.out, record)?;
            self.out.write_all(b"\n")?;
            self.out.flush()?;
            Ok(())
        })()
        .with_context(|| format!("appending to {} (is the disk full?)", self.path.display()))
    }
}

/// Step progress: an indicatif bar when stderr is a terminal, else one line per call to `line`.
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    pub fn new(total_steps: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::new(total_steps);
            b.set_style(
                ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b
        });
        Progress { bar }
    }

    /// Updates the bar position (terminal only).
    pub fn set_step(&self, step: u64) {
        if let Some(b) = &self.bar {
            b.set_position(step);
        }
    }

    /// A status message: the bar's message on a terminal, a plain stderr line otherwise.
    pub fn line(&self, msg: &str) {
        match &self.bar {
            Some(b) => b.set_message(msg.to_string()),
            None => eprintln!("{msg}"),
        }
    }

    /// A line that stays visible above the bar.
    pub fn println(&self, msg: &str) {
        match &self.bar {
            Some(b) => b.println(msg),
            None => eprintln!("{msg}"),
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish();
        }
    }
}
