//! A model's compiled step programs and their state on device: parameters and optimizer
//! state (donated each step, sharded by the program's plan), one train step, evaluation.
//! The `Learner` loop, Keras, bench and summary all run programs through here.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use data::HostArray;
use std::ops::Range;

use runtime::{Client, CompileOptions, Executable, GlobalDevices, ShardLayout, ShardedArray};

use crate::checkpoint::sharded::owned_tiles;
use crate::checkpoint::{Checkpoint, NamedTensor};
use crate::optim::Optimizer;
use crate::step::{train_step, Feed, PassReport, Passes, StepProgram, TRAIN_SCALARS};
use crate::tensor::{Dtype, Tensor, TensorData};

/// The train step with its passes; a remat budget is checked by compiling candidates.
pub fn build_train_step(
    client: &Client,
    model: &dyn nn::Model,
    opt: &Optimizer,
    batch: usize,
    passes: &Passes,
) -> Result<(StepProgram, PassReport)> {
    let mut measure = |prog: &StepProgram| -> Result<u64> {
        let c = compile_program(client, prog.clone())?;
        Ok(c.exe.memory_stats()?.temp_bytes.max(0) as u64)
    };
    train_step(model, opt, batch, passes, Some(&mut measure))
}

/// A compiled program and how to feed it.
pub struct Compiled {
    pub prog: StepProgram,
    pub exe: Executable,
    pub compile_s: f64,
    /// Loaded from the persistent compile cache instead of compiled.
    pub cached: bool,
    /// The devices it runs on, in mesh order: in a job of several processes, those of all
    /// of them (this process feeds and reads only its own).
    pub mesh: GlobalDevices,
}

/// The first `n` devices of the client's job, process-major (in one process: its devices
/// `0..n`).
pub fn program_mesh(client: &Client, n: usize) -> Result<GlobalDevices> {
    let have = client.devices().len();
    if n > have {
        bail!(
            "the `[parallel]` config needs {n} devices but the client has {have}: \
             pass `--cpu-devices {n}` (cpu backend) or shrink `parallel.*`"
        );
    }
    Ok(GlobalDevices::from_client(client, n)?)
}

pub fn compile_program(client: &Client, prog: StepProgram) -> Result<Compiled> {
    let n = prog.num_devices();
    let mesh = program_mesh(client, n)?;
    // One process: the plugin's default assignment is devices 0..n, the same mesh.
    let options = if mesh.fully_addressable() {
        CompileOptions::spmd(n)
    } else {
        mesh.compile_options()
    };
    let t = Instant::now();
    let (_, exe, outcome) =
        crate::exec::compile_cached(client, &prog.graph, &prog.lower_options(), &options)?;
    Ok(Compiled {
        prog,
        exe,
        compile_s: t.elapsed().as_secs_f64(),
        cached: outcome.is_hit(),
        mesh,
    })
}

impl Compiled {
    /// The rows of a training batch this process feeds: those its devices hold of every
    /// data input (the whole batch in one process).
    pub fn local_rows(&self) -> Range<usize> {
        let mut rows: Option<Range<usize>> = None;
        for (i, t) in self.prog.data_types.iter().enumerate() {
            let Some(arg) = self.prog.feeds.iter().position(|f| *f == Feed::Data(i)) else {
                continue;
            };
            let layout = self.prog.arg_layout(arg, t.dims());
            for (pos, _) in self.mesh.local() {
                let (lo, hi) = layout.tile_rows(pos);
                let (lo, hi) = (lo as usize, hi as usize);
                rows = Some(match rows {
                    None => lo..hi,
                    Some(r) => r.start.min(lo)..r.end.max(hi),
                });
            }
        }
        rows.unwrap_or(0..0)
    }
}

/// A state array with its checkpoint name and its parameter's index.
pub type Named<'a> = (usize, String, &'a ShardedArray);

/// Parameters and optimizer state on the program's devices (sharded by its plan).
pub struct TrainState {
    pub params: Vec<ShardedArray>,
    /// Param-major: `state[i * slots + k]`.
    pub state: Vec<ShardedArray>,
    pub step: usize,
    /// The run's seed (dropout seeds derive from it and the step).
    pub seed: u64,
    /// Multiplier of the scheduled learning rate (Keras-style LR callbacks set it).
    pub lr_scale: f32,
}

