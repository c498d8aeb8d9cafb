//! A process's membership in a multi-process job, for the commands: the job flags, joining
//! (bootstrap + coordination service), what a failure does (exit, naming the lost process and
//! its last step), and the coordination client as the PJRT plugin's key-value store.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use runtime::{ErrorCode, KeyValueStore, KvError};

/// Exit status of a process that stops because another process of its job failed.
pub const EXIT_PEER_FAILED: i32 = 3;

/// Which process of which job this is (default: detected from the scheduler's environment,
/// else a single process), and when to give up on a peer.
#[derive(Args, Debug, Clone, Default)]
pub struct JobArgs {
    /// `HOST:PORT` of process 0, which serves the coordination service on PORT.
    #[arg(long)]
    pub coordinator: Option<String>,
    #[arg(long)]
    pub num_processes: Option<u32>,
    #[arg(long)]
    pub process_id: Option<u32>,
    /// Seconds every process has to join (default 60).
    #[arg(long, default_value_t = 60.0)]
    pub bootstrap_timeout: f64,
    /// Seconds a process may go without a heartbeat (default 30).
    #[arg(long, default_value_t = 30.0)]
    pub heartbeat_timeout: f64,
    /// Seconds a process may stay on one step (default 300).
    #[arg(long, default_value_t = 300.0)]
    pub step_timeout: f64,
}

fn secs(what: &str, s: f64) -> Result<Duration> {
    if !(s.is_finite() && s > 0.0) {
        anyhow::bail!("--{what} must be a positive number of seconds, not {s}");
    }
    Ok(Duration::from_secs_f64(s))
}

impl JobArgs {
    /// The job from the flags and the environment; `None` for a single process.
    pub fn bootstrap(&self) -> Result<Option<dist::Bootstrap>> {
        let flags = dist::Flags {
            coordinator: self.coordinator.clone(),
            num_processes: self.num_processes,
            process_id: self.process_id,
        };
        Ok(dist::Bootstrap::resolve(&flags, &dist::process_env)?)
    }

    pub fn options(&self) -> Result<dist::SessionOptions> {
        let heartbeat = secs("heartbeat-timeout", self.heartbeat_timeout)?;
        Ok(dist::SessionOptions {
            timeouts: dist::Timeouts {
                bootstrap: secs("bootstrap-timeout", self.bootstrap_timeout)?,
                heartbeat,
                step: secs("step-timeout", self.step_timeout)?,
            },
            heartbeat_interval: (heartbeat / 10)
                .clamp(Duration::from_millis(100), Duration::from_secs(2)),
            on_failure: None,
        })
    }

    /// Joins the job `b`; a failure of any process later ends this one with
    /// [`EXIT_PEER_FAILED`] and a message naming that process and its last step.
    pub fn join(&self, b: dist::Bootstrap) -> Result<dist::Session> {
        let mut o = self.options()?;
        let me = b.process_id;
        let hosts = me == 0;
        let linger = o.heartbeat_interval * 3;
        o.on_failure = Some(Arc::new(move |f: &dist::Failure| {
            // One write, so lines of processes sharing a terminal or pipe do not interleave.
            let line = format!("rxla: process {me}: stopping: {f}\n");
            let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), line.as_bytes());
            if hosts {
                // Keep serving a moment so every process learns what failed, not just that
                // the coordinator went away.
                std::thread::sleep(linger);
            }
            std::process::exit(EXIT_PEER_FAILED);
        }));
        let what = format!(
            "joining the job as process {} of {} (coordinator {}, from {})",
            b.process_id, b.num_processes, b.coordinator, b.source
        );
        dist::Session::start(b, o).context(what)
    }
}

/// The coordination client as the plugin's store.
pub struct JobStore(pub dist::Client);

fn kv_error(e: dist::Error) -> KvError {
    let code = match &e {
        dist::Error::Timeout { .. } => ErrorCode::DeadlineExceeded,
        dist::Error::ProcessFailed(_) => ErrorCode::Aborted,
        dist::Error::CoordinatorLost(_) | dist::Error::Connect { .. } => ErrorCode::Unavailable,
        _ => ErrorCode::Internal,
    };
    KvError::new(code, e.to_string())
}

impl KeyValueStore for JobStore {
    fn get(&self, key: &str, timeout: Duration) -> Result<Vec<u8>, KvError> {
        self.0.get(key, timeout).map_err(kv_error)
    }
    fn try_get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.0.try_get(key).map_err(kv_error)
    }
    fn put(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        self.0.put(key, value).map_err(kv_error)
    }
}

/// What the PJRT client of process `session` needs.
pub fn runtime_job(session: &dist::Session) -> runtime::kv::Job {
    runtime::kv::Job {
        process_id: session.process_id(),
        num_processes: session.num_processes(),
        store: Arc::new(JobStore(session.client().clone())),
    }
}
