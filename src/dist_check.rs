//! `rxla dist-check`: a job's smoke test before a long run (what an NCCL test is to a GPU
//! cluster). Every process joins the job, creates its PJRT client with the job's key-value
//! store, publishes its devices through the store and reads everyone else's, then runs
//! `--steps` lock-step steps (a barrier each), reporting progress in its heartbeats. A process
//! that dies, stops or hangs ends all others within the timeouts.

use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;

use crate::job::{runtime_job, JobArgs};

#[derive(Args, Debug, Clone)]
pub struct DistCheckArgs {
    /// Lock-step steps after the exchange.
    #[arg(long, default_value_t = 20)]
    pub steps: u64,
    /// Milliseconds each step takes (the stand-in for a train step).
    #[arg(long, default_value_t = 50)]
    pub step_ms: u64,
    #[command(flatten)]
    pub job: JobArgs,
    /// cpu, cuda or tpu (default: $RXLA_BACKEND, else cpu).
    #[arg(long)]
    pub backend: Option<runtime::provision::Backend>,
    /// Show the PJRT plugin's own log output.
    #[arg(short, long)]
    pub verbose: bool,
}

pub fn run(a: &DistCheckArgs) -> Result<()> {
    let b = match a.job.bootstrap()? {
        Some(b) => b,
        // One process: a job of one, served on a free local port.
        None => {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            dist::Bootstrap {
                coordinator: format!("127.0.0.1:{port}"),
                num_processes: 1,
                process_id: 0,
                source: "single process",
            }
        }
    };
    let (me, n) = (b.process_id, b.num_processes);
    let session = a.job.join(b)?;
    let req = runtime::provision::ClientRequest {
        backend: a.backend,
        cpu_devices: None,
        verbose: a.verbose,
        gpu: Default::default(),
    };
    let client = runtime::provision::client_in_job(&req, &runtime_job(&session))
        .context("starting the PJRT client of this process")?;
    let mine: Vec<String> = client
        .addressable_devices()
        .iter()
        .map(|d| format!("{}(process {})", d.id, d.process_index))
        .collect();
    println!(
        "process {me}/{n}: pid {}, {} {}, client process index {}, devices {}",
        std::process::id(),
        client.platform_name(),
        client.platform_version(),
        client.process_index(),
        mine.join(" ")
    );
    let kv = session.client();
    kv.put(
        &format!("dist-check/devices/{me}"),
        mine.join(" ").as_bytes(),
    )?;
    let wait = Duration::from_secs_f64(a.job.bootstrap_timeout);
    for q in 0..n {
        let theirs = kv.get(&format!("dist-check/devices/{q}"), wait)?;
        if me == 0 {
            println!(
                "process 0 sees process {q}: {}",
                String::from_utf8_lossy(&theirs)
            );
        }
    }
    for step in 1..=a.steps {
        std::thread::sleep(Duration::from_millis(a.step_ms));
        session.progress(step);
        session.barrier(&format!("dist-check/step/{step}"))?;
        println!("process {me}: step {step}");
    }
    drop(client);
    session.finish()?;
    println!(
        "process {me}: dist-check ok ({n} processes, {} steps)",
        a.steps
    );
    Ok(())
}
