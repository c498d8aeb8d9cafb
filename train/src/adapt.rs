//! Models built from other models by rewriting how their parameters enter the program:
//! quantization-aware training ([`Qat`]: each kernel through int8 fake-quantization with a
//! straight-through gradient), LoRA adapters ([`Lora`]: `W + (alpha/r)·A·B`, the base
//! frozen) and low-rank fine-tuning ([`Factored`]: `W` as the two trained factors `W.u`,
//! `W.v` of `rxla compress lowrank`).
//!
//! Each wrapper builds the inner model's forward on a scratch graph, reads off how each
//! parameter is used there (its output channels, whether it only feeds dots as a kernel),
//! and copies the graph into the real one with every parameter replaced by the value built
//! from it ([`copy_into`]). The inner model never knows.

use graph::passes::lowrank::{factor_args, factorable, Factor};
use graph::passes::quantize::{
    output_channel_axes, round_half_away, scale_dims, symmetric_scale, QMAX,
};
use graph::{DType, Graph, GraphError, NodeId, TensorType};
use nn::{Forward, Init, Mode, Model, ParamSpec, Params};
use serde::{Deserialize, Serialize};

/// What [`copy_into`] replaces a parameter's uses with.
pub type Subst<'a> =
    dyn FnMut(&mut Graph, &mut Params, &ParamSpec, NodeId) -> graph::Result<NodeId> + 'a;

/// Declares a parameter like `like` (same type, init and axes) named `name`.
fn redeclare(g: &mut Graph, p: &mut Params, name: &str, like: &ParamSpec) -> graph::Result<NodeId> {
    if p.specs.iter().any(|s| s.name == name) {
        return Err(GraphError::Invalid(format!(
            "parameter `{name}` declared twice"
        )));
    }
    let node = g.parameter(name, like.ty.clone())?;
    p.specs.push(ParamSpec {
        name: name.to_string(),
        node,
        ..like.clone()
    });
    Ok(node)
}

/// Copies `src` (whose parameters `specs` declared) into `g`: each parameter is declared in
/// `p` as `prefix` + its name and its uses see `subst(g, p, new spec, new node)`; data
/// inputs become `data[k]` where `src_data[k]` is that input (or fresh inputs of the same
/// name without `data`). Region tags are kept when `g` has none yet. Returns the new id of
/// every `src` node.
pub fn copy_into(
    g: &mut Graph,
    p: &mut Params,
    src: &Graph,
    specs: &[ParamSpec],
    prefix: &str,
    data: Option<(&[NodeId], &[NodeId])>,
    subst: &mut Subst,
) -> graph::Result<Vec<NodeId>> {
    let mut args = Vec::new();
    for (i, a) in src.args().into_iter().enumerate() {
        let node = src.node(a)?;
        let name = node.name.clone().unwrap_or_else(|| format!("arg{i}"));
        let ty = src.ty(a)?.clone();
        if let graph::Op::Parameter(_) = node.op {
            let like = specs
                .iter()
                .find(|s| s.node == a)
                .cloned()
                .unwrap_or(ParamSpec {
                    name: name.clone(),
                    ty: ty.clone(),
                    // New factors (a factored kernel's `.u`/`.v`) are loaded in practice; not
                    // zeros, which would have no gradient.
                    init: Init::Normal { std: 0.02 },
                    node: a,
                    axes: Vec::new(),
                    loc: node.loc.clone(),
                });
            let full = format!("{prefix}{name}");
            let n = redeclare(g, p, &full, &like)?;
            let spec = p.specs.last().expect("just declared").clone();
            args.push(subst(g, p, &spec, n)?);
            continue;
        }
        match data {
            Some((from, to)) => {
                let k = from.iter().position(|&d| d == a).ok_or_else(|| {
                    GraphError::Invalid(format!(
                        "input `{name}` of {} is no data input of its forward",
                        src.name
                    ))
                })?;
                let x = *to.get(k).ok_or_else(|| {
                    GraphError::Invalid(format!(
                        "{} takes data input {k}, which is missing",
                        src.name
                    ))
                })?;
                if g.ty(x)? != &ty {
                    return Err(GraphError::Invalid(format!(
                        "{}'s data input `{name}` is {ty} but the one it gets is {}: both models \
                         must read the same batches (same seq_len)",
                        src.name,
                        g.ty(x)?
                    )));
                }
                args.push(x);
            }
            None => args.push(g.input(&name, ty)?),
        }
    }
    let first = g.len();
    let map = graph::rewrite::inline(g, src, &args)?;
    if g.regions.is_empty() && !src.regions.is_empty() {
        g.regions.names.clone_from(&src.regions.names);
        for (old, &new) in map.iter().enumerate() {
            if new.index() >= first {
                g.regions.set(new, src.regions.tag(NodeId(old as u32)));
            }
        }
    }
    Ok(map)
}

