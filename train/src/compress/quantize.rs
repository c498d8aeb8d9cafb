//! Post-training int8 weight quantization: symmetric, per output channel, f32 scales.
//!
//! A weight `w` becomes `q = round(w / s)` in i8 (|q| ≤ 127) with `s = max|w| / 127` over its
//! channel, stored as tensor `w` (i8) and `w.qscale` (f32, the weight's rank with 1 on the
//! reduced axes). [`bind`] turns a program over f32 weights into one over the stored tensors,
//! dequantizing inside the graph (`graph::passes::quantize`), so eval and generation run the
//! quantized model with its weights on device as i8.

use anyhow::{anyhow, bail, Context, Result};
use graph::passes::quantize::{dequantize_args, scale_dims, Dequantize, QuantArg};
use graph::{Graph, NodeId};
use nn::ParamSpec;
use serde::Serialize;

use crate::tensor::{NamedTensor, Tensor, TensorData};

/// The name of a quantized weight's scale tensor.
pub const SCALE_SUFFIX: &str = ".qscale";
/// The largest |q|: symmetric, so -128 is never used and `-q` is always representable.
pub use graph::passes::quantize::QMAX;

/// A quantized tensor: i8 values and one scale per channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Quantized {
    pub q: Vec<i8>,
    pub scales: Vec<f32>,
    /// The weight's dims with 1 on every axis a scale covers.
    pub scale_dims: Vec<i64>,
}

/// The flat scale index of each element of a tensor of `dims` whose scales have `sdims`.
fn scale_index(dims: &[i64], sdims: &[i64]) -> Vec<usize> {
    let n: usize = dims.iter().product::<i64>() as usize;
    let rank = dims.len();
    let mut sstride = vec![0usize; rank];
    let mut acc = 1usize;
    for a in (0..rank).rev() {
        sstride[a] = if sdims[a] == 1 { 0 } else { acc };
        acc *= sdims[a] as usize;
    }
    let mut idx = vec![0i64; rank];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(
            idx.iter()
                .zip(&sstride)
                .map(|(&i, &s)| i as usize * s)
                .sum(),
        );
        for a in (0..rank).rev() {
            idx[a] += 1;
            if idx[a] < dims[a] {
                break;
            }
            idx[a] = 0;
        }
    }
    out
}

/// Quantizes `data` (row-major, `dims`) with one scale per index of `channel_axes`.
/// An all-zero channel gets scale 0 (and q 0): it dequantizes to zeros exactly.
pub fn quantize(data: &[f32], dims: &[i64], channel_axes: &[usize]) -> Quantized {
    let sdims = scale_dims(dims, channel_axes);
    let ns: usize = sdims.iter().product::<i64>() as usize;
    let which = scale_index(dims, &sdims);
    let mut amax = vec![0f64; ns];
    for (&x, &s) in data.iter().zip(&which) {
        amax[s] = amax[s].max((x as f64).abs());
    }
    let scales: Vec<f32> = amax.iter().map(|&m| (m / QMAX) as f32).collect();
    let q = data
        .iter()
        .zip(&which)
        .map(|(&x, &s)| {
            let sc = scales[s] as f64;
            if sc == 0.0 {
                0
            } else {
                (x as f64 / sc).round().clamp(-QMAX, QMAX) as i8
            }
        })
        .collect();
    Quantized {
        q,
        scales,
        scale_dims: sdims,
    }
}

/// `q · scale` per element, as the compiled program computes it (in f32).
pub fn dequantize(qt: &Quantized, dims: &[i64]) -> Vec<f32> {
    let which = scale_index(dims, &qt.scale_dims);
    qt.q.iter()
        .zip(&which)
        .map(|(&q, &s)| q as f32 * qt.scales[s])
        .collect()
}

/// What quantizing one tensor did.
#[derive(Debug, Clone, Serialize)]
pub struct TensorReport {
    pub name: String,
    pub dims: Vec<i64>,
    pub scale_dims: Vec<i64>,
    /// max |w - dequantized(w)|
    pub max_abs_error: f64,
    /// max over channels of scale / 2: the bound `max_abs_error` stays within.
    pub max_half_scale: f64,
}

/// Tensors smaller than this stay f32: biases and norm gains are few bytes and sensitive.
pub use crate::prune::MIN_VALUES;

/// Whether a parameter is quantized: f32 matrices (and larger) of at least [`MIN_VALUES`]
/// values: kernels, embedding and position tables.
pub fn is_quantizable(spec: &ParamSpec) -> bool {
    spec.ty.rank() >= 2 && spec.ty.dtype == graph::DType::F32 && spec.count() >= MIN_VALUES
}

