//! Evaluating stored weights (f32 or int8-quantized) on a data source's evaluation set, with
//! the model's own eval program: what `rxla compress eval` reports before and after
//! compression.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use data::DataSource;
use nn::Model;
use runtime::{Buffer, Client, CompileOptions};
use serde::Serialize;

use super::quantize::{bind_with, upload, BoundArg};
use crate::exec::ToDevice;
use crate::step::Feed;
use crate::tensor::Tensor;

/// Mean per-example metrics over the evaluation set, and timings.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// `eval_loss`, `eval_accuracy`, ... (as training logs them), plus `eval_bits_per_byte`
    /// for text.
    pub metrics: std::collections::BTreeMap<String, f64>,
    pub examples: usize,
    /// Bytes of the weights on device (i8 weights count one byte a value).
    pub weight_bytes_on_device: usize,
    pub compile_s: f64,
    /// Wall time of the evaluation passes (after compilation, uploads included).
    pub eval_s: f64,
    /// Dots run as i8 × i8 → i32 (`int8_dots`; 0 when weights are dequantized to f32).
    pub int8_dots: usize,
}

/// Evaluates `model` with `weights` (stored dtypes; i8 ones dequantized in the program).
pub fn evaluate(
    client: &Client,
    model: &dyn Model,
    weights: &[Tensor],
    data: &dyn DataSource,
    batch: usize,
) -> Result<EvalReport> {
    evaluate_with(client, model, weights, data, batch, false)
}

/// [`evaluate`]; `int8_dots`: i8 kernels meet activations in i8 × i8 → i32 dots.
pub fn evaluate_with(
    client: &Client,
    model: &dyn Model,
    weights: &[Tensor],
    data: &dyn DataSource,
    batch: usize,
    int8_dots: bool,
) -> Result<EvalReport> {
    let prog = crate::step::eval_step(model, batch, None)?;
    let (g, bound, n_int8) = bind_with(&prog.graph, &prog.params, weights, int8_dots)?;
    let t = Instant::now();
    let opts = lower::LowerOptions {
        module_name: Some(g.name.clone()),
        ..Default::default()
    };
    let (_, exe) = crate::exec::compile(client, &g, &opts, &CompileOptions::default())?;
    let compile_s = t.elapsed().as_secs_f64();
    let mut bufs: Vec<Option<Buffer>> = Vec::with_capacity(bound.len());
    let mut weight_bytes_on_device = 0;
    for b in &bound {
        bufs.push(match b {
            BoundArg::Weight(t) => {
                weight_bytes_on_device += t.data.len() * t.dtype().size();
                Some(upload(client, t)?)
            }
            BoundArg::Other(i) => match prog.feeds[*i] {
                Feed::Data(_) => None,
                f => bail!(
                    "the eval program takes {f:?}, which stored-weight evaluation cannot feed"
                ),
            },
        });
    }
    let batches = data.eval_batches(batch)?;
    if batches.is_empty() {
        bail!("the data has no evaluation examples");
    }
    let t = Instant::now();
    let mut sums = vec![0f64; prog.per_example.len()];
    let mut n = 0;
    for (inputs, valid) in &batches {
        let data_bufs: Vec<Buffer> = inputs
            .iter()
            .map(|a| a.to_device(client, 0))
            .collect::<Result<_>>()?;
        let args: Vec<&Buffer> = bound
            .iter()
            .zip(&bufs)
            .map(|(b, buf)| match (b, buf) {
                (_, Some(w)) => Ok(w),
                (BoundArg::Other(i), None) => match prog.feeds[*i] {
                    Feed::Data(k) => data_bufs
                        .get(k)
                        .with_context(|| format!("the eval batch lacks data input {k}")),
                    _ => unreachable!("checked above"),
                },
                _ => unreachable!("weights are uploaded"),
            })
            .collect::<Result<_>>()?;
        let out = exe.execute1(&args)?;
        for (s, b) in sums.iter_mut().zip(&out) {
            let v = b.to_host::<f32>()?;
            *s += v[..*valid].iter().map(|&x| x as f64).sum::<f64>();
        }
        n += valid;
    }
    let eval_s = t.elapsed().as_secs_f64();
    let mut metrics = std::collections::BTreeMap::new();
    for (name, s) in prog.per_example.iter().zip(&sums) {
        let key = if name == "correct" { "accuracy" } else { name };
        metrics.insert(format!("eval_{key}"), s / n.max(1) as f64);
    }
    if let (Some(bpt), Some(&l)) = (data.eval_bytes_per_token(), metrics.get("eval_loss")) {
        metrics.insert(
            "eval_bits_per_byte".into(),
            l / std::f64::consts::LN_2 / bpt,
        );
    }
    Ok(EvalReport {
        metrics,
        examples: n,
        weight_bytes_on_device,
        compile_s,
        eval_s,
        int8_dots: n_int8,
    })
}