/// The dropout seed of a step: a function of (seed, step) only, so resuming is exact.
pub fn step_seed(seed: u64, step: usize) -> u32 {
    let mut h = seed ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h = (h ^ (h >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
    (h ^ (h >> 33)) as u32
}

impl TrainState {
    /// Fresh parameters from the seed, zero optimizer state.
    pub fn init(client: &Client, prog: &StepProgram, seed: u64) -> Result<TrainState> {
        TrainState::init_from(client, prog, seed, &vec![None; prog.params.len()])
    }

    /// Parameters from `loaded` where given (in the program's parameter order, e.g. the
    /// tensors of `weights::load_named(.., &weights::targets(&prog.params)?, ..)`), fresh
    /// from the seed elsewhere; zero optimizer state, step 0: a run from pretrained weights.
    pub fn init_from(
        client: &Client,
        prog: &StepProgram,
        seed: u64,
        loaded: &[Option<Tensor>],
    ) -> Result<TrainState> {
        if loaded.len() != prog.params.len() {
            bail!(
                "{} loaded tensors for the program's {} parameters: load them for \
                 weights::targets(&prog.params)",
                loaded.len(),
                prog.params.len()
            );
        }
        let mut params = Vec::with_capacity(prog.params.len());
        let mut state = Vec::new();
        let mesh = program_mesh(client, prog.num_devices())?;
        for (i, p) in prog.params.iter().enumerate() {
            let layout = prog.param_layout(i);
            params.push(match &loaded[i] {
                Some(t) => {
                    if t.dims != p.ty.dims() || Dtype::of_graph(p.ty.dtype) != Some(t.dtype()) {
                        bail!(
                            "loaded tensor `{}` is {}{:?} but parameter `{}` is {}",
                            t.name,
                            t.dtype(),
                            t.dims,
                            p.name,
                            p.ty
                        );
                    }
                    upload(client, &t.data, &layout, &mesh)?
                }
                None => {
                    ShardedArray::from_host_local(client, &p.initial_values(seed), &layout, &mesh)?
                }
            });
            // Frozen parameters have no optimizer state.
            let slots = if prog.state_index(i, 0).is_some() {
                prog.slots.len()
            } else {
                0
            };
            for _ in 0..slots {
                let zeros = vec![0f32; p.count()];
                state.push(ShardedArray::from_host_local(
                    client, &zeros, &layout, &mesh,
                )?);
            }
        }
        Ok(TrainState {
            params,
            state,
            step: 0,
            seed,
            lr_scale: 1.0,
        })
    }
}

/// Host values of any weight dtype onto this process's devices of `layout`.
fn upload(
    client: &Client,
    data: &TensorData,
    layout: &ShardLayout,
    mesh: &GlobalDevices,
) -> Result<ShardedArray> {
    Ok(match data {
        TensorData::F32(v) => ShardedArray::from_host_local(client, v, layout, mesh),
        TensorData::BF16(v) => ShardedArray::from_host_local(client, v, layout, mesh),
        TensorData::F16(v) => ShardedArray::from_host_local(client, v, layout, mesh),
        TensorData::I8(v) => ShardedArray::from_host_local(client, v, layout, mesh),
        TensorData::I32(v) => ShardedArray::from_host_local(client, v, layout, mesh),
    }?)
}

/// The data must have the shapes and dtypes the model declared.
pub fn check_data(prog: &StepProgram, batch: &[HostArray], what: &str) -> Result<()> {
    if batch.len() != prog.data_types.len() {
        bail!(
            "the {what} data has {} input(s) per batch but the model takes {}",
            batch.len(),
            prog.data_types.len()
        );
    }
    for (i, (a, t)) in batch.iter().zip(&prog.data_types).enumerate() {
        let dtype = match a {
            HostArray::F32 { .. } => graph::DType::F32,
            HostArray::I32 { .. } => graph::DType::I32,
        };
        if a.dims() != t.dims() || dtype != t.dtype {
            bail!(
                "{what} data input {i} is {dtype}{:?} but the model expects {t}: check the model's \
                 input shape against the dataset (config keys `model.*`, `train.batch_size`)",
                a.dims()
            );
        }
    }
    Ok(())
}

impl TrainState {
    /// Parameters and optimizer state copied to the host, named for a checkpoint.
    pub fn to_host(&self, prog: &StepProgram) -> Result<(Vec<NamedTensor>, Vec<NamedTensor>)> {
        let host = |arrays: Vec<Named>| -> Result<Vec<NamedTensor>> {
            arrays
                .into_iter()
                .map(|(_, name, a)| {
                    Ok(NamedTensor {
                        name,
                        dims: a.dims().to_vec(),
                        data: a.to_host::<f32>()?,
                    })
                })
                .collect()
        };
        let (params, opt) = self.named(prog);
        Ok((host(params)?, host(opt)?))
    }

    /// The arrays a checkpoint holds, with their checkpoint names and parameter indices:
    /// the parameters in program order, and the optimizer state (`{param}.{slot}`,
    /// parameter-major).
    pub fn named(&self, prog: &StepProgram) -> (Vec<Named<'_>>, Vec<Named<'_>>) {
        let mut params = Vec::with_capacity(self.params.len());
        let mut opt = Vec::with_capacity(self.state.len());
        for (i, p) in prog.params.iter().enumerate() {
            params.push((i, p.name.clone(), &self.params[i]));
            for (k, slot) in prog.slots.iter().enumerate() {
                let Some(at) = prog.state_index(i, k) else {
                    continue;
                };
                opt.push((i, format!("{}.{slot}", p.name), &self.state[at]));
            }
        }
        (params, opt)
    }

    /// Device state from a checkpoint, checked against the program's parameters.
    pub fn from_checkpoint(
        client: &Client,
        prog: &StepProgram,
        c: &Checkpoint,
    ) -> Result<TrainState> {
        TrainState::from_checkpoint_keeping(client, prog, c, None)
    }

    /// [`TrainState::from_checkpoint`], except that the parameters flagged in `keep` (frozen
    /// ones not written to checkpoints, such as a distillation teacher) keep their arrays
    /// from `current` (the parameters of the state being replaced).
    pub fn from_checkpoint_keeping(
        client: &Client,
        prog: &StepProgram,
        c: &Checkpoint,
        keep: Option<(&[bool], Vec<ShardedArray>)>,
    ) -> Result<TrainState> {
        let flags: Vec<bool> = match &keep {
            Some((k, _)) => k.to_vec(),
            None => Vec::new(),
        };
        let kept = |i: usize| flags.get(i).copied().unwrap_or(false);
        let mut current: Vec<Option<ShardedArray>> = match keep {
            Some((_, cur)) => cur.into_iter().map(Some).collect(),
            None => Vec::new(),
        };
        let want: Vec<(String, Vec<i64>)> = prog
            .params
            .iter()
            .enumerate()
            .filter(|(i, _)| !kept(*i))
            .map(|(_, p)| (p.name.clone(), p.ty.dims().to_vec()))
            .collect();
        let owners = prog.state_owners();
        let want_opt: Vec<(String, Vec<i64>)> = owners
            .iter()
            .enumerate()
            .map(|(j, &i)| {
                let p = &prog.params[i];
                let s = prog.slots[j % prog.slots.len()];
                (format!("{}.{s}", p.name), p.ty.dims().to_vec())
            })
            .collect();
        let params = Checkpoint::ordered(&c.params, &want, "parameter")?;
        let opt = Checkpoint::ordered(&c.optimizer, &want_opt, "optimizer state")?;
        // Checkpoints hold logical tensors: scatter them by this program's plan (in a job,
        // each process its own tiles).
        let mesh = program_mesh(client, prog.num_devices())?;
        let up = |i: usize, t: &NamedTensor| {
            ShardedArray::from_host_local(client, &t.data, &prog.param_layout(i), &mesh)
        };
        let mut loaded = params.iter();
        let mut arrays = Vec::with_capacity(prog.params.len());
        for i in 0..prog.params.len() {
            if kept(i) {
                if prog.state_index(i, 0).is_some() && !prog.slots.is_empty() {
                    bail!(
                        "parameter `{}` is not checkpointed but trains",
                        prog.params[i].name
                    );
                }
                let a = current.get_mut(i).and_then(Option::take);
                arrays.push(a.context("the kept parameters of the current state")?);
            } else {
                arrays.push(up(i, loaded.next().context("a checkpointed parameter")?)?);
            }
        }
        Ok(TrainState {
            params: arrays,
            state: opt
                .iter()
                .enumerate()
                .map(|(j, t)| up(owners[j], t))
                .collect::<Result<_, _>>()?,
            step: c.state.step,
            seed: c.state.seed,
            lr_scale: 1.0,
        })
    }
}

impl TrainState {
    /// Bytes of parameters one device holds (device 0; shards are equal).
    pub fn param_bytes_per_device(&self) -> usize {
        self.params.iter().map(|p| p.bytes_per_device()).sum()
    }

    /// Bytes of optimizer state one device holds.
    pub fn state_bytes_per_device(&self) -> usize {
        self.state.iter().map(|p| p.bytes_per_device()).sum()
    }
}

/// The per-step scalars a program may take (`None` where it takes none).
#[derive(Default, Clone, Copy)]
pub struct StepScalars<'a> {
    pub step: Option<&'a ShardedArray>,
    pub rng: Option<&'a ShardedArray>,
    pub lr_scale: Option<&'a ShardedArray>,
}

/// Builds the argument list of a program from its feeds.
pub fn arguments<'a>(
    prog: &StepProgram,
    params: &'a [ShardedArray],
    state: &'a [ShardedArray],
    scalars: StepScalars<'a>,
    data: &[&'a ShardedArray],
) -> Result<Vec<&'a ShardedArray>> {
    prog.feeds
        .iter()
        .map(|f| {
            Ok(match *f {
                Feed::Param(i) => &params[i],
                Feed::State(i, k) => {
                    let at = prog
                        .state_index(i, k)
                        .context("a frozen parameter has no optimizer state")?;
                    state
                        .get(at)
                        .with_context(|| format!("missing optimizer state {at}"))?
                }
                Feed::Step => scalars.step.context("program needs a step counter")?,
                Feed::Data(i) => *data
                    .get(i)
                    .with_context(|| format!("missing data input {i}"))?,
                Feed::Rng => scalars.rng.context("program needs a random seed")?,
                Feed::LrScale => scalars
                    .lr_scale
                    .context("program needs a learning-rate scale")?,
            })
        })
        .collect()
}

