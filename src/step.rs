//! The train and eval step programs: forward + backward + optimizer in one graph, with a map
//! of what feeds each argument and which arguments are donated to which outputs.

use anyhow::{Context, Result};
use graph::{DType, Graph, NodeId, TensorType};
use models::{Mode, Model, ParamSpec, Params};

use crate::optim::{slot_type, Optimizer};

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
}

impl StepProgram {
    pub fn lower_options(&self) -> lower::LowerOptions {
        lower::LowerOptions {
            module_name: Some(self.graph.name.clone()),
            aliases: self.aliases.clone(),
            ..Default::default()
        }
    }
}

fn feeds_of(
    g: &Graph,
    params: &[ParamSpec],
    state: &[Vec<NodeId>],
    step: Option<NodeId>,
    data: &[NodeId],
    rng: Option<NodeId>,
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
            if Some(a) == step {
                return Ok(Feed::Step);
            }
            if let Some(i) = data.iter().position(|&d| d == a) {
                return Ok(Feed::Data(i));
            }
            if Some(a) == rng {
                return Ok(Feed::Rng);
            }
            anyhow::bail!("graph argument {a} is neither a parameter, optimizer state nor data")
        })
        .collect()
}

/// Builds forward + backward + update for batches of `batch` examples.
pub fn train_step(model: &dyn Model, opt: &Optimizer, batch: usize) -> Result<StepProgram> {
    let mut g = Graph::new("train_step");
    let mut p = Params::new();
    let fwd = model
        .forward(&mut g, &mut p, batch, Mode::Train)
        .context("building the model")?;
    let wrt: Vec<NodeId> = p.specs.iter().map(|s| s.node).collect();
    let (mut g, grads) =
        graph::autodiff::grad(&g, fwd.loss, &wrt).context("differentiating the model")?;
    let slots = opt.state_slots();
    let mut state = Vec::with_capacity(p.specs.len());
    for s in &p.specs {
        let mut v = Vec::with_capacity(slots.len());
        for slot in &slots {
            v.push(g.input(&format!("{}.{slot}", s.name), slot_type(&s.ty))?);
        }
        state.push(v);
    }
    let step = g.input("step", TensorType::scalar(DType::F32))?;
    let upd = opt
        .apply(&mut g, &wrt, &grads, &state, step)
        .context("building the optimizer update")?;
    let mut outputs = vec![fwd.loss, upd.lr, upd.grad_norm];
    outputs.extend(&upd.params);
    for s in &upd.state {
        outputs.extend(s);
    }
    g.set_outputs(&outputs)?;
    let feeds = feeds_of(&g, &p.specs, &state, Some(step), &fwd.inputs, fwd.rng_seed)?;
    let n = p.specs.len();
    let mut aliases = Vec::new();
    for (arg, f) in feeds.iter().enumerate() {
        match *f {
            Feed::Param(i) => aliases.push((arg, TRAIN_SCALARS + i)),
            Feed::State(i, k) => aliases.push((arg, TRAIN_SCALARS + n + i * slots.len() + k)),
            _ => {}
        }
    }
    let data_types = fwd
        .inputs
        .iter()
        .map(|&d| g.ty(d).cloned())
        .collect::<graph::Result<_>>()?;
    Ok(StepProgram {
        graph: g,
        params: p.specs,
        slots,
        feeds,
        data_types,
        aliases,
        per_example: Vec::new(),
    })
}

/// Builds the evaluation forward: outputs the per-example values.
pub fn eval_step(model: &dyn Model, batch: usize) -> Result<StepProgram> {
    let mut g = Graph::new("eval_step");
    let mut p = Params::new();
    let fwd = model
        .forward(&mut g, &mut p, batch, Mode::Eval)
        .context("building the model")?;
    let outs: Vec<NodeId> = fwd.per_example.iter().map(|(_, n)| *n).collect();
    g.set_outputs(&outs)?;
    let feeds = feeds_of(&g, &p.specs, &[], None, &fwd.inputs, fwd.rng_seed)?;
    let data_types = fwd
        .inputs
        .iter()
        .map(|&d| g.ty(d).cloned())
        .collect::<graph::Result<_>>()?;
    Ok(StepProgram {
        graph: g,
        params: p.specs,
        slots: Vec::new(),
        feeds,
        data_types,
        aliases: Vec::new(),
        per_example: fwd.per_example.into_iter().map(|(n, _)| n).collect(),
    })
}
