//! Optimizers and LR schedules as graph code, so that one executable does forward, backward
//! and update. The same formulas run on the host in `lr_at` for logging.

use anyhow::{bail, Result};
use graph::{DType, Graph, NodeId, TensorType};

use serde::{Deserialize, Serialize};

/// Optimizer + schedule, with the run's total step count (for decays).
#[derive(Debug, Clone)]
pub struct Optimizer {
    pub opt: OptimizerConfig,
    pub schedule: ScheduleConfig,
    pub total_steps: usize,
}

/// What `apply` adds to the graph.
pub struct Update {
    pub params: Vec<NodeId>,
    /// Per parameter, its new state slots (same order as `state_slots`).
    pub state: Vec<Vec<NodeId>>,
    pub lr: NodeId,
    /// Global gradient norm before clipping.
    pub grad_norm: NodeId,
}

impl Optimizer {
    pub fn validate(&self) -> Result<()> {
        let o = &self.opt;
        if !(o.lr.is_finite() && o.lr > 0.0) {
            bail!(
                "config key `optimizer.lr` must be a positive number, got {}",
                o.lr
            );
        }
        if !(0.0..1.0).contains(&o.beta1) || !(0.0..1.0).contains(&o.beta2) {
            bail!("config keys `optimizer.beta1`/`beta2` must be in [0, 1)");
        }
        if !(0.0..1.0).contains(&o.momentum) {
            bail!("config key `optimizer.momentum` must be in [0, 1)");
        }
        if o.nesterov && o.momentum == 0.0 {
            bail!("config key `optimizer.nesterov` needs `optimizer.momentum` > 0");
        }
        if let Some(c) = o.clip_norm {
            if c.is_nan() || c <= 0.0 {
                bail!("config key `optimizer.clip_norm` must be positive, got {c}");
            }
        }
        if !(0.0..=1.0).contains(&self.schedule.min_lr_ratio) {
            bail!("config key `schedule.min_lr_ratio` must be in [0, 1]");
        }
        Ok(())
    }