/// Runs a program on its devices: per-device argument lists from the arrays' shards, and
/// the outputs regrouped into arrays laid out as the program says.
pub fn execute_sharded(c: &Compiled, args: &[&ShardedArray]) -> Result<Vec<ShardedArray>> {
    // This process's devices of the mesh (all of them in one process).
    let local: Vec<usize> = c.mesh.local().into_iter().map(|l| l.0).collect();
    if let Some((i, a)) = args
        .iter()
        .enumerate()
        .find(|(_, a)| a.positions() != local)
    {
        bail!(
            "argument {i} of `{}` is on mesh positions {:?} but this process runs it on {local:?}",
            c.prog.graph.name,
            a.positions()
        );
    }
    let n = local.len();
    let per_device: Vec<Vec<&runtime::Buffer>> = (0..n)
        .map(|d| args.iter().map(|a| &a.shards()[d]).collect())
        .collect();
    let outs = c.exe.execute(&per_device)?;
    let mut by_output: Vec<Vec<runtime::Buffer>> = Vec::new();
    for dev in outs {
        for (o, b) in dev.into_iter().enumerate() {
            if by_output.len() <= o {
                by_output.push(Vec::with_capacity(n));
            }
            by_output[o].push(b);
        }
    }
    by_output
        .into_iter()
        .enumerate()
        .map(|(o, shards)| {
            let dims = c.prog.graph.ty(c.prog.graph.outputs[o])?.dims().to_vec();
            Ok(ShardedArray::from_local_shards(
                c.prog.output_layout(o, &dims),
                &c.mesh,
                shards,
            )?)
        })
        .collect()
}

