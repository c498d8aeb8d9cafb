//! `rxla launch --local N -- <command>`: a job of N processes on this machine (tests,
//! single-node multi-GPU). Each child is this binary with `<command>` and the job in its
//! environment (`RXLA_COORDINATOR`, `RXLA_NUM_PROCESSES`, `RXLA_PROCESS_ID`), which every
//! command that joins a job reads. The children detect failures themselves (heartbeats,
//! timeouts); the launcher reports who failed first and, as a last resort, kills a child
//! still running `--grace` seconds after another failed.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;

#[derive(Args, Debug, Clone)]
pub struct LaunchArgs {
    /// Processes to start on this machine.
    #[arg(long)]
    pub local: u32,
    /// Port of the coordination service (default: a free one).
    #[arg(long)]
    pub port: Option<u16>,
    /// Seconds to wait for the other processes to stop after one failed, before killing them.
    #[arg(long, default_value_t = 600.0)]
    pub grace: f64,
    /// The rxla command each process runs, after `--`.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

pub fn run(a: &LaunchArgs) -> Result<()> {
    if a.local == 0 {
        bail!("--local must be at least 1");
    }
    let port = match a.port {
        Some(p) => p,
        None => std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port(),
    };
    let exe = std::env::current_exe().context("finding the rxla binary")?;
    let mut children: Vec<(u32, Child)> = Vec::new();
    for i in 0..a.local {
        let child = Command::new(&exe)
            .args(&a.command)
            .env("RXLA_COORDINATOR", format!("127.0.0.1:{port}"))
            .env("RXLA_NUM_PROCESSES", a.local.to_string())
            .env("RXLA_PROCESS_ID", i.to_string())
            .spawn()
            .with_context(|| format!("starting process {i}"))?;
        eprintln!("rxla launch: process {i} is pid {}", child.id());
        children.push((i, child));
    }
    let mut first_failure: Option<(u32, String, Instant)> = None;
    let mut failed = Vec::new();
    while !children.is_empty() {
        let mut still = Vec::new();
        for (i, mut c) in children {
            match c.try_wait()? {
                Some(st) if st.success() => {}
                Some(st) => {
                    let why = exit_text(st);
                    eprintln!("rxla launch: process {i} {why}");
                    if first_failure.is_none() {
                        first_failure = Some((i, why.clone(), Instant::now()));
                    }
                    failed.push(i);
                }
                None => still.push((i, c)),
            }
        }
        children = still;
        if let Some((_, _, at)) = &first_failure {
            if at.elapsed() > Duration::from_secs_f64(a.grace) {
                for (i, c) in &mut children {
                    eprintln!(
                        "rxla launch: killing process {i}: still running {}s after a failure",
                        a.grace
                    );
                    let _ = c.kill();
                    let _ = c.wait();
                }
                children.clear();
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if let Some((i, why, _)) = first_failure {
        bail!(
            "process {i} {why} first; processes {failed:?} of {} failed",
            a.local
        );
    }
    Ok(())
}

fn exit_text(st: std::process::ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = st.signal() {
            return format!("was killed by signal {sig}");
        }
    }
    match st.code() {
        Some(c) => format!("exited with status {c}"),
        None => "exited".into(),
    }
}
