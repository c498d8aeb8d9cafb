//! Low-rank factorization of trained kernels by truncated SVD: `W (in, out..)` reshaped to
//! `(in, out)` is `U Σ Vᵀ`; the first `r` singular triples give `NAME.u = U_r (in, r)` and
//! `NAME.v = Σ_r V_rᵀ (r, out..)`, and the program runs `(x · U) · V`
//! (`graph::passes::lowrank`). The SVD is nalgebra's (maintained, pure Rust, one-sided
//! Jacobi-free Golub–Kahan: exact enough for weight matrices of a few thousand rows).

use anyhow::{anyhow, bail, Result};
use graph::Graph;
use nn::ParamSpec;
use serde::Serialize;

use crate::tensor::{NamedTensor, Tensor, TensorData};

/// The names of a factored weight's two tensors.
pub const U_SUFFIX: &str = ".u";
pub const V_SUFFIX: &str = ".v";

/// How many singular values to keep.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RankChoice {
    /// At most this rank (each matrix's min(in, out) caps it).
    Rank(usize),
    /// The smallest rank whose singular values hold this share of Σσ² (0 < e <= 1).
    Energy(f64),
}

/// `(U_r (rows, r), Σ_r V_rᵀ (r, cols), all singular values)` of a row-major matrix.
pub fn truncated_svd(
    w: &[f32],
    rows: usize,
    cols: usize,
    r: usize,
) -> (Vec<f32>, Vec<f32>, Vec<f64>) {
    let m = nalgebra::DMatrix::<f64>::from_row_iterator(rows, cols, w.iter().map(|&x| x as f64));
    let svd = m.svd(true, true);
    let (u, vt) = (svd.u.expect("asked for U"), svd.v_t.expect("asked for Vᵀ"));
    // nalgebra does not promise an order: sort the triples by singular value.
    let mut order: Vec<usize> = (0..svd.singular_values.len()).collect();
    order.sort_by(|&a, &b| svd.singular_values[b].total_cmp(&svd.singular_values[a]));
    let s: Vec<f64> = order.iter().map(|&i| svd.singular_values[i]).collect();
    let r = r.min(s.len());
    let mut uo = vec![0f32; rows * r];
    let mut vo = vec![0f32; r * cols];
    for (k, &i) in order.iter().take(r).enumerate() {
        for a in 0..rows {
            uo[a * r + k] = u[(a, i)] as f32;
        }
        for c in 0..cols {
            vo[k * cols + c] = (s[k] * vt[(i, c)]) as f32;
        }
    }
    (uo, vo, s)
}

/// The smallest k with Σ_{i<k} σᵢ² >= energy · Σ σᵢ² (σ sorted descending).
pub fn rank_for_energy(s: &[f64], energy: f64) -> usize {
    let total: f64 = s.iter().map(|x| x * x).sum();
    let mut acc = 0.0;
    for (k, x) in s.iter().enumerate() {
        acc += x * x;
        if acc >= energy * total * (1.0 - 1e-12) {
            return k + 1;
        }
    }
    s.len()
}

/// What factoring one tensor did.
#[derive(Debug, Clone, Serialize)]
pub struct FactorReport {
    pub name: String,
    pub dims: Vec<i64>,
    pub rank: usize,
    pub full_rank: usize,
    /// Share of Σσ² kept.
    pub energy: f64,
    pub params_before: usize,
    pub params_after: usize,
}

/// The weights of a factored model: every kernel of `specs` that only feeds dots as
/// `(in, out..)` (see `graph::passes::lowrank::factorable`) with at least 1024 values, whose
/// chosen rank saves parameters, as `NAME.u` and `NAME.v`; the rest as they are.
pub fn factor_weights(
    g: &Graph,
    specs: &[ParamSpec],
    params: &[NamedTensor],
    choice: RankChoice,
) -> Result<(Vec<Tensor>, Vec<FactorReport>)> {
    match choice {
        RankChoice::Rank(0) => bail!("--rank 0 keeps nothing: use 1 or more"),
        RankChoice::Energy(e) if !(e > 0.0 && e <= 1.0) => {
            bail!("--energy {e}: use a share in (0, 1], e.g. 0.9")
        }
        _ => {}
    }
    let mut out = Vec::new();
    let mut report = Vec::new();
    for t in params {
        let spec = specs
            .iter()
            .find(|s| s.name == t.name)
            .ok_or_else(|| anyhow!("weight `{}` is no parameter of the model", t.name))?;
        let eligible = spec.ty.rank() >= 2
            && spec.count() >= super::quantize::MIN_VALUES
            && graph::passes::lowrank::factorable(g, spec.node)?;
        if !eligible {
            out.push(Tensor::from(t.clone()));
            continue;
        }
        let rows = t.dims[0] as usize;
        let cols = t.data.len() / rows;
        let full = rows.min(cols);
        let (u, v, s) = truncated_svd(&t.data, rows, cols, full);
        let r = match choice {
            RankChoice::Rank(r) => r.min(full),
            RankChoice::Energy(e) => rank_for_energy(&s, e),
        };
        let after = r * (rows + cols);
        if after >= rows * cols {
            out.push(Tensor::from(t.clone()));
            continue;
        }
        let total: f64 = s.iter().map(|x| x * x).sum();
        let kept: f64 = s[..r].iter().map(|x| x * x).sum();
        let ur: Vec<f32> = (0..rows)
            .flat_map(|a| u[a * full..a * full + r].to_vec())
            .collect();
        let vr = v[..r * cols].to_vec();
        let mut vdims = vec![r as i64];
        vdims.extend(&t.dims[1..]);
        out.push(Tensor::new(
            format!("{}{U_SUFFIX}", t.name),
            vec![rows as i64, r as i64],
            TensorData::F32(ur),
        )?);
        out.push(Tensor::new(
            format!("{}{V_SUFFIX}", t.name),
            vdims,
            TensorData::F32(vr),
        )?);
        report.push(FactorReport {
            name: t.name.clone(),
            dims: t.dims.clone(),
            rank: r,
            full_rank: full,
            energy: if total > 0.0 { kept / total } else { 1.0 },
            params_before: rows * cols,
            params_after: after,
        });
    }
    Ok((out, report))
}

