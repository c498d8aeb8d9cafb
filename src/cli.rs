//! The `rxla` command line.

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use runtime::provision::{self, Backend, ClientRequest};

#[derive(Parser, Debug)]
#[command(
    name = "rxla",
    version,
    about = "Ahead-of-time compiled deep-learning training on XLA"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// List the devices of a backend: platform, PJRT API version, plugin path, one line per device.
    Devices(DeviceArgs),
}

/// Where to run: backend, virtual CPU devices, plugin verbosity.
#[derive(Args, Debug, Clone)]
pub struct DeviceArgs {
    /// cpu, cuda or tpu (default: $RXLA_BACKEND, else cpu). $RXLA_PJRT_PLUGIN overrides the plugin.
    #[arg(long)]
    pub backend: Option<Backend>,
    /// Number of virtual CPU devices (cpu backend).
    #[arg(long)]
    pub cpu_devices: Option<usize>,
    /// Show the PJRT plugin's own log output.
    #[arg(short, long)]
    pub verbose: bool,
}

impl DeviceArgs {
    pub fn client(&self) -> Result<runtime::Client> {
        provision::client(&ClientRequest {
            backend: self.backend,
            cpu_devices: self.cpu_devices,
            verbose: self.verbose,
        })
        .context("starting the PJRT client")
    }
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Devices(args) => devices(&args),
    }
}

fn devices(args: &DeviceArgs) -> Result<()> {
    let client = args.client()?;
    let plugin = client.plugin();
    let (major, minor) = plugin.api_version();
    println!("platform:          {}", client.platform_name());
    println!("platform version:  {}", client.platform_version());
    println!("PJRT API version:  {major}.{minor}");
    println!("plugin:            {}", plugin.path().display());
    for (k, v) in plugin.attributes() {
        println!("plugin attribute:  {k} = {v}");
    }
    let devices = client.devices();
    println!("devices:           {}", devices.len());
    for d in devices {
        println!(
            "  device {:>3}  kind={}  process={}  addressable={}",
            d.id, d.kind, d.process_index, d.addressable
        );
    }
    Ok(())
}
