//! The train and eval step programs: forward + backward + optimizer in one graph, with a map
//! of what feeds each argument and which arguments are donated to which outputs.

use anyhow::{Context, Result};
use graph::{DType, Graph, NodeId, TensorType};
use std::rc::Rc;

use nn::{Mode, Model, ParamSpec, Params, RepeatHook};

use crate::pipeline::{Gpipe, Pipeline};

use crate::optim::{slot_type, Optimizer};
use crate::parallel::{Plan, ProgramSharding};

/// What feeds one argument of a step program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    Param(usize),
    /// (parameter, slot)
    State(usize, usize),
    /// The 0-based update count, an f32 scalar.
    Step,
    /// The i-th data input of the model's forward.
    Data(usize),
    /// The per-step u32 seed of in-graph randomness.
    Rng,
    /// The f32 multiplier of the scheduled learning rate (1 unless a callback changes it).
    LrScale,
}

/// Outputs of the train step, in order: `[loss, lr, grad_norm, params.., state..]`.
pub const TRAIN_SCALARS: usize = 3;

/// A step graph plus how to drive it.
#[derive(Debug, Clone)]
pub struct StepProgram {
    pub graph: Graph,
    pub params: Vec<ParamSpec>,
    pub slots: Vec<&'static str>,
    /// One entry per graph argument, in `Graph::args()` order.
    pub feeds: Vec<Feed>,
    /// Types of the data inputs, in forward order.
    pub data_types: Vec<TensorType>,
    /// (argument, output) donation pairs.
    pub aliases: Vec<(usize, usize)>,
    /// Names of the per-example outputs (eval programs).
    pub per_example: Vec<String>,
    /// Placement over a device mesh; `None`: one device.
    pub sharding: Option<ProgramSharding>,
    /// Pipelined programs: the layer scopes each stage runs.
    pub stages: Vec<Vec<String>>,
    /// Per parameter: whether it trains. Frozen ones (`train.freeze`) get no gradient and no
    /// optimizer state, and the train step returns them unchanged.
    pub trainable: Vec<bool>,
}

impl StepProgram {
    /// Where slot `k` of parameter `i` lies in the (param-major) optimizer state: only
    /// trainable parameters have slots.
    pub fn state_index(&self, i: usize, k: usize) -> Option<usize> {
        if !self.trainable.get(i).copied().unwrap_or(true) {
            return None;
        }
        let before = self.trainable[..i].iter().filter(|&&t| t).count();
        Some(before * self.slots.len() + k)
    }

    /// The parameter each optimizer-state entry belongs to, in state order.
    pub fn state_owners(&self) -> Vec<usize> {
        (0..self.params.len())
            .filter(|&i| self.trainable.get(i).copied().unwrap_or(true))
            .flat_map(|i| std::iter::repeat_n(i, self.slots.len()))
            .collect()
    }

    pub fn lower_options(&self) -> lower::LowerOptions {
        let mut o = lower::LowerOptions {
            module_name: Some(self.graph.name.clone()),
            aliases: self.aliases.clone(),
            ..Default::default()
        };
        if let Some(s) = &self.sharding {
            let ann = |v: &Vec<Vec<Option<String>>>| {
                v.iter()
                    .map(|a| Some(ProgramSharding::annotation(a)))
                    .collect()
            };
            o.arg_shardings = ann(&s.args);
            o.result_shardings = ann(&s.outputs);
            o.mesh = Some(s.plan.mesh.clone());
            o.axis_rules = s.plan.rules.clone();
            o.num_partitions = s.plan.num_devices() as u32;
        }
        o
    }

    /// The pipeline schedule and stage placement (layers and devices of each stage), when
    /// the program is pipelined.
    pub fn pipeline_json(&self) -> Option<serde_json::Value> {
        let plan = &self.sharding.as_ref()?.plan;
        let pipe = plan.pipeline()?;
        let placement: Vec<serde_json::Value> = self
            .stages
            .iter()
            .enumerate()
            .map(|(s, layers)| {
                serde_json::json!({"stage": s, "devices": plan.stage_devices(s), "layers": layers})
            })
            .collect();
        Some(serde_json::json!({
            "schedule": "gpipe",
            "stages": pipe.stages,
            "microbatches": pipe.microbatches,
            "iterations": pipe.iterations(),
            "bubble_fraction": pipe.bubble_fraction(),
            "placement": placement,
        }))
    }

