//! Per-tensor transforms on the way from a file's layout to the model's. Each runs on
//! shapes alone (to plan and report a load from the headers) or on data too.

use crate::tensor::{Dtype, TensorData};

/// One step on a source tensor's way into the model; a rule applies its steps in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Transform {
    /// Permute dims: output dim `i` is input dim `perm[i]` (`[1, 0]` turns a torch
    /// `Linear`'s (out, in) into our (in, out)).
    Transpose(Vec<usize>),
    /// The same values, row-major, in new dims; one dim may be -1 (inferred).
    Reshape(Vec<i64>),
    /// Reshape to the target's dims (same count): a fused (D, 3D) qkv into (D, 3, H, hd).
    ReshapeToTarget,
    /// Cut `dim` into `parts` equal pieces, one per target in order (each keeps the dim,
    /// like `torch.chunk`); the steps after it apply to each piece.
    Split { dim: usize, parts: usize },
    /// Convert the dtype (floats round to nearest even; see [`TensorData::cast`]). Only
    /// exact widenings (bf16/f16 -> f32, i8 -> i32) happen without one.
    Cast(Dtype),
}

/// A tensor on its way through a rule's transforms; `data` is `None` while planning.
pub(super) struct Piece {
    pub dims: Vec<i64>,
    pub dtype: Dtype,
    pub data: Option<TensorData>,
}

pub(super) enum StepError {
    /// Said of the source: "cannot be reshaped to ...".
    Shape(String),
    Dtype(String),
}

/// Runs `transforms` on `piece`; `target_dims[p]` are the dims of piece `p`'s target
/// (`None`: the model lacks it, so `ReshapeToTarget` leaves it as it is).
pub(super) fn run(
    transforms: &[Transform],
    piece: Piece,
    target_dims: &[Option<&[i64]>],
) -> Result<Vec<Piece>, StepError> {
    let mut pieces = vec![piece];
    for t in transforms {
        let mut next = Vec::with_capacity(pieces.len());
        for (p, x) in pieces.into_iter().enumerate() {
            match t {
                Transform::Split { dim, parts } => next.extend(split(x, *dim, *parts)?),
                _ => next.push(step(t, x, target_dims.get(p).copied().flatten())?),
            }
        }
        pieces = next;
    }
    Ok(pieces)
}

/// A transform other than a split.
fn step(t: &Transform, x: Piece, target: Option<&[i64]>) -> Result<Piece, StepError> {
    let shape = |s: String| Err(StepError::Shape(s));
    let n: i64 = x.dims.iter().product();
    match t {
        Transform::Transpose(perm) => {
            let mut sorted = perm.clone();
            sorted.sort_unstable();
            if !sorted.into_iter().eq(0..x.dims.len()) {
                return shape(format!(
                    "cannot be transposed by {perm:?}: it has {} dims",
                    x.dims.len()
                ));
            }
            Ok(Piece {
                dims: perm.iter().map(|&i| x.dims[i]).collect(),
                data: x.data.map(|d| d.permute(&x.dims, perm)),
                dtype: x.dtype,
            })
        }
        Transform::Reshape(want) => {
            let known: i64 = want.iter().filter(|&&d| d != -1).product();
            let mut dims = want.clone();
            let fits = match want.iter().filter(|&&d| d == -1).count() {
                0 => known == n,
                1 if known > 0 && n % known == 0 => {
                    dims.iter_mut()
                        .filter(|d| **d == -1)
                        .for_each(|d| *d = n / known);
                    true
                }
                _ => false,
            };
            if !fits || want.iter().any(|&d| d < -1) {
                return shape(format!("cannot be reshaped to {want:?}: it has {n} values"));
            }
            Ok(Piece { dims, ..x })
        }
        Transform::ReshapeToTarget => {
            let dims = target.map_or_else(|| x.dims.clone(), <[i64]>::to_vec);
            if dims.iter().product::<i64>() != n {
                return shape(format!(
                    "has {n} values, which cannot be reshaped to the model's {dims:?}"
                ));
            }
            Ok(Piece { dims, ..x })
        }
        Transform::Cast(to) => {
            if x.dtype.is_float() && !to.is_float() {
                return Err(StepError::Dtype(format!(
                    "a cast of {} to {to} would truncate: integer weights need a quantizer with \
                     scales",
                    x.dtype
                )));
            }
            let data = match x.data {
                Some(d) => Some(d.cast(*to).map_err(|e| StepError::Dtype(e.to_string()))?),
                None => None,
            };
            Ok(Piece {
                dims: x.dims,
                dtype: *to,
                data,
            })
        }
        Transform::Split { .. } => unreachable!("run handles splits"),
    }
}

fn split(x: Piece, dim: usize, parts: usize) -> Result<Vec<Piece>, StepError> {
    if dim >= x.dims.len() || parts == 0 || x.dims[dim] % parts as i64 != 0 {
        return Err(StepError::Shape(format!(
            "cannot be split into {parts} equal parts along dim {dim}"
        )));
    }
    let mut dims = x.dims.clone();
    dims[dim] /= parts as i64;
    let datas: Vec<Option<TensorData>> = match &x.data {
        Some(d) => d.split(&x.dims, dim, parts).into_iter().map(Some).collect(),
        None => vec![None; parts],
    };
    Ok(datas
        .into_iter()
        .map(|data| Piece {
            dims: dims.clone(),
            dtype: x.dtype,
            data,
        })
        .collect())
}
