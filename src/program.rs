//! A compiled program with its parameters bound by name: the parameters live on device once
//! and every program of a model (prefill, decode, reorder; a classifier's predict) reads them.

use std::collections::HashMap;

use anyhow::{anyhow, bail, Result};
use graph::{Graph, NodeId};
use models::Params;
use runtime::{Buffer, Client, CompileOptions, Executable};
use train::checkpoint::NamedTensor;
use train::tensor::Tensor;

/// A model's parameters on device, by name.
pub struct DeviceParams {
    bufs: Vec<Buffer>,
    by_name: HashMap<String, usize>,
    /// Compressed weights (`rxla compress`: i8 + scales, or low-rank factors), bound into each
    /// program by `train::compress::quantize::bind` instead of fed as f32 parameters.
    compressed: Vec<Tensor>,
}

impl DeviceParams {
    pub fn upload(client: &Client, params: &[NamedTensor]) -> Result<DeviceParams> {
        let mut bufs = Vec::with_capacity(params.len());
        let mut by_name = HashMap::new();
        for t in params {
            by_name.insert(t.name.clone(), bufs.len());
            bufs.push(client.buffer_from_host(&t.data, &t.dims, 0)?);
        }
        Ok(DeviceParams {
            bufs,
            by_name,
            compressed: Vec::new(),
        })
    }

    /// Weights as stored in a checkpoint: float ones upload as f32 parameters; a compressed
    /// set (any i8 tensor or low-rank factors) is kept for binding into each program.
    pub fn upload_stored(client: &Client, stored: &[Tensor]) -> Result<DeviceParams> {
        let factored = stored.iter().any(|t| {
            t.name.ends_with(".u")
                && stored
                    .iter()
                    .any(|v| v.name == format!("{}v", &t.name[..t.name.len() - 1]))
        });
        if factored || stored.iter().any(|t| !t.dtype().is_float()) {
            return Ok(DeviceParams {
                bufs: Vec::new(),
                by_name: HashMap::new(),
                compressed: stored.to_vec(),
            });
        }
        let f32s: Vec<NamedTensor> = stored
            .iter()
            .map(|t| t.clone().into_f32())
            .collect::<Result<_>>()?;
        DeviceParams::upload(client, &f32s)
    }
}

/// One argument of a program: a named parameter, a weight bound into this program, or the
/// next data input.
enum Arg {
    Param(usize),
    Own(usize),
    Data,
}

pub struct Program {
    exe: Executable,
    args: Vec<Arg>,
    n_data: usize,
    /// Buffers of the weights bound into this program (compressed runs).
    own: Vec<Buffer>,
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
        Program::compile_with(client, g, p, params, donate, &CompileOptions::default())
    }

    /// [`Program::compile`] for decode steps of `rows` rows: on CPU, below 8 rows, the
    /// matrix-vector products run on the calling thread, since waking Eigen's pool for them
    /// costs more than they do (gpt-tiny at batch 1: ~8.7k vs ~8.1k tokens/s; at 16 the pool
    /// wins slightly).
    pub fn compile_decode(
        client: &Client,
        g: &Graph,
        p: &Params,
        params: &DeviceParams,
        donate: &[(NodeId, usize)],
        rows: usize,
    ) -> Result<Program> {
        let mut opts = CompileOptions::default();
        if rows < 8 && client.platform_name().eq_ignore_ascii_case("cpu") {
            opts.xla_options.push((
                "xla_cpu_multi_thread_eigen".into(),
                runtime::XlaOption::Bool(false),
            ));
        }
        Program::compile_with(client, g, p, params, donate, &opts)
    }

    fn compile_with(
        client: &Client,
        g: &Graph,
        p: &Params,
        params: &DeviceParams,
        donate: &[(NodeId, usize)],
        opts: &CompileOptions,
    ) -> Result<Program> {
        if !params.compressed.is_empty() {
            return Program::compile_bound(client, g, p, params, donate, opts);
        }
        let mut args = Vec::new();
        let mut aliases = Vec::new();
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
                }
            }
        }
        Program::finish(client, g, args, aliases, Vec::new(), opts)
    }

    /// [`Program::compile`] over compressed weights: dequantized (or run as two matmuls)
    /// inside the program, their buffers owned by it.
    fn compile_bound(
        client: &Client,
        g: &Graph,
        p: &Params,
        params: &DeviceParams,
        donate: &[(NodeId, usize)],
        opts: &CompileOptions,
    ) -> Result<Program> {
        use train::compress::quantize::{bind, upload, BoundArg};
        let (bound_g, bound) = bind(g, &p.specs, &params.compressed)?;
        let orig = g.args();
        let (mut args, mut aliases, mut own) = (Vec::new(), Vec::new(), Vec::new());
        for (i, b) in bound.iter().enumerate() {
            match b {
                BoundArg::Weight(t) => {
                    own.push(upload(client, t)?);
                    args.push(Arg::Own(own.len() - 1));
                }
                BoundArg::Other(k) => {
                    if let Some(&(_, out)) = donate.iter().find(|(n, _)| *n == orig[*k]) {
                        aliases.push((i, out));
                    }
                    args.push(Arg::Data);
                }
            }
        }
        Program::finish(client, &bound_g, args, aliases, own, opts)
    }

    /// Compiles `g` whose arguments are `args` (`aliases`: donated data input, output).
    fn finish(
        client: &Client,
        g: &Graph,
        args: Vec<Arg>,
        aliases: Vec<(usize, usize)>,
        own: Vec<Buffer>,
        opts: &CompileOptions,
    ) -> Result<Program> {
        let lower_opts = lower::LowerOptions {
            aliases,
            ..Default::default()
        };
        let (_, exe) = train::exec::compile(client, g, &lower_opts, opts)?;
        let n_data = args.iter().filter(|a| matches!(a, Arg::Data)).count();
        Ok(Program {
            exe,
            args,
            n_data,
            own,
        })
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
                Arg::Own(i) => &self.own[*i],
                Arg::Data => data.next().expect("counted"),
            })
            .collect();
        Ok(self.exe.execute1(&args)?)
    }
}