/// The inner forward on a scratch graph (and its parameters, and logits if any).
pub fn scratch_forward(
    model: &dyn Model,
    p: &Params,
    batch: usize,
    mode: Mode,
) -> graph::Result<(Graph, Params, Forward, Option<NodeId>)> {
    let mut g0 = Graph::new("model");
    let mut p0 = Params::new();
    p0.repeat = p.repeat.clone();
    let (fwd, logits) = model.forward_logits(&mut g0, &mut p0, batch, mode)?;
    Ok((g0, p0, fwd, logits))
}

/// A forward's node ids through `map`; parameters of `updates` through `params`.
pub fn remap_forward(f: &Forward, map: &[NodeId], params: &dyn Fn(NodeId) -> NodeId) -> Forward {
    let m = |n: NodeId| map[n.index()];
    Forward {
        inputs: f.inputs.iter().map(|&n| m(n)).collect(),
        loss: m(f.loss),
        per_example: f
            .per_example
            .iter()
            .map(|(k, n)| (k.clone(), m(*n)))
            .collect(),
        rng_seed: f.rng_seed.map(m),
        updates: f.updates.iter().map(|&(a, b)| (params(a), m(b))).collect(),
    }
}

/// Builds `model`'s forward with each parameter's uses replaced by `subst(scratch graph,
/// scratch spec)(g, p, spec, node)`.
/// A substitution that also sees the scratch graph and the parameter's spec there.
type ScratchSubst<'a> =
    dyn FnMut(&Graph, &ParamSpec, &mut Graph, &mut Params, NodeId) -> graph::Result<NodeId> + 'a;

fn rewritten(
    model: &dyn Model,
    g: &mut Graph,
    p: &mut Params,
    batch: usize,
    mode: Mode,
    subst: &mut ScratchSubst,
) -> graph::Result<(Forward, Option<NodeId>)> {
    let (g0, p0, fwd, logits) = scratch_forward(model, p, batch, mode)?;
    let mut new_param = std::collections::HashMap::new();
    let map = copy_into(g, p, &g0, &p0.specs, "", None, &mut |g, p, spec, n| {
        let old = p0
            .specs
            .iter()
            .find(|s| s.name == spec.name)
            .expect("copied from the scratch specs");
        new_param.insert(old.node, n);
        subst(&g0, old, g, p, n)
    })?;
    let f = remap_forward(&fwd, &map, &|a| {
        new_param.get(&a).copied().unwrap_or(map[a.index()])
    });
    Ok((f, logits.map(|l| map[l.index()])))
}

/// The weights quantization-aware training fake-quantizes: those `rxla compress quantize`
/// stores as int8.
pub use crate::compress::quantize::is_quantizable;

/// `round(w / s)·s` per element with `s = max|w| / 127` over each output channel (the axes
/// of `channel_axes`), in the graph, exactly as `compress::quantize` does on the host; an
/// all-zero channel stays zero. Round half away from zero, like `f64::round`.
pub fn fake_quant(g: &mut Graph, w: NodeId, channel_axes: &[usize]) -> graph::Result<NodeId> {
    let dims = g.dims(w)?.to_vec();
    let reduced: Vec<usize> = (0..dims.len())
        .filter(|a| !channel_axes.contains(a))
        .collect();
    let (s, is_zero) = symmetric_scale(g, w, &reduced)?; // (channels..)
    let s = g.broadcast_in_dim(s, dims.clone(), channel_axes)?;
    let is_zero = g.broadcast_in_dim(is_zero, dims.clone(), channel_axes)?;
    let x = g.div(w, s)?;
    let q = round_half_away(g, x)?;
    let lim = g.full(QMAX, TensorType::new(DType::F32, dims.clone()))?;
    let q = g.min(q, lim)?;
    let nlim = g.neg(lim)?;
    let q = g.max(q, nlim)?;
    let dq = g.mul(q, s)?;
    let zero = g.zeros_like(dq)?;
    g.select(is_zero, zero, dq)
}