/// A scalar on every device of `c` (this process's).
fn replicated_scalar<T: runtime::NativeType>(
    client: &Client,
    c: &Compiled,
    v: T,
) -> Result<ShardedArray> {
    let layout = ShardLayout::replicated(&[], c.mesh.num_devices());
    Ok(ShardedArray::from_host_local(
        client,
        &[v],
        &layout,
        &c.mesh,
    )?)
}

/// The batch scattered as the program's data arguments are laid out. `rows`: which rows of
/// the global batch `batch` holds (`None`: all of them), as [`Compiled::local_rows`] says.
pub fn data_arrays(
    client: &Client,
    c: &Compiled,
    batch: &[HostArray],
    rows: Option<Range<usize>>,
) -> Result<Vec<ShardedArray>> {
    let prog = &c.prog;
    batch
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let arg = prog
                .feeds
                .iter()
                .position(|f| *f == Feed::Data(i))
                .with_context(|| format!("program takes no data input {i}"))?;
            let t = prog
                .data_types
                .get(i)
                .with_context(|| format!("program takes no data input {i}"))?;
            let layout = prog.arg_layout(arg, t.dims());
            let have = a.dims().first().copied().unwrap_or(1) as usize;
            let rows = rows.clone().unwrap_or(0..have);
            if rows.len() != have {
                bail!("data input {i} has {have} rows for rows {rows:?} of the global batch");
            }
            let r = rows.start as i64..rows.end as i64;
            Ok(match a {
                HostArray::F32 { data, .. } => {
                    ShardedArray::from_host_rows(client, data, r, &layout, &c.mesh)?
                }
                HostArray::I32 { data, .. } => {
                    ShardedArray::from_host_rows(client, data, r, &layout, &c.mesh)?
                }
            })
        })
        .collect()
}

