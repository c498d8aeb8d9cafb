//! Errors of the coordination layer, and what a failed process looks like.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A process the job lost: which, the last step it reported, and how it was lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub process: u32,
    /// The last step it reported (`None`: it never reached its first step).
    pub last_step: Option<u64>,
    pub reason: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let step = match self.last_step {
            Some(s) => format!("last step {s}"),
            None => "before its first step".to_string(),
        };
        write!(
            f,
            "process {} failed ({step}): {}",
            self.process, self.reason
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(String),
    /// The environment or flags do not describe a job.
    #[error("bootstrap: {0}")]
    Bootstrap(String),
    #[error("cannot reach the coordinator at {addr} within {after:?}: {detail}")]
    Connect {
        addr: String,
        after: Duration,
        detail: String,
    },
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout { what: String, after: Duration },
    #[error("{0}; stopping this process too")]
    ProcessFailed(Failure),
    #[error("lost the coordinator (process 0): {0}")]
    CoordinatorLost(String),
    #[error("the coordinator refused the request: {0}")]
    Refused(String),
    #[error("coordination protocol error: {0}")]
    Protocol(String),
    #[error("coordination service: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T> = std::result::Result<T, Error>;