/// `w + stop_gradient(fake_quant(w) − w)`: the quantized value forward, the identity
/// backward (the straight-through estimator).
pub fn fake_quant_ste(g: &mut Graph, w: NodeId, channel_axes: &[usize]) -> graph::Result<NodeId> {
    let fq = fake_quant(g, w, channel_axes)?;
    let d = g.sub(fq, w)?;
    let d = g.stop_gradient(d)?;
    g.add(w, d)
}

/// Quantization-aware training (`train.quantize = "int8"`): every weight that post-training
/// quantization turns to int8 runs fake-quantized, per output channel, so the model learns
/// weights that survive `rxla compress quantize`.
pub struct Qat(pub Box<dyn Model>);

impl Model for Qat {
    fn forward(
        &self,
        g: &mut Graph,
        p: &mut Params,
        batch: usize,
        mode: Mode,
    ) -> graph::Result<Forward> {
        Ok(self.forward_logits(g, p, batch, mode)?.0)
    }

    fn forward_logits(
        &self,
        g: &mut Graph,
        p: &mut Params,
        batch: usize,
        mode: Mode,
    ) -> graph::Result<(Forward, Option<NodeId>)> {
        rewritten(
            self.0.as_ref(),
            g,
            p,
            batch,
            mode,
            &mut |g0, old, g, _p, n| {
                if !is_quantizable(old) {
                    return Ok(n);
                }
                let axes = output_channel_axes(g0, old.node)?;
                // A weight of one channel per element (no dot reduces it) is left alone.
                if scale_dims(old.ty.dims(), &axes) == old.ty.dims() {
                    return Ok(n);
                }
                fake_quant_ste(g, n, &axes)
            },
        )
    }
}

/// `train.lora = { rank, alpha, targets }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraConfig {
    pub rank: usize,
    /// The update is scaled by `alpha / rank` (as in peft).
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Patterns (`train::groups` syntax) of the layers to adapt, e.g. `["h\\d+\\.attn",
    /// "h\\d+\\.mlp\\.fc"]` or `[".*attn.*"]`; a layer's kernels (matrices that only feed
    /// dots, `…w`) get adapters.
    pub targets: Vec<String>,
    /// Patterns of parameters that train in full beside the adapters (as peft's
    /// `modules_to_save`): a new task head, e.g. `["head"]` for a BERT classifier.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub modules_to_save: Vec<String>,
}

fn default_alpha() -> f64 {
    16.0
}

/// Names of a LoRA adapter's factors of kernel `w`.
pub const LORA_A: &str = ".lora_a";
pub const LORA_B: &str = ".lora_b";

/// The pattern of every adapter parameter (for `ParamGroups::train_only`).
pub const ADAPTER_PATTERN: &str = r".*\.lora_[ab]";

impl LoraConfig {
    pub fn check(&self) -> anyhow::Result<()> {
        if self.rank == 0 {
            anyhow::bail!("config key `train.lora.rank` must be at least 1");
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            anyhow::bail!(
                "config key `train.lora.alpha` must be a positive number, got {}",
                self.alpha
            );
        }
        if self.targets.is_empty() {
            anyhow::bail!(
                "config key `train.lora.targets` is empty: name the layers to adapt, e.g. \
                 [\"h\\\\d+\\\\.attn\", \"h\\\\d+\\\\.mlp\\\\.fc\"]"
            );
        }
        for (key, patterns) in [
            ("targets", &self.targets),
            ("modules_to_save", &self.modules_to_save),
        ] {
            for t in patterns {
                crate::groups::pattern(t)
                    .map_err(|e| anyhow::anyhow!("config key `train.lora.{key}`: {e:#}"))?;
            }
        }
        Ok(())
    }

    /// What trains under this LoRA (`ParamGroups::train_only`): the adapters and
    /// `modules_to_save`.
    pub fn train_only(&self) -> Vec<String> {
        let mut v = vec![ADAPTER_PATTERN.to_string()];
        v.extend(self.modules_to_save.iter().cloned());
        v
    }

    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }
}

/// A model with LoRA adapters on its targeted kernels: `W (in, out..)` runs as
/// `W + (alpha/r)·reshape(A (in, r) · B (r, out))`, `A` from N(0, 1/in), `B` zeros (so
/// training starts at the base model). Train only the adapters with
/// `ParamGroups::train_only = [ADAPTER_PATTERN]`; [`merge_lora`] folds them into `W`.
pub struct Lora {
    pub inner: Box<dyn Model>,
    pub cfg: LoraConfig,
}

