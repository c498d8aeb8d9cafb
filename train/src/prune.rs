//! Magnitude pruning during training: unstructured (per tensor or global) or N:M (2:4), on
//! Zhu & Gupta's gradual schedule `s(t) = s_f · (1 − (1 − (t − start)/(end − start))³)`.
//!
//! The mask is non-trainable state: one more optimizer slot, `pruned` (1 where a weight is
//! pruned; zeros, its initial value, prune nothing), so it is donated, sharded like its
//! weight, written with the checkpoint and restored on resume exactly like `m` and `v`.
//! Inside the step, from `start` to `end`, the smallest-magnitude weights are added to the
//! mask (it only grows), and the updated weights are selected to exactly zero where pruned.

use anyhow::{bail, Result};
use graph::{CompareDir, DType, Graph, NodeId, TensorType};
use nn::ParamSpec;
use serde::{Deserialize, Serialize};

/// The optimizer slot that holds the mask.
pub const SLOT: &str = "pruned";

/// Tensors smaller than this are never pruned (nor quantized or factored): biases and norm
/// gains are few values and sensitive.
pub const MIN_VALUES: usize = 1024;

/// `[train.prune]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneConfig {
    /// "unstructured" (smallest |w| first) or "N:M" such as "2:4" (keep the N largest |w| of
    /// every M consecutive weights along the input axis).
    #[serde(default = "default_kind")]
    pub kind: String,
    /// Unstructured: "layer" (each tensor to the target) or "global" (one threshold).
    #[serde(default = "default_scope")]
    pub scope: String,
    /// Unstructured: the final sparsity s_f in [0, 1).
    #[serde(default)]
    pub sparsity: f64,
    /// First step (0-based) at which weights are pruned.
    pub start: usize,
    /// Step at which the target sparsity is reached; the mask is fixed after it.
    pub end: usize,
    /// Parameters left dense (exact names), besides vectors and tensors under 1024 values
    /// (biases), which are never pruned.
    #[serde(default)]
    pub skip: Vec<String>,
}

fn default_kind() -> String {
    "unstructured".into()
}
fn default_scope() -> String {
    "layer".into()
}

/// A checked pruning plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Prune {
    pub method: Method,
    pub start: usize,
    pub end: usize,
    pub skip: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Method {
    Unstructured { sparsity: f64, global: bool },
    NM { n: usize, m: usize },
}

impl PruneConfig {
    pub fn plan(&self) -> Result<Prune> {
        if self.end < self.start {
            bail!(
                "config key `train.prune.end` ({}) is before `train.prune.start` ({})",
                self.end,
                self.start
            );
        }
        let method = if self.kind == "unstructured" {
            if !(0.0..1.0).contains(&self.sparsity) {
                bail!(
                    "config key `train.prune.sparsity` is {}: use a fraction in [0, 1), e.g. 0.5",
                    self.sparsity
                );
            }
            let global = match self.scope.as_str() {
                "layer" => false,
                "global" => true,
                s => bail!("config key `train.prune.scope` is {s:?}: use \"layer\" or \"global\""),
            };
            Method::Unstructured {
                sparsity: self.sparsity,
                global,
            }
        } else {
            let nm = self.kind.split_once(':').and_then(|(n, m)| {
                Some((
                    n.trim().parse::<usize>().ok()?,
                    m.trim().parse::<usize>().ok()?,
                ))
            });
            match nm {
                Some((n, m)) if n >= 1 && n < m => Method::NM { n, m },
                _ => bail!(
                    "config key `train.prune.kind` is {:?}: use \"unstructured\" or \"N:M\" with \
                     1 <= N < M, e.g. \"2:4\"",
                    self.kind
                ),
            }
        };
        Ok(Prune {
            method,
            start: self.start,
            end: self.end,
            skip: self.skip.clone(),
        })
    }
}

impl Prune {
    /// Whether parameter `p` is pruned: matrices and larger of at least
    /// [`MIN_VALUES`] values (not biases), not skipped.
    pub fn prunes(&self, p: &ParamSpec) -> bool {
        p.ty.rank() >= 2 && p.count() >= MIN_VALUES && !self.skip.contains(&p.name)
    }

