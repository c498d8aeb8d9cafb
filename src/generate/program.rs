//! A compiled generation program with its parameters bound by name: the parameters live on
//! device once and every program of a model (prefill, decode, reorder) reads the same buffers.

use std::collections::HashMap;

use anyhow::{anyhow, bail, Result};
use graph::{Graph, NodeId};
use models::Params;
use runtime::{Buffer, Client, CompileOptions, Executable};
use train::checkpoint::NamedTensor;

/// A model's parameters on device, by name.
pub struct DeviceParams {
    bufs: Vec<Buffer>,
    by_name: HashMap<String, usize>,
}

impl DeviceParams {
    pub fn upload(client: &Client, params: &[NamedTensor]) -> Result<DeviceParams> {
        let mut bufs = Vec::with_capacity(params.len());
        let mut by_name = HashMap::new();
        for t in params {
            by_name.insert(t.name.clone(), bufs.len());
            bufs.push(client.buffer_from_host(&t.data, &t.dims, 0)?);
        }
        Ok(DeviceParams { bufs, by_name })
    }
}

/// One argument of a program: a named parameter or the next data input.
enum Arg {
    Param(usize),
    Data,
}

pub struct Program {
    exe: Executable,
    args: Vec<Arg>,
    n_data: usize,
}

impl Program {
    /// Compiles `g`, whose parameters `p` declared; `donate` pairs (data input, output): the
    /// input's buffer is taken over by that output (a cache updated in place).
    pub fn compile(
        client: &Client,
        g: &Graph,
        p: &Params,
        params: &DeviceParams,
        donate: &[(NodeId, usize)],
    ) -> Result<Program> {
        let mut args = Vec::new();
        let mut aliases = Vec::new();
        let mut n_data = 0;
        for (i, a) in g.args().iter().enumerate() {
            match p.specs.iter().find(|s| s.node == *a) {
                Some(s) => {
                    let idx = *params.by_name.get(&s.name).ok_or_else(|| {
                        anyhow!(
                            "the checkpoint lacks parameter `{}`: it was written for another model",
                            s.name
                        )
                    })?;
                    let (have, want) = (params.bufs[idx].dims(), s.ty.dims());
                    if have != want {
                        bail!(
                            "checkpoint parameter `{}` has shape {have:?} but the model needs \
                             {want:?}",
                            s.name
                        );
                    }
                    args.push(Arg::Param(idx));
                }
                None => {
                    if let Some(&(_, out)) = donate.iter().find(|(n, _)| n == a) {
                        aliases.push((i, out));
                    }
                    args.push(Arg::Data);
                    n_data += 1;
                }
            }
        }
        let lower_opts = lower::LowerOptions {
            aliases,
            ..Default::default()
        };
        let (_, exe) = train::exec::compile(client, g, &lower_opts, &CompileOptions::default())?;
        Ok(Program { exe, args, n_data })
    }

    /// Runs with the data inputs in creation order; donated inputs are consumed.
    pub fn run(&self, params: &DeviceParams, data: &[&Buffer]) -> Result<Vec<Buffer>> {
        if data.len() != self.n_data {
            bail!(
                "internal: program takes {} data inputs, got {}",
                self.n_data,
                data.len()
            );
        }
        let mut data = data.iter();
        let args: Vec<&Buffer> = self
            .args
            .iter()
            .map(|a| match a {
                Arg::Param(i) => &params.bufs[*i],
                Arg::Data => data.next().expect("counted"),
            })
            .collect();
        Ok(self.exe.execute1(&args)?)
    }
}