    /// Devices the program runs on.
    pub fn num_devices(&self) -> usize {
        self.sharding.as_ref().map_or(1, |s| s.plan.num_devices())
    }

    fn layout_of(&self, axes: Option<&Vec<Option<String>>>, dims: &[i64]) -> runtime::ShardLayout {
        match (&self.sharding, axes) {
            (Some(s), Some(a)) => s.plan.layout(a, dims),
            _ => runtime::ShardLayout::replicated(dims, self.num_devices()),
        }
    }

    /// How argument `i` lies on the devices.
    pub fn arg_layout(&self, i: usize, dims: &[i64]) -> runtime::ShardLayout {
        self.layout_of(self.sharding.as_ref().and_then(|s| s.args.get(i)), dims)
    }

    /// How output `i` lies on the devices.
    pub fn output_layout(&self, i: usize, dims: &[i64]) -> runtime::ShardLayout {
        self.layout_of(self.sharding.as_ref().and_then(|s| s.outputs.get(i)), dims)
    }

    /// How parameter `i` (and its optimizer slots) lies on the devices.
    pub fn param_layout(&self, i: usize) -> runtime::ShardLayout {
        let dims = self.params[i].ty.dims();
        match self.feeds.iter().position(|f| *f == Feed::Param(i)) {
            Some(a) => self.arg_layout(a, dims),
            None => runtime::ShardLayout::replicated(dims, self.num_devices()),
        }
    }