    /// The scheduled sparsity at step `t` (host side, as the graph computes it).
    pub fn sparsity_at(&self, t: usize) -> f64 {
        let Method::Unstructured { sparsity, .. } = self.method else {
            return if t >= self.start { 0.5 } else { 0.0 };
        };
        if t < self.start {
            return 0.0;
        }
        let span = (self.end - self.start).max(1) as f64;
        let u = ((t - self.start) as f64 / span).min(1.0);
        sparsity * (1.0 - (1.0 - u).powi(3))
    }

    /// Checks the tensors an N:M plan prunes split into groups of M.
    pub fn check(&self, params: &[ParamSpec]) -> Result<()> {
        if let Method::NM { m, .. } = self.method {
            for p in params.iter().filter(|p| self.prunes(p)) {
                let d0 = p.ty.dims()[0];
                if d0 % m as i64 != 0 {
                    bail!(
                        "N:M pruning groups {m} weights along the first axis, but `{}` has {d0} \
                         there: add it to `train.prune.skip`",
                        p.name
                    );
                }
            }
        }
        Ok(())
    }

    /// Adds the mask update to a step graph: `params` the weights before the update,
    /// `updated` after it, `masks` the `pruned` slots (in), `step` the 0-based update count.
    /// Returns (pruned updated weights, new masks).
    pub fn apply(
        &self,
        g: &mut Graph,
        specs: &[ParamSpec],
        params: &[NodeId],
        updated: &[NodeId],
        masks: &[NodeId],
        step: NodeId,
    ) -> Result<(Vec<NodeId>, Vec<NodeId>)> {
        self.check(specs)?;
        // 1 from `start` through `end`, else 0: masks are fixed outside the ramp.
        let start = g.scalar(self.start as f64, DType::F32)?;
        let end = g.scalar(self.end as f64, DType::F32)?;
        let after = g.compare(CompareDir::Ge, step, start)?;
        let before = g.compare(CompareDir::Le, step, end)?;
        let one = g.scalar(1.0, DType::F32)?;
        let zero = g.scalar(0.0, DType::F32)?;
        let a = g.select(after, one, zero)?;
        let b = g.select(before, one, zero)?;
        let active = g.mul(a, b)?;
        // Magnitudes, with pruned weights at 0 (they are, but a mask is the authority).
        let mut mags = Vec::new();
        for (i, s) in specs.iter().enumerate() {
            if !self.prunes(s) {
                mags.push(None);
                continue;
            }
            let w = g.abs(params[i])?;
            let ones = g.ones_like(masks[i])?;
            let keep = g.sub(ones, masks[i])?;
            mags.push(Some(g.mul(w, keep)?));
        }
        let fresh: Vec<Option<NodeId>> = match self.method {
            Method::Unstructured { sparsity, global } => {
                let span = (self.end - self.start).max(1) as f64;
                // s(t) = s_f (1 - (1 - u)^3), u = clamp((t - start) / span, 0, 1)
                let u = g.sub(step, start)?;
                let u = g.mul_scalar(u, 1.0 / span)?;
                let u = g.max(u, zero)?;
                let u = g.min(u, one)?;
                let r = g.sub(one, u)?;
                let r3 = g.mul(r, r)?;
                let r3 = g.mul(r3, r)?;
                let s = g.sub(one, r3)?;
                let s = g.mul_scalar(s, sparsity)?;
                if global {
                    let flats: Vec<NodeId> = mags
                        .iter()
                        .flatten()
                        .map(|&m| flat(g, m))
                        .collect::<Result<_>>()?;
                    if flats.is_empty() {
                        vec![None; specs.len()]
                    } else {
                        let all = g.concatenate(&flats, 0)?;
                        let thr = kth_smallest(g, all, s)?;
                        mags.iter()
                            .map(|m| m.map(|m| below(g, m, thr)).transpose())
                            .collect::<Result<_>>()?
                    }
                } else {
                    mags.iter()
                        .map(|m| {
                            m.map(|m| {
                                let f = flat(g, m)?;
                                let thr = kth_smallest(g, f, s)?;
                                below(g, m, thr)
                            })
                            .transpose()
                        })
                        .collect::<Result<_>>()?
                }
            }
            Method::NM { n, m } => mags
                .iter()
                .map(|x| x.map(|x| nm_prune(g, x, n, m)).transpose())
                .collect::<Result<_>>()?,
        };
        let mut out_w = Vec::with_capacity(specs.len());
        let mut out_m = Vec::with_capacity(specs.len());
        for (i, f) in fresh.iter().enumerate() {
            let Some(f) = *f else {
                out_w.push(updated[i]);
                out_m.push(masks[i]);
                continue;
            };
            let f = g.mul(f, active)?;
            let mask = g.max(masks[i], f)?;
            let z = g.scalar(0.0, DType::F32)?;
            let pruned = g.compare(CompareDir::Gt, mask, z)?;
            let zeros = g.zeros_like(updated[i])?;
            out_w.push(g.select(pruned, zeros, updated[i])?);
            out_m.push(mask);
        }
        Ok((out_w, out_m))
    }
}