    /// Names of the state slots each parameter carries.
    pub fn state_slots(&self) -> Vec<&'static str> {
        match self.opt.kind {
            OptimizerKind::Sgd if self.opt.momentum > 0.0 => vec!["momentum"],
            OptimizerKind::Sgd => vec![],
            OptimizerKind::Adam | OptimizerKind::Adamw => vec!["m", "v"],
        }
    }

    /// The learning rate used by step `step` (0-based), as the graph computes it.
    pub fn lr_at(&self, step: usize) -> f64 {
        let s = &self.schedule;
        let t = (step + 1) as f64;
        let base = self.opt.lr;
        let warm = s.warmup_steps as f64;
        if s.kind != ScheduleKind::Constant && t <= warm {
            return base * t / warm;
        }
        let span = (self.total_steps as f64 - warm).max(1.0);
        let p = ((t - warm) / span).clamp(0.0, 1.0);
        let floor = s.min_lr_ratio;
        match s.kind {
            ScheduleKind::Constant => base,
            ScheduleKind::WarmupCosine => {
                base * (floor + (1.0 - floor) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos()))
            }
            ScheduleKind::WarmupLinear => base * (1.0 - (1.0 - floor) * p),
        }
    }

    /// The schedule in-graph: `step` is an f32 scalar (0-based).
    fn lr_node(&self, g: &mut Graph, step: NodeId) -> Result<NodeId> {
        let s = &self.schedule;
        let base = self.opt.lr;
        let one = g.scalar(1.0, DType::F32)?;
        let t = g.add(step, one)?;
        let lr = g.scalar(base, DType::F32)?;
        if s.kind == ScheduleKind::Constant {
            return Ok(lr);
        }
        let warm = s.warmup_steps as f64;
        let span = (self.total_steps as f64 - warm).max(1.0);
        let warm_n = g.scalar(warm, DType::F32)?;
        let span_n = g.scalar(span, DType::F32)?;
        let zero = g.scalar(0.0, DType::F32)?;
        let p = g.sub(t, warm_n)?;
        let p = g.div(p, span_n)?;
        let p = g.max(p, zero)?;
        let p = g.min(p, one)?;
        let floor = s.min_lr_ratio;
        let decay = match s.kind {
            ScheduleKind::WarmupCosine => {
                let pi = g.scalar(std::f64::consts::PI, DType::F32)?;
                let c = g.mul(p, pi)?;
                let c = g.cos(c)?;
                let c = g.add(c, one)?;
                let k = g.scalar(0.5 * (1.0 - floor), DType::F32)?;
                let c = g.mul(c, k)?;
                let f = g.scalar(floor, DType::F32)?;
                g.add(c, f)?
            }
            _ => {
                let k = g.scalar(1.0 - floor, DType::F32)?;
                let c = g.mul(p, k)?;
                g.sub(one, c)?
            }
        };
        let decayed = g.mul(lr, decay)?;
        if s.warmup_steps == 0 {
            return Ok(decayed);
        }
        let ramp = g.div(t, warm_n)?;
        let ramp = g.mul(lr, ramp)?;
        let in_warmup = g.le(t, warm_n)?;
        Ok(g.select(in_warmup, ramp, decayed)?)
    }

    /// Adds clipping and the update of every parameter to `g`. `state[i]` are the slots of
    /// parameter i; `step` is an f32 scalar input (0-based count of earlier updates). The
    /// scheduled learning rate is multiplied by `lr_scale` when given (an f32 scalar fed per
    /// step, so callbacks can change the rate without recompiling).
    pub fn apply(
        &self,
        g: &mut Graph,
        params: &[NodeId],
        grads: &[NodeId],
        state: &[Vec<NodeId>],
        step: NodeId,
        lr_scale: Option<NodeId>,
    ) -> Result<Update> {
        let ones = vec![1.0; params.len()];
        self.apply_scaled(g, params, grads, state, step, lr_scale, &ones)
    }

    /// [`Optimizer::apply`] with parameter `i` stepping at `lr_multiplier[i]` times the
    /// scheduled rate (`train.lr_multipliers`, e.g. layer-wise decay).
    #[allow(clippy::too_many_arguments)]
    pub fn apply_scaled(
        &self,
        g: &mut Graph,
        params: &[NodeId],
        grads: &[NodeId],
        state: &[Vec<NodeId>],
        step: NodeId,
        lr_scale: Option<NodeId>,
        lr_multiplier: &[f64],
    ) -> Result<Update> {
        if lr_multiplier.len() != params.len() {
            bail!(
                "{} learning-rate multipliers for {} parameters",
                lr_multiplier.len(),
                params.len()
            );
        }
        let o = &self.opt;
        let mut lr = self.lr_node(g, step)?;
        if let Some(s) = lr_scale {
            lr = g.mul(lr, s)?;
        }
        // Global norm over all gradients (f32).
        let mut sq = g.scalar(0.0, DType::F32)?;
        for &gr in grads {
            let gr = to_f32(g, gr)?;
            let s = g.mul(gr, gr)?;
            let s = g.sum_all(s)?;
            sq = g.add(sq, s)?;
        }
        let grad_norm = g.sqrt(sq)?;
        let clip_scale = match o.clip_norm {
            Some(c) => {
                let c = g.scalar(c, DType::F32)?;
                let eps = g.scalar(1e-6, DType::F32)?;
                let d = g.add(grad_norm, eps)?;
                let r = g.div(c, d)?;
                let one = g.scalar(1.0, DType::F32)?;
                Some(g.min(r, one)?)
            }
            None => None,
        };
        let one = g.scalar(1.0, DType::F32)?;
        let t = g.add(step, one)?;
        let mut new_params = Vec::with_capacity(params.len());
        let mut new_state = Vec::with_capacity(params.len());
        for (i, (&p, &gr)) in params.iter().zip(grads).enumerate() {
            let lr = if lr_multiplier[i] == 1.0 {
                lr
            } else {
                g.mul_scalar(lr, lr_multiplier[i])?
            };
            let mut gr = to_f32(g, gr)?;
            if let Some(s) = clip_scale {
                gr = g.mul(gr, s)?;
            }
            // Decay matrices only (not biases and norm gains), as GPT-2 and Keras do.
            let wd = if g.rank(p)? >= 2 { o.weight_decay } else { 0.0 };
            if wd != 0.0 && o.kind != OptimizerKind::Adamw {
                let w = g.scalar(wd, DType::F32)?;
                let d = g.mul(p, w)?;
                gr = g.add(gr, d)?;
            }
            let (p_new, slots) = match o.kind {
                OptimizerKind::Sgd => {
                    if o.momentum > 0.0 {
                        let m = g.scalar(o.momentum, DType::F32)?;
                        let buf = g.mul(state[i][0], m)?;
                        let buf = g.add(buf, gr)?;
                        let upd = if o.nesterov {
                            let b = g.mul(buf, m)?;
                            g.add(gr, b)?
                        } else {
                            buf
                        };
                        let step_n = g.mul(upd, lr)?;
                        (g.sub(p, step_n)?, vec![buf])
                    } else {
                        let step_n = g.mul(gr, lr)?;
                        (g.sub(p, step_n)?, vec![])
                    }
                }
                OptimizerKind::Adam | OptimizerKind::Adamw => {
                    let (b1, b2) = (o.beta1, o.beta2);
                    let b1n = g.scalar(b1, DType::F32)?;
                    let b2n = g.scalar(b2, DType::F32)?;
                    let c1 = g.scalar(1.0 - b1, DType::F32)?;
                    let c2 = g.scalar(1.0 - b2, DType::F32)?;
                    let m = g.mul(state[i][0], b1n)?;
                    let gm = g.mul(gr, c1)?;
                    let m = g.add(m, gm)?;
                    let v = g.mul(state[i][1], b2n)?;
                    let g2 = g.mul(gr, gr)?;
                    let g2 = g.mul(g2, c2)?;
                    let v = g.add(v, g2)?;
                    // Bias corrections 1 - beta^t.
                    let bc1 = g.pow(b1n, t)?;
                    let bc1 = g.sub(one, bc1)?;
                    let bc2 = g.pow(b2n, t)?;
                    let bc2 = g.sub(one, bc2)?;
                    let mhat = g.div(m, bc1)?;
                    let vhat = g.div(v, bc2)?;
                    let den = g.sqrt(vhat)?;
                    let eps = g.scalar(o.eps, DType::F32)?;
                    let den = g.add(den, eps)?;
                    let mut upd = g.div(mhat, den)?;
                    if o.kind == OptimizerKind::Adamw && wd != 0.0 {
                        let w = g.scalar(wd, DType::F32)?;
                        let d = g.mul(p, w)?;
                        upd = g.add(upd, d)?;
                    }
                    let step_n = g.mul(upd, lr)?;
                    (g.sub(p, step_n)?, vec![m, v])
                }
            };
            new_params.push(p_new);
            new_state.push(slots);
        }
        Ok(Update {
            params: new_params,
            state: new_state,
            lr,
            grad_norm,
        })
    }
}

