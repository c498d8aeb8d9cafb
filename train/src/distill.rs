//! Knowledge distillation (`[distill] teacher = "runs/big"`, `temperature`, `alpha`): the
//! student's loss is `alpha·T²·KL(p_teacher ‖ p_student) + (1 − alpha)·hard loss`, with
//! `p = softmax(logits / T)` per position, the KL averaged over positions (Hinton et al.,
//! 2015). The teacher's forward runs inside the same compiled step on the same batch, its
//! parameters declared under `teacher.` and frozen (no gradient, no optimizer state), its
//! logits behind a stop-gradient. Evaluation runs the student alone.

pub use crate::groups::{is_teacher, TEACHER};
use graph::{Graph, NodeId};
use nn::{Forward, Mode, Model, Params};
use serde::{Deserialize, Serialize};

/// `[distill]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistillConfig {
    /// The teacher's run directory (its newest checkpoint and stored config).
    pub teacher: String,
    /// Softening temperature T (> 0).
    #[serde(default = "default_temperature")]
    pub temperature: f64,
    /// Weight of the soft (KL) term in [0, 1]; the hard loss gets 1 − alpha.
    #[serde(default = "default_alpha")]
    pub alpha: f64,
}

fn default_temperature() -> f64 {
    2.0
}
fn default_alpha() -> f64 {
    0.5
}

impl DistillConfig {
    pub fn check(&self) -> anyhow::Result<()> {
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            anyhow::bail!(
                "config key `distill.temperature` must be a positive number, got {}",
                self.temperature
            );
        }
        if !(0.0..=1.0).contains(&self.alpha) {
            anyhow::bail!(
                "config key `distill.alpha` must be in [0, 1], got {}",
                self.alpha
            );
        }
        Ok(())
    }
}

/// `mean over positions of T²·Σ_c p_t (log p_t − log p_s)` with `p = softmax(x / T)` over
/// the last axis: the soft term of the distillation loss (before `alpha`).
pub fn soft_loss(
    g: &mut Graph,
    teacher: NodeId,
    student: NodeId,
    temperature: f64,
) -> graph::Result<NodeId> {
    let last = g.rank(student)? - 1;
    let t = g.mul_scalar(teacher, 1.0 / temperature)?;
    let s = g.mul_scalar(student, 1.0 / temperature)?;
    let lt = g.log_softmax(t, last)?;
    let ls = g.log_softmax(s, last)?;
    let pt = g.exp(lt)?;
    let d = g.sub(lt, ls)?;
    let e = g.mul(pt, d)?;
    let kl = g.reduce_sum(e, &[last])?;
    let kl = g.mean_all(kl)?;
    g.mul_scalar(kl, temperature * temperature)
}

/// A student trained against a frozen teacher.
pub struct Distill {
    pub student: Box<dyn Model>,
    pub teacher: Box<dyn Model>,
    pub temperature: f64,
    pub alpha: f64,
}

impl Model for Distill {
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
        let (fwd, logits) = self.student.forward_logits(g, p, batch, mode)?;
        if mode == Mode::Eval {
            return Ok((fwd, logits));
        }
        let no_logits = |who: &str| {
            graph::GraphError::Invalid(format!(
                "distillation needs the {who}'s logits, and this model kind exposes none \
                 (gpt and the BERT classifiers do)"
            ))
        };
        let s_logits = logits.ok_or_else(|| no_logits("student"))?;
        // The teacher on the same batch, without dropout, its parameters as `teacher.*`.
        let (mut tg, tp, tf, t_logits) = crate::adapt::scratch_forward(
            self.teacher.as_ref(),
            &Params::new(),
            batch,
            Mode::Eval,
        )?;
        let t_logits = t_logits.ok_or_else(|| no_logits("teacher"))?;
        if tf.rng_seed.is_some() {
            return Err(graph::GraphError::Invalid(
                "the teacher's evaluation forward draws random numbers; distillation needs a \
                 deterministic teacher"
                    .into(),
            ));
        }
        tg.set_outputs(&[t_logits])?;
        let map = crate::adapt::copy_into(
            g,
            p,
            &tg,
            &tp.specs,
            &format!("{TEACHER}."),
            Some((&tf.inputs, &fwd.inputs)),
            &mut |_, _, _, n| Ok(n),
        )?;
        let t = g.stop_gradient(map[t_logits.index()])?;
        if g.dims(t)? != g.dims(s_logits)? {
            return Err(graph::GraphError::Invalid(format!(
                "the teacher's logits are {:?} but the student's {:?}: they must share the \
                 vocabulary (model.vocab_size) and seq_len",
                g.dims(t)?,
                g.dims(s_logits)?
            )));
        }
        let soft = soft_loss(g, t, s_logits, self.temperature)?;
        let soft = g.mul_scalar(soft, self.alpha)?;
        let hard = g.mul_scalar(fwd.loss, 1.0 - self.alpha)?;
        let loss = g.add(soft, hard)?;
        Ok((Forward { loss, ..fwd }, Some(s_logits)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use graph::interp::{eval, HostTensor};
    use graph::TensorType;

    /// The soft loss equals T²·KL computed by hand (f64) on a (2, 3) batch of 4 classes.
    #[test]
    fn soft_loss_is_t_squared_kl() {
        let t: Vec<f32> = (0..24).map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.4).collect();
        let s: Vec<f32> = (0..24).map(|i| ((i * 5 % 13) as f32 - 6.0) * 0.3).collect();
        let temp = 2.5;
        let mut g = Graph::new("kl");
        let a = g.input("t", TensorType::f32([2, 3, 4])).unwrap();
        let b = g.input("s", TensorType::f32([2, 3, 4])).unwrap();
        let l = soft_loss(&mut g, a, b, temp).unwrap();
        g.set_outputs(&[l]).unwrap();
        let got = eval(
            &g,
            &[
                HostTensor::f32(&[2, 3, 4], &t).unwrap(),
                HostTensor::f32(&[2, 3, 4], &s).unwrap(),
            ],
        )
        .unwrap()[0]
            .to_f32()[0] as f64;
        let softmax = |x: &[f32]| -> Vec<f64> {
            let z: Vec<f64> = x.iter().map(|&v| v as f64 / temp).collect();
            let m = z.iter().cloned().fold(f64::MIN, f64::max);
            let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
            let sum: f64 = e.iter().sum();
            e.iter().map(|v| v / sum).collect()
        };
        let mut kl = 0.0;
        for pos in 0..6 {
            let pt = softmax(&t[pos * 4..pos * 4 + 4]);
            let ps = softmax(&s[pos * 4..pos * 4 + 4]);
            kl += pt
                .iter()
                .zip(&ps)
                .map(|(p, q)| p * (p / q).ln())
                .sum::<f64>();
        }
        let want = temp * temp * kl / 6.0;
        assert!(want > 0.1, "a real difference: {want}");
        assert!((got - want).abs() < 1e-5 * want.max(1.0), "{got} vs {want}");
        // Identical logits: no soft loss.
        let same = eval(
            &g,
            &[
                HostTensor::f32(&[2, 3, 4], &t).unwrap(),
                HostTensor::f32(&[2, 3, 4], &t).unwrap(),
            ],
        )
        .unwrap()[0]
            .to_f32()[0];
        assert!(same.abs() < 1e-6, "{same}");
    }

    #[test]
    fn teacher_names() {
        assert!(is_teacher("teacher.h0.attn.qkv.w"));
        assert!(!is_teacher("teachers.w"));
        assert!(!is_teacher("h0.teacher.w"));
    }
}
