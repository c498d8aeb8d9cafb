//! rxla's multi-process layer, what `jax.distributed.initialize` is to JAX: which process of
//! which job this is ([`Bootstrap`], from flags or the scheduler's environment), and the
//! coordination service process 0 serves over TCP ([`Coordinator`]): a KV store with blocking
//! gets (PJRT plugins exchange topologies and NCCL ids through it), barriers, and heartbeats
//! that turn a dead, stopped or hung process into an error on every other process within a
//! bounded time. No PJRT here: the runtime hands a [`Client`] to the plugin.

mod bootstrap;
mod client;
mod error;
mod proto;
mod server;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

pub use bootstrap::{
    detect, first_host, port_of, process_env, Bootstrap, Env, Flags, DEFAULT_PORT,
};
pub use client::{Client, ClientOptions, OnFailure};
pub use error::{Error, Failure, Result};
pub use server::{Coordinator, Timeouts};

/// How a job detects failures.
#[derive(Clone)]
pub struct SessionOptions {
    pub timeouts: Timeouts,
    pub heartbeat_interval: Duration,
    /// Called once, on the heartbeat thread, when a process failed.
    pub on_failure: Option<OnFailure>,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            timeouts: Timeouts::default(),
            heartbeat_interval: Duration::from_secs(2),
            on_failure: None,
        }
    }
}

/// This process's membership in a job: process 0 also serves the coordination service.
pub struct Session {
    pub bootstrap: Bootstrap,
    client: Client,
    coordinator: Option<Coordinator>,
    timeouts: Timeouts,
}

impl Session {
    /// Joins the job: process 0 starts the service on the coordinator address's port, every
    /// process connects and waits until all have (the bootstrap timeout bounds both).
    pub fn start(bootstrap: Bootstrap, options: SessionOptions) -> Result<Session> {
        let port = port_of(&bootstrap.coordinator)?;
        let coordinator = if bootstrap.process_id == 0 {
            let bind = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
            Some(Coordinator::start(
                bind,
                bootstrap.num_processes,
                options.timeouts.clone(),
            )?)
        } else {
            None
        };
        let t = &options.timeouts;
        let client = Client::connect(
            &bootstrap.coordinator,
            bootstrap.process_id,
            bootstrap.num_processes,
            ClientOptions {
                connect_timeout: t.bootstrap,
                heartbeat_interval: options.heartbeat_interval,
                heartbeat_timeout: t.heartbeat,
                on_failure: options.on_failure.clone(),
            },
        )?;
        client
            .barrier("rxla/bootstrap", t.bootstrap)
            .map_err(|e| match e {
                Error::Timeout { what, after } => Error::Bootstrap(format!(
                    "not every process joined within {after:?} ({what}): are all {} started, \
                 with the same coordinator address?",
                    bootstrap.num_processes
                )),
                e => e,
            })?;
        Ok(Session {
            bootstrap,
            client,
            coordinator,
            timeouts: options.timeouts,
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn process_id(&self) -> u32 {
        self.bootstrap.process_id
    }

    pub fn num_processes(&self) -> u32 {
        self.bootstrap.num_processes
    }

    /// Reports the step this process reached (carried by the next heartbeat).
    pub fn progress(&self, step: u64) {
        self.client.set_step(step);
    }

    /// Sums `values` over the job's processes (see [`Client::all_sum`]; the step timeout
    /// bounds it).
    pub fn all_sum(&self, name: &str, values: &[f64]) -> Result<Vec<f64>> {
        self.client
            .all_sum(name, self.num_processes(), values, self.timeouts.step)
    }

    /// Waits for every process at barrier `name` (the step timeout bounds it).
    pub fn barrier(&self, name: &str) -> Result<()> {
        self.client.barrier(name, self.timeouts.step)
    }

    /// Leaves the job normally: a last barrier, then goodbye; process 0 keeps serving until
    /// every process said goodbye.
    pub fn finish(self) -> Result<()> {
        self.client.barrier("rxla/finish", self.timeouts.step)?;
        self.client.goodbye()?;
        if let Some(c) = &self.coordinator {
            c.wait_for_goodbyes(self.timeouts.heartbeat);
        }
        Ok(())
    }
}