impl Model for Lora {
    fn forward(
        &self,
        g: &mut Graph,
        p: &mut Params,
        batch: usize,
        mode: Mode,
    ) -> graph::Result<Forward> {
        Ok(self.forward_logits(g, p, batch, mode)?.0)
    }

    fn forward_logits(
        &self,
        g: &mut Graph,
        p: &mut Params,
        batch: usize,
        mode: Mode,
    ) -> graph::Result<(Forward, Option<NodeId>)> {
        let res: Vec<regex::Regex> = self
            .cfg
            .targets
            .iter()
            .map(|t| crate::groups::pattern(t).map_err(|e| GraphError::Invalid(format!("{e:#}"))))
            .collect::<graph::Result<_>>()?;
        let r = self.cfg.rank as i64;
        let scale = self.cfg.scale();
        let mut hits = 0;
        let out = rewritten(
            self.inner.as_ref(),
            g,
            p,
            batch,
            mode,
            &mut |g0, old, g, p, w| {
                let targeted = res.iter().any(|re| re.is_match(&old.name));
                if !targeted || old.ty.rank() < 2 || !factorable(g0, old.node)? {
                    return Ok(w);
                }
                hits += 1;
                let dims = old.ty.dims().to_vec();
                let cols: i64 = dims[1..].iter().product();
                let a_spec = ParamSpec {
                    ty: TensorType::f32([dims[0], r]),
                    init: Init::Normal {
                        std: 1.0 / (dims[0] as f64).sqrt(),
                    },
                    axes: Vec::new(),
                    ..old.clone()
                };
                let b_spec = ParamSpec {
                    ty: TensorType::f32([r, cols]),
                    init: Init::Zeros,
                    ..a_spec.clone()
                };
                let a = redeclare(g, p, &format!("{}{LORA_A}", old.name), &a_spec)?;
                let b = redeclare(g, p, &format!("{}{LORA_B}", old.name), &b_spec)?;
                let ab = g.dot_general(a, b, graph::DotDims::contract(&[1], &[0]), None)?;
                let ab = g.reshape(ab, dims)?;
                let ab = g.mul_scalar(ab, scale)?;
                g.add(w, ab)
            },
        )?;
        if hits == 0 {
            return Err(GraphError::Invalid(format!(
                "config key `train.lora.targets` {:?} matches no kernel (a matrix that only feeds \
                 dots); parameters: {}",
                self.cfg.targets,
                p.specs
                    .iter()
                    .map(|s| s.name.as_str())
                    .take(12)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Ok(out)
    }
}

/// Folds every adapter of `tensors` into its kernel (`W += (alpha/r)·A·B`) and drops the
/// adapters: the weights of the plain model, as peft's `merge_and_unload`. Returns the
/// merged tensors and how many kernels were merged.
pub fn merge_lora(
    tensors: &[crate::tensor::NamedTensor],
    scale: f64,
) -> anyhow::Result<(Vec<crate::tensor::NamedTensor>, usize)> {
    use anyhow::{anyhow, bail};
    let by_name: std::collections::HashMap<&str, &crate::tensor::NamedTensor> =
        tensors.iter().map(|t| (t.name.as_str(), t)).collect();
    let mut out = Vec::new();
    let mut merged = 0;
    for t in tensors {
        if t.name.ends_with(LORA_A) || t.name.ends_with(LORA_B) {
            let base = t.name.trim_end_matches(LORA_A).trim_end_matches(LORA_B);
            if !by_name.contains_key(base) {
                bail!(
                    "adapter `{}` has no kernel `{base}` in the checkpoint",
                    t.name
                );
            }
            continue;
        }
        let a = by_name.get(format!("{}{LORA_A}", t.name).as_str());
        let b = by_name.get(format!("{}{LORA_B}", t.name).as_str());
        let (a, b) = match (a, b) {
            (None, None) => {
                out.push(t.clone());
                continue;
            }
            (Some(a), Some(b)) => (a, b),
            _ => bail!("`{}` has only one of its two LoRA factors", t.name),
        };
        let rows = t.dims[0] as usize;
        let cols = t.data.len() / rows.max(1);
        let r = a.dims.get(1).copied().unwrap_or(0) as usize;
        if a.dims != [rows as i64, r as i64] || b.dims != [r as i64, cols as i64] {
            return Err(anyhow!(
                "LoRA factors of `{}` {:?} are {:?} and {:?}: not (in, r) and (r, out)",
                t.name,
                t.dims,
                a.dims,
                b.dims
            ));
        }
        let mut w = t.clone();
        for i in 0..rows {
            for j in 0..cols {
                let d: f64 = (0..r)
                    .map(|k| a.data[i * r + k] as f64 * b.data[k * cols + j] as f64)
                    .sum();
                w.data[i * cols + j] = (w.data[i * cols + j] as f64 + scale * d) as f32;
            }
        }
        out.push(w);
        merged += 1;
    }
    Ok((out, merged))
}

/// A low-rank model for fine-tuning after `rxla compress lowrank`: each kernel named in
/// `ranks` runs as `(x · W.u) · W.v`, and `W.u`, `W.v` are the trained parameters.
pub struct Factored {
    pub inner: Box<dyn Model>,
    /// (kernel name, rank)
    pub ranks: Vec<(String, i64)>,
}

impl Model for Factored {
    fn forward(
        &self,
        g: &mut Graph,
        p: &mut Params,
        batch: usize,
        mode: Mode,
    ) -> graph::Result<Forward> {
        Ok(self.forward_logits(g, p, batch, mode)?.0)
    }

    fn forward_logits(
        &self,
        g: &mut Graph,
        p: &mut Params,
        batch: usize,
        mode: Mode,
    ) -> graph::Result<(Forward, Option<NodeId>)> {
        let (g0, p0, fwd, logits) = scratch_forward(self.inner.as_ref(), p, batch, mode)?;
        let mut g1 = g0.clone();
        let args = g0.args();
        let mut factors = Vec::new();
        for (name, rank) in &self.ranks {
            let s = p0.specs.iter().find(|s| &s.name == name).ok_or_else(|| {
                GraphError::Invalid(format!(
                    "factored weight `{name}` is no parameter of the model"
                ))
            })?;
            let arg = args
                .iter()
                .position(|&a| a == s.node)
                .expect("a parameter is an argument");
            factors.push(Factor { arg, rank: *rank });
        }
        // Every output of the forward, so the rewritten graph keeps them.
        let mut outs = vec![fwd.loss];
        outs.extend(fwd.per_example.iter().map(|(_, n)| *n));
        outs.extend(fwd.updates.iter().map(|(_, v)| *v));
        outs.extend(logits);
        g1.set_outputs(&outs)?;
        let (g2, _) = factor_args(&g1, &factors)?;
        // factor_args copies nodes in order, adding two per factored argument: map old
        // outputs and inputs through the rewritten graph's outputs and argument names.
        let new_args = g2.args();
        let mut specs = Vec::new();
        for &a in &new_args {
            let n = g2.node(a)?;
            let name = n.name.clone().unwrap_or_default();
            if let Some(s) = p0.specs.iter().find(|s| s.name == name) {
                specs.push(ParamSpec {
                    node: a,
                    ..s.clone()
                });
            }
        }
        let map = copy_into(g, p, &g2, &specs, "", None, &mut |_, _, _, n| Ok(n))?;
        let name_of = |gr: &Graph, n: NodeId| gr.node(n).ok().and_then(|x| x.name.clone());
        // Data inputs and the seed by name; outputs by position.
        let find_arg = |old: NodeId| -> NodeId {
            let nm = name_of(&g0, old);
            let a = new_args
                .iter()
                .copied()
                .find(|&a| name_of(&g2, a) == nm)
                .expect("arguments keep their names");
            map[a.index()]
        };
        let o: Vec<NodeId> = g2.outputs.iter().map(|&x| map[x.index()]).collect();
        let k = fwd.per_example.len();
        let u = fwd.updates.len();
        let f = Forward {
            inputs: fwd.inputs.iter().map(|&x| find_arg(x)).collect(),
            loss: o[0],
            per_example: fwd
                .per_example
                .iter()
                .zip(&o[1..1 + k])
                .map(|((n, _), &x)| (n.clone(), x))
                .collect(),
            rng_seed: fwd.rng_seed.map(find_arg),
            updates: fwd
                .updates
                .iter()
                .zip(&o[1 + k..1 + k + u])
                .map(|(&(a, _), &x)| (find_arg(a), x))
                .collect(),
        };
        Ok((f, logits.map(|_| o[1 + k + u])))
    }
}