/// One optimizer step; returns (loss, lr, grad_norm).
pub fn run_train_step(
    client: &Client,
    c: &Compiled,
    st: &mut TrainState,
    batch: &[HostArray],
) -> Result<(f32, f32, f32)> {
    run_train_step_rows(client, c, st, batch, None)
}

/// [`run_train_step`] on this process's rows of the batch (see [`data_arrays`]).
pub fn run_train_step_rows(
    client: &Client,
    c: &Compiled,
    st: &mut TrainState,
    batch: &[HostArray],
    rows: Option<Range<usize>>,
) -> Result<(f32, f32, f32)> {
    let data = data_arrays(client, c, batch, rows)?;
    let data: Vec<&ShardedArray> = data.iter().collect();
    run_train_step_on(client, c, st, &data)
}

/// One optimizer step on data already laid out on the program's devices (e.g. another
/// model's parameters).
pub fn run_train_step_on(
    client: &Client,
    c: &Compiled,
    st: &mut TrainState,
    data: &[&ShardedArray],
) -> Result<(f32, f32, f32)> {
    let step_buf = replicated_scalar(client, c, st.step as f32)?;
    let rng_buf = replicated_scalar(client, c, step_seed(st.seed, st.step))?;
    let lr_buf = replicated_scalar(client, c, st.lr_scale)?;
    let scalars = StepScalars {
        step: Some(&step_buf),
        rng: Some(&rng_buf),
        lr_scale: Some(&lr_buf),
    };
    let args = arguments(&c.prog, &st.params, &st.state, scalars, data)?;
    let mut out = execute_sharded(c, &args)?;
    let n = st.params.len();
    let state = out.split_off(TRAIN_SCALARS + n);
    let params = out.split_off(TRAIN_SCALARS);
    let scalars: Vec<f32> = out
        .iter()
        .map(|b| Ok(b.shards()[0].to_host::<f32>()?[0]))
        .collect::<Result<_>>()?;
    st.params = params;
    st.state = state;
    st.step += 1;
    Ok((scalars[0], scalars[1], scalars[2]))
}

/// Sums of each per-example output over the evaluation set, and the example count. In a
/// job of several processes, the sums of the rows this process owns (each row is owned by
/// one process): add them over the processes.
pub fn evaluate(
    client: &Client,
    c: &Compiled,
    params: &[ShardedArray],
    batches: &[(Vec<HostArray>, usize)],
) -> Result<(Vec<f64>, usize)> {
    let mut sums = vec![0f64; c.prog.per_example.len()];
    let mut n = 0;
    let owner = c.mesh.process_of_position();
    let me = c.mesh.process() as u32;
    for (inputs, valid) in batches {
        let data = data_arrays(client, c, inputs, None)?;
        let data: Vec<&ShardedArray> = data.iter().collect();
        let args = arguments(&c.prog, params, &[], StepScalars::default(), &data)?;
        let out = execute_sharded(c, &args)?;
        for (s, b) in sums.iter_mut().zip(&out) {
            // Rows of the tiles this process owns (a replicated output: all, by one process).
            for idx in owned_tiles(&b.layout, &owner, me) {
                let pos = b
                    .layout
                    .device_tiles
                    .iter()
                    .position(|t| *t == idx)
                    .context("an owned tile on no device")?;
                let k = b
                    .positions()
                    .iter()
                    .position(|&p| p == pos)
                    .context("an owned tile on another process")?;
                let v = b.shards()[k].to_host::<f32>()?;
                let (lo, _) = b.layout.tile_rows(pos);
                let row_elems = b.layout.shard_dims().iter().skip(1).product::<i64>().max(1);
                for (e, x) in v.iter().enumerate() {
                    if (lo as usize + e / row_elems as usize) < *valid {
                        *s += *x as f64;
                    }
                }
            }
        }
        n += valid;
    }
    Ok((sums, n))
}