fn flat(g: &mut Graph, x: NodeId) -> Result<NodeId> {
    let n: i64 = g.dims(x)?.iter().product();
    Ok(g.reshape(x, [n])?)
}

/// The value at 0-based rank floor(s·n) of the n values of `flat`, ascending: every value
/// strictly below it is among the floor(s·n) smallest.
fn kth_smallest(g: &mut Graph, flat: NodeId, s: NodeId) -> Result<NodeId> {
    let n = g.dims(flat)?[0];
    let sorted = g.sort(flat, 0, false)?;
    let k = g.mul_scalar(s, n as f64)?;
    let k = g.convert(k, DType::I32)?; // truncation: floor for k >= 0
    let hi = g.scalar((n - 1) as f64, DType::I32)?;
    let k = g.min(k, hi)?;
    let v = g.dynamic_slice(sorted, &[k], &[1])?;
    Ok(g.reshape(v, TensorType::scalar(DType::F32).shape.clone())?)
}

/// 1.0 where `m < thr`, else 0.0.
fn below(g: &mut Graph, m: NodeId, thr: NodeId) -> Result<NodeId> {
    let dims = g.dims(m)?.to_vec();
    let t = g.broadcast_to(thr, &dims)?;
    let lt = g.compare(CompareDir::Lt, m, t)?;
    Ok(g.convert(lt, DType::F32)?)
}

/// 1.0 on all but the `n` largest of every `m` consecutive values along axis 0 (ties: the
/// earlier one counts as larger).
fn nm_prune(g: &mut Graph, x: NodeId, n: usize, m: usize) -> Result<NodeId> {
    let dims = g.dims(x)?.to_vec();
    let groups = dims[0] / m as i64;
    let rest: i64 = dims[1..].iter().product();
    let m = m as i64;
    let x3 = g.reshape(x, [groups, m, rest])?;
    let full = [groups, m, m, rest];
    let xi = g.broadcast_in_dim(x3, full, &[0, 1, 3])?; // x[i] at (g, i, j, r)
    let xj = g.broadcast_in_dim(x3, full, &[0, 2, 3])?; // x[j]
    let ii = g.iota(TensorType::new(DType::I32, full), 1)?;
    let jj = g.iota(TensorType::new(DType::I32, full), 2)?;
    let gt = g.compare(CompareDir::Gt, xj, xi)?;
    let eq = g.compare(CompareDir::Eq, xj, xi)?;
    let earlier = g.compare(CompareDir::Lt, jj, ii)?;
    let gt = g.convert(gt, DType::F32)?;
    let tie = g.convert(eq, DType::F32)?;
    let earlier = g.convert(earlier, DType::F32)?;
    let tie = g.mul(tie, earlier)?;
    let larger = g.add(gt, tie)?;
    let rank = g.reduce_sum(larger, &[2])?; // (G, m, R): how many beat x[i]
    let nn = g.full(
        n as f64 - 0.5,
        TensorType::new(DType::F32, [groups, m, rest]),
    )?;
    let out = g.compare(CompareDir::Gt, rank, nn)?;
    let out = g.convert(out, DType::F32)?;
    Ok(g.reshape(out, dims)?)
}

/// Fraction of exact zeros of each tensor (the sparsity a checkpoint really has).
pub fn sparsity(tensors: &[crate::tensor::NamedTensor]) -> Vec<(String, f64)> {
    tensors
        .iter()
        .map(|t| {
            let z = t.data.iter().filter(|&&x| x == 0.0).count();
            (t.name.clone(), z as f64 / t.data.len().max(1) as f64)
        })
        .collect()
}