/// Program `g` over a factored model's weights: a parameter stored as `NAME.u` and `NAME.v`
/// runs as two dots, the others feed their parameter as f32.
pub fn bind_factored(
    g: &Graph,
    specs: &[ParamSpec],
    weights: &[Tensor],
) -> Result<(Graph, Vec<super::quantize::BoundArg>)> {
    use super::quantize::BoundArg;
    use graph::passes::lowrank::{factor_args, Factor, FactorArg};
    let by_name: std::collections::HashMap<&str, &Tensor> =
        weights.iter().map(|t| (t.name.as_str(), t)).collect();
    let args = g.args();
    let spec_of = |n: graph::NodeId| specs.iter().find(|s| s.node == n);
    let mut factors = Vec::new();
    let mut used = 0;
    for (i, &a) in args.iter().enumerate() {
        let Some(spec) = spec_of(a) else { continue };
        let u = by_name
            .get(format!("{}{U_SUFFIX}", spec.name).as_str())
            .copied();
        match (by_name.get(spec.name.as_str()), u) {
            (Some(t), _) => {
                if t.dims != spec.ty.dims() {
                    bail!(
                        "weight `{}` has shape {:?} but the model needs {:?}",
                        spec.name,
                        t.dims,
                        spec.ty.dims()
                    );
                }
                used += 1;
            }
            (None, Some(u)) => {
                factors.push(Factor {
                    arg: i,
                    rank: u.dims[1],
                });
                used += 2;
            }
            (None, None) => bail!(
                "weights lack parameter `{}` (or its factors `{0}.u`, `{0}.v`): they were \
                 written for another model",
                spec.name
            ),
        }
    }
    if used != weights.len() {
        bail!(
            "weights hold {} tensors but the model uses {used}: they were written for another model",
            weights.len()
        );
    }
    let (out, sources) = factor_args(g, &factors)?;
    let get = |name: String| -> Result<BoundArg> {
        let t = by_name
            .get(name.as_str())
            .ok_or_else(|| anyhow!("weights lack `{name}`"))?;
        Ok(BoundArg::Weight(Tensor::from((*t).clone().into_f32()?)))
    };
    let bound = sources
        .iter()
        .map(|s| match *s {
            FactorArg::Same(i) => match spec_of(args[i]) {
                Some(sp) => get(sp.name.clone()),
                None => Ok(BoundArg::Other(i)),
            },
            FactorArg::U(i) => get(format!(
                "{}{U_SUFFIX}",
                spec_of(args[i]).expect("a parameter").name
            )),
            FactorArg::V(i) => get(format!(
                "{}{V_SUFFIX}",
                spec_of(args[i]).expect("a parameter").name
            )),
        })
        .collect::<Result<_>>()?;
    Ok((out, bound))
}

/// Whether `weights` hold a factored model (some `NAME.u` of a parameter).
pub fn is_factored(specs: &[ParamSpec], weights: &[Tensor]) -> bool {
    weights.iter().any(|t| {
        t.name
            .strip_suffix(U_SUFFIX)
            .is_some_and(|b| specs.iter().any(|s| s.name == b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// A rank-k matrix is reproduced by its rank-k truncation (error ≈ 0), not by rank k-1.
    #[test]
    fn svd_of_a_rank_k_matrix_is_exact_at_rank_k() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let (rows, cols, k) = (40usize, 24usize, 5usize);
        let a: Vec<f32> = (0..rows * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let b: Vec<f32> = (0..k * cols).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let mut w = vec![0f32; rows * cols];
        for i in 0..rows {
            for j in 0..cols {
                w[i * cols + j] = (0..k).map(|r| a[i * k + r] * b[r * cols + j]).sum();
            }
        }
        let recon = |r: usize| -> f64 {
            let (u, v, _) = truncated_svd(&w, rows, cols, r);
            let mut err = 0f64;
            for i in 0..rows {
                for j in 0..cols {
                    let x: f64 = (0..r)
                        .map(|q| u[i * r + q] as f64 * v[q * cols + j] as f64)
                        .sum();
                    err = err.max((x - w[i * cols + j] as f64).abs());
                }
            }
            err
        };
        let (_, _, s) = truncated_svd(&w, rows, cols, k);
        assert!(s.windows(2).all(|p| p[0] >= p[1]), "descending");
        assert!(s[k] < 1e-5 * s[0], "rank {k}: σ_k = {}", s[k]);
        assert!(recon(k) < 1e-5, "rank k error {}", recon(k));
        assert!(recon(k - 1) > 1e-2, "rank k-1 cannot be exact");
        assert_eq!(rank_for_energy(&s, 1.0), k);
        assert!(rank_for_energy(&s, 0.5) < k);
    }
}
