//! Pipeline parallelism (GPipe in SPMD) as a transform of a model's repeated blocks.
//!
//! The model marks its stack once (`nn::repeated`); this [`Repeat`] declares every layer's
//! parameters as usual (same names, so checkpoints don't care), stacks layer `sK + j` of
//! every stage `s` on a leading `stage` dim (split over the `stage` mesh axis), builds each
//! of the K block positions once as a template on one microbatch, and runs it on every stage
//! at once by batching the template over the stage dim (`graph::vmap`). One iteration runs
//! every stage on its current microbatch, then rotates the states one stage on (a
//! collective-permute once XLA partitions it). M microbatches take M + S - 1 iterations;
//! autodiff of the unrolled loop is the backward pipeline. Exact: bubble iterations compute
//! on values no output depends on. The templates stay behind as dead code XLA drops.

use std::cell::RefCell;
use std::collections::HashMap;

use graph::{DType, Graph, NodeId, Op, Sharding, TensorType, VmapSpec};
use nn::axis::{BATCH, STAGE};
use nn::repeat::{ApplyFn, DeclareFn};
use nn::{Params, Repeat};

/// A GPipe schedule: a model's repeated blocks split into `stages` groups of consecutive
/// layers, each batch into `microbatches`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pipeline {
    pub stages: usize,
    pub microbatches: usize,
}

impl Pipeline {
    /// Iterations of the schedule: the last microbatch leaves the last stage at M + S - 1.
    pub fn iterations(&self) -> usize {
        self.microbatches + self.stages - 1
    }

    /// The share of stage-iterations spent idle: (S - 1) / (M + S - 1).
    pub fn bubble_fraction(&self) -> f64 {
        (self.stages - 1) as f64 / self.iterations() as f64
    }
}

/// The pipeline as a [`Repeat`]; remembers which layers each stage runs.
pub struct Gpipe {
    pub pipe: Pipeline,
    /// The layer scopes each stage runs, filled when the model builds its blocks.
    pub stages: RefCell<Vec<Vec<String>>>,
}

impl Gpipe {
    pub fn new(pipe: Pipeline) -> Self {
        Gpipe {
            pipe,
            stages: RefCell::new(Vec::new()),
        }
    }
}

/// Scalar integer inputs the template reads (dropout seeds): batched per stage so that each
/// stage and iteration draws its own masks.
fn captured_seeds(g: &Graph, template: &[NodeId]) -> graph::Result<Vec<NodeId>> {
    let inside: std::collections::HashSet<NodeId> = template.iter().copied().collect();
    let mut seeds = Vec::new();
    for &n in template {
        for &i in &g.node(n)?.inputs {
            let t = g.ty(i)?;
            if !inside.contains(&i)
                && matches!(g.node(i)?.op, Op::Input(_))
                && t.rank() == 0
                && t.dtype.is_int()
                && !seeds.contains(&i)
            {
                seeds.push(i);
            }
        }
    }
    Ok(seeds)
}

/// `seed + (it·S + s + 1)·golden` for each stage `s`: distinct per stage and iteration.
fn stage_seeds(g: &mut Graph, seed: NodeId, it: i64, s: i64) -> graph::Result<NodeId> {
    let dtype = g.dtype(seed)?;
    let st = g.iota(TensorType::new(DType::U32, [s]), 0)?;
    let off = g.scalar((it * s + 1) as f64, DType::U32)?;
    let st = g.add(st, off)?;
    let golden = g.scalar(2654435769.0, DType::U32)?;
    let st = g.mul(st, golden)?;
    let sd = g.convert(seed, DType::U32)?;
    let sd = g.broadcast_to(sd, &[s])?;
    let v = g.add(sd, st)?;
    if dtype == DType::U32 {
        Ok(v)
    } else {
        g.convert(v, dtype)
    }
}

fn invalid(msg: String) -> graph::GraphError {
    graph::GraphError::Invalid(msg)
}