/// The weights file of a quantized model: each quantizable parameter of `specs` (channels
/// from `g`, the program that uses them) as i8 plus its `.qscale`, the rest as f32.
pub fn quantize_weights(
    g: &Graph,
    specs: &[ParamSpec],
    params: &[NamedTensor],
) -> Result<(Vec<Tensor>, Vec<TensorReport>)> {
    let mut out = Vec::with_capacity(params.len() * 2);
    let mut report = Vec::new();
    for t in params {
        let spec = specs
            .iter()
            .find(|s| s.name == t.name)
            .ok_or_else(|| anyhow!("weight `{}` is no parameter of the model", t.name))?;
        if spec.ty.dims() != t.dims.as_slice() {
            bail!(
                "weight `{}` has shape {:?} but the model needs {:?}",
                t.name,
                t.dims,
                spec.ty.dims()
            );
        }
        if !is_quantizable(spec) {
            out.push(Tensor::from(t.clone()));
            continue;
        }
        let axes = graph::passes::quantize::output_channel_axes(g, spec.node)?;
        let qt = quantize(&t.data, &t.dims, &axes);
        let deq = dequantize(&qt, &t.dims);
        let max_abs_error = t
            .data
            .iter()
            .zip(&deq)
            .map(|(&a, &b)| (a as f64 - b as f64).abs())
            .fold(0.0, f64::max);
        let max_half_scale = qt
            .scales
            .iter()
            .map(|&s| s as f64 / 2.0)
            .fold(0.0, f64::max);
        report.push(TensorReport {
            name: t.name.clone(),
            dims: t.dims.clone(),
            scale_dims: qt.scale_dims.clone(),
            max_abs_error,
            max_half_scale,
        });
        out.push(Tensor::new(&t.name, t.dims.clone(), TensorData::I8(qt.q))?);
        out.push(Tensor::new(
            format!("{}{SCALE_SUFFIX}", t.name),
            qt.scale_dims,
            TensorData::F32(qt.scales),
        )?);
    }
    Ok((out, report))
}

/// An argument of a bound program: a stored tensor to upload, or the source program's
/// argument `i` (data, seeds) that the caller feeds.
#[derive(Debug, Clone)]
pub enum BoundArg {
    Weight(Tensor),
    Other(usize),
}

/// Program `g` (whose parameters are `specs`) over stored weights: f32 (or other float)
/// weights feed their parameter as f32; an i8 weight with its `.qscale` is dequantized in
/// the graph. Every parameter needs its tensor and every tensor a parameter.
pub fn bind(g: &Graph, specs: &[ParamSpec], weights: &[Tensor]) -> Result<(Graph, Vec<BoundArg>)> {
    bind_with(g, specs, weights, false).map(|(g, b, _)| (g, b))
}

/// [`bind`], and with `int8_dots` every dot of an activation with an i8 kernel runs as an
/// i8 × i8 → i32 dot (`graph::passes::quantize::int8_dots`); also returns how many did.
pub fn bind_with(
    g: &Graph,
    specs: &[ParamSpec],
    weights: &[Tensor],
    int8_dots: bool,
) -> Result<(Graph, Vec<BoundArg>, usize)> {
    if super::lowrank::is_factored(specs, weights) {
        if int8_dots {
            bail!("--int8-dots needs an int8 run (`rxla compress quantize`), not a factored one");
        }
        let (g, b) = super::lowrank::bind_factored(g, specs, weights)?;
        return Ok((g, b, 0));
    }
    let by_name: std::collections::HashMap<&str, &Tensor> =
        weights.iter().map(|t| (t.name.as_str(), t)).collect();
    for t in weights {
        let base = t.name.strip_suffix(SCALE_SUFFIX).unwrap_or(&t.name);
        if !specs.iter().any(|s| s.name == base) {
            bail!(
                "weights hold tensor `{}` but the model has no parameter `{base}`: they were \
                 written for another model",
                t.name
            );
        }
    }
    let args = g.args();
    let spec_of = |n: NodeId| specs.iter().find(|s| s.node == n);
    let mut deq = Vec::new();
    for (i, &a) in args.iter().enumerate() {
        let Some(spec) = spec_of(a) else { continue };
        let t = by_name.get(spec.name.as_str()).ok_or_else(|| {
            anyhow!(
                "weights lack parameter `{}`: they were written for another model",
                spec.name
            )
        })?;
        if t.dims != spec.ty.dims() {
            bail!(
                "weight `{}` has shape {:?} but the model needs {:?}",
                spec.name,
                t.dims,
                spec.ty.dims()
            );
        }
        if let TensorData::I8(_) = t.data {
            let sname = format!("{}{SCALE_SUFFIX}", spec.name);
            let s = by_name.get(sname.as_str()).ok_or_else(|| {
                anyhow!("i8 weight `{}` has no scale tensor `{sname}`", spec.name)
            })?;
            deq.push(Dequantize {
                arg: i,
                scale_dims: s.dims.clone(),
            });
        }
    }
    if int8_dots && deq.is_empty() {
        bail!("--int8-dots needs i8 weights: quantize the run first (`rxla compress quantize`)");
    }
    let (bound, sources) = dequantize_args(g, &deq).context("dequantizing in the program")?;
    let (bound, n_int8) = match int8_dots {
        true => graph::passes::quantize::int8_dots(&bound).context("int8 dots")?,
        false => (bound, 0),
    };
    let tensor = |name: &str, widen: bool| -> Result<Tensor> {
        let t = (*by_name[name]).clone();
        if !widen {
            return Ok(t);
        }
        Ok(Tensor::from(t.into_f32()?))
    };
    let out = sources
        .iter()
        .map(|src| -> Result<BoundArg> {
            Ok(match *src {
                QuantArg::Same(i) => match spec_of(args[i]) {
                    Some(s) => BoundArg::Weight(tensor(&s.name, true)?),
                    None => BoundArg::Other(i),
                },
                QuantArg::Int8(i) => {
                    BoundArg::Weight(tensor(&spec_of(args[i]).expect("a parameter").name, false)?)
                }
                QuantArg::Scale(i) => {
                    let n = format!(
                        "{}{SCALE_SUFFIX}",
                        spec_of(args[i]).expect("a parameter").name
                    );
                    BoundArg::Weight(tensor(&n, true)?)
                }
            })
        })
        .collect::<Result<_>>()?;
    Ok((bound, out, n_int8))
}