    /// Places the program on `plan`'s mesh: parameters and optimizer state by their logical
    /// axes, data split on the batch, scalars replicated. Outputs: train programs return
    /// parameters and state where they came from (so donation works); per-example outputs
    /// are split like the batch.
    pub fn shard(&mut self, plan: &Plan) -> Result<()> {
        let g = &self.graph;
        let args = g
            .args()
            .iter()
            .zip(&self.feeds)
            .map(|(&a, f)| {
                Ok(match *f {
                    Feed::Param(i) | Feed::State(i, _) => plan.param_axes(&self.params[i]),
                    Feed::Data(i) => plan.batch_axes(&self.data_types[i]),
                    Feed::Step | Feed::Rng | Feed::LrScale => vec![None; g.ty(a)?.rank()],
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let np = self.params.len();
        let owners = self.state_owners();
        let outputs = g
            .outputs
            .iter()
            .enumerate()
            .map(|(o, &n)| {
                let ty = g.ty(n)?;
                Ok(if !self.per_example.is_empty() {
                    plan.batch_axes(ty)
                } else if o >= TRAIN_SCALARS {
                    let k = o - TRAIN_SCALARS;
                    let i = if k < np { k } else { owners[k - np] };
                    plan.param_axes(&self.params[i])
                } else {
                    vec![None; ty.rank()]
                })
            })
            .collect::<Result<Vec<_>>>()?;
        self.sharding = Some(ProgramSharding {
            plan: plan.clone(),
            args,
            outputs,
        });
        Ok(())
    }
}

/// Step-program arguments that are neither parameters, state nor data.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    step: Option<NodeId>,
    rng: Option<NodeId>,
    lr_scale: Option<NodeId>,
}

fn feeds_of(
    g: &Graph,
    params: &[ParamSpec],
    state: &[Vec<NodeId>],
    data: &[NodeId],
    c: Counters,
) -> Result<Vec<Feed>> {
    g.args()
        .into_iter()
        .map(|a| {
            if let Some(i) = params.iter().position(|p| p.node == a) {
                return Ok(Feed::Param(i));
            }
            for (i, slots) in state.iter().enumerate() {
                if let Some(k) = slots.iter().position(|&s| s == a) {
                    return Ok(Feed::State(i, k));
                }
            }
            if Some(a) == c.step {
                return Ok(Feed::Step);
            }
            if let Some(i) = data.iter().position(|&d| d == a) {
                return Ok(Feed::Data(i));
            }
            if Some(a) == c.rng {
                return Ok(Feed::Rng);
            }
            if Some(a) == c.lr_scale {
                return Ok(Feed::LrScale);
            }
            anyhow::bail!("graph argument {a} is neither a parameter, optimizer state nor data")
        })
        .collect()
}

/// Compiler passes applied to the train step.
#[derive(Debug, Clone, PartialEq)]
pub struct Passes {
    pub precision: Precision,
    pub remat: Remat,
    /// Microbatches per optimizer step, summed inside one executable.
    pub grad_accum: usize,
    /// The device mesh and sharding rules; `None`: one device.
    pub parallel: Option<Plan>,
    /// A step whose loss or gradient norm is NaN/Inf keeps the old parameters and optimizer
    /// state (the update is dropped inside the program; the host sees the non-finite loss).
    pub skip_nonfinite: bool,
    /// Frozen parameters and learning-rate multipliers (`train.freeze`, `train.lr_multipliers`).
    pub groups: crate::groups::ParamGroups,
    /// Magnitude pruning inside the step (masks as the `pruned` optimizer slot).
    pub prune: Option<crate::prune::Prune>,
}

impl Default for Passes {
    fn default() -> Self {
        Passes {
            precision: Precision::F32,
            remat: Remat::None,
            grad_accum: 1,
            parallel: None,
            skip_nonfinite: false,
            groups: Default::default(),
            prune: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    F32,
    /// bf16 dot/conv operands with f32 accumulation; everything else f32.
    Bf16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remat {
    None,
    Full,
    SaveDots,
    /// Per region, the least recomputation whose compiled temp memory fits.
    Budget(u64),
}

impl std::str::FromStr for Remat {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "none" => Remat::None,
            "full" => Remat::Full,
            "save_dots" => Remat::SaveDots,
            _ => match s.strip_prefix("budget:").map(|b| b.trim().parse::<u64>()) {
                Some(Ok(b)) => Remat::Budget(b),
                _ => anyhow::bail!(
                    "config key `train.remat` is `{s}`: use none, full, save_dots or budget:<bytes>"
                ),
            },
        })
    }
}

impl std::str::FromStr for Precision {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            _ => anyhow::bail!("config key `train.precision` is `{s}`: use f32 or bf16"),
        }
    }
}

/// What the passes did (for the first log line and `rxla summary`).
#[derive(Debug, Clone, Default)]
pub struct PassReport {
    pub precision: Option<graph::PrecisionReport>,
    pub remat: Option<graph::RematReport>,
    /// Compiled temp bytes of the chosen step when a budget search ran.
    pub measured_temp_bytes: Option<u64>,
    pub grad_accum: usize,
}

impl PassReport {
    pub fn to_json(&self) -> serde_json::Value {
        let mut out = serde_json::json!({ "grad_accum": self.grad_accum });
        if let Some(p) = &self.precision {
            out["precision"] = serde_json::json!({
                "dots_bf16": p.dots, "convs_bf16": p.convs, "casts_inserted": p.casts,
            });
        }
        if let Some(r) = &self.remat {
            out["remat"] = serde_json::json!({
                "regions_rematerialized": r.rematerialized(),
                "nodes_cloned": r.cloned_nodes,
                "residual_bytes_before": r.residual_bytes_before,
                "residual_bytes_after": r.residual_bytes_after,
            });
        }
        if let Some(b) = self.measured_temp_bytes {
            out["budget_measured_temp_bytes"] = serde_json::json!(b);
        }
        out
    }