fn to_f32(g: &mut Graph, x: NodeId) -> Result<NodeId> {
    Ok(if g.dtype(x)? == DType::F32 {
        x
    } else {
        g.convert(x, DType::F32)?
    })
}

/// Type of a state slot of a parameter of type `ty` (always f32 master copies).
pub fn slot_type(ty: &TensorType) -> TensorType {
    ty.with_dtype(DType::F32)
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    Sgd,
    Adam,
    Adamw,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizerConfig {
    pub kind: OptimizerKind,
    pub lr: f64,
    /// SGD momentum (0 = plain SGD).
    #[serde(default)]
    pub momentum: f64,
    #[serde(default)]
    pub nesterov: bool,
    #[serde(default = "default_beta1")]
    pub beta1: f64,
    #[serde(default = "default_beta2")]
    pub beta2: f64,
    #[serde(default = "default_eps")]
    pub eps: f64,
    /// Decoupled weight decay (AdamW); L2 added to the gradient for SGD/Adam. Only matrices
    /// (rank >= 2) decay; biases and norm gains don't.
    #[serde(default)]
    pub weight_decay: f64,
    /// Clip gradients to this global L2 norm (none when absent).
    #[serde(default)]
    pub clip_norm: Option<f64>,
}

fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.999
}
fn default_eps() -> f64 {
    1e-7
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        OptimizerConfig {
            kind: OptimizerKind::Adam,
            lr: 1e-3,
            momentum: 0.0,
            nesterov: false,
            beta1: default_beta1(),
            beta2: default_beta2(),
            eps: default_eps(),
            weight_decay: 0.0,
            clip_norm: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    Constant,
    /// Linear warmup, then cosine decay to `min_lr_ratio * lr` at the last step.
    WarmupCosine,
    /// Linear warmup, then linear decay to `min_lr_ratio * lr` at the last step.
    WarmupLinear,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    pub kind: ScheduleKind,
    #[serde(default)]
    pub warmup_steps: usize,
    #[serde(default)]
    pub min_lr_ratio: f64,
    /// Steps over which the LR decays (default: `train.steps`). Fixing it lets a run be
    /// stopped early and resumed to a later step with the same schedule.
    #[serde(default)]
    pub decay_steps: Option<usize>,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            kind: ScheduleKind::Constant,
            warmup_steps: 0,
            min_lr_ratio: 0.0,
            decay_steps: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use graph::interp::{eval, HostTensor};

    fn cfg(kind: OptimizerKind) -> OptimizerConfig {
        OptimizerConfig {
            kind,
            ..Default::default()
        }
    }

    /// One update of p=[[1,-2,3]] with gradient [[0.5,-1,2]], previous state, at `step`.
    fn run(opt: &Optimizer, state_in: &[Vec<f32>], step: f32) -> (Vec<f64>, Vec<Vec<f64>>) {
        run_shaped(opt, &[1, 3], state_in, step)
    }

    /// As `run`, with the parameter shaped `dims` (3 elements).
    fn run_shaped(
        opt: &Optimizer,
        dims: &[i64],
        state_in: &[Vec<f32>],
        step: f32,
    ) -> (Vec<f64>, Vec<Vec<f64>>) {
        let mut g = Graph::new("opt");
        let ty = TensorType::f32(dims.to_vec());
        let p = g.parameter("p", ty.clone()).unwrap();
        let gr = g.input("g", ty.clone()).unwrap();
        let slots: Vec<NodeId> = opt
            .state_slots()
            .iter()
            .map(|s| g.input(s, ty.clone()).unwrap())
            .collect();
        let st = g.input("step", TensorType::scalar(DType::F32)).unwrap();
        let u = opt.apply(&mut g, &[p], &[gr], &[slots], st, None).unwrap();
        let mut outs = vec![u.params[0]];
        outs.extend(&u.state[0]);
        g.set_outputs(&outs).unwrap();
        graph::verify(&g).unwrap();
        let mut args = vec![
            HostTensor::f32(dims, &[1.0, -2.0, 3.0]).unwrap(),
            HostTensor::f32(dims, &[0.5, -1.0, 2.0]).unwrap(),
        ];
        for s in state_in {
            args.push(HostTensor::f32(dims, s).unwrap());
        }
        args.push(HostTensor::f32(&[], &[step]).unwrap());
        let out = eval(&g, &args).unwrap();
        (
            out[0].data.clone(),
            out[1..].iter().map(|t| t.data.clone()).collect(),
        )
    }

    fn close(a: &[f64], b: &[f64]) {
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-5 * y.abs().max(1.0), "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn sgd_momentum_and_nesterov() {
        let mut o = Optimizer {
            opt: cfg(OptimizerKind::Sgd),
            schedule: ScheduleConfig::default(),
            total_steps: 10,
        };
        o.opt.lr = 0.1;
        let (p, _) = run(&o, &[], 0.0);
        close(&p, &[1.0 - 0.05, -2.0 + 0.1, 3.0 - 0.2]);
        o.opt.momentum = 0.9;
        let buf = [0.1f32, 0.2, -0.3];
        let (p, s) = run(&o, &[buf.to_vec()], 3.0);
        let want_buf: Vec<f64> = [0.5, -1.0, 2.0]
            .iter()
            .zip(buf)
            .map(|(g, b)| 0.9 * b as f64 + g)
            .collect();
        close(&s[0], &want_buf);
        close(
            &p,
            &[
                1.0 - 0.1 * want_buf[0],
                -2.0 - 0.1 * want_buf[1],
                3.0 - 0.1 * want_buf[2],
            ],
        );
        o.opt.nesterov = true;
        let (p, _) = run(&o, &[buf.to_vec()], 3.0);
        let g = [0.5, -1.0, 2.0];
        let want: Vec<f64> = (0..3)
            .map(|i| [1.0, -2.0, 3.0][i] - 0.1 * (g[i] + 0.9 * want_buf[i]))
            .collect();
        close(&p, &want);
    }

    #[test]
    fn adam_and_adamw_match_hand_computation() {
        for kind in [OptimizerKind::Adam, OptimizerKind::Adamw] {
            let mut o = Optimizer {
                opt: cfg(kind),
                schedule: ScheduleConfig::default(),
                total_steps: 10,
            };
            o.opt.lr = 0.01;
            o.opt.weight_decay = 0.1;
            let m0 = [0.1f32, -0.2, 0.3];
            let v0 = [0.01f32, 0.02, 0.03];
            let step = 4.0; // fifth update: t = 5
            let (p, s) = run(&o, &[m0.to_vec(), v0.to_vec()], step);
            let p0 = [1.0f64, -2.0, 3.0];
            let g0 = [0.5f64, -1.0, 2.0];
            let t = 5.0f64;
            for i in 0..3 {
                let gi = if kind == OptimizerKind::Adam {
                    g0[i] + 0.1 * p0[i]
                } else {
                    g0[i]
                };
                let m = 0.9 * m0[i] as f64 + 0.1 * gi;
                let v = 0.999 * v0[i] as f64 + 0.001 * gi * gi;
                let mh = m / (1.0 - 0.9f64.powf(t));
                let vh = v / (1.0 - 0.999f64.powf(t));
                let mut upd = mh / (vh.sqrt() + 1e-7);
                if kind == OptimizerKind::Adamw {
                    upd += 0.1 * p0[i];
                }
                close(&[s[0][i], s[1][i], p[i]], &[m, v, p0[i] - 0.01 * upd]);
            }
        }
    }

    #[test]
    fn weight_decay_skips_vectors() {
        let mut o = Optimizer {
            opt: cfg(OptimizerKind::Sgd),
            schedule: ScheduleConfig::default(),
            total_steps: 10,
        };
        o.opt.lr = 0.1;
        o.opt.weight_decay = 0.5;
        let (matrix, _) = run(&o, &[], 0.0);
        let (vector, _) = run_shaped(&o, &[3], &[], 0.0);
        // Matrix: g + 0.5 p; vector (a bias or norm gain): g alone.
        close(
            &matrix,
            &[1.0 - 0.1 * 1.0, -2.0 - 0.1 * -2.0, 3.0 - 0.1 * 3.5],
        );
        close(&vector, &[1.0 - 0.05, -2.0 + 0.1, 3.0 - 0.2]);
    }

    #[test]
    fn clipping_scales_to_the_global_norm() {
        let mut o = Optimizer {
            opt: cfg(OptimizerKind::Sgd),
            schedule: ScheduleConfig::default(),
            total_steps: 10,
        };
        o.opt.lr = 1.0;
        o.opt.clip_norm = Some(1.0);
        let (p, _) = run(&o, &[], 0.0);
        let n = (0.25f64 + 1.0 + 4.0).sqrt();
        close(&p, &[1.0 - 0.5 / n, -2.0 + 1.0 / n, 3.0 - 2.0 / n]);
    }

    #[test]
    fn schedules_in_graph_match_host() {
        for kind in [
            ScheduleKind::Constant,
            ScheduleKind::WarmupCosine,
            ScheduleKind::WarmupLinear,
        ] {
            let o = Optimizer {
                opt: OptimizerConfig {
                    lr: 2.0,
                    ..cfg(OptimizerKind::Sgd)
                },
                schedule: ScheduleConfig {
                    kind,
                    warmup_steps: 3,
                    min_lr_ratio: 0.1,
                    decay_steps: None,
                },
                total_steps: 11,
            };
            for step in [0usize, 1, 2, 3, 5, 10, 12] {
                let (p, _) = run(&o, &[], step as f32);
                // p = 1 - lr * 0.5
                let lr = (1.0 - p[0]) / 0.5;
                assert!(
                    (lr - o.lr_at(step)).abs() < 1e-5,
                    "{kind:?} step {step}: {lr} vs {}",
                    o.lr_at(step)
                );
            }
        }
        let o = Optimizer {
            opt: OptimizerConfig {
                lr: 1.0,
                ..cfg(OptimizerKind::Sgd)
            },
            schedule: ScheduleConfig {
                kind: ScheduleKind::WarmupCosine,
                warmup_steps: 10,
                min_lr_ratio: 0.0,
                decay_steps: None,
            },
            total_steps: 110,
        };
        assert!((o.lr_at(4) - 0.5).abs() < 1e-12);
        assert!((o.lr_at(9) - 1.0).abs() < 1e-12);
        assert!((o.lr_at(59) - 0.5).abs() < 1e-12);
        assert!(o.lr_at(109).abs() < 1e-12);
    }
}