/// A device buffer of a stored tensor.
pub fn upload(client: &runtime::Client, t: &Tensor) -> Result<runtime::Buffer> {
    Ok(match &t.data {
        TensorData::F32(v) => client.buffer_from_host(v, &t.dims, 0)?,
        TensorData::BF16(v) => client.buffer_from_host(v, &t.dims, 0)?,
        TensorData::F16(v) => client.buffer_from_host(v, &t.dims, 0)?,
        TensorData::I8(v) => client.buffer_from_host(v, &t.dims, 0)?,
        TensorData::I32(v) => client.buffer_from_host(v, &t.dims, 0)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Round to nearest with |w/s| ≤ 127 never clips: every element is within scale/2.
    #[test]
    #[allow(clippy::needless_range_loop)] // parallel arrays indexed together
    fn quantize_dequantize_error_is_at_most_half_a_scale() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for (dims, axes) in [
            (vec![16i64, 24], vec![1usize]),
            (vec![24, 16], vec![0]),
            (vec![8, 3, 4, 5], vec![1, 2, 3]),
            (vec![10, 7], vec![]),
        ] {
            let n: i64 = dims.iter().product();
            // Channels of very different magnitudes, one all zero.
            let data: Vec<f32> = (0..n)
                .map(|i| {
                    let m = 10f32.powi((i % 5) as i32 - 2);
                    if i % 7 == 3 {
                        0.0
                    } else {
                        rng.gen_range(-1.0..1.0f32) * m
                    }
                })
                .collect();
            let qt = quantize(&data, &dims, &axes);
            let deq = dequantize(&qt, &dims);
            let which = scale_index(&dims, &qt.scale_dims);
            assert_eq!(
                qt.scales.len(),
                scale_index(&qt.scale_dims, &qt.scale_dims).len()
            );
            for i in 0..data.len() {
                let s = qt.scales[which[i]] as f64;
                let exact = qt.q[i] as f64 * s;
                assert!(
                    (data[i] as f64 - exact).abs() <= s / 2.0,
                    "{dims:?} {i}: {} vs {exact} (scale {s})",
                    data[i]
                );
                // The f32 product the program computes adds at most one rounding.
                let ulp = (deq[i].abs() as f64) * f32::EPSILON as f64;
                assert!((data[i] as f64 - deq[i] as f64).abs() <= s / 2.0 + ulp);
                assert!(qt.q[i] != -128);
            }
            // The largest element of each channel maps to ±127.
            let mut top = vec![0i8; qt.scales.len()];
            for i in 0..data.len() {
                top[which[i]] = top[which[i]].max(qt.q[i].abs());
            }
            for (c, &s) in qt.scales.iter().enumerate() {
                assert_eq!(top[c], if s == 0.0 { 0 } else { 127 }, "channel {c}");
            }
        }
        // An all-zero tensor: scale 0, exact zeros back.
        let z = quantize(&[0.0; 6], &[2, 3], &[1]);
        assert_eq!(z.scales, vec![0.0; 3]);
        assert_eq!(dequantize(&z, &[2, 3]), vec![0.0; 6]);
    }

    #[test]
    fn scales_follow_the_channel_axes() {
        // (2, 3) with channels on axis 1: scales are column maxima / 127.
        let data = [0.9f32, -2.0, 0.5, -3.0, 1.1, 0.2];
        let qt = quantize(&data, &[2, 3], &[1]);
        assert_eq!(qt.scale_dims, vec![1, 3]);
        let want = [3.0 / 127.0, 2.0 / 127.0, 0.5 / 127.0];
        for (s, w) in qt.scales.iter().zip(want) {
            assert!((*s as f64 - w).abs() < 1e-8);
        }
        assert_eq!(qt.q, vec![38, -127, 127, -127, 70, 51]);
        let rows = quantize(&data, &[2, 3], &[0]);
        assert_eq!(rows.scale_dims, vec![2, 1]);
        assert_eq!(rows.q, vec![57, -127, 32, -127, 47, 8]);
    }
}