impl Repeat for Gpipe {
    fn repeat(
        &self,
        g: &mut Graph,
        p: &mut Params,
        prefix: &str,
        count: usize,
        x: NodeId,
        declare: &mut DeclareFn,
        apply: &mut ApplyFn,
    ) -> graph::Result<NodeId> {
        let (s_n, m_n) = (self.pipe.stages, self.pipe.microbatches);
        if s_n == 0 || m_n == 0 || !count.is_multiple_of(s_n) {
            return Err(invalid(format!(
                "model.n_layers ({count}) must be a multiple of the pipeline stages ({s_n}), and \
                 the microbatches ({m_n}) at least 1"
            )));
        }
        let xt = g.ty(x)?.clone();
        let xd = xt.dims().to_vec();
        let b = *xd
            .first()
            .ok_or_else(|| invalid("pipeline input has no batch dim".into()))?;
        if b % m_n as i64 != 0 {
            return Err(invalid(format!(
                "the batch ({b}) must be a multiple of the pipeline microbatches ({m_n})"
            )));
        }
        let per_stage = count / s_n;
        let (s, m) = (s_n as i64, m_n as i64);
        let mb = b / m;
        let rest = xd[1..].to_vec();
        let with = |lead: &[i64]| -> Vec<i64> {
            let mut v = lead.to_vec();
            v.extend(&rest);
            v
        };

        // Every layer's parameters, declared in order under `{prefix}{l}`.
        let mut layers: Vec<Vec<NodeId>> = Vec::with_capacity(count);
        for l in 0..count {
            let start = p.specs.len();
            p.scope(&format!("{prefix}{l}"), |p| declare(g, p, l))?;
            layers.push(p.specs[start..].iter().map(|s| s.node).collect());
        }
        for (l, ps) in layers.iter().enumerate() {
            let same = ps.len() == layers[0].len()
                && ps
                    .iter()
                    .zip(&layers[0])
                    .all(|(a, b)| g.ty(*a).ok() == g.ty(*b).ok());
            if !same {
                return Err(invalid(format!(
                    "pipeline: block {prefix}{l} declares other parameters than {prefix}0; \
                     stages need identical blocks"
                )));
            }
        }
        let axes_of = |node: NodeId| -> Vec<Option<String>> {
            p.specs
                .iter()
                .find(|sp| sp.node == node)
                .map(|sp| sp.axes.clone())
                .unwrap_or_default()
        };

        // Position j of every stage: each parameter stacked to (S, ..), and a template.
        let stage = STAGE.map(String::from);
        let spec = VmapSpec {
            axis_name: stage.clone(),
        };
        let mut slots = Vec::with_capacity(per_stage);
        for j in 0..per_stage {
            let mut batched = HashMap::new();
            for (i, &first) in layers[j].iter().enumerate() {
                let parts = (0..s_n)
                    .map(|st| {
                        let v = layers[st * per_stage + j][i];
                        let mut dims = vec![1];
                        dims.extend(g.dims(v)?);
                        g.reshape(v, dims)
                    })
                    .collect::<graph::Result<Vec<_>>>()?;
                let v = g.concatenate(&parts, 0)?;
                // The stack keeps its layers' logical axes after the stage dim.
                let mut axes = vec![stage.clone()];
                axes.extend(axes_of(first));
                axes.resize(g.rank(v)?, None);
                batched.insert(first, g.shard(v, Sharding::Logical(axes))?);
            }
            let placeholder = g.full(0.0, TensorType::new(xt.dtype, with(&[mb])))?;
            let start = g.len() as u32;
            let out = apply(g, j, placeholder)?;
            let template: Vec<NodeId> = (start..g.len() as u32).map(NodeId).collect();
            if template.is_empty() || g.ty(out)? != g.ty(placeholder)? {
                return Err(invalid(format!(
                    "pipeline: block {prefix}{j} must map its input to a value of the same type"
                )));
            }
            let seeds = captured_seeds(g, &template)?;
            slots.push((template, batched, placeholder, out, seeds));
        }
        // Activation axes between stages: those the block gives its output, after `stage`.
        let out_axes: Vec<Option<String>> = match &g.node(slots[0].3)?.op {
            Op::Sharding(Sharding::Logical(a)) => a.clone(),
            _ => {
                let mut a = vec![BATCH.map(String::from)];
                a.resize(xd.len(), None);
                a
            }
        };
        let mut state_axes = vec![stage.clone()];
        state_axes.extend(out_axes.iter().cloned());

        // Microbatch i is rows i, M + i, 2M + i, ..: spread over the data-parallel devices
        // like the batch itself.
        let r = xd.len();
        let mut perm: Vec<usize> = vec![1, 0];
        perm.extend(2..=r);
        let xm = g.reshape(x, with(&[mb, m]))?;
        let xm = g.transpose(xm, &perm)?; // (M, mb, ..)
        let full = with(&[s, mb]);
        let stage_idx = g.iota(TensorType::new(DType::I32, full.clone()), 0)?;
        let zero = g.full(0.0, TensorType::new(DType::I32, full.clone()))?;
        let is_first = g.eq(stage_idx, zero)?;
        let mut state = g.full(0.0, TensorType::new(xt.dtype, full.clone()))?;
        let iterations = self.pipe.iterations() as i64;
        let mut outs = Vec::with_capacity(m_n);
        for it in 0..iterations {
            if it < m {
                // Stage 0 takes microbatch `it`.
                let xi = g.slice_dim(xm, 0, it, it + 1)?;
                let xi = g.broadcast_to(xi, &full)?;
                state = g.select(is_first, xi, state)?;
            }
            let mut y = g.shard(state, Sharding::Logical(state_axes.clone()))?;
            for (j, (template, batched, placeholder, out, seeds)) in slots.iter().enumerate() {
                let mut map = batched.clone();
                map.insert(*placeholder, y);
                for &seed in seeds {
                    map.insert(seed, stage_seeds(g, seed, it, s)?);
                }
                // Each stage-vectorized block is a region: the unit remat recomputes.
                y = g.region(&format!("pipe{it}.{prefix}{j}"), |g| {
                    let v = graph::vmap(g, template, &map, s, &spec)?;
                    v.batched(g, *out)
                })?;
            }
            if it >= s - 1 {
                // The last stage finished microbatch it - (S - 1).
                outs.push(g.slice_dim(y, 0, s - 1, s)?);
            }
            if it + 1 < iterations {
                // Stage k takes stage k - 1's output.
                let last = g.slice_dim(y, 0, s - 1, s)?;
                let before = g.slice_dim(y, 0, 0, s - 1)?;
                state = g.concatenate(&[last, before], 0)?;
            }
        }
        let y = g.concatenate(&outs, 0)?; // (M, mb, ..)
        let y = g.transpose(y, &perm)?;
        let y = g.reshape(y, xd)?;
        *self.stages.borrow_mut() = (0..s_n)
            .map(|st| {
                (st * per_stage..(st + 1) * per_stage)
                    .map(|l| format!("{prefix}{l}"))
                    .collect()
            })
            .collect();
        g.shard(y, Sharding::Logical(out_axes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use graph::interp::{eval, HostTensor};
    use models::gpt::{Gpt, GptConfig};
    use nn::{Mode, Model, RepeatHook};
    use std::rc::Rc;

    fn tiny(layers: usize) -> GptConfig {
        GptConfig {
            vocab_size: 11,
            seq_len: 5,
            d_model: 8,
            n_layers: layers,
            n_heads: 2,
            dropout: 0.0,
            tied_head: true,
            attention: Default::default(),
            reversible: false,
            ff_chunks: 1,
        }
    }

    /// The pipelined blocks compute the plain model's logits, for one or two layers per stage.
    #[test]
    fn pipeline_gives_the_plain_logits() {
        for (layers, stages, micro) in [(2, 2, 2), (2, 2, 4), (4, 2, 2), (3, 3, 1)] {
            let model = Gpt(tiny(layers));
            let b = 4;
            let run = |pipe: Option<Pipeline>| {
                let mut g = Graph::new("gpt");
                let mut p = Params::new();
                let gp = pipe.map(|pp| Rc::new(Gpipe::new(pp)));
                if let Some(gp) = &gp {
                    p.repeat = RepeatHook(Some(gp.clone()));
                }
                let tokens = g
                    .input("tokens", TensorType::new(DType::I32, [b, 5]))
                    .unwrap();
                let logits = model.logits(&mut g, &mut p, tokens, None).unwrap();
                g.set_outputs(&[logits]).unwrap();
                graph::verify(&g).unwrap();
                let ids: Vec<i32> = (0..b as i32 * 5).map(|i| (i * 7 + 3) % 11).collect();
                let mut args = vec![HostTensor::i32(&[b, 5], &ids).unwrap()];
                for s in &p.specs {
                    let v = s.initial_values(0);
                    args.push(
                        HostTensor::new(s.ty.clone(), v.iter().map(|&x| x as f64).collect())
                            .unwrap(),
                    );
                }
                let names: Vec<String> = p.specs.iter().map(|s| s.name.clone()).collect();
                let stages = gp.map(|gp| gp.stages.borrow().clone()).unwrap_or_default();
                (eval(&g, &args).unwrap()[0].clone(), names, stages)
            };
            let (plain, names, _) = run(None);
            let pipe = Pipeline {
                stages,
                microbatches: micro,
            };
            let (piped, piped_names, placed) = run(Some(pipe));
            assert_eq!(names, piped_names, "same parameters");
            assert_eq!(placed.len(), stages);
            assert_eq!(placed.concat().len(), layers, "{placed:?}");
            let diff = plain
                .data
                .iter()
                .zip(&piped.data)
                .fold(0f64, |m, (a, b)| m.max((a - b).abs()));
            assert!(diff < 1e-6, "{layers} layers, {pipe:?}: max diff {diff}");
        }
        let mut p = Params::new();
        p.repeat = RepeatHook(Some(Rc::new(Gpipe::new(Pipeline {
            stages: 2,
            microbatches: 2,
        }))));
        let e = Gpt(tiny(2))
            .forward(&mut Graph::new("g"), &mut p, 3, Mode::Train)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("batch (3)") && e.contains("microbatches (2)"),
            "{e}"
        );
    }
}