    /// One line for logs.
    pub fn line(&self) -> String {
        let mut parts = Vec::new();
        if let Some(p) = &self.precision {
            parts.push(format!(
                "bf16: {} dots, {} convs, {} casts",
                p.dots, p.convs, p.casts
            ));
        }
        if let Some(r) = &self.remat {
            parts.push(format!(
                "remat: {} region(s) rematerialized, {} nodes cloned",
                r.rematerialized().len(),
                r.cloned_nodes
            ));
        }
        if self.grad_accum > 1 {
            parts.push(format!("grad_accum: {} microbatches", self.grad_accum));
        }
        if parts.is_empty() {
            "passes: none".into()
        } else {
            parts.join("; ")
        }
    }
}

/// The types of `nodes` of `g`.
fn types_of(g: &Graph, nodes: &[NodeId]) -> Result<Vec<TensorType>> {
    Ok(nodes
        .iter()
        .map(|&d| g.ty(d).cloned())
        .collect::<graph::Result<_>>()?)
}

/// What the full step needs to know about a micro-step graph.
struct MicroMeta {
    params: Vec<ParamSpec>,
    /// Data input types of the microbatch, in forward order.
    data_types: Vec<TensorType>,
    /// For each micro graph argument: what it is.
    feeds: Vec<Feed>,
    /// The layer scopes each pipeline stage runs.
    stages: Vec<Vec<String>>,
    /// Parameters whose new value the model computes (outputs after the gradients).
    updates: Vec<usize>,
    /// Per parameter: whether it trains (has a gradient output).
    trainable: Vec<bool>,
    lr_multiplier: Vec<f64>,
}

/// Forward + backward of one microbatch (outputs `[loss, grads..]`), its blocks run as
/// `pipe` when given.
fn micro_step(
    model: &dyn Model,
    batch: usize,
    pipe: Option<Pipeline>,
    groups: &crate::groups::ParamGroups,
) -> Result<(Graph, MicroMeta)> {
    let mut g = Graph::new("micro_step");
    let mut p = Params::new();
    let gpipe = pipe.map(|pipe| Rc::new(Gpipe::new(pipe)));
    if let Some(gp) = &gpipe {
        p.repeat = RepeatHook(Some(gp.clone()));
    }
    let fwd = model
        .forward(&mut g, &mut p, batch, Mode::Train)
        .context("building the model")?;
    let stages = match &gpipe {
        Some(gp) => {
            let stages = gp.stages.borrow().clone();
            if stages.is_empty() {
                anyhow::bail!(
                    "`parallel.pipeline` splits a model's repeated blocks (`nn::repeated`), \
                     and this model has none"
                );
            }
            stages
        }
        None => Vec::new(),
    };
    let names: Vec<&str> = p.specs.iter().map(|s| s.name.as_str()).collect();
    let groups = groups.resolve(&names)?;
    // Frozen parameters are not differentiated: no gradient is computed for them.
    let wrt: Vec<NodeId> = p
        .specs
        .iter()
        .zip(&groups.trainable)
        .filter(|(_, &t)| t)
        .map(|(s, _)| s.node)
        .collect();
    let (mut g, grads) =
        graph::autodiff::grad(&g, fwd.loss, &wrt).context("differentiating the model")?;
    let mut outs = vec![fwd.loss];
    outs.extend(&grads);
    let mut updates = Vec::with_capacity(fwd.updates.len());
    for &(param, value) in &fwd.updates {
        let i = p
            .specs
            .iter()
            .position(|s| s.node == param)
            .context("a model update targets a node that is not a parameter")?;
        updates.push(i);
        outs.push(value);
    }
    g.set_outputs(&outs)?;
    let c = Counters {
        rng: fwd.rng_seed,
        ..Default::default()
    };
    let feeds = feeds_of(&g, &p.specs, &[], &fwd.inputs, c)?;
    let data_types = types_of(&g, &fwd.inputs)?;
    Ok((
        g,
        MicroMeta {
            params: p.specs,
            data_types,
            feeds,
            stages,
            updates,
            trainable: groups.trainable,
            lr_multiplier: groups.lr_multiplier,
        },
    ))
}

/// Compiles a candidate step and returns its temp bytes (for a remat budget).
pub type MeasureTemp<'a> = dyn FnMut(&StepProgram) -> Result<u64> + 'a;

/// Builds forward + backward + update for batches of `batch` examples, with the passes.
/// A remat budget compiles candidates through `measure` (compiled temp bytes of a step).
pub fn train_step(
    model: &dyn Model,
    opt: &Optimizer,
    batch: usize,
    passes: &Passes,
    measure: Option<&mut MeasureTemp>,
) -> Result<(StepProgram, PassReport)> {
    let k = passes.grad_accum.max(1);
    if !batch.is_multiple_of(k) {
        anyhow::bail!("train.batch_size ({batch}) must be a multiple of train.grad_accum ({k})");
    }
    let pipe = passes.parallel.as_ref().and_then(|p| p.pipeline());
    if let Some(plan) = &passes.parallel {
        let d = plan.mesh.size(crate::parallel::DATA) as usize;
        if !(batch / k).is_multiple_of(d) {
            anyhow::bail!(
                "train.batch_size ({batch}) / train.grad_accum ({k}) must be a multiple of \
                 parallel.data ({d}): each data-parallel device takes an equal share"
            );
        }
        if let Some(pp) = pipe {
            let m = pp.microbatches;
            if !(batch / k).is_multiple_of(m * d) {
                anyhow::bail!(
                    "train.batch_size ({batch}) / train.grad_accum ({k}) must be a multiple of \
                     parallel.microbatches ({m}) x parallel.data ({d}): each pipeline \
                     microbatch is split over the data-parallel devices"
                );
            }
        }
    }
    let (mut micro, meta) = micro_step(model, batch / k, pipe, &passes.groups)?;
    if let Some(plan) = &passes.parallel {
        plan.check_tensor_splits(&meta.params)?;
    }
    let mut report = PassReport {
        grad_accum: k,
        ..Default::default()
    };
    if passes.precision == Precision::Bf16 {
        let (g, r) = graph::mixed_precision(&micro, &graph::PrecisionPolicy::bf16())
            .context("mixed-precision pass")?;
        micro = g;
        report.precision = Some(r);
    }
    let static_policy = match passes.remat {
        Remat::None => None,
        Remat::Full => Some(graph::RematPolicy::Full),
        Remat::SaveDots => Some(graph::RematPolicy::SaveDots),
        Remat::Budget(_) => None,
    };
    if let Some(policy) = static_policy {
        let (g, r) = graph::remat(&micro, &policy).context("remat pass")?;
        micro = g;
        report.remat = Some(r);
    }
    if let Remat::Budget(bytes) = passes.remat {
        let measure = measure.context("a remat budget needs a device to measure on")?;
        let (g, r, measured) = graph::passes::remat_within(&micro, bytes, |cand: &Graph| {
            measure(&assemble(
                cand,
                &meta,
                opt,
                batch,
                k,
                passes.skip_nonfinite,
                passes.prune.as_ref(),
            )?)
        })
        .context("remat budget search")?;
        if measured > bytes {
            anyhow::bail!(
                "train.remat budget {bytes} bytes cannot be met: full remat still needs {measured} temp bytes"
            );
        }
        micro = g;
        report.remat = Some(r);
        report.measured_temp_bytes = Some(measured);
    }
    let mut prog = assemble(
        &micro,
        &meta,
        opt,
        batch,
        k,
        passes.skip_nonfinite,
        passes.prune.as_ref(),
    )?;
    if let Some(plan) = &passes.parallel {
        prog.shard(plan)?;
    }
    Ok((prog, report))
}

/// Copies the micro-step graph into `g` with its arguments bound to `params`, `data` and
/// `rng` (nodes of `g`); returns its outputs `[loss, grads..]`.
fn inline_micro(
    g: &mut Graph,
    micro_graph: &Graph,
    feeds: &[Feed],
    params: &[NodeId],
    data: &[NodeId],
    rng: Option<NodeId>,
) -> Result<Vec<NodeId>> {
    let args: Vec<NodeId> = feeds
        .iter()
        .map(|f| match *f {
            Feed::Param(i) => Ok(params[i]),
            Feed::Data(i) => Ok(data[i]),
            Feed::Rng => rng.context("rng input"),
            _ => anyhow::bail!("unexpected micro-step argument {f:?}"),
        })
        .collect::<Result<_>>()?;
    let map = graph::rewrite::inline(g, micro_graph, &args)?;
    Ok(micro_graph.outputs.iter().map(|o| map[o.index()]).collect())
}

/// The full step around a micro graph: parameters, data (k microbatches), the summed
/// gradients (a scan when k > 1), and the optimizer update (dropped when the loss or the
/// gradient norm is not finite, with `skip_nonfinite`).
fn assemble(
    micro_graph: &Graph,
    micro: &MicroMeta,
    opt: &Optimizer,
    batch: usize,
    k: usize,
    skip_nonfinite: bool,
    prune: Option<&crate::prune::Prune>,
) -> Result<StepProgram> {
    let mut g = Graph::new("train_step");
    let params: Vec<NodeId> = micro
        .params
        .iter()
        .map(|s| g.parameter(&s.name, s.ty.clone()))
        .collect::<graph::Result<_>>()?;
    let data_types: Vec<TensorType> = micro
        .data_types
        .iter()
        .map(|t| {
            // Only split inputs change shape; with one microbatch, inputs that are not
            // per-example (another model's weights) pass as they are.
            let mut d = t.dims().to_vec();
            if k > 1 {
                d[0] = batch as i64;
            }
            TensorType::new(t.dtype, d)
        })
        .collect();
    let data: Vec<NodeId> = data_types
        .iter()
        .enumerate()
        .map(|(i, t)| g.input(&format!("data{i}"), t.clone()))
        .collect::<graph::Result<_>>()?;
    let rng = if micro.feeds.contains(&Feed::Rng) {
        Some(g.input("dropout_seed", TensorType::scalar(DType::U32))?)
    } else {
        None
    };
    let np = params.len();
    // The trainable parameters: the micro step's gradients are theirs, in this order.
    let tr: Vec<usize> = (0..np).filter(|&i| micro.trainable[i]).collect();
    let nt = tr.len();
    let mut updated = Vec::new();
    let (loss, grads) = if k == 1 {
        let outs = inline_micro(&mut g, micro_graph, &micro.feeds, &params, &data, rng)?;
        updated = outs[1 + nt..].to_vec();
        (outs[0], outs[1..1 + nt].to_vec())
    } else {
        if !micro.updates.is_empty() {
            anyhow::bail!(
                "models with non-trainable updates (batch normalization) need train.grad_accum = 1"
            );
        }
        // Body arguments: params (consts), gradient and loss sums (carries), microbatch slices.
        let mut body = Graph::new("microbatch");
        let b_params: Vec<NodeId> = micro
            .params
            .iter()
            .map(|s| body.input(&format!("p.{}", s.name), s.ty.clone()))
            .collect::<graph::Result<_>>()?;
        let b_acc: Vec<NodeId> = tr
            .iter()
            .map(|&i| &micro.params[i])
            .map(|s| body.input(&format!("acc.{}", s.name), s.ty.clone()))
            .collect::<graph::Result<_>>()?;
        let b_loss = body.input("acc.loss", TensorType::scalar(DType::F32))?;
        let b_data: Vec<NodeId> = micro
            .data_types
            .iter()
            .enumerate()
            .map(|(i, t)| body.input(&format!("x{i}"), t.clone()))
            .collect::<graph::Result<_>>()?;
        let b_rng = match rng {
            Some(_) => Some(body.input("seed", TensorType::scalar(DType::U32))?),
            None => None,
        };
        let outs = inline_micro(
            &mut body,
            micro_graph,
            &micro.feeds,
            &b_params,
            &b_data,
            b_rng,
        )?;
        let mut carries = Vec::with_capacity(nt + 1);
        for (i, &a) in b_acc.iter().enumerate() {
            let gr = body.convert(outs[1 + i], DType::F32)?;
            carries.push(body.add(a, gr)?);
        }
        let l = body.convert(outs[0], DType::F32)?;
        carries.push(body.add(b_loss, l)?);
        body.set_outputs(&carries)?;
        // Outer: zeros to start, data split into [k, batch/k, ..], one seed per microbatch.
        let mut init = Vec::with_capacity(nt + 1);
        for &i in &tr {
            init.push(g.full(0.0, micro.params[i].ty.clone())?);
        }
        init.push(g.scalar(0.0, DType::F32)?);
        let mut xs = Vec::with_capacity(data.len() + 1);
        for (&d, t) in data.iter().zip(&micro.data_types) {
            let mut dims = vec![k as i64];
            dims.extend(t.dims());
            xs.push(g.reshape(d, dims)?);
        }
        if let Some(r) = rng {
            let idx = g.iota(TensorType::new(DType::U32, [k as i64]), 0)?;
            let r = g.broadcast_to(r, &[k as i64])?;
            let big = g.full(
                0x9E37_79B9u32 as f64,
                TensorType::new(DType::U32, [k as i64]),
            )?;
            let idx = g.mul(idx, big)?;
            xs.push(g.xor(r, idx)?);
        }
        let out = g.scan_with_body(body, k as i64, &params, &init, &xs, false)?;
        let inv = 1.0 / k as f64;
        let grads = out.carries[..nt]
            .iter()
            .map(|&c| g.mul_scalar(c, inv))
            .collect::<graph::Result<Vec<_>>>()?;
        (g.mul_scalar(out.carries[nt], inv)?, grads)
    };
    let mut slots = opt.state_slots();
    if prune.is_some() {
        slots.push(crate::prune::SLOT);
    }
    // Optimizer state only for trainable parameters (frozen ones get an empty list).
    let mut state = vec![Vec::new(); np];
    for &i in &tr {
        let s = &micro.params[i];
        for slot in &slots {
            state[i].push(g.input(&format!("{}.{slot}", s.name), slot_type(&s.ty))?);
        }
    }
    let step = g.input("step", TensorType::scalar(DType::F32))?;
    let lr_scale = g.input("lr_scale", TensorType::scalar(DType::F32))?;
    let t_params: Vec<NodeId> = tr.iter().map(|&i| params[i]).collect();
    let t_state: Vec<Vec<NodeId>> = tr.iter().map(|&i| state[i].clone()).collect();
    let t_mult: Vec<f64> = tr.iter().map(|&i| micro.lr_multiplier[i]).collect();
    let upd = opt
        .apply_scaled(
            &mut g,
            &t_params,
            &grads,
            &t_state,
            step,
            Some(lr_scale),
            &t_mult,
        )
        .context("building the optimizer update")?;
    let loss = g.convert(loss, DType::F32)?;
    // Frozen parameters pass through (donated and returned as they came).
    let mut new_params = params.clone();
    let mut new_state = vec![Vec::new(); np];
    for (j, &i) in tr.iter().enumerate() {
        new_params[i] = upd.params[j];
        new_state[i] = upd.state[j].clone();
    }
    if let Some(pr) = prune {
        // Masks are the last slot of the trainable parameters (frozen ones are not pruned).
        let specs: Vec<ParamSpec> = tr.iter().map(|&i| micro.params[i].clone()).collect();
        let masks: Vec<NodeId> = tr.iter().map(|&i| state[i][state[i].len() - 1]).collect();
        let (w, m) = pr.apply(&mut g, &specs, &t_params, &upd.params, &masks, step)?;
        for ((&i, w), m) in tr.iter().zip(w).zip(m) {
            new_params[i] = w;
            new_state[i].push(m);
        }
    }
    for (&i, &v) in micro.updates.iter().zip(&updated) {
        new_params[i] = v;
    }
    if skip_nonfinite {
        // x - x is 0 exactly when x is finite (NaN and ±Inf give NaN).
        let s = g.add(loss, upd.grad_norm)?;
        let d = g.sub(s, s)?;
        let zero = g.scalar(0.0, DType::F32)?;
        let finite = g.compare(graph::CompareDir::Eq, d, zero)?;
        for &i in &tr {
            let p = &mut new_params[i];
            *p = g.select(finite, *p, params[i])?;
            for (slot, old) in new_state[i].iter_mut().zip(&state[i]) {
                *slot = g.select(finite, *slot, *old)?;
            }
        }
    }
    let mut outputs = vec![loss, upd.lr, upd.grad_norm];
    outputs.extend(&new_params);
    for s in &new_state {
        outputs.extend(s);
    }
    g.set_outputs(&outputs)?;
    let mut specs = micro.params.clone();
    for (s, &n) in specs.iter_mut().zip(&params) {
        s.node = n;
    }
    let c = Counters {
        step: Some(step),
        rng,
        lr_scale: Some(lr_scale),
    };
    let feeds = feeds_of(&g, &specs, &state, &data, c)?;
    let mut prog = StepProgram {
        graph: g,
        params: specs,
        slots,
        feeds,
        data_types,
        aliases: Vec::new(),
        per_example: Vec::new(),
        sharding: None,
        stages: micro.stages.clone(),
        trainable: micro.trainable.clone(),
    };
    for (arg, f) in prog.feeds.iter().enumerate() {
        match *f {
            Feed::Param(i) => prog.aliases.push((arg, TRAIN_SCALARS + i)),
            Feed::State(i, s) => {
                let at = prog
                    .state_index(i, s)
                    .context("state of a frozen parameter")?;
                prog.aliases.push((arg, TRAIN_SCALARS + np + at));
            }
            _ => {}
        }
    }
    Ok(prog)
}

/// Builds the evaluation forward: outputs the per-example values; placed on `plan`'s mesh
/// like the train step's parameters. A pipeline plan's stages each evaluate the whole
/// model (no microbatches: the eval batch need not divide).
pub fn eval_step(model: &dyn Model, batch: usize, plan: Option<&Plan>) -> Result<StepProgram> {
    let mut g = Graph::new("eval_step");
    let mut p = Params::new();
    let fwd = model
        .forward(&mut g, &mut p, batch, Mode::Eval)
        .context("building the model")?;
    let outs: Vec<NodeId> = fwd.per_example.iter().map(|(_, n)| *n).collect();
    g.set_outputs(&outs)?;
    let c = Counters {
        rng: fwd.rng_seed,
        ..Default::default()
    };
    let feeds = feeds_of(&g, &p.specs, &[], &fwd.inputs, c)?;
    let data_types = types_of(&g, &fwd.inputs)?;
    let n_params = p.specs.len();
    let mut prog = StepProgram {
        graph: g,
        params: p.specs,
        slots: Vec::new(),
        feeds,
        data_types,
        aliases: Vec::new(),
        per_example: fwd.per_example.into_iter().map(|(n, _)| n).collect(),
        sharding: None,
        stages: Vec::new(),
        trainable: vec![true; n_params],
    };
    if let Some(plan) = plan {
        prog.shard(plan)?;
    }
    Ok(prog)
}

/// The pipeline schedule and where each stage's layers run.
pub fn pipeline_text(p: &serde_json::Value) -> String {
    let mut out = format!(
        "Pipeline: GPipe, {} stages x {} microbatches, {} iterations, bubble (S-1)/(M+S-1) = {:.3}\n",
        p["stages"],
        p["microbatches"],
        p["iterations"],
        p["bubble_fraction"].as_f64().unwrap_or(0.0)
    );
    for s in p["placement"].as_array().into_iter().flatten() {
        let list = |v: &serde_json::Value| -> String {
            v.as_array()
                .into_iter()
                .flatten()
                .map(|x| x.as_str().map_or_else(|| x.to_string(), String::from))
                .collect::<Vec<_>>()
                .join(", ")
        };
        out.push_str(&format!(
            "  stage {} on devices [{}]: layers {}\n",
            s["stage"],
            list(&s["devices"]),
            list(&s["layers"])
        ));
    }
    out
}
